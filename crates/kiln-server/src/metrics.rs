//! Prometheus metrics. Counts come from the database at scrape time (so
//! several servers agree); latencies are observed by this process.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{DateTime, Utc};
use kiln_store::Database;

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
    /// The agents connected over gRPC.
    remote: OnceLock<Arc<crate::scheduler::Registry>>,
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
    let runs = state.db.run_counts().await?;
    let tasks = state.db.task_counts().await?;
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
    let queued = tasks
        .iter()
        .find(|(s, _)| *s == kiln_store::Status::Queued)
        .map_or(0, |(_, n)| *n);
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
