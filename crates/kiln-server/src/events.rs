//! The change feed behind `GET /api/v1/events`: small events saying that a
//! run, a task or a step changed status, numbered and kept in a bounded
//! ring, and sent to subscribers over a bounded broadcast channel.
//!
//! Where they come from, cheapest first:
//! - the code that changed something publishes what it has in hand: a run
//!   made ([`crate::trigger`]), a task handed to an agent
//!   ([`crate::scheduler`]), a step or a task's end reported by its agent
//!   ([`crate::grpc`]), a run cancelled (`api/runs.rs`). No database read
//!   is added to those paths for an event.
//! - what follows from a change in the database's own transaction — a run's
//!   status, dependants released or skipped, tasks ended by the lease
//!   sweeper or a deadline — is found by the [`run_refresher`]: those paths
//!   mark the run as touched, and it reads each touched run once per
//!   [`REFRESH_EVERY`] (off the agents' paths, however many of its tasks
//!   changed) and publishes what differs from what was published before.
//!
//! A [`Change`] is plain data (serde), whoever made it: with several
//! servers on one PostgreSQL, changes made through another server will
//! reach this one's subscribers by the database (e.g. `LISTEN/NOTIFY`
//! carrying a [`Change`] as JSON), and such a source only has to call
//! [`EventHub::publish`]. Sequence numbers are this server's: each server
//! numbers the changes it sends.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use kiln_store::{Database, JobId, Run, RunDetail, RunId, Status, StepRow, TaskId, TaskRow};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// How many changes are kept for clients that reconnect with
/// `Last-Event-ID`, and how many a subscriber may fall behind by before it
/// is told to reload.
pub const RING_SIZE: usize = 4096;

/// How often the runs touched since the last look are read again.
pub const REFRESH_EVERY: Duration = Duration::from_millis(200);

/// Tasks whose place (job, run, name) is remembered for their step events;
/// past this the memory is dropped and a step of a forgotten task costs a
/// lookup (off the agent's call).
const PLACES_KEPT: usize = 16_384;

/// Runs whose last published state is remembered; past this the oldest
/// half is forgotten (a forgotten run is only published at its next change).
const RUNS_KEPT: usize = 4096;

/// Timing of the `/api/v1/events` streams.
#[derive(Debug, Clone, Copy)]
pub struct EventSettings {
    /// An idle stream gets a comment this often, so proxies and browsers
    /// keep it open and a dead connection is noticed.
    pub keep_alive: Duration,
    /// Changes to one client are sent at most this often, coalesced.
    pub flush_every: Duration,
    /// How long a caller's access to a job (and the caller's credential)
    /// is trusted before it is checked again.
    pub access_for: Duration,
}

impl Default for EventSettings {
    fn default() -> Self {
        EventSettings {
            keep_alive: Duration::from_secs(15),
            flush_every: Duration::from_millis(250),
            access_for: Duration::from_secs(5),
        }
    }
}

/// One change, as sent to clients (JSON, with `kind`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    Run(RunChange),
    Task(TaskChange),
    Step(StepChange),
}

/// A run was made or its status changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunChange {
    pub job: String,
    pub number: i64,
    pub status: Status,
    pub branch: Option<String>,
    pub sha: Option<String>,
    pub event: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A task's status (or attempt) changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskChange {
    pub job: String,
    pub run: i64,
    pub task: String,
    pub status: Status,
    pub attempt: i64,
    pub reason: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A step of a running task started or ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepChange {
    pub job: String,
    pub run: i64,
    pub task: String,
    pub attempt: i64,
    /// The step's position in its task, from 0.
    pub index: i64,
    pub name: String,
    pub status: Status,
    pub exit_code: Option<i64>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl Change {
    /// The job the change belongs to: what access is decided on.
    pub fn job(&self) -> &str {
        match self {
            Change::Run(run) => &run.job,
            Change::Task(task) => &task.job,
            Change::Step(step) => &step.job,
        }
    }

    /// The run's number within its job.
    pub fn run(&self) -> i64 {
        match self {
            Change::Run(run) => run.number,
            Change::Task(task) => task.run,
            Change::Step(step) => step.run,
        }
    }

    /// What a later change replaces: the run, the task, or the step.
    pub fn key(&self) -> ChangeKey {
        let (task, step) = match self {
            Change::Run(_) => (None, None),
            Change::Task(task) => (Some(task.task.clone()), None),
            Change::Step(step) => (Some(step.task.clone()), Some(step.index)),
        };
        ChangeKey {
            job: self.job().to_string(),
            run: self.run(),
            task,
            step,
        }
    }
}

/// See [`Change::key`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChangeKey {
    pub job: String,
    pub run: i64,
    pub task: Option<String>,
    pub step: Option<i64>,
}

