//! Whole runs with scripted outcomes and what the queue's rules make of
//! them, as one table. The rules play it in memory ([`Case::simulate`]),
//! each backend's contract suite plays it through claims and reports, and
//! the offline runner plays it through a scripted executor: all must end
//! every case as it expects, so the server and `kiln run` cannot disagree.
//!
//! Each player takes the queued task that comes first in the pipeline and
//! runs it to its end before the next, as `kiln run --jobs 1` and a lone
//! agent do. Only for a case with a cancel does the order matter: there,
//! the tasks before the cancelled one come first in every player's order.

use kiln_pipeline::{Event, Status, Task};

use super::{AfterEnd, Attempt, Stop, TaskState, after_end, max_attempts, run_status, settle};

/// The reason a task skipped by its `when` has, as the players give it.
pub const WHEN_SKIPPED: &str = "`when` does not match this run";
/// The branch every case runs on (`when` matches against it).
pub const BRANCH: &str = "main";

/// One run: its pipeline, how its tasks' attempts end, and the outcome.
#[derive(Debug)]
pub struct Case {
    pub name: &'static str,
    /// The `tasks:` of the pipeline, one flow mapping per line.
    pub tasks: &'static str,
    /// How each attempt of a task ends, in order; attempts past the list,
    /// and tasks not listed, succeed.
    pub attempts: &'static [(&'static str, &'static [Status])],
    /// The run is cancelled while this task's first attempt runs (the
    /// attempt then ends as scripted).
    pub cancel_during: Option<&'static str>,
    /// Every task at the end, in pipeline order: its status, how many
    /// attempts ran, and its reason.
    pub expect: &'static [(&'static str, Status, u32, Option<&'static str>)],
    /// The run's status at the end.
    pub run: Status,
}

/// What a player saw at the end of a case.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// Every task in pipeline order: name, status, attempts run, reason.
    pub tasks: Vec<(String, Status, u32, Option<String>)>,
    pub run: Status,
}

impl Case {
    /// The case's pipeline file.
    pub fn yaml(&self) -> String {
        format!("version: 1\ntasks:\n{}", self.tasks)
    }

    /// Its expanded tasks.
    pub fn pipeline(&self) -> Vec<Task> {
        kiln_pipeline::parse("case.kiln.yml", &self.yaml())
            .unwrap_or_else(|e| panic!("case `{}`: invalid pipeline: {e:?}", self.name))
            .tasks
    }

    /// Why `task` is skipped from the start of a run on [`BRANCH`].
    pub fn skip_reason(task: &Task, event: Event) -> Option<String> {
        task.when
            .as_ref()
            .filter(|when| !when.matches(Some(BRANCH), event))
            .map(|_| WHEN_SKIPPED.to_string())
    }

    /// How attempt `number` (1 for the first) of `task` ends.
    pub fn outcome(&self, task: &str, number: u32) -> Status {
        self.attempts
            .iter()
            .find(|(name, _)| *name == task)
            .and_then(|(_, outcomes)| outcomes.get(number as usize - 1))
            .copied()
            .unwrap_or(Status::Success)
    }

    /// Whether the run is cancelled during attempt `number` of `task`.
    pub fn cancels(&self, task: &str, number: u32) -> bool {
        self.cancel_during == Some(task) && number == 1
    }

    /// The case played on the rules alone.
    pub fn simulate(&self) -> Observed {
        let tasks = self.pipeline();
        let mut states = super::start(tasks.iter().map(|t| (t, Case::skip_reason(t, Event::Push))));
        let mut attempts = vec![0u32; tasks.len()];
        let mut stop = None;
        while let Some(i) = states.iter().position(|t| t.status == Status::Queued) {
            states[i].status = Status::Running;
            attempts[i] += 1;
            if self.cancels(&tasks[i].name, attempts[i]) {
                stop = Some(Stop::Cancel);
                super::stop(&mut states, Stop::Cancel);
            }
            let attempt = Attempt {
                number: i64::from(attempts[i]),
                max: max_attempts(&tasks[i]),
                stop,
            };
            let status = self.outcome(&tasks[i].name, attempts[i]);
            let state: &mut TaskState = &mut states[i];
            match after_end(&attempt, status, None, super::Retry::Allowed) {
                AfterEnd::Retry { note, .. } => {
                    state.status = Status::Queued;
                    state.reason = Some(note);
                }
                AfterEnd::End(status) => {
                    state.status = status;
                    state.reason = None;
                }
            }
            settle(&mut states);
        }
        Observed {
            tasks: states
                .iter()
                .zip(attempts)
                .map(|(t, n)| (t.name.clone(), t.status, n, t.reason.clone()))
                .collect(),
            run: run_status(&states),
        }
    }

