//! The scheduler: which queued task goes to which connected agent, and
//! the cancellations pushed to agents. `registry` is the in-memory list of
//! connected agents; the gRPC service (`crate::grpc`) registers sessions
//! and calls in here, and the scheduler sends on their streams.
//!
//! The dispatcher sleeps until something changes — a task became queued,
//! finished or was cancelled (`AppState::work`), or an agent connected, left
//! or freed capacity (`Registry::changed`) — then claims tasks for the
//! least-loaded agents until none can take more. A task queued while a
//! matching agent idles is therefore sent at once, with no polling delay.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use kiln_proto::v1::{Assignment, Cancel, GitCredentials, Secret, ServerMessage, server_message};
use kiln_store::{
    Claim, Database, JobKind, NO_AGENT_REASON, Status, StoreError, TaskId, TaskResult, TaskRow,
    Undelivered,
};
use tokio_util::sync::CancellationToken;

pub mod registry;

use self::registry::Candidate;
pub use self::registry::Registry;
use crate::run_cache::RunAndJob;
use crate::secrets::{git_credentials_from, git_secret_names, open_secret};
use crate::state::AppState;

/// A wake-up even when nothing was notified: another server sharing the
/// database queues and cancels tasks without waking this one.
const FALLBACK_TICK: Duration = Duration::from_secs(1);

/// How often queued tasks are checked for an agent that could take them.
const PLACEABLE_CHECK: Duration = Duration::from_secs(1);

