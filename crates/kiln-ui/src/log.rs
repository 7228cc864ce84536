//! The tail of a task's log, as the task page shows it before any script
//! runs: the last lines of a window of bytes read from the end of the log,
//! each rendered with its ANSI colours and numbered for `#L{n}` links.

use crate::ansi::AnsiRenderer;

/// One rendered line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub number: u64,
    /// HTML: escaped text and colour spans.
    pub html: String,
}

/// What the page shows of a log.
#[derive(Debug, Clone, Default)]
pub struct Tail {
    pub lines: Vec<LogLine>,
    /// The numbers are the log's own (the window starts at its first
    /// byte); otherwise they count from the window's first whole line.
    pub from_start: bool,
    /// Lines of the window not shown (beyond the line budget).
    pub hidden_lines: u64,
    /// Where the window starts in the log, and the log's length, in bytes.
    pub window_start: u64,
    pub length: u64,
}

/// Renders the last `max_lines` lines of `window`, the bytes of a log of
/// `length` bytes from `window_start` to its end. A window that starts
/// inside the log drops its first, partial line. Lines before the ones
/// shown are still read for their colours, which carry on into the next.
pub fn tail(window: &[u8], window_start: u64, length: u64, max_lines: usize) -> Tail {
    let from_start = window_start == 0;
    let mut text = window;
    if !from_start && let Some(newline) = text.iter().position(|b| *b == b'\n') {
        text = &text[newline + 1..];
    }
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    let mut lines: Vec<&[u8]> = if text.is_empty() {
        Vec::new()
    } else {
        text.split(|b| *b == b'\n').collect()
    };
    let hidden = lines.len().saturating_sub(max_lines);
    let mut renderer = AnsiRenderer::new();
    let mut scratch = String::new();
    for line in lines.drain(..hidden) {
        scratch.clear();
        renderer.line(line, &mut scratch);
    }
    let lines = lines
        .into_iter()
        .enumerate()
        .map(|(i, line)| {
            let mut html = String::new();
            renderer.line(line, &mut html);
            LogLine {
                number: (hidden + i + 1) as u64,
                html,
            }
        })
        .collect();
    Tail {
        lines,
        from_start,
        hidden_lines: hidden as u64,
        window_start,
        length,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_log_is_numbered_from_one() {
        let tail = tail(b"a\n\x1b[31mb\nc\n", 0, 12, 10);
        assert!(tail.from_start);
        let shown: Vec<(u64, &str)> = tail
            .lines
            .iter()
            .map(|l| (l.number, l.html.as_str()))
            .collect();
        assert_eq!(
            shown,
            [
                (1, "a"),
                (2, "<span class=\"f1\">b</span>"),
                (3, "<span class=\"f1\">c</span>")
            ]
        );
    }

    #[test]
    fn the_budget_keeps_the_last_lines_and_their_colours() {
        let tail = tail(b"\x1b[32mone\ntwo\nthree", 0, 17, 2);
        assert_eq!(tail.hidden_lines, 1);
        assert_eq!(tail.lines[0].number, 2);
        assert_eq!(tail.lines[0].html, "<span class=\"f2\">two</span>");
        assert_eq!(tail.lines[1].number, 3);
    }

    #[test]
    fn a_window_inside_the_log_drops_its_partial_first_line() {
        let tail = tail(b"rtial\nwhole\n", 100, 112, 10);
        assert!(!tail.from_start);
        assert_eq!(tail.lines.len(), 1);
        assert_eq!(tail.lines[0].html, "whole");
        assert!(super::tail(b"", 0, 0, 10).lines.is_empty());
    }
}