/// A change with its sequence number on this server.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub id: u64,
    pub change: Change,
}

/// Where a task is: what its step events carry.
#[derive(Debug, Clone)]
struct Place {
    job: String,
    run: i64,
    task: String,
    attempt: i64,
}

/// What was last published of a run, so the refresher publishes only what
/// is new. A task's `(attempt, rank)` only grows, so a read that raced a
/// newer publish is not taken for a change back.
#[derive(Debug, Clone)]
struct Known {
    job_id: JobId,
    number: i64,
    status: Status,
    tasks: HashMap<String, (i64, u8)>,
}

/// How far a status is along an attempt: blocked or pending, queued,
/// running, ended.
fn rank(status: Status) -> u8 {
    match status {
        Status::Blocked | Status::Pending => 0,
        Status::Queued => 1,
        Status::Running => 2,
        _ => 3,
    }
}

struct Ring {
    /// The id the next change gets.
    next: u64,
    kept: VecDeque<Arc<Published>>,
}

/// What a new subscriber gets: the changes it missed (when it said which
/// it saw last and they are still kept), or word that it must reload.
pub struct Subscription {
    pub receiver: broadcast::Receiver<Arc<Published>>,
    pub replay: Vec<Arc<Published>>,
    /// Set when the changes after `Last-Event-ID` are no longer all kept
    /// (or the id is not this server's): the client must reload.
    pub missed: bool,
    /// The id of the newest change published so far.
    pub latest: u64,
}

/// The change feed: see the module's documentation.
pub struct EventHub {
    ring: Mutex<Ring>,
    sender: broadcast::Sender<Arc<Published>>,
    pub settings: EventSettings,
    /// Runs to read again (with all their tasks, or just the run's row),
    /// and the refresher's wake-up.
    touched: Mutex<HashMap<RunId, Depth>>,
    refresh: Notify,
    known: Mutex<HashMap<RunId, Known>>,
    places: Mutex<HashMap<TaskId, Place>>,
    /// Ends open streams when the server stops, so a graceful shutdown
    /// does not wait for clients that never hang up.
    pub stopped: CancellationToken,
}

impl Default for EventHub {
    fn default() -> Self {
        EventHub::new(EventSettings::default())
    }
}

impl EventHub {
    pub fn new(settings: EventSettings) -> EventHub {
        let (sender, _) = broadcast::channel(RING_SIZE);
        // Ids start at the clock's microseconds, so those of a server that
        // restarted are above any its previous life gave: a client that
        // resumes with an old one is told to reload, not given the wrong
        // changes.
        let first = u64::try_from(Utc::now().timestamp_micros())
            .unwrap_or(1)
            .max(1);
        EventHub {
            ring: Mutex::new(Ring {
                next: first,
                kept: VecDeque::with_capacity(RING_SIZE),
            }),
            sender,
            settings,
            touched: Mutex::default(),
            refresh: Notify::new(),
            known: Mutex::default(),
            places: Mutex::default(),
            stopped: CancellationToken::new(),
        }
    }

    /// Numbers `change`, keeps it in the ring and sends it to subscribers;
    /// returns its id. Cheap: a lock and a clone of an `Arc`.
    pub fn publish(&self, change: Change) -> u64 {
        let mut ring = lock(&self.ring);
        let id = ring.next;
        ring.next += 1;
        let published = Arc::new(Published { id, change });
        if ring.kept.len() == RING_SIZE {
            ring.kept.pop_front();
        }
        ring.kept.push_back(published.clone());
        // Sent under the lock, so a subscriber's replay and its receiver
        // neither overlap nor leave a gap. No subscriber is no error.
        let _ = self.sender.send(published);
        id
    }

    /// Subscribes; with `after` (the `Last-Event-ID` a client resumes
    /// from), the kept changes after it come first.
    pub fn subscribe(&self, after: Option<u64>) -> Subscription {
        let ring = lock(&self.ring);
        let receiver = self.sender.subscribe();
        let latest = ring.next - 1;
        let (replay, missed) = match after {
            None => (Vec::new(), false),
            Some(after) if after > latest => (Vec::new(), true),
            Some(after) => {
                let oldest = ring.kept.front().map_or(ring.next, |p| p.id);
                if after + 1 < oldest {
                    (Vec::new(), true)
                } else {
                    let replay = ring.kept.iter().filter(|p| p.id > after).cloned().collect();
                    (replay, false)
                }
            }
        };
        Subscription {
            receiver,
            replay,
            missed,
            latest,
        }
    }

