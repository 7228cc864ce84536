//! The gRPC side of the server: the `Agent` service of `agent.proto`
//! (DESIGN.md §5). What to give which agent is the scheduler's
//! ([`crate::scheduler`]); this module speaks the protocol.
//!
//! Every call needs `authorization: Bearer <agent token>`. Calls about a
//! task also name the calling agent in `x-kiln-agent: <name>` (the name its
//! session announced, which is the lease holder) and are refused unless
//! that agent holds the task.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::Stream;
use kiln_proto::v1::agent_server::{Agent, AgentServer};
use kiln_proto::v1::{
    Ack, ArtifactChunk, FinishTaskRequest, HeartbeatRequest, HeartbeatResponse, LogAck, LogChunk,
    ReportChunk, ServerMessage, SessionRequest, StepUpdate,
};
use kiln_store::{
    Artifact, Database, JobId, Status, StepRow, StoreError, TaskHold, TaskId, TaskResult,
    TokenKind, Undelivered,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status as GrpcStatus, Streaming};

use crate::state::AppState;
use crate::{results, scheduler};

/// Metadata key naming the calling agent on task calls.
pub const AGENT_HEADER: &str = "x-kiln-agent";
/// Default lease of a task given to an agent.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);
/// Messages queued for one session before sends fail (and leases expire).
const SESSION_BUFFER: usize = 256;
/// Pieces of an artifact in flight to the blob store, per upload.
const UPLOAD_BUFFER: usize = 8;

/// Serves the `Agent` service on `listener` until `shutdown`.
pub async fn serve<D: Database>(
    state: AppState<D>,
    listener: tokio::net::TcpListener,
    tls: Option<tonic::transport::ServerTlsConfig>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let service = AgentService {
        state,
        shutdown: shutdown.clone(),
        verified: std::sync::Mutex::new(HashMap::new()),
    };
    // No Nagle: assignments and cancels are small and must not wait.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let stop = shutdown.clone();
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let result = builder
        // Finds agents that vanished without closing their connection, so
        // their session ends and they stop being offered work.
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(AgentServer::new(service))
        .serve_with_incoming_shutdown(incoming, async move { stop.cancelled().await })
        .await;
    shutdown.cancel();
    result.map_err(Into::into)
}

struct AgentService<D> {
    state: AppState<D>,
    /// Ends open session streams, so a graceful shutdown does not wait for agents.
    shutdown: CancellationToken,
    /// Hashes of agent tokens found valid, and when: an agent makes several
    /// calls per task, and each would otherwise be a database read.
    verified: std::sync::Mutex<HashMap<String, Instant>>,
}

/// How long a verified agent token is trusted without asking the database
/// again. Tokens cannot be revoked yet; when they can, this bounds how long
/// a revoked token keeps working on a server that did not revoke it.
const VERIFIED_FOR: Duration = Duration::from_secs(10);

fn store_status(e: StoreError) -> GrpcStatus {
    match e {
        StoreError::NotFound(what) => GrpcStatus::not_found(format!("{what} not found")),
        StoreError::Conflict(why) => GrpcStatus::failed_precondition(why),
        StoreError::Backend(why) => {
            tracing::error!("database failed during an agent call: {why}");
            GrpcStatus::unavailable("the server's database failed; retry")
        }
    }
}

fn denied(agent: &str, task_id: TaskId) -> GrpcStatus {
    GrpcStatus::permission_denied(format!("agent {agent} does not hold task {task_id}"))
}

fn millis(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.and_then(DateTime::from_timestamp_millis)
}

fn parse_status(text: &str) -> Result<Status, GrpcStatus> {
    text.parse()
        .map_err(|e: kiln_pipeline::UnknownName| GrpcStatus::invalid_argument(e.to_string()))
}

/// Where a task's results go in the blob store.
/// Where a held task's uploads go: its job, its run's number and the
/// attempt the agent runs.
struct Place {
    job_id: JobId,
    run: i64,
    attempt: i64,
}

