//! A task's log as the task page shows it: any window of lines, numbered
//! as in the whole log and coloured as a terminal shows them, rendered
//! without reading the log from its start.
//!
//! That is the job of the [`LineIndex`]: fed the log's bytes once, as they
//! are written or moved, it keeps a [`Checkpoint`] at the first line that
//! starts at or after every [`CHECKPOINT_BYTES`] — the line's byte offset,
//! its number and the ANSI style in force there — and where each step's
//! `--- step N: name` line (written by the executor) is. To render lines
//! `a..b`, a reader fetches the bytes from the checkpoint at or before `a`
//! and hands them to [`window`], which carries the style over the lines
//! before `a` (looking only at escapes) and renders the rest: at most
//! `CHECKPOINT_BYTES` plus the window are read, whatever the log's size.
//!
//! The index is plain text ([`LineIndex::to_text`]), so it can be kept
//! next to the log it describes.

use crate::ansi::AnsiRenderer;

/// Bytes between checkpoints: what a window reads at most before its first
/// line. A 1 GB log has about 4 000 checkpoints (some 100 KB of index).
pub const CHECKPOINT_BYTES: u64 = 256 * 1024;

/// The most of one line rendered; the rest of a longer line is left to
/// the raw log (its colours still carry on into the next lines).
pub const LONGEST_LINE_SHOWN: usize = 64 * 1024;

/// One rendered line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The line's number in the whole log, from 1.
    pub number: u64,
    /// HTML: escaped text and colour spans.
    pub html: String,
}

/// Where a line starts, which line it is, and the style in force there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub offset: u64,
    pub line: u64,
    /// An [`AnsiRenderer::state`] token.
    pub state: String,
}

impl Checkpoint {
    /// The renderer in this checkpoint's style.
    pub fn renderer(&self) -> AnsiRenderer {
        // Tokens come from `AnsiRenderer::state` or were checked when read.
        AnsiRenderer::from_state(&self.state).unwrap_or_default()
    }
}

/// The line where step `number` (from 1) starts: its `--- step N: name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepMark {
    pub number: u32,
    pub line: u64,
}

/// Why a stored index could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IndexError {
    #[error("not a log index (line {0})")]
    Malformed(usize),
    #[error("a log index of version {0}, which this server does not read")]
    Version(String),
}

/// The line index of a log: its checkpoints, its steps' first lines and
/// its length, kept up to date by [`LineIndex::feed`].
#[derive(Debug, Clone)]
pub struct LineIndex {
    checkpoints: Vec<Checkpoint>,
    steps: Vec<StepMark>,
    length: u64,
    /// Lines ended by a newline.
    complete: u64,
    /// The bytes of the unfinished last line (held to read it whole once
    /// its newline comes), and their count (kept alone by a stored index).
    partial: Vec<u8>,
    partial_len: u64,
    /// The style at the start of the unfinished line.
    renderer: AnsiRenderer,
    next_checkpoint: u64,
}

impl Default for LineIndex {
    fn default() -> Self {
        LineIndex::new()
    }
}

/// The marker the executor writes at the start of each step.
const STEP_MARK: &[u8] = b"--- step ";

impl LineIndex {
    /// The index of an empty log.
    pub fn new() -> LineIndex {
        LineIndex {
            checkpoints: vec![Checkpoint {
                offset: 0,
                line: 1,
                state: AnsiRenderer::new().state(),
            }],
            steps: Vec::new(),
            length: 0,
            complete: 0,
            partial: Vec::new(),
            partial_len: 0,
            renderer: AnsiRenderer::new(),
            next_checkpoint: CHECKPOINT_BYTES,
        }
    }

    /// The index of `log`, whole.
    pub fn of(log: &[u8]) -> LineIndex {
        let mut index = LineIndex::new();
        index.feed(log);
        index
    }

