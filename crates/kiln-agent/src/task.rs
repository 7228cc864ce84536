//! One assigned task: checkout, executor, and reporting everything back —
//! logs, steps, artifacts, reports and the end — each retried across
//! disconnects until the server acknowledges it.

use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use kiln_exec::context::{RunContext, task_dir_name, task_spec};
use kiln_exec::mask::Masker;
use kiln_exec::{CancellationToken, LogStream, SourceTree, Status, StepResult, TaskEvents};
use kiln_pipeline::{Event, Task};
use kiln_proto::v1::{ArtifactChunk, Assignment, FinishTaskRequest, ReportChunk, StepUpdate};
use tokio::io::AsyncReadExt;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::backoff::Backoff;
use crate::buffer::ChunkBuffer;
use crate::client::{Client, is_lost, is_retriable};
use crate::{LOG_BUDGET, Shared, TaskHandle};

/// Largest log chunk sent in one message.
const MAX_CHUNK: usize = 256 * 1024;
/// Most output sent in one call. A call is acknowledged only at its end, so
/// a part of the budget per call lets the task go on printing into the rest
/// while the server stores the call.
const MAX_CALL: usize = LOG_BUDGET / 4;
/// How long the first of a burst of writes waits for more to merge with.
const LINGER: Duration = Duration::from_millis(20);
/// Artifact and report files are streamed in pieces of this size.
const UPLOAD_CHUNK: usize = 1024 * 1024;

/// The task is no longer this agent's: stop and report nothing.
#[derive(Debug)]
pub(crate) struct Lost;

/// Runs an assigned task to its end and reports it, unless it is lost.
pub(crate) async fn run_task(shared: Arc<Shared>, assignment: Assignment, handle: TaskHandle) {
    let task_id = assignment.task_id;
    // The slot is held until the end is reported, so an agent never has more
    // than `capacity` tasks in hand.
    let permit = tokio::select! {
        permit = shared.permits.clone().acquire_owned() => permit.ok(),
        _ = handle.lost.cancelled() => None,
    };
    if permit.is_none() {
        return;
    }
    tracing::info!(task_id, job = %assignment.job, run = assignment.run_number, "task started");
    let ended = match execute(&shared, &assignment, &handle).await {
        Ok(ended) => ended,
        Err(Lost) => {
            tracing::warn!(task_id, "task is no longer ours; stopped without reporting");
            return;
        }
    };
    let status = ended.status;
    let request = FinishTaskRequest {
        task_id,
        attempt: i64::from(assignment.attempt),
        status: status.as_str().to_string(),
        reason: ended.reason.unwrap_or_default(),
        not_retryable: ended.misconfigured,
    };
    let finished = retry(
        &handle.lost,
        "recording the end of the task",
        task_id,
        || {
            let mut client = shared.client.clone();
            let request = request.clone();
            async move { client.finish_task(request).await.map(|_| ()) }
        },
    )
    .await;
    match finished {
        Ok(Ok(())) => tracing::info!(task_id, %status, "task finished"),
        Ok(Err(status)) => {
            tracing::warn!(task_id, "the server refused the end of the task: {status}")
        }
        Err(Lost) => tracing::warn!(task_id, "task was no longer ours when it ended"),
    }
    drop(permit);
}

/// How a task's attempt ended, as the agent reports it.
struct Ended {
    status: Status,
    reason: Option<String>,
    /// See [`kiln_exec::TaskOutcome::misconfigured`].
    misconfigured: bool,
}

