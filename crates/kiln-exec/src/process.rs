//! The `process` executor: each task runs on the host, in a private copy of
//! the source tree, each step as an `sh -e` script in its own process group.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures_util::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use crate::isolation::{Isolation, TaskCgroup, TaskUser};
use crate::mask::MaskedEvents;
use crate::workspace::{collect_each, collect_outputs};
use crate::{
    CancellationToken, Executor, LogStream, Status, StepExit, TaskEvents, TaskOutcome, TaskSpec,
    deadline_for, drive_steps, interruptible, step_environment,
};

/// How long output may keep arriving after a step's shell has exited; a
/// background job that still holds the pipe open must not hang the step.
/// Time spent waiting for the sink to take more output does not count: what
/// the shell wrote before exiting is still in the pipe and must not be lost
/// because the server was slow to acknowledge.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(200);
/// Largest piece of output read from a pipe at once.
const READ_SIZE: usize = 16 * 1024;

pub struct ProcessExecutor {
    /// Whether steps see this process's environment under the task's own.
    /// `kiln run` inherits (tools on PATH, HOME); an agent may want a clean one.
    pub inherit_env: bool,
    /// Where task workspaces are made; the system temp dir by default.
    pub work_root: Option<PathBuf>,
    /// Task users and cgroups, as an agent running as root has them; none
    /// for `kiln run`, whose steps run as the user who started it.
    pub isolation: Isolation,
}

impl Default for ProcessExecutor {
    fn default() -> Self {
        ProcessExecutor {
            inherit_env: true,
            work_root: None,
            isolation: Isolation::default(),
        }
    }
}

impl Executor for ProcessExecutor {
    fn kind(&self) -> &'static str {
        "process"
    }

    fn run<'a>(
        &'a self,
        spec: &'a TaskSpec,
        events: Arc<dyn TaskEvents>,
        cancel: CancellationToken,
    ) -> BoxFuture<'a, TaskOutcome> {
        Box::pin(async move {
            let events = MaskedEvents::for_task(events, spec);
            let outcome = self.run_masked(spec, &events, &cancel).await;
            events.finish();
            outcome
        })
    }
}

impl ProcessExecutor {
    async fn run_masked(
        &self,
        spec: &TaskSpec,
        events: &MaskedEvents,
        cancel: &CancellationToken,
    ) -> TaskOutcome {
        let started_at = Utc::now();
        if !spec.services.is_empty() {
            return TaskOutcome::misconfigured(
                spec,
                "task has `services`, which need the docker executor",
            );
        }
        // Running on the host anyway is the point of this executor, but the
        // task's author should learn that its tools may not be there.
        let note = match (&spec.build, &spec.image) {
            (Some(build), _) => Some(format!(
                "process executor: running on the host, not in an image built from {} \
                 (`build:` needs the docker executor)\n",
                build.dockerfile
            )),
            (None, Some(image)) => Some(format!(
                "process executor: running on the host, not in image {image}\n"
            )),
            (None, None) => None,
        };
        if let Some(note) = note {
            events.log(LogStream::System, note.as_bytes());
        }
        let deadline = deadline_for(spec.timeout);
        let workspace = match self.make_workspace(spec, deadline, cancel).await {
            Ok(dir) => dir,
            Err(Ok(message)) => return TaskOutcome::error(spec, message),
            Err(Err(interrupt)) => {
                let mut outcome = TaskOutcome::error(spec, interrupt.describe(spec));
                outcome.status = interrupt.status();
                return outcome;
            }
        };
        let confinement = match self.confine(workspace.path()).await {
            Ok(confinement) => confinement,
            Err(message) => {
                remove_workspace(workspace).await;
                return TaskOutcome::error(spec, message);
            }
        };
        let jail = confinement.jail();
        let groups = ProcessGroups::default();
        let mut env = step_environment(spec);
        if confinement.user.is_some() {
            // The agent's HOME is not the task user's to write in.
            env.push(("HOME".into(), workspace.path().display().to_string()));
            env.push(("USER".into(), crate::isolation::TASK_GROUP.into()));
        }
        let steps = drive_steps(spec, events, deadline, cancel, |_, step| {
            Box::pin(run_step(
                &step.run,
                workspace.path(),
                &env,
                self.inherit_env,
                &groups,
                &jail,
                events,
            ))
        })
        .await;
        // Background jobs a step left behind end with the task, before
        // its outputs are read (nothing may change them any more).
        groups.kill_all();
        let user = confinement.end().await;

        let mut outcome = TaskOutcome {
            status: steps.status,
            error: steps.error,
            steps: steps.steps,
            started_at,
            finished_at: Utc::now(),
            artifacts: Vec::new(),
            reports: Vec::new(),
            misconfigured: false,
        };
        if steps.status != Status::Cancelled {
            collect(spec, workspace.path(), events, &mut outcome).await;
        }
        remove_workspace(workspace).await;
        if let Some(user) = user {
            // Frees the uid after clearing what the task left in /tmp.
            let _ = tokio::task::spawn_blocking(move || drop(user)).await;
        }
        outcome.finished_at = Utc::now();
        outcome
    }

