//! The client commands (DESIGN.md §3): `kiln job`, `apply`, `trigger`,
//! `runs`, `logs`, `cancel`, `secret` and `agents`, which talk to a Kiln
//! server's REST API through [`kiln_client`].
//!
//! Output is a table (or plain lines) for people and, with `--output json`,
//! the API's JSON for scripts. Exit codes: 0 done, 1 the server refused or
//! failed (or a followed run did not succeed), 2 a usage error.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::{ArgGroup, Subcommand, ValueEnum};
use futures_util::StreamExt;
use kiln_api::{Job, JobBody, Run, Task, TriggerBody};
use kiln_client::Client;
use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};

use crate::run_command::{EXIT_INVALID, EXIT_SUCCESS, EXIT_TASK_FAILED};

/// Exit code when the server refused a request or could not be reached.
pub const EXIT_API_ERROR: i32 = 1;

/// How often a followed run is polled for task status changes.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How long a follower rides out an unreachable server (a restart) before
/// giving up.
const OUTAGE_GRACE: Duration = Duration::from_secs(60);
/// How long `kiln cancel` waits for the run's tasks to stop.
const CANCEL_WAIT: Duration = Duration::from_secs(10);
/// A log line longer than this is shown in pieces rather than held back.
const MAX_LINE: usize = 64 * 1024;
/// Largest secret value read from standard input.
const MAX_SECRET_BYTES: u64 = 1 << 20;
/// Largest apply file read.
const MAX_APPLY_BYTES: u64 = 4 << 20;
/// Statuses after which a run or task changes no more (DESIGN.md §1).
const FINAL_STATUSES: [&str; 6] = [
    "success",
    "failure",
    "cancelled",
    "timed_out",
    "skipped",
    "error",
];

// ---------------------------------------------------------------- arguments

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Create, list, show and delete jobs on a Kiln server.
    #[command(subcommand)]
    Job(JobCommand),
    /// Create or update every job of a YAML file (`jobs: [...]`), idempotently.
    Apply(ApplyArgs),
    /// Start a run of a job, and optionally follow it to its end.
    Trigger(TriggerArgs),
    /// List a job's runs, newest first.
    Runs(RunsArgs),
    /// Print, or follow, the console logs of a run's tasks.
    Logs(LogsArgs),
    /// Cancel a run.
    Cancel(CancelArgs),
    /// Set, list and delete a job's secrets.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// List the agents known to the server.
    Agents(AgentsArgs),
    /// Make tokens for agents (admins).
    #[command(subcommand)]
    AgentToken(AgentTokenCommand),
}

