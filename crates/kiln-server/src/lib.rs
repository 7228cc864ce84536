//! `kiln server`: the REST API over the database queue (DESIGN.md §4, §5).
//!
//! The server is generic over [`kiln_store::Database`]; the binary picks
//! SQLite or PostgreSQL. Everything that matters is in the database or the
//! blob store, so a restart loses nothing and several servers may share one
//! PostgreSQL.

pub mod access;
pub mod api;
pub mod audit;
pub mod auth;
pub mod error;
pub mod events;
pub mod grpc;
pub mod logs;
pub mod metrics;
pub mod polling;
pub mod results;
mod run_cache;
pub mod scheduler;
mod secrets;
pub mod state;
pub mod statuses;
pub mod sweeper;
mod tls;
pub mod trigger;
mod ui;
mod views;
pub mod webhooks;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use chrono::Utc;
use kiln_store::{Database, TokenKind};
use tokio_util::sync::CancellationToken;

use crate::state::AppState;
pub use crate::tls::{TlsError, TlsFiles};

/// Where the server keeps what is not in the database.
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `s3://bucket/prefix` for an S3-compatible store; `<data-dir>/blobs` otherwise.
    pub blob_url: Option<String>,
    /// Lease of a task given to a remote agent, renewed by its heartbeats;
    /// an agent silent this long loses its tasks ([`grpc::DEFAULT_LEASE`]).
    pub agent_lease: Duration,
    /// The largest report file (JUnit XML) a task may keep, in bytes
    /// ([`DEFAULT_MAX_REPORT_SIZE`]); a bigger one is refused, and the
    /// task's console says so.
    pub max_report_size: u64,
    /// What one task may leave: log and artifact bytes.
    pub limits: Limits,
}

/// 64 MiB: a JUnit file of several hundred thousand test cases.
pub const DEFAULT_MAX_REPORT_SIZE: u64 = 64 * 1024 * 1024;

/// Bytes one task attempt may store, each enforced by the server as the
/// bytes arrive (agents cannot raise them), so one runaway task cannot fill
/// the database or the blob store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `--max-log-bytes`: its console; past it the task fails.
    pub max_log_bytes: u64,
    /// `--max-artifact-bytes`: all its artifact files together.
    pub max_artifact_bytes: u64,
    /// `--max-artifact-file-bytes`: any one artifact file.
    pub max_artifact_file_bytes: u64,
}

/// 64 MiB of console: far more than a person reads, small enough that
/// thousands of tasks fit a database.
pub const DEFAULT_MAX_LOG_BYTES: u64 = 64 << 20;
/// 1 GiB of artifacts per task.
pub const DEFAULT_MAX_ARTIFACT_BYTES: u64 = 1 << 30;
/// 512 MiB per artifact file.
pub const DEFAULT_MAX_ARTIFACT_FILE_BYTES: u64 = 512 << 20;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_log_bytes: DEFAULT_MAX_LOG_BYTES,
            max_artifact_bytes: DEFAULT_MAX_ARTIFACT_BYTES,
            max_artifact_file_bytes: DEFAULT_MAX_ARTIFACT_FILE_BYTES,
        }
    }
}

/// `bytes` as people write sizes: `64 MiB`, `512 KiB`, or `1000 bytes`
/// when no unit divides it.
pub fn human_bytes(bytes: u64) -> String {
    for (unit, scale) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= scale && bytes.is_multiple_of(scale) {
            return format!("{} {unit}", bytes / scale);
        }
    }
    format!("{bytes} bytes")
}

/// What a server's start found or made, for its start-up lines.
pub struct Bootstrap {
    pub admin_token: AdminToken,
    pub admin_password: AdminPassword,
}

/// Where the password of the user `admin` came from.
pub enum AdminPassword {
    /// Made on this (first) start: shown once.
    Generated(String),
    /// Taken from `KILN_ADMIN_PASSWORD` on this (first) start.
    FromEnvironment,
    /// The user existed already; `KILN_ADMIN_PASSWORD` is not read again.
    Existing,
}

/// Where the admin token came from.
pub enum AdminToken {
    /// Made on this (first) start: shown to the operator this once.
    Generated(String),
    /// Taken from `KILN_ADMIN_TOKEN` on this (first) start.
    FromEnvironment,
    /// Made on an earlier start; `KILN_ADMIN_TOKEN` is not read again.
    Existing,
}

impl Bootstrap {
    /// Whether this is the server's first start on its database.
    pub fn first_start(&self) -> bool {
        !matches!(self.admin_token, AdminToken::Existing)
    }
}

