//! `kiln apply -f FILE`: the apply file's parser and checks, then one PUT
//! per job.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use kiln_api::JobBody;
use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};

use super::jobs::{freestyle_body, git_body};
use super::output::{emit, print_json};
use super::{ClientArgs, EXIT_API_ERROR, Output, connect};
use crate::run_command::{EXIT_INVALID, EXIT_SUCCESS, read_text};

/// Largest apply file read, and largest pipeline file a job takes.
const MAX_APPLY_BYTES: u64 = 4 << 20;

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// The jobs file (`-` for standard input).
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: PathBuf,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// One job of an apply file: the API's job body, with the kind inferred
/// when left out and the pipeline possibly in a file of its own.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyEntry {
    pub name: serde_saphyr::Spanned<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub repository: Option<String>,
    #[serde(default)]
    pub pipeline_path: Option<String>,
    #[serde(default)]
    pub default_branch: Option<String>,
    /// A freestyle job's pipeline YAML, inline (usually a `|` block).
    #[serde(default)]
    pub pipeline: Option<serde_saphyr::Spanned<String>>,
    /// A freestyle job's pipeline YAML, from a file relative to the apply file.
    #[serde(default)]
    pub pipeline_file: Option<String>,
}

/// A parsed apply file: either `jobs: [...]` or a bare list of jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyFile(pub Vec<ApplyEntry>);

impl<'de> Deserialize<'de> for ApplyFile {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Jobs {
            jobs: Vec<ApplyEntry>,
        }
        struct FileVisitor;
        impl<'de> Visitor<'de> for FileVisitor {
            type Value = ApplyFile;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping with `jobs: [...]`, or a list of jobs")
            }
            // Deserializing from the parser's own accessors (rather than an
            // untagged enum, which buffers) keeps errors located.
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<ApplyFile, A::Error> {
                Vec::<ApplyEntry>::deserialize(de::value::SeqAccessDeserializer::new(seq))
                    .map(ApplyFile)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ApplyFile, A::Error> {
                Jobs::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|jobs| ApplyFile(jobs.jobs))
            }
        }
        deserializer.deserialize_any(FileVisitor)
    }
}

/// A job ready to be PUT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyJob {
    pub name: String,
    pub body: JobBody,
}

/// Parses and checks an apply file. `file_name` is used in the messages,
/// which are located (`FILE:LINE:COLUMN: …`); `base_dir` is where
/// `pipeline_file` paths are resolved. Nothing is sent while any job is
/// wrong, so a bad file changes nothing on the server.
pub fn parse_apply_file(
    file_name: &str,
    text: &str,
    base_dir: &Path,
) -> Result<Vec<ApplyJob>, Vec<String>> {
    let options = serde_saphyr::options! {
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
        strict_booleans: true,
        with_snippet: false,
    };
    let entries = match serde_saphyr::from_str_with_options::<Option<ApplyFile>>(text, options) {
        Ok(Some(ApplyFile(entries))) => entries,
        Ok(None) => {
            return Err(vec![format!(
                "{file_name}:1:1: the file is empty: expected `jobs:` with a list of jobs"
            )]);
        }
        Err(error) => {
            let (line, column) = error
                .location()
                .map_or((1, 1), |at| (at.line().max(1), at.column().max(1)));
            let message = describe_yaml_error(&error);
            return Err(vec![format!("{file_name}:{line}:{column}: {message}")]);
        }
    };
    let mut errors = Vec::new();
    let mut jobs = Vec::new();
    let mut seen: HashMap<String, u64> = HashMap::new();
    for entry in entries {
        let at = &entry.name.referenced;
        let located =
            |message: String| format!("{file_name}:{}:{}: {message}", at.line(), at.column());
        let name = entry.name.value.trim().to_string();
        if name.is_empty() {
            errors.push(located("a job's `name` is empty".into()));
            continue;
        }
        if let Some(first) = seen.insert(name.clone(), at.line()) {
            errors.push(located(format!(
                "job `{name}` is listed twice (first on line {first})"
            )));
            continue;
        }
        match entry_body(&entry, base_dir) {
            Ok(body) => match check_pipeline(&entry, &body, file_name, text, base_dir) {
                Ok(()) => jobs.push(ApplyJob { name, body }),
                Err(diagnostics) => errors.extend(
                    diagnostics
                        .0
                        .iter()
                        .map(|d| format!("{d} (in job `{name}`)")),
                ),
            },
            Err(message) => errors.push(located(format!("job `{name}`: {message}"))),
        }
    }
    if errors.is_empty() {
        Ok(jobs)
    } else {
        Err(errors)
    }
}