    /// The id of the newest change published so far.
    pub fn latest(&self) -> u64 {
        lock(&self.ring).next - 1
    }

    /// A run and its tasks as a change just left them (made, cancelled,
    /// or read again by the refresher): publishes what is new since the
    /// last publish. A run not seen before is published whole, its tasks
    /// taken as they are (a client that shows it reads them).
    pub fn run_detail(&self, detail: &RunDetail) {
        let run = &detail.run;
        let mut changes = Vec::new();
        {
            let mut known = lock(&self.known);
            match known.get_mut(&run.id) {
                Some(seen) => {
                    if rank(run.status) > rank(seen.status)
                        || (run.status.is_terminal() && run.status != seen.status)
                    {
                        seen.status = run.status;
                        changes.push(Change::Run(run_change(run)));
                    }
                    for task in &detail.tasks {
                        let now = (task.attempt, rank(task.status));
                        let newer = seen
                            .tasks
                            .get(&task.name)
                            .is_none_or(|before| now > *before);
                        if newer {
                            seen.tasks.insert(task.name.clone(), now);
                            changes.push(Change::Task(task_change(run, task)));
                        }
                    }
                }
                None => {
                    if known.len() >= RUNS_KEPT {
                        // Forget the oldest half (lowest ids).
                        let mut ids: Vec<RunId> = known.keys().copied().collect();
                        ids.sort_unstable();
                        for id in &ids[..ids.len() / 2] {
                            known.remove(id);
                        }
                    }
                    known.insert(
                        run.id,
                        Known {
                            job_id: run.job_id,
                            number: run.number,
                            status: run.status,
                            tasks: detail
                                .tasks
                                .iter()
                                .map(|t| (t.name.clone(), (t.attempt, rank(t.status))))
                                .collect(),
                        },
                    );
                    changes.push(Change::Run(run_change(run)));
                }
            }
            // An ended run changes no more (a rerun is a new run).
            if run.status.is_terminal() {
                known.remove(&run.id);
            }
        }
        for change in changes {
            self.publish(change);
        }
    }

    /// A task handed to an agent: published at once, and its place kept
    /// for its steps; its run is read again (it may have started).
    pub fn task_started(&self, run: &Run, task: &TaskRow) {
        let place = Place {
            job: run.job.clone(),
            run: run.number,
            task: task.name.clone(),
            attempt: task.attempt,
        };
        {
            let mut places = lock(&self.places);
            if places.len() >= PLACES_KEPT {
                places.clear();
            }
            places.insert(task.id, place);
        }
        self.note_task(run.id, &task.name, task.attempt, task.status);
        self.publish(Change::Task(TaskChange {
            job: run.job.clone(),
            run: run.number,
            task: task.name.clone(),
            status: task.status,
            attempt: task.attempt,
            reason: None,
            started_at: task.started_at,
            finished_at: None,
        }));
        self.touch(run.id);
    }

    /// A task's attempt ended as its agent (or the dispatcher) reported:
    /// `status` is the task's status now (`queued` when it is retried, as
    /// its next attempt). Its run is read again for what followed.
    pub fn task_ended(&self, ended: TaskEnd<'_>) {
        let TaskEnd {
            job,
            run_id,
            run,
            task_id,
            task,
            attempt,
            status,
            reason,
            started_at,
            at,
        } = ended;
        let retried = !status.is_terminal();
        let attempt = if retried { attempt + 1 } else { attempt };
        lock(&self.places).remove(&task_id);
        self.note_task(run_id, task, attempt, status);
        self.publish(Change::Task(TaskChange {
            job: job.to_string(),
            run,
            task: task.to_string(),
            status,
            attempt,
            reason: reason.map(str::to_string),
            started_at: if retried { None } else { started_at },
            finished_at: (!retried).then_some(at),
        }));
        self.touch(run_id);
    }

    /// A step update an agent reported and the store took; `false` when
    /// the task's place is not known here (it was handed out before this
    /// server started): the caller looks it up, off its path.
    pub fn step(&self, task_id: TaskId, step: &StepRow) -> bool {
        let Some(place) = lock(&self.places).get(&task_id).cloned() else {
            return false;
        };
        self.publish_step(&place, step);
        true
    }

    fn publish_step(&self, place: &Place, step: &StepRow) {
        self.publish(Change::Step(StepChange {
            job: place.job.clone(),
            run: place.run,
            task: place.task.clone(),
            attempt: place.attempt,
            index: step.index,
            name: step.name.clone(),
            status: step.status,
            exit_code: step.exit_code,
            started_at: step.started_at,
            finished_at: step.finished_at,
        }));
    }

