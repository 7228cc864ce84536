//! Text → validated [`Pipeline`], or located [`Diagnostics`].
//!
//! Three stages: serde-saphyr deserializes the text into the file model,
//! [`check`] collects every semantic error it can find, and
//! [`expand`](crate::expand) builds the pipeline. Deserializing stops at the
//! first syntax or type error, but not at an unknown key: that one is
//! reported, blanked out of the text (see [`blank`](crate::blank)), and the
//! text deserialized again, so that a misspelt key does not hide the file's
//! other problems. Resource limits are set so that no input can make this
//! slow or deep: the size is checked first, the parser runs with a budget,
//! and so does the blanking.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};
use serde_saphyr::budget::BudgetBreach;
use serde_saphyr::{
    DefaultMessageFormatter, DuplicateKeyPolicy, Error, Location, MessageFormatter,
};

use crate::blank::{self, Shift};
use crate::expand::{self, MAX_COMBINATIONS, Piece, is_template};
use crate::file::{OrderedMap, PipelineFile, Scalar, Sp, TaskFile};
use crate::{Diagnostic, Diagnostics, Event, Pipeline, dag};

/// Largest pipeline file accepted, in bytes.
pub const MAX_PIPELINE_BYTES: usize = 1 << 20;

/// Deepest nesting of mappings and lists accepted. The format itself needs
/// about six levels.
const MAX_DEPTH: usize = 32;
/// Most YAML nodes (scalars, mappings, lists) accepted, aliases expanded.
const MAX_NODES: usize = 100_000;
/// Most alias uses (`*name`) accepted.
const MAX_ALIASES: usize = 1_000;
/// Most events replayed by aliases: bounds what aliases can expand to.
const MAX_REPLAYED_EVENTS: usize = 100_000;
/// Longest task name.
const MAX_TASK_NAME: usize = 64;
/// Most axes of one matrix.
const MAX_AXES: usize = 32;
/// Most errors reported for one file.
const MAX_DIAGNOSTICS: usize = 200;
/// Errors after which suggestions, which compare a name with every
/// candidate, are no longer computed.
const MAX_SUGGESTIONS: usize = 20;
/// Most unknown keys reported; past them, the rest of the file is not
/// deserialized again and its semantic errors are not reported.
const MAX_UNKNOWN_KEYS: usize = 40;
/// Most bytes read again, in all, to deserialize a file after blanking out
/// unknown keys: each pass reads up to the next error. A large file with
/// unknown keys far from its start gets fewer of them reported, not a slow
/// parse.
const MAX_REREAD_BYTES: usize = MAX_PIPELINE_BYTES;

/// Parses and validates the text of a pipeline file named `file_name` (used
/// in the diagnostics only). Never panics; bounded time and memory.
pub fn parse(file_name: &str, text: &str) -> Result<Pipeline, Diagnostics> {
    let mut report = Report::new(file_name, text);
    if text.len() > MAX_PIPELINE_BYTES {
        report.error_at(
            1,
            1,
            format!(
                "the pipeline file is too large: {} bytes, at most {MAX_PIPELINE_BYTES} (1 MiB)",
                text.len()
            ),
        );
        return Err(report.finish());
    }
    let Some(file) = deserialize(text, &mut report) else {
        return Err(report.finish());
    };
    check(&file, &mut report);
    let pipeline = expand::expand(&file, &mut report);
    if report.diagnostics.is_empty() {
        Ok(pipeline)
    } else {
        Err(report.finish())
    }
}

/// Deserializes the text into the file model, reporting every unknown key up
/// to the first other syntax or type error. `None` when the file model could
/// not be built: its errors are in `report`.
fn deserialize(text: &str, report: &mut Report<'_>) -> Option<PipelineFile> {
    // The text as deserialized: the file, then the file with unknown keys
    // blanked out.
    let mut blanked: Option<String> = None;
    let mut reread = 0usize;
    let mut previous_key: Option<usize> = None;
    for pass in 1..=MAX_UNKNOWN_KEYS {
        let current = blanked.as_deref().unwrap_or(text);
        let error = match serde_saphyr::from_str_with_options::<Option<Root>>(current, options()) {
            Ok(Some(Root(file))) => return Some(file),
            Ok(None) => {
                // Blanking never empties a document (it leaves `{}`), so
                // this is the file itself.
                if pass == 1 {
                    report.error_at(
                        1,
                        1,
                        "the pipeline file is empty: expected a mapping with `version: 1` and `tasks`",
                    );
                }
                return None;
            }
            Err(error) => error,
        };
        report.syntax_error(&error, current);
        let mut inner = &error;
        while let Error::WithSnippet { error, .. } | Error::AliasError { error, .. } = inner {
            inner = error;
        }
        let Error::SerdeUnknownField {
            field,
            expected,
            location,
        } = inner
        else {
            return None;
        };
        // Blank the key out and try again: within bounds, only going forward
        // through the file, and only when its entry is found with certainty;
        // otherwise the errors reported next could be the same again, or of
        // the blanking's making. The key's own location is where it is
        // written, even when an alias brought it here.
        let at = usize::try_from(location.span().byte_offset()?).ok()?;
        if pass == MAX_UNKNOWN_KEYS
            || report.full()
            || reread > MAX_REREAD_BYTES
            || previous_key.is_some_and(|previous| at <= previous)
        {
            return None;
        }
        let result = blank::blank_entry(current, at, field, MAX_DEPTH)?;
        reread += at + result.range.end;
        previous_key = Some(at);
        report.blanked.push(BlankedKey {
            scope: result.scope,
            meant: key_suggestion(field, expected),
        });
        report.shifts.extend(result.shift);
        blanked = Some(result.text);
    }
    None
}

