//! What `kiln run` shows and keeps of a task: its output in the order
//! written, on both executors, lines that stay apart, reports it explains,
//! and secrets masked in everything it writes.

use crate::run::{Repo, TEST_IMAGE, summary_status, text};

const EXECUTORS: [&str; 2] = ["process", "docker"];

/// The lines of `build`'s terminal view from its first step on, without
/// the task's prefix.
fn terminal_lines(stdout: &str, task: &str) -> Vec<String> {
    let prefix = format!("{task} │ ");
    let lines: Vec<String> = stdout
        .lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .map(str::to_string)
        .collect();
    let first = lines
        .iter()
        .position(|l| l.starts_with("--- step 1:"))
        .unwrap_or_else(|| panic!("no step header in:\n{stdout}"));
    lines[first..].to_vec()
}

#[test]
fn output_keeps_its_order_and_its_lines_apart_on_both_executors() {
    let pipeline = format!(
        r#"
version: 1
tasks:
  build:
    image: {TEST_IMAGE}
    steps:
      - name: compile
        run: |
          echo "compiling a.c"; echo "a.c:3: error: boom" >&2; echo "compiling b.c"; echo "compiling c.c"
      - name: partial
        run: printf foo
      - name: progress
        run: printf 'progress 10%%\rprogress 100%%\n'
      - name: last
        run: echo bar; exit 1
"#
    );
    let repo = Repo::new(&pipeline, &[]);
    for (run, executor) in EXECUTORS.iter().enumerate() {
        let output = repo.kiln(&["run", "--executor", executor]);
        let all = text(&output);
        assert_eq!(output.status.code(), Some(1), "{executor}: {all}");

        // The log keeps the bytes as written, with the unfinished line ended
        // before the next step's header.
        let log =
            std::fs::read_to_string(repo.run_dir(run as u32 + 1).join("tasks/build/console.log"))
                .unwrap();
        let from = log.find("--- step 1:").unwrap_or(0);
        assert_eq!(
            &log[from..],
            "--- step 1: compile\ncompiling a.c\na.c:3: error: boom\ncompiling b.c\ncompiling c.c\n\
             --- step 2: partial\nfoo\n\
             --- step 3: progress\nprogress 10%\rprogress 100%\n\
             --- step 4: last\nbar\n",
            "{executor}"
        );

        // The terminal shows the same, each piece a prefixed line: a
        // carriage return ends a line there, so a redrawn progress line
        // cannot overwrite the prefix.
        let stdout = String::from_utf8_lossy(&output.stdout);
        let lines = terminal_lines(&stdout, "build");
        assert_eq!(
            lines[..lines.len() - 1],
            [
                "--- step 1: compile",
                "compiling a.c",
                "a.c:3: error: boom",
                "compiling b.c",
                "compiling c.c",
                "--- step 2: partial",
                "foo",
                "--- step 3: progress",
                "progress 10%",
                "progress 100%",
                "--- step 4: last",
                "bar",
            ],
            "{executor}:\n{stdout}"
        );
        assert!(!stdout.contains('\r'), "{executor}:\n{stdout:?}");
    }
}

#[test]
fn a_malformed_junit_report_is_explained_where_it_is_wrong() {
    let pipeline = r#"
version: 1
tasks:
  test:
    steps:
      - run: printf '<testsuite name="t">\n  <testcase name="a">\n</testsuite>\n' > junit.xml
    reports: { junit: [junit.xml] }
"#;
    let repo = Repo::new(pipeline, &[]);
    let output = repo.kiln(&["run", "--executor", "process"]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert_eq!(summary_status(&output, "test"), "success");
    let note =
        "kiln: report `junit.xml` is not valid JUnit XML (line 3, column 1): malformed XML at byte";
    assert!(all.contains(note), "{all}");
    let log = std::fs::read_to_string(repo.run_dir(1).join("tasks/test/console.log")).unwrap();
    assert!(log.contains(note), "{log}");
    let summary = std::fs::read_to_string(repo.run_dir(1).join("summary.json")).unwrap();
    assert!(
        summary.contains("report `junit.xml` is not valid JUnit XML (line 3, column 1)"),
        "{summary}"
    );
    // The file is kept as the task left it, for the user to look at.
    assert!(
        repo.run_dir(1)
            .join("tasks/test/reports/junit.xml")
            .exists()
    );
}

#[test]
fn a_secret_in_file_names_reaches_no_note_log_or_summary_on_both_executors() {
    let secret = "zz-secret-value-42";
    let pipeline = format!(
        r#"
version: 1
tasks:
  leaky:
    image: {TEST_IMAGE}
    secrets: [TOKEN]
    steps:
      - run: mkdir -p o && echo kept > "o/a-$TOKEN.txt" && ln -s /etc/passwd "o/l-$TOKEN.txt" && echo '<testsuite' > "r-$TOKEN.xml"
    artifacts: {{ paths: [o] }}
    reports: {{ junit: ["r-*.xml"] }}
"#
    );
    let repo = Repo::new(&pipeline, &[]);
    for (run, executor) in EXECUTORS.iter().enumerate() {
        let output = repo.kiln(&[
            "run",
            "--executor",
            executor,
            "--secret",
            &format!("TOKEN={secret}"),
        ]);
        let all = text(&output);
        assert_eq!(output.status.code(), Some(0), "{executor}: {all}");
        let dir = repo.run_dir(run as u32 + 1);
        let log = std::fs::read_to_string(dir.join("tasks/leaky/console.log")).unwrap();
        let summary = std::fs::read_to_string(dir.join("summary.json")).unwrap();
        for (what, content) in [
            ("terminal", &all),
            ("console.log", &log),
            ("summary.json", &summary),
        ] {
            assert!(
                !content.contains(secret),
                "{executor}: the secret is in the {what}:\n{content}"
            );
        }
        // The notes are there, masked.
        for note in [
            "artifact `o/l-***.txt` is a symlink to `/etc/passwd`, outside the workspace",
            "report `r-***.xml` is not valid JUnit XML",
        ] {
            assert!(all.contains(note), "{executor}: no `{note}` in\n{all}");
            assert!(log.contains(note), "{executor}: no `{note}` in\n{log}");
        }
        assert!(summary.contains("o/a-***.txt"), "{executor}:\n{summary}");
        // The files themselves are kept under their real names.
        assert!(
            dir.join(format!("tasks/leaky/artifacts/o/a-{secret}.txt"))
                .exists()
        );
    }
}
