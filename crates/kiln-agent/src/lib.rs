//! The Kiln agent (DESIGN.md §5): connects out to a server over gRPC, takes
//! task assignments from its session stream, runs them with an executor, and
//! reports logs, steps, files and results back — surviving server restarts
//! without stopping what runs, and draining gracefully on shutdown.

mod backoff;
pub mod buffer;
mod client;
mod task;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use kiln_exec::{CancellationToken, Executor};
use kiln_proto::v1::{
    HeartbeatRequest, RegisterRequest, ServerMessage, SessionRequest, TaskAttempt, server_message,
};
use tokio::sync::{Notify, Semaphore, watch};
use tonic::Code;

use crate::backoff::Backoff;
pub use crate::buffer::ChunkBuffer;
use crate::client::Client;

/// Lease assumed until an assignment names one, for the heartbeat period.
const DEFAULT_LEASE_SECONDS: u32 = 15;

/// How long an idle, draining agent tries to tell the server it leaves
/// before it exits without having done so.
const DRAIN_FAREWELL: Duration = Duration::from_secs(5);

/// Most output of one task the agent holds before the server acknowledges
/// it; beyond this the executor stops reading the task's output and the task
/// blocks on its pipe, as under a slow terminal. Large enough to keep several
/// calls' worth in flight, so a fast server is never left waiting for the
/// agent; small enough that a flooding task, or a long disconnect, costs the
/// agent a few MB per task rather than the whole log. Reading stops once the
/// budget is reached, so it can be passed by one read per output stream.
pub const LOG_BUDGET: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid server address `{0}`: {1}")]
    InvalidServer(String, String),
    #[error("the agent {0} cannot be sent as gRPC metadata (it must be printable ASCII)")]
    InvalidMetadata(&'static str),
    #[error("the server refused the agent: {0}")]
    Refused(String),
    #[error(
        "{0} answered, but not as Kiln's agent service (it answered {1}): --server must be the \
         server's gRPC address (its --grpc-listen, port 9090 by default), not the HTTP API's \
         (port 8080 by default)"
    )]
    NotAgentService(String, String),
    #[error("cannot create the work directory {0}: {1}")]
    WorkDir(PathBuf, std::io::Error),
}

/// A change in the agent's link to its server, told once per change.
#[derive(Debug, Clone, Copy)]
pub enum LinkEvent<'a> {
    /// A session is established.
    Connected,
    /// The server could not be reached, or the session ended; the agent
    /// retries with backoff, and running tasks go on.
    Lost { reason: &'a str },
}

