//! The queue's rules, independent of any database and of the clock: how a
//! run's tasks start, what becomes of a task when one of its attempts ends,
//! which pending tasks are released or skipped as their needs end, how a
//! stopped run ends the tasks that have not started, and what a run's
//! status is.
//!
//! This is their one home. The server's backends load a run's tasks, call
//! these, and write back what changed, in one transaction; the offline
//! runner of `kiln run` keeps the same [`TaskState`]s in memory and calls
//! the same functions. `cases` (feature `testsuite`) is a table of whole
//! runs that the rules, both backends and the offline runner are each
//! tested against.

#[cfg(any(test, feature = "testsuite"))]
pub mod cases;

use kiln_pipeline::{Status, Task};

use crate::NewRun;

/// Why a running task ended `error` when its agent stopped answering.
pub const AGENT_LOST: &str = "agent lost";

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
    /// A task of a new run, before [`settle`]: `skipped` with `skip_reason`
    /// when there is one (its `when` does not match the run), `queued` when
    /// it has no needs, else `pending`.
    pub fn new(task: &Task, skip_reason: Option<String>) -> TaskState {
        let status = if skip_reason.is_some() {
            Status::Skipped
        } else if task.needs.is_empty() {
            Status::Queued
        } else {
            Status::Pending
        };
        TaskState {
            name: task.name.clone(),
            status,
            needs: task.needs.clone(),
            allow_failure: task.allow_failure,
            reason: skip_reason,
        }
    }

    /// Whether dependants may run after this task: it succeeded, or failed
    /// with `allow-failure` (which does not cover `error`, `timed_out`…).
    pub fn passed(&self) -> bool {
        self.status == Status::Success || (self.allow_failure && self.status == Status::Failure)
    }

    /// The status its steps start in: `skipped` when the task has already
    /// ended (it will never run), else `pending`.
    pub fn step_status(&self) -> Status {
        if self.status.is_terminal() {
            Status::Skipped
        } else {
            Status::Pending
        }
    }
}

/// The tasks of a new run as they start: each as [`TaskState::new`] says,
/// then settled, so that a task needing one skipped by `when` is skipped
/// from the start too.
pub fn start<'a>(tasks: impl IntoIterator<Item = (&'a Task, Option<String>)>) -> Vec<TaskState> {
    let mut states: Vec<TaskState> = tasks
        .into_iter()
        .map(|(task, skip_reason)| TaskState::new(task, skip_reason))
        .collect();
    settle(&mut states);
    states
}

/// How a new run starts, as [`start_run`] decides it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunStart {
    pub status: Status,
    /// Why the run is `error` from the start.
    pub error: Option<String>,
    /// Its tasks, in the run's order (none for a run with an error).
    pub tasks: Vec<TaskState>,
}

/// A new run as the store keeps it: one with an error (an invalid
/// pipeline) is `error` at once, with no tasks; otherwise its tasks start
/// as [`start`] says and it has the status [`run_status`] gives them
/// (`queued`, or `success` when every task was skipped).
pub fn start_run(run: &NewRun) -> RunStart {
    if let Some(error) = &run.error {
        return RunStart {
            status: Status::Error,
            error: Some(error.clone()),
            tasks: Vec::new(),
        };
    }
    let mut tasks = start(
        run.tasks
            .iter()
            .map(|new| (&new.task, new.skip_reason.clone())),
    );
    if run.blocked {
        block(&mut tasks);
    }
    RunStart {
        status: run_status(&tasks),
        error: None,
        tasks,
    }
}

/// Holds back a new run's tasks until it is approved: those that would be
/// `queued` are `blocked` instead, so nothing of the run can be claimed
/// (`pending` ones wait for them anyway). Tasks skipped by `when` stay
/// skipped: a run with nothing to run needs no approval.
pub fn block(tasks: &mut [TaskState]) {
    for task in tasks {
        if task.status == Status::Queued {
            task.status = Status::Blocked;
        }
    }
}

/// How many attempts a task may have: its first, and one per `retry`.
pub fn max_attempts(task: &Task) -> i64 {
    i64::from(task.retry) + 1
}

/// Why a run is being stopped before its tasks are done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Someone cancelled it (`kiln cancel`, Ctrl-C under `kiln run`): tasks
    /// not started end `cancelled`; running ones are asked to stop and end
    /// `cancelled` whatever they report (see [`after_end`]).
    Cancel,
    /// It reached its umbrella `timeout`: tasks not started are `skipped`,
    /// running ones end `timed_out`, no new attempt starts, and the run is
    /// `timed_out` whatever its tasks say.
    Deadline,
}