    /// Takes the next bytes of the log, in any pieces.
    pub fn feed(&mut self, bytes: &[u8]) {
        let mut start = 0;
        // Escapes are rare: a line is read for its style only when the
        // next escape falls in it.
        let mut next_escape = memchr::memchr(0x1b, bytes).unwrap_or(usize::MAX);
        for newline in memchr::memchr_iter(b'\n', bytes) {
            if self.partial.is_empty() {
                let line = &bytes[start..newline];
                if newline > next_escape {
                    self.renderer.advance(line);
                    next_escape = memchr::memchr(0x1b, &bytes[newline..])
                        .map_or(usize::MAX, |at| newline + at);
                }
                if line.first() == Some(&b'-') {
                    self.mark_step(line);
                }
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&bytes[start..newline]);
                self.renderer.advance(&line);
                self.mark_step(&line);
                if newline > next_escape {
                    next_escape = memchr::memchr(0x1b, &bytes[newline..])
                        .map_or(usize::MAX, |at| newline + at);
                }
            }
            self.complete += 1;
            start = newline + 1;
            let offset = self.length + start as u64;
            if offset >= self.next_checkpoint {
                self.checkpoints.push(Checkpoint {
                    offset,
                    line: self.complete + 1,
                    state: self.renderer.state(),
                });
                self.next_checkpoint = (offset / CHECKPOINT_BYTES + 1) * CHECKPOINT_BYTES;
            }
        }
        self.partial.extend_from_slice(&bytes[start..]);
        self.partial_len = self.partial.len() as u64;
        self.length += bytes.len() as u64;
    }

    fn mark_step(&mut self, line: &[u8]) {
        let Some(rest) = line.strip_prefix(STEP_MARK) else {
            return;
        };
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let number = std::str::from_utf8(&rest[..digits])
            .ok()
            .and_then(|n| n.parse::<u32>().ok());
        // Steps come in order: a task printing a look-alike line out of
        // order does not move a section.
        let expected = self.steps.last().map_or(1, |s| s.number + 1);
        if number == Some(expected) && rest[digits..].starts_with(b": ") {
            self.steps.push(StepMark {
                number: expected,
                line: self.complete + 1,
            });
        }
    }

    /// The log's length in bytes.
    pub fn length(&self) -> u64 {
        self.length
    }

    /// Lines in the log, the unfinished last one included.
    pub fn lines(&self) -> u64 {
        self.complete + u64::from(self.partial_len > 0)
    }

    /// Whether the last line is still unfinished (a running task may add
    /// to it).
    pub fn ends_unfinished(&self) -> bool {
        self.partial_len > 0
    }

    /// The last checkpoint at or before line `line`.
    pub fn checkpoint_for_line(&self, line: u64) -> &Checkpoint {
        let at = self.checkpoints.partition_point(|c| c.line <= line);
        &self.checkpoints[at.saturating_sub(1)]
    }

    /// The last checkpoint at or before byte `offset`.
    pub fn checkpoint_for_offset(&self, offset: u64) -> &Checkpoint {
        let at = self.checkpoints.partition_point(|c| c.offset <= offset);
        &self.checkpoints[at.saturating_sub(1)]
    }

    /// The first checkpoint after `checkpoint` (where a read from it may
    /// stop), if any.
    pub fn checkpoint_after(&self, checkpoint: &Checkpoint) -> Option<&Checkpoint> {
        let at = self
            .checkpoints
            .partition_point(|c| c.offset <= checkpoint.offset);
        self.checkpoints.get(at)
    }

    pub fn checkpoints(&self) -> &[Checkpoint] {
        &self.checkpoints
    }

    /// The steps' first lines, in order.
    pub fn steps(&self) -> &[StepMark] {
        &self.steps
    }

    /// The number of the step line `line` belongs to, if it is in one.
    pub fn step_of(&self, line: u64) -> Option<u32> {
        let at = self.steps.partition_point(|s| s.line <= line);
        at.checked_sub(1).map(|k| self.steps[k].number)
    }

    /// The index as text, to keep next to a finished log.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut text = format!(
            "kiln-log-index 1\nlength {} lines {} partial {}\n",
            self.length, self.complete, self.partial_len
        );
        for c in &self.checkpoints {
            let _ = writeln!(text, "c {} {} {}", c.offset, c.line, c.state);
        }
        for s in &self.steps {
            let _ = writeln!(text, "s {} {}", s.number, s.line);
        }
        text
    }

    /// An index [`LineIndex::to_text`] wrote. It describes a finished log:
    /// it takes no more bytes.
    pub fn from_text(text: &str) -> Result<LineIndex, IndexError> {
        let mut lines = text.lines().enumerate();
        match lines.next() {
            Some((_, "kiln-log-index 1")) => {}
            Some((_, head)) if head.starts_with("kiln-log-index ") => {
                return Err(IndexError::Version(head[15..].to_string()));
            }
            _ => return Err(IndexError::Malformed(1)),
        }
        let number = |field: Option<&str>, at: usize| {
            field
                .and_then(|f| f.parse::<u64>().ok())
                .ok_or(IndexError::Malformed(at + 1))
        };
        let (at, sizes) = lines.next().ok_or(IndexError::Malformed(2))?;
        let fields: Vec<&str> = sizes.split(' ').collect();
        if fields.len() != 6
            || fields[0] != "length"
            || fields[2] != "lines"
            || fields[4] != "partial"
        {
            return Err(IndexError::Malformed(at + 1));
        }
        let mut index = LineIndex::new();
        index.length = number(Some(fields[1]), at)?;
        index.complete = number(Some(fields[3]), at)?;
        index.partial_len = number(Some(fields[5]), at)?;
        index.checkpoints.clear();
        for (at, line) in lines {
            let mut fields = line.split(' ');
            match fields.next() {
                Some("c") => {
                    let offset = number(fields.next(), at)?;
                    let line = number(fields.next(), at)?;
                    let state = fields.next().ok_or(IndexError::Malformed(at + 1))?;
                    AnsiRenderer::from_state(state).ok_or(IndexError::Malformed(at + 1))?;
                    index.checkpoints.push(Checkpoint {
                        offset,
                        line,
                        state: state.to_string(),
                    });
                }
                Some("s") => {
                    let number_ = number(fields.next(), at)?;
                    let line = number(fields.next(), at)?;
                    index.steps.push(StepMark {
                        number: u32::try_from(number_)
                            .map_err(|_| IndexError::Malformed(at + 1))?,
                        line,
                    });
                }
                _ => return Err(IndexError::Malformed(at + 1)),
            }
        }
        let ordered = index
            .checkpoints
            .first()
            .is_some_and(|c| c.offset == 0 && c.line == 1)
            && index
                .checkpoints
                .windows(2)
                .all(|w| w[0].offset < w[1].offset && w[0].line < w[1].line);
        if !ordered {
            return Err(IndexError::Malformed(3));
        }
        index.next_checkpoint = u64::MAX;
        Ok(index)
    }
}