/// Called when the agent's link to its server changes.
pub type OnLink = Arc<dyn Fn(&AgentConfig, LinkEvent<'_>) + Send + Sync>;

pub struct AgentConfig {
    /// The server's gRPC address, e.g. `http://ci.example.com:9090`.
    pub server: String,
    pub token: String,
    /// Unique per agent: the lease holder of its tasks.
    pub name: String,
    pub labels: Vec<String>,
    /// Most tasks run at once.
    pub capacity: usize,
    pub executor: Arc<dyn Executor>,
    /// Checkouts and task outputs live here while a task runs.
    pub work_dir: PathBuf,
    pub connect_timeout: Duration,
    /// Variables every task gets unless its pipeline sets them (e.g. `PATH`
    /// for the process executor, which does not pass the agent's own
    /// environment — and with it the agent token — to tasks).
    pub base_env: Vec<(String, String)>,
    pub on_link: Option<OnLink>,
    /// The most output bytes one task has held unacknowledged at once (in
    /// the agent's queue and chunk buffer); kept up to date as the agent
    /// runs, for tests and diagnostics. It stays near [`LOG_BUDGET`].
    pub log_held_peak: Arc<AtomicUsize>,
    /// PEM roots trusted for an `https://` server instead of the system's.
    pub ca_cert: Option<Vec<u8>>,
    /// PEM certificate and key presented to a server that asks for one.
    pub client_identity: Option<(Vec<u8>, Vec<u8>)>,
    /// Send the token over `http://` to an address that is not loopback.
    pub insecure: bool,
    /// Reach the server through this process's memory instead of `server`:
    /// the agent inside a server, which then needs no port anyone else on
    /// the machine could connect to.
    pub in_process: Option<InProcessDial>,
}

/// Hands the server one end of a new in-memory connection (the server's
/// [`tokio::io::DuplexStream`] incoming side); the agent keeps the other.
pub type InProcessDial = tokio::sync::mpsc::Sender<tokio::io::DuplexStream>;

impl AgentConfig {
    pub fn new(
        server: impl Into<String>,
        token: impl Into<String>,
        name: impl Into<String>,
        executor: Arc<dyn Executor>,
        work_dir: impl Into<PathBuf>,
    ) -> Self {
        AgentConfig {
            server: server.into(),
            token: token.into(),
            name: name.into(),
            labels: Vec::new(),
            capacity: 2,
            executor,
            work_dir: work_dir.into(),
            connect_timeout: Duration::from_secs(5),
            base_env: Vec::new(),
            on_link: None,
            log_held_peak: Arc::new(AtomicUsize::new(0)),
            ca_cert: None,
            client_identity: None,
            insecure: false,
            in_process: None,
        }
    }
}

/// How the agent reaches one of its tasks.
#[derive(Clone)]
pub(crate) struct TaskHandle {
    /// Which attempt of the task this is; a task retried onto this agent
    /// comes back with a higher one.
    attempt: u32,
    /// Stops the executor; the task still reports its end (`cancelled`).
    cancel: CancellationToken,
    /// The task is not ours any more: stop everything, report nothing.
    /// Cancelling it cancels `cancel` too.
    lost: CancellationToken,
}

impl TaskHandle {
    fn new(attempt: u32) -> Self {
        let lost = CancellationToken::new();
        TaskHandle {
            attempt,
            cancel: lost.child_token(),
            lost,
        }
    }
}

pub(crate) struct Shared {
    config: AgentConfig,
    client: Client,
    /// Tasks in hand, from assignment until their end is acknowledged.
    tasks: watch::Sender<HashMap<i64, TaskHandle>>,
    draining: AtomicBool,
    lease_seconds: AtomicU32,
    /// Woken when an assignment brings a different lease, so heartbeats
    /// keep pace with it from the first task on.
    lease_changed: Notify,
    permits: Arc<Semaphore>,
    /// Tells this process's sessions from another's under the same name.
    instance: String,
}

impl Shared {
    /// The tasks in hand, with the attempt of each, by id.
    fn running(&self) -> Vec<TaskAttempt> {
        let mut running: Vec<TaskAttempt> = self
            .tasks
            .borrow()
            .iter()
            .map(|(&task_id, handle)| TaskAttempt {
                task_id,
                attempt: i64::from(handle.attempt),
            })
            .collect();
        running.sort_unstable_by_key(|task| task.task_id);
        running
    }

    fn task(&self, task_id: i64) -> Option<TaskHandle> {
        self.tasks.borrow().get(&task_id).cloned()
    }
}

/// Takes the task out of the agent's hands when its runner ends, however it ends.
struct Registration {
    shared: Arc<Shared>,
    task_id: i64,
    attempt: u32,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.shared.tasks.send_modify(|tasks| {
            // A newer attempt of the same task may have taken the slot.
            if tasks
                .get(&self.task_id)
                .is_some_and(|h| h.attempt == self.attempt)
            {
                tasks.remove(&self.task_id);
            }
        });
    }
}