/// An unknown key blanked out of the text.
struct BlankedKey {
    /// See [`blank::Blanked::scope`].
    scope: Option<Vec<String>>,
    /// The key suggested for it.
    meant: Option<&'static str>,
}

fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: MAX_DEPTH,
            flow_nesting_limit: MAX_DEPTH,
            max_nodes: MAX_NODES,
            max_events: 4 * MAX_NODES,
            max_aliases: MAX_ALIASES,
            max_anchors: MAX_ALIASES,
            max_merge_keys: MAX_ALIASES,
            max_documents: 1,
            max_total_scalar_bytes: 4 * MAX_PIPELINE_BYTES,
            max_recorded_anchor_events: MAX_REPLAYED_EVENTS,
            max_recorded_anchor_bytes: 4 * MAX_PIPELINE_BYTES,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: MAX_REPLAYED_EVENTS,
            max_replay_stack_depth: MAX_DEPTH,
        },
        duplicate_keys: DuplicateKeyPolicy::Error,
        strict_booleans: true,
        reject_unsupported_tags: true,
        with_snippet: false,
    }
}

/// The top level: a mapping, with a message naming what a file needs when it
/// is anything else.
struct Root(PipelineFile);

impl<'de> Deserialize<'de> for Root {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RootVisitor;
        impl<'de> Visitor<'de> for RootVisitor {
            type Value = Root;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping with `version: 1` and `tasks` at the top level")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Root, A::Error> {
                PipelineFile::deserialize(de::value::MapAccessDeserializer::new(map)).map(Root)
            }
        }
        deserializer.deserialize_any(RootVisitor)
    }
}

/// Collects located diagnostics for one file.
pub(crate) struct Report<'a> {
    file: &'a str,
    text: &'a str,
    /// The last line a location may be on (one past the text's last line).
    last_line: u64,
    diagnostics: Vec<Diagnostic>,
    /// Errors not kept because there were already [`MAX_DIAGNOSTICS`].
    dropped: usize,
    /// Unknown keys blanked out of the text that was deserialized.
    blanked: Vec<BlankedKey>,
    /// Where columns differ between that text and the file.
    shifts: Vec<Shift>,
}

impl<'a> Report<'a> {
    fn new(file: &'a str, text: &'a str) -> Self {
        Report {
            file,
            text,
            last_line: text.lines().count() as u64 + 1,
            diagnostics: Vec::new(),
            dropped: 0,
            blanked: Vec::new(),
            shifts: Vec::new(),
        }
    }

    /// Whether a required `key` missing from the mapping at `path` (keys
    /// from the top level, list items by index) is explained by an unknown
    /// key that was blanked out of it and suggested as `key`: the user
    /// misspelt it, and is told so; saying it is missing too would point at
    /// a second mistake that was not made.
    fn misspelt(&self, path: &[&str], key: &str) -> bool {
        self.blanked.iter().any(|blanked| {
            blanked.meant == Some(key)
                && blanked
                    .scope
                    .as_ref()
                    .is_none_or(|scope| scope.iter().map(String::as_str).eq(path.iter().copied()))
        })
    }

    /// Past this many errors, more are counted but not kept: nobody reads
    /// them, and locating each costs time.
    fn full(&self) -> bool {
        self.diagnostics.len() >= MAX_DIAGNOSTICS
    }

    pub(crate) fn error(&mut self, at: Location, message: impl Into<String>) {
        let (line, mut column) = if at.line() == 0 {
            (1, 1)
        } else {
            (at.line(), at.column())
        };
        // Locations are in the text deserialized, which has the file's byte
        // offsets and lines, but not always its columns.
        if let Some(offset) = at
            .span()
            .byte_offset()
            .and_then(|offset| usize::try_from(offset).ok())
        {
            for shift in &self.shifts {
                if (shift.from..shift.to).contains(&offset) {
                    column = column.saturating_sub(shift.columns);
                }
            }
        }
        self.error_at(line, column, message);
    }

    fn error_at(&mut self, line: u64, column: u64, message: impl Into<String>) {
        // Keep locations inside the text even if a parser counts line breaks
        // differently (a lone `\r`): editors jump to them.
        if self.full() {
            self.dropped += 1;
            return;
        }
        self.diagnostics.push(Diagnostic {
            file: self.file.to_owned(),
            line: line.clamp(1, self.last_line),
            column: column.max(1),
            message: message.into(),
        });
    }

    /// Reports at a byte offset into the text.
    fn error_at_offset(&mut self, offset: usize, message: impl Into<String>) {
        if self.full() {
            self.dropped += 1;
            return;
        }
        let (line, column) = line_column(self.text, offset);
        self.error_at(line, column, message);
    }

    /// Reports problems with a string value's `${{ }}` expressions, each
    /// given by its index among the value's `${{`, pointing at the `${{`
    /// itself when the value's text can be found in the file.
    fn errors_in_string(&mut self, value: &Sp<String>, problems: Vec<(usize, String)>) {
        if problems.is_empty() {
            return;
        }
        let offsets = if value.at() == value.defined() {
            self.expression_offsets(value)
        } else {
            // Through an alias: point at where it is used.
            None
        };
        for (occurrence, message) in problems {
            match offsets.as_ref().and_then(|o| o.get(occurrence)) {
                Some(&offset) => self.error_at_offset(offset, message),
                None => self.error(value.at(), message),
            }
        }
    }