/// Builds the state the handlers share, opening the blob store and the key.
pub async fn app_state<D: Database>(db: D, config: &ServerConfig) -> anyhow::Result<AppState<D>> {
    std::fs::create_dir_all(&config.data_dir)?;
    let key = kiln_crypto::SecretKey::load(&config.data_dir)?;
    let blobs = match &config.blob_url {
        Some(url) => kiln_blob::BlobStore::from_url(url)?,
        None => kiln_blob::BlobStore::local(&config.data_dir.join("blobs"))?,
    };
    let git = kiln_git::GitCache::new(config.data_dir.join("git"));
    let agents = Arc::new(scheduler::Registry::new(config.agent_lease));
    let metrics = Arc::new(metrics::Metrics::default());
    metrics.attach_registry(agents.clone());
    Ok(AppState {
        db,
        blobs: Arc::new(blobs),
        key: Arc::new(key),
        git: Arc::new(git),
        metrics,
        work: Arc::new(tokio::sync::Notify::new()),
        agents,
        runs: Arc::default(),
        report_lock: Arc::default(),
        max_report_size: config.max_report_size,
        limits: config.limits,
        metrics_token: None,
        agent_tokens: Arc::default(),
        // Set by `serve_with_tls`, which knows.
        tls: false,
        embedded_agent: None,
        events: Arc::default(),
        log_indexes: Arc::default(),
        hooks: Arc::default(),
        public_url: None,
    })
}

/// The secrets a server takes from its environment at start-up (which
/// removes them from it, so that no child process inherits them).
#[derive(Debug, Default, Clone)]
pub struct StartSecrets {
    /// `KILN_ADMIN_TOKEN`: the admin token to make on first start.
    pub admin_token: Option<String>,
    /// `KILN_ADMIN_PASSWORD`: the password of the user `admin`, made on
    /// first start.
    pub admin_password: Option<String>,
    /// `KILN_AGENT_TOKEN`: a token agents may share.
    pub agent_token: Option<String>,
    /// `KILN_METRICS_TOKEN`: when set, `/metrics` answers only
    /// `Authorization: Bearer <it>`.
    pub metrics_token: Option<String>,
}

/// On first start, makes the admin token (`secrets.admin_token`, or a new
/// one); registers `secrets.agent_token` as a shared agent token when set.
pub async fn bootstrap<D: Database>(db: &D, secrets: &StartSecrets) -> anyhow::Result<Bootstrap> {
    let admin_password = admin_user(db, secrets.admin_password.as_deref()).await?;
    let admin_token = if db.has_admin_token().await? {
        AdminToken::Existing
    } else {
        let given = secrets.admin_token.as_deref().map(str::trim);
        let (token, admin_token) = match given {
            Some(token) if !token.is_empty() => (token.to_string(), AdminToken::FromEnvironment),
            _ => {
                let token = kiln_crypto::new_token("kiln_admin_");
                (token.clone(), AdminToken::Generated(token))
            }
        };
        db.insert_token(
            &kiln_crypto::hash_token(&token),
            TokenKind::User,
            "admin",
            true,
            Utc::now(),
        )
        .await?;
        admin_token
    };
    // The admin token acts as the user `admin` (and is listed, revoked and
    // audited as its), including one made before users existed.
    if let Some(admin) = db.get_user(ADMIN_USER).await? {
        db.adopt_admin_tokens(admin.id).await?;
    }
    if let Some(token) = &secrets.agent_token
        && !token.trim().is_empty()
    {
        // Shared by agents only to register their own names.
        let hash = kiln_crypto::hash_token(token.trim());
        if db.find_token(&hash).await?.is_none() {
            db.insert_token(&hash, TokenKind::Registration, "shared", false, Utc::now())
                .await?;
        }
    }
    Ok(Bootstrap {
        admin_token,
        admin_password,
    })
}

/// The first user's name.
pub const ADMIN_USER: &str = "admin";

/// Makes the user `admin` when there are no users yet, with `password`
/// (`KILN_ADMIN_PASSWORD`) or a new one.
async fn admin_user<D: Database>(db: &D, password: Option<&str>) -> anyhow::Result<AdminPassword> {
    if !db.list_users().await?.is_empty() {
        return Ok(AdminPassword::Existing);
    }
    let (password, origin) = match password.filter(|p| !p.is_empty()) {
        Some(given) => {
            let checked = kiln_api::fields::Password::new(given)
                .map_err(|why| anyhow::anyhow!("KILN_ADMIN_PASSWORD: {why}"))?;
            (checked.into_inner(), AdminPassword::FromEnvironment)
        }
        None => {
            // 20 characters of base64url: 120 bits.
            let generated: String = kiln_crypto::new_token("").chars().take(20).collect();
            (generated.clone(), AdminPassword::Generated(generated))
        }
    };
    let hash = tokio::task::spawn_blocking(move || kiln_crypto::hash_password(&password)).await?;
    let admin = kiln_store::NewUser {
        name: ADMIN_USER.into(),
        role: kiln_store::UserRole::Admin,
        password_hash: Some(hash),
    };
    match db.create_user(&admin, Utc::now()).await {
        Ok(_) => Ok(origin),
        // Another server sharing the database made it first.
        Err(kiln_store::StoreError::Conflict(_)) => Ok(AdminPassword::Existing),
        Err(e) => Err(e.into()),
    }
}

