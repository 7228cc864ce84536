//! The status badge of a public job's latest run on a branch, as an SVG a
//! README can embed: `kiln | success`.

use maud::html;

/// The colour of a status on a badge.
fn fill(status: &str) -> &'static str {
    match status {
        "success" => "#1a7f37",
        "failure" | "error" | "timed_out" => "#cf222e",
        "running" | "queued" | "pending" => "#0969da",
        _ => "#6e7781",
    }
}

/// The badge of `status` (or `none` when there is no run yet).
pub fn badge(label: &str, status: Option<&str>) -> String {
    let status = status.unwrap_or("none");
    // About 7 px a character in Verdana at 11 px, plus padding.
    let left = 10 + 7 * label.chars().count() as i64;
    let right = 10 + 7 * status.chars().count() as i64;
    let width = left + right;
    html! {
        svg xmlns="http://www.w3.org/2000/svg" width=(width) height="20" role="img"
            aria-label=(format!("{label}: {status}")) {
            title { (label) ": " (status) }
            rect width=(left) height="20" fill="#555" {}
            rect x=(left) width=(right) height="20" fill=(fill(status)) {}
            g fill="#fff" text-anchor="middle" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11" {
                text x=(left / 2) y="14" { (label) }
                text x=(left + right / 2) y="14" { (status) }
            }
        }
    }
    .into_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_badge_says_the_status() {
        let svg = super::badge("kiln", Some("success"));
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains(">success</text>"));
        assert!(svg.contains("#1a7f37"));
        assert!(super::badge("kiln", None).contains(">none</text>"));
    }
}