async fn execute(
    shared: &Shared,
    assignment: &Assignment,
    handle: &TaskHandle,
) -> Result<Ended, Lost> {
    let task_id = assignment.task_id;
    let (sender, receiver) = mpsc::unbounded_channel();
    let budget = Arc::new(LogBudget::new(
        LOG_BUDGET,
        shared.config.log_held_peak.clone(),
    ));
    let attempt = i64::from(assignment.attempt);
    let reporter = tokio::spawn(report_events(
        shared.client.clone(),
        (task_id, attempt),
        receiver,
        budget.clone(),
        handle.lost.clone(),
    ));
    let events = Arc::new(ChannelEvents { sender, budget });

    let ended = match prepare(shared, assignment, &events, &handle.cancel).await {
        Ok((spec, scratch)) => {
            let outcome = shared
                .config
                .executor
                .run(&spec, events.clone(), handle.cancel.clone())
                .await;
            if handle.lost.is_cancelled() {
                return Err(Lost);
            }
            // What the agent says and uploads of the task is masked as its
            // output is: file names and reports may hold a secret too.
            let masker = Masker::for_task(&spec);
            let uploads = Uploads {
                task: (task_id, attempt),
                outputs: &spec.outputs,
                masker: &masker,
            };
            for note in upload_results(shared, &uploads, &outcome, &handle.lost).await? {
                let note = masker.mask_str(&note);
                tracing::warn!(task_id, "{note}");
                events.log(LogStream::System, format!("kiln: {note}\n").as_bytes());
            }
            drop(scratch);
            Ended {
                status: outcome.status,
                reason: outcome.error.map(|reason| masker.mask_str(&reason)),
                misconfigured: outcome.misconfigured,
            }
        }
        Err(message) => {
            events.log(LogStream::System, format!("kiln: {message}\n").as_bytes());
            let status = if handle.cancel.is_cancelled() {
                Status::Cancelled
            } else {
                Status::Error
            };
            Ended {
                status,
                reason: Some(message),
                misconfigured: false,
            }
        }
    };
    // The executor is done with the events; closing them lets the reporter
    // send what is left and end, before the task's end is reported.
    drop(events);
    match reporter.await {
        Ok(Ok(())) => Ok(ended),
        Ok(Err(Lost)) => Err(Lost),
        Err(e) => {
            tracing::warn!(task_id, "the log reporter failed: {e}");
            Ok(ended)
        }
    }
}

/// Checks the commit out and builds the executor's spec.
async fn prepare(
    shared: &Shared,
    assignment: &Assignment,
    events: &ChannelEvents,
    cancel: &CancellationToken,
) -> Result<(kiln_exec::TaskSpec, tempfile::TempDir), String> {
    let config = &shared.config;
    let task: Task = assignment
        .task
        .clone()
        .ok_or("the assignment names no task (is the server older than this agent?)")?
        .into();
    let scratch = tempfile::Builder::new()
        .prefix("kiln-agent-")
        .tempdir_in(&config.work_dir)
        .map_err(|e| format!("cannot make a work directory: {e}"))?;
    let checkout = scratch.path().join("src");
    tokio::fs::create_dir_all(&checkout)
        .await
        .map_err(|e| format!("cannot make a work directory: {e}"))?;
    if !assignment.repository.is_empty() && !assignment.sha.is_empty() {
        events.log(
            LogStream::System,
            format!(
                "--- fetching {} at {}\n",
                kiln_git::redact_url(&assignment.repository),
                assignment.sha
            )
            .as_bytes(),
        );
        // Each git command has its own time limit inside `checkout`.
        // A private repository's credentials (from the job's secrets) are
        // for the fetch alone; git gets them from a credential helper.
        let auth = assignment
            .git_credentials
            .as_ref()
            .map(|auth| kiln_git::Credentials::new(&auth.username, &auth.password));
        let fetch = kiln_git::checkout(
            &assignment.repository,
            &assignment.sha,
            &checkout,
            auth.as_ref(),
        );
        tokio::select! {
            fetched = fetch => fetched.map_err(|e| format!("cannot check out the commit: {e}"))?,
            // Dropping the checkout stops git and its helpers.
            _ = cancel.cancelled() => return Err("task was cancelled".to_string()),
        }
    }
    let source = {
        let checkout = checkout.clone();
        tokio::task::spawn_blocking(move || SourceTree::scan(&checkout))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot list the checkout: {e}"))?
    };
    let event: Event = assignment
        .event
        .parse()
        .map_err(|e| format!("{e} in the assignment (is the server newer than this agent?)"))?;
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let context = RunContext {
        job: assignment.job.clone(),
        run_number: assignment.run_number,
        branch: non_empty(&assignment.branch),
        sha: non_empty(&assignment.sha),
        event,
        agent: config.name.clone(),
        pull_request: assignment.pull_request.as_ref().map(|pr| {
            kiln_exec::context::PullRequestContext {
                number: pr.number,
                head_branch: pr.head_branch.clone(),
                base_branch: pr.base_branch.clone(),
            }
        }),
        tag: non_empty(&assignment.tag),
    };
    let secrets = assignment
        .secrets
        .iter()
        .map(|s| (s.name.clone(), s.value.clone()))
        .collect();
    // The agent's own variables only fill in what the pipeline leaves unset.
    let base_env: Vec<(String, String)> = config
        .base_env
        .iter()
        .filter(|(key, _)| !task.env.iter().any(|(k, _)| k == key))
        .cloned()
        .collect();
    let outputs = scratch
        .path()
        .join("outputs")
        .join(task_dir_name(&task.name));
    let labels = vec![
        ("kiln.agent".into(), config.name.clone()),
        ("kiln.agent-task".into(), assignment.task_id.to_string()),
    ];
    let spec = task_spec(
        &task,
        &context,
        secrets,
        &base_env,
        Arc::new(source),
        outputs,
        labels,
    );
    Ok((spec, scratch))
}

