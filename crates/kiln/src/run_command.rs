//! `kiln run`, `kiln validate` and `kiln schema`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use kiln_exec::docker::DockerExecutor;
use kiln_exec::mask::Masker;
use kiln_exec::process::ProcessExecutor;
use kiln_exec::{CancellationToken, Executor, SourceTree};
use kiln_pipeline::{Event, MAX_PIPELINE_BYTES, Pipeline, Status};

use crate::cli::{ExecutorKind, RunArgs, ValidateArgs};
use crate::console::{Console, describe_status, format_duration};
use crate::local::{RunContext, RunPlan, RunReport, run_pipeline};
use crate::repo::RepoInfo;

/// Exit codes of `kiln run` and `kiln validate` (DESIGN.md §3).
pub const EXIT_SUCCESS: i32 = 0;
pub const EXIT_TASK_FAILED: i32 = 1;
pub const EXIT_INVALID: i32 = 2;
/// The shell convention for a command stopped by SIGINT.
pub const EXIT_INTERRUPTED: i32 = 130;

/// A failure that has already been explained to the user, with its exit code.
#[derive(Debug)]
pub struct Exit(pub i32);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}", self.0)
    }
}

impl std::error::Error for Exit {}

pub fn validate(args: &ValidateArgs) -> anyhow::Result<i32> {
    let repo = RepoInfo::discover(&std::env::current_dir()?);
    let path = pipeline_path(&repo, args.file.as_deref());
    match load_pipeline(&path) {
        Ok(pipeline) => {
            let count = pipeline.tasks.len();
            println!(
                "{}: valid, {count} {}",
                display_path(&path),
                if count == 1 { "task" } else { "tasks" }
            );
            Ok(EXIT_SUCCESS)
        }
        Err(code) => Ok(code.0),
    }
}

pub fn schema() -> anyhow::Result<i32> {
    println!(
        "{}",
        serde_json::to_string_pretty(&kiln_pipeline::json_schema())?
    );
    Ok(EXIT_SUCCESS)
}

pub fn pipeline_path(repo: &RepoInfo, file: Option<&Path>) -> PathBuf {
    file.map(Path::to_path_buf)
        .unwrap_or_else(|| repo.root.join(".kiln.yml"))
}

fn display_path(path: &Path) -> String {
    let cwd = std::env::current_dir().unwrap_or_default();
    path.strip_prefix(&cwd)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Reads and parses a pipeline file, printing located errors on failure.
pub fn load_pipeline(path: &Path) -> Result<Pipeline, Exit> {
    let name = display_path(path);
    let text = match read_text(path, "the pipeline file", MAX_PIPELINE_BYTES as u64) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("error: {name}: {e:#}");
            return Err(Exit(EXIT_INVALID));
        }
    };
    kiln_pipeline::parse(&name, &text).map_err(|diagnostics| {
        for diagnostic in &diagnostics.0 {
            eprintln!("error: {diagnostic}");
        }
        let count = diagnostics.0.len();
        eprintln!(
            "{name}: {count} problem{}",
            if count == 1 { "" } else { "s" }
        );
        Exit(EXIT_INVALID)
    })
}

/// A UTF-8 text file of at most `limit` bytes; the messages call it `what`.
pub(crate) fn read_text(path: &Path, what: &str, limit: u64) -> anyhow::Result<String> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read {what}"))?
        .len();
    if size > limit {
        bail!("{what} is {size} bytes; the limit is {limit}");
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {what}"))?;
    String::from_utf8(bytes).with_context(|| format!("{what} is not UTF-8"))
}

