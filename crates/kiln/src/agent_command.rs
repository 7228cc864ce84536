//! `kiln agent`: runs tasks for a server until Ctrl-C or SIGTERM, then drains
//! (finishes what runs and reports it); a second signal exits at once.

use std::sync::Arc;

use anyhow::Context;
use kiln_agent::{AgentConfig, run_agent};
use kiln_exec::Executor;
use kiln_exec::docker::DockerExecutor;
use kiln_exec::process::ProcessExecutor;
use tokio_util::sync::CancellationToken;

use crate::cli::{AgentArgs, ExecutorKind};

/// Exit code when a second signal cuts the drain short.
const EXIT_INTERRUPTED: i32 = 130;

pub async fn agent(args: AgentArgs) -> anyhow::Result<i32> {
    std::fs::create_dir_all(&args.work_dir)
        .with_context(|| format!("cannot create {}", args.work_dir.display()))?;
    let work_dir = args
        .work_dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", args.work_dir.display()))?;
    let executor: Arc<dyn Executor> = match args.executor {
        Some(ExecutorKind::Process) => Arc::new(process_executor(&work_dir)),
        Some(ExecutorKind::Docker) => Arc::new(
            DockerExecutor::connect()
                .await
                .map_err(anyhow::Error::msg)?,
        ),
        None => match DockerExecutor::connect().await {
            Ok(docker) => Arc::new(docker),
            Err(reason) => {
                eprintln!("agent: process executor (no Docker engine answered: {reason})");
                Arc::new(process_executor(&work_dir))
            }
        },
    };
    let name = args.name.clone().unwrap_or_else(hostname);
    let mut config = AgentConfig::new(
        args.server.clone(),
        args.token.clone(),
        name,
        executor,
        work_dir,
    );
    config.labels = args.labels.clone();
    config.capacity = args.capacity.max(1);
    // The process executor does not pass the agent's environment (which may
    // hold KILN_AGENT_TOKEN) to tasks; these few make a usable shell.
    config.base_env = ["PATH", "HOME", "LANG", "TMPDIR", "USER"]
        .iter()
        .filter_map(|key| std::env::var(key).ok().map(|v| (key.to_string(), v)))
        .collect();
    config.on_connected = Some(Arc::new(|config: &AgentConfig| {
        println!(
            "agent {} connected to {} (labels {}, capacity {}, executor {})",
            config.name,
            config.server,
            config.labels.join(","),
            config.capacity,
            config.executor.kind()
        );
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }));

    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        crate::signals::wait_for_signal().await;
        eprintln!("agent: draining — finishing running tasks (signal again to exit now)");
        stop.cancel();
        crate::signals::wait_for_signal().await;
        eprintln!("agent: exiting now");
        std::process::exit(EXIT_INTERRUPTED);
    });
    run_agent(config, shutdown).await?;
    Ok(0)
}

fn process_executor(work_dir: &std::path::Path) -> ProcessExecutor {
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
