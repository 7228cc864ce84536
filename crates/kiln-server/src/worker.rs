//! An in-process worker: claims tasks from the database queue exactly as a
//! remote agent will, runs them with the engine's executors, and reports
//! logs, steps, results and the outcome through the same store calls. It is
//! the embedded agent of `kiln up`, and lets a lone server run pipelines.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kiln_exec::context::{RunContext, task_dir_name, task_spec};
use kiln_exec::{CancellationToken, Executor, LogStream, SourceTree, StepResult, TaskEvents};
use kiln_store::{Claim, Database, Id, JobKind, StepRow, TaskResult, TaskRow};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::results;
use crate::secrets::open_secret;
use crate::state::AppState;

/// How often lost leases and passed deadlines are looked for.
const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// How often a running task checks whether it was cancelled.
const CANCEL_POLL: Duration = Duration::from_millis(250);
/// Largest log chunk stored in one row.
const MAX_CHUNK: usize = 256 * 1024;

pub struct WorkerConfig {
    pub name: String,
    pub labels: Vec<String>,
    pub capacity: usize,
    pub executor: Arc<dyn Executor>,
    /// Where checkouts and outputs go while a task runs.
    pub work_dir: PathBuf,
    pub lease: Duration,
}

/// Runs tasks until `shutdown` is cancelled, then waits for those running.
pub async fn run_worker<D: Database>(
    state: AppState<D>,
    config: WorkerConfig,
    shutdown: CancellationToken,
) {
    let config = Arc::new(config);
    let mut running: JoinSet<()> = JoinSet::new();
    publish_agent(&state, &config, 0);
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        // Register interest before claiming, so a trigger that lands between
        // an empty claim and the wait still wakes us.
        let notified = state.work.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let mut claimed = false;
        if running.len() < config.capacity {
            let claim = Claim {
                holder: config.name.clone(),
                labels: config.labels.clone(),
                lease: config.lease,
                now: Utc::now(),
            };
            match state.db.claim_task(&claim).await {
                Ok(Some(task)) => {
                    claimed = true;
                    state.metrics.task_started(task.queued_at, task.started_at);
                    let (task_state, task_config) = (state.clone(), config.clone());
                    running
                        .spawn(async move { run_claimed(&task_state, &task_config, task).await });
                    publish_agent(&state, &config, running.len());
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("claiming a task failed: {e}"),
            }
        }
        if claimed {
            continue;
        }
        tokio::select! {
            _ = &mut notified => {}
            Some(_) = running.join_next(), if !running.is_empty() => publish_agent(&state, &config, running.len()),
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    while running.join_next().await.is_some() {}
}

/// Ends lost leases and overdue runs, on a timer, until `shutdown`, after a
/// grace period of one lease from start.
pub async fn run_sweeper<D: Database>(state: AppState<D>, shutdown: CancellationToken) {
    // Leases may have run out while this server was down, through no fault
    // of the agents: give them one lease to reconnect and renew before any
    // task is declared lost.
    tokio::select! {
        _ = tokio::time::sleep(state.agents.lease) => {}
        _ = shutdown.cancelled() => return,
    }
    loop {
        match state.db.expire(Utc::now()).await {
            Ok(touched) if !touched.is_empty() => state.work.notify_waiters(),
            Ok(_) => {}
            Err(e) => tracing::warn!("expiring leases failed: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

fn publish_agent<D: Database>(state: &AppState<D>, config: &WorkerConfig, busy: usize) {
    state.metrics.set_agent(kiln_api::Agent {
        name: config.name.clone(),
        labels: config.labels.clone(),
        state: if busy > 0 {
            "busy".into()
        } else {
            "idle".into()
        },
        running_tasks: Vec::new(),
        last_heartbeat: Some(Utc::now()),
    });
}

async fn run_claimed<D: Database>(state: &AppState<D>, config: &WorkerConfig, task: TaskRow) {
    let holder = config.name.as_str();
    let result = match execute(state, config, &task).await {
        Ok(result) => result,
        Err(message) => TaskResult {
            status: kiln_store::Status::Error,
            reason: Some(message),
            now: Utc::now(),
        },
    };
    state.metrics.task_finished(task.started_at, result.now);
    match state.db.finish_task(task.id, holder, &result).await {
        Ok(true) => {}
        Ok(false) => tracing::info!("task {} was no longer ours when it ended", task.id),
        Err(e) => tracing::warn!("recording the end of task {} failed: {e}", task.id),
    }
    state.work.notify_waiters();
}

/// The run and the job a claimed task belongs to.
pub(crate) async fn run_and_job<D: Database>(
    state: &AppState<D>,
    task: &TaskRow,
) -> Result<(kiln_store::Run, kiln_store::Job), String> {
    let run = state
        .db
        .get_run_by_id(task.run_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the task's run is gone")?;
    let job = state
        .db
        .get_job(&run.job)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the task's job is gone")?;
    Ok((run, job))
}

async fn execute<D: Database>(
    state: &AppState<D>,
    config: &WorkerConfig,
    task: &TaskRow,
) -> Result<TaskResult, String> {
    let (run, job) = crate::worker::run_and_job(state, task).await?;

    let scratch = tempfile::Builder::new()
        .prefix("kiln-worker-")
        .tempdir_in(&config.work_dir)
        .map_err(|e| format!("cannot make a work directory: {e}"))?;
    let checkout = scratch.path().join("src");
    tokio::fs::create_dir_all(&checkout)
        .await
        .map_err(|e| e.to_string())?;
    if job.spec.kind == JobKind::Git
        && let (Some(url), Some(sha)) = (&job.spec.repository, &run.sha)
    {
        kiln_git::checkout(url, sha, &checkout, None)
            .await
            .map_err(|e| e.to_string())?;
    }
    let source = {
        let checkout = checkout.clone();
        tokio::task::spawn_blocking(move || SourceTree::scan(&checkout))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot list the checkout: {e}"))?
    };

    let sealed = state
        .db
        .sealed_secrets(job.id, &task.spec.secrets)
        .await
        .map_err(|e| e.to_string())?;
    let mut secrets = Vec::new();
    for (name, value) in sealed {
        secrets.push((
            name.clone(),
            open_secret(&state.key, job.id, &name, &value)?,
        ));
    }
    if let Some(missing) = task
        .spec
        .secrets
        .iter()
        .find(|n| !secrets.iter().any(|(s, _)| s == *n))
    {
        return Err(format!(
            "secret `{missing}` is not set for job `{}`",
            job.spec.name
        ));
    }

    let context = RunContext {
        job: job.spec.name.clone(),
        run_number: run.number as u64,
        branch: run.branch.clone(),
        sha: run.sha.clone(),
        event: run.event,
        agent: config.name.clone(),
    };
    let outputs = scratch
        .path()
        .join("outputs")
        .join(task_dir_name(&task.name));
    let labels = vec![("kiln.server-task".into(), task.id.to_string())];
    let spec = task_spec(
        &task.spec,
        &context,
        secrets,
        &[],
        Arc::new(source),
        outputs.clone(),
        labels,
    );

    let cancel = CancellationToken::new();
    let (sender, receiver) = mpsc::unbounded_channel();
    let uploader = tokio::spawn(upload_events(
        state.clone(),
        task.id,
        config.name.clone(),
        receiver,
    ));
    let keeper = tokio::spawn(keep_lease(
        state.clone(),
        task.id,
        config.name.clone(),
        config.lease,
        cancel.clone(),
    ));
    let events: Arc<dyn TaskEvents> = Arc::new(ChannelEvents(sender));
    let outcome = config.executor.run(&spec, events, cancel.clone()).await;
    keeper.abort();
    // The executor dropped its events; the uploader drains what is left.
    let _ = uploader.await;

    let mut notes = Vec::new();
    if let Err(e) = results::store_artifacts(
        state,
        job.id,
        run.number,
        task.id,
        &outputs,
        &outcome.artifacts,
    )
    .await
    {
        notes.push(e);
    }
    if let Err(e) = results::store_junit(state, task.id, &outputs, &outcome.reports).await {
        notes.push(format!("JUnit: {e}"));
    }
    if let Err(e) = results::finalize_console(state, job.id, run.number, task.id).await {
        notes.push(e);
    }
    for note in &notes {
        tracing::warn!("task {}: {note}", task.id);
    }
    let status = if cancel.is_cancelled() && outcome.status == kiln_store::Status::Cancelled {
        kiln_store::Status::Cancelled
    } else {
        outcome.status
    };
    Ok(TaskResult {
        status,
        reason: outcome.error,
        now: Utc::now(),
    })
}

async fn keep_lease<D: Database>(
    state: AppState<D>,
    task_id: Id,
    holder: String,
    lease: Duration,
    cancel: CancellationToken,
) {
    let renew_every = lease / 3;
    let mut last_renewal = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(CANCEL_POLL).await;
        match state.db.get_task(task_id).await {
            Ok(Some(task)) if task.cancel_requested || task.lease_expires_at.is_none() => {
                cancel.cancel();
                return;
            }
            Ok(None) => {
                cancel.cancel();
                return;
            }
            _ => {}
        }
        if last_renewal.elapsed() >= renew_every {
            last_renewal = tokio::time::Instant::now();
            let until = Utc::now() + chrono::Duration::from_std(lease).unwrap_or_default();
            if let Ok(false) = state.db.renew_lease(task_id, &holder, until).await {
                // Someone else holds the task now: stop working on it.
                cancel.cancel();
                return;
            }
        }
    }
}

enum Event {
    Log(Vec<u8>),
    Step(StepRow),
}

/// Forwards executor events into a channel; uploading happens elsewhere so
/// the executor never waits on the database.
struct ChannelEvents(mpsc::UnboundedSender<Event>);

impl TaskEvents for ChannelEvents {
    fn log(&self, stream: LogStream, bytes: &[u8]) {
        let _ = stream;
        let _ = self.0.send(Event::Log(bytes.to_vec()));
    }

    fn step_started(&self, index: usize, name: &str) {
        let _ = self.0.send(Event::Step(StepRow {
            index: index as i64,
            name: name.to_string(),
            status: kiln_store::Status::Running,
            exit_code: None,
            started_at: Some(Utc::now()),
            finished_at: None,
        }));
    }

    fn step_finished(&self, index: usize, result: &StepResult) {
        let _ = self.0.send(Event::Step(StepRow {
            index: index as i64,
            name: result.name.clone(),
            status: result.status,
            exit_code: result.exit_code.map(i64::from),
            started_at: result.started_at,
            finished_at: result.finished_at,
        }));
    }
}

/// Stores events in order: log output as sequenced chunks (consecutive
/// writes merged up to [`MAX_CHUNK`]), step changes as they come.
async fn upload_events<D: Database>(
    state: AppState<D>,
    task_id: Id,
    holder: String,
    mut events: mpsc::UnboundedReceiver<Event>,
) {
    let mut seq = 0i64;
    let mut pending: Vec<u8> = Vec::new();
    let mut next = events.recv().await;
    while let Some(event) = next {
        match event {
            Event::Log(bytes) => pending.extend_from_slice(&bytes),
            Event::Step(step) => {
                flush(&state, task_id, &mut seq, &mut pending).await;
                if let Err(e) = state.db.update_step(task_id, &holder, &step).await {
                    tracing::warn!("recording step {} of task {task_id}: {e}", step.index);
                }
            }
        }
        // Merge whatever else is already waiting, then store it.
        next = match events.try_recv() {
            Ok(event) if pending.len() < MAX_CHUNK => Some(event),
            Ok(event) => {
                flush(&state, task_id, &mut seq, &mut pending).await;
                Some(event)
            }
            Err(_) => {
                flush(&state, task_id, &mut seq, &mut pending).await;
                events.recv().await
            }
        };
    }
    flush(&state, task_id, &mut seq, &mut pending).await;
}

async fn flush<D: Database>(
    state: &AppState<D>,
    task_id: Id,
    seq: &mut i64,
    pending: &mut Vec<u8>,
) {
    if pending.is_empty() {
        return;
    }
    let data = std::mem::take(pending);
    // Appending is idempotent on (task, seq): retrying after a failure is safe.
    for attempt in 0..3 {
        match state.db.append_log(task_id, *seq, &data).await {
            Ok(()) => break,
            Err(e) if attempt < 2 => {
                tracing::debug!("storing log chunk {seq} of task {task_id}, retrying: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => tracing::warn!("losing log chunk {seq} of task {task_id}: {e}"),
        }
    }
    *seq += 1;
}