pub async fn run(args: RunArgs) -> anyhow::Result<i32> {
    let repo = RepoInfo::discover(&std::env::current_dir()?);
    let path = pipeline_path(&repo, args.file.as_deref());
    let pipeline = match load_pipeline(&path) {
        Ok(pipeline) => pipeline,
        Err(exit) => return Ok(exit.0),
    };
    let pipeline = if args.tasks.is_empty() {
        pipeline
    } else {
        match pipeline.select(&args.tasks) {
            Ok(selected) => selected,
            Err(message) => {
                eprintln!("error: {message}");
                return Ok(EXIT_INVALID);
            }
        }
    };
    let secrets = match crate::secrets::collect(&args.secrets, &args.secret_files) {
        Ok(secrets) => secrets,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(EXIT_INVALID);
        }
    };
    let executor = match choose_executor(args.executor).await {
        Ok(executor) => executor,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(EXIT_INVALID);
        }
    };

    let source = {
        let root = repo.root.clone();
        tokio::task::spawn_blocking(move || SourceTree::scan(&root))
            .await?
            .context("cannot list the repository's files")?
    };
    let (run_number, run_dir) = new_run_dir(&repo.root)?;
    let run_id = format!(
        "{}-{}-{run_number}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    );
    let plan = RunPlan {
        pipeline,
        context: RunContext {
            job: repo.job_name(),
            run_number,
            branch: repo.branch.clone(),
            sha: repo.sha.clone(),
            event: Event::Manual,
            agent: "local".into(),
            pull_request: None,
            tag: None,
        },
        source: Arc::new(source),
        run_dir: run_dir.clone(),
        secrets,
        extra_env: args.env.clone(),
        jobs: args
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
        labels: vec![("kiln.local-run".into(), run_id.clone())],
    };
    let color =
        !args.no_color && std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal();
    // What Kiln writes of its own (task lines, the summary, summary.json)
    // may quote a file name or an error holding a secret's value, so it is
    // masked like the tasks' output.
    let masker = Masker::new(
        plan.pipeline
            .tasks
            .iter()
            .flat_map(|task| &task.secrets)
            .filter_map(|name| plan.secrets.get(name))
            .map(String::as_str),
    );
    let console = Arc::new(Console::new(
        &plan.pipeline.tasks,
        run_dir.clone(),
        color,
        masker.clone(),
    ));

    let cancel = CancellationToken::new();
    let interrupted = watch_for_interrupt(cancel.clone());
    let report = run_pipeline(plan, executor.executor.clone(), console, cancel.clone()).await;
    interrupted.abort();

    if let Some(docker) = &executor.docker {
        // Belt and braces: every task cleans up after itself, but a task
        // whose clean-up was cut short must not leave containers behind.
        let _ = docker.remove_leftovers("kiln.local-run", &run_id).await;
    }
    write_summary(&run_dir, &report, &masker);
    print_summary(&report, &run_dir, color, &masker);
    Ok(match report.status {
        Status::Success => EXIT_SUCCESS,
        _ if cancel.is_cancelled() => EXIT_INTERRUPTED,
        _ => EXIT_TASK_FAILED,
    })
}

struct ChosenExecutor {
    executor: Arc<dyn Executor>,
    docker: Option<Arc<DockerExecutor>>,
}

async fn choose_executor(kind: Option<ExecutorKind>) -> anyhow::Result<ChosenExecutor> {
    let process = || ChosenExecutor {
        executor: Arc::new(ProcessExecutor::default()),
        docker: None,
    };
    match kind {
        Some(ExecutorKind::Process) => {
            eprintln!("executor: process");
            Ok(process())
        }
        Some(ExecutorKind::Docker) => {
            let docker = Arc::new(
                DockerExecutor::connect()
                    .await
                    .map_err(|e| anyhow::anyhow!("--executor docker: {e}"))?,
            );
            eprintln!("executor: docker ({})", docker.endpoint());
            Ok(ChosenExecutor {
                executor: docker.clone(),
                docker: Some(docker),
            })
        }
        None => match DockerExecutor::connect().await {
            Ok(docker) => {
                eprintln!(
                    "executor: docker ({}; use --executor process to run on the host)",
                    docker.endpoint()
                );
                let docker = Arc::new(docker);
                Ok(ChosenExecutor {
                    executor: docker.clone(),
                    docker: Some(docker),
                })
            }
            Err(reason) => {
                eprintln!("executor: process (no Docker engine answered: {reason})");
                Ok(process())
            }
        },
    }
}