/// Renders the lines numbered `from..to` of `bytes`, the log read from
/// `checkpoint` on. Lines before `from` are read for their style only. A
/// last piece without its newline is a line only when `at_end` (the bytes
/// reach the log's end: its unfinished last line); otherwise the read was
/// cut there and it is left out.
pub fn window(
    bytes: &[u8],
    checkpoint: &Checkpoint,
    from: u64,
    to: u64,
    at_end: bool,
) -> Vec<LogLine> {
    let mut renderer = checkpoint.renderer();
    let mut number = checkpoint.line;
    let mut shown = Vec::new();
    let mut start = 0;
    let mut pieces = memchr::memchr_iter(b'\n', bytes);
    while number < to {
        let end = match pieces.next() {
            Some(newline) => newline,
            None if at_end && start < bytes.len() => bytes.len(),
            None => break,
        };
        let line = &bytes[start..end];
        if number >= from {
            let mut html = String::new();
            if line.len() > LONGEST_LINE_SHOWN {
                renderer
                    .clone()
                    .line(&line[..LONGEST_LINE_SHOWN], &mut html);
                html.push_str(&format!(
                    "<span class=\"cut\"> … {} more bytes in the raw log</span>",
                    line.len() - LONGEST_LINE_SHOWN
                ));
                renderer.advance(line);
            } else {
                renderer.line(line, &mut html);
            }
            shown.push(LogLine { number, html });
        } else {
            renderer.advance(line);
        }
        number += 1;
        start = end + 1;
        if start > bytes.len() {
            break;
        }
    }
    shown
}

/// What the task page shows of a log: a window of its lines, where it
/// sits in the log, and the log's steps.
#[derive(Debug, Clone, Default)]
pub struct LogView {
    pub lines: Vec<LogLine>,
    /// Lines and bytes in the whole log.
    pub total_lines: u64,
    pub length: u64,
    /// The steps as sections: where each starts in the log, and its record.
    pub sections: Vec<Section>,
    /// Where the page's script asks for other windows and searches.
    pub window_href: String,
    /// The task may still write to the log: the page follows it.
    pub live: bool,
    /// The last line has no newline yet: a running task may add to it.
    pub unfinished: bool,
}

/// A step as a section of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// From 1, as in the log's `--- step N: name` line.
    pub number: u32,
    pub name: String,
    pub status: String,
    pub duration: Option<String>,
    /// Its first line (the marker) and the first line after it, if the
    /// log shows them.
    pub first_line: Option<u64>,
    pub end_line: Option<u64>,
}

impl LogView {
    /// The section line `line` belongs to.
    pub fn section_of(&self, line: u64) -> Option<&Section> {
        self.sections.iter().rev().find(|s| {
            s.first_line.is_some_and(|first| first <= line)
                && s.end_line.is_none_or(|end| line < end)
        })
    }
}