/// A serde-saphyr error in the file's terms rather than Rust's; the
/// location is put in front by the caller.
fn describe_yaml_error(error: &serde_saphyr::Error) -> String {
    use serde_saphyr::Error as E;
    let mut inner = error;
    while let E::WithSnippet { error, .. } | E::AliasError { error, .. } = inner {
        inner = error;
    }
    let quoted = |names: &[&str]| {
        names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match inner {
        E::SerdeUnknownField {
            field, expected, ..
        } => format!(
            "unknown key `{field}`: expected one of {}",
            quoted(expected)
        ),
        E::SerdeMissingField { field, .. } => format!("missing required key `{field}`"),
        E::DuplicateMappingKey { key: Some(key), .. } => format!("duplicate key `{key}`"),
        E::DuplicateMappingKey { key: None, .. } => "duplicate key".into(),
        E::Unexpected { expected, .. } => {
            let what = match *expected {
                "string scalar" => "a string",
                "sequence start" => "a list",
                "mapping start" => "a mapping",
                other => other,
            };
            format!("expected {what}")
        }
        other => {
            let message = other.to_string();
            // The library's own "at line …" note repeats the location.
            message
                .split(" at line ")
                .next()
                .unwrap_or(&message)
                .trim()
                .to_string()
        }
    }
}

fn entry_body(entry: &ApplyEntry, base_dir: &Path) -> Result<JobBody, String> {
    let freestyle_source = entry.pipeline.is_some() || entry.pipeline_file.is_some();
    if entry.kind.is_none() && entry.repository.is_some() && freestyle_source {
        return Err(
            "give either `repository` (a git job) or `pipeline` (a freestyle job), not both".into(),
        );
    }
    let kind = match entry.kind.as_deref() {
        Some(kind @ ("git" | "freestyle")) => kind,
        Some(other) => {
            return Err(format!(
                "unknown kind `{other}`: expected `git` or `freestyle`"
            ));
        }
        None if freestyle_source => "freestyle",
        None => "git",
    };
    if kind == "git" {
        if entry.repository.is_none() {
            return Err(
                "a git job needs `repository` (or give `pipeline` for a freestyle job)".into(),
            );
        }
        if freestyle_source {
            return Err("a git job takes its pipeline from the repository: remove `pipeline`/`pipeline_file`".into());
        }
        return Ok(git_body(
            None,
            entry.repository.clone(),
            entry.pipeline_path.clone(),
            entry.default_branch.clone(),
        ));
    }
    if entry.repository.is_some() || entry.pipeline_path.is_some() || entry.default_branch.is_some()
    {
        return Err("a freestyle job has no repository: remove `repository`, `pipeline_path` and `default_branch`".into());
    }
    let pipeline = match (&entry.pipeline, &entry.pipeline_file) {
        (Some(text), None) => text.value.clone(),
        (None, Some(file)) => {
            let path = base_dir.join(file);
            read_jobs_text(&path).map_err(|e| format!("`pipeline_file`: {e:#}"))?
        }
        (Some(_), Some(_)) => {
            return Err("give either `pipeline` or `pipeline_file`, not both".into());
        }
        (None, None) => {
            return Err(
                "a freestyle job needs `pipeline` (the YAML text) or `pipeline_file`".into(),
            );
        }
    };
    Ok(freestyle_body(None, pipeline))
}

/// Checks a freestyle job's pipeline here, so its errors name the file
/// and line the user wrote it in (the server would only know the text).
fn check_pipeline(
    entry: &ApplyEntry,
    body: &JobBody,
    file_name: &str,
    text: &str,
    base_dir: &Path,
) -> Result<(), kiln_pipeline::Diagnostics> {
    let Some(pipeline) = &body.pipeline else {
        return Ok(());
    };
    if let Some(file) = &entry.pipeline_file {
        let shown = base_dir.join(file);
        return kiln_pipeline::parse(&shown.display().to_string(), pipeline).map(drop);
    }
    let Err(mut diagnostics) = kiln_pipeline::parse(file_name, pipeline) else {
        return Ok(());
    };
    let at = entry
        .pipeline
        .as_ref()
        .map(|spanned| spanned.referenced.line())
        .unwrap_or(0);
    // A block's span is its `|` line or its first line, as the parser has
    // it: the block starts after one or the other.
    let place = [at, at.saturating_sub(1)]
        .into_iter()
        .find_map(|before| Some((before, block_placement(text, before, pipeline)?)));
    for diagnostic in &mut diagnostics.0 {
        match place {
            // Where the line is in the apply file.
            Some((before, indent)) => {
                diagnostic.line += before;
                diagnostic.column += indent;
            }
            // A quoted or folded value: lines of the value, not of the file.
            None => {
                diagnostic.message = format!(
                    "{} (line {}, column {} of the pipeline at line {at})",
                    diagnostic.message, diagnostic.line, diagnostic.column
                );
                diagnostic.line = at.max(1);
                diagnostic.column = 1;
            }
        }
    }
    Err(diagnostics)
}

/// When `value` is written as a literal block (`|`) starting after line
/// `at` of `text`, the indentation of its lines; `None` when its lines are
/// not found there as written.
fn block_placement(text: &str, at: u64, value: &str) -> Option<u64> {
    let mut file_lines = text.lines().skip(usize::try_from(at).ok()?);
    let mut indent = None;
    for line in value.lines() {
        let written = file_lines.next()?;
        if line.is_empty() {
            if !written.trim().is_empty() {
                return None;
            }
            continue;
        }
        let width = *indent.get_or_insert_with(|| written.len() - written.trim_start().len());
        if written.get(width..) != Some(line) || !written[..width].trim().is_empty() {
            return None;
        }
    }
    indent.map(|width| width as u64)
}

/// A jobs file's text, or a pipeline file's that a job names; messages
/// name the file.
pub(super) fn read_jobs_text(path: &Path) -> anyhow::Result<String> {
    read_text(path, &path.display().to_string(), MAX_APPLY_BYTES)
}

pub(super) async fn apply(args: ApplyArgs) -> anyhow::Result<i32> {
    let (file_name, text, base_dir) = if args.file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .take(MAX_APPLY_BYTES + 1)
            .read_to_string(&mut text)
            .context("cannot read the jobs file from standard input")?;
        ("<stdin>".to_string(), text, std::env::current_dir()?)
    } else {
        let text = read_jobs_text(&args.file)?;
        let base = args
            .file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        (args.file.display().to_string(), text, base)
    };
    let jobs = match parse_apply_file(&file_name, &text, &base_dir) {
        Ok(jobs) => jobs,
        Err(errors) => {
            for error in &errors {
                eprintln!("error: {error}");
            }
            return Ok(EXIT_INVALID);
        }
    };
    if jobs.is_empty() {
        eprintln!("{file_name}: no jobs to apply");
        return Ok(EXIT_SUCCESS);
    }
    let client = connect(&args.client)?;
    let json = args.client.output == Output::Json;
    let width = jobs
        .iter()
        .map(|j| j.name.chars().count())
        .max()
        .unwrap_or(0);
    let mut applied = Vec::new();
    let mut failed = 0;
    for job in &jobs {
        match client.put_job(&job.name, &job.body).await {
            Ok(result) => {
                if !json {
                    let change = result.change.as_deref().unwrap_or("applied");
                    emit(&format!("{:<width$}  {change}\n", job.name))?;
                }
                applied.push(result);
            }
            // Nothing answers at all: trying the next job cannot help.
            Err(e @ (kiln_client::Error::Connect { .. } | kiln_client::Error::Unauthorized)) => {
                return Err(e.into());
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: job `{}`: {e}", job.name);
            }
        }
    }
    if json {
        print_json(&applied)?;
    }
    Ok(if failed == 0 {
        EXIT_SUCCESS
    } else {
        EXIT_API_ERROR
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<ApplyJob>, Vec<String>> {
        parse_apply_file("jobs.yml", text, Path::new("."))
    }

    #[test]
    fn apply_file_with_jobs_key() {
        let jobs = parse(
            "jobs:\n  - name: app\n    repository: https://example.com/app.git\n    default_branch: trunk\n  - name: nightly\n    pipeline: |\n      version: 1\n      tasks: {a: {steps: [make]}}\n",
        )
        .unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].name, "app");
        assert_eq!(jobs[0].body.kind, "git");
        assert_eq!(jobs[0].body.default_branch.as_deref(), Some("trunk"));
        assert_eq!(jobs[0].body.name, None);
        assert_eq!(jobs[1].body.kind, "freestyle");
        assert_eq!(
            jobs[1].body.pipeline.as_deref(),
            Some("version: 1\ntasks: {a: {steps: [make]}}\n")
        );
    }

    #[test]
    fn apply_file_as_a_list() {
        let jobs = parse(
            "- name: a\n  kind: git\n  repository: /srv/a.git\n  pipeline_path: ci/kiln.yml\n",
        )
        .unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].body.pipeline_path.as_deref(), Some("ci/kiln.yml"));
    }

    #[test]
    fn apply_file_pipeline_file_is_relative_to_the_apply_file() {
        let dir = tempfile::tempdir().unwrap();
        let pipeline = "version: 1\ntasks:\n  a:\n    steps: [make]\n";
        std::fs::write(dir.path().join("p.yml"), pipeline).unwrap();
        let jobs = parse_apply_file(
            "jobs.yml",
            "jobs: [{name: f, pipeline_file: p.yml}]",
            dir.path(),
        )
        .unwrap();
        assert_eq!(jobs[0].body.kind, "freestyle");
        assert_eq!(jobs[0].body.pipeline.as_deref(), Some(pipeline));
    }

    /// A freestyle pipeline's errors name the file it is in: its own file,
    /// or the jobs file at the lines of an inline `pipeline: |` block.
    #[test]
    fn apply_file_pipeline_errors_name_the_file_they_are_in() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("ci")).unwrap();
        let bad = "version: 1\ntasks:\n  a:\n    stepz: [make]\n";
        std::fs::write(dir.path().join("ci/bad.yml"), bad).unwrap();
        let errors = parse_apply_file(
            "jobs.yml",
            "jobs:\n  - name: f\n    pipeline_file: ci/bad.yml\n",
            dir.path(),
        )
        .unwrap_err();
        let shown = dir.path().join("ci/bad.yml").display().to_string();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(&format!("{shown}:4:5: ")),
            "{errors:?}"
        );
        assert!(
            errors[0].contains("`stepz`") && errors[0].contains("job `f`"),
            "{errors:?}"
        );

        let errors = parse(
            "jobs:\n  - name: g\n    pipeline: |\n      version: 1\n      tasks:\n        a:\n          stepz: [make]\n",
        )
        .unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("jobs.yml:7:11: "), "{errors:?}");

        // Written as a quoted string, the lines are the value's own.
        let errors = parse(
            "jobs:\n  - name: h\n    pipeline: \"version: 1\\ntasks:\\n  a:\\n    stepz: [make]\\n\"\n",
        )
        .unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("jobs.yml:3:1: "), "{errors:?}");
        assert!(
            errors[0].contains("line 4, column 5 of the pipeline"),
            "{errors:?}"
        );
    }

    #[test]
    fn apply_file_errors_are_located() {
        let errors = parse("jobs:\n  - name: a\n    repo: x\n").unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("jobs.yml:3:"), "{errors:?}");
        assert!(errors[0].contains("repo"), "{errors:?}");

        let errors = parse("jobs:\n  - name: [a\n").unwrap_err();
        assert!(errors[0].starts_with("jobs.yml:"), "{errors:?}");

        let errors = parse("kind: git\n").unwrap_err();
        assert!(errors[0].starts_with("jobs.yml:1:"), "{errors:?}");

        let errors = parse("").unwrap_err();
        assert!(errors[0].contains("empty"), "{errors:?}");

        let errors = parse("jobs:\n  - name: a\n    name: b\n").unwrap_err();
        assert!(errors[0].starts_with("jobs.yml:3:"), "{errors:?}");
        assert!(errors[0].contains("duplicate"), "{errors:?}");
    }

    #[test]
    fn apply_file_semantic_errors_name_the_job_and_line() {
        let errors = parse(
            "jobs:\n  - name: a\n  - name: b\n    repository: r\n    pipeline: x\n  - name: b\n    repository: r\n  - name: c\n    kind: docker\n",
        )
        .unwrap_err();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(
            errors[0].starts_with("jobs.yml:2:11: job `a`: a git job needs `repository`"),
            "{errors:?}"
        );
        assert!(
            errors[1].starts_with("jobs.yml:3:11: job `b`: give either `repository`"),
            "{errors:?}"
        );
        assert!(
            errors[2].contains("listed twice (first on line 3)"),
            "{errors:?}"
        );
        assert!(errors[3].contains("unknown kind `docker`"), "{errors:?}");
    }
}
