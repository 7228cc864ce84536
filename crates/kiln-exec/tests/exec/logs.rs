//! What a task's log holds, the same on both executors: the output in the
//! order the steps wrote it, stdout and stderr alike, and Kiln's own lines
//! each on a line of its own.

use kiln_exec::Status;
use proptest::prelude::*;

use crate::support::{Fixture, executors, for_executor, log_from_first_step, run_on};

#[tokio::test]
async fn stdout_and_stderr_keep_the_order_they_were_written() {
    let script = "echo \"compiling a.c\"; echo \"a.c:3: error: boom\" >&2; \
                  echo \"compiling b.c\"; echo \"compiling c.c\"; exit 1";
    for executor in executors().await {
        let fixture = Fixture::new(&[]);
        let spec = for_executor(executor.as_ref(), fixture.spec("order", &[script]));
        let (outcome, events) = run_on(executor.as_ref(), &spec).await;
        assert_eq!(outcome.status, Status::Failure, "{outcome:?}");
        assert_eq!(
            events.text(),
            "compiling a.c\na.c:3: error: boom\ncompiling b.c\ncompiling c.c\n",
            "{} executor",
            executor.kind()
        );
    }
}

#[tokio::test]
async fn an_unfinished_last_line_is_ended_before_the_next_step_and_at_the_end() {
    for executor in executors().await {
        let fixture = Fixture::new(&[]);
        let spec = fixture.spec("partial", &["printf foo", "echo bar", "printf 'baz\\nqux'"]);
        let spec = for_executor(executor.as_ref(), spec);
        let (outcome, events) = run_on(executor.as_ref(), &spec).await;
        assert_eq!(outcome.status, Status::Success, "{outcome:?}");
        assert_eq!(
            log_from_first_step(&events),
            "--- step 1: printf foo\nfoo\n--- step 2: echo bar\nbar\n\
             --- step 3: printf 'baz\\nqux'\nbaz\nqux\n",
            "{} executor",
            executor.kind()
        );
    }
}

/// One write of a step: a piece of text to stdout or stderr, a whole line
/// or not.
#[derive(Debug, Clone)]
struct Write {
    to_stderr: bool,
    text: String,
    newline: bool,
}

impl Write {
    fn command(&self) -> String {
        // Each `printf` is one write(2) of its own: the shell flushes
        // between them, so the order is the one written here.
        format!(
            "printf '%s{}' '{}'{}",
            if self.newline { "\\n" } else { "" },
            self.text,
            if self.to_stderr { " >&2" } else { "" }
        )
    }
}

fn write() -> impl Strategy<Value = Write> {
    (any::<bool>(), "[a-z0-9 .:]{1,12}", any::<bool>()).prop_map(|(to_stderr, text, newline)| {
        Write {
            to_stderr,
            text,
            newline,
        }
    })
}

/// The log both executors must produce for `steps`: each step's header,
/// then what it wrote in the order written, its unfinished last line ended.
fn expected_log(scripts: &[String], steps: &[Vec<Write>]) -> String {
    let mut log = String::new();
    for (index, (script, writes)) in scripts.iter().zip(steps).enumerate() {
        log.push_str(&format!("--- step {}: {script}\n", index + 1));
        for write in writes {
            log.push_str(&write.text);
            if write.newline {
                log.push('\n');
            }
        }
        if !log.ends_with('\n') {
            log.push('\n');
        }
    }
    log
}

proptest! {
    // Each case runs a container; a few dozen random interleavings of
    // several steps each cover the orders that two pipes would get wrong.
    #![proptest_config(ProptestConfig { cases: 16, max_shrink_iters: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_interleavings_keep_their_order_on_both_executors(
        steps in proptest::collection::vec(proptest::collection::vec(write(), 1..10), 1..4)
    ) {
        let scripts: Vec<String> = steps
            .iter()
            .map(|writes| writes.iter().map(Write::command).collect::<Vec<_>>().join("; "))
            .collect();
        let expected = expected_log(&scripts, &steps);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            for executor in executors().await {
                let fixture = Fixture::new(&[]);
                let scripts: Vec<&str> = scripts.iter().map(String::as_str).collect();
                let spec = for_executor(executor.as_ref(), fixture.spec("interleaved", &scripts));
                let (outcome, events) = run_on(executor.as_ref(), &spec).await;
                prop_assert_eq!(outcome.status, Status::Success, "{:?}", outcome);
                prop_assert_eq!(
                    log_from_first_step(&events),
                    expected.clone(),
                    "{} executor",
                    executor.kind()
                );
            }
            Ok(())
        })?;
    }
}
