//! `kiln server` and `kiln up`: pick the database backend, bootstrap tokens,
//! and serve until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use kiln_server::{AdminPassword, AdminToken, Listeners, ServerConfig, StartSecrets, TlsFiles};
use kiln_store::Database;
use tokio_util::sync::CancellationToken;

use crate::agent_command::{ProcessIsolation, agent_config, pick_executor, prepare_work_dir};
use crate::cli::{
    BuildCacheArgs, EmbeddedIsolationArgs, ExecutorKind, ServerArgs, TlsArgs, UpArgs,
};

/// Lease of a claimed task in `kiln up`: how long a silent agent keeps it.
const LEASE: Duration = Duration::from_secs(15);
/// Exit code when a second signal cuts the drain short.
const EXIT_INTERRUPTED: i32 = 130;

/// An agent run inside the server's process (`kiln up`, `kiln server
/// --worker`). It is a real agent: it connects to this server's gRPC port
/// with its own token and takes tasks like any other.
struct Embedded {
    name: &'static str,
    labels: Vec<String>,
    capacity: usize,
    executor: Option<ExecutorKind>,
    build_cache: BuildCacheArgs,
    isolation: EmbeddedIsolationArgs,
}

/// The secrets a server reads from its environment, taken out of it so
/// that no process the server starts (git, …) inherits them.
///
/// Must be called before any other thread runs (in `main`, before the
/// async runtime starts): changing the environment is not thread-safe.
pub fn take_start_secrets() -> StartSecrets {
    let take = |name: &str| {
        let value = std::env::var(name).ok();
        // SAFETY: no other thread exists yet (see above), so nothing reads
        // the environment while it changes.
        unsafe { std::env::remove_var(name) };
        value
    };
    let secrets = StartSecrets {
        admin_token: take("KILN_ADMIN_TOKEN"),
        admin_password: take("KILN_ADMIN_PASSWORD"),
        agent_token: take("KILN_AGENT_TOKEN"),
        metrics_token: take("KILN_METRICS_TOKEN").filter(|token| !token.trim().is_empty()),
    };
    // Read by the command-line parser already; a password in it goes too.
    take("KILN_DATABASE_URL");
    secrets
}

pub async fn server(args: ServerArgs, secrets: StartSecrets) -> anyhow::Result<i32> {
    let embedded = args.worker.then(|| Embedded {
        name: "server",
        labels: args.worker_labels.clone(),
        capacity: args.worker_capacity,
        executor: args.worker_executor,
        build_cache: args.build_cache,
        isolation: args.isolation,
    });
    let config = ServerConfig {
        listen: args.listen,
        data_dir: args.data_dir.clone(),
        blob_url: args.blob_url.clone(),
        agent_lease: args.agent_lease,
        max_report_size: args.max_report_size,
        limits: args.limits.limits(),
    };
    let launch = Launch {
        grpc_listen: args.grpc_listen,
        embedded,
        all_in_one: false,
        secrets,
        tls: read_tls(&args.tls)?,
        public_url: args.public_url.clone(),
    };
    start(config, args.database_url.as_deref(), launch).await
}

pub async fn up(args: UpArgs, secrets: StartSecrets) -> anyhow::Result<i32> {
    let embedded = Embedded {
        name: "embedded",
        labels: vec!["linux".into()],
        capacity: args.capacity,
        executor: args.executor,
        build_cache: args.build_cache,
        isolation: args.isolation,
    };
    let config = ServerConfig {
        listen: args.listen,
        data_dir: args.data_dir.clone(),
        blob_url: None,
        agent_lease: LEASE,
        max_report_size: kiln_server::DEFAULT_MAX_REPORT_SIZE,
        limits: args.limits.limits(),
    };
    let launch = Launch {
        grpc_listen: args.grpc_listen,
        embedded: Some(embedded),
        all_in_one: true,
        secrets,
        tls: read_tls(&args.tls)?,
        public_url: None,
    };
    start(config, None, launch).await
}

/// What a start needs besides the server's configuration and database.
struct Launch {
    grpc_listen: SocketAddr,
    embedded: Option<Embedded>,
    /// `kiln up` (which says more on its first start) rather than `kiln server`.
    all_in_one: bool,
    secrets: StartSecrets,
    tls: Option<TlsFiles>,
    /// `--public-url`, for the links in commit statuses.
    public_url: Option<String>,
}