    /// Marks a run to be read again by the refresher, for its status (and
    /// its tasks' when some wait on others: their release or skip).
    pub fn touch(&self, run_id: RunId) {
        self.touch_as(run_id, Depth::Run);
    }

    /// Marks a run to be read again whole: its tasks changed in ways this
    /// server did not publish (expired, ended by a deadline).
    pub fn touch_all(&self, run_id: RunId) {
        self.touch_as(run_id, Depth::Tasks);
    }

    fn touch_as(&self, run_id: RunId, depth: Depth) {
        let mut touched = lock(&self.touched);
        let entry = touched.entry(run_id).or_insert(depth);
        *entry = (*entry).max(depth);
        drop(touched);
        self.refresh.notify_one();
    }

    /// A run's row read again: publishes its status if it moved on.
    fn run_row(&self, run: &Run) {
        let moved = {
            let mut known = lock(&self.known);
            let moved = match known.get_mut(&run.id) {
                Some(seen) if rank(run.status) > rank(seen.status) => {
                    seen.status = run.status;
                    true
                }
                Some(_) => false,
                None => true,
            };
            if run.status.is_terminal() {
                known.remove(&run.id);
            }
            moved
        };
        if moved {
            self.publish(Change::Run(run_change(run)));
        }
    }

    fn note_task(&self, run_id: RunId, task: &str, attempt: i64, status: Status) {
        if let Some(seen) = lock(&self.known).get_mut(&run_id) {
            let now = (attempt, rank(status));
            let before = seen.tasks.entry(task.to_string()).or_insert(now);
            *before = (*before).max(now);
        }
    }
}

/// How much of a touched run the refresher reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Depth {
    /// The run's row; its tasks too if some still wait on others.
    Run,
    /// The run and all its tasks.
    Tasks,
}

/// What [`EventHub::task_ended`] publishes: what the end's caller holds.
pub struct TaskEnd<'a> {
    pub job: &'a str,
    pub run_id: RunId,
    pub run: i64,
    pub task_id: TaskId,
    pub task: &'a str,
    /// The attempt that ended.
    pub attempt: i64,
    /// The task's status now.
    pub status: Status,
    pub reason: Option<&'a str>,
    pub started_at: Option<DateTime<Utc>>,
    pub at: DateTime<Utc>,
}

fn run_change(run: &Run) -> RunChange {
    RunChange {
        job: run.job.clone(),
        number: run.number,
        status: run.status,
        branch: run.branch.clone(),
        sha: run.sha.clone(),
        event: run.event.to_string(),
        created_at: run.created_at,
        started_at: run.started_at,
        finished_at: run.finished_at,
    }
}

