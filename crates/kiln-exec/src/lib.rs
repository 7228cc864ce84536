//! Runs one task of a pipeline on this machine.
//!
//! An [`Executor`] takes a [`TaskSpec`] (everything a task needs, already
//! resolved: env, secret values, source files) and reports progress to a
//! [`TaskEvents`] sink, ending with a [`TaskOutcome`]. `kiln run` and the agent
//! drive the same executors; neither knows how a task is isolated.

pub mod context;
pub mod docker;
pub mod isolation;
pub mod mask;
pub mod process;
pub mod workspace;

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
pub use kiln_pipeline::Status;
use kiln_pipeline::{Build, Resources, Service, Step};
pub use tokio_util::sync::CancellationToken;

pub use crate::workspace::SourceTree;

/// Everything an executor needs to run one task.
#[derive(Debug, Clone)]
pub struct TaskSpec {
    /// Expanded task name, e.g. `test[db=postgres]`.
    pub name: String,
    pub image: Option<String>,
    pub build: Option<Build>,
    pub services: Vec<Service>,
    /// Complete environment for the steps, `CI` and `KILN_*` included.
    pub env: Vec<(String, String)>,
    /// Secret values by name: injected as environment variables and masked in
    /// every byte of output.
    pub secrets: Vec<(String, String)>,
    pub steps: Vec<Step>,
    /// Time the task may take in all; `None` for no limit.
    pub timeout: Option<std::time::Duration>,
    pub resources: Resources,
    /// Globs (relative to the workspace) of files to keep after the task.
    pub artifacts: Vec<String>,
    /// Globs of JUnit XML reports to keep after the task.
    pub reports: Vec<String>,
    /// The files that make up the task's workspace.
    pub source: Arc<SourceTree>,
    /// Directory receiving `artifacts/` and `reports/` of this task.
    pub outputs: PathBuf,
    /// Labels put on every Docker object the task creates, so leftovers of a
    /// crashed runner can be found (`kiln.task` is always added).
    pub labels: Vec<(String, String)>,
}

impl TaskSpec {
    /// A minimal spec, mostly for tests and benchmarks.
    pub fn new(
        name: impl Into<String>,
        steps: Vec<Step>,
        source: Arc<SourceTree>,
        outputs: PathBuf,
    ) -> Self {
        TaskSpec {
            name: name.into(),
            image: None,
            build: None,
            services: Vec::new(),
            env: Vec::new(),
            secrets: Vec::new(),
            steps,
            timeout: None,
            resources: Resources::default(),
            artifacts: Vec::new(),
            reports: Vec::new(),
            source,
            outputs,
            labels: Vec::new(),
        }
    }
}

/// Whose a chunk of log is: the steps' or Kiln's.
///
/// A step's stdout and stderr are one pipe (the shell's fd 2 is a copy of
/// its fd 1), so they reach the log in the order the step wrote them, as on
/// a terminal, and cannot be told apart afterwards: both are `Output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    /// What the steps wrote to stdout or stderr, in the order written.
    Output,
    /// Kiln's own lines about the task: image pulls, step headers, notes on
    /// outputs, clean-up. Each is a line of its own: an unfinished line of
    /// output before one is ended first (see [`mask::MaskedEvents`]).
    System,
}

impl LogStream {
    pub const ALL: [LogStream; 2] = [LogStream::Output, LogStream::System];

    /// Position in [`LogStream::ALL`], for per-stream state kept in arrays.
    pub fn index(self) -> usize {
        match self {
            LogStream::Output => 0,
            LogStream::System => 1,
        }
    }
}

