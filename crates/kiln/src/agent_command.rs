//! `kiln agent`: runs tasks for a server until Ctrl-C or SIGTERM, then drains
//! (finishes what runs and reports it); a second signal exits at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use kiln_agent::{AgentConfig, LinkEvent, run_agent};
use kiln_exec::Executor;
use kiln_exec::docker::DockerExecutor;
use kiln_exec::isolation::{Isolation, TaskCgroups, TaskUsers, UID_LOCK_DIR, UidRange};
use kiln_exec::process::ProcessExecutor;
use tokio_util::sync::CancellationToken;

use crate::cli::{AgentArgs, BuildCacheArgs, ExecutorKind};

/// Exit code when a second signal cuts the drain short.
const EXIT_INTERRUPTED: i32 = 130;

pub async fn agent(args: AgentArgs) -> anyhow::Result<i32> {
    let token = match (&args.token, &args.token_file) {
        (_, Some(file)) => {
            let token = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read the agent token file {}", file.display()))?;
            token.trim().to_string()
        }
        (Some(token), None) => token.clone(),
        (None, None) => anyhow::bail!("no agent token: give --token-file or KILN_AGENT_TOKEN"),
    };
    if token.is_empty() {
        anyhow::bail!("the agent token is empty");
    }
    let work_dir = prepare_work_dir(&args.work_dir)?;
    let isolation = ProcessIsolation {
        task_uids: args.task_uids,
        also_open: Vec::new(),
        allow_unisolated: true,
    };
    let executor = pick_executor(
        args.executor,
        &work_dir,
        "agent",
        &args.build_cache,
        &isolation,
    )
    .await?;
    let name = args.name.clone().unwrap_or_else(hostname);
    let mut config = agent_config(args.server.clone(), token, name, executor, work_dir);
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

/// Takes the agent token out of the places other processes can see it:
/// `KILN_AGENT_TOKEN` leaves the environment (after clap read it), and the
/// bytes of `token` are overwritten wherever they are in the memory that
/// `/proc/<pid>/cmdline` and `/proc/<pid>/environ` show (`--token TOKEN`
/// on the command line, the environment as it was at `exec`).
///
/// Must be called before any other thread runs (in `main`, before the
/// async runtime starts): changing the environment is not thread-safe.
pub fn hide_token(args: &AgentArgs) {
    // SAFETY: no other thread exists yet (see above).
    unsafe { std::env::remove_var("KILN_AGENT_TOKEN") };
    if let Some(token) = &args.token
        && let Err(e) = crate::process_memory::wipe(token.as_bytes())
    {
        // Not fatal: the token still works; the operator learns where it shows.
        eprintln!(
            "agent: cannot wipe the token from /proc/self/cmdline ({e}); \
             use --token-file or KILN_AGENT_TOKEN instead of --token"
        );
    }
}

/// What the process executor of an agent is asked for in isolation.
pub(crate) struct ProcessIsolation {
    /// Uids for tasks, when running as root.
    pub task_uids: UidRange,
    /// Directories above the work directory that Kiln owns and opens for
    /// traversal (the embedded agent's data directory).
    pub also_open: Vec<PathBuf>,
    /// Whether tasks may run as this process's own user (not root).
    pub allow_unisolated: bool,
}

/// The executor asked for, or `docker` when an engine answers and
/// `process` otherwise (saying so, as `who`). A docker executor keeps its
/// built images as `build_cache` says, and applies that once now.
pub(crate) async fn pick_executor(
    kind: Option<ExecutorKind>,
    work_dir: &Path,
    who: &str,
    build_cache: &BuildCacheArgs,
    isolation: &ProcessIsolation,
) -> anyhow::Result<Arc<dyn Executor>> {
    let docker = match kind {
        Some(ExecutorKind::Process) => {
            return Ok(Arc::new(process_executor(work_dir, who, isolation)?));
        }
        Some(ExecutorKind::Docker) => DockerExecutor::connect()
            .await
            .map_err(anyhow::Error::msg)?,
        None => match DockerExecutor::connect().await {
            Ok(docker) => docker,
            Err(reason) => {
                eprintln!("{who}: process executor (no Docker engine answered: {reason})");
                return Ok(Arc::new(process_executor(work_dir, who, isolation)?));
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

/// A process executor with all the isolation this process can give: task
/// users when root, task cgroups where cgroup v2 is writable. What is
/// missing is said once; running tasks as this process's own user is
/// refused unless `isolation.allow_unisolated`.
fn process_executor(
    work_dir: &Path,
    who: &str,
    isolation: &ProcessIsolation,
) -> anyhow::Result<ProcessExecutor> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let users = if root {
        let users = TaskUsers::new(isolation.task_uids, Path::new(UID_LOCK_DIR))
            .with_context(|| format!("{who}: cannot give tasks users of their own"))?;
        let also: Vec<&Path> = isolation.also_open.iter().map(PathBuf::as_path).collect();
        kiln_exec::isolation::open_path_to(work_dir, &also)
            .with_context(|| format!("{who}: cannot give tasks users of their own"))?;
        Some(users)
    } else if isolation.allow_unisolated {
        eprintln!(
            "{who}: tasks run as this user (not root, so no task users): they can read \
             whatever this user can, the agent's token included"
        );
        None
    } else {
        anyhow::bail!(
            "{who}: refusing to run tasks on the process executor: not running as root, \
             tasks cannot get users of their own and could read the server's data \
             directory (key, database) and environment. Use `--executor docker` \
             (`--worker-executor docker`), run as root with the `kiln-task` group \
             (docs/agents.md, Isolation), or accept the risk with --allow-unisolated-tasks"
        );
    };
    let cgroups = match TaskCgroups::for_this_process() {
        Ok(cgroups) => {
            tracing::info!("task cgroups under {}", cgroups.dir().display());
            Some(cgroups)
        }
        Err(e) => {
            eprintln!(
                "{who}: tasks get no cgroup of their own ({e}): a process a step moves out \
                 of its process group (setsid) can outlive its task{}",
                if users.is_some() {
                    " until the task's uid is cleared at its end"
                } else {
                    ""
                }
            );
            None
        }
    };
    let users = match (users, &cgroups) {
        (Some(users), Some(_)) => Some(users.confined_by_cgroups()),
        (users, _) => users,
    };
    if let Some(users) = &users {
        tracing::info!(
            "task uids {} with group {}",
            users.range(),
            kiln_exec::isolation::TASK_GROUP
        );
    }
    Ok(ProcessExecutor {
        inherit_env: false,
        work_root: Some(work_dir.to_path_buf()),
        isolation: Isolation { users, cgroups },
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "kiln-agent".to_string())
}
