//! The agents connected to this server process: what they announced, what
//! they run, and the sender into each one's `Session` stream.
//!
//! This is the only agent state kept in memory, and losing it loses
//! nothing: leases live in the database, so an agent that reconnects (here
//! or to another server) simply renews them, and one that does not is
//! ended by the lease sweeper.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kiln_proto::v1::ServerMessage;
use kiln_store::TaskId;
use tokio::sync::{Notify, mpsc};

/// A task assigned this recently may be missing from a heartbeat that
/// crossed its assignment on the wire; it is not dropped for that.
const RECENT: Duration = Duration::from_secs(5);
/// How long an agent that went away while holding tasks is still listed as `lost`.
const LOST_FOR: Duration = Duration::from_secs(600);

pub type SessionSender = mpsc::Sender<Result<ServerMessage, tonic::Status>>;

/// What an agent announced when its session opened.
#[derive(Debug, Clone, Default)]
pub struct Announce {
    pub labels: Vec<String>,
    pub capacity: u32,
    pub executors: Vec<String>,
    /// 0 when the agent did not say: resources are then not counted.
    pub cpus: f64,
    /// 0 when the agent did not say.
    pub memory_bytes: u64,
    pub draining: bool,
    /// Which process of the agent this is (see `SessionRequest.instance`).
    pub instance: String,
}

impl Announce {
    /// Its labels and one `executor:<kind>` label per executor, which tasks
    /// that need a kind of executor ask for (`kiln_store::placement_labels`).
    fn offered_labels(&self) -> Vec<String> {
        self.labels
            .iter()
            .cloned()
            .chain(
                self.executors
                    .iter()
                    .map(|kind| kiln_store::executor_label(kind)),
            )
            .collect()
    }
}

struct Connected {
    /// Tells this session apart from a newer one of the same name.
    session: u64,
    announce: Announce,
    /// Task id → (task name, cpus, memory) of what it runs.
    running: BTreeMap<TaskId, Held>,
    /// Tasks already told to cancel, so a cancel is pushed once.
    cancel_sent: HashSet<TaskId>,
    last_heartbeat: DateTime<Utc>,
    sender: SessionSender,
}

#[derive(Debug, Clone)]
struct Held {
    name: String,
    assigned_at: Instant,
    cpus: f64,
    memory_bytes: u64,
}

struct Gone {
    labels: Vec<String>,
    running: Vec<String>,
    at: DateTime<Utc>,
    last_heartbeat: DateTime<Utc>,
}

#[derive(Default)]
struct Inner {
    next_session: u64,
    connected: HashMap<String, Connected>,
    /// Agents whose session ended while they held tasks, for `lost`.
    gone: HashMap<String, Gone>,
}

/// An agent the dispatcher may give a task to.
pub struct Candidate {
    pub name: String,
    pub session: u64,
    pub labels: Vec<String>,
    /// How many more tasks it may take now.
    pub free: usize,
    pub sender: SessionSender,
}

/// A task to push a cancel for, or check.
pub struct RunningTask {
    pub agent: String,
    pub session: u64,
    pub task_id: TaskId,
    pub sender: SessionSender,
}

pub struct Registry {
    inner: Mutex<Inner>,
    /// Lease given with each assignment and renewed by each heartbeat.
    pub lease: Duration,
    /// Woken when an agent connects, leaves or frees capacity; the
    /// dispatcher waits on it beside `AppState::work`.
    pub changed: Notify,
}