/// Runs the agent until `shutdown` is cancelled and the tasks in hand have
/// finished and been reported. Losing the server never stops running tasks:
/// the agent reconnects and resends what was not acknowledged.
pub async fn run_agent(
    mut config: AgentConfig,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    std::fs::create_dir_all(&config.work_dir)
        .map_err(|e| AgentError::WorkDir(config.work_dir.clone(), e))?;
    match own_token(&config, &shutdown).await? {
        Some(token) => config.token = token,
        None if shutdown.is_cancelled() => return Ok(()),
        None => {}
    }
    let client = client::client(&config)?;
    let permits = Arc::new(Semaphore::new(config.capacity.max(1)));
    let shared = Arc::new(Shared {
        config,
        client,
        tasks: watch::Sender::new(HashMap::new()),
        draining: AtomicBool::new(false),
        lease_seconds: AtomicU32::new(DEFAULT_LEASE_SECONDS),
        lease_changed: Notify::new(),
        permits,
        instance: format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        ),
    });
    let stop_heartbeats = CancellationToken::new();
    let heartbeats = tokio::spawn(heartbeat_loop(shared.clone(), stop_heartbeats.clone()));
    let result = session_loop(&shared, &shutdown).await;
    stop_heartbeats.cancel();
    let _ = heartbeats.await;
    result
}

/// Where an agent keeps the token a registration gave it.
pub const TOKEN_FILE: &str = "agent.token";

/// The agent's own token: the one a registration gave it before (kept in
/// its work dir), or one it registers for now with `config.token` (a
/// registration token; kept owner-only). `None` when `config.token` is its
/// own already, or the server could not say (the session then tells why).
async fn own_token(
    config: &AgentConfig,
    shutdown: &CancellationToken,
) -> Result<Option<String>, AgentError> {
    let path = config.work_dir.join(TOKEN_FILE);
    if let Ok(kept) = std::fs::read_to_string(&path)
        && !kept.trim().is_empty()
    {
        return Ok(Some(kept.trim().to_string()));
    }
    let mut client = client::client(config)?;
    let request = RegisterRequest {
        name: config.name.clone(),
        labels: config.labels.clone(),
        capacity: config.capacity.max(1) as u32,
    };
    let mut backoff = backoff::Backoff::new();
    loop {
        let answer = tokio::select! {
            answer = client.register(request.clone()) => answer,
            _ = shutdown.cancelled() => return Ok(None),
        };
        match answer {
            Ok(answer) => {
                let token = answer.into_inner().token;
                if token.is_empty() {
                    return Ok(None);
                }
                write_private(&path, &token)
                    .map_err(|e| AgentError::WorkDir(config.work_dir.clone(), e))?;
                tracing::info!(name = %config.name, "registered; the agent's own token is in {}", path.display());
                return Ok(Some(token));
            }
            Err(status)
                if matches!(
                    status.code(),
                    Code::Unauthenticated
                        | Code::PermissionDenied
                        | Code::InvalidArgument
                        | Code::AlreadyExists
                ) =>
            {
                return Err(AgentError::Refused(status.message().to_string()));
            }
            Err(status) if status.code() == Code::Unavailable => {
                tracing::debug!("registering failed, retrying: {status}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = shutdown.cancelled() => return Ok(None),
                }
            }
            // Something else answered (the HTTP port?): the session's
            // checks say what.
            Err(_) => return Ok(None),
        }
    }
}

/// Writes a new file only its owner can read, replacing `path` whole.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

/// Whether the last session attempt worked, so a change is logged once
/// rather than every retry.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Link {
    Unknown,
    Up,
    Down,
}