#[derive(Debug, Subcommand)]
pub enum AgentTokenCommand {
    /// Make a token an agent connects with; it is shown this once.
    Create {
        /// A name to recognise the token by: the agent's name is a good one.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Where the server is and how to talk to it; on every client command.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// The Kiln server's HTTP address.
    #[arg(
        long,
        env = "KILN_SERVER",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    pub server: String,
    /// API token, sent as a bearer token.
    #[arg(long, env = "KILN_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// `table` for people, `json` for the API's JSON.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// List the jobs.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one job.
    Show {
        /// The job's name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Create a git job (`--repository`) or a freestyle one (`--pipeline-file`).
    Create(JobCreateArgs),
    /// Delete a job with its runs, logs and secrets.
    Delete {
        /// The job's name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, clap::Args)]
#[command(group(ArgGroup::new("source").required(true).args(["repository", "pipeline_file"])))]
pub struct JobCreateArgs {
    /// The new job's name (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// Git URL of the repository whose pipeline the job runs.
    #[arg(long, value_name = "URL")]
    pub repository: Option<String>,
    /// Path of the pipeline file in the repository [default: .kiln.yml].
    #[arg(long, value_name = "PATH", requires = "repository")]
    pub pipeline_path: Option<String>,
    /// Branch built when a trigger names none [default: main].
    #[arg(long, value_name = "BRANCH", requires = "repository")]
    pub default_branch: Option<String>,
    /// A local pipeline file to store on the server: a freestyle job.
    #[arg(long, value_name = "FILE")]
    pub pipeline_file: Option<PathBuf>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// The jobs file (`-` for standard input).
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: PathBuf,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, clap::Args)]
pub struct TriggerArgs {
    /// The job to run.
    pub job: String,
    /// Branch to build; the job's default branch when neither this nor --sha.
    #[arg(long, conflicts_with = "sha")]
    pub branch: Option<String>,
    /// Commit to build.
    #[arg(long)]
    pub sha: Option<String>,
    /// Follow the run until it ends, showing task status changes; exit 0
    /// only if it succeeded.
    #[arg(long, short = 'f')]
    pub follow: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, clap::Args)]
pub struct RunsArgs {
    /// The job whose runs to list.
    pub job: String,
    /// Only runs with this status.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(kiln_api::STATUSES))]
    pub status: Option<String>,
    /// Only runs of this branch.
    #[arg(long)]
    pub branch: Option<String>,
    /// At most this many runs.
    #[arg(long, short = 'n', default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The job of the run.
    pub job: String,
    /// Run number.
    #[arg(value_parser = clap::value_parser!(i64).range(1..))]
    pub run: i64,
    /// A task, or a matrix task's base name for all its combinations; every
    /// task of the run when omitted.
    pub task: Option<String>,
    /// Keep printing as the tasks write, until the run ends.
    #[arg(long, short = 'f')]
    pub follow: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, clap::Args)]
pub struct CancelArgs {
    /// The job of the run.
    pub job: String,
    /// Run number.
    #[arg(value_parser = clap::value_parser!(i64).range(1..))]
    pub run: i64,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Set a secret; its value is read from standard input.
    Set {
        /// The job the secret belongs to.
        job: String,
        /// The secret's name, as tasks list it under `secrets:`.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List a job's secrets (names only: values are write-only).
    List {
        /// The job whose secrets to list.
        job: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a secret.
    Delete {
        /// The job the secret belongs to.
        job: String,
        /// The secret's name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, clap::Args)]
pub struct AgentsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

// ---------------------------------------------------------------- dispatch

/// Runs a client command; returns the exit code. Errors from the server are
/// reported here (exit 1); other errors go back to `main` (exit 2).
pub async fn run(command: ClientCommand) -> anyhow::Result<i32> {
    match dispatch(command).await {
        Ok(code) => Ok(code),
        Err(error) => {
            if is_broken_pipe(&error) {
                // `kiln runs JOB | head`: the reader has all it wanted.
                return Ok(EXIT_SUCCESS);
            }
            match describe_client_error(&error) {
                Some(message) => {
                    eprintln!("error: {message}");
                    Ok(EXIT_API_ERROR)
                }
                None => Err(error),
            }
        }
    }
}

async fn dispatch(command: ClientCommand) -> anyhow::Result<i32> {
    match command {
        ClientCommand::Job(JobCommand::List { client }) => job_list(&client).await,
        ClientCommand::Job(JobCommand::Show { name, client }) => job_show(&client, &name).await,
        ClientCommand::Job(JobCommand::Create(args)) => job_create(args).await,
        ClientCommand::Job(JobCommand::Delete { name, client }) => job_delete(&client, &name).await,
        ClientCommand::Apply(args) => apply(args).await,
        ClientCommand::Trigger(args) => trigger(args).await,
        ClientCommand::Runs(args) => runs(args).await,
        ClientCommand::Logs(args) => logs(args).await,
        ClientCommand::Cancel(args) => cancel(args).await,
        ClientCommand::Secret(SecretCommand::Set { job, name, client }) => {
            secret_set(&client, &job, &name).await
        }
        ClientCommand::Secret(SecretCommand::List { job, client }) => {
            secret_list(&client, &job).await
        }
        ClientCommand::Secret(SecretCommand::Delete { job, name, client }) => {
            secret_delete(&client, &job, &name).await
        }
        ClientCommand::Agents(args) => agents(&args.client).await,
        ClientCommand::AgentToken(AgentTokenCommand::Create { name, client }) => {
            agent_token_create(&client, &name).await
        }
    }
}

/// The message of an error that came from the client library, with any
/// context added on top of it; `None` for other errors. The library's own
/// message already includes what its source says, so the chain stops there.
fn describe_client_error(error: &anyhow::Error) -> Option<String> {
    let mut parts = Vec::new();
    for cause in error.chain() {
        parts.push(cause.to_string());
        if cause.is::<kiln_client::Error>() {
            return Some(parts.join(": "));
        }
    }
    None
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

fn connect(args: &ClientArgs) -> anyhow::Result<Client> {
    Ok(Client::new(&args.server, args.token.as_deref())?)
}

// ---------------------------------------------------------------- jobs

async fn job_list(args: &ClientArgs) -> anyhow::Result<i32> {
    let jobs = connect(args)?.list_jobs().await?;
    if args.output == Output::Json {
        return print_json(&jobs);
    }
    if jobs.is_empty() {
        emit("no jobs yet: create one with `kiln job create` or `kiln apply`\n")?;
        return Ok(EXIT_SUCCESS);
    }
    let now = Utc::now();
    let rows = jobs
        .iter()
        .map(|job| {
            vec![
                job.name.clone(),
                job.kind.clone(),
                job_source(job),
                dash(job.default_branch.as_deref()),
                ago(job.updated_at, now),
            ]
        })
        .collect();
    emit(&table(
        &["NAME", "KIND", "SOURCE", "BRANCH", "UPDATED"],
        rows,
    ))?;
    Ok(EXIT_SUCCESS)
}

fn job_source(job: &Job) -> String {
    match (&job.repository, job.kind.as_str()) {
        (Some(repository), _) => match job.pipeline_path.as_deref() {
            Some(path) if path != ".kiln.yml" => format!("{repository} ({path})"),
            _ => repository.clone(),
        },
        (None, "freestyle") => "(pipeline stored on the server)".into(),
        (None, _) => "-".into(),
    }
}

async fn job_show(args: &ClientArgs, name: &str) -> anyhow::Result<i32> {
    let job = connect(args)?.get_job(name).await?;
    if args.output == Output::Json {
        return print_json(&job);
    }
    let mut text = String::new();
    let mut field = |key: &str, value: &str| text.push_str(&format!("{key:<16}{value}\n"));
    field("name:", &job.name);
    field("kind:", &job.kind);
    if let Some(repository) = &job.repository {
        field("repository:", repository);
    }
    if let Some(path) = &job.pipeline_path {
        field("pipeline path:", path);
    }
    if let Some(branch) = &job.default_branch {
        field("default branch:", branch);
    }
    field("created:", &local_time(job.created_at));
    field("updated:", &local_time(job.updated_at));
    if let Some(pipeline) = &job.pipeline {
        text.push_str("pipeline:\n");
        for line in pipeline.lines() {
            text.push_str(&format!("  {line}\n"));
        }
    }
    emit(&text)?;
    Ok(EXIT_SUCCESS)
}

async fn job_create(args: JobCreateArgs) -> anyhow::Result<i32> {
    let body = match &args.pipeline_file {
        Some(path) => JobBody {
            name: Some(args.name.clone()),
            kind: "freestyle".into(),
            repository: None,
            pipeline_path: None,
            default_branch: None,
            pipeline: Some(read_text(path, MAX_APPLY_BYTES)?),
        },
        None => JobBody {
            name: Some(args.name.clone()),
            kind: "git".into(),
            repository: args.repository.clone(),
            pipeline_path: args.pipeline_path.clone(),
            default_branch: args.default_branch.clone(),
            pipeline: None,
        },
    };
    if let (Some(path), Some(pipeline)) = (&args.pipeline_file, &body.pipeline)
        && let Err(diagnostics) = kiln_pipeline::parse(&path.display().to_string(), pipeline)
    {
        for diagnostic in &diagnostics.0 {
            eprintln!("error: {diagnostic}");
        }
        return Ok(EXIT_INVALID);
    }
    let job = connect(&args.client)?.create_job(&body).await?;
    if args.client.output == Output::Json {
        return print_json(&job);
    }
    emit(&format!("created {} job `{}`\n", job.kind, job.name))?;
    Ok(EXIT_SUCCESS)
}

async fn job_delete(args: &ClientArgs, name: &str) -> anyhow::Result<i32> {
    connect(args)?.delete_job(name).await?;
    // DELETE answers with no body, so there is no JSON to print.
    if args.output == Output::Table {
        emit(&format!("deleted job `{name}`\n"))?;
    }
    Ok(EXIT_SUCCESS)
}

// ---------------------------------------------------------------- apply

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
        return Ok(JobBody {
            name: None,
            kind: kind.into(),
            repository: entry.repository.clone(),
            pipeline_path: entry.pipeline_path.clone(),
            default_branch: entry.default_branch.clone(),
            pipeline: None,
        });
    }
    if entry.repository.is_some() || entry.pipeline_path.is_some() || entry.default_branch.is_some()
    {
        return Err("a freestyle job has no repository: remove `repository`, `pipeline_path` and `default_branch`".into());
    }
    let pipeline = match (&entry.pipeline, &entry.pipeline_file) {
        (Some(text), None) => text.value.clone(),
        (None, Some(file)) => {
            let path = base_dir.join(file);
            read_text(&path, MAX_APPLY_BYTES).map_err(|e| format!("`pipeline_file`: {e:#}"))?
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
    Ok(JobBody {
        name: None,
        kind: kind.into(),
        repository: None,
        pipeline_path: None,
        default_branch: None,
        pipeline: Some(pipeline),
    })
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
    // The value's location is its first line or, for `|`, the line of the
    // indicator before it.
    let place = [at.saturating_sub(1), at]
        .into_iter()
        .find_map(|before| block_placement(text, before, pipeline).map(|indent| (before, indent)));
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

/// When `value` is written as a literal block (`|`) whose lines follow
/// line `at` of `text`, the indentation of its lines; `None` when its lines
/// are not found there as written.
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

async fn apply(args: ApplyArgs) -> anyhow::Result<i32> {
    let (file_name, text, base_dir) = if args.file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .take(MAX_APPLY_BYTES + 1)
            .read_to_string(&mut text)
            .context("cannot read the jobs file from standard input")?;
        ("<stdin>".to_string(), text, std::env::current_dir()?)
    } else {
        let text = read_text(&args.file, MAX_APPLY_BYTES)?;
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

// ---------------------------------------------------------------- runs

async fn trigger(args: TriggerArgs) -> anyhow::Result<i32> {
    let client = connect(&args.client)?;
    let json = args.client.output == Output::Json;
    let body = TriggerBody {
        branch: args.branch.clone(),
        sha: args.sha.clone(),
    };
    let run = client.trigger(&args.job, &body).await?;
    if !args.follow {
        if json {
            return print_json(&run);
        }
        emit(&format!("{}\n", run_headline(&run)))?;
        return Ok(EXIT_SUCCESS);
    }
    // With JSON on stdout, the progress goes to stderr so stdout stays one document.
    let progress = Progress { to_stderr: json };
    progress.say(&run_headline(&run))?;
    let run = follow_run(&client, &args.job, run.number, &progress).await?;
    if json {
        print_json(&run)?;
    }
    Ok(if run.status == "success" {
        EXIT_SUCCESS
    } else {
        EXIT_TASK_FAILED
    })
}

fn run_headline(run: &Run) -> String {
    let mut text = format!("run #{} of {}: {}", run.number, run.job, run.status);
    let at = match (&run.branch, &run.sha) {
        (Some(branch), Some(sha)) => format!(" ({branch} at {})", short_sha(sha)),
        (Some(branch), None) => format!(" ({branch})"),
        (None, Some(sha)) => format!(" ({})", short_sha(sha)),
        (None, None) => String::new(),
    };
    text.push_str(&at);
    text
}

/// Where follow-mode progress lines go.
struct Progress {
    to_stderr: bool,
}

impl Progress {
    fn say(&self, line: &str) -> std::io::Result<()> {
        if self.to_stderr {
            eprintln!("{line}");
            Ok(())
        } else {
            emit(&format!("{line}\n"))
        }
    }
}

/// Polls the run until it ends, saying each task status change; returns the
/// final run.
async fn follow_run(
    client: &Client,
    job: &str,
    number: i64,
    progress: &Progress,
) -> anyhow::Result<Run> {
    let mut known: HashMap<String, String> = HashMap::new();
    let mut poller = Poller::default();
    loop {
        if let Some(run) = poller.get_run(client, job, number).await? {
            let tasks = run.tasks.as_deref().unwrap_or_default();
            let width = tasks
                .iter()
                .map(|t| t.name.chars().count())
                .max()
                .unwrap_or(0);
            for task in tasks {
                let line = match known.get(&task.name) {
                    None => Some(format!("{:<width$}  {}", task.name, task_state(task))),
                    Some(old) if *old != task.status => Some(format!(
                        "{:<width$}  {old} → {}",
                        task.name,
                        task_state(task)
                    )),
                    Some(_) => None,
                };
                if let Some(line) = line {
                    progress.say(&line)?;
                    known.insert(task.name.clone(), task.status.clone());
                }
            }
            if is_final(&run.status) {
                let mut summary = format!("run #{}: {}", run.number, run.status);
                if let Some(duration) = run_duration(&run, Utc::now()) {
                    summary.push_str(&format!(" in {duration}"));
                }
                progress.say(&summary)?;
                if let Some(error) = &run.error {
                    progress.say(&format!("  {error}"))?;
                }
                return Ok(run);
            }
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A task's status with what explains it: duration when it ended, attempt
/// when retried, reason when not a success.
fn task_state(task: &Task) -> String {
    let mut text = task.status.clone();
    if task.attempt > 1 && !is_final(&task.status) {
        text.push_str(&format!(" (attempt {})", task.attempt));
    }
    if is_final(&task.status)
        && let (Some(start), Some(end)) = (task.started_at, task.finished_at)
    {
        text.push_str(&format!(" ({})", human_duration(end - start)));
    }
    if task.status != "success"
        && let Some(reason) = task.reason.as_deref().filter(|r| !r.is_empty())
    {
        text.push_str(&format!(": {reason}"));
    }
    text
}

/// Fetches a run for a follower, riding out short outages (a restarting
/// server) instead of abandoning a long watch.
#[derive(Default)]
struct Poller {
    failing_since: Option<Instant>,
}

impl Poller {
    async fn get_run(
        &mut self,
        client: &Client,
        job: &str,
        number: i64,
    ) -> Result<Option<Run>, kiln_client::Error> {
        match client.get_run(job, number).await {
            Ok(run) => {
                if self.failing_since.take().is_some() {
                    eprintln!("(the server answers again)");
                }
                Ok(Some(run))
            }
            Err(e) if e.is_transient() => {
                let since = *self.failing_since.get_or_insert_with(|| {
                    eprintln!(
                        "warning: {e}; retrying for up to {}s",
                        OUTAGE_GRACE.as_secs()
                    );
                    Instant::now()
                });
                if since.elapsed() > OUTAGE_GRACE {
                    Err(e)
                } else {
                    Ok(None)
                }
            }
            Err(e) => Err(e),
        }
    }
}

async fn runs(args: RunsArgs) -> anyhow::Result<i32> {
    let client = connect(&args.client)?;
    let limit = args.limit as usize;
    let mut runs = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = client
            .list_runs(
                &args.job,
                args.status.as_deref(),
                args.branch.as_deref(),
                cursor.as_deref(),
            )
            .await?;
        let room = limit - runs.len();
        let whole_page = page.runs.len() <= room;
        runs.extend(page.runs.into_iter().take(room));
        cursor = if whole_page { page.next_cursor } else { None };
        // A page cut short by --limit leaves no cursor that would resume
        // exactly after the last run shown.
        if runs.len() >= limit || cursor.is_none() {
            break;
        }
    }
    if args.client.output == Output::Json {
        return print_json(&kiln_api::RunList {
            runs,
            next_cursor: cursor,
        });
    }
    if runs.is_empty() {
        emit(&format!("no runs of `{}` yet\n", args.job))?;
        return Ok(EXIT_SUCCESS);
    }
    let now = Utc::now();
    let rows = runs
        .iter()
        .map(|run| {
            vec![
                run.number.to_string(),
                run.status.clone(),
                dash(run.branch.as_deref()),
                run.sha.as_deref().map_or_else(|| "-".into(), short_sha),
                run.event.clone(),
                ago(run.created_at, now),
                run_duration(run, now).unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    emit(&table(
        &[
            "NUMBER", "STATUS", "BRANCH", "SHA", "EVENT", "CREATED", "DURATION",
        ],
        rows,
    ))?;
    Ok(EXIT_SUCCESS)
}

async fn cancel(args: CancelArgs) -> anyhow::Result<i32> {
    let client = connect(&args.client)?;
    let mut run = client.cancel_run(&args.job, args.run).await?;
    // Queued tasks end at once; running ones when their agent has stopped
    // them, within about a second. Wait for that, so what is printed is
    // the outcome of the cancel rather than the state before it.
    let deadline = Instant::now() + CANCEL_WAIT;
    while !is_final(&run.status) && Instant::now() < deadline {
        tokio::time::sleep(POLL_INTERVAL / 2).await;
        run = client.get_run(&args.job, args.run).await?;
    }
    if args.client.output == Output::Json {
        return print_json(&run);
    }
    if is_final(&run.status) {
        emit(&format!("{}\n", run_headline(&run)))?;
    } else {
        let stopping = run
            .tasks
            .iter()
            .flatten()
            .filter(|task| !is_final(&task.status))
            .count();
        emit(&format!(
            "run #{} of {}: cancelling, {stopping} task(s) still stopping (`kiln runs {}` shows when they end)\n",
            run.number, run.job, run.job
        ))?;
    }
    Ok(EXIT_SUCCESS)
}

// ---------------------------------------------------------------- logs

async fn logs(args: LogsArgs) -> anyhow::Result<i32> {
    let client = connect(&args.client)?;
    let json = args.client.output == Output::Json;
    let run = client.get_run(&args.job, args.run).await?;
    let all: Vec<Task> = run.tasks.clone().unwrap_or_default();
    let selected: Vec<Task> = match &args.task {
        None => all.clone(),
        Some(name) => {
            let exact: Vec<Task> = all.iter().filter(|t| t.name == *name).cloned().collect();
            if exact.is_empty() {
                let prefix = format!("{name}[");
                all.iter()
                    .filter(|t| t.name.starts_with(&prefix))
                    .cloned()
                    .collect()
            } else {
                exact
            }
        }
    };
    if selected.is_empty() {
        let names: Vec<&str> = all.iter().map(|t| t.name.as_str()).collect();
        match &args.task {
            Some(task) => eprintln!(
                "error: run #{} of {} has no task `{task}`; its tasks: {}",
                run.number,
                run.job,
                if names.is_empty() {
                    "(none yet)".to_string()
                } else {
                    names.join(", ")
                }
            ),
            None => eprintln!("run #{} of {} has no tasks yet", run.number, run.job),
        }
        return Ok(if args.task.is_some() {
            EXIT_API_ERROR
        } else {
            EXIT_SUCCESS
        });
    }
    // One task named by the user: its log as it is, no headers or prefixes.
    let raw = args.task.is_some() && selected.len() == 1 && !json;
    if args.follow {
        follow_logs(&client, &args.job, &run, selected, raw, json).await?;
    } else {
        print_logs(&client, &args.job, run.number, &selected, raw, json).await?;
    }
    Ok(EXIT_SUCCESS)
}

/// Whether a task has (or will soon have) a console log.
fn has_started(task: &Task) -> bool {
    task.started_at.is_some() || task.status == "running"
}

async fn print_logs(
    client: &Client,
    job: &str,
    number: i64,
    tasks: &[Task],
    raw: bool,
    json: bool,
) -> anyhow::Result<()> {
    let mut documents = Vec::new();
    for (i, task) in tasks.iter().enumerate() {
        let log = if has_started(task) {
            match client.console(job, number, &task.name, None).await {
                Ok(log) => Some(log),
                Err(kiln_client::Error::Api { status: 404, .. }) => None,
                Err(e) => return Err(e.into()),
            }
        } else {
            None
        };
        if json {
            documents.push(serde_json::json!({
                "task": task.name,
                "status": task.status,
                "log": log.as_deref().map(String::from_utf8_lossy),
            }));
            continue;
        }
        if raw {
            emit_bytes(log.as_deref().unwrap_or_default())?;
            continue;
        }
        let mut text = String::new();
        if i > 0 {
            text.push('\n');
        }
        text.push_str(&format!("==> {}: {} <==\n", task.name, task_state(task)));
        emit(&text)?;
        match log {
            Some(log) if !log.is_empty() => {
                emit_bytes(&log)?;
                if !log.ends_with(b"\n") {
                    emit("\n")?;
                }
            }
            _ => emit("(no output)\n")?,
        }
    }
    if json {
        print_json(&documents)?;
    }
    Ok(())
}

/// Follows the logs of `tasks` until the run ends: each task's stream from
/// the time it starts, lines prefixed by the task name unless `raw`.
async fn follow_logs(
    client: &Client,
    job: &str,
    run: &Run,
    tasks: Vec<Task>,
    raw: bool,
    json: bool,
) -> anyhow::Result<()> {
    let wanted: HashSet<String> = tasks.iter().map(|t| t.name.clone()).collect();
    let width = wanted.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    let mut following: HashSet<String> = HashSet::new();
    let mut followers = tokio::task::JoinSet::new();
    let mut poller = Poller::default();
    let mut current = Some(run.clone());
    loop {
        if let Some(run) = current.take() {
            for task in run.tasks.as_deref().unwrap_or_default() {
                if !wanted.contains(&task.name)
                    || !has_started(task)
                    || !following.insert(task.name.clone())
                {
                    continue;
                }
                let sink = LineSink::new(&task.name, width, raw, json);
                let client = client.clone();
                let (job, number, name) = (job.to_string(), run.number, task.name.clone());
                followers.spawn(async move {
                    let result = follow_task(&client, &job, number, &name, sink).await;
                    (name, result)
                });
            }
            if is_final(&run.status) || following.len() == wanted.len() {
                break;
            }
        }
        tokio::time::sleep(POLL_INTERVAL).await;
        current = poller.get_run(client, job, run.number).await?;
    }
    while let Some(joined) = followers.join_next().await {
        let (name, result) = joined.context("a log follower stopped unexpectedly")?;
        if let Err(e) = result {
            if is_broken_pipe(&e) {
                return Err(e);
            }
            eprintln!("warning: the log of `{name}` was cut short: {e:#}");
        }
    }
    Ok(())
}

/// Streams one task's log into `sink` until the server closes it; picks up
/// where it was after a dropped connection.
async fn follow_task(
    client: &Client,
    job: &str,
    number: i64,
    task: &str,
    mut sink: LineSink,
) -> anyhow::Result<()> {
    let mut received: u64 = 0;
    let mut failing_since: Option<Instant> = None;
    'connect: loop {
        let stream = match client.follow_console(job, number, task).await {
            Ok(stream) => stream,
            // A task that ended without writing anything has no log.
            Err(kiln_client::Error::Api { status: 404, .. }) => break,
            Err(e) if e.is_transient() => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() > OUTAGE_GRACE {
                    return Err(e.into());
                }
                tokio::time::sleep(POLL_INTERVAL).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        // A new stream starts at the beginning of the log: skip what was shown.
        let mut skip = received;
        let mut stream = stream;
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) if e.is_transient() => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > OUTAGE_GRACE {
                        return Err(e.into());
                    }
                    continue 'connect;
                }
                Err(e) => return Err(e.into()),
            };
            failing_since = None;
            let start = usize::try_from(skip).unwrap_or(usize::MAX).min(chunk.len());
            skip -= start as u64;
            received += (chunk.len() - start) as u64;
            sink.write(&chunk[start..])?;
        }
        break;
    }
    sink.finish()?;
    Ok(())
}

/// Turns a task's log bytes into output: passed through as they come when
/// `raw`, else cut into lines, each written whole with the task's prefix
/// (or as a JSON object) so that tasks followed together never interleave
/// within a line.
struct LineSink {
    prefix: String,
    task: String,
    raw: bool,
    json: bool,
    partial: Vec<u8>,
}

impl LineSink {
    fn new(task: &str, width: usize, raw: bool, json: bool) -> LineSink {
        LineSink {
            prefix: format!("{task:<width$} │ "),
            task: task.to_string(),
            raw,
            json,
            partial: Vec::new(),
        }
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.raw {
            return emit_bytes(bytes);
        }
        let out = self.feed(bytes);
        emit_bytes(&out)
    }

    fn finish(&mut self) -> std::io::Result<()> {
        let out = self.flush();
        emit_bytes(&out)
    }

    /// The output for the complete lines now buffered.
    fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.partial.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            self.format_line(&line[..line.len() - 1], &mut out);
        }
        if self.partial.len() > MAX_LINE {
            let line = std::mem::take(&mut self.partial);
            self.format_line(&line, &mut out);
        }
        out
    }

    /// The output for an unfinished last line, at the end of the log.
    fn flush(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.format_line(&line, &mut out);
        }
        out
    }

    fn format_line(&self, line: &[u8], out: &mut Vec<u8>) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if self.json {
            let object = serde_json::json!({
                "task": self.task,
                "line": String::from_utf8_lossy(line),
            });
            out.extend_from_slice(object.to_string().as_bytes());
        } else {
            out.extend_from_slice(self.prefix.as_bytes());
            out.extend_from_slice(line);
        }
        out.push(b'\n');
    }
}

// ---------------------------------------------------------------- secrets

async fn secret_set(args: &ClientArgs, job: &str, name: &str) -> anyhow::Result<i32> {
    let value = if std::io::stdin().is_terminal() {
        eprint!("value of secret `{name}` for job `{job}` (input hidden): ");
        read_hidden_line().await?
    } else {
        let mut bytes = Vec::new();
        std::io::stdin()
            .take(MAX_SECRET_BYTES + 1)
            .read_to_end(&mut bytes)
            .context("cannot read the secret from standard input")?;
        if bytes.len() as u64 > MAX_SECRET_BYTES {
            eprintln!("error: the secret is larger than {MAX_SECRET_BYTES} bytes");
            return Ok(EXIT_INVALID);
        }
        String::from_utf8(bytes).context("the secret on standard input is not UTF-8")?
    };
    // `echo value | kiln secret set` adds a newline that is not part of it.
    let value = value
        .strip_suffix('\n')
        .map(|v| v.strip_suffix('\r').unwrap_or(v))
        .unwrap_or(&value);
    if value.is_empty() {
        eprintln!(
            "error: the secret's value is empty: pass it on standard input, e.g. `kiln secret set {job} {name} < file`"
        );
        return Ok(EXIT_INVALID);
    }
    connect(args)?.put_secret(job, name, value).await?;
    if args.output == Output::Table {
        emit(&format!("set secret `{name}` of job `{job}`\n"))?;
    }
    Ok(EXIT_SUCCESS)
}

/// One line from the terminal with echo off, so the secret never shows on
/// screen; the terminal is restored even on Ctrl-C.
#[cfg(unix)]
async fn read_hidden_line() -> anyhow::Result<String> {
    use std::os::fd::AsRawFd;
    let fd = std::io::stdin().as_raw_fd();
    let mut original = std::mem::MaybeUninit::<libc::termios>::uninit();
    // SAFETY: `fd` is open for the life of the process and `original` is a
    // valid place for tcgetattr to write a termios to.
    if unsafe { libc::tcgetattr(fd, original.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot read the terminal's settings");
    }
    // SAFETY: tcgetattr succeeded, so it filled `original` in.
    let original = unsafe { original.assume_init() };
    let mut hidden = original;
    hidden.c_lflag &= !libc::ECHO;
    hidden.c_lflag |= libc::ECHONL;
    // SAFETY: `hidden` is a valid termios copied from the terminal's own.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &hidden) } != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot turn the terminal's echo off");
    }
    let restore = move || {
        // SAFETY: as above; restores the settings read at the start.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &original) };
    };
    let read = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    });
    tokio::select! {
        line = read => {
            restore();
            Ok(line.context("the terminal reader stopped")?.context("cannot read the secret")?)
        }
        _ = tokio::signal::ctrl_c() => {
            restore();
            eprintln!();
            std::process::exit(crate::run_command::EXIT_INTERRUPTED);
        }
    }
}

#[cfg(not(unix))]
async fn read_hidden_line() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the secret")?;
    Ok(line)
}

async fn secret_list(args: &ClientArgs, job: &str) -> anyhow::Result<i32> {
    let secrets = connect(args)?.list_secrets(job).await?;
    if args.output == Output::Json {
        return print_json(&secrets);
    }
    if secrets.is_empty() {
        emit(&format!("job `{job}` has no secrets\n"))?;
        return Ok(EXIT_SUCCESS);
    }
    let now = Utc::now();
    let rows = secrets
        .iter()
        .map(|s| vec![s.name.clone(), ago(s.updated_at, now)])
        .collect();
    emit(&table(&["NAME", "UPDATED"], rows))?;
    Ok(EXIT_SUCCESS)
}

async fn secret_delete(args: &ClientArgs, job: &str, name: &str) -> anyhow::Result<i32> {
    connect(args)?.delete_secret(job, name).await?;
    if args.output == Output::Table {
        emit(&format!("deleted secret `{name}` of job `{job}`\n"))?;
    }
    Ok(EXIT_SUCCESS)
}

// ---------------------------------------------------------------- agents

async fn agents(args: &ClientArgs) -> anyhow::Result<i32> {
    let agents = connect(args)?.list_agents().await?;
    if args.output == Output::Json {
        return print_json(&agents);
    }
    if agents.is_empty() {
        emit("no agents: start one with `kiln agent --server … --token …`\n")?;
        return Ok(EXIT_SUCCESS);
    }
    let now = Utc::now();
    let rows = agents
        .iter()
        .map(|agent| {
            vec![
                agent.name.clone(),
                agent.state.clone(),
                if agent.labels.is_empty() {
                    "-".into()
                } else {
                    agent.labels.join(",")
                },
                if agent.running_tasks.is_empty() {
                    "-".into()
                } else {
                    agent.running_tasks.join(", ")
                },
                agent
                    .last_heartbeat
                    .map_or_else(|| "never".into(), |at| ago(at, now)),
            ]
        })
        .collect();
    emit(&table(
        &["NAME", "STATE", "LABELS", "RUNNING", "LAST HEARTBEAT"],
        rows,
    ))?;
    Ok(EXIT_SUCCESS)
}

async fn agent_token_create(args: &ClientArgs, name: &str) -> anyhow::Result<i32> {
    let client = connect(args)?;
    let created = client.create_agent_token(name).await?;
    if args.output == Output::Json {
        return print_json(&created);
    }
    let host = client.server_host();
    emit(&format!(
        "agent token `{}` (shown once, keep it): {}\n\
         start an agent with it (the server's gRPC address: its --grpc-listen, port 9090 by default):\n  \
         kiln agent --server http://{host}:9090 --token {} --name {}\n",
        created.name, created.token, created.token, created.name
    ))?;
    Ok(EXIT_SUCCESS)
}

// ---------------------------------------------------------------- output

/// Writes to stdout at once and flushes, so followed output shows as it
/// comes and concurrent writers never split each other's lines.
fn emit(text: &str) -> std::io::Result<()> {
    emit_bytes(text.as_bytes())
}

fn emit_bytes(bytes: &[u8]) -> std::io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<i32> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    emit(&text)?;
    Ok(EXIT_SUCCESS)
}

/// Columns padded to their widest cell (in characters), two spaces apart;
/// the last column is not padded.
fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
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

fn dash(value: Option<&str>) -> String {
    value.filter(|v| !v.is_empty()).unwrap_or("-").to_string()
}

fn short_sha(sha: &str) -> String {
    sha.chars().take(7).collect()
}

fn is_final(status: &str) -> bool {
    FINAL_STATUSES.contains(&status)
}

/// How long a run took, or has been running; `None` before it started.
fn run_duration(run: &Run, now: DateTime<Utc>) -> Option<String> {
    let start = run.started_at?;
    Some(match run.finished_at {
        Some(end) => human_duration(end - start),
        None if is_final(&run.status) => return None,
        None => format!("{}…", human_duration(now - start)),
    })
}

/// `12.3s`, `4m05s`, `2h03m`.
fn human_duration(duration: chrono::TimeDelta) -> String {
    let millis = duration.num_milliseconds().max(0);
    if millis < 60_000 {
        return format!("{:.1}s", millis as f64 / 1000.0);
    }
    let secs = millis / 1000;
    if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h{:02}m", secs / 3600, secs % 3600 / 60)
    }
}

