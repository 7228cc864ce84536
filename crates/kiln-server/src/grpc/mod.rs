//! The gRPC side of the server: the `Agent` service of `agent.proto`
//! (DESIGN.md §5). What to give which agent is the scheduler's
//! ([`crate::scheduler`]); this module speaks the protocol.
//!
//! Every call needs `authorization: Bearer <agent token>`. Calls about a
//! task also name the calling agent in `x-kiln-agent: <name>` (the name its
//! session announced, which is the lease holder) and the attempt they are
//! about, and are refused unless that agent holds the task in that attempt.

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
    RegisterRequest, RegisterResponse, ReportChunk, ServerMessage, SessionRequest, StepUpdate,
};
use kiln_store::{
    Artifact, Database, Holder, JobId, LogAppend, Status, StepRow, StoreError, TaskHold, TaskId,
    TaskResult, TokenKind, Undelivered,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;
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
/// The `seq` of the note a limit leaves at the end of a log: past any
/// chunk an agent sends, so it stays last, and one `seq` so however many
/// calls cross the limit at once, the note is stored once.
pub const LIMIT_NOTE_SEQ: i64 = 1 << 62;

/// Serves the `Agent` service on `listener` until `shutdown`.
pub async fn serve<D: Database>(
    state: AppState<D>,
    listener: tokio::net::TcpListener,
    tls: Option<tonic::transport::ServerTlsConfig>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // No Nagle: assignments and cancels are small and must not wait.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    serve_incoming(state, incoming, tls, shutdown).await
}

/// Serves the agent inside this process over the in-memory connections it
/// dials (see `kiln_agent::InProcessDial`): no port, so nobody else on the
/// machine can reach what only that agent should.
pub async fn serve_in_process<D: Database>(
    state: AppState<D>,
    connections: mpsc::Receiver<tokio::io::DuplexStream>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let incoming = futures_util::stream::unfold(connections, |mut connections| async move {
        let connection = connections.recv().await?;
        Some((Ok::<_, std::io::Error>(InProcess(connection)), connections))
    });
    serve_incoming(state, Box::pin(incoming), None, shutdown).await
}

async fn serve_incoming<D, I, IO>(
    state: AppState<D>,
    incoming: I,
    tls: Option<tonic::transport::ServerTlsConfig>,
    shutdown: CancellationToken,
) -> anyhow::Result<()>
where
    D: Database,
    I: Stream<Item = Result<IO, std::io::Error>> + Send + 'static,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Connected + Unpin + Send + 'static,
    IO::ConnectInfo: Clone + Send + Sync + 'static,
{
    let service = AgentService {
        state,
        shutdown: shutdown.clone(),
    };
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

/// The server's end of an in-memory connection.
struct InProcess(tokio::io::DuplexStream);

impl Connected for InProcess {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl tokio::io::AsyncRead for InProcess {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for InProcess {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

struct AgentService<D> {
    state: AppState<D>,
    /// Ends open session streams, so a graceful shutdown does not wait for agents.
    shutdown: CancellationToken,
}

/// The agent a call is from, as its token says.
#[derive(Debug, Clone)]
pub struct AgentCaller {
    /// The agent's name: the only one it may use.
    pub name: String,
    pub kind: TokenKind,
    /// The labels it may offer; `None`: any.
    pub labels: Option<Vec<String>>,
    /// The most tasks it may take at once; `None`: [`MAX_CAPACITY`].
    pub max_capacity: Option<i64>,
}

/// The most tasks one agent may take at once, whatever it announces, when
/// its token says no less.
pub const MAX_CAPACITY: i64 = 64;

/// Agent tokens found valid, and when: an agent makes several calls per
/// task, and each would otherwise be a database read. Revoking an agent on
/// this server forgets its tokens at once; another server sharing the
/// database trusts them for [`VERIFIED_FOR`] at most.
#[derive(Default)]
pub struct VerifiedTokens(std::sync::Mutex<HashMap<String, (Instant, AgentCaller)>>);

impl VerifiedTokens {
    fn get(&self, hash: &str) -> Option<AgentCaller> {
        let verified = self.0.lock().unwrap_or_else(|e| e.into_inner());
        verified
            .get(hash)
            .filter(|(at, _)| at.elapsed() < VERIFIED_FOR)
            .map(|(_, caller)| caller.clone())
    }

    fn insert(&self, hash: String, caller: AgentCaller) {
        let mut verified = self.0.lock().unwrap_or_else(|e| e.into_inner());
        verified.retain(|_, (at, _)| at.elapsed() < VERIFIED_FOR);
        verified.insert(hash, (Instant::now(), caller));
    }

    /// Forgets the tokens of agent `name` (it was revoked).
    pub fn forget(&self, name: &str) {
        let mut verified = self.0.lock().unwrap_or_else(|e| e.into_inner());
        verified.retain(|_, (_, caller)| caller.name != name);
    }
}

/// How long a verified agent token is trusted without asking the database
/// again.
const VERIFIED_FOR: Duration = Duration::from_secs(10);

fn registration_only() -> GrpcStatus {
    GrpcStatus::permission_denied(
        "a registration token only registers: call Register, then use the agent's own token",
    )
}

/// Refuses a list of running tasks longer than any agent may run: each is
/// a database call, so the list is bounded.
fn check_task_list(length: usize) -> Result<(), GrpcStatus> {
    if length as i64 > MAX_CAPACITY {
        return Err(GrpcStatus::invalid_argument(format!(
            "{length} tasks listed; an agent runs at most {MAX_CAPACITY}"
        )));
    }
    Ok(())
}

/// Refuses labels or a capacity beyond what the agent's token grants.
fn check_grant(caller: &AgentCaller, labels: &[String], capacity: u32) -> Result<(), GrpcStatus> {
    if let Some(granted) = &caller.labels {
        let extra: Vec<&str> = labels
            .iter()
            .filter(|label| !granted.contains(label))
            .map(String::as_str)
            .collect();
        if !extra.is_empty() {
            return Err(GrpcStatus::permission_denied(format!(
                "agent `{}` may not offer the labels {extra:?}: its token grants {granted:?}",
                caller.name
            )));
        }
    }
    let most = caller
        .max_capacity
        .unwrap_or(MAX_CAPACITY)
        .min(MAX_CAPACITY);
    if i64::from(capacity) > most {
        return Err(GrpcStatus::permission_denied(format!(
            "agent `{}` may take at most {most} tasks at once, not {capacity}",
            caller.name
        )));
    }
    Ok(())
}

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

fn denied(holder: &Holder<'_>, task_id: TaskId) -> GrpcStatus {
    GrpcStatus::permission_denied(format!(
        "agent {} does not hold attempt {} of task {task_id}",
        holder.agent, holder.attempt
    ))
}

/// The holder a task call speaks for: its agent and the attempt it names.
fn holder(agent: &str, attempt: i64) -> Result<Holder<'_>, GrpcStatus> {
    if attempt < 1 {
        return Err(GrpcStatus::invalid_argument(
            "calls about a task must carry the attempt it was assigned as (1 or more)",
        ));
    }
    Ok(Holder::new(agent, attempt))
}

fn millis(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.and_then(DateTime::from_timestamp_millis)
}

fn parse_status(text: &str) -> Result<Status, GrpcStatus> {
    text.parse()
        .map_err(|e: kiln_pipeline::UnknownName| GrpcStatus::invalid_argument(e.to_string()))
}

/// Where a held task's uploads go: its job, its run's number and the
/// attempt the agent runs.
struct Place {
    job_id: JobId,
    /// The job's name and the run's id, for the task's events.
    job: String,
    run_id: kiln_store::RunId,
    run: i64,
    attempt: i64,
    /// The task's `artifacts: expire-in`.
    expire_in: Option<Duration>,
}

impl<D: Database> AgentService<D> {
    /// Checks `authorization: Bearer <token>`: an agent's or a
    /// registration token, not revoked.
    async fn authenticate<T>(&self, request: &Request<T>) -> Result<AgentCaller, GrpcStatus> {
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
        if let Some(caller) = self.state.agent_tokens.get(&hash) {
            return Ok(caller);
        }
        let found = self
            .state
            .db
            .lookup_token(&hash)
            .await
            .map_err(store_status)?
            .ok_or_else(|| GrpcStatus::unauthenticated("unknown token"))?;
        if found.revoked_at.is_some() {
            return Err(GrpcStatus::unauthenticated(format!(
                "the token of agent `{}` was revoked",
                found.token.name
            )));
        }
        if found.token.kind == TokenKind::User {
            return Err(GrpcStatus::permission_denied(
                "a user token cannot act as an agent; create an agent token",
            ));
        }
        let caller = AgentCaller {
            name: found.token.name,
            kind: found.token.kind,
            labels: found.token.agent_labels,
            max_capacity: found.token.max_capacity,
        };
        self.state.agent_tokens.insert(hash, caller.clone());
        Ok(caller)
    }

    /// Authenticates a call of an agent's own (not a registration) and
    /// returns its name; an `x-kiln-agent` naming another agent is refused.
    async fn agent_of<T>(&self, request: &Request<T>) -> Result<String, GrpcStatus> {
        let caller = self.authenticate(request).await?;
        if caller.kind != TokenKind::Agent {
            return Err(registration_only());
        }
        let named = request
            .metadata()
            .get(AGENT_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|name| !name.is_empty());
        if let Some(named) = named
            && named != caller.name
        {
            return Err(GrpcStatus::permission_denied(format!(
                "this token is agent `{}`'s; it cannot call as `{named}`",
                caller.name
            )));
        }
        Ok(caller.name)
    }

    /// The task, if `holder` holds it (running, in that attempt, under
    /// that agent's lease).
    async fn held(&self, holder: &Holder<'_>, task_id: TaskId) -> Result<TaskHold, GrpcStatus> {
        let holds = self
            .state
            .db
            .task_holds(&[task_id])
            .await
            .map_err(store_status)?;
        match holds.into_iter().next() {
            Some(task) if task.held_by(holder) => Ok(task),
            _ => Err(denied(holder, task_id)),
        }
    }

    async fn place(&self, task: &TaskHold) -> Result<Place, GrpcStatus> {
        let both = scheduler::run_and_job(&self.state, task.run_id)
            .await
            .map_err(store_status)?
            .ok_or_else(|| GrpcStatus::not_found("the task's run or job is gone"))?;
        Ok(Place {
            job_id: both.1.id,
            job: both.0.job.clone(),
            run_id: both.0.id,
            run: both.0.number,
            attempt: task.attempt,
            expire_in: None,
        })
    }

    /// What one task attempt may go on storing, or why it may not.
    fn over_artifact_limit(&self, file: &FileUpload) -> Option<(&'static str, String)> {
        let limits = &self.state.limits;
        if file.received > limits.max_artifact_file_bytes {
            return Some((
                "max-artifact-file-bytes",
                format!(
                    "artifact `{}` is over the limit of {} per file (--max-artifact-file-bytes); \
                     it was not kept and the task failed",
                    file.path,
                    crate::human_bytes(limits.max_artifact_file_bytes)
                ),
            ));
        }
        if file.kept_before + file.received > limits.max_artifact_bytes {
            return Some((
                "max-artifact-bytes",
                format!(
                    "artifact `{}` takes the task's artifacts over the limit of {} per task \
                     (--max-artifact-bytes); it was not kept and the task failed",
                    file.path,
                    crate::human_bytes(limits.max_artifact_bytes)
                ),
            ));
        }
        None
    }

    /// Ends the attempt `holder` holds `failure` for going past `limit`
    /// (its flag's name): the log says why at its end, and the agent is
    /// answered `RESOURCE_EXHAUSTED`, on which it stops the task. The
    /// server does it rather than trusting the agent to.
    async fn end_over_limit(
        &self,
        holder: &Holder<'_>,
        task_id: TaskId,
        limit: &'static str,
        message: String,
        new_line: bool,
    ) -> GrpcStatus {
        let note = format!("{}kiln: {message}\n", if new_line { "\n" } else { "" });
        if let Err(e) = self
            .state
            .db
            .append_log_within(task_id, holder, LIMIT_NOTE_SEQ, note.as_bytes(), u64::MAX)
            .await
        {
            tracing::warn!("task {task_id}: noting the {limit} limit in its log: {e}");
        }
        // Another call may have ended it first: then there is nothing left to do.
        if let Ok(task) = self.held(holder, task_id).await
            && let Ok(place) = self.place(&task).await
        {
            tracing::info!("task {task_id}: {message}");
            let result = TaskResult {
                status: Status::Failure,
                reason: Some(message.clone()),
                // The same task would print or keep as much again.
                retry: kiln_store::queue::Retry::Pointless,
                now: Utc::now(),
            };
            let (answer, answered) = tokio::sync::oneshot::channel();
            tokio::spawn(record_finish(
                self.state.clone(),
                holder.agent.to_string(),
                task,
                place,
                result,
                answer,
            ));
            if let Ok(Ok(())) = answered.await {
                self.state.metrics.limit_hit(limit);
            }
        }
        GrpcStatus::resource_exhausted(message)
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
    /// Bytes of the file received so far.
    received: u64,
    /// Bytes of the attempt's other artifacts, kept before this file.
    kept_before: u64,
    /// When the file expires (the task's `artifacts: expire-in`).
    expires_at: Option<DateTime<Utc>>,
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
            received: 0,
            kept_before: 0,
            expires_at: None,
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
        let caller = self.authenticate(&request).await?;
        if caller.kind != TokenKind::Agent {
            return Err(registration_only());
        }
        let hello = request.into_inner();
        let name = caller.name.clone();
        if hello.name.trim() != name {
            return Err(GrpcStatus::permission_denied(format!(
                "this token is agent `{name}`'s; it cannot open a session as `{}`",
                hello.name.trim()
            )));
        }
        if hello.capacity == 0 {
            return Err(GrpcStatus::invalid_argument("capacity must be at least 1"));
        }
        check_grant(&caller, &hello.labels, hello.capacity)?;
        check_task_list(hello.running.len())?;
        // Assignments that never reached it (sent into a session it had
        // already left, or lost with a server that stopped) go back to the
        // queue now rather than when their lease runs out. Before the new
        // session is registered, so nothing sent on it can be taken back.
        let still_running: Vec<TaskId> = hello.running.iter().map(|t| TaskId(t.task_id)).collect();
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
            .filter(|task| {
                hello.running.iter().any(|running| {
                    running.task_id == task.id.0
                        && task.held_by(&Holder::new(&name, running.attempt))
                })
            })
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
            instance: hello.instance,
        };
        tracing::info!(
            "agent {name} connected: labels {:?}, capacity {}, executors {:?}",
            announce.labels,
            announce.capacity,
            announce.executors
        );
        let (sender, receiver) = mpsc::channel(SESSION_BUFFER);
        let (session, stranded) = self
            .state
            .agents
            .connect(&name, announce, running, sender)
            .map_err(GrpcStatus::already_exists)?;
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

    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, GrpcStatus> {
        let caller = self.authenticate(&request).await?;
        let asked = request.into_inner();
        let name = asked.name.trim().to_string();
        if caller.kind == TokenKind::Agent {
            // An agent with its own token: nothing to register.
            if caller.name != name {
                return Err(GrpcStatus::permission_denied(format!(
                    "this token is agent `{}`'s; it cannot register `{name}`",
                    caller.name
                )));
            }
            return Ok(Response::new(RegisterResponse::default()));
        }
        if kiln_api::fields::TokenName::new(name.clone()).is_err() {
            return Err(GrpcStatus::invalid_argument(format!(
                "`{name}` is not a valid agent name: letters, digits, `-`, `_` and `.`"
            )));
        }
        let capacity = i64::from(asked.capacity.max(1));
        if capacity > MAX_CAPACITY {
            return Err(GrpcStatus::invalid_argument(format!(
                "an agent may take at most {MAX_CAPACITY} tasks at once, not {capacity}"
            )));
        }
        let token = kiln_crypto::new_token("kiln_agent_");
        let hash = kiln_crypto::hash_token(&token);
        let new = kiln_store::NewAgentToken {
            hash: &hash,
            name: &name,
            labels: Some(&asked.labels),
            max_capacity: Some(capacity),
        };
        match self.state.db.insert_agent_token(&new, Utc::now()).await {
            Ok(_) => {}
            Err(StoreError::Conflict(_)) => {
                return Err(GrpcStatus::already_exists(format!(
                    "agent `{name}` is registered already: it uses the token kept in its work \
                     directory; to start over, an admin removes it (DELETE /api/v1/agents/{name})"
                )));
            }
            Err(e) => return Err(store_status(e)),
        }
        tracing::info!(
            "agent {name} registered, labels {:?}, capacity {capacity}",
            asked.labels
        );
        let detail = Some(format!("labels {:?}, capacity {capacity}", asked.labels));
        crate::audit::append(
            &self.state,
            &format!("agent:{name}"),
            None,
            "agent.register",
            format!("agent/{name}"),
            detail,
        )
        .await;
        Ok(Response::new(RegisterResponse { token }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, GrpcStatus> {
        let agent = self.agent_of(&request).await?;
        let beat = request.into_inner();
        check_task_list(beat.tasks.len())?;
        let until =
            Utc::now() + chrono::Duration::from_std(self.state.agents.lease).unwrap_or_default();
        let mut answer = HeartbeatResponse::default();
        let mut held = Vec::new();
        for task in beat.tasks {
            let task_id = TaskId(task.task_id);
            if !self
                .state
                .db
                .renew_lease(task_id, &holder(&agent, task.attempt)?, until)
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
            // The store checks the holder with each chunk, and counts the
            // attempt's bytes against the limit.
            let holder = holder(&agent, chunk.attempt)?;
            let task_id = TaskId(chunk.task_id);
            let limit = self.state.limits.max_log_bytes;
            match self
                .state
                .db
                .append_log_within(task_id, &holder, chunk.seq, &chunk.data, limit)
                .await
                .map_err(store_status)?
            {
                LogAppend::Stored => {}
                LogAppend::NotHeld => return Err(denied(&holder, task_id)),
                LogAppend::OverLimit { kept } => {
                    // The note starts a line of its own.
                    let mid_line = kept > 0 && chunk.data[kept - 1] != b'\n';
                    let message = format!(
                        "log limit of {} reached; the rest of this task's output was dropped \
                         (--max-log-bytes)",
                        crate::human_bytes(limit)
                    );
                    return Err(self
                        .end_over_limit(&holder, task_id, "max-log-bytes", message, mid_line)
                        .await);
                }
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
        let holder = holder(&agent, update.attempt)?;
        let task_id = TaskId(update.task_id);
        if !self
            .state
            .db
            .update_step(task_id, &holder, &step)
            .await
            .map_err(store_status)?
        {
            return Err(denied(&holder, task_id));
        }
        if !self.state.events.step(task_id, &step) {
            crate::events::step_of_unknown_task(&self.state, task_id, step);
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
                            let holder = holder(&agent, chunk.attempt)?;
                            let task = self.held(&holder, task_id).await?;
                            let mut place = self.place(&task).await?;
                            place.expire_in = self
                                .state
                                .db
                                .get_task(task_id)
                                .await
                                .map_err(store_status)?
                                .and_then(|row| row.spec.artifacts.expire_in)
                                .map(|expire_in| expire_in.as_std());
                            entry.insert(place)
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
                    // What the attempt kept before, this file's earlier
                    // upload aside (it is replaced), counts towards the
                    // task's limit.
                    let kept_before: u64 = self
                        .state
                        .db
                        .list_artifacts(task_id, place.attempt)
                        .await
                        .map_err(store_status)?
                        .iter()
                        .filter(|artifact| artifact.path != chunk.path)
                        .map(|artifact| u64::try_from(artifact.size).unwrap_or(0))
                        .sum();
                    let mut file = FileUpload::start(
                        self.state.blobs.clone(),
                        task_id,
                        place.attempt,
                        chunk.path.clone(),
                        key,
                    );
                    file.kept_before = kept_before;
                    file.expires_at = place.expire_in.map(|expire_in| {
                        Utc::now() + chrono::Duration::from_std(expire_in).unwrap_or_default()
                    });
                    current = Some(file);
                }
                if let Some(file) = &mut current {
                    file.received += chunk.data.len() as u64;
                    if let Some(message) = self.over_artifact_limit(file) {
                        let (task_id, attempt) = (file.task_id, file.attempt);
                        if let Some(file) = current.take() {
                            file.abort().await;
                        }
                        let holder = holder(&agent, attempt)?;
                        return Err(self
                            .end_over_limit(&holder, task_id, message.0, message.1, true)
                            .await);
                    }
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
        let holder = holder(&agent, first.attempt)?;
        let task = self.held(&holder, TaskId(first.task_id)).await?;
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
        let task = self
            .held(&holder(&agent, finish.attempt)?, TaskId(finish.task_id))
            .await?;
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
    let holder = Holder::new(&agent, task.attempt);
    let committed = match state.db.finish_task(task.id, &holder, &result).await {
        Ok(Some(now)) => {
            // Out of the registry at once: until then the dispatcher would
            // take the ended task for one to stop, and tell the agent so
            // after its next assignment was due.
            state.agents.release(&agent, task.id);
            state.events.task_ended(crate::events::TaskEnd {
                job: &place.job,
                run_id: place.run_id,
                run: place.run,
                task_id: task.id,
                task: &task.name,
                attempt: task.attempt,
                status: now,
                reason: result.reason.as_deref(),
                started_at: task.started_at,
                at: result.now,
            });
            Ok(())
        }
        Ok(None) => Err(denied(&holder, task.id)),
        Err(e) => Err(store_status(e)),
    };
    if committed.is_err() {
        let _ = answer.send(committed);
        return;
    }
    tracing::info!("agent {agent} finished task {} {}", task.id, result.status);
    state.metrics.task_finished(task.started_at, result.now);
    state.metrics.task_ended(result.status);
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
        let (task_id, attempt, path, key, expires_at) = (
            file.task_id,
            file.attempt,
            file.path.clone(),
            file.key.clone(),
            file.expires_at,
        );
        let size = file.finish().await?;
        let artifact = Artifact {
            content_type: results::content_type(&path).into(),
            path,
            size: size as i64,
            blob_key: key,
            expires_at,
        };
        self.state
            .db
            .add_artifact(task_id, attempt, &artifact)
            .await
            .map_err(store_status)
    }
}