impl<D: Database> AgentService<D> {
    /// Checks `authorization: Bearer <agent token>`.
    async fn authenticate<T>(&self, request: &Request<T>) -> Result<(), GrpcStatus> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                GrpcStatus::unauthenticated("calls need `authorization: Bearer <agent token>`")
            })?;
        let hash = kiln_crypto::hash_token(token);
        {
            let verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            if verified
                .get(&hash)
                .is_some_and(|at| at.elapsed() < VERIFIED_FOR)
            {
                return Ok(());
            }
        }
        let info = self
            .state
            .db
            .find_token(&hash)
            .await
            .map_err(store_status)?
            .ok_or_else(|| GrpcStatus::unauthenticated("unknown or revoked token"))?;
        if info.kind != TokenKind::Agent {
            return Err(GrpcStatus::permission_denied(
                "a user token cannot act as an agent; create an agent token",
            ));
        }
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        verified.retain(|_, at| at.elapsed() < VERIFIED_FOR);
        verified.insert(hash, Instant::now());
        Ok(())
    }

    /// Authenticates a task call and returns the agent it names.
    async fn agent_of<T>(&self, request: &Request<T>) -> Result<String, GrpcStatus> {
        self.authenticate(request).await?;
        request
            .metadata()
            .get(AGENT_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(str::to_string)
            .ok_or_else(|| {
                GrpcStatus::invalid_argument(format!(
                    "task calls need `{AGENT_HEADER}: <agent name>` metadata"
                ))
            })
    }

    /// The task, if `agent` holds it (running, with `agent` as lease holder).
    async fn held(&self, agent: &str, task_id: TaskId) -> Result<TaskHold, GrpcStatus> {
        let holds = self
            .state
            .db
            .task_holds(&[task_id])
            .await
            .map_err(store_status)?;
        match holds.into_iter().next() {
            Some(task) if task.held_by(agent) => Ok(task),
            _ => Err(denied(agent, task_id)),
        }
    }

    async fn place(&self, task: &TaskHold) -> Result<Place, GrpcStatus> {
        let both = scheduler::run_and_job(&self.state, task.run_id)
            .await
            .map_err(store_status)?
            .ok_or_else(|| GrpcStatus::not_found("the task's run or job is gone"))?;
        Ok(Place {
            job_id: both.1.id,
            run: both.0.number,
            attempt: task.attempt,
        })
    }
}

/// Removes a session from the registry when its stream is dropped (the
/// agent went away, or the server ends the stream).
struct SessionGuard<D: Database> {
    state: AppState<D>,
    name: String,
    session: u64,
}

impl<D: Database> Drop for SessionGuard<D> {
    fn drop(&mut self) {
        tracing::info!("agent {} disconnected", self.name);
        self.state.agents.disconnect(&self.name, self.session);
    }
}

type SessionStream = Pin<Box<dyn Stream<Item = Result<ServerMessage, GrpcStatus>> + Send>>;

/// An artifact file being streamed to the blob store.
struct FileUpload {
    task_id: TaskId,
    attempt: i64,
    path: String,
    key: String,
    sender: mpsc::Sender<Result<Bytes, std::io::Error>>,
    upload: tokio::task::JoinHandle<Result<u64, kiln_blob::BlobError>>,
}

impl FileUpload {
    fn start(
        blobs: std::sync::Arc<kiln_blob::BlobStore>,
        task_id: TaskId,
        attempt: i64,
        path: String,
        key: String,
    ) -> Self {
        let (sender, receiver) = mpsc::channel(UPLOAD_BUFFER);
        let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|item| (item, receiver))
        });
        let blob_key = key.clone();
        let upload = tokio::spawn(async move { blobs.put_stream(&blob_key, stream).await });
        FileUpload {
            task_id,
            attempt,
            path,
            key,
            sender,
            upload,
        }
    }

    /// Ends the file and waits until the blob is stored; returns its size.
    async fn finish(self) -> Result<u64, GrpcStatus> {
        drop(self.sender);
        match self.upload.await {
            Ok(Ok(size)) => Ok(size),
            Ok(Err(e)) => {
                tracing::warn!("storing artifact {} failed: {e}", self.path);
                Err(GrpcStatus::unavailable(format!(
                    "storing artifact `{}` failed; retry",
                    self.path
                )))
            }
            Err(e) => Err(GrpcStatus::internal(format!("artifact upload failed: {e}"))),
        }
    }

    /// Abandons the file: the blob store keeps nothing of it.
    async fn abort(self) {
        let _ = self
            .sender
            .send(Err(std::io::Error::other("the upload was abandoned")))
            .await;
        drop(self.sender);
        let _ = self.upload.await;
    }
}

#[tonic::async_trait]
impl<D: Database> Agent for AgentService<D> {
    type SessionStream = SessionStream;

