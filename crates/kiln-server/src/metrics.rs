//! Prometheus metrics. Counters and latencies are this process's, kept up
//! to date where the events happen (per server, as Prometheus expects of
//! several replicas). Gauges of what is stored come from the database, so
//! several servers agree, but never at the pace of scrapes: `/metrics`
//! needs no token by default, and a flood of scrapes must not become a
//! flood of table scans. Counts by status are read at most every
//! [`STATUS_COUNTS_FOR`], the queue depth (one count over the claim index)
//! at most every [`QUEUE_DEPTH_FOR`]; concurrent scrapes wait for one read
//! rather than each making their own.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kiln_store::{Database, Status};

use crate::error::ApiResult;
use crate::state::AppState;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

#[derive(Default)]
pub struct Metrics {
    runs_created: AtomicU64,
    /// Claimed tasks put back in the queue: their assignment never reached
    /// the agent.
    tasks_requeued: AtomicU64,
    /// Time from queued to started, per claimed task.
    queue_latency: Histogram,
    /// Time from started to finished, per finished task.
    task_duration: Histogram,
    /// Task attempts whose end this process recorded, by status.
    tasks_finished: Mutex<Vec<(Status, u64)>>,
    /// Attempts this process failed for going past a limit, by limit.
    limits_hit: Mutex<Vec<(&'static str, u64)>>,
    /// The agents connected over gRPC.
    remote: OnceLock<Arc<crate::scheduler::Registry>>,
    /// Counts by status, and when they were read.
    status_counts: tokio::sync::Mutex<Option<(Instant, StatusCounts)>>,
    /// The queue depth, and when it was read.
    queue_depth: tokio::sync::Mutex<Option<(Instant, i64)>>,
}

/// How long counts of runs and tasks by status are served before they are
/// read again: each read scans the tables.
pub const STATUS_COUNTS_FOR: Duration = Duration::from_secs(5);
/// How long the queue depth is served before it is counted again.
pub const QUEUE_DEPTH_FOR: Duration = Duration::from_secs(1);

#[derive(Clone, Default)]
struct StatusCounts {
    runs: Vec<(Status, i64)>,
    tasks: Vec<(Status, i64)>,
}

fn bump<K: PartialEq>(counts: &Mutex<Vec<(K, u64)>>, key: K) {
    let mut counts = counts.lock().unwrap_or_else(|e| e.into_inner());
    match counts.iter_mut().find(|(k, _)| *k == key) {
        Some((_, n)) => *n += 1,
        None => counts.push((key, 1)),
    }
}

#[derive(Default)]
struct Histogram(Mutex<(Vec<u64>, f64, u64)>);

impl Histogram {
    fn observe(&self, seconds: f64) {
        let mut inner = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if inner.0.is_empty() {
            inner.0 = vec![0; BUCKETS.len()];
        }
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                inner.0[i] += 1;
            }
        }
        inner.1 += seconds;
        inner.2 += 1;
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let inner = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, bound) in BUCKETS.iter().enumerate() {
            let count = inner.0.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}",
            inner.2, inner.1, inner.2
        );
    }
}