/// The lines of a window as the page holds them: `div.l#L{n}`, its number
/// a `#L{n}` link. A step's first line heads its section: it says the
/// step's status and duration and holds the button that folds the section
/// (shown once the page's script runs); every line of a section says which
/// one it is in (`data-s`). The page's script puts windows it fetches in
/// the page the same way.
pub fn lines_html(lines: &[LogLine], view: &LogView) -> maud::Markup {
    use maud::{PreEscaped, html};
    html! {
        @for line in lines {
            @let section = view.section_of(line.number);
            @let head = section.filter(|s| s.first_line == Some(line.number));
            div class=(if head.is_some() { "l sh" } else { "l" }) id=(format!("L{}", line.number))
                data-s=[section.map(|s| s.number)] {
                a href=(format!("#L{}", line.number)) { (line.number) }
                span.t { (PreEscaped(&line.html)) }
                @if let Some(step) = head {
                    span.sm {
                        span class=(format!("status s-{}", step.status)) { (step.status.replace('_', " ")) }
                        " " span.dur { (step.duration.as_deref().unwrap_or("")) } " "
                        button.fold type="button" aria-expanded="true" data-fold=(step.number)
                            aria-label=(format!("Fold step {}", step.name)) hidden { "Fold" }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn shown(lines: &[LogLine]) -> Vec<(u64, &str)> {
        lines.iter().map(|l| (l.number, l.html.as_str())).collect()
    }

    #[test]
    fn a_whole_log_is_numbered_from_one_with_its_colours() {
        let log = b"a\n\x1b[31mb\nc\n";
        let index = LineIndex::of(log);
        assert_eq!(index.lines(), 3);
        let lines = window(log, &index.checkpoints()[0], 1, 10, true);
        assert_eq!(
            shown(&lines),
            [
                (1, "a"),
                (2, "<span class=\"f1\">b</span>"),
                (3, "<span class=\"f1\">c</span>")
            ]
        );
    }

    #[test]
    fn an_unfinished_last_line_counts_only_at_the_end() {
        let log = b"one\ntwo";
        let index = LineIndex::of(log);
        assert_eq!(index.lines(), 2);
        assert!(index.ends_unfinished());
        let start = &index.checkpoints()[0];
        assert_eq!(window(log, start, 1, 5, true).len(), 2);
        assert_eq!(window(log, start, 1, 5, false).len(), 1);
        assert!(window(b"", start, 1, 5, true).is_empty());
    }

    #[test]
    fn a_window_deep_in_a_long_log_has_its_own_numbers_and_colour() {
        let mut log = b"\x1b[32m".to_vec();
        for n in 1..=200_000 {
            log.extend_from_slice(format!("{n}\n").as_bytes());
        }
        let index = LineIndex::of(&log);
        assert_eq!(index.lines(), 200_000);
        assert!(index.checkpoints().len() > 4);
        let checkpoint = index.checkpoint_for_line(150_000);
        assert!(checkpoint.line <= 150_000 && checkpoint.offset > 0);
        let lines = window(
            &log[checkpoint.offset as usize..],
            checkpoint,
            150_000,
            150_002,
            true,
        );
        assert_eq!(
            shown(&lines),
            [
                (150_000, "<span class=\"f2\">150000</span>"),
                (150_001, "<span class=\"f2\">150001</span>")
            ]
        );
    }

    #[test]
    fn steps_are_found_in_order_only() {
        let log = b"--- step 1: build\nx\n--- step 3: fake\n--- step 2: test\ny\n";
        let index = LineIndex::of(log);
        assert_eq!(
            index.steps(),
            [
                StepMark { number: 1, line: 1 },
                StepMark { number: 2, line: 4 }
            ]
        );
        assert_eq!(index.step_of(3), Some(1));
        assert_eq!(index.step_of(5), Some(2));
    }

    #[test]
    fn a_line_too_long_is_cut_but_keeps_its_colour_for_the_next() {
        let mut log = b"\x1b[31m".to_vec();
        log.extend(std::iter::repeat_n(b'x', LONGEST_LINE_SHOWN + 10));
        log.extend_from_slice(b"\x1b[34m\nnext\n");
        let index = LineIndex::of(&log);
        let lines = window(&log, &index.checkpoints()[0], 1, 3, true);
        // 5 bytes of escape, 10 of text and 5 of escape past the limit.
        assert!(
            lines[0]
                .html
                .ends_with(" 20 more bytes in the raw log</span>")
        );
        assert_eq!(lines[1].html, "<span class=\"f4\">next</span>");
    }

    #[test]
    fn a_stored_index_reads_back_and_a_bad_one_is_refused() {
        let log = "\x1b[1mx\n".repeat(100_000);
        let index = LineIndex::of(log.as_bytes());
        let back = LineIndex::from_text(&index.to_text()).unwrap();
        assert_eq!(back.checkpoints(), index.checkpoints());
        assert_eq!(back.lines(), index.lines());
        assert_eq!(back.length(), index.length());
        assert_eq!(
            LineIndex::from_text("kiln-log-index 9\n").unwrap_err(),
            IndexError::Version("9".into())
        );
        assert!(LineIndex::from_text("hello").is_err());
        assert!(
            LineIndex::from_text("kiln-log-index 1\nlength 1 lines 1 partial 0\nc 5 1 0\n")
                .is_err()
        );
    }

    #[test]
    fn a_steps_first_line_heads_its_section_with_status_and_duration() {
        let log = b"--- step 1: build\n<b>\n--- step 2: test\nok\n";
        let index = LineIndex::of(log);
        let lines = window(log, &index.checkpoints()[0], 1, 10, true);
        let section = |number: u32, first: u64, end: Option<u64>| Section {
            number,
            name: ["build", "test"][number as usize - 1].into(),
            status: "success".into(),
            duration: Some("3s".into()),
            first_line: Some(first),
            end_line: end,
        };
        let view = LogView {
            sections: vec![section(1, 1, Some(3)), section(2, 3, None)],
            ..LogView::default()
        };
        let html = lines_html(&lines, &view).into_string();
        assert!(
            html.starts_with("<div class=\"l sh\" id=\"L1\" data-s=\"1\"><a href=\"#L1\">1</a>")
        );
        assert!(html.contains("<div class=\"l\" id=\"L2\" data-s=\"1\"><a href=\"#L2\">2</a><span class=\"t\">&lt;b&gt;</span></div>"));
        assert!(html.contains("id=\"L3\" data-s=\"2\""));
        assert!(html.contains(
            "<span class=\"status s-success\">success</span> <span class=\"dur\">3s</span>"
        ));
        assert!(html.contains("aria-label=\"Fold step test\""));
    }

    /// A log made of these pieces: text, newlines and escapes cut anywhere.
    fn pieces() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop_oneof![
                Just(b"\x1b[".to_vec()),
                Just(b"31".to_vec()),
                Just(b";".to_vec()),
                Just(b"m".to_vec()),
                Just(b"38;5;200".to_vec()),
                Just(b"\n".to_vec()),
                Just(b"\n".to_vec()),
                Just(b"--- step 1: a\n".to_vec()),
                Just(b"\r".to_vec()),
                Just(b"word ".to_vec()),
                any::<u8>().prop_map(|b| vec![b]),
            ],
            0..400,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest! {
        /// Rendering a window from any checkpoint, however the log was fed
        /// (in any pieces), equals rendering the log from its start.
        #[test]
        fn checkpointed_windows_equal_rendering_from_the_start(
            log in pieces(),
            cuts in prop::collection::vec(0usize..2000, 0..6),
            from in 1u64..60,
            span in 1u64..60,
        ) {
            // Small logs: checkpoints at every byte boundary multiple would
            // need 256 KiB; pad with lines so there are several.
            let mut big = Vec::new();
            for k in 0..3 {
                big.extend_from_slice(&log);
                big.extend(std::iter::repeat_n(b'.', CHECKPOINT_BYTES as usize / 2));
                big.push(b'\n');
                if k == 1 { big.extend_from_slice(b"\x1b[4m"); }
            }
            big.extend_from_slice(&log);
            let whole = LineIndex::of(&big);
            let mut fed = LineIndex::new();
            let mut at = 0;
            let mut cuts = cuts.clone();
            cuts.sort_unstable();
            for cut in cuts {
                let cut = (cut * 211).min(big.len());
                if cut > at {
                    fed.feed(&big[at..cut]);
                    at = cut;
                }
            }
            fed.feed(&big[at..]);
            prop_assert_eq!(fed.checkpoints(), whole.checkpoints());
            prop_assert_eq!(fed.steps(), whole.steps());
            prop_assert_eq!(fed.lines(), whole.lines());
            let everything = window(&big, &whole.checkpoints()[0], 1, u64::MAX, true);
            prop_assert_eq!(everything.len() as u64, whole.lines());
            for checkpoint in whole.checkpoints() {
                let first = checkpoint.line + from - 1;
                let lines = window(&big[checkpoint.offset as usize..], checkpoint, first, first + span, true);
                let expected: Vec<LogLine> = everything
                    .iter()
                    .filter(|l| l.number >= first && l.number < first + span)
                    .cloned()
                    .collect();
                prop_assert_eq!(lines, expected);
            }
        }
    }
}
