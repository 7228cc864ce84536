//! How the client commands print: tables and plain lines for people, the
//! API's JSON for scripts, durations and times as people read them.

use std::io::Write;

use chrono::{DateTime, Utc};

use super::Output;
use crate::console::format_duration;
use crate::run_command::EXIT_SUCCESS;

/// Writes to stdout at once and flushes, so followed output shows as it
/// comes and concurrent writers never split each other's lines.
pub(super) fn emit(text: &str) -> std::io::Result<()> {
    emit_bytes(text.as_bytes())
}

/// [`emit`] for bytes, such as a log that need not be UTF-8.
pub(super) fn emit_bytes(bytes: &[u8]) -> std::io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()
}

/// `message` on stdout for people, saying what a command whose answer has
/// no body (a `DELETE`) did; nothing for scripts, as there is no JSON to
/// print. Done, as a command's exit code.
pub(super) fn print_done(output: Output, message: &str) -> anyhow::Result<i32> {
    if output == Output::Table {
        emit(&format!("{message}\n"))?;
    }
    Ok(EXIT_SUCCESS)
}

/// The value as pretty JSON on stdout; done, as a command's exit code.
pub(super) fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<i32> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    emit(&text)?;
    Ok(EXIT_SUCCESS)
}

/// Columns padded to their widest cell (in characters), two spaces apart;
/// the last column is not padded.
pub(super) fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header_row).chain(&rows) {
        let last = row.len().saturating_sub(1);
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i == last {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// An empty or missing cell as `-`.
pub(super) fn dash(value: Option<&str>) -> String {
    value.filter(|v| !v.is_empty()).unwrap_or("-").to_string()
}

/// A commit as its first seven characters, as git shows it.
pub(super) fn short_sha(sha: &str) -> String {
    sha.chars().take(7).collect()
}

/// How long from `start` to `end` (`12.3s`, `4m05s`, `2h03m`), as `kiln
/// run` shows durations; `0.0s` when `end` is before `start`.
pub(super) fn elapsed(start: DateTime<Utc>, end: DateTime<Utc>) -> String {
    format_duration((end - start).to_std().unwrap_or_default())
}

/// `just now`, `5m ago`, `3h ago`, `2d ago`, then the date.
pub(super) fn ago(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - at).num_seconds();
    match secs {
        ..10 => "just now".into(),
        10..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86_400 => format!("{}h ago", secs / 3600),
        86_400..604_800 => format!("{}d ago", secs / 86_400),
        _ => local_date(at),
    }
}

/// How long until a time to come, as [`ago`] says how long since one went:
/// `in 5m`, `in 3h`, `in 2d`, then the date; [`ago`] once it has passed.
pub(super) fn until(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (at - now).num_seconds();
    match secs {
        ..0 => ago(at, now),
        0..60 => format!("in {secs}s"),
        60..3600 => format!("in {}m", secs / 60),
        3600..86_400 => format!("in {}h", secs / 3600),
        86_400..604_800 => format!("in {}d", secs / 86_400),
        _ => local_date(at),
    }
}

/// A day in the local time zone.
fn local_date(at: DateTime<Utc>) -> String {
    at.with_timezone(&chrono::Local)
        .format("%Y-%m-%d")
        .to_string()
}

/// A time in the local time zone, to the second.
pub(super) fn local_time(at: DateTime<Utc>) -> String {
    at.with_timezone(&chrono::Local)
        .format("%Y-%m-%d %H:%M:%S %Z")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_durations_read_well() {
        let text = table(
            &["A", "LONG HEADER", "C"],
            vec![vec!["wide cell".into(), "x".into(), "last".into()]],
        );
        assert_eq!(
            text,
            "A          LONG HEADER  C\nwide cell  x            last\n"
        );
        let start = DateTime::<Utc>::UNIX_EPOCH;
        let after = |delta| elapsed(start, start + delta);
        assert_eq!(after(chrono::TimeDelta::milliseconds(12_345)), "12.3s");
        assert_eq!(after(chrono::TimeDelta::seconds(245)), "4m05s");
        assert_eq!(after(chrono::TimeDelta::seconds(7380)), "2h03m");
        assert_eq!(after(chrono::TimeDelta::seconds(-5)), "0.0s");
        let hours = chrono::TimeDelta::hours;
        assert_eq!(until(start + hours(23), start), "in 23h");
        assert_eq!(until(start + hours(49), start), "in 2d");
        assert_eq!(until(start - hours(3), start), "3h ago");
    }
}