/// The files `--tls-cert`, `--tls-key` and `--client-ca` name, read now so
/// that a wrong path fails the start rather than the first connection.
fn read_tls(args: &TlsArgs) -> anyhow::Result<Option<TlsFiles>> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Ok(None);
    };
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read(path).with_context(|| format!("cannot read the {what} {}", path.display()))
    };
    Ok(Some(TlsFiles {
        cert: read(cert, "TLS certificate (--tls-cert)")?,
        key: read(key, "TLS key (--tls-key)")?,
        client_ca: match &args.client_ca {
            Some(ca) => Some(read(ca, "client CA (--client-ca)")?),
            None => None,
        },
    }))
}

async fn start(
    mut config: ServerConfig,
    database_url: Option<&str>,
    launch: Launch,
) -> anyhow::Result<i32> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.data_dir.display()
        )
    })?;
    // Everything below (git mirrors, blobs, the embedded agent's work
    // directory) is found from here, whatever the working directory is later.
    config.data_dir = config.data_dir.canonicalize().with_context(|| {
        format!(
            "cannot resolve the data directory {}",
            config.data_dir.display()
        )
    })?;
    keep_data_dir_private(&config.data_dir)?;
    match database_url {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let db = kiln_store_postgres::PostgresStore::connect(url)
                .await
                .context("cannot open the PostgreSQL database")?;
            let database = format!("PostgreSQL at {}", postgres_location(url));
            run_with(db, config, &database, launch).await
        }
        Some(url) => anyhow::bail!(
            "--database-url must be a postgres:// URL (SQLite is the default, in the data dir); got `{url}`"
        ),
        None => {
            let path = config.data_dir.join("kiln.db");
            let db = kiln_store_sqlite::SqliteStore::open(&path)
                .await
                .with_context(|| format!("cannot open the SQLite database {}", path.display()))?;
            let database = format!("SQLite at {}", path.display());
            run_with(db, config, &database, launch).await
        }
    }
}

/// Makes what the server writes its own (umask `077`: the SQLite database,
/// its journal, blobs, git mirrors) and takes others' access away from what
/// an older version left in the data directory. The embedded agent's work
/// directory is its own business (see `agent_command::process_executor`).
fn keep_data_dir_private(data_dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: umask has no preconditions; it is process-wide and atomic.
    unsafe { libc::umask(0o077) };
    let entries = std::fs::read_dir(data_dir)
        .with_context(|| format!("cannot list the data directory {}", data_dir.display()))?;
    for entry in entries.flatten() {
        if entry.file_name() == "work" {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let mode = meta.permissions().mode();
        if !meta.file_type().is_symlink() && mode & 0o077 != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & !0o077))
                .with_context(|| format!("cannot make {} private", path.display()))?;
        }
    }
    Ok(())
}

/// Host, port and database of a PostgreSQL URL, without its credentials.
fn postgres_location(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, rest)| rest);
    rest.split('?').next().unwrap_or(rest)
}