/// The first Ctrl-C cancels the run, which then cleans up; a second one
/// exits at once.
fn watch_for_interrupt(cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        eprintln!("\ninterrupted: stopping tasks and cleaning up (Ctrl-C again to quit at once)");
        cancel.cancel();
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(EXIT_INTERRUPTED);
        }
    })
}

/// Makes `.kiln/runs/<n>` with the next free number; creating the directory
/// is the claim, so two runs started together never share one.
fn new_run_dir(root: &Path) -> anyhow::Result<(u64, PathBuf)> {
    let runs = root.join(".kiln").join("runs");
    std::fs::create_dir_all(&runs).with_context(|| format!("cannot create {}", runs.display()))?;
    let highest = std::fs::read_dir(&runs)?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    for number in highest + 1..highest + 1000 {
        let dir = runs.join(number.to_string());
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok((number, dir)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
        }
    }
    bail!("cannot find a free run number under {}", runs.display())
}

fn write_summary(run_dir: &Path, report: &RunReport, masker: &Masker) {
    let result = serde_json::to_value(report)
        .and_then(|mut summary| {
            mask_json(&mut summary, masker);
            serde_json::to_vec_pretty(&summary)
        })
        .map_err(std::io::Error::other)
        .and_then(|json| std::fs::write(run_dir.join("summary.json"), json));
    if let Err(e) = result {
        eprintln!(
            "warning: cannot write {}: {e}",
            run_dir.join("summary.json").display()
        );
    }
}

/// Masks every string in `value`: reasons, file names and notes alike.
fn mask_json(value: &mut serde_json::Value, masker: &Masker) {
    match value {
        serde_json::Value::String(text) => *text = masker.mask_str(text),
        serde_json::Value::Array(items) => {
            for item in items {
                mask_json(item, masker);
            }
        }
        serde_json::Value::Object(fields) => {
            for field in fields.values_mut() {
                mask_json(field, masker);
            }
        }
        _ => {}
    }
}

fn print_summary(report: &RunReport, run_dir: &Path, color: bool, masker: &Masker) {
    let width = report
        .tasks
        .iter()
        .map(|t| t.name.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    let paint = |status: Status, text: &str| -> String {
        if !color {
            return text.to_string();
        }
        let code = match status {
            Status::Success => "32",
            Status::Skipped => "2",
            Status::Failure | Status::Error | Status::TimedOut => "31",
            _ => "33",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    };
    println!();
    println!(
        "{:<width$}  {:<17}  {:>8}  NOTE",
        "TASK", "STATUS", "DURATION"
    );
    for task in &report.tasks {
        let status = describe_status(task);
        let duration = if task.attempts == 0 {
            "-".to_string()
        } else {
            format_duration(task.duration)
        };
        let mut notes = Vec::new();
        if task.attempts > 1 {
            notes.push(format!("{} attempts", task.attempts));
        }
        notes.extend(task.reason.clone());
        let kept = task
            .outcome
            .as_ref()
            .map_or(0, |o| o.artifacts.len() + o.reports.len());
        if kept > 0 {
            notes.push(format!("{kept} file(s) kept"));
        }
        let name = masker.mask_str(&task.name);
        let note = masker.mask_str(&notes.join("; "));
        println!(
            "{name:<width$}  {}  {duration:>8}  {note}",
            paint(task.status, &format!("{status:<17}"))
        );
    }
    let counts = count_by_status(report);
    println!(
        "\nrun {}: {} in {} ({counts}); logs and outputs in {}",
        report.number,
        paint(report.status, report.status.as_str()),
        format_duration(report.duration),
        masker.mask_str(&display_path(run_dir))
    );
}

fn count_by_status(report: &RunReport) -> String {
    let mut counts: Vec<(Status, usize)> = Vec::new();
    let mut seen = HashMap::new();
    for task in &report.tasks {
        *seen.entry(task.status).or_insert(0) += 1;
    }
    for status in [
        Status::Success,
        Status::Failure,
        Status::Error,
        Status::TimedOut,
        Status::Cancelled,
        Status::Skipped,
    ] {
        if let Some(&n) = seen.get(&status) {
            counts.push((status, n));
        }
    }
    counts
        .iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect::<Vec<_>>()
        .join(", ")
}