/// The embedded agent's token, its own as any agent's (bound to `name`):
/// made on first start, kept in the data directory (owner-only), and known
/// to the database only by its hash. A token kept for another name (the
/// agent was renamed, or it predates per-agent tokens) is revoked and
/// replaced.
pub async fn embedded_agent_token<D: Database>(
    db: &D,
    data_dir: &Path,
    name: &str,
) -> anyhow::Result<String> {
    let path = data_dir.join("embedded-agent.token");
    if let Ok(kept) = std::fs::read_to_string(&path) {
        let kept = kept.trim().to_string();
        match db.lookup_token(&kiln_crypto::hash_token(&kept)).await? {
            Some(found)
                if found.token.kind == TokenKind::Agent
                    && found.token.name == name
                    && found.revoked_at.is_none() =>
            {
                return Ok(kept);
            }
            Some(found) => {
                db.revoke_token(found.token.id, Utc::now()).await?;
            }
            None => {}
        }
    }
    // Whatever else was the embedded agent's name goes with it.
    db.revoke_agent_tokens(name, Utc::now()).await?;
    let token = kiln_crypto::new_token("kiln_agent_");
    let hash = kiln_crypto::hash_token(&token);
    let new = kiln_store::NewAgentToken {
        hash: &hash,
        name,
        labels: None,
        max_capacity: None,
    };
    db.insert_agent_token(&new, Utc::now()).await?;
    write_private(&path, &token).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(token)
}

/// Writes `text` to a new file only its owner can read, replacing `path`
/// whole (a crash leaves the old file or the new one).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let temporary = path.with_extension("tmp");
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

/// Serves the API on `listener` and, when given, the agent service on
/// `grpc_listener` with the scheduler that hands its agents tasks, until
/// `shutdown`; with the lease sweeper. Either server failing stops both.
pub async fn serve<D: Database>(
    state: AppState<D>,
    listener: tokio::net::TcpListener,
    grpc_listener: Option<tokio::net::TcpListener>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listeners = Listeners {
        http: listener,
        grpc: grpc_listener,
        in_process: None,
    };
    serve_with_tls(state, listeners, None, shutdown).await
}

/// Where [`serve_with_tls`] listens.
pub struct Listeners {
    pub http: tokio::net::TcpListener,
    pub grpc: Option<tokio::net::TcpListener>,
    /// Connections from the agent inside this process (`kiln up`), which
    /// needs no port, certificate or client certificate of its own.
    pub in_process: Option<tokio::sync::mpsc::Receiver<tokio::io::DuplexStream>>,
}

/// [`serve`], with the API and the agents' port over TLS only when `tls` is
/// given (and session cookies then `Secure`).
pub async fn serve_with_tls<D: Database>(
    mut state: AppState<D>,
    listeners: Listeners,
    tls: Option<TlsFiles>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Checked before anything is served: bad files fail the start.
    let http_tls = tls.as_ref().map(TlsFiles::http_config).transpose()?;
    state.tls = tls.is_some();
    let sweeper = tokio::spawn(sweeper::run_sweeper(state.clone(), shutdown.clone()));
    let refresher = tokio::spawn(events::run_refresher(state.clone(), shutdown.clone()));
    let hooks = tokio::spawn(webhooks::run_worker(state.clone(), shutdown.clone()));
    let statuses = tokio::spawn(statuses::run_sender(state.clone(), shutdown.clone()));
    let poller = tokio::spawn(polling::run_poller(state.clone(), shutdown.clone()));
    let Listeners {
        http: listener,
        grpc: grpc_listener,
        in_process,
    } = listeners;
    let grpc = grpc_listener.map(|listener| {
        let (state, shutdown) = (state.clone(), shutdown.clone());
        let grpc_tls = tls.as_ref().map(TlsFiles::grpc_config);
        tokio::spawn(async move {
            let scheduler =
                tokio::spawn(scheduler::run_dispatcher(state.clone(), shutdown.clone()));
            let local = in_process.map(|connections| {
                tokio::spawn(grpc::serve_in_process(
                    state.clone(),
                    connections,
                    shutdown.clone(),
                ))
            });
            let result = grpc::serve(state, listener, grpc_tls, shutdown.clone()).await;
            let _ = scheduler.await;
            let result = match local {
                Some(local) => result.and(local.await?),
                None => result,
            };
            if let Err(e) = &result {
                tracing::error!("the gRPC server failed: {e}");
            }
            shutdown.cancel();
            result
        })
    });
    let app = api::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let stop = shutdown.clone();
    let http = match http_tls {
        // `tap_io` for its side effect: axum gives `ConnectInfo<SocketAddr>`
        // to any listener wrapped in it, which keeps handlers' peer address.
        Some(config) => {
            axum::serve(tls::TlsListener::new(listener, config).tap_io(|_| {}), app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        }
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        }
    };
    shutdown.cancel();
    let _ = sweeper.await;
    let _ = refresher.await;
    let _ = hooks.await;
    let _ = statuses.await;
    let _ = poller.await;
    let grpc = match grpc {
        Some(grpc) => grpc.await?,
        None => Ok(()),
    };
    http?;
    grpc
}
