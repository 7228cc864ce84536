//! The offline scheduler behind `kiln run`: runs a pipeline's tasks on this
//! machine in DAG order, independent tasks in parallel up to a limit.
//!
//! The server has its own queue in the database; this scheduler is the
//! in-memory equivalent for one run, using the same executors.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use kiln_exec::context::{RunContext, task_dir_name};
use kiln_exec::{CancellationToken, Executor, SourceTree, TaskEvents, TaskOutcome, TaskSpec};
use kiln_pipeline::{Pipeline, Status, Task};
use tokio::task::JoinSet;

pub struct RunPlan {
    pub pipeline: Pipeline,
    pub context: RunContext,
    pub source: Arc<SourceTree>,
    /// Per-task outputs go to `<run_dir>/tasks/<task>/`.
    pub run_dir: PathBuf,
    pub secrets: HashMap<String, String>,
    /// `--env` values, applied over the pipeline's own.
    pub extra_env: Vec<(String, String)>,
    /// Most tasks running at once.
    pub jobs: usize,
    /// Put on every Docker object the run creates.
    pub labels: Vec<(String, String)>,
}

/// Where the scheduler reports progress; the console implements it.
pub trait RunObserver: Send + Sync {
    /// The sink for a task's output, asked once per attempt.
    fn task_events(&self, task: &Task, attempt: u32) -> Arc<dyn TaskEvents>;
    fn task_started(&self, _task: &Task, _attempt: u32) {}
    fn task_finished(&self, _task: &Task, _report: &TaskReport) {}
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TaskReport {
    pub name: String,
    pub status: Status,
    /// Why it ended as it did, when that is not plain success.
    pub reason: Option<String>,
    pub allow_failure: bool,
    pub attempts: u32,
    #[serde(serialize_with = "serialize_seconds")]
    pub duration: Duration,
    /// The last attempt's outcome; `None` when the task never started.
    pub outcome: Option<TaskOutcome>,
}

impl TaskReport {
    /// Whether dependants may run after this task.
    pub fn passed(&self) -> bool {
        self.status == Status::Success || (self.allow_failure && self.status == Status::Failure)
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RunReport {
    pub number: u64,
    pub status: Status,
    #[serde(serialize_with = "serialize_seconds")]
    pub duration: Duration,
    pub tasks: Vec<TaskReport>,
}

fn serialize_seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

enum State {
    Waiting,
    Running,
    Done(TaskReport),
}

/// Runs the plan to its end and reports every task, in pipeline order.
/// Cancelling `cancel` stops running tasks and starts no more.
pub async fn run_pipeline(
    plan: RunPlan,
    executor: Arc<dyn Executor>,
    observer: Arc<dyn RunObserver>,
    cancel: CancellationToken,
) -> RunReport {
    let started = Instant::now();
    let deadline = plan.pipeline.timeout.map(|t| started + t.as_std());
    let plan = Arc::new(plan);
    let tasks = &plan.pipeline.tasks;
    let index: HashMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    let mut states: Vec<State> = tasks.iter().map(|_| State::Waiting).collect();
    for (i, task) in tasks.iter().enumerate() {
        if let Some(when) = &task.when
            && !when.matches(plan.context.branch.as_deref(), plan.context.event)
        {
            states[i] = State::Done(not_run(
                task,
                Status::Skipped,
                "`when` does not match this run".into(),
            ));
        }
    }

    let mut running: JoinSet<(usize, TaskReport)> = JoinSet::new();
    let mut umbrella_expired = false;
    loop {
        // Settle every waiting task whose needs have all ended.
        let mut progress = true;
        while progress {
            progress = false;
            for i in 0..tasks.len() {
                if !matches!(states[i], State::Waiting) {
                    continue;
                }
                let task = &tasks[i];
                let needs: Vec<&State> = task
                    .needs
                    .iter()
                    .filter_map(|n| index.get(n.as_str()))
                    .map(|&j| &states[j])
                    .collect();
                let blocked = needs.iter().find_map(|s| match s {
                    State::Done(r) if !r.passed() => Some(r),
                    _ => None,
                });
                if let Some(need) = blocked {
                    let reason = format!("needs `{}`, which ended {}", need.name, need.status);
                    states[i] = State::Done(not_run(task, Status::Skipped, reason));
                    progress = true;
                    continue;
                }
                let ready = needs.iter().all(|s| matches!(s, State::Done(_)));
                if !ready || running.len() >= plan.jobs.max(1) {
                    continue;
                }
                if cancel.is_cancelled() || umbrella_expired {
                    continue;
                }
                if let Some(missing) = task.secrets.iter().find(|s| !plan.secrets.contains_key(*s))
                {
                    let reason = format!(
                        "secret `{missing}` is not set: pass --secret {missing}=VALUE or --secret-file FILE"
                    );
                    states[i] = State::Done(not_run(task, Status::Error, reason));
                    progress = true;
                    continue;
                }
                states[i] = State::Running;
                progress = true;
                let (plan, executor, observer, cancel) = (
                    plan.clone(),
                    executor.clone(),
                    observer.clone(),
                    cancel.clone(),
                );
                running.spawn(async move {
                    let report = run_task(
                        &plan,
                        i,
                        deadline,
                        executor.as_ref(),
                        observer.as_ref(),
                        &cancel,
                    )
                    .await;
                    (i, report)
                });
            }
        }

        if running.is_empty() {
            // Nothing runs and nothing more can start: the rest never will.
            let reason = if cancel.is_cancelled() {
                (Status::Cancelled, "the run was cancelled".to_string())
            } else if umbrella_expired {
                (Status::Skipped, "the run reached its timeout".to_string())
            } else {
                break;
            };
            for (i, state) in states.iter_mut().enumerate() {
                if matches!(state, State::Waiting) {
                    *state = State::Done(not_run(&tasks[i], reason.0, reason.1.clone()));
                }
            }
            break;
        }

        let umbrella = async {
            match deadline {
                Some(at) if !umbrella_expired => tokio::time::sleep_until(at.into()).await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            joined = running.join_next() => {
                if let Some(Ok((i, report))) = joined {
                    observer.task_finished(&tasks[i], &report);
                    states[i] = State::Done(report);
                }
            }
            _ = umbrella => umbrella_expired = true,
        }
    }

    // Every task has ended by now; should one not have, say so rather than panic.
    let reports: Vec<TaskReport> = states
        .into_iter()
        .zip(tasks)
        .map(|(state, task)| match state {
            State::Done(report) => report,
            State::Waiting | State::Running => {
                not_run(task, Status::Skipped, "never became ready to run".into())
            }
        })
        .collect();
    let status = run_status(&reports, cancel.is_cancelled(), umbrella_expired);
    RunReport {
        number: plan.context.run_number,
        status,
        duration: started.elapsed(),
        tasks: reports,
    }
}

/// The run's status: the worst of its tasks', where a Ctrl-C or the umbrella
/// timeout outranks what the tasks themselves say.
fn run_status(reports: &[TaskReport], cancelled: bool, timed_out: bool) -> Status {
    if cancelled {
        return Status::Cancelled;
    }
    if timed_out {
        return Status::TimedOut;
    }
    let counted = || reports.iter().filter(|r| !r.passed());
    for status in [
        Status::Error,
        Status::TimedOut,
        Status::Cancelled,
        Status::Failure,
    ] {
        if counted().any(|r| r.status == status) {
            return status;
        }
    }
    Status::Success
}

fn not_run(task: &Task, status: Status, reason: String) -> TaskReport {
    TaskReport {
        name: task.name.clone(),
        status,
        reason: Some(reason),
        allow_failure: task.allow_failure,
        attempts: 0,
        duration: Duration::ZERO,
        outcome: None,
    }
}

async fn run_task(
    plan: &RunPlan,
    index: usize,
    umbrella: Option<Instant>,
    executor: &dyn Executor,
    observer: &dyn RunObserver,
    cancel: &CancellationToken,
) -> TaskReport {
    let task = &plan.pipeline.tasks[index];
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut spec = task_spec(plan, task);
        if let Some(umbrella) = umbrella {
            // The umbrella timeout caps what is left of every task's own.
            let left = umbrella.saturating_duration_since(Instant::now());
            spec.timeout = Some(spec.timeout.map_or(left, |t| t.min(left)));
        }
        observer.task_started(task, attempt);
        let events = observer.task_events(task, attempt);
        let outcome = executor.run(&spec, events, cancel.clone()).await;
        let retryable = matches!(
            outcome.status,
            Status::Failure | Status::Error | Status::TimedOut
        );
        let umbrella_left = umbrella.is_none_or(|u| Instant::now() < u);
        if retryable && attempt <= task.retry && !cancel.is_cancelled() && umbrella_left {
            continue;
        }
        return TaskReport {
            name: task.name.clone(),
            status: outcome.status,
            reason: outcome.error.clone(),
            allow_failure: task.allow_failure,
            attempts: attempt,
            duration: started.elapsed(),
            outcome: Some(outcome),
        };
    }
}

/// The executor's view of `task` in this plan, with only the secrets it names.
pub fn task_spec(plan: &RunPlan, task: &Task) -> TaskSpec {
    let secrets = task
        .secrets
        .iter()
        .filter_map(|name| {
            plan.secrets
                .get(name)
                .map(|value| (name.clone(), value.clone()))
        })
        .collect();
    kiln_exec::context::task_spec(
        task,
        &plan.context,
        secrets,
        &plan.extra_env,
        plan.source.clone(),
        plan.run_dir.join("tasks").join(task_dir_name(&task.name)),
        plan.labels.clone(),
    )
}