fn seconds_between(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Option<f64> {
    Some((to? - from?).num_milliseconds().max(0) as f64 / 1000.0)
}

impl Metrics {
    pub fn run_created(&self) {
        self.runs_created.fetch_add(1, Ordering::Relaxed);
    }

    pub fn tasks_requeued(&self, count: usize) {
        self.tasks_requeued
            .fetch_add(count as u64, Ordering::Relaxed);
    }

    pub fn task_started(
        &self,
        queued_at: Option<DateTime<Utc>>,
        started_at: Option<DateTime<Utc>>,
    ) {
        if let Some(seconds) = seconds_between(queued_at, started_at) {
            self.queue_latency.observe(seconds);
        }
    }

    pub fn task_finished(&self, started_at: Option<DateTime<Utc>>, finished_at: DateTime<Utc>) {
        if let Some(seconds) = seconds_between(started_at, Some(finished_at)) {
            self.task_duration.observe(seconds);
        }
    }

    /// An attempt's end was recorded by this process.
    pub fn task_ended(&self, status: Status) {
        bump(&self.tasks_finished, status);
    }

    /// This process failed an attempt for going past `limit` (its flag).
    pub fn limit_hit(&self, limit: &'static str) {
        bump(&self.limits_hit, limit);
    }

    async fn status_counts<D: Database>(&self, db: &D) -> kiln_store::Result<StatusCounts> {
        let mut cached = self.status_counts.lock().await;
        if let Some((at, counts)) = &*cached
            && at.elapsed() < STATUS_COUNTS_FOR
        {
            return Ok(counts.clone());
        }
        let counts = StatusCounts {
            runs: db.run_counts().await?,
            tasks: db.task_counts().await?,
        };
        *cached = Some((Instant::now(), counts.clone()));
        Ok(counts)
    }

    async fn queue_depth<D: Database>(&self, db: &D) -> kiln_store::Result<i64> {
        let mut cached = self.queue_depth.lock().await;
        if let Some((at, depth)) = *cached
            && at.elapsed() < QUEUE_DEPTH_FOR
        {
            return Ok(depth);
        }
        let depth = db.queue_depth().await?;
        *cached = Some((Instant::now(), depth));
        Ok(depth)
    }

    /// Lists the agents of `registry` too from now on.
    pub fn attach_registry(&self, registry: Arc<crate::scheduler::Registry>) {
        let _ = self.remote.set(registry);
    }

    pub fn agents(&self) -> Vec<kiln_api::Agent> {
        self.remote
            .get()
            .map(|registry| registry.snapshot())
            .unwrap_or_default()
    }
}

pub async fn render<D: Database>(state: &AppState<D>) -> ApiResult<String> {
    let mut out = String::new();
    let StatusCounts { runs, tasks } = state.metrics.status_counts(&state.db).await?;
    out.push_str("# HELP kiln_runs Runs stored, by status.\n# TYPE kiln_runs gauge\n");
    for status in kiln_api::STATUSES {
        let count = runs
            .iter()
            .find(|(s, _)| s.as_str() == status)
            .map_or(0, |(_, n)| *n);
        let _ = writeln!(out, "kiln_runs{{status=\"{status}\"}} {count}");
    }
    out.push_str("# HELP kiln_tasks Tasks stored, by status.\n# TYPE kiln_tasks gauge\n");
    for status in kiln_api::STATUSES {
        let count = tasks
            .iter()
            .find(|(s, _)| s.as_str() == status)
            .map_or(0, |(_, n)| *n);
        let _ = writeln!(out, "kiln_tasks{{status=\"{status}\"}} {count}");
    }
    let queued = state.metrics.queue_depth(&state.db).await?;
    let _ = writeln!(
        out,
        "# HELP kiln_queue_depth Tasks waiting for an agent.\n# TYPE kiln_queue_depth gauge\nkiln_queue_depth {queued}"
    );
    let created = state.metrics.runs_created.load(Ordering::Relaxed);
    let _ = writeln!(
        out,
        "# HELP kiln_runs_created_total Runs created by this server process.\n# TYPE kiln_runs_created_total counter\nkiln_runs_created_total {created}"
    );
    let requeued = state.metrics.tasks_requeued.load(Ordering::Relaxed);
    let _ = writeln!(
        out,
        "# HELP kiln_tasks_requeued_total Claimed tasks put back in the queue because their assignment never reached the agent.\n# TYPE kiln_tasks_requeued_total counter\nkiln_tasks_requeued_total {requeued}"
    );
    out.push_str(
        "# HELP kiln_tasks_finished_total Task attempts whose end this server process recorded, by status.\n# TYPE kiln_tasks_finished_total counter\n",
    );
    {
        let finished = state
            .metrics
            .tasks_finished
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for status in kiln_api::STATUSES {
            let count = finished
                .iter()
                .find(|(s, _)| s.as_str() == status)
                .map_or(0, |(_, n)| *n);
            let _ = writeln!(
                out,
                "kiln_tasks_finished_total{{status=\"{status}\"}} {count}"
            );
        }
    }
    out.push_str(
        "# HELP kiln_task_limits_hit_total Task attempts this server process failed for going past a limit, by its flag.\n# TYPE kiln_task_limits_hit_total counter\n",
    );
    {
        let hit = state
            .metrics
            .limits_hit
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for limit in [
            "max-log-bytes",
            "max-artifact-bytes",
            "max-artifact-file-bytes",
        ] {
            let count = hit.iter().find(|(l, _)| *l == limit).map_or(0, |(_, n)| *n);
            let _ = writeln!(
                out,
                "kiln_task_limits_hit_total{{limit=\"{limit}\"}} {count}"
            );
        }
    }
    state.metrics.queue_latency.render(
        "kiln_task_queue_seconds",
        "Time from queued to started.",
        &mut out,
    );
    state.metrics.task_duration.render(
        "kiln_task_duration_seconds",
        "Time from started to finished.",
        &mut out,
    );
    Ok(out)
}
