use std::sync::Arc;

use kiln_blob::BlobStore;
use kiln_crypto::SecretKey;
use kiln_git::GitCache;
use tokio::sync::Notify;

use crate::metrics::Metrics;
use crate::run_cache::RunCache;
use crate::scheduler::Registry;

/// What every handler can reach. Cheap to clone.
pub struct AppState<D> {
    pub db: D,
    pub blobs: Arc<BlobStore>,
    pub key: Arc<SecretKey>,
    pub git: Arc<GitCache>,
    pub metrics: Arc<Metrics>,
    /// Woken when tasks become queued, so idle workers start at once.
    pub work: Arc<Notify>,
    /// Agents connected over gRPC to this process.
    pub agents: Arc<Registry>,
    pub runs: Arc<RunCache>,
    /// Serializes JUnit report merges (read, merge, write) of this process.
    pub report_lock: Arc<tokio::sync::Mutex<()>>,
    /// The largest report file an agent may upload, in bytes.
    pub max_report_size: u64,
    /// What one task may store (log and artifact bytes).
    pub limits: crate::Limits,
    /// The bearer token `/metrics` asks for (its hash), if any.
    pub metrics_token: Option<Arc<str>>,
    /// Agent tokens this process verified lately.
    pub agent_tokens: Arc<crate::grpc::VerifiedTokens>,
    /// The server terminates TLS itself: session cookies get `Secure`.
    pub tls: bool,
    /// The name of the agent this process runs itself, if any: it cannot
    /// be removed while the server runs.
    pub embedded_agent: Option<Arc<str>>,
    /// The change feed of `GET /api/v1/events`.
    pub events: Arc<crate::events::EventHub>,
    /// Line indexes of logs, for the task page's log view.
    pub log_indexes: Arc<crate::logs::LogIndexes>,
    /// Woken when a webhook queued triggers (`crate::webhooks`).
    pub hooks: Arc<Notify>,
    /// `--public-url`: where people reach the server, for the links in
    /// commit statuses (`crate::statuses`); none without it.
    pub public_url: Option<Arc<str>>,
}

impl<D> AppState<D> {
    /// Makes `/metrics` answer only `Authorization: Bearer <token>`.
    pub fn require_metrics_token(&mut self, token: &str) {
        self.metrics_token = Some(kiln_crypto::hash_token(token.trim()).into());
    }
}

impl<D: Clone> Clone for AppState<D> {
    fn clone(&self) -> Self {
        AppState {
            db: self.db.clone(),
            blobs: self.blobs.clone(),
            key: self.key.clone(),
            git: self.git.clone(),
            metrics: self.metrics.clone(),
            work: self.work.clone(),
            agents: self.agents.clone(),
            runs: self.runs.clone(),
            report_lock: self.report_lock.clone(),
            max_report_size: self.max_report_size,
            limits: self.limits,
            metrics_token: self.metrics_token.clone(),
            agent_tokens: self.agent_tokens.clone(),
            tls: self.tls,
            embedded_agent: self.embedded_agent.clone(),
            events: self.events.clone(),
            log_indexes: self.log_indexes.clone(),
            hooks: self.hooks.clone(),
            public_url: self.public_url.clone(),
        }
    }
}
