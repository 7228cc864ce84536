//! The run and job of recently assigned or finished tasks, shared by the
//! scheduler and the agent service.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_store::{Job, Run, RunId};

/// The run and job of recently assigned or finished tasks: the tasks of one
/// run come in bursts, and each needs both (immutable but for the job's
/// settings, for which a moment's staleness is harmless).
#[derive(Default)]
pub struct RunCache {
    entries: Mutex<Vec<(RunId, Instant, RunAndJob)>>,
}

/// A run and its job, shared between the cache and its users.
pub type RunAndJob = Arc<(Run, Job)>;

/// How long a cached run and job are used.
const RUN_CACHE_FOR: Duration = Duration::from_secs(2);
/// How many runs are kept.
const RUN_CACHE_SIZE: usize = 16;

impl RunCache {
    pub fn get(&self, run_id: RunId) -> Option<RunAndJob> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .iter()
            .find(|(id, at, _)| *id == run_id && at.elapsed() < RUN_CACHE_FOR)
            .map(|(_, _, both)| both.clone())
    }

    pub fn put(&self, run_id: RunId, both: RunAndJob) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|(id, at, _)| *id != run_id && at.elapsed() < RUN_CACHE_FOR);
        if entries.len() >= RUN_CACHE_SIZE {
            entries.remove(0);
        }
        entries.push((run_id, Instant::now(), both));
    }
}
