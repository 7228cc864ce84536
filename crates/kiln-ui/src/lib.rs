//! Kiln's web UI (DESIGN.md §7): pages rendered on the server with
//! [maud](https://maud.lambda.xyz) templates, the ANSI colours of logs
//! turned into HTML, the task graph drawn as SVG, and the stylesheet and
//! script embedded in the binary with a content hash in their names.
//!
//! Architecture invariant: this crate does no I/O and knows no HTTP. It
//! turns values (the REST API's shapes from `kiln-api`, and the few view
//! types here) into text; `kiln-server`'s controllers (`kiln_server::ui`)
//! find the data, check who may see it, and answer the requests. So every
//! page can be rendered in a unit test, and the crate builds in seconds.

pub mod ansi;
pub mod assets;
pub mod badge;
pub mod graph;
pub mod log;
pub mod pages;
pub mod settings;
pub mod time;

pub use maud::Markup;

/// Who is looking at a page, and what the page needs to know of the
/// request: forms carry `csrf`, times are relative to `now`.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// The signed-in user's name; `None` for an anonymous visitor.
    pub user: Option<String>,
    pub admin: bool,
    /// The session's form token, for the forms that change something.
    pub csrf: Option<String>,
    pub now: chrono::DateTime<chrono::Utc>,
}

impl Viewer {
    pub fn anonymous(now: chrono::DateTime<chrono::Utc>) -> Viewer {
        Viewer {
            user: None,
            admin: false,
            csrf: None,
            now,
        }
    }
}

/// `text` compressed with gzip, for clients that accept it.
pub fn gzip(text: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(text.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(text);
    encoder.finish().unwrap_or_default()
}

/// A job's name, a task's name or a path segment in a link: every
/// character but the unreserved ones percent-encoded, as the API does.
pub fn segment(text: &str) -> String {
    kiln_api::url::segment(text).to_string()
}

/// The page of run `number` of `job`.
pub fn run_href(job: &str, number: i64) -> String {
    format!("/jobs/{}/runs/{number}", segment(job))
}

/// The page of task `task` of run `number` of `job`.
pub fn task_href(job: &str, number: i64, task: &str) -> String {
    format!("{}/tasks/{}", run_href(job, number), segment(task))
}

/// The page of `job`.
pub fn job_href(job: &str) -> String {
    format!("/jobs/{}", segment(job))
}