impl Stop {
    /// The reason given to the tasks it ends.
    pub fn reason(self) -> &'static str {
        match self {
            Stop::Cancel => "the run was cancelled",
            Stop::Deadline => "the run reached its timeout",
        }
    }

    /// How a task that had not started (`blocked`, `pending` or `queued`) ends.
    pub fn unstarted(self) -> Status {
        match self {
            Stop::Cancel => Status::Cancelled,
            Stop::Deadline => Status::Skipped,
        }
    }

    /// What a task still running, and the run, end as whatever they
    /// report: at the deadline, `timed_out`. `None` for a cancel: its
    /// running tasks end `cancelled` when they report ([`after_end`]), and
    /// the run's status follows from its tasks ([`run_status`]).
    pub fn forced(self) -> Option<Status> {
        match self {
            Stop::Cancel => None,
            Stop::Deadline => Some(Status::TimedOut),
        }
    }
}

/// Ends the tasks that have not started (`blocked`, `pending`, `queued`)
/// as `stop` says, with its reason. Returns the indexes of the tasks it
/// changed.
pub fn stop(tasks: &mut [TaskState], stop: Stop) -> Vec<usize> {
    let mut changed = Vec::new();
    for (index, task) in tasks.iter_mut().enumerate() {
        if matches!(
            task.status,
            Status::Blocked | Status::Pending | Status::Queued
        ) {
            task.status = stop.unstarted();
            task.reason = Some(stop.reason().to_string());
            changed.push(index);
        }
    }
    changed
}

/// The attempt of a task that just ended, as [`after_end`] needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// 1 for the first.
    pub number: i64,
    /// The most the task may have ([`max_attempts`]).
    pub max: i64,
    /// Whether its run is being stopped.
    pub stop: Option<Stop>,
}

/// What becomes of a task when an attempt of it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterEnd {
    /// Back to `queued` for attempt `next`, with `note` as its reason.
    Retry { next: i64, note: String },
    /// The task ends with this status, keeping the reason it ended with.
    End(Status),
}

/// Whether another attempt of a task could end otherwise than the one that
/// just ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The attempt ran and did not pass (or its agent was lost): another
    /// may pass.
    Allowed,
    /// The task as written cannot run where it was sent — it names no
    /// image for the docker executor, it needs services a process
    /// executor cannot give — so another attempt would end the same way.
    Pointless,
}

/// The rule for a task whose attempt ended `status` (with `reason`): an
/// attempt that ended `failure`, `error` or `timed_out` is followed by
/// another while attempts are left, the run is not being stopped and
/// `retry` allows, noted "attempt N ended STATUS: reason". Otherwise the
/// task ends as reported, except that a task of a cancelled run ends
/// `cancelled`, whatever its agent saw.
pub fn after_end(
    attempt: &Attempt,
    status: Status,
    reason: Option<&str>,
    retry: Retry,
) -> AfterEnd {
    if attempt.stop == Some(Stop::Cancel) {
        return AfterEnd::End(Status::Cancelled);
    }
    let retryable = retry == Retry::Allowed
        && matches!(status, Status::Failure | Status::Error | Status::TimedOut);
    if retryable && attempt.stop.is_none() && attempt.number < attempt.max {
        let note = match reason {
            Some(reason) => format!("attempt {} ended {status}: {reason}", attempt.number),
            None => format!("attempt {} ended {status}", attempt.number),
        };
        return AfterEnd::Retry {
            next: attempt.number + 1,
            note,
        };
    }
    AfterEnd::End(status)
}

/// The line that opens the log of a task's attempt `number` after the
/// first, where the attempts' logs are shown one after another (`kiln run`'s
/// output, the server's console of a retried task).
pub fn attempt_header(number: i64) -> String {
    format!("--- attempt {number}\n")
}