    /// Whether `observed` is what the case expects; if not, a message that
    /// names the case and each difference.
    pub fn check(&self, observed: &Observed) -> Result<(), String> {
        let expected = Observed {
            tasks: self
                .expect
                .iter()
                .map(|(name, status, n, reason)| {
                    (name.to_string(), *status, *n, reason.map(str::to_string))
                })
                .collect(),
            run: self.run,
        };
        if *observed == expected {
            return Ok(());
        }
        let mut message = format!("case `{}`:", self.name);
        if observed.run != expected.run {
            message += &format!("\n  run: {} (expected {})", observed.run, expected.run);
        }
        for (index, want) in expected.tasks.iter().enumerate() {
            let got = observed.tasks.get(index);
            if got != Some(want) {
                message += &format!("\n  task: {got:?} (expected {want:?})");
            }
        }
        if observed.tasks.len() != expected.tasks.len() {
            message += &format!("\n  tasks: {:?}", observed.tasks);
        }
        Err(message)
    }
}

use Status::{Cancelled, Error, Failure, Skipped, Success, TimedOut};

const CANCELLED: Option<&str> = Some("the run was cancelled");

/// The table: task outcomes × retry × allow-failure × needs × cancel × when.
pub const CASES: &[Case] = &[
    Case {
        name: "a success",
        tasks: "  a: {steps: [{run: a}]}\n",
        attempts: &[],
        cancel_during: None,
        expect: &[("a", Success, 1, None)],
        run: Success,
    },
    Case {
        name: "a failure without retry",
        tasks: "  a: {steps: [{run: a}]}\n",
        attempts: &[("a", &[Failure])],
        cancel_during: None,
        expect: &[("a", Failure, 1, None)],
        run: Failure,
    },
    Case {
        name: "retried until it passes",
        tasks: "  a: {retry: 1, steps: [{run: a}]}\n",
        attempts: &[("a", &[Failure])],
        cancel_during: None,
        expect: &[("a", Success, 2, None)],
        run: Success,
    },
    Case {
        name: "retries run out",
        tasks: "  a: {retry: 1, steps: [{run: a}]}\n",
        attempts: &[("a", &[Failure, Failure])],
        cancel_during: None,
        expect: &[("a", Failure, 2, None)],
        run: Failure,
    },
    Case {
        name: "error and timed_out are retried",
        tasks: "  a: {retry: 2, steps: [{run: a}]}\n",
        attempts: &[("a", &[Error, TimedOut])],
        cancel_during: None,
        expect: &[("a", Success, 3, None)],
        run: Success,
    },
    Case {
        name: "cancelled is not retried",
        tasks: "  a: {retry: 1, steps: [{run: a}]}\n",
        attempts: &[("a", &[Cancelled])],
        cancel_during: None,
        expect: &[("a", Cancelled, 1, None)],
        run: Cancelled,
    },
    Case {
        name: "a failure skips its dependants, transitively",
        tasks: "  a: {steps: [{run: a}]}\n  b: {needs: [a], steps: [{run: b}]}\n  \
                c: {needs: [b], steps: [{run: c}]}\n  d: {steps: [{run: d}]}\n",
        attempts: &[("a", &[Failure])],
        cancel_during: None,
        expect: &[
            ("a", Failure, 1, None),
            ("b", Skipped, 0, Some("needs `a`, which ended failure")),
            ("c", Skipped, 0, Some("needs `b`, which ended skipped")),
            ("d", Success, 1, None),
        ],
        run: Failure,
    },
    Case {
        name: "a need that passed releases its dependant",
        tasks: "  a: {steps: [{run: a}]}\n  b: {needs: [a], steps: [{run: b}]}\n",
        attempts: &[],
        cancel_during: None,
        expect: &[("a", Success, 1, None), ("b", Success, 1, None)],
        run: Success,
    },
    Case {
        name: "allow-failure passes",
        tasks: "  lint: {allow-failure: true, steps: [{run: lint}]}\n  \
                deploy: {needs: [lint], steps: [{run: deploy}]}\n",
        attempts: &[("lint", &[Failure])],
        cancel_during: None,
        expect: &[("lint", Failure, 1, None), ("deploy", Success, 1, None)],
        run: Success,
    },
    Case {
        name: "allow-failure does not cover error",
        tasks: "  lint: {allow-failure: true, steps: [{run: lint}]}\n  \
                deploy: {needs: [lint], steps: [{run: deploy}]}\n",
        attempts: &[("lint", &[Error])],
        cancel_during: None,
        expect: &[
            ("lint", Error, 1, None),
            (
                "deploy",
                Skipped,
                0,
                Some("needs `lint`, which ended error"),
            ),
        ],
        run: Error,
    },
    Case {
        name: "allow-failure after its retries",
        tasks: "  lint: {allow-failure: true, retry: 1, steps: [{run: lint}]}\n  \
                deploy: {needs: [lint], steps: [{run: deploy}]}\n",
        attempts: &[("lint", &[Failure, Failure])],
        cancel_during: None,
        expect: &[("lint", Failure, 2, None), ("deploy", Success, 1, None)],
        run: Success,
    },
    Case {
        name: "error outranks timed_out and failure",
        tasks: "  a: {steps: [{run: a}]}\n  b: {steps: [{run: b}]}\n  c: {steps: [{run: c}]}\n",
        attempts: &[("a", &[Failure]), ("b", &[TimedOut]), ("c", &[Error])],
        cancel_during: None,
        expect: &[
            ("a", Failure, 1, None),
            ("b", TimedOut, 1, None),
            ("c", Error, 1, None),
        ],
        run: Error,
    },
    Case {
        name: "timed_out outranks failure",
        tasks: "  a: {steps: [{run: a}]}\n  b: {steps: [{run: b}]}\n",
        attempts: &[("a", &[Failure]), ("b", &[TimedOut])],
        cancel_during: None,
        expect: &[("a", Failure, 1, None), ("b", TimedOut, 1, None)],
        run: TimedOut,
    },
    Case {
        name: "failure outranks cancelled",
        tasks: "  a: {steps: [{run: a}]}\n  b: {steps: [{run: b}]}\n",
        attempts: &[("a", &[Failure]), ("b", &[Cancelled])],
        cancel_during: None,
        expect: &[("a", Failure, 1, None), ("b", Cancelled, 1, None)],
        run: Failure,
    },
    Case {
        name: "cancel ends what has not started, and the running task",
        tasks: "  a: {steps: [{run: a}]}\n  b: {needs: [a], steps: [{run: b}]}\n  \
                c: {steps: [{run: c}]}\n",
        attempts: &[],
        cancel_during: Some("a"),
        expect: &[
            ("a", Cancelled, 1, None),
            ("b", Cancelled, 0, CANCELLED),
            ("c", Cancelled, 0, CANCELLED),
        ],
        run: Cancelled,
    },
    Case {
        name: "cancel stops retries",
        tasks: "  a: {retry: 2, steps: [{run: a}]}\n",
        attempts: &[("a", &[Failure])],
        cancel_during: Some("a"),
        expect: &[("a", Cancelled, 1, None)],
        run: Cancelled,
    },
    Case {
        name: "cancel after a failure",
        tasks: "  a: {steps: [{run: a}]}\n  b: {steps: [{run: b}]}\n  c: {steps: [{run: c}]}\n",
        attempts: &[("a", &[Failure])],
        cancel_during: Some("b"),
        expect: &[
            ("a", Failure, 1, None),
            ("b", Cancelled, 1, None),
            ("c", Cancelled, 0, CANCELLED),
        ],
        run: Failure,
    },
    Case {
        name: "when skips a task and its dependants",
        tasks: "  a: {when: {branch: [release]}, steps: [{run: a}]}\n  \
                b: {needs: [a], steps: [{run: b}]}\n  c: {steps: [{run: c}]}\n",
        attempts: &[],
        cancel_during: None,
        expect: &[
            ("a", Skipped, 0, Some(WHEN_SKIPPED)),
            ("b", Skipped, 0, Some("needs `a`, which ended skipped")),
            ("c", Success, 1, None),
        ],
        run: Success,
    },
    Case {
        name: "nothing to run",
        tasks: "  a: {when: {branch: [release]}, steps: [{run: a}]}\n",
        attempts: &[],
        cancel_during: None,
        expect: &[("a", Skipped, 0, Some(WHEN_SKIPPED))],
        run: Success,
    },
];