    /// A uid and a cgroup for one task, as this executor's isolation has
    /// them; the workspace becomes the task user's.
    async fn confine(&self, workspace: &Path) -> Result<Confinement, String> {
        let user = match &self.isolation.users {
            Some(users) => {
                let user = users.claim().map_err(|e| e.to_string())?;
                let dir = workspace.to_path_buf();
                let user = tokio::task::spawn_blocking(move || user.take_over(&dir).map(|()| user))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("cannot give the workspace to the task user: {e}"))?;
                Some(user)
            }
            None => None,
        };
        let cgroup = match &self.isolation.cgroups {
            Some(cgroups) => Some(cgroups.create().map_err(|e| e.to_string())?),
            None => None,
        };
        Ok(Confinement { user, cgroup })
    }

    /// Copies the source tree into a fresh directory. `Err(Ok(msg))` is a
    /// failure to set up, `Err(Err(_))` a timeout or cancel during the copy.
    async fn make_workspace(
        &self,
        spec: &TaskSpec,
        deadline: Option<tokio::time::Instant>,
        cancel: &CancellationToken,
    ) -> Result<tempfile::TempDir, Result<String, crate::Interrupt>> {
        let mut builder = tempfile::Builder::new();
        builder.prefix("kiln-task-");
        let dir = match &self.work_root {
            Some(root) => builder.tempdir_in(root),
            None => builder.tempdir(),
        }
        .map_err(|e| Ok(format!("cannot create a workspace: {e}")))?;
        let source = spec.source.clone();
        let target = dir.path().to_path_buf();
        let copy = tokio::task::spawn_blocking(move || source.copy_to(&target));
        match interruptible(copy, deadline, cancel).await {
            Ok(Ok(Ok(()))) => Ok(dir),
            Ok(Ok(Err(e))) => Err(Ok(format!(
                "cannot copy the source into the workspace: {e}"
            ))),
            Ok(Err(e)) => Err(Ok(format!("workspace copy failed: {e}"))),
            Err(interrupt) => Err(Err(interrupt)),
        }
    }
}

/// The uid and cgroup one task's steps run in, while it runs.
struct Confinement {
    user: Option<TaskUser>,
    cgroup: Option<TaskCgroup>,
}

impl Confinement {
    fn jail(&self) -> Jail {
        Jail {
            procs: self.cgroup.as_ref().map(|c| c.procs_file().to_owned()),
            user: self.user.as_ref().map(|u| (u.uid, u.gid)),
        }
    }

    /// Kills whatever of the task still runs (its cgroup, else its uid) and
    /// removes the cgroup; returns the uid, still claimed.
    async fn end(self) -> Option<TaskUser> {
        let Confinement { user, cgroup } = self;
        tokio::task::spawn_blocking(move || {
            match (cgroup, &user) {
                // Dropping the cgroup kills what is in it and removes it.
                (Some(cgroup), _) => drop(cgroup),
                (None, Some(user)) => user.kill_processes(),
                (None, None) => {}
            }
            user
        })
        .await
        .ok()
        .flatten()
    }
}

/// What a step's process does between `fork` and `exec`, prepared before
/// the fork (nothing may be allocated after it).
struct Jail {
    /// `cgroup.procs` of the task's cgroup.
    procs: Option<std::ffi::CString>,
    /// uid and gid of the task user.
    user: Option<(u32, u32)>,
}

