//! `kiln run` and `kiln validate`, run as a user would in a git repository.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub(crate) const TEST_IMAGE: &str = "kiln-test/busybox:latest";

pub(crate) struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    /// A git repository on branch `main` holding `.kiln.yml` and `files`.
    pub(crate) fn new(pipeline: &str, files: &[(&str, &str)]) -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo { dir };
        repo.write(".kiln.yml", pipeline);
        for (path, content) in files {
            repo.write(path, content);
        }
        repo.git(&["init", "-q", "-b", "main"]);
        repo.git(&["add", "-A"]);
        repo.git(&[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "commit",
            "-qm",
            "init",
        ]);
        repo
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, path: &str, content: &str) {
        let path = self.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    fn git(&self, args: &[&str]) {
        let status = Command::new("git")
            .args(args)
            .current_dir(self.path())
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?} failed");
    }

    pub(crate) fn kiln(&self, args: &[&str]) -> Output {
        kiln_command(self.path(), args).output().unwrap()
    }

    pub(crate) fn run_dir(&self, n: u32) -> PathBuf {
        self.path().join(".kiln/runs").join(n.to_string())
    }
}

fn kiln_command(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("NO_COLOR")
        .env("KILN_TEST", "1");
    command
}

pub(crate) fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The status column of the summary table for `task`.
pub(crate) fn summary_status(output: &Output, task: &str) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    summary_status_from(&stdout, task)
        .unwrap_or_else(|| panic!("task {task} not in summary:\n{stdout}"))
}

/// The NOTE column of the summary table for `task`, as printed.
pub(crate) fn summary_note(output: &Output, task: &str) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let (_, table) = stdout
        .rsplit_once("TASK ")
        .unwrap_or_else(|| panic!("no summary in:\n{stdout}"));
    let header = table.lines().next().unwrap_or("");
    let column = "TASK ".len() + header.find("NOTE").unwrap_or(0);
    table
        .lines()
        .skip(1)
        .find(|line| line.split_whitespace().next() == Some(task))
        .map(|line| line.get(column..).unwrap_or("").to_string())
        .unwrap_or_else(|| panic!("task {task} not in summary:\n{stdout}"))
}

fn summary_status_from(stdout: &str, task: &str) -> Option<String> {
    let (_, table) = stdout.rsplit_once("TASK ")?;
    table.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some(task)).then(|| words.next().unwrap_or("").to_string())
    })
}