/// Where a task's kept files are, and how what leaves of them is masked.
struct Uploads<'a> {
    /// The task's id and the attempt the files are of.
    task: (i64, i64),
    outputs: &'a Path,
    masker: &'a Masker,
}

/// Uploads the kept files — artifacts under their names masked, reports
/// masked — and returns notes on what could not be kept.
async fn upload_results(
    shared: &Shared,
    uploads: &Uploads<'_>,
    outcome: &kiln_exec::TaskOutcome,
    lost: &CancellationToken,
) -> Result<Vec<String>, Lost> {
    let Uploads { task, outputs, .. } = *uploads;
    let task_id = task.0;
    let mut notes = Vec::new();
    let artifacts = outputs.join("artifacts");
    for relative in &outcome.artifacts {
        let name = uploads.masker.mask_str(&relative.to_string_lossy());
        let path = artifacts.join(relative);
        let uploaded = retry(lost, "uploading an artifact", task_id, || {
            upload_artifact(shared.client.clone(), task, path.clone(), name.clone())
        })
        .await?;
        if let Err(e) = uploaded {
            if e.code() == tonic::Code::ResourceExhausted {
                // Past the server's artifact limits: it ended the task and
                // said so in its log; the rest would be refused.
                tracing::warn!(task_id, "the server ended the task: {}", e.message());
                lost.cancel();
                return Err(Lost);
            }
            notes.push(format!("artifact `{name}` was not kept: {}", e.message()));
        }
    }
    let reports = outputs.join("reports");
    for relative in &outcome.reports {
        let name = uploads.masker.mask_str(&relative.to_string_lossy());
        let path = reports.join(relative);
        let uploaded = retry(lost, "uploading a report", task_id, || {
            upload_report(
                shared.client.clone(),
                task,
                path.clone(),
                name.clone(),
                uploads.masker.clone(),
            )
        })
        .await?;
        if let Err(e) = uploaded {
            notes.push(format!("report `{name}` was not kept: {}", e.message()));
        }
    }
    Ok(notes)
}

/// Streams one artifact file to the server.
async fn upload_artifact(
    mut client: Client,
    (task_id, attempt): (i64, i64),
    path: PathBuf,
    name: String,
) -> Result<(), tonic::Status> {
    let (pieces, read_error) = file_pieces(&path).await?;
    let chunks = pieces.map(move |(first, data)| ArtifactChunk {
        task_id,
        attempt,
        path: if first { name.clone() } else { String::new() },
        data,
    });
    tokio::select! {
        result = client.upload_artifact(chunks) => result.map(|_| ()),
        Ok(e) = read_error => Err(tonic::Status::invalid_argument(format!("cannot read: {e}"))),
    }
}