/// `just now`, `5m ago`, `3h ago`, `2d ago`, then the date.
fn ago(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - at).num_seconds();
    match secs {
        ..10 => "just now".into(),
        10..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86_400 => format!("{}h ago", secs / 3600),
        86_400..604_800 => format!("{}d ago", secs / 86_400),
        _ => at
            .with_timezone(&chrono::Local)
            .format("%Y-%m-%d")
            .to_string(),
    }
}

fn local_time(at: DateTime<Utc>) -> String {
    at.with_timezone(&chrono::Local)
        .format("%Y-%m-%d %H:%M:%S %Z")
        .to_string()
}

fn read_text(path: &Path, limit: u64) -> anyhow::Result<String> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    if size > limit {
        bail!("{} is {size} bytes; the limit is {limit}", path.display());
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8", path.display()))
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
        assert_eq!(
            human_duration(chrono::TimeDelta::milliseconds(12_345)),
            "12.3s"
        );
        assert_eq!(human_duration(chrono::TimeDelta::seconds(245)), "4m05s");
        assert_eq!(human_duration(chrono::TimeDelta::seconds(7380)), "2h03m");
    }

    #[test]
    fn line_sink_prefixes_whole_lines() {
        let mut sink = LineSink::new("t", 3, false, false);
        assert_eq!(sink.feed(b"one\r\ntw"), "t   │ one\n".as_bytes());
        assert_eq!(sink.feed(b"o\nthr"), "t   │ two\n".as_bytes());
        assert_eq!(sink.flush(), "t   │ thr\n".as_bytes());
        assert!(sink.flush().is_empty());

        let mut sink = LineSink::new("t[x=1]", 0, false, true);
        assert_eq!(
            String::from_utf8(sink.feed(b"hi\n")).unwrap(),
            "{\"line\":\"hi\",\"task\":\"t[x=1]\"}\n"
        );
    }

    #[test]
    fn client_errors_are_told_from_others() {
        let error = anyhow::Error::from(kiln_client::Error::Unauthorized);
        assert_eq!(
            describe_client_error(&error).as_deref(),
            Some("the server refused the token (401): set --token or KILN_TOKEN")
        );
        assert_eq!(describe_client_error(&anyhow::anyhow!("other")), None);
    }
}