async fn run_step(
    script: &str,
    workspace: &Path,
    env: &[(String, String)],
    inherit_env: bool,
    groups: &ProcessGroups,
    jail: &Jail,
    events: &MaskedEvents,
) -> StepExit {
    let mut command = Command::new("sh");
    command
        .arg("-e")
        .arg("-c")
        .arg(script)
        .current_dir(workspace)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0);
    let (procs, user) = (jail.procs.clone(), jail.user);
    // SAFETY: the closure runs in the child between fork and exec, where
    // only async-signal-safe calls are allowed: dup2, open, write, close,
    // setgroups, setgid and setuid are, and nothing is allocated (the
    // cgroup's path was made before the fork; an OS error is stored inline).
    unsafe {
        command.pre_exec(move || {
            // stderr becomes a second descriptor of the stdout pipe: one
            // pipe keeps the order in which the script wrote to either, as a
            // terminal would, where two pipes would be read apart.
            if libc::dup2(1, 2) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // The cgroup first: only root may move a process into it, and
            // once in, nothing the step starts can leave it.
            if let Some(procs) = &procs {
                crate::isolation::join_cgroup(procs)?;
            }
            // `CommandExt::uid`/`gid` would switch before any pre_exec
            // closure runs, too early for the cgroup: the same calls here.
            if let Some((uid, gid)) = user {
                crate::isolation::become_user(uid, gid)?;
            }
            Ok(())
        });
    }
    if !inherit_env {
        command.env_clear();
    }
    command.envs(env.iter().map(|(k, v)| (k, v)));
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return StepExit::Error(format!("cannot start sh: {e}")),
    };
    if let Some(pid) = child.id() {
        groups.add(pid as i32);
    }
    let exited = CancellationToken::new();
    let output = forward(child.stdout.take(), events, &exited);
    tokio::pin!(output);
    let mut drained = false;
    let status = tokio::select! {
        status = child.wait() => status,
        _ = &mut output => {
            drained = true;
            child.wait().await
        }
    };
    if !drained {
        // The reader drains what the shell wrote before exiting, within
        // `DRAIN_AFTER_EXIT`.
        exited.cancel();
        output.await;
    }
    match status {
        Ok(status) => StepExit::Code(exit_code(status)),
        Err(e) => StepExit::Error(format!("waiting for the step failed: {e}")),
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

/// Passes the step's output on until its pipe closes, reading only while the
/// sink is ready for more. Once `exited` is cancelled (the shell is gone),
/// reading stops after `DRAIN_AFTER_EXIT` spent waiting on the pipe, in case
/// a background job keeps it open.
async fn forward(
    pipe: Option<impl AsyncRead + Unpin>,
    events: &MaskedEvents,
    exited: &CancellationToken,
) {
    let Some(mut pipe) = pipe else { return };
    let mut buffer = vec![0u8; READ_SIZE];
    let mut drain_left = DRAIN_AFTER_EXIT;
    loop {
        events.ready().await;
        let read = if exited.is_cancelled() {
            if drain_left.is_zero() {
                return;
            }
            let started = tokio::time::Instant::now();
            let Ok(read) = tokio::time::timeout(drain_left, pipe.read(&mut buffer)).await else {
                return;
            };
            drain_left = drain_left.saturating_sub(started.elapsed());
            read
        } else {
            tokio::select! {
                read = pipe.read(&mut buffer) => read,
                // Reading is cancel-safe: nothing is lost by starting over
                // with the drain's time limit.
                _ = exited.cancelled() => continue,
            }
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(n) => events.log(LogStream::Output, &buffer[..n]),
        }
    }
}

async fn collect(
    spec: &TaskSpec,
    workspace: &Path,
    events: &MaskedEvents,
    outcome: &mut TaskOutcome,
) {
    collect_each(spec, events, outcome, |patterns, dest| {
        let (from, patterns) = (workspace.to_path_buf(), patterns.to_vec());
        async move {
            let found =
                tokio::task::spawn_blocking(move || collect_outputs(&from, &patterns, &dest)).await;
            Some(match found {
                Ok(found) => found.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            })
        }
    })
    .await;
}

async fn remove_workspace(dir: tempfile::TempDir) {
    // A step may have made files read-only; removal errors only leave litter in /tmp.
    let _ = tokio::task::spawn_blocking(move || {
        let path = dir.path().to_path_buf();
        if dir.close().is_err() {
            let _ = std::process::Command::new("chmod")
                .arg("-R")
                .arg("u+rwx")
                .arg(&path)
                .status();
            let _ = std::fs::remove_dir_all(&path);
        }
    })
    .await;
}

/// The process groups a task started; every one is killed when the task ends
/// or its future is dropped, so no step outlives its task.
#[derive(Default)]
struct ProcessGroups(Mutex<Vec<i32>>);

impl ProcessGroups {
    fn add(&self, pgid: i32) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(pgid);
    }

    fn kill_all(&self) {
        let groups = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        for pgid in groups {
            // SAFETY: killpg has no memory-safety preconditions; a group that
            // already ended just makes it return ESRCH.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for ProcessGroups {
    fn drop(&mut self) {
        self.kill_all();
    }
}
