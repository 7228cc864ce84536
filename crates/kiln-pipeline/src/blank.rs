//! Blanking an unknown key out of a pipeline file's text, so that the rest of
//! the file can still be deserialized and checked.
//!
//! serde stops at the first unknown key. To report every problem of a file
//! at once, [`parse`](crate::parse) overwrites the key and its value with
//! spaces and deserializes the text again. Only the entry's bytes change and
//! line breaks are kept, so every other byte offset and every line stays
//! where it was; columns only move after a multi-byte character blanked on
//! the same line, which [`Shift`] corrects.
//!
//! The entry is found in the YAML events, not guessed from the text; when it
//! cannot be found or blanked with certainty, nothing is blanked: a wrong
//! guess would report errors the file does not have.

use std::borrow::Cow;
use std::ops::Range;

use serde_saphyr::granit_parser::{self, Event, Parser, StructureStyle};

/// A text with one mapping entry blanked out.
pub(crate) struct Blanked {
    pub text: String,
    /// The bytes overwritten.
    pub range: Range<usize>,
    /// The keys leading from the top level to the mapping the entry was in
    /// (a list item by its index); `None` when that mapping may also be used
    /// elsewhere, through an anchor or a merge key.
    pub scope: Option<Vec<String>>,
    /// Set when blanking moved the columns of what follows on the same line.
    pub shift: Option<Shift>,
}

/// Blanking replaced multi-byte characters with as many spaces as they had
/// bytes: what follows on the same line, bytes `from..to`, is `columns`
/// further right in the blanked text than in the file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shift {
    pub from: usize,
    pub to: usize,
    pub columns: u64,
}

/// Blanks the entry whose key `key` starts at byte `key_at`: the key, its
/// value, and what joins them to the mapping (the `:`, and in a flow mapping
/// the `,` after the entry). A block mapping left without entries would read
/// as an empty value instead of a mapping, so `{}` is written in its place.
///
/// `None` when the key is not there, when the entry defines an anchor (an
/// alias elsewhere may use it), when the key has an anchor or a tag, or when
/// the text around it is not as expected. The parser runs at most
/// `max_depth` deep, and stops right after the entry.
pub(crate) fn blank_entry(
    text: &str,
    key_at: usize,
    key: &str,
    max_depth: usize,
) -> Option<Blanked> {
    let entry = find_entry(text, key_at, key, max_depth)?;
    let bytes = text.as_bytes();
    let start = entry.key.start;
    let mut end = entry.end;
    // The `:` after the key, which an empty value does not cover; nor does
    // it cover the `:` of a last nested key with an empty value.
    let colon = skip(bytes, entry.key.end, false);
    if bytes.get(colon) == Some(&b':') {
        end = end.max(colon + 1);
    } else if !entry.flow {
        return None;
    }
    let colon = skip(bytes, end, false);
    if end > entry.key.end && bytes.get(colon) == Some(&b':') {
        end = colon + 1;
    }
    if end > entry.next {
        return None;
    }
    if entry.flow {
        // A single `key: value` pair in a flow list is a mapping without
        // braces: blanking it would remove the list item.
        if bytes.get(entry.mapping_start) != Some(&b'{') {
            return None;
        }
        let after = skip(bytes, end, true);
        match bytes.get(after) {
            // Blanking an entry but not its comma would leave `{ , b: 1 }`.
            Some(b',') => end = after + 1,
            Some(b'}') => {}
            _ => return None,
        }
    } else {
        // Only indentation and list dashes may precede a block key on its
        // line (not `?`, `&anchor` or `!tag`).
        let line_start = text.get(..start)?.rfind('\n').map_or(0, |i| i + 1);
        if !bytes
            .get(line_start..start)?
            .iter()
            .all(|&b| b == b' ' || b == b'-')
        {
            return None;
        }
    }
    if !text.is_char_boundary(start) || !text.is_char_boundary(end) || end - start < 2 {
        return None;
    }

    let mut blanked = bytes.to_vec();
    for byte in &mut blanked[start..end] {
        if !matches!(*byte, b'\n' | b'\r') {
            *byte = b' ';
        }
    }
    if entry.only && !entry.flow {
        // The key and its `:` are on one line: at least two bytes to write
        // `{}` over.
        blanked[start] = b'{';
        blanked[start + 1] = b'}';
    }
    let last_line = &text[text[start..end]
        .rfind('\n')
        .map_or(start, |i| start + i + 1)..end];
    let columns = (last_line.len() - last_line.chars().count()) as u64;
    let line_end = text[end..].find('\n').map_or(text.len(), |i| end + i);
    let shift = (columns > 0 && end < line_end).then_some(Shift {
        from: end,
        to: line_end,
        columns,
    });
    Some(Blanked {
        text: String::from_utf8(blanked).ok()?,
        range: start..end,
        scope: entry.scope,
        shift,
    })
}