fn task_change(run: &Run, task: &TaskRow) -> TaskChange {
    TaskChange {
        job: run.job.clone(),
        run: run.number,
        task: task.name.clone(),
        status: task.status,
        attempt: task.attempt,
        reason: task.reason.clone(),
        started_at: task.started_at,
        finished_at: task.finished_at,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads the runs touched since its last round — once each, however many
/// changes touched them — and publishes what changed, until `shutdown`;
/// then ends the open event streams.
pub async fn run_refresher<D: Database>(state: AppState<D>, shutdown: CancellationToken) {
    let hub = state.events.clone();
    loop {
        tokio::select! {
            _ = hub.refresh.notified() => {}
            _ = shutdown.cancelled() => break,
        }
        // Let a burst of changes gather: one read serves them all.
        tokio::select! {
            _ = tokio::time::sleep(REFRESH_EVERY) => {}
            _ = shutdown.cancelled() => break,
        }
        let runs: Vec<(RunId, Depth)> = lock(&hub.touched).drain().collect();
        for (run_id, depth) in runs {
            if let Err(e) = refresh(&state, run_id, depth).await {
                tracing::warn!("reading run {run_id} for its events failed: {e}");
            }
        }
    }
    hub.stopped.cancel();
}

/// Reads a touched run again and publishes what moved. Its tasks are read
/// (a query that grows with the run) only when something but this
/// server's own publishing may have changed them: tasks waiting on others
/// (released or skipped by an end), or a `Depth::Tasks` touch; a wide run
/// of independent tasks costs one row per round.
async fn refresh<D: Database>(
    state: &AppState<D>,
    run_id: RunId,
    depth: Depth,
) -> kiln_store::Result<()> {
    let seen = lock(&state.events.known).get(&run_id).map(|k| {
        let waiting = k.tasks.values().any(|(_, rank)| *rank == 0);
        (k.job_id, k.number, waiting)
    });
    let (job_id, number) = match seen {
        Some((_, _, false)) if depth == Depth::Run => {
            if let Some(run) = state.db.get_run_by_id(run_id).await? {
                state.events.run_row(&run);
            }
            return Ok(());
        }
        Some((job_id, number, _)) => (job_id, number),
        None => match state.db.get_run_by_id(run_id).await? {
            Some(run) => (run.job_id, run.number),
            None => return Ok(()),
        },
    };
    if let Some(detail) = state.db.get_run(job_id, number).await? {
        state.events.run_detail(&detail);
    }
    Ok(())
}

/// Marks the runs of `tasks` (ended by the sweeper, or by an agent's
/// removal) to be read again.
pub async fn touch_tasks<D: Database>(state: &AppState<D>, tasks: &[TaskId]) {
    if tasks.is_empty() {
        return;
    }
    match state.db.task_holds(tasks).await {
        Ok(holds) => {
            for hold in holds {
                state.events.touch_all(hold.run_id);
            }
        }
        Err(e) => tracing::warn!("finding the runs of expired tasks failed: {e}"),
    }
}

/// Publishes a step of a task whose place this server does not know (it
/// was handed out before this server started): looked up on its own
/// task, so the agent's call does not wait for it.
pub fn step_of_unknown_task<D: Database>(state: &AppState<D>, task_id: TaskId, step: StepRow) {
    let state = state.clone();
    tokio::spawn(async move {
        match place_of(&state, task_id).await {
            Ok(Some(place)) => {
                {
                    let mut places = lock(&state.events.places);
                    if places.len() >= PLACES_KEPT {
                        places.clear();
                    }
                    places.insert(task_id, place.clone());
                }
                state.events.publish_step(&place, &step);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("finding task {task_id} for its step event failed: {e}"),
        }
    });
}

async fn place_of<D: Database>(
    state: &AppState<D>,
    task_id: TaskId,
) -> kiln_store::Result<Option<Place>> {
    let Some(hold) = state.db.task_holds(&[task_id]).await?.into_iter().next() else {
        return Ok(None);
    };
    let both = crate::scheduler::run_and_job(state, hold.run_id).await?;
    Ok(both.map(|both| Place {
        job: both.0.job.clone(),
        run: both.0.number,
        task: hold.name,
        attempt: hold.attempt,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(name: &str, status: Status) -> Change {
        Change::Task(TaskChange {
            job: "app".into(),
            run: 1,
            task: name.into(),
            status,
            attempt: 1,
            reason: None,
            started_at: None,
            finished_at: None,
        })
    }

    #[test]
    fn ids_grow_and_a_resume_gets_exactly_what_it_missed() {
        let hub = EventHub::default();
        let first = hub.publish(task("a", Status::Queued));
        let second = hub.publish(task("a", Status::Running));
        let third = hub.publish(task("a", Status::Success));
        assert_eq!((second, third), (first + 1, first + 2));
        let resumed = hub.subscribe(Some(first));
        assert!(!resumed.missed);
        let ids: Vec<u64> = resumed.replay.iter().map(|p| p.id).collect();
        assert_eq!(ids, vec![second, third]);
        assert!(hub.subscribe(Some(third)).replay.is_empty());
        // An id from the future (another server, or an earlier life of
        // this one with a clock set back) is not trusted.
        assert!(hub.subscribe(Some(third + 10)).missed);
    }

    #[test]
    fn an_id_older_than_the_ring_means_reload() {
        let hub = EventHub::default();
        let first = hub.publish(task("a", Status::Queued));
        // The one after `first` goes too.
        for _ in 0..=RING_SIZE {
            hub.publish(task("a", Status::Running));
        }
        let resumed = hub.subscribe(Some(first));
        assert!(resumed.missed);
        assert!(resumed.replay.is_empty());
        // The oldest kept one's predecessor is still complete.
        let oldest = hub.latest() - RING_SIZE as u64 + 1;
        let resumed = hub.subscribe(Some(oldest - 1));
        assert!(!resumed.missed);
        assert_eq!(resumed.replay.len(), RING_SIZE);
    }

    #[test]
    fn a_change_is_plain_json_with_its_kind() {
        let json = serde_json::to_value(task("build", Status::Running)).unwrap();
        assert_eq!(json["kind"], "task");
        assert_eq!(json["task"], "build");
        assert_eq!(json["status"], "running");
        let back: Change = serde_json::from_value(json).unwrap();
        assert_eq!(back, task("build", Status::Running));
    }
}