pub async fn run_dispatcher<D: Database>(state: AppState<D>, shutdown: CancellationToken) {
    let started = Instant::now();
    let mut checked = Instant::now();
    loop {
        // Register interest before looking, so a change that lands while a
        // round runs still wakes the next one.
        let work = state.work.notified();
        let changed = state.agents.changed.notified();
        tokio::pin!(work, changed);
        work.as_mut().enable();
        changed.as_mut().enable();

        dispatch(&state).await;
        push_cancels(&state).await;
        if checked.elapsed() >= PLACEABLE_CHECK {
            checked = Instant::now();
            // Right after a start, agents are still reconnecting: give them
            // a lease's time before telling users none is there.
            let settled = started.elapsed() >= state.agents.lease;
            note_unplaceable(&state, settled).await;
        }

        tokio::select! {
            _ = &mut work => {}
            _ = &mut changed => {}
            _ = tokio::time::sleep(FALLBACK_TICK) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Claims and sends tasks until no connected agent can take one more.
/// An agent with several free slots gets a batch claimed in one go.
async fn dispatch<D: Database>(state: &AppState<D>) {
    let mut nothing_for = HashSet::new();
    while let Some(agent) = state.agents.candidate(&nothing_for) {
        let claim = Claim {
            holder: agent.name.clone(),
            labels: agent.labels.clone(),
            lease: state.agents.lease,
            now: Utc::now(),
        };
        let tasks = match state.db.claim_tasks(&claim, agent.free).await {
            Ok(tasks) if tasks.is_empty() => {
                nothing_for.insert(agent.name);
                continue;
            }
            Ok(tasks) => tasks,
            Err(e) => {
                tracing::warn!("claiming tasks for agent {} failed: {e}", agent.name);
                return;
            }
        };
        for task in tasks {
            if !send_task(state, &agent, task).await {
                nothing_for.insert(agent.name.clone());
            }
        }
    }
}

/// Sends one claimed task to `agent`; false when the agent's session ended,
/// was replaced, or its stream is full (the task then goes back to the queue).
async fn send_task<D: Database>(state: &AppState<D>, agent: &Candidate, task: TaskRow) -> bool {
    state.metrics.task_started(task.queued_at, task.started_at);
    if !state.agents.assign(&agent.name, agent.session, &task) {
        // The session ended or was replaced since it was picked.
        give_back(state, agent, task.id).await;
        return false;
    }
    let (assignment, both) = match assignment(state, &task).await {
        Ok(made) => made,
        Err(reason) => {
            // The task cannot run anywhere (a missing secret, a deleted
            // job): end it rather than let every agent fail it in turn.
            tracing::warn!("task {} cannot be assigned: {reason}", task.id);
            state.agents.release(&agent.name, task.id);
            let result = TaskResult {
                status: Status::Error,
                reason: Some(reason),
                // Not on another agent either: not retried.
                retry: kiln_store::queue::Retry::Pointless,
                now: Utc::now(),
            };
            let holder = kiln_store::Holder::new(&agent.name, task.attempt);
            if let Err(e) = state.db.finish_task(task.id, &holder, &result).await {
                tracing::warn!("ending task {} failed: {e}", task.id);
            }
            // Its run may be gone: what is left of it is read again.
            state.events.touch_all(task.run_id);
            state.work.notify_waiters();
            return true;
        }
    };
    let message = ServerMessage {
        kind: Some(server_message::Kind::Assignment(assignment)),
    };
    match agent.sender.try_send(Ok(message)) {
        Ok(()) => {
            tracing::info!(
                "task {} ({}) assigned to agent {}",
                task.id,
                task.name,
                agent.name
            );
            state.events.task_started(&both.0, &task);
            true
        }
        Err(e) => {
            tracing::warn!(
                "task {} could not be sent to agent {}: {e}",
                task.id,
                agent.name
            );
            state.agents.release(&agent.name, task.id);
            give_back(state, agent, task.id).await;
            false
        }
    }
}

/// Puts a task claimed for `agent` but not sent back in the queue; if even
/// that fails, its lease expires as a lost agent's would.
async fn give_back<D: Database>(state: &AppState<D>, agent: &Candidate, task_id: TaskId) {
    if let Err(e) = requeue_undelivered(state, &agent.name, Undelivered::These(&[task_id])).await {
        tracing::warn!(
            "task {task_id} stays with agent {} until its lease expires: {e}",
            agent.name
        );
    }
}

/// Puts back in the queue tasks claimed for `agent` that never reached it
/// (see [`Database::requeue_undelivered`]), and wakes the dispatcher for them.
pub(crate) async fn requeue_undelivered<D: Database>(
    state: &AppState<D>,
    agent: &str,
    which: Undelivered<'_>,
) -> Result<(), StoreError> {
    if matches!(which, Undelivered::These([])) {
        return Ok(());
    }
    let requeued = state.db.requeue_undelivered(agent, which).await?;
    if !requeued.is_empty() {
        tracing::info!("tasks {requeued:?} never reached agent {agent}: queued again");
        state.metrics.tasks_requeued(requeued.len());
        state.work.notify_waiters();
    }
    Ok(())
}

/// Says so in the reason of queued tasks that no connected agent can take
/// (none has all the labels they need), and clears that once one can.
/// With `settled` false it only clears.
async fn note_unplaceable<D: Database>(state: &AppState<D>, settled: bool) {
    let sets = match state.db.queued_label_sets().await {
        Ok(sets) => sets,
        Err(e) => {
            tracing::warn!("listing what queued tasks need failed: {e}");
            return;
        }
    };
    let offered = state.agents.offered_label_sets();
    for needed in sets {
        let placeable = offered
            .iter()
            .any(|agent| needed.iter().all(|label| agent.contains(label)));
        let reason = match (placeable, settled) {
            (true, _) => None,
            (false, true) => Some(if offered.is_empty() {
                format!("{NO_AGENT_REASON} (no agent is connected, or all are draining)")
            } else {
                format!("{NO_AGENT_REASON} (labels: {})", needed.join(", "))
            }),
            (false, false) => continue,
        };
        match state.db.note_unplaceable(&needed, reason.as_deref()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                "{n} queued task(s) needing [{}]: {}",
                needed.join(", "),
                reason.as_deref().unwrap_or("an agent can take them now")
            ),
            Err(e) => tracing::warn!("noting unplaceable tasks failed: {e}"),
        }
    }
}

/// Everything an agent needs to run `task`, and the task's run and job.
async fn assignment<D: Database>(
    state: &AppState<D>,
    task: &TaskRow,
) -> Result<(Assignment, RunAndJob), String> {
    let both = run_and_job(state, task.run_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the task's run or job is gone")?;
    let (run, job) = (&both.0, &both.1);
    // The task's secrets and, for a git job, its repository credentials:
    // one query.
    let mut wanted = task.spec.secrets.clone();
    if job.spec.kind == JobKind::Git {
        wanted.extend(git_secret_names());
    }
    // A pull request from a fork runs code its author wrote: it gets only
    // the secrets set with `allow_forks` — the repository's credentials
    // included — however its run was made (webhook, approval, rerun).
    if let Some(pr) = run.pull_request.as_ref().filter(|pr| pr.from_fork) {
        let allowed: Vec<String> = state
            .db
            .list_secrets(job.id)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|s| s.allow_forks)
            .map(|s| s.name)
            .collect();
        if let Some(withheld) = task.spec.secrets.iter().find(|n| !allowed.contains(n)) {
            return Err(withheld_from_fork(withheld, pr.number, &job.spec.name));
        }
        wanted.retain(|name| allowed.contains(name));
    }
    let sealed = if wanted.is_empty() {
        Vec::new()
    } else {
        state
            .db
            .sealed_secrets(job.id, &wanted)
            .await
            .map_err(|e| e.to_string())?
    };
    let mut opened = Vec::new();
    for (name, value) in sealed {
        let value = open_secret(&state.key, job, &name, &value).map_err(|e| e.to_string())?;
        opened.push((name, value));
    }
    let git_credentials = git_credentials_from(
        opened
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str())),
    )
    .map(|auth| GitCredentials {
        username: auth.username,
        password: auth.password,
    });
    // Only the secrets the task names reach it.
    let secrets: Vec<Secret> = opened
        .into_iter()
        .filter(|(name, _)| task.spec.secrets.contains(name))
        .map(|(name, value)| Secret { name, value })
        .collect();
    if let Some(missing) = task
        .spec
        .secrets
        .iter()
        .find(|n| !secrets.iter().any(|s| &s.name == *n))
    {
        return Err(format!(
            "secret `{missing}` is not set for job `{}`",
            job.spec.name
        ));
    }
    let assignment = Assignment {
        task_id: task.id.0,
        task: Some((&task.spec).into()),
        job: job.spec.name.clone(),
        run_number: run.number.max(0) as u64,
        branch: run.branch.clone().unwrap_or_default(),
        sha: run.sha.clone().unwrap_or_default(),
        event: run.event.as_str().to_string(),
        repository: job.spec.repository.clone().unwrap_or_default(),
        secrets,
        lease_seconds: state.agents.lease.as_secs().max(1) as u32,
        attempt: task.attempt.max(1) as u32,
        git_credentials,
        pull_request: run.pull_request.as_ref().map(|pr| kiln_proto::PullRequest {
            number: pr.number,
            head_branch: pr.head_branch.clone(),
            base_branch: pr.base_branch.clone(),
        }),
        tag: run.tag.clone().unwrap_or_default(),
    };
    Ok((assignment, both))
}