    async fn session(
        &self,
        request: Request<SessionRequest>,
    ) -> Result<Response<Self::SessionStream>, GrpcStatus> {
        self.authenticate(&request).await?;
        let hello = request.into_inner();
        let name = hello.name.trim().to_string();
        if name.is_empty() {
            return Err(GrpcStatus::invalid_argument(
                "the session needs an agent name",
            ));
        }
        if hello.capacity == 0 {
            return Err(GrpcStatus::invalid_argument("capacity must be at least 1"));
        }
        // Assignments that never reached it (sent into a session it had
        // already left, or lost with a server that stopped) go back to the
        // queue now rather than when their lease runs out. Before the new
        // session is registered, so nothing sent on it can be taken back.
        let still_running: Vec<TaskId> = hello
            .running_task_ids
            .iter()
            .map(|&id| TaskId(id))
            .collect();
        scheduler::requeue_undelivered(&self.state, &name, Undelivered::AllBut(&still_running))
            .await
            .map_err(store_status)?;
        // Tasks it still runs from an earlier session stay its own only if
        // the database agrees; the rest are reported lost by its heartbeat.
        let running = self
            .state
            .db
            .task_holds(&still_running)
            .await
            .map_err(store_status)?
            .into_iter()
            .filter(|task| task.held_by(&name))
            .map(|task| (task.id, task.name))
            .collect();
        let announce = scheduler::registry::Announce {
            labels: hello.labels,
            capacity: hello.capacity,
            executors: hello.executors,
            cpus: if hello.cpus.is_finite() {
                hello.cpus
            } else {
                0.0
            },
            memory_bytes: hello.memory_bytes,
            draining: hello.draining,
        };
        tracing::info!(
            "agent {name} connected: labels {:?}, capacity {}, executors {:?}",
            announce.labels,
            announce.capacity,
            announce.executors
        );
        let (sender, receiver) = mpsc::channel(SESSION_BUFFER);
        let (session, stranded) = self.state.agents.connect(&name, announce, running, sender);
        // Sent to the session this one replaced after the look above.
        scheduler::requeue_undelivered(&self.state, &name, Undelivered::These(&stranded))
            .await
            .map_err(store_status)?;
        let guard = SessionGuard {
            state: self.state.clone(),
            name,
            session,
        };
        let shutdown = self.shutdown.clone();
        let stream = futures_util::stream::unfold(
            (receiver, guard, shutdown),
            |(mut receiver, guard, shutdown)| async move {
                let next = tokio::select! {
                    message = receiver.recv() => message,
                    _ = shutdown.cancelled() => None,
                };
                next.map(|message| (message, (receiver, guard, shutdown)))
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, GrpcStatus> {
        let agent = self.agent_of(&request).await?;
        let beat = request.into_inner();
        let until =
            Utc::now() + chrono::Duration::from_std(self.state.agents.lease).unwrap_or_default();
        let mut answer = HeartbeatResponse::default();
        let mut held = Vec::new();
        for task_id in beat.task_ids.into_iter().map(TaskId) {
            if !self
                .state
                .db
                .renew_lease(task_id, &agent, until)
                .await
                .map_err(store_status)?
            {
                answer.lost_task_ids.push(task_id.0);
                continue;
            }
            held.push(task_id);
        }
        answer.cancel_task_ids = self
            .state
            .db
            .task_holds(&held)
            .await
            .map_err(store_status)?
            .into_iter()
            .filter(|task| task.cancel_requested)
            .map(|task| task.id.0)
            .collect();
        self.state.agents.heartbeat(&agent, beat.draining, &held);
        Ok(Response::new(answer))
    }

    async fn append_logs(
        &self,
        request: Request<Streaming<LogChunk>>,
    ) -> Result<Response<LogAck>, GrpcStatus> {
        let agent = self.agent_of(&request).await?;
        let mut chunks = request.into_inner();
        let mut ack = LogAck::default();
        while let Some(chunk) = chunks.message().await? {
            if chunk.seq < 0 {
                return Err(GrpcStatus::invalid_argument(
                    "log sequence numbers start at 0",
                ));
            }
            // The store checks the holder with each chunk.
            if !self
                .state
                .db
                .append_log(TaskId(chunk.task_id), &agent, chunk.seq, &chunk.data)
                .await
                .map_err(store_status)?
            {
                return Err(denied(&agent, TaskId(chunk.task_id)));
            }
            let through = ack.stored_through.entry(chunk.task_id).or_insert(chunk.seq);
            *through = (*through).max(chunk.seq);
        }
        Ok(Response::new(ack))
    }

    async fn update_step(&self, request: Request<StepUpdate>) -> Result<Response<Ack>, GrpcStatus> {
        let agent = self.agent_of(&request).await?;
        let update = request.into_inner();
        // `update_step` checks the holder in its own transaction.
        let step = StepRow {
            index: update.index,
            name: update.name,
            status: parse_status(&update.status)?,
            exit_code: update.exit_code,
            started_at: millis(update.started_at_ms),
            finished_at: millis(update.finished_at_ms),
        };
        if !self
            .state
            .db
            .update_step(TaskId(update.task_id), &agent, &step)
            .await
            .map_err(store_status)?
        {
            return Err(denied(&agent, TaskId(update.task_id)));
        }
        Ok(Response::new(Ack {}))
    }

    async fn upload_artifact(
        &self,
        request: Request<Streaming<ArtifactChunk>>,
    ) -> Result<Response<Ack>, GrpcStatus> {
        let agent = self.agent_of(&request).await?;
        let mut chunks = request.into_inner();
        let mut places: HashMap<TaskId, Place> = HashMap::new();
        let mut current: Option<FileUpload> = None;
        let result: Result<(), GrpcStatus> = async {
            while let Some(chunk) = chunks.message().await? {
                let task_id = TaskId(chunk.task_id);
                let starts_file = match &current {
                    Some(file) => {
                        (!chunk.path.is_empty() && chunk.path != file.path)
                            || task_id != file.task_id
                    }
                    None => true,
                };
                if starts_file {
                    if let Some(file) = current.take() {
                        self.store_artifact(file).await?;
                    }
                    if chunk.path.is_empty() {
                        return Err(GrpcStatus::invalid_argument(
                            "the first chunk of a file must name its path",
                        ));
                    }
                    // The holder is checked once per task and call, like logs.
                    let place = match places.entry(task_id) {
                        Entry::Occupied(entry) => entry.into_mut(),
                        Entry::Vacant(entry) => {
                            let task = self.held(&agent, task_id).await?;
                            entry.insert(self.place(&task).await?)
                        }
                    };
                    let key = results::artifact_key(
                        place.job_id,
                        place.run,
                        task_id,
                        place.attempt,
                        &chunk.path,
                    )
                    .map_err(GrpcStatus::invalid_argument)?;
                    current = Some(FileUpload::start(
                        self.state.blobs.clone(),
                        task_id,
                        place.attempt,
                        chunk.path.clone(),
                        key,
                    ));
                }
                if !chunk.data.is_empty()
                    && let Some(file) = &current
                    && file.sender.send(Ok(Bytes::from(chunk.data))).await.is_err()
                {
                    // The blob store gave up; finishing says why.
                    if let Some(file) = current.take() {
                        file.finish().await?;
                    }
                    return Err(GrpcStatus::unavailable("storing an artifact failed; retry"));
                }
            }
            if let Some(file) = current.take() {
                self.store_artifact(file).await?;
            }
            Ok(())
        }
        .await;
        if let Err(status) = result {
            if let Some(file) = current.take() {
                file.abort().await;
            }
            return Err(status);
        }
        Ok(Response::new(Ack {}))
    }

    async fn upload_report(
        &self,
        request: Request<Streaming<ReportChunk>>,
    ) -> Result<Response<Ack>, GrpcStatus> {
        let agent = self.agent_of(&request).await?;
        let mut chunks = request.into_inner();
        let mut first = chunks
            .message()
            .await?
            .ok_or_else(|| GrpcStatus::invalid_argument("a report upload sent nothing"))?;
        let task = self.held(&agent, TaskId(first.task_id)).await?;
        if first.kind != "junit" {
            return Err(GrpcStatus::invalid_argument(format!(
                "report kind `{}` is not known; only `junit` is",
                first.kind
            )));
        }
        let limit = self.state.max_report_size;
        let path = first.path.clone();
        let too_big = |size: usize| {
            GrpcStatus::resource_exhausted(format!(
                "{path} is {size} bytes or more, over this server's limit of {limit} bytes for \
                 a report (its --max-report-size)"
            ))
        };
        let mut content = std::mem::take(&mut first.data);
        while let Some(chunk) = chunks.message().await? {
            if chunk.task_id != first.task_id {
                return Err(GrpcStatus::invalid_argument(
                    "a report upload is of one task",
                ));
            }
            let size = content.len() + chunk.data.len();
            if size as u64 > limit {
                return Err(too_big(size));
            }
            content.extend_from_slice(&chunk.data);
        }
        if content.len() as u64 > limit {
            return Err(too_big(content.len()));
        }
        let report = kiln_junit::parse(&content).map_err(|e| {
            GrpcStatus::invalid_argument(format!("{path} is not valid JUnit XML: {e}"))
        })?;
        // Read, merge and write under one lock so two files uploaded at once
        // both end up in the report.
        let _merging = self.state.report_lock.lock().await;
        let stored = self
            .state
            .db
            .get_report(task.id, task.attempt, "junit")
            .await
            .map_err(store_status)?;
        let mut reports = Vec::new();
        if let Some(json) = stored {
            match serde_json::from_str::<kiln_junit::Report>(&json) {
                Ok(old) => reports.push(old),
                Err(e) => tracing::warn!(
                    "the stored JUnit report of task {} does not read ({e}); replacing it",
                    task.id
                ),
            }
        }
        reports.push(report);
        let merged = kiln_junit::merge(reports);
        let json = serde_json::to_string(&merged)
            .map_err(|e| GrpcStatus::internal(format!("encoding the report: {e}")))?;
        self.state
            .db
            .put_report(task.id, task.attempt, "junit", &json)
            .await
            .map_err(store_status)?;
        Ok(Response::new(Ack {}))
    }

    async fn finish_task(
        &self,
        request: Request<FinishTaskRequest>,
    ) -> Result<Response<Ack>, GrpcStatus> {
        let agent = self.agent_of(&request).await?;
        let finish = request.into_inner();
        let task = self.held(&agent, TaskId(finish.task_id)).await?;
        let status = parse_status(&finish.status)?;
        if !status.is_terminal() || status == Status::Skipped {
            return Err(GrpcStatus::invalid_argument(format!(
                "a task cannot finish `{status}`; use success, failure, timed_out, cancelled or error"
            )));
        }
        let place = self.place(&task).await?;
        let result = TaskResult {
            status,
            reason: Some(finish.reason).filter(|r| !r.is_empty()),
            retry: if finish.not_retryable {
                kiln_store::queue::Retry::Pointless
            } else {
                kiln_store::queue::Retry::Allowed
            },
            now: Utc::now(),
        };
        // What follows runs on its own: if the agent dies mid-call, the
        // handler is dropped, and a task whose end was committed must still
        // leave the registry, wake the dispatcher and get its console blob.
        // The agent is answered once the end is committed; filing the
        // console (read the chunks, write the blob) goes on after, off the
        // path of the next task (until it is done the console is served
        // from the chunks).
        let (answer, answered) = tokio::sync::oneshot::channel();
        tokio::spawn(record_finish(
            self.state.clone(),
            agent,
            task,
            place,
            result,
            answer,
        ));
        answered
            .await
            .map_err(|_| GrpcStatus::internal("recording the end of the task failed"))??;
        Ok(Response::new(Ack {}))
    }
}

/// Ends `task` for `agent` in the store and answers with the outcome; then
/// releases it and files its console.
async fn record_finish<D: Database>(
    state: AppState<D>,
    agent: String,
    task: TaskHold,
    place: Place,
    result: TaskResult,
    answer: tokio::sync::oneshot::Sender<Result<(), GrpcStatus>>,
) {
    let committed = match state.db.finish_task(task.id, &agent, &result).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(denied(&agent, task.id)),
        Err(e) => Err(store_status(e)),
    };
    if committed.is_err() {
        let _ = answer.send(committed);
        return;
    }
    tracing::info!("agent {agent} finished task {} {}", task.id, result.status);
    state.metrics.task_finished(task.started_at, result.now);
    // Out of the registry before the agent hears back: until then the
    // dispatcher would take the ended task for one to stop, and tell the
    // agent so after its next assignment was due.
    state.agents.release(&agent, task.id);
    let _ = answer.send(committed);
    state.work.notify_waiters();
    // Every attempt keeps its own log: the one that ended is filed, whether
    // the task ended or is retried.
    if let Err(e) =
        results::finalize_console(&state, place.job_id, place.run, task.id, place.attempt).await
    {
        tracing::warn!("task {}: {e}", task.id);
    }
}

impl<D: Database> AgentService<D> {
    async fn store_artifact(&self, file: FileUpload) -> Result<(), GrpcStatus> {
        let (task_id, attempt, path, key) = (
            file.task_id,
            file.attempt,
            file.path.clone(),
            file.key.clone(),
        );
        let size = file.finish().await?;
        let artifact = Artifact {
            content_type: results::content_type(&path).into(),
            path,
            size: size as i64,
            blob_key: key,
        };
        self.state
            .db
            .add_artifact(task_id, attempt, &artifact)
            .await
            .map_err(store_status)
    }
}
