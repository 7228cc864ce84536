//! `kiln server` and `kiln up`: pick the database backend, bootstrap tokens,
//! and serve until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kiln_exec::Executor;
use kiln_exec::docker::DockerExecutor;
use kiln_exec::process::ProcessExecutor;
use kiln_server::{ServerConfig, WorkerConfig};
use kiln_store::Database;
use tokio_util::sync::CancellationToken;

use crate::cli::{ExecutorKind, ServerArgs, UpArgs};

/// Lease of a claimed task: how long a silent worker or agent keeps it.
const LEASE: Duration = Duration::from_secs(15);

pub async fn server(args: ServerArgs) -> anyhow::Result<i32> {
    let worker = if args.worker {
        Some(
            worker_config(
                "server",
                args.worker_labels.clone(),
                args.worker_capacity,
                args.worker_executor,
                &args.data_dir,
            )
            .await?,
        )
    } else {
        None
    };
    let config = ServerConfig {
        listen: args.listen,
        data_dir: args.data_dir.clone(),
        blob_url: args.blob_url.clone(),
        worker,
        agent_lease: args.agent_lease,
    };
    start(
        config,
        Some(args.grpc_listen),
        args.database_url.as_deref(),
        false,
    )
    .await
}

pub async fn up(args: UpArgs) -> anyhow::Result<i32> {
    let worker = worker_config(
        "embedded",
        vec!["linux".into()],
        args.capacity,
        args.executor,
        &args.data_dir,
    )
    .await?;
    let config = ServerConfig {
        listen: args.listen,
        data_dir: args.data_dir.clone(),
        blob_url: None,
        worker: Some(worker),
        agent_lease: LEASE,
    };
    start(config, None, None, true).await
}

async fn worker_config(
    name: &str,
    labels: Vec<String>,
    capacity: usize,
    executor: Option<ExecutorKind>,
    data_dir: &std::path::Path,
) -> anyhow::Result<WorkerConfig> {
    let executor: Arc<dyn Executor> = match executor {
        Some(ExecutorKind::Process) => Arc::new(ProcessExecutor::default()),
        Some(ExecutorKind::Docker) => Arc::new(
            DockerExecutor::connect()
                .await
                .map_err(anyhow::Error::msg)?,
        ),
        None => match DockerExecutor::connect().await {
            Ok(docker) => Arc::new(docker),
            Err(reason) => {
                eprintln!("worker: process executor (no Docker engine answered: {reason})");
                Arc::new(ProcessExecutor::default())
            }
        },
    };
    let work_dir = data_dir.join("work");
    std::fs::create_dir_all(&work_dir)
        .with_context(|| format!("cannot create {}", work_dir.display()))?;
    Ok(WorkerConfig {
        name: name.to_string(),
        labels,
        capacity: capacity.max(1),
        executor,
        work_dir,
        lease: LEASE,
    })
}

async fn start(
    config: ServerConfig,
    grpc_listen: Option<SocketAddr>,
    database_url: Option<&str>,
    all_in_one: bool,
) -> anyhow::Result<i32> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.data_dir.display()
        )
    })?;
    match database_url {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let db = kiln_store_postgres::PostgresStore::connect(url)
                .await
                .context("cannot open the PostgreSQL database")?;
            run_with(db, config, grpc_listen, all_in_one).await
        }
        Some(url) => anyhow::bail!(
            "--database-url must be a postgres:// URL (SQLite is the default, in the data dir); got `{url}`"
        ),
        None => {
            let path = config.data_dir.join("kiln.db");
            let db = kiln_store_sqlite::SqliteStore::open(&path)
                .await
                .with_context(|| format!("cannot open the SQLite database {}", path.display()))?;
            run_with(db, config, grpc_listen, all_in_one).await
        }
    }
}

async fn run_with<D: Database>(
    db: D,
    mut config: ServerConfig,
    grpc_listen: Option<SocketAddr>,
    all_in_one: bool,
) -> anyhow::Result<i32> {
    let bootstrap = kiln_server::bootstrap(&db).await?;
    let state = kiln_server::app_state(db, &config).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let address: SocketAddr = listener.local_addr()?;
    let url = format!("http://{address}");
    println!(
        "kiln {} listening on {url}",
        if all_in_one { "up" } else { "server" }
    );
    let grpc_listener = match grpc_listen {
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen for agents on {address}"))?;
            println!("grpc on {}", listener.local_addr()?);
            Some(listener)
        }
        None => None,
    };
    println!("data directory: {}", config.data_dir.display());
    match &bootstrap.generated_admin_token {
        Some(token) => println!("admin token (shown once, keep it): {token}"),
        None => println!("admin token: set on first start (KILN_ADMIN_TOKEN or printed then)"),
    }
    if all_in_one {
        println!("try: KILN_SERVER={url} KILN_TOKEN=<admin token> kiln job list");
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();

    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        crate::signals::wait_for_signal().await;
        eprintln!("shutting down: finishing what runs");
        stop.cancel();
    });
    let worker = config.worker.take();
    kiln_server::serve(state, listener, grpc_listener, worker, shutdown).await?;
    Ok(0)
}