/// Why a task of a fork's pull request does not get secret `name`.
fn withheld_from_fork(name: &str, number: i64, job: &str) -> String {
    format!(
        "secret `{name}` is withheld from this run: it builds pull request #{number} from a \
         fork, whose code could reveal it, and only secrets set with `allow_forks` reach \
         forks' runs (`kiln secret set {job} {name} --allow-forks` if it is safe to share)"
    )
}

/// The run and the job a task belongs to; `None` when either is gone.
pub(crate) async fn run_and_job<D: Database>(
    state: &AppState<D>,
    run_id: kiln_store::RunId,
) -> Result<Option<RunAndJob>, kiln_store::StoreError> {
    if let Some(both) = state.runs.get(run_id) {
        return Ok(Some(both));
    }
    let Some(run) = state.db.get_run_by_id(run_id).await? else {
        return Ok(None);
    };
    let Some(job) = state.db.get_job(&run.job).await? else {
        return Ok(None);
    };
    let both = Arc::new((run, job));
    state.runs.put(run_id, both.clone());
    Ok(Some(both))
}

/// Tells agents to stop tasks that were cancelled, or that they no longer
/// hold (the lease expired and the task went elsewhere or ended).
async fn push_cancels<D: Database>(state: &AppState<D>) {
    let running = state.agents.running_tasks();
    if running.is_empty() {
        return;
    }
    let ids: Vec<_> = running.iter().map(|r| r.task_id).collect();
    let holds = match state.db.task_holds(&ids).await {
        Ok(holds) => holds,
        Err(e) => {
            tracing::warn!("checking running tasks failed: {e}");
            return;
        }
    };
    // A task its agent finished between the two reads is out of the
    // registry by now (it leaves right after its end is committed): the
    // agent is not running it, so there is nothing to tell it.
    let still: std::collections::HashSet<_> = state
        .agents
        .running_tasks()
        .into_iter()
        .map(|r| (r.agent, r.task_id))
        .collect();
    for running in running {
        if !still.contains(&(running.agent.clone(), running.task_id)) {
            continue;
        }
        let hold = holds.iter().find(|h| h.id == running.task_id);
        let reason = match hold {
            Some(task) if task.status != Status::Running => {
                format!("the task is {}", task.status)
            }
            Some(task) if task.agent.as_deref() != Some(running.agent.as_str()) => {
                "the agent no longer holds the task".to_string()
            }
            Some(task) if task.cancel_requested => "cancelled".to_string(),
            Some(_) => continue,
            None => "the task was deleted".to_string(),
        };
        let message = ServerMessage {
            kind: Some(server_message::Kind::Cancel(Cancel {
                task_id: running.task_id.0,
                reason: reason.clone(),
            })),
        };
        if running.sender.try_send(Ok(message)).is_ok() {
            tracing::info!(
                "told agent {} to stop task {}: {reason}",
                running.agent,
                running.task_id
            );
            state
                .agents
                .mark_cancel_sent(&running.agent, running.session, running.task_id);
        }
    }
}