async fn run_with<D: Database>(
    db: D,
    config: ServerConfig,
    database: &str,
    launch: Launch,
) -> anyhow::Result<i32> {
    let Launch {
        grpc_listen,
        embedded,
        all_in_one,
        secrets,
        tls,
        public_url,
    } = launch;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let bootstrap = kiln_server::bootstrap(&db, &secrets).await?;
    let agent_token = match &embedded {
        Some(embedded) => {
            Some(kiln_server::embedded_agent_token(&db, &config.data_dir, embedded.name).await?)
        }
        None => None,
    };
    let blobs = match &config.blob_url {
        Some(url) => url.clone(),
        None => config.data_dir.join("blobs").display().to_string(),
    };
    let mut state = kiln_server::app_state(db, &config).await?;
    state.embedded_agent = embedded.as_ref().map(|embedded| embedded.name.into());
    state.public_url = public_url.map(|url| url.trim_end_matches('/').into());
    if let Some(token) = &secrets.metrics_token {
        state.require_metrics_token(token);
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (--listen picks another address)",
                config.listen
            )
        })?;
    let address: SocketAddr = listener.local_addr()?;
    let url = format!("{scheme}://{address}");
    let grpc_listener = tokio::net::TcpListener::bind(grpc_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen for agents on {grpc_listen} (--grpc-listen picks another address)"
            )
        })?;
    let grpc_address = grpc_listener.local_addr()?;
    let grpc_url = format!("{scheme}://{grpc_address}");
    // The embedded agent reaches this server through memory: no port for
    // anyone else on the machine, and no certificate to present under TLS.
    let (dial, in_process) = match &embedded {
        Some(_) => {
            let (dial, connections) = tokio::sync::mpsc::channel(4);
            (Some(dial), Some(connections))
        }
        None => (None, None),
    };
    let mut lines = vec![
        format!(
            "kiln {} listening on {url}",
            if all_in_one { "up" } else { "server" }
        ),
        format!("agents connect to {grpc_url} (gRPC)"),
        format!("database: {database}"),
        format!("data directory: {}", config.data_dir.display()),
        format!("logs and artifacts: {blobs}"),
    ];
    lines.push(match &bootstrap.admin_token {
        AdminToken::Generated(token) => format!("admin token (shown once, keep it): {token}"),
        AdminToken::FromEnvironment => "admin token: the one in KILN_ADMIN_TOKEN".to_string(),
        AdminToken::Existing => {
            "admin token: the one made on the first start (KILN_ADMIN_TOKEN is read only then)"
                .to_string()
        }
    });
    match &bootstrap.admin_password {
        AdminPassword::Generated(password) => lines.push(format!(
            "web sign-in: user `admin`, password (shown once, keep it): {password}"
        )),
        AdminPassword::FromEnvironment => {
            lines.push("web sign-in: user `admin`, the password in KILN_ADMIN_PASSWORD".into());
        }
        AdminPassword::Existing => {}
    }
    if all_in_one {
        lines.push(format!(
            "try: KILN_SERVER={url} KILN_TOKEN=<admin token> kiln job list"
        ));
        if bootstrap.first_start() {
            lines.extend([
                "attach another agent: make it a token, then start it where it should run".into(),
                format!(
                    "  KILN_SERVER={url} KILN_TOKEN=<admin token> kiln agent-token create NAME"
                ),
                format!(
                    "  KILN_AGENT_TOKEN=<the token printed> kiln agent --server {grpc_url} --name NAME"
                ),
            ]);
        }
    }
    println!("{}", lines.join("\n"));
    use std::io::Write;
    let _ = std::io::stdout().flush();

    // A signal first drains the embedded agent (it finishes and reports what
    // it runs, through the still-serving server), then stops the server.
    let shutdown = CancellationToken::new();
    let drain = CancellationToken::new();
    let agent = match (embedded, agent_token) {
        (Some(embedded), Some(token)) => {
            let work_dir = prepare_work_dir(&config.data_dir.join("work"))?;
            // Tasks must not reach the server's files or environment: the
            // process executor refuses to run them as the server's user
            // unless told to.
            let isolation = ProcessIsolation {
                task_uids: embedded.isolation.task_uids,
                also_open: vec![config.data_dir.clone()],
                allow_unisolated: embedded.isolation.allow_unisolated_tasks,
            };
            let executor = pick_executor(
                embedded.executor,
                &work_dir,
                embedded.name,
                &embedded.build_cache,
                &isolation,
            )
            .await?;
            let mut agent = agent_config(
                format!("{scheme}://{grpc_address}"),
                token,
                embedded.name.to_string(),
                executor,
                work_dir,
            );
            agent.labels = embedded.labels;
            agent.capacity = embedded.capacity.max(1);
            agent.in_process = dial;
            let (drain, shutdown) = (drain.clone(), shutdown.clone());
            Some(tokio::spawn(async move {
                if let Err(e) = kiln_agent::run_agent(agent, drain).await {
                    crate::signals::notice(&format!("the embedded agent stopped: {e:#}"));
                }
                shutdown.cancel();
            }))
        }
        _ => None,
    };
    let has_agent = agent.is_some();
    let (stop, stop_agent) = (shutdown.clone(), drain.clone());
    tokio::spawn(async move {
        crate::signals::wait_for_signal().await;
        crate::signals::notice("shutting down: finishing what runs (signal again to exit now)");
        stop_agent.cancel();
        if !has_agent {
            stop.cancel();
        }
        crate::signals::wait_for_signal().await;
        crate::signals::notice("exiting now");
        std::process::exit(EXIT_INTERRUPTED);
    });
    let listeners = Listeners {
        http: listener,
        grpc: Some(grpc_listener),
        in_process,
    };
    kiln_server::serve_with_tls(state, listeners, tls, shutdown.clone()).await?;
    // The server stopped on its own (a listener failed): stop the agent too.
    drain.cancel();
    if let Some(agent) = agent {
        let _ = agent.await;
    }
    Ok(0)
}
