//! Process executor tests: real `sh` processes on this machine.

use std::time::{Duration, Instant};

use kiln_exec::process::ProcessExecutor;
use kiln_exec::{CancellationToken, Executor, Status};

use crate::support::{Fixture, Recorder, read, run_with_paused_sink};

fn executor() -> ProcessExecutor {
    ProcessExecutor::default()
}

#[tokio::test]
async fn runs_steps_in_a_private_copy_of_the_source() {
    let fixture = Fixture::new(&[("hello.txt", "hello from the repo\n"), ("sub/dir/x", "x")]);
    let mut spec = fixture.spec("copy", &["cat hello.txt", "echo changed > hello.txt; pwd"]);
    spec.env = vec![("GREETING".into(), "hi there".into())];
    let events = Recorder::new();
    let outcome = executor()
        .run(&spec, events.clone(), CancellationToken::new())
        .await;

    assert_eq!(outcome.status, Status::Success, "{:?}", outcome.error);
    let text = events.text();
    assert!(text.contains("hello from the repo"), "{text}");
    // The task wrote to its own copy, never to the user's checkout.
    assert_eq!(
        read(&fixture.source.path().join("hello.txt")),
        "hello from the repo\n"
    );
    let workspace = text.lines().last().unwrap().trim().to_string();
    assert!(!fixture.source.path().starts_with(&workspace));
    assert!(
        !std::path::Path::new(&workspace).exists(),
        "workspace {workspace} was not removed"
    );
    assert_eq!(outcome.steps.len(), 2);
    assert!(
        outcome
            .steps
            .iter()
            .all(|s| s.exit_code == Some(0) && s.started_at.is_some())
    );
}

#[tokio::test]
async fn first_failing_step_fails_the_task_and_skips_the_rest() {
    let fixture = Fixture::new(&[]);
    let spec = fixture.spec("fail", &["echo one", "echo two; exit 3", "echo three"]);
    let events = Recorder::new();
    let outcome = executor()
        .run(&spec, events.clone(), CancellationToken::new())
        .await;

    assert_eq!(outcome.status, Status::Failure);
    let statuses: Vec<_> = outcome
        .steps
        .iter()
        .map(|s| (s.status, s.exit_code))
        .collect();
    assert_eq!(
        statuses,
        [
            (Status::Success, Some(0)),
            (Status::Failure, Some(3)),
            (Status::Skipped, None)
        ]
    );
    assert!(!events.text().contains("three"));
    assert!(outcome.error.unwrap().contains("exited with code 3"));
}

#[tokio::test]
async fn sh_runs_with_errexit() {
    let fixture = Fixture::new(&[]);
    let spec = fixture.spec("errexit", &["false\necho not-reached"]);
    let events = Recorder::new();
    let outcome = executor()
        .run(&spec, events.clone(), CancellationToken::new())
        .await;
    assert_eq!(outcome.status, Status::Failure);
    assert!(!events.text().contains("not-reached"));
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let fixture = Fixture::new(&[]);
    let marker = fixture.outputs.path().join("survivor");
    let script = format!("(sleep 3; touch {}) &\nsleep 30", marker.display());
    let mut spec = fixture.spec("slow", &[&script]);
    spec.timeout = Some(Duration::from_millis(500));
    let started = Instant::now();
    let outcome = executor()
        .run(&spec, Recorder::new(), CancellationToken::new())
        .await;

    assert_eq!(outcome.status, Status::TimedOut);
    assert_eq!(outcome.steps[0].status, Status::TimedOut);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    // The background job was in the step's group and died with it.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!marker.exists(), "a process of the timed-out task survived");
}

