//! Artifacts and reports, the same on both executors: a symlink that stays
//! inside the workspace is followed, one that leaves it is refused, and the
//! log says what was refused — masked like the rest of the log.

use std::path::PathBuf;

use kiln_exec::{Executor, Status, TaskOutcome};

use crate::support::{Fixture, executors, for_executor, read, run_on};

/// What a task keeps and may know.
#[derive(Default)]
struct Outputs<'a> {
    artifacts: &'a [&'a str],
    reports: &'a [&'a str],
    secrets: &'a [(&'a str, &'a str)],
}

/// Runs `script` on `executor` with `outputs`, checks that it succeeded,
/// and returns its outcome and its whole log.
async fn run_script(
    executor: &dyn Executor,
    fixture: &Fixture,
    script: &str,
    outputs: Outputs<'_>,
) -> (TaskOutcome, String) {
    let owned = |list: &[&str]| list.iter().map(|p| p.to_string()).collect::<Vec<_>>();
    let mut spec = for_executor(executor, fixture.spec("outputs", &[script]));
    spec.artifacts = owned(outputs.artifacts);
    spec.reports = owned(outputs.reports);
    spec.secrets = outputs
        .secrets
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    let (outcome, events) = run_on(executor, &spec).await;
    let log = events.all_text();
    assert_eq!(
        outcome.status,
        Status::Success,
        "{}: {outcome:?}\n{log}",
        executor.kind()
    );
    (outcome, log)
}

fn names(paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect()
}

#[tokio::test]
async fn symlinks_inside_the_workspace_are_followed_and_those_leaving_it_refused() {
    let script = "mkdir -p data/sub out reports\n\
                  echo real > data/real.txt\n\
                  echo deep > data/sub/deep.txt\n\
                  ln -s ../data/real.txt out/inside.txt\n\
                  ln -s ../data out/dir\n\
                  ln -s /etc/passwd out/passwd\n\
                  ln -s ../nowhere out/dangling\n\
                  ln -s .. out/up\n\
                  ln -s /etc via-etc\n\
                  echo '<testsuite/>' > reports/real.xml\n\
                  ln -s reports/real.xml linked.xml";
    for executor in executors().await {
        let kind = executor.kind();
        let fixture = Fixture::new(&[]);
        let outputs = Outputs {
            artifacts: &["out", "via-etc/passwd"],
            reports: &["linked.xml"],
            ..Outputs::default()
        };
        let (outcome, log) = run_script(executor.as_ref(), &fixture, script, outputs).await;
        assert_eq!(
            names(&outcome.artifacts),
            ["out/dir/real.txt", "out/dir/sub/deep.txt", "out/inside.txt"],
            "{kind}\n{log}"
        );
        assert_eq!(names(&outcome.reports), ["linked.xml"], "{kind}\n{log}");
        assert_eq!(read(&fixture.output("artifacts/out/inside.txt")), "real\n");
        assert_eq!(
            read(&fixture.output("artifacts/out/dir/sub/deep.txt")),
            "deep\n"
        );
        assert_eq!(
            read(&fixture.output("reports/linked.xml")),
            "<testsuite/>\n"
        );
        assert!(!fixture.output("artifacts/out/passwd").exists(), "{kind}");
        assert!(!fixture.output("artifacts/via-etc").exists(), "{kind}");
        for note in [
            "artifact `out/passwd` is a symlink to `/etc/passwd`, outside the workspace: not kept",
            "artifact `via-etc` is a symlink to `/etc`, outside the workspace: not kept",
            "artifact `out/dangling` is a symlink to `../nowhere`, which does not exist: not kept",
            "artifact `out/up` is a symlink to `..`, a directory that contains it: not followed",
        ] {
            assert!(log.contains(note), "{kind}: no note `{note}` in\n{log}");
        }
        // The refusal says why the pattern found nothing.
        assert!(!log.contains("matched no file"), "{kind}\n{log}");
    }
}

#[tokio::test]
async fn notes_about_outputs_are_masked_like_the_output() {
    let secret = "s3cr3t-in-a-name";
    let script = "mkdir -p o\n\
                  echo kept > \"o/a-$TOKEN.txt\"\n\
                  ln -s /etc/passwd \"o/l-$TOKEN.txt\"\n\
                  ln -s /etc \"r-$TOKEN\"";
    for executor in executors().await {
        let kind = executor.kind();
        let fixture = Fixture::new(&[]);
        let outputs = Outputs {
            artifacts: &["o"],
            reports: &["r-*/*.xml"],
            secrets: &[("TOKEN", secret)],
        };
        let (outcome, log) = run_script(executor.as_ref(), &fixture, script, outputs).await;
        assert!(!log.contains(secret), "{kind}: the secret leaked:\n{log}");
        assert!(
            log.contains("artifact `o/l-***.txt` is a symlink to `/etc/passwd`"),
            "{kind}\n{log}"
        );
        assert!(
            log.contains("report `r-***` is a symlink to `/etc`"),
            "{kind}\n{log}"
        );
        // The file itself is kept under its real name.
        assert_eq!(
            names(&outcome.artifacts),
            [format!("o/a-{secret}.txt")],
            "{kind}"
        );
    }
}
