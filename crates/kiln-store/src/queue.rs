//! The queue's rules, independent of any database: after a task ends, which
//! of its run's tasks become `queued` or `skipped`, and what the run's
//! status is. Backends load a run's tasks, call [`settle`], and write back
//! what changed, in the same transaction.

use kiln_pipeline::Status;

/// The fields of a task the rules look at.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskState {
    pub name: String,
    pub status: Status,
    pub needs: Vec<String>,
    pub allow_failure: bool,
    pub reason: Option<String>,
}

impl TaskState {
    /// Whether dependants may run after this task.
    pub fn passed(&self) -> bool {
        self.status == Status::Success || (self.allow_failure && self.status == Status::Failure)
    }
}

/// Moves `pending` tasks whose needs all passed to `queued`, and skips those
/// with a need that ended without passing (cascading). Returns the indexes
/// of the tasks it changed.
pub fn settle(tasks: &mut [TaskState]) -> Vec<usize> {
    let mut changed = Vec::new();
    loop {
        let mut progress = false;
        for i in 0..tasks.len() {
            if tasks[i].status != Status::Pending {
                continue;
            }
            let mut all_passed = true;
            let mut blocker = None;
            for need in &tasks[i].needs {
                match tasks.iter().find(|t| &t.name == need) {
                    Some(t) if t.passed() => {}
                    Some(t) if t.status.is_terminal() => {
                        blocker = Some(format!("needs `{}`, which ended {}", t.name, t.status));
                        break;
                    }
                    Some(_) => all_passed = false,
                    // An unknown need cannot happen for a validated pipeline;
                    // treat it as never passing rather than running blind.
                    None => {
                        blocker = Some(format!("needs `{need}`, which is not in this run"));
                        break;
                    }
                }
            }
            if let Some(reason) = blocker {
                tasks[i].status = Status::Skipped;
                tasks[i].reason = Some(reason);
            } else if all_passed {
                tasks[i].status = Status::Queued;
            } else {
                continue;
            }
            changed.push(i);
            progress = true;
        }
        if !progress {
            break;
        }
    }
    changed.sort_unstable();
    changed.dedup();
    changed
}

/// The status of a run from its tasks: `running` while any task has not
/// ended (or `queued` if none started yet), else the worst outcome among
/// tasks that did not pass (`allow-failure` failures pass).
pub fn run_status(tasks: &[TaskState]) -> Status {
    if tasks.iter().any(|t| t.status == Status::Running) {
        return Status::Running;
    }
    if tasks.iter().any(|t| !t.status.is_terminal()) {
        let started = tasks
            .iter()
            .any(|t| t.status.is_terminal() && t.status != Status::Skipped);
        return if started {
            Status::Running
        } else {
            Status::Queued
        };
    }
    for status in [
        Status::Error,
        Status::TimedOut,
        Status::Failure,
        Status::Cancelled,
    ] {
        if tasks.iter().any(|t| t.status == status && !t.passed()) {
            return status;
        }
    }
    Status::Success
}

