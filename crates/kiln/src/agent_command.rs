//! `kiln agent`: runs tasks for a server until Ctrl-C or SIGTERM, then drains
//! (finishes what runs and reports it); a second signal exits at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use kiln_agent::{AgentConfig, LinkEvent, run_agent};
use kiln_exec::Executor;
use kiln_exec::docker::DockerExecutor;
use kiln_exec::process::ProcessExecutor;
use tokio_util::sync::CancellationToken;

use crate::cli::{AgentArgs, BuildCacheArgs, ExecutorKind};

/// Exit code when a second signal cuts the drain short.
const EXIT_INTERRUPTED: i32 = 130;

pub async fn agent(args: AgentArgs) -> anyhow::Result<i32> {
    let work_dir = prepare_work_dir(&args.work_dir)?;
    let executor = pick_executor(args.executor, &work_dir, "agent", &args.build_cache).await?;
    let name = args.name.clone().unwrap_or_else(hostname);
    let mut config = agent_config(
        args.server.clone(),
        args.token.clone(),
        name,
        executor,
        work_dir,
    );
    config.labels = args.labels.clone();
    config.capacity = args.capacity.max(1);
    config.insecure = args.insecure;
    if let Some(ca) = &args.ca_cert {
        config.ca_cert = Some(read_pem(ca, "CA certificate (--ca-cert)")?);
    }
    if let (Some(cert), Some(key)) = (&args.client_cert, &args.client_key) {
        config.client_identity = Some((
            read_pem(cert, "client certificate (--client-cert)")?,
            read_pem(key, "client key (--client-key)")?,
        ));
    }

    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        crate::signals::wait_for_signal().await;
        crate::signals::notice(
            "agent: draining — finishing running tasks (signal again to exit now)",
        );
        stop.cancel();
        crate::signals::wait_for_signal().await;
        crate::signals::notice("agent: exiting now");
        std::process::exit(EXIT_INTERRUPTED);
    });
    run_agent(config, shutdown).await?;
    Ok(0)
}

fn read_pem(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read the {what} {}", path.display()))
}

/// Creates the agent's work directory and returns its absolute path.
pub(crate) fn prepare_work_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    dir.canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))
}

/// The executor asked for, or `docker` when an engine answers and
/// `process` otherwise (saying so, as `who`). A docker executor keeps its
/// built images as `build_cache` says, and applies that once now.
pub(crate) async fn pick_executor(
    kind: Option<ExecutorKind>,
    work_dir: &Path,
    who: &str,
    build_cache: &BuildCacheArgs,
) -> anyhow::Result<Arc<dyn Executor>> {
    let docker = match kind {
        Some(ExecutorKind::Process) => return Ok(Arc::new(process_executor(work_dir))),
        Some(ExecutorKind::Docker) => DockerExecutor::connect()
            .await
            .map_err(anyhow::Error::msg)?,
        None => match DockerExecutor::connect().await {
            Ok(docker) => docker,
            Err(reason) => {
                eprintln!("{who}: process executor (no Docker engine answered: {reason})");
                return Ok(Arc::new(process_executor(work_dir)));
            }
        },
    };
    let mut docker = docker;
    docker.build_cache = build_cache.policy();
    let docker = Arc::new(docker);
    // Images left from before a change of the limits, or from a stretch
    // without builds, go now rather than at the next build.
    let pruner = docker.clone();
    tokio::spawn(async move {
        if let Err(e) = pruner.prune_build_images().await {
            tracing::warn!("cannot prune the build cache: {e}");
        }
    });
    Ok(docker)
}

/// An agent's settings as `kiln agent` and the embedded agent share them.
pub(crate) fn agent_config(
    server: String,
    token: String,
    name: String,
    executor: Arc<dyn Executor>,
    work_dir: PathBuf,
) -> AgentConfig {
    let mut config = AgentConfig::new(server, token, name, executor, work_dir);
    // The process executor does not pass the agent's environment (which may
    // hold KILN_AGENT_TOKEN) to tasks; these few make a usable shell.
    config.base_env = ["PATH", "HOME", "LANG", "TMPDIR", "USER"]
        .iter()
        .filter_map(|key| std::env::var(key).ok().map(|v| (key.to_string(), v)))
        .collect();
    config.on_link = Some(Arc::new(|config: &AgentConfig, event: LinkEvent<'_>| {
        crate::signals::announce(&match event {
            LinkEvent::Connected => format!(
                "agent {} connected to {} (labels {}, capacity {}, executor {})",
                config.name,
                config.server,
                config.labels.join(","),
                config.capacity,
                config.executor.kind()
            ),
            LinkEvent::Lost { reason } => format!(
                "agent {} cannot reach {} ({reason}); retrying, running tasks go on",
                config.name, config.server
            ),
        });
    }));
    config
}

fn process_executor(work_dir: &Path) -> ProcessExecutor {
    ProcessExecutor {
        inherit_env: false,
        work_root: Some(work_dir.to_path_buf()),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "kiln-agent".to_string())
}