/// Streams one report file to the server, which parses it; masked as the
/// task's output is, since test output in it may show a secret.
async fn upload_report(
    mut client: Client,
    (task_id, attempt): (i64, i64),
    path: PathBuf,
    name: String,
    masker: Masker,
) -> Result<(), tonic::Status> {
    let (pieces, read_error) = file_pieces(&path).await?;
    let chunks = masked(Box::pin(pieces), masker).map(move |(first, data)| ReportChunk {
        task_id,
        attempt,
        kind: if first { "junit".into() } else { String::new() },
        path: if first { name.clone() } else { String::new() },
        data,
    });
    tokio::select! {
        result = client.upload_report(chunks) => result.map(|_| ()),
        Ok(e) = read_error => Err(tonic::Status::invalid_argument(format!("cannot read: {e}"))),
    }
}

/// `pieces` with the secrets `masker` knows masked, even across pieces.
fn masked(
    pieces: Pin<Box<dyn futures_util::Stream<Item = (bool, Vec<u8>)> + Send>>,
    masker: Masker,
) -> impl futures_util::Stream<Item = (bool, Vec<u8>)> + Send + 'static {
    futures_util::stream::unfold(Some((pieces, masker)), |state| async move {
        let (mut pieces, mut masker) = state?;
        match pieces.next().await {
            Some((first, data)) => {
                let shown = masker.push(&data);
                Some(((first, shown), Some((pieces, masker))))
            }
            // What was held back in case it began a secret.
            None => {
                let rest = masker.finish();
                (!rest.is_empty()).then_some(((false, rest), None))
            }
        }
    })
}

/// A file as pieces read as they are sent — never all of it in memory —
/// each told whether it is the first (which names the file, and is sent
/// even for an empty file). A read error is sent on the receiver and stops
/// the stream without ending it: an ended stream would upload a truncated
/// file as if it were whole, so the caller abandons the call instead.
async fn file_pieces(
    path: &Path,
) -> Result<
    (
        impl futures_util::Stream<Item = (bool, Vec<u8>)> + Send + 'static,
        oneshot::Receiver<std::io::Error>,
    ),
    tonic::Status,
> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| tonic::Status::invalid_argument(format!("cannot open: {e}")))?;
    let (failed, read_error) = oneshot::channel::<std::io::Error>();
    struct Reader {
        file: tokio::fs::File,
        first: bool,
        failed: Option<oneshot::Sender<std::io::Error>>,
        done: bool,
    }
    let reader = Reader {
        file,
        first: true,
        failed: Some(failed),
        done: false,
    };
    let pieces = futures_util::stream::unfold(reader, |mut reader| async move {
        if reader.done {
            return None;
        }
        let mut data = vec![0u8; UPLOAD_CHUNK];
        let mut filled = 0;
        while filled < data.len() {
            match reader.file.read(&mut data[filled..]).await {
                Ok(0) => {
                    reader.done = true;
                    break;
                }
                Ok(n) => filled += n,
                Err(e) => {
                    if let Some(failed) = reader.failed.take() {
                        let _ = failed.send(e);
                    }
                    std::future::pending::<()>().await;
                }
            }
        }
        data.truncate(filled);
        let first = std::mem::replace(&mut reader.first, false);
        if filled == 0 && !first {
            return None;
        }
        Some(((first, data), reader))
    });
    Ok((pieces, read_error))
}

/// Calls until the server answers, backing off between failures.
/// `Ok(Err(status))` is a refusal that retrying will not change; `Err(Lost)`
/// means the task is not ours any more.
async fn retry<F, Fut>(
    lost: &CancellationToken,
    what: &str,
    task_id: i64,
    mut call: F,
) -> Result<Result<(), tonic::Status>, Lost>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), tonic::Status>>,
{
    let mut backoff = Backoff::new();
    loop {
        let result = tokio::select! {
            result = call() => result,
            _ = lost.cancelled() => return Err(Lost),
        };
        match result {
            Ok(()) => return Ok(Ok(())),
            Err(status) if is_lost(&status) => {
                lost.cancel();
                return Err(Lost);
            }
            Err(status) if !is_retriable(&status) => return Ok(Err(status)),
            Err(status) => {
                tracing::debug!(task_id, "{what} failed, retrying: {status}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = lost.cancelled() => return Err(Lost),
                }
            }
        }
    }
}