    /// Byte offsets in the file of each `${{` of a string value.
    fn expression_offsets(&self, value: &Sp<String>) -> Option<Vec<usize>> {
        let span = value.defined().span();
        let start = usize::try_from(span.byte_offset()?).ok()?;
        let len = usize::try_from(span.byte_len()?).ok()?;
        let raw = self.text.get(start..start.checked_add(len)?)?;
        let offsets: Vec<usize> = raw.match_indices("${{").map(|(i, _)| start + i).collect();
        // Escapes or folding could make the written text differ from the
        // value; only trust the text when it has the same expressions.
        (offsets.len() == value.value().matches("${{").count()).then_some(offsets)
    }

    /// Reports a deserialization error of `text`, the file or the file with
    /// unknown keys blanked out.
    fn syntax_error(&mut self, error: &Error, text: &str) {
        let message = describe(error, text);
        match error.location() {
            Some(at) => self.error(at, message),
            None => self.error_at(1, 1, message),
        }
    }

    fn finish(mut self) -> Diagnostics {
        self.diagnostics.sort_by_key(|d| (d.line, d.column));
        self.diagnostics.dedup();
        if self.dropped > 0 {
            self.diagnostics.push(Diagnostic {
                file: self.file.to_owned(),
                line: 1,
                column: 1,
                message: format!(
                    "too many errors: {} more not shown; fix the ones above first",
                    self.dropped
                ),
            });
        }
        Diagnostics(self.diagnostics)
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (u64, u64) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() as u64 + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() as u64 + 1;
    (line, column)
}

/// A message for a serde-saphyr error that says what was expected, in the
/// file's terms rather than Rust's.
fn describe(error: &Error, text: &str) -> String {
    let mut inner = error;
    while let Error::WithSnippet { error, .. } | Error::AliasError { error, .. } = inner {
        inner = error;
    }
    let found = || found_text(error, text);
    match inner {
        Error::SerdeUnknownField { field, expected, .. } => unknown_key(field, expected),
        Error::SerdeMissingField { field, .. } => format!("missing required key `{field}`"),
        Error::DuplicateMappingKey { key: Some(key), .. } => {
            format!("duplicate key `{key}`: a key may appear only once in a mapping")
        }
        Error::DuplicateMappingKey { key: None, .. } => {
            "duplicate key: a key may appear only once in a mapping".into()
        }
        Error::SerdeUnknownVariant { variant, expected, .. } => {
            let hint = did_you_mean(variant, expected.iter().copied())
                .map(|close| format!("did you mean `{close}`? "))
                .unwrap_or_default();
            format!("unknown value `{variant}`: {hint}expected one of {}", quoted_list(expected))
        }
        Error::SerdeInvalidType { unexpected, expected, .. }
        | Error::SerdeInvalidValue { unexpected, expected, .. } => {
            format!("expected {}, found {}", friendly_expected(expected), friendly_unexpected(unexpected))
        }
        Error::Unexpected { expected, .. } => {
            let what = match *expected {
                "string scalar" => "a string",
                "mapping start" => "a mapping",
                "sequence start" => "a list",
                other => other,
            };
            match (found_kind(error, text), found()) {
                (Some(kind), _) => format!("expected {what}, found {kind}"),
                (None, Some(found)) => format!("expected {what}, found `{found}`"),
                (None, None) => format!("expected {what}"),
            }
        }
        Error::InvalidScalar { ty, .. } => {
            let what = match *ty {
                "boolean" => "`true` or `false`",
                "floating point" | "f64" | "f32" => "a number",
                "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number (0 or more)",
                "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number",
                other => other,
            };
            match found() {
                Some(found) => format!("expected {what}, found `{found}`"),
                None => format!("expected {what}"),
            }
        }
        Error::InvalidBooleanStrict { .. } => match found() {
            Some(found) => format!("expected `true` or `false`, found `{found}`"),
            None => "expected `true` or `false`".into(),
        },
        Error::NullIntoString { .. } => "expected a string, found an empty value".into(),
        Error::MultipleDocuments { .. } => {
            "expected a single YAML document, found a second one (after `---`)".into()
        }
        Error::UnknownAnchor { .. } => {
            "unknown alias: no anchor `&name` with this name is defined before this `*name`".into()
        }
        Error::Budget { breach, .. } => match breach {
            BudgetBreach::Depth { .. } => {
                format!("the file is nested too deeply: at most {MAX_DEPTH} levels of mappings and lists")
            }
            BudgetBreach::Nodes { .. } | BudgetBreach::Events { .. } => {
                format!("the file has too many values: at most {MAX_NODES}")
            }
            BudgetBreach::Documents { .. } => "expected a single YAML document, found a second one".into(),
            BudgetBreach::ScalarBytes { .. } => "the file has too much text".into(),
            _ => "the file uses too many anchors, aliases or merge keys (`&`, `*`, `<<`), or they expand to too much data".into(),
        },
        Error::AliasReplayLimitExceeded { .. }
        | Error::AliasExpansionLimitExceeded { .. }
        | Error::AliasReplayStackDepthExceeded { .. }
        | Error::AliasReplayCounterOverflow { .. } => {
            "the aliases (`*name`) in this file expand to too much data".into()
        }
        Error::UnsupportedTag { tag, .. } => {
            format!("unsupported YAML tag `{tag}`: remove it (only standard YAML tags such as `!!str` are understood)")
        }
        Error::Message { msg, .. } => msg.clone(),
        other => {
            let message = DefaultMessageFormatter.format_message(other).into_owned();
            if message.contains("recursion limit exceeded") {
                format!("the file is nested too deeply: at most {MAX_DEPTH} levels of mappings and lists")
            } else if message.contains("quoted scalar") {
                // The parser only notices an unclosed quote where the text
                // that follows stops making sense.
                format!("{message} (is a closing quote missing?)")
            } else {
                message
            }
        }
    }
}

/// serde's names for what it expected, said the way the file is written.
fn friendly_expected(expected: &str) -> String {
    match expected {
        "a sequence" => "a list".into(),
        "a boolean" => "`true` or `false`".into(),
        "a string" => "a string".into(),
        "u32" | "u64" => "a whole number (0 or more)".into(),
        "f64" => "a number".into(),
        "a map" | "a mapping" => "a mapping".into(),
        "struct TaskFile" => "a task: a mapping with `steps` and keys like `image`, `needs`".into(),
        "struct ServiceFile" => "a service: a mapping with `image`".into(),
        "struct BuildFile" => "a mapping with `dockerfile` and `context`".into(),
        "struct WhenFile" => "a mapping with `branch`, `event` and/or `paths`".into(),
        "struct ResourcesFile" => "a mapping with `cpus` and/or `memory`".into(),
        "struct ArtifactsFile" => "a mapping with `paths` and `expire-in`".into(),
        "struct ReportsFile" => "a mapping with `junit`".into(),
        other if other.starts_with("struct ") => "a mapping".into(),
        "enum Event" => "an event".into(),
        other => other.into(),
    }
}

/// serde's names for what it found, said the way the file is written.
fn friendly_unexpected(unexpected: &str) -> String {
    match unexpected {
        "sequence" => "a list".into(),
        "map" => "a mapping".into(),
        "unit value" | "null" => "an empty value".into(),
        other => other.into(),
    }
}

/// The scalar text an error points at, shortened, if it can be found.
fn found_text(error: &Error, text: &str) -> Option<String> {
    let span = error.location()?.span();
    let start = usize::try_from(span.byte_offset()?).ok()?;
    let len = usize::try_from(span.byte_len()?).ok()?;
    let raw = text.get(start..start.checked_add(len)?)?.trim();
    if raw.is_empty() {
        return None;
    }
    let mut shown: String = raw.chars().take(40).collect();
    if shown.len() < raw.len() {
        shown.push('…');
    }
    Some(shown.replace(['\n', '\r'], " "))
}

/// What kind of node an error points at, judged from the text there.
fn found_kind(error: &Error, text: &str) -> Option<&'static str> {
    let start = usize::try_from(error.location()?.span().byte_offset()?).ok()?;
    let rest = text.get(start..)?;
    let line = rest.lines().next().unwrap_or("").trim_end();
    if rest.starts_with('[') || rest.starts_with("- ") || line == "-" {
        Some("a list")
    } else if rest.starts_with('{') {
        Some("a mapping")
    } else if line.is_empty()
        || line.starts_with(':')
        || line.starts_with('#')
        || line == "~"
        || line == "null"
    {
        // Errors on a missing value point at the end of its key.
        Some("an empty value")
    } else {
        (line.contains(": ") || line.ends_with(':')).then_some("a mapping")
    }
}