#[test]
fn validate_reports_located_errors_and_exit_2() {
    let repo = Repo::new(
        "version: 1\ntasks:\n  build:\n    imgae: alpine\n    steps: [{run: make}]\n",
        &[],
    );
    let output = repo.kiln(&["validate"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(".kiln.yml:4:5:"), "{stderr}");
    assert!(stderr.contains("did you mean `image`"), "{stderr}");

    repo.write(
        ".kiln.yml",
        "version: 1\ntasks:\n  build:\n    steps: [{run: make}]\n",
    );
    let output = repo.kiln(&["validate"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        text(&output).contains(".kiln.yml: valid, 1 task\n"),
        "{}",
        text(&output)
    );
}

#[test]
fn run_with_invalid_pipeline_or_unknown_task_exits_2() {
    let repo = Repo::new(
        "version: 1\ntasks:\n  a:\n    needs: [b]\n    steps: [{run: 'true'}]\n  b:\n    needs: [a]\n    steps: [{run: 'true'}]\n",
        &[],
    );
    let output = repo.kiln(&["run", "--executor", "process"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).contains("cycle"), "{}", text(&output));

    repo.write(
        ".kiln.yml",
        "version: 1\ntasks:\n  a:\n    steps: [{run: 'true'}]\n",
    );
    let output = repo.kiln(&["run", "--executor", "process", "nope"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).contains("nope"), "{}", text(&output));
}

#[test]
fn dag_order_failures_skip_dependants_and_summary_and_exit_1() {
    let pipeline = r#"
version: 1
env: { GREETING: hello }
tasks:
  first:
    steps:
      - run: echo "$GREETING from $KILN_TASK on $KILN_BRANCH ($KILN_EVENT, agent $KILN_AGENT, CI=$CI)" && cat data.txt
  second:
    needs: [first]
    steps:
      - run: echo second-ran
  broken:
    steps:
      - name: explode
        run: echo about to fail; exit 4
  after-broken:
    needs: [broken]
    steps:
      - run: echo must-not-run
  tolerated:
    allow-failure: true
    steps:
      - run: exit 1
  after-tolerated:
    needs: [tolerated]
    steps:
      - run: echo after-tolerated-ran
  only-on-release:
    when: { branch: ["release/*"] }
    steps:
      - run: echo must-not-run-either
"#;
    let repo = Repo::new(pipeline, &[("data.txt", "payload-from-repo\n")]);
    let output = repo.kiln(&["run", "--executor", "process"]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(
        all.contains("first")
            && all.contains("│ hello from first on main (manual, agent local, CI=true)"),
        "{all}"
    );
    assert!(all.contains("payload-from-repo"), "{all}");
    assert!(all.contains("second-ran"));
    assert!(all.contains("after-tolerated-ran"));
    assert!(!all.contains("must-not-run"), "{all}");

    assert_eq!(summary_status(&output, "first"), "success");
    assert_eq!(summary_status(&output, "second"), "success");
    assert_eq!(summary_status(&output, "broken"), "failure");
    assert_eq!(summary_status(&output, "after-broken"), "skipped");
    assert_eq!(summary_status(&output, "tolerated"), "failure");
    assert!(all.contains("failure (allowed)"));
    assert_eq!(summary_status(&output, "after-tolerated"), "success");
    assert_eq!(summary_status(&output, "only-on-release"), "skipped");
    assert!(all.contains("step `explode` exited with code 4"), "{all}");
    assert!(all.contains("run 1: failure"), "{all}");

    // The run left its record behind, and a second run gets the next number.
    let summary = std::fs::read_to_string(repo.run_dir(1).join("summary.json")).unwrap();
    assert!(summary.contains("\"status\": \"failure\""), "{summary}");
    let log = std::fs::read_to_string(repo.run_dir(1).join("tasks/broken/console.log")).unwrap();
    assert!(log.contains("about to fail"));
    let output = repo.kiln(&["run", "--executor", "process", "second"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(repo.run_dir(2).join("summary.json").exists());
    // Selecting `second` brings in what it needs, and nothing else.
    assert_eq!(summary_status(&output, "first"), "success");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("broken"));
}

#[test]
fn independent_tasks_run_in_parallel_up_to_jobs() {
    // Each task waits for the other's marker: only parallel execution finishes.
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().display();
    let pipeline = format!(
        "version: 1\ntasks:\n  left:\n    timeout: 20s\n    steps:\n      - run: touch {marker}/left; while [ ! -e {marker}/right ]; do sleep 0.05; done\n  right:\n    timeout: 20s\n    steps:\n      - run: touch {marker}/right; while [ ! -e {marker}/left ]; do sleep 0.05; done\n"
    );
    let repo = Repo::new(&pipeline, &[]);
    let output = repo.kiln(&["run", "--executor", "process", "--jobs", "2"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));

    // With one job at a time the same pipeline cannot finish: the first task times out.
    std::fs::remove_file(dir.path().join("left")).ok();
    std::fs::remove_file(dir.path().join("right")).ok();
    let pipeline = pipeline.replace("20s", "2s");
    repo.write(".kiln.yml", &pipeline);
    let output = repo.kiln(&["run", "--executor", "process", "--jobs", "1"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("timed_out"));
}

#[test]
fn secrets_are_masked_and_missing_ones_fail_the_task_before_it_starts() {
    let pipeline = r#"
version: 1
tasks:
  uses-secret:
    secrets: [API_TOKEN]
    steps:
      - run: |
          echo "token is $API_TOKEN"; printf 'half: tok'; printf 'en-xyz-123\n'
  needs-missing:
    secrets: [DEPLOY_KEY]
    steps:
      - run: touch started-anyway
"#;
    let repo = Repo::new(pipeline, &[]);
    let secret_file = repo.path().join("secrets.env");
    std::fs::write(&secret_file, "API_TOKEN=token-xyz-123\n").unwrap();
    let output = repo.kiln(&[
        "run",
        "--executor",
        "process",
        "--secret-file",
        secret_file.to_str().unwrap(),
    ]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(!all.contains("token-xyz-123"), "secret leaked:\n{all}");
    assert!(all.contains("token is ***"), "{all}");
    assert!(all.contains("half: ***"), "{all}");
    assert_eq!(summary_status(&output, "uses-secret"), "success");
    assert_eq!(summary_status(&output, "needs-missing"), "error");
    assert!(all.contains("secret `DEPLOY_KEY` is not set"), "{all}");
    let log =
        std::fs::read_to_string(repo.run_dir(1).join("tasks/uses-secret/console.log")).unwrap();
    assert!(!log.contains("token-xyz-123"));
}

#[test]
fn umbrella_timeout_and_task_timeout_end_as_timed_out() {
    let pipeline = "version: 1\ntimeout: 2s\ntasks:\n  slow:\n    steps:\n      - run: sleep 30\n  later:\n    needs: [slow]\n    steps:\n      - run: 'true'\n";
    let repo = Repo::new(pipeline, &[]);
    let started = Instant::now();
    let output = repo.kiln(&["run", "--executor", "process"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(summary_status(&output, "slow"), "timed_out");
    assert_eq!(summary_status(&output, "later"), "skipped");
    // The run's limit fired, not one of the task's own.
    assert_eq!(
        summary_note(&output, "slow"),
        "the run reached its timeout of 2s"
    );
    assert_eq!(
        summary_note(&output, "later"),
        "the run reached its timeout of 2s"
    );
    assert!(
        !text(&output).contains("task exceeded its timeout"),
        "{}",
        text(&output)
    );
    assert!(
        text(&output).contains("run 1: timed_out"),
        "{}",
        text(&output)
    );
}

#[test]
fn retry_runs_a_failing_task_again() {
    let pipeline = "version: 1\ntasks:\n  flaky:\n    retry: 2\n    steps:\n      - run: n=$(cat /tmp/kiln-retry-$KILN_JOB 2>/dev/null || echo 0); n=$((n+1)); echo $n > /tmp/kiln-retry-$KILN_JOB; [ $n -ge 2 ]\n";
    let repo = Repo::new(pipeline, &[]);
    let output = repo.kiln(&["run", "--executor", "process"]);
    let job = repo
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    std::fs::remove_file(format!("/tmp/kiln-retry-{job}")).ok();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(text(&output).contains("retrying (attempt 2 of 3)"));
    assert_eq!(summary_note(&output, "flaky"), "2 attempts");
}

/// What cannot run as written is not tried again: no image for docker.
#[test]
fn a_task_that_cannot_run_as_written_is_not_retried() {
    let pipeline = "version: 1\ntasks:\n  bare:\n    retry: 2\n    steps: [{run: 'true'}]\n";
    let repo = Repo::new(pipeline, &[]);
    let output = repo.kiln(&["run", "--executor", "docker"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert_eq!(summary_status(&output, "bare"), "error");
    assert!(!text(&output).contains("retrying"), "{}", text(&output));
    assert!(text(&output).contains("no `image`"), "{}", text(&output));
}

#[test]
fn artifacts_and_reports_land_in_the_run_directory() {
    let pipeline = r#"
version: 1
tasks:
  build:
    matrix: { flavour: [plain, fancy] }
    steps:
      - run: mkdir -p dist && echo "${{ matrix.flavour }}" > dist/app.txt && echo '<testsuite name="t" tests="1"/>' > junit.xml
    artifacts: { paths: [dist/] }
    reports: { junit: [junit.xml] }
"#;
    let repo = Repo::new(pipeline, &[]);
    let output = repo.kiln(&["run", "--executor", "process"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let fancy = repo.run_dir(1).join("tasks/build[flavour=fancy]");
    assert_eq!(
        std::fs::read_to_string(fancy.join("artifacts/dist/app.txt")).unwrap(),
        "fancy\n"
    );
    assert!(fancy.join("reports/junit.xml").exists());
    let plain = repo
        .run_dir(1)
        .join("tasks/build[flavour=plain]/artifacts/dist/app.txt");
    assert_eq!(std::fs::read_to_string(plain).unwrap(), "plain\n");
}

#[test]
fn default_executor_is_docker_when_the_engine_answers() {
    let pipeline = format!(
        "version: 1\ntasks:\n  inside:\n    image: {TEST_IMAGE}\n    steps:\n      - run: cat /etc/passwd | head -1; cat data.txt\n"
    );
    let repo = Repo::new(&pipeline, &[("data.txt", "copied-into-container\n")]);
    let output = repo.kiln(&["run"]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(all.contains("executor: docker"), "{all}");
    assert!(all.contains("root:x:0:0"), "{all}");
    assert!(all.contains("copied-into-container"), "{all}");
}

fn docker_lines(args: &[&str]) -> Vec<String> {
    let output = Command::new("docker").args(args).output().unwrap();
    assert!(
        output.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn ctrl_c_leaves_no_container_network_or_volume_behind() {
    // An image that declares a volume, so the task container gets an anonymous one.
    let pipeline = format!(
        r#"
version: 1
tasks:
  with-volume:
    build: {{ dockerfile: Dockerfile, context: . }}
    services:
      cache: {{ image: {TEST_IMAGE}, command: ["sleep", "300"] }}
    steps:
      - run: echo ready-to-be-interrupted; sleep 300
  plain:
    image: {TEST_IMAGE}
    steps:
      - run: echo ready-to-be-interrupted; sleep 300
"#
    );
    let dockerfile = format!("FROM {TEST_IMAGE}\nVOLUME /data\n");
    let repo = Repo::new(&pipeline, &[("Dockerfile", &dockerfile)]);
    let volumes_before = docker_lines(&["volume", "ls", "-q"]).len();

    let mut child = kiln_command(repo.path(), &["run", "--executor", "docker"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let child_pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let (seen_tx, seen_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut ready = 0;
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("│ ready-to-be-interrupted") {
                ready += 1;
                if ready == 2 {
                    seen_tx.send(None).ok();
                }
            }
            lines.push(line);
        }
        seen_tx.send(Some(lines.join("\n"))).ok();
    });
    match seen_rx.recv_timeout(Duration::from_secs(60)).unwrap() {
        None => {}
        Some(all) => panic!("tasks never got going:\n{all}"),
    }
    let ours = |kind: &str| -> Vec<String> {
        // The run label starts with the runner's pid; other tests run at the same time.
        let label = "{{.Label \"kiln.local-run\"}}";
        let mut args = vec![
            kind,
            "ls",
            "--filter",
            "label=kiln.local-run",
            "--format",
            label,
        ];
        if kind == "container" {
            args.push("-a");
        }
        let prefix = format!("{}-", child_pid);
        docker_lines(&args)
            .into_iter()
            .filter(|l| l.starts_with(&prefix))
            .collect()
    };
    let labelled = ours("container");
    assert!(
        labelled.len() >= 3,
        "expected two task containers and a service, found {labelled:?}"
    );

    // SIGINT, as a terminal's Ctrl-C would send.
    unsafe_sigint(child.id());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "kiln did not stop after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let all = seen_rx
        .recv_timeout(Duration::from_secs(5))
        .unwrap()
        .unwrap_or_default();
    assert_eq!(status.code(), Some(130), "{all}");
    assert_eq!(
        summary_status_from(&all, "plain").as_deref(),
        Some("cancelled"),
        "{all}"
    );

    assert_eq!(
        ours("container"),
        Vec::<String>::new(),
        "containers left behind"
    );
    assert_eq!(
        ours("network"),
        Vec::<String>::new(),
        "networks left behind"
    );
    assert_eq!(
        docker_lines(&["volume", "ls", "-q"]).len(),
        volumes_before,
        "an anonymous volume was left behind"
    );
}

fn unsafe_sigint(pid: u32) {
    let status = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}