enum Report {
    Log(Vec<u8>),
    Step(StepUpdate),
}

/// Forwards executor events into a channel: the executor never waits on the
/// network, only (in `ready`) for the budget of unacknowledged output.
struct ChannelEvents {
    sender: mpsc::UnboundedSender<Report>,
    budget: Arc<LogBudget>,
}

/// Counts a task's output from the moment it is logged until the server
/// acknowledges it, so that reading the task's output can wait while too
/// much is held.
pub(crate) struct LogBudget {
    limit: usize,
    held: AtomicUsize,
    peak: Arc<AtomicUsize>,
    room: Notify,
    /// Set once nothing will be released any more (the reporter ended):
    /// waiting for room then would hang the task forever.
    closed: AtomicBool,
}

impl LogBudget {
    fn new(limit: usize, peak: Arc<AtomicUsize>) -> Self {
        LogBudget {
            limit,
            held: AtomicUsize::new(0),
            peak,
            room: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    fn take(&self, bytes: usize) {
        let held = self.held.fetch_add(bytes, Ordering::SeqCst) + bytes;
        self.peak.fetch_max(held, Ordering::Relaxed);
    }

    fn release(&self, bytes: usize) {
        if bytes > 0 {
            self.held.fetch_sub(bytes, Ordering::SeqCst);
            self.room.notify_waiters();
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.room.notify_waiters();
    }

    fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    fn has_room(&self) -> bool {
        self.closed.load(Ordering::SeqCst) || self.held.load(Ordering::SeqCst) < self.limit
    }

    async fn ready(&self) {
        while !self.has_room() {
            let notified = self.room.notified();
            tokio::pin!(notified);
            // Registered before checking again, so a release in between is not missed.
            notified.as_mut().enable();
            if self.has_room() {
                return;
            }
            notified.await;
        }
    }
}

/// Closes the budget however the reporter ends, panics included.
struct CloseOnDrop(Arc<LogBudget>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

fn millis(at: Option<chrono::DateTime<chrono::Utc>>) -> Option<i64> {
    at.map(|t| t.timestamp_millis())
}

impl TaskEvents for ChannelEvents {
    fn log(&self, _stream: LogStream, bytes: &[u8]) {
        self.budget.take(bytes.len());
        if self.sender.send(Report::Log(bytes.to_vec())).is_err() {
            self.budget.release(bytes.len());
        }
    }

    fn ready(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.budget.ready())
    }

    fn step_started(&self, index: usize, name: &str) {
        let _ = self.sender.send(Report::Step(StepUpdate {
            task_id: 0,
            attempt: 0,
            index: index as i64,
            name: name.to_string(),
            status: Status::Running.as_str().to_string(),
            exit_code: None,
            started_at_ms: Some(chrono::Utc::now().timestamp_millis()),
            finished_at_ms: None,
        }));
    }

    fn step_finished(&self, index: usize, result: &StepResult) {
        let _ = self.sender.send(Report::Step(StepUpdate {
            task_id: 0,
            attempt: 0,
            index: index as i64,
            name: result.name.clone(),
            status: result.status.as_str().to_string(),
            exit_code: result.exit_code.map(i64::from),
            started_at_ms: millis(result.started_at),
            finished_at_ms: millis(result.finished_at),
        }));
    }
}

/// A step change waiting to be sent, with the `seq` every chunk before which
/// must be acknowledged first.
type PendingStep = (i64, StepUpdate);

/// Sends a task's logs and step changes in order until the events close and
/// everything is acknowledged. Output that arrives while a call is under way
/// is merged into the next chunk. Acknowledged output is released from
/// `budget`.
async fn report_events(
    client: Client,
    (task_id, attempt): (i64, i64),
    mut events: mpsc::UnboundedReceiver<Report>,
    budget: Arc<LogBudget>,
    lost: CancellationToken,
) -> Result<(), Lost> {
    let _close = CloseOnDrop(budget.clone());
    let mut buffer = ChunkBuffer::new(task_id, attempt, MAX_CHUNK);
    let mut steps: VecDeque<PendingStep> = VecDeque::new();
    let mut closed = false;
    let mut backoff = Backoff::new();
    let absorb = |report: Report, buffer: &mut ChunkBuffer, steps: &mut VecDeque<PendingStep>| {
        match report {
            Report::Log(bytes) => buffer.write(&bytes),
            Report::Step(mut step) => {
                // Output before a step change goes out before it.
                buffer.seal();
                let after = buffer.next_seq();
                step.task_id = task_id;
                step.attempt = attempt;
                // A step that started and ended before either was sent needs
                // one call, not two: the later update carries every field.
                match steps.back_mut() {
                    Some((last_after, last)) if last.index == step.index => {
                        *last_after = after;
                        *last = step;
                    }
                    _ => steps.push_back((after, step)),
                }
            }
        }
    };
    loop {
        if !closed && buffer.is_empty() && steps.is_empty() {
            tokio::select! {
                report = events.recv() => match report {
                    Some(report) => {
                        absorb(report, &mut buffer, &mut steps);
                        // Gather what follows for a moment, so a burst goes
                        // out as one call; a task that ends meanwhile does
                        // not wait out the rest of it.
                        let linger = tokio::time::sleep(LINGER);
                        tokio::pin!(linger);
                        // A whole chunk already waiting gains nothing from
                        // waiting for more.
                        while !closed && budget.held() < MAX_CHUNK {
                            tokio::select! {
                                report = events.recv() => match report {
                                    Some(report) => absorb(report, &mut buffer, &mut steps),
                                    None => closed = true,
                                },
                                _ = &mut linger => break,
                            }
                        }
                    }
                    None => closed = true,
                },
                _ = lost.cancelled() => return Err(Lost),
            }
        }
        while !closed {
            match events.try_recv() {
                Ok(report) => absorb(report, &mut buffer, &mut steps),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => closed = true,
            }
        }
        buffer.seal();
        if closed && buffer.is_empty() && steps.is_empty() {
            return Ok(());
        }
        match ship(&client, task_id, &mut buffer, &mut steps, &budget).await {
            Ok(()) => backoff.reset(),
            Err(status) if is_lost(&status) => {
                lost.cancel();
                return Err(Lost);
            }
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                // The task went past a limit of the server's (its log
                // size), which ended the task and says so in its log:
                // sending more is pointless, and so is running on.
                tracing::warn!(task_id, "the server ended the task: {}", status.message());
                lost.cancel();
                return Err(Lost);
            }
            Err(status) if !is_retriable(&status) => {
                tracing::warn!(task_id, "the server refused the task's output: {status}");
                budget.release(buffer.clear());
                steps.clear();
            }
            Err(status) => {
                tracing::debug!(task_id, "sending output failed, retrying: {status}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = lost.cancelled() => return Err(Lost),
                }
            }
        }
    }
}

/// Sends the oldest unacknowledged chunks (up to `MAX_CALL` bytes), then the
/// step changes whose earlier output is all acknowledged.
async fn ship(
    client: &Client,
    task_id: i64,
    buffer: &mut ChunkBuffer,
    steps: &mut VecDeque<PendingStep>,
    budget: &LogBudget,
) -> Result<(), tonic::Status> {
    let batch = buffer.batch(MAX_CALL);
    if let Some(end) = batch.end() {
        let ack = client
            .clone()
            .append_logs(futures_util::stream::iter(batch.into_chunks()))
            .await?
            .into_inner();
        if let Some(through) = ack.stored_through.get(&task_id) {
            budget.release(buffer.ack(*through));
        }
        if !buffer.acked_before(end) {
            return Err(tonic::Status::unavailable(
                "the server did not store every log chunk",
            ));
        }
    }
    while let Some((after, step)) = steps.front() {
        if !buffer.acked_before(*after) {
            break;
        }
        client.clone().update_step(step.clone()).await?;
        steps.pop_front();
    }
    Ok(())
}