/// The offset of the first byte at or after `at` that is not a space or a
/// tab; also skipping line breaks and comments when `lines`.
fn skip(bytes: &[u8], mut at: usize, lines: bool) -> usize {
    loop {
        match bytes.get(at) {
            Some(b' ' | b'\t') => at += 1,
            Some(b'\n' | b'\r') if lines => at += 1,
            Some(b'#') if lines => {
                at = bytes[at..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(bytes.len(), |i| at + i);
            }
            _ => return at,
        }
    }
}

/// A mapping entry, as the YAML events place it.
struct Entry {
    /// The key's bytes.
    key: Range<usize>,
    /// The end of the value's last token (the key's end for an empty value).
    end: usize,
    /// Where the next token after the value starts: nothing may be blanked
    /// from there on.
    next: usize,
    /// Whether the mapping is a flow mapping (`{ … }`).
    flow: bool,
    /// Where the mapping starts.
    mapping_start: usize,
    /// Whether the entry is the mapping's only one.
    only: bool,
    scope: Option<Vec<String>>,
}

/// An open mapping or list while walking the events.
struct Frame<'t> {
    mapping: bool,
    flow: bool,
    start: usize,
    /// In a mapping, whether the next node is a key.
    at_key: bool,
    /// In a mapping, the current key when it is a scalar.
    key: Option<Cow<'t, str>>,
    /// Entries (mapping) or items (list) already complete.
    done: usize,
    /// The collection has an anchor: aliases may use it elsewhere.
    anchored: bool,
}

/// A node starts in the innermost collection: remember it if it is a key.
fn begin_node<'t>(frames: &mut [Frame<'t>], scalar: Option<Cow<'t, str>>) {
    if let Some(frame) = frames.last_mut()
        && frame.mapping
        && frame.at_key
    {
        frame.key = scalar;
    }
}

