//! JUnit XML test reports, parsed into a summary the API serves as JSON.
//!
//! Accepts a `<testsuites>` root or a bare `<testsuite>` root, nested suites,
//! and `<testcase>` elements with `<failure>`, `<error>`, `<skipped>`,
//! `<system-out>` and `<system-err>`: the dialects written by cargo-nextest,
//! pytest, Maven Surefire, Gradle, Jest and go-junit-report.
//!
//! Safety: the parser is `quick-xml`, which never expands DTD entities (no
//! "billion laughs", no external entities); input size and element depth are
//! bounded; malformed input gives an [`Error`], never a panic.
//!
//! Nested suites are flattened: [`Report::suites`] lists, in document order,
//! every `<testsuite>` that directly holds test cases (or holds nothing at
//! all), so each case appears exactly once.

use std::borrow::Cow;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
use serde::{Deserialize, Serialize};

/// Largest report accepted, in bytes.
pub const MAX_INPUT_BYTES: usize = 50 * 1024 * 1024;
/// Deepest element nesting accepted.
pub const MAX_DEPTH: usize = 256;
/// Longest failure text or captured output kept per case; the rest is cut
/// so that one runaway test cannot make the JSON report huge.
pub const MAX_TEXT_BYTES: usize = 256 * 1024;

const TRUNCATED: &str = "\n… [truncated by kiln]";

/// A parsed report: totals and the suites they come from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub tests: u64,
    pub failures: u64,
    pub errors: u64,
    pub skipped: u64,
    pub time_seconds: f64,
    pub suites: Vec<Suite>,
}

/// One `<testsuite>`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Suite {
    pub name: String,
    pub tests: u64,
    pub failures: u64,
    pub errors: u64,
    pub skipped: u64,
    pub time_seconds: f64,
    pub cases: Vec<Case>,
    /// Suite-level `<system-out>`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_out: Option<String>,
    /// Suite-level `<system-err>`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_err: Option<String>,
}

/// One `<testcase>`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Case {
    pub name: String,
    pub classname: String,
    pub time_seconds: f64,
    pub status: Status,
    /// The `message` (or else `type`) attribute of the failure, error or
    /// skipped element.
    pub message: Option<String>,
    /// The text of the failure or error element (usually a stack trace).
    pub output: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_out: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_err: Option<String>,
}

/// Outcome of one test case.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Passed,
    Failed,
    Error,
    Skipped,
}

impl Status {
    /// Which status wins when a case has several outcome elements.
    fn rank(self) -> u8 {
        match self {
            Status::Passed => 0,
            Status::Skipped => 1,
            Status::Failed => 2,
            Status::Error => 3,
        }
    }
}

