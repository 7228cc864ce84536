//! What `kiln run` says about the JUnit reports a task kept. A server
//! refuses a report that does not parse, and its agent's note says why;
//! `kiln run` keeps the file as the task left it, for the user to open, and
//! says what is wrong with it and where.

use std::fmt::Display;

use kiln_exec::{TaskOutcome, TaskSpec};
use kiln_junit::{Error, MAX_INPUT_BYTES};

/// One note per report the task kept that is not valid JUnit XML, e.g.
/// "report `junit.xml` is not valid JUnit XML (line 3, column 1): …".
pub async fn check(spec: &TaskSpec, outcome: &TaskOutcome) -> Vec<String> {
    let dir = spec.outputs.join("reports");
    let mut notes = Vec::new();
    for relative in &outcome.reports {
        let name = relative.display();
        let path = dir.join(relative);
        let size = match tokio::fs::metadata(&path).await {
            Ok(meta) => meta.len(),
            Err(e) => {
                notes.push(format!("report `{name}` cannot be read: {e}"));
                continue;
            }
        };
        // Not read at all when the parser would refuse it for its size.
        if size > MAX_INPUT_BYTES as u64 {
            let size = usize::try_from(size).unwrap_or(usize::MAX);
            let error = Error::TooLarge {
                size,
                limit: MAX_INPUT_BYTES,
            };
            notes.push(describe(&name, &[], &error));
            continue;
        }
        match tokio::fs::read(&path).await {
            Ok(content) => {
                if let Err(error) = kiln_junit::parse(&content) {
                    notes.push(describe(&name, &content, &error));
                }
            }
            Err(e) => notes.push(format!("report `{name}` cannot be read: {e}")),
        }
    }
    notes
}

fn describe(name: &impl Display, content: &[u8], error: &Error) -> String {
    match error {
        Error::Xml { position, .. } => {
            let (line, column) = line_and_column(content, *position);
            format!(
                "report `{name}` is not valid JUnit XML (line {line}, column {column}): {error}"
            )
        }
        _ => format!("report `{name}` is not valid JUnit XML: {error}"),
    }
}

/// The 1-based line and column (in characters) of the parser's `position`.
fn line_and_column(content: &[u8], position: u64) -> (usize, usize) {
    // The parser counts from after a byte-order mark.
    const BOM: &[u8] = b"\xef\xbb\xbf";
    let skipped = if content.starts_with(BOM) {
        BOM.len()
    } else {
        0
    };
    let at = usize::try_from(position)
        .unwrap_or(usize::MAX)
        .saturating_add(skipped)
        .min(content.len());
    let before = &content[skipped..at.max(skipped)];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&before[start..]).chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_become_lines_and_columns() {
        let text = b"<a>\n  <b>\n</a>\n";
        assert_eq!(line_and_column(text, 0), (1, 1));
        assert_eq!(line_and_column(text, 6), (2, 3));
        assert_eq!(line_and_column(text, 12), (3, 3));
        assert_eq!(line_and_column(text, 1000), (4, 1));
        assert_eq!(line_and_column(b"\xef\xbb\xbf<a>\n<", 4), (2, 1));
    }
}