/// A node ends in the innermost collection.
fn end_node(frames: &mut [Frame<'_>]) {
    if let Some(frame) = frames.last_mut() {
        if !frame.mapping || !frame.at_key {
            frame.done += 1;
        }
        if frame.mapping {
            frame.at_key = !frame.at_key;
        }
    }
}

/// The path to the innermost mapping, or `None` if what is in it may be used
/// elsewhere: under an anchor, or merged with `<<`.
fn scope_of(frames: &[Frame<'_>]) -> Option<Vec<String>> {
    if frames.iter().any(|frame| frame.anchored) {
        return None;
    }
    let (_, outer) = frames.split_last()?;
    outer
        .iter()
        .map(|frame| match (&frame.mapping, &frame.key) {
            (true, Some(key)) if key != "<<" => Some(key.to_string()),
            (true, _) => None,
            (false, _) => Some(frame.done.to_string()),
        })
        .collect()
}

fn find_entry(text: &str, key_at: usize, key: &str, max_depth: usize) -> Option<Entry> {
    let options = granit_parser::options! {
        flow_nesting_limit: max_depth,
        block_nesting_limit: max_depth + 1,
    };
    let mut events = Parser::new_from_str_with_options(text, options);
    let mut frames: Vec<Frame<'_>> = Vec::new();

    // Up to the key, keeping track of the open collections.
    let (key_range, scope) = loop {
        let (event, span) = events.next()?.ok()?;
        let range = span.byte_range()?;
        if range.start > key_at {
            return None;
        }
        match event {
            Event::Scalar(value, _, anchor, tag) => {
                let is_key = frames.last().is_some_and(|f| f.mapping && f.at_key);
                if is_key && range.start == key_at && !range.is_empty() {
                    if value != key || anchor != 0 || tag.is_some() || span.tag_start.is_some() {
                        return None;
                    }
                    break (range, scope_of(&frames));
                }
                begin_node(&mut frames, Some(value));
                end_node(&mut frames);
            }
            Event::Alias(_) => {
                begin_node(&mut frames, None);
                end_node(&mut frames);
            }
            Event::SequenceStart(style, anchor, _) | Event::MappingStart(style, anchor, _) => {
                if frames.len() >= max_depth {
                    return None;
                }
                begin_node(&mut frames, None);
                frames.push(Frame {
                    mapping: matches!(event, Event::MappingStart(..)),
                    flow: style == StructureStyle::Flow,
                    start: range.start,
                    at_key: true,
                    key: None,
                    done: 0,
                    anchored: anchor != 0,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                frames.pop()?;
                end_node(&mut frames);
            }
            Event::StreamStart | Event::DocumentStart(..) | Event::DocumentEnd => {}
            _ => return None,
        }
    };

    // The value: one node, which must not define an anchor.
    let mut end = key_range.end;
    let mut depth = 0usize;
    loop {
        let (event, span) = events.next()?.ok()?;
        let range = span.byte_range()?;
        if !range.is_empty() {
            end = end.max(range.end);
        }
        match event {
            Event::Scalar(_, _, 0, _) | Event::Alias(_) => {}
            Event::SequenceStart(_, 0, _) | Event::MappingStart(_, 0, _) if depth < max_depth => {
                depth += 1;
            }
            Event::SequenceEnd | Event::MappingEnd => depth = depth.checked_sub(1)?,
            _ => return None,
        }
        if depth == 0 {
            break;
        }
    }

    // What follows: the mapping's next key, or its end.
    let (event, span) = events.next()?.ok()?;
    let next = span.byte_range()?.start;
    let mapping = frames.last()?;
    Some(Entry {
        key: key_range,
        end,
        next,
        flow: mapping.flow,
        mapping_start: mapping.start,
        only: mapping.done == 0 && matches!(event, Event::MappingEnd),
        scope,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEPTH: usize = 32;

    /// The text after blanking `key`, located by its first occurrence.
    fn blanked(text: &str, key: &str) -> Option<String> {
        let at = text.find(key).expect("key in text");
        let result = blank_entry(text, at, key, DEPTH)?;
        assert_eq!(result.text.len(), text.len());
        assert_eq!(result.text.lines().count(), text.lines().count());
        Some(result.text)
    }

    #[test]
    fn blanks_block_entries() {
        assert_eq!(
            blanked("a:\n  imgae: x   # c\n  steps: [x]\n", "imgae").as_deref(),
            Some("a:\n             # c\n  steps: [x]\n")
        );
        // A nested value, a literal block and an empty value.
        assert_eq!(
            blanked("a: 1\nimgae:\n  b: [1,\n    2]\n  c:\nd: 2\n", "imgae").as_deref(),
            Some("a: 1\n      \n        \n      \n    \nd: 2\n")
        );
        assert_eq!(
            blanked("imgae: |\n  x\n\n  y\nd: 2\n", "imgae").as_deref(),
            Some("        \n   \n\n   \nd: 2\n")
        );
        assert_eq!(
            blanked("a: 1\nimgae:\nd: 2\n", "imgae").as_deref(),
            Some("a: 1\n      \nd: 2\n")
        );
        // The first key of a list item, and a list at the key's indentation.
        assert_eq!(
            blanked("- nmae: x\n  run: y\n", "nmae").as_deref(),
            Some("-        \n  run: y\n")
        );
        assert_eq!(
            blanked("s:\n- x\nt: 1\n", "s").as_deref(),
            Some("  \n   \nt: 1\n")
        );
    }

    #[test]
    fn an_only_block_entry_becomes_an_empty_mapping() {
        assert_eq!(
            blanked("a:\n  imgae: x\nb: 1\n", "imgae").as_deref(),
            Some("a:\n  {}      \nb: 1\n")
        );
        assert_eq!(
            blanked("- rnu: make\n", "rnu").as_deref(),
            Some("- {}       \n")
        );
        assert_eq!(
            blanked("verison: 1\n", "verison").as_deref(),
            Some("{}        \n")
        );
    }

    #[test]
    fn blanks_flow_entries_and_their_comma() {
        assert_eq!(
            blanked("a: { imgae: x, b: 1 }\n", "imgae").as_deref(),
            Some("a: {           b: 1 }\n")
        );
        assert_eq!(
            blanked("a: { b: 1, imgae: [x, {y: z}] }\n", "imgae").as_deref(),
            Some("a: { b: 1,                    }\n")
        );
        assert_eq!(
            blanked("a: {imgae}\n", "imgae").as_deref(),
            Some("a: {     }\n")
        );
        // A quoted key, a comment and a comma on the next line.
        let text = "a: {\"imgae\" : x # c\n  , b: 1}\n";
        let result = blank_entry(text, 4, "imgae", DEPTH).expect("blanked");
        assert_eq!(result.text, "a: {               \n    b: 1}\n");
    }

    #[test]
    fn refuses_when_unsure() {
        // Not a key here, another key, or not at a key.
        assert!(blank_entry("a: imgae\n", 3, "imgae", DEPTH).is_none());
        assert!(blank_entry("imgae: 1\n", 0, "image", DEPTH).is_none());
        assert!(blank_entry("a:\n  imgae: 1\n", 4, "imgae", DEPTH).is_none());
        assert!(blank_entry("a: 1\n", 100, "a", DEPTH).is_none());
        // Anchors in the entry, or on the key; tags on the key.
        assert!(blanked("imgae: &x 1\nb: *x\n", "imgae").is_none());
        assert!(blanked("imgae:\n  a: &x 1\nb: *x\n", "imgae").is_none());
        assert!(blanked("&k imgae: 1\nb: 2\n", "imgae").is_none());
        assert!(blanked("!!str imgae: 1\nb: 2\n", "imgae").is_none());
        // An explicit key.
        assert!(blanked("? imgae\n: 1\nb: 2\n", "imgae").is_none());
        // A pair in a flow list: blanking it would remove the item.
        assert!(blanked("s: [ rnu: make ]\n", "rnu").is_none());
        // A syntax error inside the value.
        assert!(blanked("imgae: [1, 2\nb: 1\n", "imgae").is_none());
        // Too deep.
        let deep = format!("imgae: {}\n", "[".repeat(100));
        assert!(blanked(&deep, "imgae").is_none());
    }

    #[test]
    fn scopes_name_the_mapping() {
        let scope = |text: &str, key: &str| {
            let at = text.find(key).expect("key");
            blank_entry(text, at, key, DEPTH).expect("blanked").scope
        };
        let text = "tasks:\n  a:\n    steps:\n      - run: x\n      - { rnu: y }\n    imgae: x\n";
        assert_eq!(scope(text, "imgae"), Some(vec!["tasks".into(), "a".into()]));
        assert_eq!(
            scope(text, "rnu"),
            Some(vec!["tasks".into(), "a".into(), "steps".into(), "1".into()])
        );
        assert_eq!(scope("verison: 1\ntasks: {}\n", "verison"), Some(vec![]));
        // Templates and merged mappings may be used anywhere.
        assert_eq!(scope("t: &t\n  imgae: x\n  b: 1\n", "imgae"), None);
        assert_eq!(scope("t:\n  <<: { imgae: x }\n  b: 1\n", "imgae"), None);
    }

    #[test]
    fn shifts_columns_after_multibyte_characters() {
        let text = "a: { imgae: é, b: 1 }\n";
        let result = blank_entry(text, 5, "imgae", DEPTH).expect("blanked");
        assert_eq!(result.text, "a: {            b: 1 }\n");
        let shift = result.shift.expect("shift");
        assert_eq!((shift.from, shift.to, shift.columns), (15, 22, 1));
        // Nothing follows on the line: nothing moves.
        let result = blank_entry("imgae: é # c\nb: 1\n", 0, "imgae", DEPTH).expect("blanked");
        assert!(result.shift.is_some());
        let result = blank_entry("imgae: é\nb: 1\n", 0, "imgae", DEPTH).expect("blanked");
        assert!(result.shift.is_none());
    }
}