/// Why a document could not be read as a JUnit report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("JUnit report is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("JUnit report nests elements deeper than {limit} levels")]
    TooDeep { limit: usize },
    #[error("malformed XML at byte {position}: {message}")]
    Xml { position: u64, message: String },
    #[error("not a JUnit report: {0}")]
    NotJunit(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Parses a JUnit XML document. Invalid UTF-8 is replaced rather than
/// rejected: test output is often not clean text, and one stray byte should
/// not hide the whole report.
pub fn parse(input: &[u8]) -> Result<Report> {
    if input.len() > MAX_INPUT_BYTES {
        return Err(Error::TooLarge {
            size: input.len(),
            limit: MAX_INPUT_BYTES,
        });
    }
    parse_str(&String::from_utf8_lossy(input))
}

/// Parses a JUnit XML document given as text.
pub fn parse_str(input: &str) -> Result<Report> {
    if input.len() > MAX_INPUT_BYTES {
        return Err(Error::TooLarge {
            size: input.len(),
            limit: MAX_INPUT_BYTES,
        });
    }
    let input = input.strip_prefix('\u{feff}').unwrap_or(input);
    Parser::default().run(input)
}

/// Combines several reports (e.g. one per file that a task produced) into
/// one: suites are concatenated, totals added up.
pub fn merge(reports: impl IntoIterator<Item = Report>) -> Report {
    let mut out = Report::default();
    for report in reports {
        out.tests += report.tests;
        out.failures += report.failures;
        out.errors += report.errors;
        out.skipped += report.skipped;
        out.time_seconds += report.time_seconds;
        out.suites.extend(report.suites);
    }
    out
}

/// What an open element is, for the parser's stack.
enum Frame {
    /// `<testsuites>`.
    Root,
    /// A `<testsuite>`; `slot` is its place in the output.
    Suite {
        slot: usize,
        has_child_suite: bool,
    },
    Case(Box<CaseBuilder>),
    /// An element whose text we collect (failure, system-out, …).
    Capture(Capture),
    /// Anything else (`<properties>`, unknown vendor elements).
    Other,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Outcome,
    CaseOut,
    CaseErr,
    SuiteOut,
    SuiteErr,
}

struct Capture {
    target: Target,
    text: String,
}

struct SuiteBuilder {
    name: String,
    attrs: Counts,
    cases: Vec<Case>,
    system_out: Option<String>,
    system_err: Option<String>,
    /// Holds cases or has no child suites: shown in the output.
    keep: bool,
}

#[derive(Default)]
struct Counts {
    tests: Option<u64>,
    failures: Option<u64>,
    errors: Option<u64>,
    skipped: Option<u64>,
    time: Option<f64>,
}

#[derive(Default)]
struct CaseBuilder {
    case: Case,
}

#[derive(Default)]
struct Parser {
    stack: Vec<Frame>,
    suites: Vec<SuiteBuilder>,
    root_time: Option<f64>,
    root_name: Option<String>,
    implicit_slot: Option<usize>,
    seen_root: bool,
}

impl Parser {
    fn run(mut self, input: &str) -> Result<Report> {
        let mut reader = Reader::from_str(input);
        let config = reader.config_mut();
        config.check_end_names = true;
        config.expand_empty_elements = false;
        // Hand-written reports often contain a raw `&` in output; keep it.
        config.allow_dangling_amp = true;

        loop {
            let event = reader.read_event().map_err(|e| Error::Xml {
                position: reader.error_position(),
                message: e.to_string(),
            })?;
            match event {
                Event::Start(e) => self.open(&e)?,
                Event::Empty(e) => {
                    self.open(&e)?;
                    self.close()?;
                }
                Event::End(_) => self.close()?,
                Event::Text(t) => self.text(&t.xml10_content()),
                Event::CData(c) => self.text(&c.xml10_content()),
                Event::GeneralRef(r) => {
                    // Character references and the five predefined entities
                    // only: quick-xml never expands DTD-declared entities, so
                    // anything else is kept as written.
                    let name = r.xml10_content();
                    let resolved: Cow<'_, str> = match r.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string().into(),
                        Ok(None) => match quick_xml::escape::resolve_predefined_entity(&name) {
                            Some(s) => s.into(),
                            None => format!("&{name};").into(),
                        },
                        Err(_) => format!("&{name};").into(),
                    };
                    self.text(&resolved);
                }
                Event::Eof => break,
                Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
            }
        }
        if let Some(frame) = self.stack.last() {
            let what = match frame {
                Frame::Root => "<testsuites>",
                Frame::Suite { .. } => "<testsuite>",
                Frame::Case(_) => "<testcase>",
                Frame::Capture(_) | Frame::Other => "an element",
            };
            return Err(Error::Xml {
                position: reader.buffer_position(),
                message: format!("document ends before {what} is closed"),
            });
        }
        if !self.seen_root {
            return Err(Error::NotJunit(
                "the document has no <testsuites> or <testsuite> element".into(),
            ));
        }
        Ok(self.finish())
    }

    fn open(&mut self, e: &BytesStart<'_>) -> Result<()> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(Error::TooDeep { limit: MAX_DEPTH });
        }
        let local = e.local_name();
        let name: &str = local.as_ref();
        let frame = if self.stack.is_empty() {
            if self.seen_root {
                return Err(Error::Xml {
                    position: 0,
                    message: "more than one root element".into(),
                });
            }
            self.seen_root = true;
            match name {
                "testsuites" => {
                    self.root_time = attr(e, "time").as_deref().and_then(parse_time);
                    self.root_name = attr(e, "name");
                    Frame::Root
                }
                "testsuite" => self.open_suite(e),
                other => {
                    return Err(Error::NotJunit(format!(
                        "the root element is <{other}>, expected <testsuites> or <testsuite>"
                    )));
                }
            }
        } else {
            match (name, self.stack.last_mut()) {
                ("testsuite", Some(Frame::Root | Frame::Suite { .. })) => {
                    if let Some(Frame::Suite {
                        has_child_suite, ..
                    }) = self.stack.last_mut()
                    {
                        *has_child_suite = true;
                    }
                    self.open_suite(e)
                }
                ("testcase", Some(Frame::Root | Frame::Suite { .. })) => {
                    let case = Case {
                        name: attr(e, "name").unwrap_or_default(),
                        classname: attr(e, "classname")
                            .or_else(|| attr(e, "class"))
                            .unwrap_or_default(),
                        time_seconds: attr(e, "time")
                            .as_deref()
                            .and_then(parse_time)
                            .unwrap_or(0.0),
                        ..Case::default()
                    };
                    Frame::Case(Box::new(CaseBuilder { case }))
                }
                (outcome @ ("failure" | "error" | "skipped"), Some(Frame::Case(builder))) => {
                    let status = match outcome {
                        "failure" => Status::Failed,
                        "error" => Status::Error,
                        _ => Status::Skipped,
                    };
                    let case = &mut builder.case;
                    if status.rank() > case.status.rank() {
                        case.status = status;
                        case.message = attr(e, "message").or_else(|| attr(e, "type"));
                        case.output = None;
                        Frame::Capture(Capture {
                            target: Target::Outcome,
                            text: String::new(),
                        })
                    } else {
                        Frame::Other
                    }
                }
                ("system-out", Some(Frame::Case(_))) => capture(Target::CaseOut),
                ("system-err", Some(Frame::Case(_))) => capture(Target::CaseErr),
                ("system-out", Some(Frame::Suite { .. })) => capture(Target::SuiteOut),
                ("system-err", Some(Frame::Suite { .. })) => capture(Target::SuiteErr),
                // Text of unknown elements inside a capture still counts.
                (_, Some(Frame::Capture(c))) => capture(c.target),
                _ => Frame::Other,
            }
        };
        self.stack.push(frame);
        Ok(())
    }

    fn open_suite(&mut self, e: &BytesStart<'_>) -> Frame {
        let parent_name = self.current_suite().map(|s| s.name.clone());
        let name = attr(e, "name")
            .filter(|n| !n.is_empty())
            .or(parent_name)
            .or_else(|| self.root_name.clone())
            .unwrap_or_default();
        let attrs = Counts {
            tests: attr(e, "tests").as_deref().and_then(parse_count),
            failures: attr(e, "failures").as_deref().and_then(parse_count),
            errors: attr(e, "errors").as_deref().and_then(parse_count),
            skipped: attr(e, "skipped").as_deref().and_then(parse_count),
            time: attr(e, "time").as_deref().and_then(parse_time),
        };
        self.suites.push(SuiteBuilder {
            name,
            attrs,
            cases: Vec::new(),
            system_out: None,
            system_err: None,
            keep: false,
        });
        Frame::Suite {
            slot: self.suites.len() - 1,
            has_child_suite: false,
        }
    }

    fn current_suite(&mut self) -> Option<&mut SuiteBuilder> {
        let slot = self.stack.iter().rev().find_map(|f| match f {
            Frame::Suite { slot, .. } => Some(*slot),
            _ => None,
        })?;
        self.suites.get_mut(slot)
    }

    /// The suite that collects cases sitting directly under `<testsuites>`
    /// (some hand-rolled reporters write them there).
    fn implicit_suite(&mut self) -> &mut SuiteBuilder {
        let slot = match self.implicit_slot {
            Some(slot) => slot,
            None => {
                self.suites.push(SuiteBuilder {
                    name: self.root_name.clone().unwrap_or_default(),
                    attrs: Counts::default(),
                    cases: Vec::new(),
                    system_out: None,
                    system_err: None,
                    keep: true,
                });
                let slot = self.suites.len() - 1;
                self.implicit_slot = Some(slot);
                slot
            }
        };
        &mut self.suites[slot]
    }

    fn close(&mut self) -> Result<()> {
        let Some(frame) = self.stack.pop() else {
            return Err(Error::Xml {
                position: 0,
                message: "closing tag without an opening tag".into(),
            });
        };
        match frame {
            Frame::Root | Frame::Other => {}
            Frame::Suite {
                slot,
                has_child_suite,
            } => {
                if let Some(suite) = self.suites.get_mut(slot) {
                    suite.keep = !suite.cases.is_empty() || !has_child_suite;
                }
            }
            Frame::Case(builder) => {
                let case = builder.case;
                match self.current_suite() {
                    Some(suite) => suite.cases.push(case),
                    None => self.implicit_suite().cases.push(case),
                }
            }
            Frame::Capture(capture) => {
                let text = capture.text;
                match (capture.target, self.stack.last_mut()) {
                    (_, Some(Frame::Capture(parent))) => push_text(&mut parent.text, &text),
                    (Target::Outcome, Some(Frame::Case(b))) => {
                        b.case.output = non_empty(text);
                    }
                    (Target::CaseOut, Some(Frame::Case(b))) => {
                        append_opt(&mut b.case.system_out, text);
                    }
                    (Target::CaseErr, Some(Frame::Case(b))) => {
                        append_opt(&mut b.case.system_err, text);
                    }
                    (Target::SuiteOut, _) => {
                        if let Some(s) = self.current_suite() {
                            append_opt(&mut s.system_out, text);
                        }
                    }
                    (Target::SuiteErr, _) => {
                        if let Some(s) = self.current_suite() {
                            append_opt(&mut s.system_err, text);
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    fn text(&mut self, text: &str) {
        if let Some(Frame::Capture(c)) = self.stack.last_mut() {
            push_text(&mut c.text, text);
        }
    }

    fn finish(self) -> Report {
        let mut report = Report::default();
        let mut suite_time = 0.0;
        for b in self.suites.into_iter().filter(|s| s.keep) {
            let count = |status| b.cases.iter().filter(|c| c.status == status).count() as u64;
            let suite = Suite {
                tests: b.attrs.tests.unwrap_or(b.cases.len() as u64),
                failures: b.attrs.failures.unwrap_or_else(|| count(Status::Failed)),
                errors: b.attrs.errors.unwrap_or_else(|| count(Status::Error)),
                skipped: b.attrs.skipped.unwrap_or_else(|| count(Status::Skipped)),
                time_seconds: b
                    .attrs
                    .time
                    .unwrap_or_else(|| b.cases.iter().fold(0.0, |t, c| t + c.time_seconds)),
                name: b.name,
                cases: b.cases,
                system_out: b.system_out,
                system_err: b.system_err,
            };
            report.tests += suite.tests;
            report.failures += suite.failures;
            report.errors += suite.errors;
            report.skipped += suite.skipped;
            suite_time += suite.time_seconds;
            report.suites.push(suite);
        }
        // The root's time is wall-clock time, which for parallel runners
        // (nextest, pytest-xdist) is less than the sum of the suites.
        report.time_seconds = self.root_time.unwrap_or(suite_time);
        report
    }
}

fn capture(target: Target) -> Frame {
    Frame::Capture(Capture {
        target,
        text: String::new(),
    })
}

/// An attribute's value with entities resolved; the raw value if it holds
/// an entity we do not know.
fn attr(e: &BytesStart<'_>, name: &str) -> Option<String> {
    let a = e
        .attributes()
        .with_checks(false)
        .flatten()
        .find(|a| AsRef::<str>::as_ref(&a.key.local_name()) == name)?;
    let value = match a.normalized_value(quick_xml::XmlVersion::Implicit1_0) {
        Ok(v) => v.into_owned(),
        Err(_) => a.value.into_owned(),
    };
    Some(value)
}

fn parse_count(s: &str) -> Option<u64> {
    s.trim().parse().ok()
}

/// Seconds as written by the various tools: `1.5`, `1,234.5` (old
/// Surefire), ` 0.001 `. Negative or non-finite values are dropped.
fn parse_time(s: &str) -> Option<f64> {
    let s = s.trim();
    let cleaned: Cow<'_, str> = if s.contains(',') {
        s.replace(',', "").into()
    } else {
        s.into()
    };
    cleaned
        .parse::<f64>()
        .ok()
        .filter(|t| t.is_finite() && *t >= 0.0)
}

fn push_text(buf: &mut String, text: &str) {
    if buf.len() >= MAX_TEXT_BYTES {
        if !buf.ends_with(TRUNCATED) {
            buf.push_str(TRUNCATED);
        }
        return;
    }
    let room = MAX_TEXT_BYTES - buf.len();
    if text.len() <= room {
        buf.push_str(text);
    } else {
        let mut cut = room;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        buf.push_str(&text[..cut]);
        buf.push_str(TRUNCATED);
    }
}

fn non_empty(text: String) -> Option<String> {
    if text.trim().is_empty() {
        None
    } else {
        Some(text)
    }
}

fn append_opt(slot: &mut Option<String>, text: String) {
    let Some(text) = non_empty(text) else { return };
    match slot {
        Some(existing) => {
            push_text(existing, "\n");
            push_text(existing, &text);
        }
        None => *slot = Some(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_testsuite_counts_computed() {
        let r = parse_str(
            r#"<?xml version="1.0"?>
            <testsuite name="s">
              <testcase name="a" classname="m" time="0.5"/>
              <testcase name="b"><failure message="boom">trace &amp; more</failure></testcase>
              <testcase name="c"><error type="Panic"/></testcase>
              <testcase name="d"><skipped/></testcase>
            </testsuite>"#,
        )
        .unwrap();
        assert_eq!(
            (r.tests, r.failures, r.errors, r.skipped),
            (4, 1, 1, 1),
            "{r:?}"
        );
        let s = &r.suites[0];
        assert_eq!(s.name, "s");
        assert_eq!(s.cases[0].status, Status::Passed);
        assert_eq!(s.cases[0].classname, "m");
        assert_eq!(s.cases[1].status, Status::Failed);
        assert_eq!(s.cases[1].message.as_deref(), Some("boom"));
        assert_eq!(s.cases[1].output.as_deref(), Some("trace & more"));
        assert_eq!(s.cases[2].status, Status::Error);
        assert_eq!(s.cases[2].message.as_deref(), Some("Panic"));
        assert_eq!(s.cases[3].status, Status::Skipped);
        assert_eq!(r.time_seconds, 0.5);
    }

    #[test]
    fn nested_suites_are_flattened() {
        let r = parse_str(
            r#"<testsuites name="all">
              <testsuite name="outer">
                <testsuite name="inner1"><testcase name="x"/></testsuite>
                <testcase name="direct"/>
                <testsuite name="inner2"><testcase name="y"><failure/></testcase></testsuite>
                <testsuite name="empty"/>
              </testsuite>
            </testsuites>"#,
        )
        .unwrap();
        let names: Vec<_> = r.suites.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["outer", "inner1", "inner2", "empty"]);
        assert_eq!(r.tests, 3);
        assert_eq!(r.failures, 1);
        assert_eq!(r.suites[0].cases.len(), 1);
    }

    #[test]
    fn errors_not_panics() {
        assert!(matches!(parse_str(""), Err(Error::NotJunit(_))));
        assert!(matches!(parse_str("<html/>"), Err(Error::NotJunit(_))));
        assert!(matches!(
            parse_str("<testsuite><testcase></testsuite>"),
            Err(Error::Xml { .. })
        ));
        assert!(matches!(
            parse_str("<testsuite><testcase>"),
            Err(Error::Xml { .. })
        ));
        assert!(matches!(
            parse_str("<testsuite/><testsuite/>"),
            Err(Error::Xml { .. })
        ));
        let deep = format!(
            "<testsuite>{}{}</testsuite>",
            "<a>".repeat(MAX_DEPTH + 1),
            "</a>".repeat(MAX_DEPTH + 1)
        );
        assert_eq!(parse_str(&deep), Err(Error::TooDeep { limit: MAX_DEPTH }));
    }

    #[test]
    fn entity_declarations_are_not_expanded() {
        let bomb = r#"<?xml version="1.0"?>
            <!DOCTYPE lolz [
              <!ENTITY lol "lol">
              <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
              <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
              <!ENTITY xxe SYSTEM "file:///etc/passwd">
            ]>
            <testsuite name="&lol3;"><testcase name="t"><failure>&lol3;&xxe;</failure></testcase></testsuite>"#;
        let r = parse_str(bomb).unwrap();
        assert_eq!(r.suites[0].name, "&lol3;");
        assert_eq!(r.suites[0].cases[0].output.as_deref(), Some("&lol3;&xxe;"));
    }

    #[test]
    fn long_output_is_truncated() {
        let big = "x".repeat(MAX_TEXT_BYTES + 10);
        let xml = format!(
            "<testsuite><testcase name='t'><failure><![CDATA[{big}]]></failure></testcase></testsuite>"
        );
        let r = parse_str(&xml).unwrap();
        let out = r.suites[0].cases[0].output.as_deref().unwrap();
        assert!(out.ends_with(TRUNCATED));
        assert!(out.len() <= MAX_TEXT_BYTES + TRUNCATED.len());
    }

    #[test]
    fn too_large_input() {
        let big = vec![b' '; MAX_INPUT_BYTES + 1];
        assert!(matches!(parse(&big), Err(Error::TooLarge { .. })));
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("1,234.5"), Some(1234.5));
        assert_eq!(parse_time(" 0.25 "), Some(0.25));
        assert_eq!(parse_time("-1"), None);
        assert_eq!(parse_time("NaN"), None);
        assert_eq!(parse_time("inf"), None);
    }
}
