//! The offline scheduler behind `kiln run`: runs a pipeline's tasks on this
//! machine in DAG order, independent tasks in parallel up to a limit.
//!
//! The server has its queue in the database; this scheduler is the
//! in-memory equivalent for one run, using the same executors and the same
//! rules (`kiln_store::queue`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use kiln_exec::context::{RunContext, task_dir_name};
use kiln_exec::mask::MaskedEvents;
use kiln_exec::{
    CancellationToken, Executor, LogStream, SourceTree, TaskEvents, TaskOutcome, TaskSpec,
};
use kiln_pipeline::{Pipeline, Status, Task};
use kiln_store::queue::{self, AfterEnd, Attempt, Stop, TaskState};
use tokio::task::JoinSet;

/// Why a task whose `when` does not match this run is skipped.
const WHEN_SKIPPED: &str = "`when` does not match this run";

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
    /// What Kiln found wrong with the files the last attempt kept, e.g. a
    /// report that is not JUnit XML (also in the task's log).
    pub notes: Vec<String>,
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

/// Runs the plan to its end and reports every task, in pipeline order.
/// Cancelling `cancel` stops running tasks and starts no more.
///
/// Which task may start, what becomes of a task when an attempt ends, and
/// the run's status are the queue's rules (`kiln_store::queue`), the same
/// a server applies: this keeps their states in memory and runs the tasks.
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
    let mut states = queue::start(tasks.iter().map(|task| {
        let skip = task
            .when
            .as_ref()
            .filter(|when| !when.matches(plan.context.branch.as_deref(), plan.context.event))
            .map(|_| WHEN_SKIPPED.to_string());
        (task, skip)
    }));
    let mut reports: Vec<Option<TaskReport>> = vec![None; tasks.len()];

    let mut running: JoinSet<(usize, TaskReport)> = JoinSet::new();
    let mut stop = None;
    loop {
        // A stop ends every task that has not started; a cancel outranks
        // the umbrella timeout.
        if cancel.is_cancelled() {
            stop = Some(Stop::Cancel);
        }
        if let Some(stop) = stop {
            for i in queue::stop(&mut states, stop) {
                if stop == Stop::Deadline {
                    states[i].reason = Some(run_timeout_reason(&plan.pipeline));
                }
            }
        }
        // Release or skip what waits on tasks that ended, and start queued
        // tasks in pipeline order while there is room.
        queue::settle(&mut states);
        while running.len() < plan.jobs.max(1) {
            let Some(i) = states.iter().position(|t| t.status == Status::Queued) else {
                break;
            };
            let task = &tasks[i];
            if let Some(missing) = task.secrets.iter().find(|s| !plan.secrets.contains_key(*s)) {
                states[i].status = Status::Error;
                states[i].reason = Some(format!(
                    "secret `{missing}` is not set: pass --secret {missing}=VALUE or --secret-file FILE"
                ));
                queue::settle(&mut states);
                continue;
            }
            states[i].status = Status::Running;
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
        if running.is_empty() {
            // Nothing runs and nothing more can start.
            break;
        }

        let umbrella = async {
            match deadline {
                Some(at) if stop.is_none() => tokio::time::sleep_until(at.into()).await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            joined = running.join_next() => {
                if let Some(Ok((i, report))) = joined {
                    observer.task_finished(&tasks[i], &report);
                    states[i].status = report.status;
                    states[i].reason = report.reason.clone();
                    reports[i] = Some(report);
                }
            }
            _ = umbrella => stop = Some(Stop::Deadline),
        }
    }

    // Every task has ended by now; should one not have, say so rather than panic.
    for state in &mut states {
        if !state.status.is_terminal() {
            state.status = Status::Skipped;
            state.reason = Some("never became ready to run".into());
        }
    }
    let status = stop
        .and_then(Stop::forced)
        .unwrap_or_else(|| queue::run_status(&states));
    let reports = reports
        .into_iter()
        .zip(states)
        .zip(tasks)
        .map(|((report, state), task)| report.unwrap_or_else(|| not_run(task, state)))
        .collect();
    RunReport {
        number: plan.context.run_number,
        status,
        duration: started.elapsed(),
        tasks: reports,
    }
}

/// The report of a task that never started, as the rules ended it.
fn not_run(task: &Task, state: TaskState) -> TaskReport {
    TaskReport {
        name: task.name.clone(),
        status: state.status,
        reason: state.reason,
        allow_failure: task.allow_failure,
        attempts: 0,
        duration: Duration::ZERO,
        outcome: None,
        notes: Vec::new(),
    }
}

/// Why a task ended when the umbrella `timeout` passed: the run's limit, as
/// the server says it, with the value the pipeline set.
fn run_timeout_reason(pipeline: &Pipeline) -> String {
    match pipeline.timeout {
        Some(limit) => format!("{} of {limit}", Stop::Deadline.reason()),
        None => Stop::Deadline.reason().to_string(),
    }
}

/// Runs `task`'s attempts until `queue::after_end` ends it.
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
        let mut capped_by_run = false;
        if let Some(umbrella) = umbrella {
            // The umbrella timeout caps what is left of every task's own.
            let left = umbrella.saturating_duration_since(Instant::now());
            capped_by_run = spec.timeout.is_none_or(|own| left < own);
            spec.timeout = Some(spec.timeout.map_or(left, |t| t.min(left)));
        }
        observer.task_started(task, attempt);
        let events = observer.task_events(task, attempt);
        let mut outcome = executor.run(&spec, events.clone(), cancel.clone()).await;
        if capped_by_run && outcome.status == Status::TimedOut {
            // The executor enforced what was left of the run's limit, which
            // it calls the task's own ("timeout of 7s988ms").
            outcome.error = Some(run_timeout_reason(&plan.pipeline));
        }
        let notes = crate::reports::check(&spec, &outcome).await;
        if !notes.is_empty() {
            // Kiln's words about the task's files are masked like its output.
            let events = MaskedEvents::for_task(events, &spec);
            for note in &notes {
                events.log(LogStream::System, format!("kiln: {note}\n").as_bytes());
            }
            events.finish();
        }
        let stop = if cancel.is_cancelled() {
            Some(Stop::Cancel)
        } else if umbrella.is_some_and(|u| Instant::now() >= u) {
            Some(Stop::Deadline)
        } else {
            None
        };
        let ended = Attempt {
            number: i64::from(attempt),
            max: queue::max_attempts(task),
            stop,
        };
        let status = match queue::after_end(
            &ended,
            outcome.status,
            outcome.error.as_deref(),
            if outcome.misconfigured {
                queue::Retry::Pointless
            } else {
                queue::Retry::Allowed
            },
        ) {
            AfterEnd::Retry { .. } => continue,
            AfterEnd::End(status) => status,
        };
        return TaskReport {
            name: task.name.clone(),
            status,
            reason: outcome.error.clone(),
            allow_failure: task.allow_failure,
            attempts: attempt,
            duration: started.elapsed(),
            outcome: Some(outcome),
            notes,
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures_util::future::BoxFuture;
    use kiln_pipeline::Event;
    use kiln_store::queue::cases::{CASES, Case, Observed, WHEN_SKIPPED};

    use super::*;

    /// Ends each attempt as its case scripts it, cancelling the run where
    /// the case says.
    struct Scripted {
        case: &'static Case,
        attempts: Mutex<HashMap<String, u32>>,
    }

    impl Executor for Scripted {
        fn kind(&self) -> &'static str {
            "scripted"
        }

        fn run<'a>(
            &'a self,
            spec: &'a TaskSpec,
            _events: Arc<dyn TaskEvents>,
            cancel: CancellationToken,
        ) -> BoxFuture<'a, TaskOutcome> {
            let mut attempts = self.attempts.lock().unwrap();
            let attempt = attempts.entry(spec.name.clone()).or_default();
            *attempt += 1;
            if self.case.cancels(&spec.name, *attempt) {
                cancel.cancel();
            }
            let mut outcome = TaskOutcome::error(spec, "scripted");
            outcome.status = self.case.outcome(&spec.name, *attempt);
            outcome.error = None;
            Box::pin(std::future::ready(outcome))
        }
    }

    struct Silent;

    impl TaskEvents for Silent {
        fn log(&self, _stream: kiln_exec::LogStream, _bytes: &[u8]) {}
    }

    impl RunObserver for Silent {
        fn task_events(&self, _task: &Task, _attempt: u32) -> Arc<dyn TaskEvents> {
            Arc::new(Silent)
        }
    }

    async fn play(case: &'static Case) -> Observed {
        let pipeline = kiln_pipeline::parse("case.kiln.yml", &case.yaml()).expect("pipeline");
        let dir = std::env::temp_dir();
        let plan = RunPlan {
            pipeline,
            context: RunContext {
                job: "cases".into(),
                run_number: 1,
                branch: Some(kiln_store::queue::cases::BRANCH.into()),
                sha: None,
                event: Event::Manual,
                agent: "local".into(),
                pull_request: None,
                tag: None,
            },
            source: Arc::new(SourceTree {
                root: dir.clone(),
                files: Vec::new(),
            }),
            run_dir: dir,
            secrets: HashMap::new(),
            extra_env: Vec::new(),
            // One task at a time, in pipeline order, as the table expects.
            jobs: 1,
            labels: Vec::new(),
        };
        let executor = Arc::new(Scripted {
            case,
            attempts: Mutex::new(HashMap::new()),
        });
        let report = run_pipeline(plan, executor, Arc::new(Silent), CancellationToken::new()).await;
        Observed {
            tasks: report
                .tasks
                .into_iter()
                .map(|t| (t.name, t.status, t.attempts, t.reason))
                .collect(),
            run: report.status,
        }
    }

    /// The offline runner ends every case of the queue's table as the
    /// rules (and so the server's backends) do.
    #[tokio::test]
    async fn runs_end_as_the_queue_rules_say() {
        assert_eq!(WHEN_SKIPPED, super::WHEN_SKIPPED);
        let mut failures = Vec::new();
        for case in CASES {
            if let Err(message) = case.check(&play(case).await) {
                failures.push(message);
            }
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }
}