#[tokio::test]
async fn cancel_stops_the_task_within_a_second() {
    let fixture = Fixture::new(&[]);
    let spec = fixture.spec("cancel", &["sleep 30", "echo never"]);
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let outcome = executor().run(&spec, Recorder::new(), cancel).await;
    assert_eq!(outcome.status, Status::Cancelled);
    assert!(
        started.elapsed() < Duration::from_millis(1300),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(outcome.steps[1].status, Status::Skipped);
}

#[tokio::test]
async fn background_job_holding_stdout_does_not_hang_the_step() {
    let fixture = Fixture::new(&[]);
    let spec = fixture.spec("bg", &["sleep 20 &\necho started"]);
    let started = Instant::now();
    let outcome = executor()
        .run(&spec, Recorder::new(), CancellationToken::new())
        .await;
    assert_eq!(outcome.status, Status::Success);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn secrets_are_injected_and_masked_even_when_split_across_writes() {
    let fixture = Fixture::new(&[]);
    let mut spec = fixture.spec(
        "secret",
        &["echo \"token=$API_TOKEN\"; printf 's3cr'; sleep 0.2; printf 'et-value\\n'; echo done >&2"],
    );
    spec.secrets = vec![("API_TOKEN".into(), "s3cret-value".into())];
    let events = Recorder::new();
    let outcome = executor()
        .run(&spec, events.clone(), CancellationToken::new())
        .await;
    assert_eq!(outcome.status, Status::Success);
    let text = events.all_text();
    assert!(!text.contains("s3cret-value"), "{text}");
    assert!(text.contains("token=***"), "{text}");
    assert!(text.contains("***\n"), "{text}");
    assert!(
        *events.chunks.lock().unwrap() >= 2,
        "the secret was not split across writes"
    );
}

#[tokio::test]
async fn artifacts_and_reports_are_collected_and_links_leaving_the_workspace_refused() {
    let fixture = Fixture::new(&[]);
    let mut spec = fixture.spec(
        "outputs",
        &[
            "mkdir -p out/b reports\necho a > out/a.txt\necho c > out/b/c.txt\necho j > junk.txt\n\
           echo '<testsuite/>' > reports/unit.xml\nln -s /etc/passwd out/passwd",
        ],
    );
    spec.artifacts = vec!["out".into(), "missing/*".into()];
    spec.reports = vec!["reports/*.xml".into()];
    let events = Recorder::new();
    let outcome = executor()
        .run(&spec, events.clone(), CancellationToken::new())
        .await;

    assert_eq!(outcome.status, Status::Success);
    let names: Vec<_> = outcome
        .artifacts
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["out/a.txt", "out/b/c.txt"]);
    assert_eq!(read(&fixture.output("artifacts/out/b/c.txt")), "c\n");
    assert!(!fixture.output("artifacts/junk.txt").exists());
    assert!(!fixture.output("artifacts/out/passwd").exists());
    assert_eq!(
        read(&fixture.output("reports/reports/unit.xml")),
        "<testsuite/>\n"
    );
    let log = events.all_text();
    assert!(
        log.contains("artifact pattern `missing/*` matched no file"),
        "{log}"
    );
    assert!(
        log.contains("artifact `out/passwd` is a symlink to `/etc/passwd`, outside the workspace"),
        "{log}"
    );
}

#[tokio::test]
async fn services_are_refused_with_a_clear_error() {
    let fixture = Fixture::new(&[]);
    let mut spec = fixture.spec("svc", &["true"]);
    spec.services = vec![kiln_pipeline::Service {
        alias: "db".into(),
        image: "postgres:16".into(),
        env: vec![],
        command: None,
    }];
    let outcome = executor()
        .run(&spec, Recorder::new(), CancellationToken::new())
        .await;
    assert_eq!(outcome.status, Status::Error);
    assert!(outcome.error.unwrap().contains("docker executor"));
}

#[tokio::test]
async fn an_image_or_a_build_is_noted_as_ignored() {
    let fixture = Fixture::new(&[("ci/Dockerfile", "FROM scratch\n")]);
    let mut spec = fixture.spec("built", &["echo ran-on-the-host"]);
    spec.build = Some(kiln_pipeline::Build {
        dockerfile: "ci/Dockerfile".into(),
        context: ".".into(),
    });
    let events = Recorder::new();
    let outcome = executor()
        .run(&spec, events.clone(), CancellationToken::new())
        .await;
    let log = events.all_text();
    assert_eq!(outcome.status, Status::Success, "{outcome:?}\n{log}");
    assert!(events.text().contains("ran-on-the-host"), "{log}");
    assert!(
        log.contains(
            "process executor: running on the host, not in an image built from ci/Dockerfile \
             (`build:` needs the docker executor)\n"
        ),
        "{log}"
    );

    let mut spec = fixture.spec("imaged", &["true"]);
    spec.image = Some("alpine:3".into());
    let events = Recorder::new();
    let outcome = executor()
        .run(&spec, events.clone(), CancellationToken::new())
        .await;
    assert_eq!(outcome.status, Status::Success, "{outcome:?}");
    let log = events.all_text();
    assert!(
        log.contains("process executor: running on the host, not in image alpine:3\n"),
        "{log}"
    );
    assert!(!log.contains("`build:`"), "{log}");
}

#[tokio::test]
async fn step_events_are_reported_in_order() {
    let fixture = Fixture::new(&[]);
    let spec = fixture.spec("events", &["echo a", "echo b"]);
    let events = Recorder::new();
    executor()
        .run(&spec, events.clone(), CancellationToken::new())
        .await;
    let started: Vec<_> = events
        .started
        .lock()
        .unwrap()
        .iter()
        .map(|(i, _)| *i)
        .collect();
    let finished: Vec<_> = events
        .finished
        .lock()
        .unwrap()
        .iter()
        .map(|(i, r)| (*i, r.status))
        .collect();
    assert_eq!(started, [0, 1]);
    assert_eq!(finished, [(0, Status::Success), (1, Status::Success)]);
}

#[tokio::test]
async fn output_waits_for_a_sink_that_is_not_ready_and_none_is_lost() {
    let fixture = Fixture::new(&[]);
    // Less than a pipe holds: the shell writes it all and exits while the
    // sink still takes nothing.
    let spec = fixture.spec(
        "paused",
        &["head -c 32768 /dev/zero | tr '\\0' x; echo; echo done >&2"],
    );
    // Longer than a step's output may keep arriving after its shell exits.
    let (outcome, text) =
        run_with_paused_sink(&executor(), &spec, Duration::from_millis(500)).await;
    assert_eq!(outcome.status, Status::Success, "{:?}", outcome.error);
    assert_eq!(text.matches('x').count(), 32768, "every byte arrived");
    assert!(text.contains("done"), "{text}");
}