/// Keys that people coming from other CI systems write, and the Kiln key.
const KEY_SYNONYMS: &[(&str, &str)] = &[
    ("depends_on", "needs"),
    ("depends-on", "needs"),
    ("dependencies", "needs"),
    ("script", "steps"),
    ("commands", "steps"),
    ("environment", "env"),
    ("variables", "env"),
    ("container", "image"),
    ("if", "when"),
    ("only", "when"),
    ("rules", "when"),
    ("timeout-minutes", "timeout"),
    ("timeout_minutes", "timeout"),
    ("retries", "retry"),
    ("continue-on-error", "allow-failure"),
    ("jobs", "tasks"),
    ("stages", "tasks"),
    ("cmd", "run"),
    ("command", "run"),
    ("expire_in", "expire-in"),
    ("tags", "runs-on"),
];

/// The key that an unknown key is probably meant to be.
fn key_suggestion(field: &str, expected: &[&'static str]) -> Option<&'static str> {
    let synonym = KEY_SYNONYMS
        .iter()
        .find(|(other, kiln)| *other == field && expected.contains(kiln))
        .map(|(_, kiln)| *kiln);
    synonym.or_else(|| did_you_mean(field, expected.iter().copied()))
}

fn unknown_key(field: &str, expected: &[&'static str]) -> String {
    match key_suggestion(field, expected) {
        Some(close) => format!("unknown key `{field}`: did you mean `{close}`?"),
        None => format!(
            "unknown key `{field}`: expected one of {}",
            quoted_list(expected)
        ),
    }
}

/// How many items a list in a message shows.
const QUOTED_LIST_LEN: usize = 20;

/// `a`, `b`, `c` — shortened when long, as it goes into a message.
pub(crate) fn quoted_list(items: &[&str]) -> String {
    quoted_list_of(items, items.len())
}

/// Like [`quoted_list`], for the first `items` of `total`.
fn quoted_list_of(items: &[&str], total: usize) -> String {
    let mut list = items
        .iter()
        .take(QUOTED_LIST_LEN)
        .map(|item| format!("`{item}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let shown = items.len().min(QUOTED_LIST_LEN);
    if total > shown {
        list.push_str(&format!(" and {} more", total - shown));
    }
    list
}

/// The candidate closest to `word`, if one is close enough to be a likely
/// typo (optimal string alignment distance, so a swap of two letters is one
/// edit; case is ignored).
///
/// Bounded work whatever the candidates: a hostile file with thousands of
/// long names gets fewer suggestions, not a slow parse.
pub(crate) fn did_you_mean<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    const MAX_LEN: usize = 128;
    const MAX_WORK: usize = 1 << 20;
    let lower = |text: &str| -> Vec<char> { text.chars().flat_map(char::to_lowercase).collect() };
    if word.is_empty() || word.len() > MAX_LEN {
        return None;
    }
    let word_chars = lower(word);
    let mut work = 0usize;
    let mut best: Option<(usize, &str)> = None;
    for candidate in candidates {
        if candidate == word || candidate.len() > MAX_LEN {
            continue;
        }
        let chars = lower(candidate);
        let limit = (word_chars.len().max(chars.len()) / 3).max(1);
        // The distance is at least the difference in length: skip the
        // quadratic computation for candidates that cannot be close.
        if word_chars.len().abs_diff(chars.len()) > limit {
            continue;
        }
        work += word_chars.len() * chars.len();
        if work > MAX_WORK {
            break;
        }
        let distance = edit_distance(&word_chars, &chars);
        if distance <= limit && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

/// Optimal string alignment distance.
fn edit_distance(a: &[char], b: &[char]) -> usize {
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        d[i * width] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(width) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    d[a.len() * width + b.len()]
}

fn is_task_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= MAX_TASK_NAME
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_reserved_env_name(name: &str) -> bool {
    name == "CI" || name == "KILN" || name.starts_with("KILN_")
}

fn is_service_alias(alias: &str) -> bool {
    let bytes = alias.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Every semantic check on the deserialized file; all problems are reported.
fn check(file: &PipelineFile, report: &mut Report<'_>) {
    match &file.version {
        None if report.misspelt(&[], "version") => {}
        None => report.error_at(
            1,
            1,
            "missing or empty `version`: expected `version: 1` at the top level",
        ),
        Some(version) if *version.value() != 1 => report.error(
            version.at(),
            format!(
                "unsupported `version: {}`: expected `version: 1`",
                version.value()
            ),
        ),
        Some(_) => {}
    }
    if let Some(timeout) = &file.timeout {
        check_positive_duration(timeout, "timeout", report);
    }
    if let Some(env) = &file.env {
        check_env(env, EnvKind::Pipeline, report);
        for (name, value) in env.iter() {
            if value.0.value().contains("${{") {
                let message = format!(
                    "`${{{{ }}}}` is not available in the pipeline's `env`: move `{}` into the `env` of the tasks with a `matrix`",
                    name.value()
                );
                report.errors_in_string(&value.0, vec![(0, message)]);
            }
        }
    }
    let Some(tasks) = &file.tasks else {
        if !report.misspelt(&[], "tasks") {
            report.error_at(
                1,
                1,
                "missing or empty `tasks`: expected a mapping of task names to tasks",
            );
        }
        return;
    };
    if tasks.value().is_empty() {
        report.error(tasks.at(), "`tasks` is empty: expected at least one task");
        return;
    }
    let runnable: Vec<(&Sp<String>, &TaskFile)> = tasks
        .value()
        .iter()
        .filter(|(name, _)| !is_template(name.value()))
        .collect();
    if runnable.is_empty() {
        report.error(
            tasks.at(),
            "every task is a template (its name starts with `.`): expected at least one task to run",
        );
    }
    let known: HashSet<&str> = runnable.iter().map(|(n, _)| n.value().as_str()).collect();
    for (name, task) in tasks.value().iter() {
        let base = name.value().strip_prefix('.').unwrap_or(name.value());
        if !is_task_name(base) {
            report.error(
                name.at(),
                format!(
                    "invalid task name `{}`: expected letters, digits, `_`, `.` and `-`, not starting with `.` or `-`, at most {MAX_TASK_NAME} characters",
                    name.value()
                ),
            );
        }
        // Templates are only checked once merged into a task: alone they
        // may lack `steps`, or use an axis only their users define.
        if !is_template(name.value()) {
            check_task(name, task, &runnable, &known, report);
        }
    }
    check_cycles(&runnable, report);
}

fn check_positive_duration(value: &Sp<crate::Duration>, key: &str, report: &mut Report<'_>) {
    if value.value().as_std().is_zero() {
        report.error(
            value.at(),
            format!("`{key}` must be longer than zero, e.g. `30m`"),
        );
    }
}

#[derive(Clone, Copy, PartialEq)]
enum EnvKind {
    Pipeline,
    Task,
    Service,
}

fn check_env(env: &OrderedMap<Scalar>, kind: EnvKind, report: &mut Report<'_>) {
    for (name, _) in env.iter() {
        if !is_env_name(name.value()) {
            report.error(
                name.at(),
                format!(
                    "invalid environment variable name `{}`: expected letters, digits and `_`, not starting with a digit",
                    name.value()
                ),
            );
        } else if kind != EnvKind::Service && is_reserved_env_name(name.value()) {
            report.error(
                name.at(),
                format!(
                    "environment variable `{}` is reserved: Kiln sets `CI`, `KILN` and `KILN_*` itself",
                    name.value()
                ),
            );
        }
    }
}

/// What `${{ matrix.NAME }}` may refer to in the strings being checked.
struct Axes<'a> {
    task: &'a str,
    names: Option<Vec<&'a str>>,
}

fn check_interpolation(value: &Sp<String>, axes: &Axes<'_>, report: &mut Report<'_>) {
    let pieces = match expand::pieces(value.value()) {
        Ok(pieces) => pieces,
        Err(error) => {
            let occurrence = value.value()[..error.start].matches("${{").count();
            report.errors_in_string(value, vec![(occurrence, error.message)]);
            return;
        }
    };
    let axis_refs = pieces.iter().filter_map(|piece| match piece {
        Piece::Axis { name, .. } => Some(*name),
        Piece::Text(_) => None,
    });
    let mut problems = Vec::new();
    for (occurrence, name) in axis_refs.enumerate() {
        if problems.len() >= MAX_DIAGNOSTICS {
            break;
        }
        let message = match &axes.names {
            None => format!(
                "`${{{{ matrix.{name} }}}}` is used in task `{}`, which has no `matrix`",
                axes.task
            ),
            Some(names) if names.contains(&name) => continue,
            Some(names) => match did_you_mean(name, names.iter().copied()) {
                Some(close) => format!("unknown matrix axis `{name}`: did you mean `{close}`?"),
                None => format!(
                    "unknown matrix axis `{name}`: task `{}` has {}",
                    axes.task,
                    quoted_list(names)
                ),
            },
        };
        problems.push((occurrence, message));
    }
    report.errors_in_string(value, problems);
}

fn check_task(
    name: &Sp<String>,
    task: &TaskFile,
    runnable: &[(&Sp<String>, &TaskFile)],
    known: &HashSet<&str>,
    report: &mut Report<'_>,
) {
    let task_name = name.value().as_str();
    let axes = Axes {
        task: task_name,
        names: task
            .matrix
            .as_ref()
            .filter(|m| !m.is_empty())
            .map(|m| m.iter().map(|(axis, _)| axis.value().as_str()).collect()),
    };
    let interpolated =
        |value: &Sp<String>, report: &mut Report<'_>| check_interpolation(value, &axes, report);

    if let Some(image) = &task.image {
        if image.value().trim().is_empty() {
            report.error(
                image.at(),
                "empty `image`: expected an image name like `rust:1.83`",
            );
        }
        if task.build.is_some() {
            report.error(image.at(), "a task has either `image` or `build`, not both");
        }
        interpolated(image, report);
    }
    if let Some(build) = &task.build {
        for path in build.dockerfile.iter().chain(&build.context) {
            interpolated(path, report);
        }
    }
    for label in task.runs_on.iter().flat_map(|r| &r.0) {
        let text = label.value();
        // Matrix references are checked on their own; `${{ matrix.x }}`
        // has spaces but is a fine label.
        let literal: String = match expand::pieces(text) {
            Ok(pieces) => pieces
                .iter()
                .filter_map(|piece| match piece {
                    Piece::Text(literal) => Some(*literal),
                    Piece::Axis { .. } => None,
                })
                .collect(),
            Err(_) => String::new(),
        };
        if text.trim().is_empty() || literal.contains(|c: char| c.is_whitespace() || c == ',') {
            report.error(
                label.at(),
                format!("invalid agent label `{text}`: expected a non-empty label without spaces or commas"),
            );
        }
        interpolated(label, report);
    }
    if let Some(matrix) = &task.matrix {
        check_matrix(name, matrix, report);
    }
    for (alias, service) in task.services.iter().flat_map(OrderedMap::iter) {
        if !is_service_alias(alias.value()) {
            report.error(
                alias.at(),
                format!(
                    "invalid service name `{}`: it is used as a host name, so expected lowercase letters, digits and `-`, starting with a letter or digit, at most 63 characters",
                    alias.value()
                ),
            );
        }
        match &service.image {
            None if report.misspelt(&["tasks", task_name, "services", alias.value()], "image") => {}
            None => report.error(
                alias.at(),
                format!(
                    "service `{}` has no `image`: expected e.g. `image: postgres:16`",
                    alias.value()
                ),
            ),
            Some(image) if image.value().trim().is_empty() => report.error(
                image.at(),
                "empty `image`: expected an image name like `postgres:16`",
            ),
            Some(image) => interpolated(image, report),
        }
        if let Some(env) = &service.env {
            check_env(env, EnvKind::Service, report);
            for (_, value) in env.iter() {
                interpolated(&value.0, report);
            }
        }
        if let Some(command) = &service.command {
            if command.is_empty() {
                report.error(
                    alias.at(),
                    format!("service `{}` has an empty `command`", alias.value()),
                );
            }
            for arg in command {
                interpolated(arg, report);
            }
        }
    }
    if let Some(env) = &task.env {
        check_env(env, EnvKind::Task, report);
        for (_, value) in env.iter() {
            interpolated(&value.0, report);
        }
    }
    let env_names: HashSet<&str> = task
        .env
        .iter()
        .flat_map(OrderedMap::iter)
        .map(|(key, _)| key.value().as_str())
        .collect();
    let mut secrets_seen = HashSet::new();
    for secret in task.secrets.iter().flatten() {
        let text = secret.value();
        if !is_env_name(text) {
            report.error(
                secret.at(),
                format!("invalid secret name `{text}`: expected letters, digits and `_`, not starting with a digit"),
            );
        } else if is_reserved_env_name(text) {
            report.error(
                secret.at(),
                format!(
                    "secret name `{text}` is reserved: Kiln sets `CI`, `KILN` and `KILN_*` itself"
                ),
            );
        } else if env_names.contains(text.as_str()) && secrets_seen.insert(text) {
            report.error(
                secret.at(),
                format!(
                    "`{text}` is both in `env` and in `secrets`: a variable comes from one of them"
                ),
            );
        }
    }
    match &task.steps {
        None if report.misspelt(&["tasks", task_name], "steps") => {}
        None => report.error(
            name.at(),
            format!("task `{task_name}` has no `steps`: expected a list like `steps: [{{ run: make test }}]`"),
        ),
        Some(steps) if steps.value().is_empty() => report.error(
            steps.at(),
            format!("task `{task_name}` has no steps: expected at least one, like `- run: make test`"),
        ),
        Some(steps) => {
            for (index, step) in steps.value().iter().enumerate() {
                match &step.run {
                    Some(run) => {
                        if run.value().trim().is_empty() {
                            report.error(run.at(), "empty `run`: expected a shell script");
                        }
                        interpolated(run, report);
                    }
                    None if report.misspelt(
                        &["tasks", task_name, "steps", &index.to_string()],
                        "run",
                    ) => {}
                    None => report.error(
                        step.at,
                        "missing required key `run`: expected the step's shell script, like `run: make test`",
                    ),
                }
                if let Some(step_name) = &step.name {
                    if step_name.value().trim().is_empty() {
                        report.error(step_name.at(), "empty step `name`: remove it to name the step after its script");
                    }
                    interpolated(step_name, report);
                }
            }
        }
    }
    let task_names = || runnable.iter().map(|(n, _)| n.value().as_str());
    // Computed once, for the first unknown need that gets a suggestion.
    let mut unsuitable: Option<HashSet<&str>> = None;
    for need in task.needs.iter().flatten() {
        let text = need.value().as_str();
        if text == task_name {
            report.error(need.at(), format!("task `{task_name}` needs itself"));
        } else if !known.contains(text) {
            // Suggestions cost a comparison with every task: only for the
            // first errors, so a hostile file cannot make this quadratic.
            let close = if report.diagnostics.len() < MAX_SUGGESTIONS {
                let unsuitable =
                    unsuitable.get_or_insert_with(|| unsuitable_needs(task_name, task, runnable));
                did_you_mean(text, task_names().filter(|name| !unsuitable.contains(name)))
            } else {
                None
            };
            let message = if is_template(text) {
                format!("`needs` names the template `{text}`: templates never run")
            } else if let Some(close) = close {
                format!("`needs` names unknown task `{text}`: did you mean `{close}`?")
            } else if runnable.len() < 2 {
                format!("`needs` names unknown task `{text}`: the pipeline has no other task")
            } else {
                // Only the first few are shown: no need to list them all.
                let others: Vec<&str> = task_names()
                    .filter(|n| *n != task_name)
                    .take(QUOTED_LIST_LEN)
                    .collect();
                format!(
                    "`needs` names unknown task `{text}`: expected one of {}",
                    quoted_list_of(&others, runnable.len().saturating_sub(1))
                )
            };
            report.error(need.at(), message);
        }
    }
    if let Some(when) = &task.when {
        for glob in when.branch.iter().flat_map(|b| &b.0) {
            if glob.value().trim().is_empty() {
                report.error(
                    glob.at(),
                    "empty branch glob: expected e.g. `main` or `release/*`",
                );
            }
        }
        for glob in when.paths.iter().flat_map(|p| &p.0) {
            let pattern = glob.value().strip_prefix('!').unwrap_or(glob.value());
            if pattern.trim().is_empty() {
                report.error(
                    glob.at(),
                    "empty path glob: expected e.g. `src/**` or `!docs/**`",
                );
            }
        }
        for event in when.event.iter().flat_map(|e| &e.0) {
            if event.value().parse::<Event>().is_err() {
                let names: Vec<&str> = Event::ALL.iter().map(|e| e.as_str()).collect();
                let hint = did_you_mean(event.value(), names.iter().copied())
                    .map(|close| format!("did you mean `{close}`? "))
                    .unwrap_or_default();
                report.error(
                    event.at(),
                    format!(
                        "unknown event `{}`: {hint}expected one of {}",
                        event.value(),
                        quoted_list(&names)
                    ),
                );
            }
        }
    }
    if let Some(timeout) = &task.timeout {
        check_positive_duration(timeout, "timeout", report);
    }
    if let Some(retry) = &task.retry
        && *retry.value() > 10
    {
        report.error(
            retry.at(),
            format!("`retry: {}` is too many: at most 10", retry.value()),
        );
    }
    if let Some(cpus) = task.resources.as_ref().and_then(|r| r.cpus.as_ref()) {
        let value = *cpus.value();
        if !(value.is_finite() && value > 0.0 && value <= 1024.0) {
            report.error(
                cpus.at(),
                format!("`cpus` must be a positive number (at most 1024), found {value}"),
            );
        }
    }
    if let Some(artifacts) = &task.artifacts {
        for path in artifacts.paths.iter().flatten() {
            interpolated(path, report);
        }
        if let Some(expire_in) = &artifacts.expire_in {
            check_positive_duration(expire_in, "expire-in", report);
        }
    }
    for path in task.reports.iter().flat_map(|r| r.junit.iter().flatten()) {
        interpolated(path, report);
    }
}

/// The tasks that a suggestion for an unknown need of `task_name` must not
/// name: the task itself, the tasks it already needs, and the tasks that need
/// it, directly or not, which would make a cycle.
fn unsuitable_needs<'a>(
    task_name: &'a str,
    task: &'a TaskFile,
    runnable: &[(&'a Sp<String>, &'a TaskFile)],
) -> HashSet<&'a str> {
    let mut needed_by: HashMap<&str, Vec<&str>> = HashMap::new();
    for (name, other) in runnable {
        for need in other.needs.iter().flatten() {
            needed_by
                .entry(need.value().as_str())
                .or_default()
                .push(name.value().as_str());
        }
    }
    let mut unsuitable: HashSet<&str> = task
        .needs
        .iter()
        .flatten()
        .map(|need| need.value().as_str())
        .collect();
    let mut dependants = HashSet::from([task_name]);
    let mut stack = vec![task_name];
    while let Some(name) = stack.pop() {
        for &dependant in needed_by.get(name).into_iter().flatten() {
            if dependants.insert(dependant) {
                stack.push(dependant);
            }
        }
    }
    unsuitable.extend(dependants);
    unsuitable
}

fn check_matrix(name: &Sp<String>, matrix: &OrderedMap<Vec<Scalar>>, report: &mut Report<'_>) {
    let Some((first_axis, _)) = matrix.iter().next() else {
        report.error(
            name.at(),
            format!(
                "`matrix` of task `{}` is empty: expected axes like `{{ db: [postgres, sqlite] }}`",
                name.value()
            ),
        );
        return;
    };
    if matrix.0.len() > MAX_AXES {
        report.error(
            first_axis.at(),
            format!(
                "the matrix of task `{}` has {} axes: at most {MAX_AXES}",
                name.value(),
                matrix.0.len()
            ),
        );
        return;
    }
    for (axis, values) in matrix.iter() {
        if !expand::is_axis_name(axis.value()) {
            report.error(
                axis.at(),
                format!(
                    "invalid matrix axis name `{}`: expected letters, digits, `_` and `-`, starting with a letter or `_`",
                    axis.value()
                ),
            );
        }
        if values.is_empty() {
            report.error(
                axis.at(),
                format!(
                    "matrix axis `{}` has no values: expected a list like `[a, b]`",
                    axis.value()
                ),
            );
        }
        let mut seen = HashSet::new();
        for value in values {
            let text = value.0.value();
            if text.is_empty()
                || text.contains(|c: char| c.is_control() || matches!(c, '[' | ']' | ',' | '='))
            {
                report.error(
                    value.0.at(),
                    format!(
                        "invalid matrix value `{}`: it becomes part of task names, so expected a non-empty value without `[`, `]`, `,`, `=` or line breaks",
                        text.escape_debug()
                    ),
                );
            } else if !seen.insert(text) {
                report.error(
                    value.0.at(),
                    format!("duplicate value `{text}` in matrix axis `{}`", axis.value()),
                );
            }
        }
    }
    let count = matrix
        .iter()
        .try_fold(1usize, |count, (_, values)| count.checked_mul(values.len()));
    if count.is_none_or(|count| count > MAX_COMBINATIONS) {
        let shown = count.map_or_else(|| "too many".to_owned(), |c| c.to_string());
        report.error(
            first_axis.at(),
            format!(
                "the matrix of task `{}` has {shown} combinations: at most {MAX_COMBINATIONS}",
                name.value()
            ),
        );
    }
}

fn check_cycles(runnable: &[(&Sp<String>, &TaskFile)], report: &mut Report<'_>) {
    let indices: HashMap<&str, usize> = runnable
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (n.value().as_str(), i))
        .collect();
    let index_of = |name: &str| indices.get(name).copied();
    // Self-needs are reported on their own; leave them out here.
    let edges: Vec<Vec<usize>> = runnable
        .iter()
        .enumerate()
        .map(|(i, (_, task))| {
            task.needs
                .iter()
                .flatten()
                .filter_map(|need| index_of(need.value()))
                .filter(|&j| j != i)
                .collect()
        })
        .collect();
    let Some(cycle) = dag::find_cycle(&edges) else {
        return;
    };
    let names: Vec<&str> = cycle
        .iter()
        .map(|&i| runnable[i].0.value().as_str())
        .collect();
    let mut path = names.join(" → ");
    path.push_str(" → ");
    path.push_str(names[0]);
    // Point at the `needs` entry of the first task that continues the cycle.
    let (first, second) = (cycle[0], cycle[1 % cycle.len()]);
    let (first_name, first_task) = runnable[first];
    let at = first_task
        .needs
        .iter()
        .flatten()
        .find(|need| index_of(need.value()) == Some(second))
        .map_or(first_name.at(), |need| need.at());
    report.error(at, format!("cycle in `needs`: {path}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_words() {
        let keys = ["image", "build", "steps", "needs", "env"];
        assert_eq!(did_you_mean("imgae", keys), Some("image"));
        assert_eq!(did_you_mean("Image", keys), Some("image"));
        assert_eq!(did_you_mean("step", keys), Some("steps"));
        assert_eq!(did_you_mean("evn", keys), Some("env"));
        assert_eq!(did_you_mean("zzzzzz", keys), None);
        assert_eq!(did_you_mean("", keys), None);
    }

    #[test]
    fn computes_line_and_column() {
        let text = "ab\ncdé\nf";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 4), (2, 2));
        assert_eq!(line_column(text, 8), (3, 1));
        assert_eq!(line_column(text, 7), (2, 4));
        // Inside a multi-byte character, and past the end: still in range.
        assert_eq!(line_column(text, 6), (2, 3));
        assert_eq!(line_column(text, 100), (3, 2));
    }
}