impl Registry {
    pub fn new(lease: Duration) -> Registry {
        Registry {
            inner: Mutex::new(Inner::default()),
            lease,
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a session, replacing (and so ending the stream of) any
    /// earlier session of the same agent process. Returns the session's
    /// number and the tasks the replaced session was given that are not in
    /// `running` (what the agent says it runs): they never reached it.
    /// Refused (with why) while another process holds a live session under
    /// the name: two agents cannot share one.
    pub fn connect(
        &self,
        name: &str,
        announce: Announce,
        running: Vec<(TaskId, String)>,
        sender: SessionSender,
    ) -> Result<(u64, Vec<TaskId>), String> {
        let mut inner = self.lock();
        if let Some(live) = inner.connected.get(name)
            && live.announce.instance != announce.instance
            && !live.sender.is_closed()
        {
            return Err(format!(
                "agent `{name}` is connected already, from another process: two agents \
                 cannot share a name (give this one its own with --name)"
            ));
        }
        inner.next_session += 1;
        let session = inner.next_session;
        inner.gone.remove(name);
        let running_ids: HashSet<TaskId> = running.iter().map(|(id, _)| *id).collect();
        let running = running
            .into_iter()
            .map(|(id, name)| {
                (
                    id,
                    Held {
                        name,
                        assigned_at: Instant::now(),
                        cpus: 0.0,
                        memory_bytes: 0,
                    },
                )
            })
            .collect();
        // Dropping the old entry drops its sender, which ends its stream.
        let replaced = inner.connected.insert(
            name.to_string(),
            Connected {
                session,
                announce,
                running,
                cancel_sent: HashSet::new(),
                last_heartbeat: Utc::now(),
                sender,
            },
        );
        drop(inner);
        self.changed.notify_one();
        let stranded: Vec<TaskId> = replaced
            .map(|old| {
                old.running
                    .into_keys()
                    .filter(|id| !running_ids.contains(id))
                    .collect()
            })
            .unwrap_or_default();
        Ok((session, stranded))
    }

    /// Ends the session of agent `name`, if it has one (an admin removed
    /// the agent): dropping its sender ends its stream.
    pub fn remove(&self, name: &str) -> bool {
        let removed = self.lock().connected.remove(name).is_some();
        self.changed.notify_one();
        removed
    }

    /// Forgets a session when its stream ends, unless a newer one replaced it.
    pub fn disconnect(&self, name: &str, session: u64) {
        let mut inner = self.lock();
        if inner
            .connected
            .get(name)
            .is_some_and(|c| c.session == session)
            && let Some(agent) = inner.connected.remove(name)
            && !agent.running.is_empty()
        {
            inner.gone.insert(
                name.to_string(),
                Gone {
                    labels: agent.announce.labels,
                    running: agent.running.into_values().map(|h| h.name).collect(),
                    at: Utc::now(),
                    last_heartbeat: agent.last_heartbeat,
                },
            );
        }
        drop(inner);
        self.changed.notify_one();
    }

    /// The least-loaded connected agent that may take one more task, leaving
    /// out those in `skip` (already found to have nothing to claim).
    ///
    /// Resources: an agent that announced CPUs or memory is offered work
    /// only while what its running tasks asked for (`resources`) is below
    /// what it has. A claimed task may so overshoot by at most its own
    /// request; the alternative, claiming and handing back, would churn the
    /// queue. Capacity (a task count) is always a hard limit.
    pub fn candidate(&self, skip: &HashSet<String>) -> Option<Candidate> {
        let inner = self.lock();
        inner
            .connected
            .iter()
            .filter(|(name, agent)| {
                let announce = &agent.announce;
                let (cpus, memory) = agent.running.values().fold((0.0, 0u64), |(c, m), h| {
                    (c + h.cpus, m.saturating_add(h.memory_bytes))
                });
                !skip.contains(*name)
                    && !announce.draining
                    && (agent.running.len() as u64) < u64::from(announce.capacity)
                    && (announce.cpus <= 0.0 || cpus < announce.cpus)
                    && (announce.memory_bytes == 0 || memory < announce.memory_bytes)
                    && !agent.sender.is_closed()
            })
            .min_by(|(an, a), (bn, b)| {
                let load =
                    |c: &Connected| c.running.len() as f64 / f64::from(c.announce.capacity.max(1));
                load(a).total_cmp(&load(b)).then_with(|| an.cmp(bn))
            })
            .map(|(name, agent)| {
                let announce = &agent.announce;
                // Resources are counted task by task, so an agent that
                // announced them is given one at a time.
                let free = if announce.cpus > 0.0 || announce.memory_bytes > 0 {
                    1
                } else {
                    (announce.capacity as usize).saturating_sub(agent.running.len())
                };
                Candidate {
                    name: name.clone(),
                    session: agent.session,
                    labels: announce.offered_labels(),
                    free: free.max(1),
                    sender: agent.sender.clone(),
                }
            })
    }

    /// What each connected agent that takes new work offers: its labels
    /// and its executors' labels.
    pub fn offered_label_sets(&self) -> Vec<Vec<String>> {
        let inner = self.lock();
        inner
            .connected
            .values()
            .filter(|agent| !agent.announce.draining)
            .map(|agent| agent.announce.offered_labels())
            .collect()
    }

    /// Records a task given to an agent's session; false when that session
    /// is no longer the agent's (it ended, or a newer one replaced it).
    pub fn assign(&self, name: &str, session: u64, task: &kiln_store::TaskRow) -> bool {
        let mut inner = self.lock();
        let Some(agent) = inner.connected.get_mut(name) else {
            return false;
        };
        if agent.session != session {
            return false;
        }
        agent.running.insert(
            task.id,
            Held {
                name: task.name.clone(),
                assigned_at: Instant::now(),
                cpus: task.spec.resources.cpus.unwrap_or(0.0),
                memory_bytes: task.spec.resources.memory_bytes.unwrap_or(0),
            },
        );
        true
    }

    /// Forgets a task of an agent (finished, lost, or never delivered).
    pub fn release(&self, name: &str, task_id: TaskId) {
        let mut inner = self.lock();
        if let Some(agent) = inner.connected.get_mut(name) {
            agent.running.remove(&task_id);
            agent.cancel_sent.remove(&task_id);
        }
        drop(inner);
        self.changed.notify_one();
    }

    /// A heartbeat: the agent is alive, drains or not, and runs `held`
    /// (the tasks whose leases it still holds).
    pub fn heartbeat(&self, name: &str, draining: bool, held: &[TaskId]) {
        let mut inner = self.lock();
        let Some(agent) = inner.connected.get_mut(name) else {
            return;
        };
        agent.last_heartbeat = Utc::now();
        let was_draining = std::mem::replace(&mut agent.announce.draining, draining);
        let before = agent.running.len();
        // Tasks it no longer reports have ended or were lost; keep only
        // those, but do not forget a task assigned after the agent built
        // this heartbeat (it is too new to be in it).
        agent
            .running
            .retain(|id, h| held.contains(id) || h.assigned_at.elapsed() < RECENT);
        let after = agent.running.len();
        drop(inner);
        if was_draining != draining || after < before {
            self.changed.notify_one();
        }
    }

    /// Every task running on a connected agent that was not yet told to cancel.
    pub fn running_tasks(&self) -> Vec<RunningTask> {
        let inner = self.lock();
        inner
            .connected
            .iter()
            .flat_map(|(name, agent)| {
                agent
                    .running
                    .keys()
                    .filter(|id| !agent.cancel_sent.contains(id))
                    .map(|id| RunningTask {
                        agent: name.clone(),
                        session: agent.session,
                        task_id: *id,
                        sender: agent.sender.clone(),
                    })
            })
            .collect()
    }

    pub fn mark_cancel_sent(&self, name: &str, session: u64, task_id: TaskId) {
        let mut inner = self.lock();
        if let Some(agent) = inner.connected.get_mut(name)
            && agent.session == session
        {
            agent.cancel_sent.insert(task_id);
        }
    }

    /// The agents for `GET /api/v1/agents`.
    pub fn snapshot(&self) -> Vec<kiln_api::Agent> {
        let now = Utc::now();
        let missed = chrono::Duration::from_std(self.lease).unwrap_or_default();
        let mut inner = self.lock();
        let lost_for = chrono::Duration::from_std(LOST_FOR).unwrap_or_default();
        inner.gone.retain(|_, gone| now - gone.at < lost_for);
        let mut agents: Vec<kiln_api::Agent> = inner
            .connected
            .iter()
            .map(|(name, agent)| {
                // Missed heartbeats matter while it holds tasks (their leases
                // run out); an idle agent's open session is proof enough of life.
                let state = if !agent.running.is_empty() && now - agent.last_heartbeat > missed {
                    "lost"
                } else if agent.announce.draining {
                    "draining"
                } else if agent.running.is_empty() {
                    "idle"
                } else {
                    "busy"
                };
                kiln_api::Agent {
                    name: name.clone(),
                    labels: agent.announce.labels.clone(),
                    state: state.into(),
                    running_tasks: agent.running.values().map(|h| h.name.clone()).collect(),
                    last_heartbeat: Some(agent.last_heartbeat),
                }
            })
            .chain(inner.gone.iter().map(|(name, gone)| kiln_api::Agent {
                name: name.clone(),
                labels: gone.labels.clone(),
                state: "lost".into(),
                running_tasks: gone.running.clone(),
                last_heartbeat: Some(gone.last_heartbeat),
            }))
            .collect();
        agents.sort_by(|a, b| a.name.cmp(&b.name));
        agents
    }
}