async fn session_loop(
    shared: &Arc<Shared>,
    shutdown: &CancellationToken,
) -> Result<(), AgentError> {
    let config = &shared.config;
    let mut backoff = Backoff::new();
    let mut link = Link::Unknown;
    let mut idle = shared.tasks.subscribe();
    loop {
        if shutdown.is_cancelled() && !shared.draining.swap(true, Ordering::SeqCst) {
            tracing::info!(
                running = shared.running().len(),
                "draining: taking no new work, finishing the running tasks"
            );
        }
        // Even with nothing running, a draining agent opens one more
        // session before it exits: that tells the server what it runs, and
        // the server puts back in the queue what it sent that never arrived.
        let draining = shared.draining.load(Ordering::SeqCst);
        let request = SessionRequest {
            name: config.name.clone(),
            labels: config.labels.clone(),
            capacity: config.capacity.max(1) as u32,
            cpus: std::thread::available_parallelism()
                .map(|n| n.get() as f64)
                .unwrap_or(1.0),
            memory_bytes: memory_bytes(),
            executors: vec![config.executor.kind().to_string()],
            running: shared.running(),
            draining,
            instance: shared.instance.clone(),
        };
        let mut client = shared.client.clone();
        let opened = tokio::select! {
            opened = client.session(request) => opened,
            // Re-open at once with `draining` set, so the server sends no more work.
            _ = shutdown.cancelled(), if !draining => continue,
            // Idle, it does not wait long for a server that does not answer.
            _ = async {
                wait_idle(&mut idle).await;
                tokio::time::sleep(DRAIN_FAREWELL).await;
            }, if draining => return Ok(()),
        };
        let failure = match opened {
            Ok(response) if !is_grpc(response.metadata()) => {
                // Something answered HTTP/2 that is not the agent service:
                // most likely the server's HTTP API port. Retrying cannot help.
                let answered = describe_answer(response.metadata());
                if shared.tasks.borrow().is_empty() {
                    return Err(AgentError::NotAgentService(config.server.clone(), answered));
                }
                Some(format!("not Kiln's agent service (it answered {answered})"))
            }
            Ok(response) => {
                backoff.reset();
                if link != Link::Up {
                    tracing::info!(server = %config.server, draining, "connected");
                    if let Some(on_link) = &config.on_link {
                        on_link(config, LinkEvent::Connected);
                    }
                    link = Link::Up;
                }
                let mut stream = response.into_inner();
                loop {
                    tokio::select! {
                        message = stream.message() => match message {
                            Ok(Some(message)) => handle_message(shared, message),
                            Ok(None) => break Some("the server ended the session".to_string()),
                            Err(status) => break Some(client::describe(&status)),
                        },
                        _ = shutdown.cancelled(), if !draining => break None,
                        _ = wait_idle(&mut idle), if draining => return Ok(()),
                    }
                }
            }
            Err(status) => {
                if matches!(
                    status.code(),
                    Code::Unauthenticated | Code::PermissionDenied | Code::InvalidArgument
                ) && shared.tasks.borrow().is_empty()
                {
                    return Err(AgentError::Refused(status.message().to_string()));
                }
                Some(client::describe(&status))
            }
        };
        let Some(reason) = failure else {
            continue;
        };
        if link != Link::Down {
            tracing::info!(server = %config.server, "server unreachable ({reason}); reconnecting, running tasks continue");
            if let Some(on_link) = &config.on_link {
                on_link(config, LinkEvent::Lost { reason: &reason });
            }
            link = Link::Down;
        } else {
            tracing::debug!(server = %config.server, "reconnecting failed: {reason}");
        }
        let draining = shared.draining.load(Ordering::SeqCst);
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = shutdown.cancelled(), if !draining => {}
            _ = wait_idle(&mut idle), if draining => return Ok(()),
        }
    }
}

/// Whether a response comes from a gRPC service (tonic does not check).
fn is_grpc(metadata: &tonic::metadata::MetadataMap) -> bool {
    metadata
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc"))
}

/// What a non-gRPC answer was, for the error message.
fn describe_answer(metadata: &tonic::metadata::MetadataMap) -> String {
    match metadata
        .get("content-type")
        .and_then(|value| value.to_str().ok())
    {
        Some(kind) => format!("with content type `{kind}`"),
        None => "with no content type".to_string(),
    }
}

async fn wait_idle(idle: &mut watch::Receiver<HashMap<i64, TaskHandle>>) {
    // The guard `wait_for` returns is dropped at once: it must not be held.
    let _ = idle.wait_for(|tasks| tasks.is_empty()).await.map(|_| ());
}