/// The run's status from how many of its tasks are in each status, when
/// that is enough to know it: no task is `pending` (so [`settle`] has
/// nothing to release or skip) and some task has not ended (so no outcome
/// is due yet). `None` means the caller must load the tasks and settle.
///
/// This keeps ending one task of a wide run cheap: a run of 2 000
/// independent tasks would otherwise load all of them after each one ends.
pub fn status_from_counts(counts: &[(Status, i64)]) -> Option<Status> {
    let count = |wanted: Status| {
        counts
            .iter()
            .filter(|(status, _)| *status == wanted)
            .map(|(_, n)| *n)
            .sum::<i64>()
    };
    if count(Status::Pending) > 0 {
        return None;
    }
    if count(Status::Running) > 0 {
        return Some(Status::Running);
    }
    if count(Status::Queued) == 0 {
        return None;
    }
    let started = counts
        .iter()
        .any(|(status, n)| *n > 0 && status.is_terminal() && *status != Status::Skipped);
    Some(if started {
        Status::Running
    } else {
        Status::Queued
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(name: &str, status: Status, needs: &[&str]) -> TaskState {
        TaskState {
            name: name.into(),
            status,
            needs: needs.iter().map(|s| s.to_string()).collect(),
            allow_failure: false,
            reason: None,
        }
    }

    #[test]
    fn success_releases_and_failure_skips_transitively() {
        let mut tasks = vec![
            task("a", Status::Success, &[]),
            task("b", Status::Failure, &[]),
            task("c", Status::Pending, &["a"]),
            task("d", Status::Pending, &["b"]),
            task("e", Status::Pending, &["d"]),
            task("f", Status::Pending, &["a", "c"]),
        ];
        let changed = settle(&mut tasks);
        assert_eq!(changed, [2, 3, 4]);
        assert_eq!(tasks[2].status, Status::Queued);
        assert_eq!(tasks[3].status, Status::Skipped);
        assert_eq!(tasks[4].status, Status::Skipped);
        assert_eq!(
            tasks[4].reason.as_deref(),
            Some("needs `d`, which ended skipped")
        );
        assert_eq!(tasks[5].status, Status::Pending, "c has not run yet");
    }

    #[test]
    fn allowed_failure_passes() {
        let mut tasks = vec![
            task("a", Status::Failure, &[]),
            task("b", Status::Pending, &["a"]),
        ];
        tasks[0].allow_failure = true;
        settle(&mut tasks);
        assert_eq!(tasks[1].status, Status::Queued);
        tasks[1].status = Status::Success;
        assert_eq!(run_status(&tasks), Status::Success);
    }

    #[test]
    fn run_status_is_the_worst_outcome() {
        let tasks = vec![
            task("a", Status::Failure, &[]),
            task("b", Status::Error, &[]),
        ];
        assert_eq!(run_status(&tasks), Status::Error);
        let tasks = vec![
            task("a", Status::Queued, &[]),
            task("b", Status::Pending, &["a"]),
        ];
        assert_eq!(run_status(&tasks), Status::Queued);
        let tasks = vec![
            task("a", Status::Success, &[]),
            task("b", Status::Queued, &[]),
        ];
        assert_eq!(run_status(&tasks), Status::Running);
        let tasks = vec![
            task("a", Status::Success, &[]),
            task("b", Status::Skipped, &[]),
        ];
        assert_eq!(run_status(&tasks), Status::Success);
    }

    /// Every run of up to three independent tasks: whenever the counts
    /// give a status, it is the one the full rule gives.
    #[test]
    fn status_from_counts_agrees_with_run_status() {
        const ALL: [Status; 9] = crate::values::STATUSES;
        let mut answered = 0;
        for len in 1..=3u32 {
            for code in 0..9usize.pow(len) {
                let statuses: Vec<Status> =
                    (0..len).map(|i| ALL[code / 9usize.pow(i) % 9]).collect();
                let tasks: Vec<TaskState> = statuses
                    .iter()
                    .enumerate()
                    .map(|(i, s)| task(&format!("t{i}"), *s, &[]))
                    .collect();
                let counts: Vec<(Status, i64)> = ALL
                    .iter()
                    .map(|s| (*s, statuses.iter().filter(|t| *t == s).count() as i64))
                    .collect();
                if let Some(status) = status_from_counts(&counts) {
                    answered += 1;
                    assert_eq!(status, run_status(&tasks), "{statuses:?}");
                }
                let has_pending = statuses.contains(&Status::Pending);
                let all_ended = statuses.iter().all(|s| s.is_terminal());
                assert_eq!(
                    status_from_counts(&counts).is_none(),
                    has_pending || all_ended,
                    "{statuses:?}"
                );
            }
        }
        assert!(answered > 100, "only {answered} cases answered");
    }
}