/// Why a task is skipped because of `need`, which ended without passing.
fn skipped_for(need: &TaskState) -> String {
    format!("needs `{}`, which ended {}", need.name, need.status)
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
                        blocker = Some(skipped_for(t));
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

/// Which outcome outranks which in a run's status, worst first.
const WORST_FIRST: [Status; 4] = [
    Status::Error,
    Status::TimedOut,
    Status::Failure,
    Status::Cancelled,
];

/// The status of a run from its tasks: `blocked` while any task waits
/// for the run's approval; `running` while any task runs, or
/// while some have not ended and some have (`queued` if none started yet);
/// once all ended, the worst outcome among tasks that did not pass —
/// `error`, then `timed_out`, `failure`, `cancelled` — else `success`
/// (skipped tasks and `allow-failure` failures do not count). A run stopped
/// at its deadline is `timed_out` instead ([`Stop::forced`]).
pub fn run_status(tasks: &[TaskState]) -> Status {
    // Nothing of a blocked run has started: it waits for its approval.
    if tasks.iter().any(|t| t.status == Status::Blocked) {
        return Status::Blocked;
    }
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
    WORST_FIRST
        .into_iter()
        .find(|status| tasks.iter().any(|t| t.status == *status && !t.passed()))
        .unwrap_or(Status::Success)
}

/// Why a run whose tasks give it status `error` is: the first errored
/// task's reason ("agent lost", an infrastructure message), or which task
/// it was. `None` for any other status.
pub fn run_error(tasks: &[TaskState]) -> Option<String> {
    if run_status(tasks) != Status::Error {
        return None;
    }
    tasks.iter().find(|t| t.status == Status::Error).map(|t| {
        t.reason
            .clone()
            .unwrap_or_else(|| format!("task `{}` ended error", t.name))
    })
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
    if count(Status::Pending) > 0 || count(Status::Blocked) > 0 {
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

    /// Every whole run of the shared table, played on the rules alone.
    #[test]
    fn cases() {
        let failures: Vec<String> = cases::CASES
            .iter()
            .filter_map(|case| case.check(&case.simulate()).err())
            .collect();
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    /// The after-end rule over outcomes × attempts left × stops.
    #[test]
    fn after_end_table() {
        /// Status and reason reported, attempt number and maximum, stop → rule.
        type Row = (
            Status,
            Option<&'static str>,
            i64,
            i64,
            Option<Stop>,
            AfterEnd,
        );
        use AfterEnd::{End, Retry};
        let retry = |next: i64, note: &str| Retry {
            next,
            note: note.to_string(),
        };
        let cancel = Some(Stop::Cancel);
        let deadline = Some(Stop::Deadline);
        #[rustfmt::skip]
        let table: &[Row] = &[
            // reported         reason         n  max stop      → what follows
            (Status::Success,   None,          1, 2, None,     End(Status::Success)),
            (Status::Failure,   Some("exit 1"),1, 2, None,     retry(2, "attempt 1 ended failure: exit 1")),
            (Status::Error,     None,          2, 3, None,     retry(3, "attempt 2 ended error")),
            (Status::TimedOut,  None,          1, 2, None,     retry(2, "attempt 1 ended timed_out")),
            (Status::Failure,   None,          2, 2, None,     End(Status::Failure)),
            (Status::Error,     Some("lost"),  1, 1, None,     End(Status::Error)),
            (Status::Cancelled, None,          1, 2, None,     End(Status::Cancelled)),
            (Status::Skipped,   None,          1, 2, None,     End(Status::Skipped)),
            (Status::Failure,   None,          1, 2, cancel,   End(Status::Cancelled)),
            (Status::Success,   None,          1, 1, cancel,   End(Status::Cancelled)),
            (Status::Failure,   None,          1, 2, deadline, End(Status::Failure)),
            (Status::TimedOut,  None,          1, 2, deadline, End(Status::TimedOut)),
            (Status::Success,   None,          1, 2, deadline, End(Status::Success)),
        ];
        for (status, reason, number, max, stop, expected) in table {
            let attempt = Attempt {
                number: *number,
                max: *max,
                stop: *stop,
            };
            assert_eq!(
                &after_end(&attempt, *status, *reason, super::Retry::Allowed),
                expected,
                "{status} at attempt {number} of {max}, stop {stop:?}"
            );
        }
    }

    #[test]
    fn an_attempt_that_could_not_run_as_written_is_not_retried() {
        let attempt = Attempt {
            number: 1,
            max: 3,
            stop: None,
        };
        let no_image = Some("task has no image");
        assert_eq!(
            after_end(&attempt, Status::Error, no_image, Retry::Pointless),
            AfterEnd::End(Status::Error)
        );
        assert!(matches!(
            after_end(&attempt, Status::Error, no_image, Retry::Allowed),
            AfterEnd::Retry { next: 2, .. }
        ));
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
    fn stop_ends_what_has_not_started() {
        let tasks = || {
            vec![
                task("a", Status::Running, &[]),
                task("b", Status::Pending, &["a"]),
                task("c", Status::Queued, &[]),
                task("d", Status::Failure, &[]),
            ]
        };
        let mut cancelled = tasks();
        assert_eq!(stop(&mut cancelled, Stop::Cancel), [1, 2]);
        assert_eq!(cancelled[1].status, Status::Cancelled);
        assert_eq!(
            cancelled[2].reason.as_deref(),
            Some("the run was cancelled")
        );
        assert_eq!(cancelled[0].status, Status::Running, "asked, not ended");
        let mut late = tasks();
        stop(&mut late, Stop::Deadline);
        assert_eq!(late[2].status, Status::Skipped);
        assert_eq!(
            late[2].reason.as_deref(),
            Some("the run reached its timeout")
        );
        assert_eq!(late[3].status, Status::Failure, "ended tasks keep theirs");
    }

    #[test]
    fn run_status_is_the_worst_outcome() {
        let ended = |statuses: &[Status]| {
            statuses
                .iter()
                .enumerate()
                .map(|(i, s)| task(&format!("t{i}"), *s, &[]))
                .collect::<Vec<_>>()
        };
        use Status::*;
        for (statuses, expected) in [
            (&[Failure, Error][..], Error),
            (&[Failure, TimedOut], TimedOut),
            (&[Cancelled, Failure], Failure),
            (&[Cancelled, Success], Cancelled),
            (&[Success, Skipped], Success),
            (&[Skipped], Success),
            (&[Queued, Pending], Queued),
            (&[Success, Queued], Running),
            (&[Skipped, Queued], Queued),
        ] {
            assert_eq!(run_status(&ended(statuses)), expected, "{statuses:?}");
        }
        let mut errored = ended(&[Failure, Error, Error]);
        assert_eq!(
            run_error(&errored).as_deref(),
            Some("task `t1` ended error")
        );
        errored[2].reason = Some("agent lost".into());
        errored[1].reason = Some("no space left".into());
        assert_eq!(run_error(&errored).as_deref(), Some("no space left"));
        assert_eq!(run_error(&ended(&[Failure])), None);
    }

    #[test]
    fn a_run_with_an_error_has_no_tasks() {
        let pipeline = kiln_pipeline::parse(
            "t.kiln.yml",
            "version: 1\ntasks:\n  a:\n    steps:\n      - run: 'true'\n",
        )
        .expect("pipeline");
        let tasks = pipeline
            .tasks
            .into_iter()
            .map(|task| crate::NewTask {
                task,
                skip_reason: None,
            })
            .collect();
        let mut run = NewRun {
            branch: None,
            sha: None,
            event: kiln_pipeline::Event::Push,
            error: None,
            timeout: None,
            tasks,
            pipeline: None,
            audit: None,
            trigger: crate::RunTrigger::default(),
            pull_request: None,
            tag: None,
            queued_trigger: None,
            blocked: false,
        };
        let ok = start_run(&run);
        assert_eq!((ok.status, ok.tasks.len()), (Status::Queued, 1));
        assert_eq!(ok.tasks[0].step_status(), Status::Pending);
        run.error = Some("bad".into());
        let bad = start_run(&run);
        assert_eq!(
            (bad.status, bad.error.as_deref(), bad.tasks.len()),
            (Status::Error, Some("bad"), 0)
        );
    }

    /// A blocked run's tasks that would be queued are blocked; the run is
    /// `blocked` until they are queued, and a cancel ends them.
    #[test]
    fn a_blocked_run_starts_nothing() {
        let mut tasks = vec![
            task("a", Status::Queued, &[]),
            task("b", Status::Pending, &["a"]),
            task("c", Status::Skipped, &[]),
        ];
        block(&mut tasks);
        let statuses: Vec<Status> = tasks.iter().map(|t| t.status).collect();
        assert_eq!(
            statuses,
            [Status::Blocked, Status::Pending, Status::Skipped]
        );
        assert_eq!(run_status(&tasks), Status::Blocked);
        assert!(settle(&mut tasks).is_empty(), "b waits for a");
        assert_eq!(stop(&mut tasks, Stop::Cancel), [0, 1]);
        assert_eq!(run_status(&tasks), Status::Cancelled);
    }

    /// Every run of up to three independent tasks: whenever the counts
    /// give a status, it is the one the full rule gives.
    #[test]
    fn status_from_counts_agrees_with_run_status() {
        const ALL: [Status; 10] = Status::ALL;
        let n = ALL.len();
        let mut answered = 0;
        for len in 1..=3u32 {
            for code in 0..n.pow(len) {
                let statuses: Vec<Status> = (0..len).map(|i| ALL[code / n.pow(i) % n]).collect();
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
                // A blocked task is only ever in a run none of whose tasks
                // has started; the counts leave such a run to the full rule.
                let has_pending =
                    statuses.contains(&Status::Pending) || statuses.contains(&Status::Blocked);
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