/// Receives what happens inside a task as it happens. Output reaches it
/// already masked. Called from executor tasks, so it must not block for long.
pub trait TaskEvents: Send + Sync {
    fn log(&self, stream: LogStream, bytes: &[u8]);
    /// Resolves when the sink can take more output. Executors await it before
    /// each read of a task's output, so a sink that falls behind
    /// (a slow or unreachable server) pauses the reading, and the task then
    /// blocks on its full pipe instead of the sink's memory growing. `log`
    /// itself never waits: Kiln's own lines and a masker's flushed tail must
    /// always be accepted.
    fn ready(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }
    fn step_started(&self, _index: usize, _name: &str) {}
    fn step_finished(&self, _index: usize, _result: &StepResult) {}
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StepResult {
    pub name: String,
    pub status: Status,
    pub exit_code: Option<i32>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl StepResult {
    fn not_run(step: &Step) -> Self {
        StepResult {
            name: step.name.clone(),
            status: Status::Skipped,
            exit_code: None,
            started_at: None,
            finished_at: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TaskOutcome {
    /// One of success, failure, timed_out, cancelled, error.
    pub status: Status,
    /// Why the task ended in `error` (or other details worth showing).
    pub error: Option<String>,
    /// One entry per step of the spec, in order; steps never reached are `skipped`.
    pub steps: Vec<StepResult>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// Collected artifact files, relative to `outputs/artifacts`.
    pub artifacts: Vec<PathBuf>,
    /// Collected reports, relative to `outputs/reports`.
    pub reports: Vec<PathBuf>,
    /// The task as written cannot run on this executor (it names no image
    /// for docker, it has services on the process executor): another
    /// attempt would end the same way, so it is not retried.
    pub misconfigured: bool,
}

impl TaskOutcome {
    /// An outcome for a task that could not start at all.
    pub fn error(spec: &TaskSpec, message: impl Into<String>) -> Self {
        let now = Utc::now();
        TaskOutcome {
            status: Status::Error,
            error: Some(message.into()),
            steps: spec.steps.iter().map(StepResult::not_run).collect(),
            started_at: now,
            finished_at: now,
            artifacts: Vec::new(),
            reports: Vec::new(),
            misconfigured: false,
        }
    }

    /// An outcome for a task that cannot run on this executor as written.
    pub fn misconfigured(spec: &TaskSpec, message: impl Into<String>) -> Self {
        TaskOutcome {
            misconfigured: true,
            ..TaskOutcome::error(spec, message)
        }
    }
}

/// How a task is isolated and run.
pub trait Executor: Send + Sync {
    /// `process` or `docker`.
    fn kind(&self) -> &'static str;

    /// Runs the task to its end. Cancelling `cancel` stops it as soon as
    /// possible (status `cancelled`); `spec.timeout` ends it with `timed_out`.
    /// Whatever happens, everything the task created is removed before this
    /// returns.
    fn run<'a>(
        &'a self,
        spec: &'a TaskSpec,
        events: Arc<dyn TaskEvents>,
        cancel: CancellationToken,
    ) -> BoxFuture<'a, TaskOutcome>;
}

/// The environment of a task's steps: the spec's env followed by its secrets.
pub fn step_environment(spec: &TaskSpec) -> Vec<(String, String)> {
    spec.env
        .iter()
        .chain(spec.secrets.iter())
        .cloned()
        .collect()
}

/// Why waiting for something inside a task stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    TimedOut,
    Cancelled,
}

impl Interrupt {
    pub fn status(self) -> Status {
        match self {
            Interrupt::TimedOut => Status::TimedOut,
            Interrupt::Cancelled => Status::Cancelled,
        }
    }

    pub fn describe(self, spec: &TaskSpec) -> String {
        match (self, spec.timeout) {
            (Interrupt::TimedOut, Some(limit)) => {
                format!(
                    "task exceeded its timeout of {}",
                    kiln_pipeline::Duration(limit)
                )
            }
            (Interrupt::TimedOut, None) => "task timed out".to_string(),
            (Interrupt::Cancelled, _) => "task was cancelled".to_string(),
        }
    }
}

/// The moment a task started with `timeout` must end.
pub fn deadline_for(timeout: Option<std::time::Duration>) -> Option<tokio::time::Instant> {
    timeout.map(|t| tokio::time::Instant::now() + t)
}

/// Awaits `work` unless the deadline passes or the task is cancelled first.
/// `work` is dropped when interrupted; the caller then tears the task down.
pub async fn interruptible<T>(
    work: impl std::future::Future<Output = T>,
    deadline: Option<tokio::time::Instant>,
    cancel: &CancellationToken,
) -> Result<T, Interrupt> {
    let expiry = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(Interrupt::Cancelled),
        _ = expiry => Err(Interrupt::TimedOut),
        value = work => Ok(value),
    }
}

/// How one step ended, as seen by an executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepExit {
    /// The script ran and exited with this code.
    Code(i32),
    /// The step could not be run (an infrastructure problem, not the script's).
    Error(String),
}

/// The result of running a task's steps in order.
#[derive(Debug, Clone)]
pub struct StepsOutcome {
    pub status: Status,
    pub error: Option<String>,
    pub steps: Vec<StepResult>,
}

/// Runs `spec.steps` in order with `run_one`, stopping at the first failure,
/// at the deadline or on cancel; reports each step to `events`. Steps never
/// reached are `skipped`.
pub async fn drive_steps<'a, F>(
    spec: &'a TaskSpec,
    events: &dyn TaskEvents,
    deadline: Option<tokio::time::Instant>,
    cancel: &CancellationToken,
    mut run_one: F,
) -> StepsOutcome
where
    F: FnMut(usize, &'a Step) -> BoxFuture<'a, StepExit>,
{
    let mut results: Vec<StepResult> = spec.steps.iter().map(StepResult::not_run).collect();
    let mut status = Status::Success;
    let mut error = None;
    for (index, step) in spec.steps.iter().enumerate() {
        events.step_started(index, &step.name);
        events.log(
            LogStream::System,
            format!("--- step {}: {}\n", index + 1, step.name).as_bytes(),
        );
        let started_at = Utc::now();
        let ended = interruptible(run_one(index, step), deadline, cancel).await;
        let result = &mut results[index];
        result.started_at = Some(started_at);
        result.finished_at = Some(Utc::now());
        match ended {
            Ok(StepExit::Code(0)) => result.status = Status::Success,
            Ok(StepExit::Code(code)) => {
                result.status = Status::Failure;
                result.exit_code = Some(code);
                status = Status::Failure;
                error = Some(format!("step `{}` exited with code {code}", step.name));
            }
            Ok(StepExit::Error(message)) => {
                result.status = Status::Error;
                status = Status::Error;
                error = Some(message);
            }
            Err(interrupt) => {
                result.status = interrupt.status();
                status = interrupt.status();
                error = Some(interrupt.describe(spec));
            }
        }
        if result.status == Status::Success {
            result.exit_code = Some(0);
        }
        events.step_finished(index, result);
        if status != Status::Success {
            break;
        }
    }
    StepsOutcome {
        status,
        error,
        steps: results,
    }
}