fn handle_message(shared: &Arc<Shared>, message: ServerMessage) {
    match message.kind {
        Some(server_message::Kind::Assignment(assignment)) => {
            let task_id = assignment.task_id;
            if assignment.lease_seconds > 0
                && shared
                    .lease_seconds
                    .swap(assignment.lease_seconds, Ordering::SeqCst)
                    != assignment.lease_seconds
            {
                shared.lease_changed.notify_one();
            }
            let handle = TaskHandle::new(assignment.attempt);
            let mut fresh = true;
            shared
                .tasks
                .send_modify(|tasks| match tasks.entry(task_id) {
                    Entry::Vacant(slot) => {
                        slot.insert(handle.clone());
                    }
                    Entry::Occupied(slot) if slot.get().attempt == assignment.attempt => {
                        fresh = false
                    }
                    Entry::Occupied(mut slot) => {
                        // The server retried the task (its lease ran out) and
                        // gave it back to us: the old attempt is not ours any more.
                        slot.get().lost.cancel();
                        slot.insert(handle.clone());
                    }
                });
            if !fresh {
                // A repeat after a reconnect: the task already runs here.
                tracing::debug!(task_id, "assignment of a task already in hand");
                return;
            }
            let registration = Registration {
                shared: shared.clone(),
                task_id,
                attempt: handle.attempt,
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let _registration = registration;
                task::run_task(shared, assignment, handle).await;
            });
        }
        Some(server_message::Kind::Cancel(cancel)) => match shared.task(cancel.task_id) {
            Some(handle) => {
                tracing::info!(task_id = cancel.task_id, reason = %cancel.reason, "cancelling task");
                handle.cancel.cancel();
            }
            None => tracing::debug!(task_id = cancel.task_id, "cancel of a task not in hand"),
        },
        None => tracing::debug!("empty message from the server"),
    }
}

/// Renews leases every third of the lease, and stops tasks the server says
/// are lost or cancelled.
async fn heartbeat_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let mut last = tokio::time::Instant::now();
    loop {
        let lease = shared.lease_seconds.load(Ordering::SeqCst).max(1);
        let every = Duration::from_secs(u64::from(lease)) / 3;
        tokio::select! {
            _ = tokio::time::sleep_until(last + every) => {}
            // A shorter lease may make the next heartbeat due already.
            _ = shared.lease_changed.notified() => continue,
            _ = stop.cancelled() => return,
        }
        last = tokio::time::Instant::now();
        let request = HeartbeatRequest {
            tasks: shared.running(),
            draining: shared.draining.load(Ordering::SeqCst),
        };
        let mut client = shared.client.clone();
        let answer = tokio::select! {
            answer = client.heartbeat(request) => answer,
            _ = stop.cancelled() => return,
        };
        match answer {
            Ok(answer) => {
                let answer = answer.into_inner();
                for task_id in answer.lost_task_ids {
                    if let Some(handle) = shared.task(task_id) {
                        tracing::warn!(
                            task_id,
                            "the server says the task is no longer ours; stopping it"
                        );
                        handle.lost.cancel();
                    }
                }
                for task_id in answer.cancel_task_ids {
                    if let Some(handle) = shared.task(task_id) {
                        tracing::info!(task_id, "cancelling task");
                        handle.cancel.cancel();
                    }
                }
            }
            Err(status) => tracing::debug!("heartbeat failed: {status}"),
        }
    }
}

/// Total memory of the machine, from /proc/meminfo; 0 when unknown.
fn memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| parse_meminfo(&text))
        .unwrap_or(0)
}

fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line.split_whitespace().skip(1);
    let amount: u64 = words.next()?.parse().ok()?;
    let unit = match words.next() {
        Some("kB") => 1024,
        Some("mB") | Some("MB") => 1024 * 1024,
        _ => 1,
    };
    Some(amount * unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_total_is_read_in_bytes() {
        let text = "MemTotal:       16318480 kB\nMemFree:         1000 kB\n";
        assert_eq!(parse_meminfo(text), Some(16318480 * 1024));
        assert_eq!(parse_meminfo("nothing"), None);
    }
}
