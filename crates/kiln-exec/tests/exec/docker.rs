//! Docker executor tests (written with the executor).
//!
//! Every test labels its objects `kiln.test=<unique>` so that tests running in
//! parallel never see each other's containers and networks.

use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_exec::docker::{BuildCachePolicy, DockerExecutor};
use kiln_exec::{CancellationToken, Executor, Status, TaskOutcome, TaskSpec};
use kiln_pipeline::{Build, Service};

use crate::support::*;

const TEST_LABEL: &str = "kiln.test";

fn unique() -> String {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    format!("{:016x}", hasher.finish())
}

async fn executor() -> DockerExecutor {
    DockerExecutor::connect()
        .await
        .unwrap_or_else(|e| panic!("no Docker engine (run scripts/setup-test-env.sh): {e}"))
}

/// A spec on the test image, labelled with a fresh test label; returns the label value.
fn docker_spec(fixture: &Fixture, name: &str, scripts: &[&str]) -> (TaskSpec, String) {
    let id = unique();
    let mut spec = fixture.spec(name, scripts);
    spec.image = Some(TEST_IMAGE.to_string());
    spec.labels = vec![(TEST_LABEL.to_string(), id.clone())];
    (spec, id)
}

async fn docker(args: &[&str]) -> String {
    let output = tokio::process::Command::new("docker")
        .args(args)
        .output()
        .await
        .expect("running docker");
    assert!(
        output.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Names of the containers and networks labelled `key=value`.
async fn objects(key: &str, value: &str) -> Vec<String> {
    let filter = format!("label={key}={value}");
    let containers = docker(&[
        "ps",
        "-a",
        "--filter",
        &filter,
        "--format",
        "container {{.Names}}",
    ])
    .await;
    let networks = docker(&[
        "network",
        "ls",
        "--filter",
        &filter,
        "--format",
        "network {{.Name}}",
    ])
    .await;
    containers
        .lines()
        .chain(networks.lines())
        .map(str::to_string)
        .collect()
}

async fn assert_no_objects(key: &str, value: &str) {
    let left = objects(key, value).await;
    assert!(
        left.is_empty(),
        "objects labelled {key}={value} remain: {left:?}"
    );
}

/// Polls until nothing labelled `key=value` remains, up to `limit`.
async fn wait_until_gone(key: &str, value: &str, limit: Duration) {
    let start = Instant::now();
    loop {
        let left = objects(key, value).await;
        if left.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "objects labelled {key}={value} still there after {limit:?}: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn run(spec: &TaskSpec) -> (TaskOutcome, Arc<Recorder>) {
    let recorder = Recorder::new();
    let outcome = executor()
        .await
        .run(spec, recorder.clone(), CancellationToken::new())
        .await;
    (outcome, recorder)
}

#[tokio::test]
async fn connects_and_names_the_endpoint() {
    let executor = executor().await;
    assert_eq!(executor.kind(), "docker");
    assert!(
        executor.endpoint().contains("://"),
        "endpoint: {}",
        executor.endpoint()
    );
}

#[tokio::test]
async fn steps_see_env_and_source_and_a_failure_stops_the_task() {
    let fixture = Fixture::new(&[("src/hello.txt", "hello from the source tree\n")]);
    let (mut spec, id) = docker_spec(
        &fixture,
        "basic",
        &["echo \"greeting=$GREETING\"; cat src/hello.txt; pwd; echo \"ci=$CI\""],
    );
    spec.env = vec![
        ("GREETING".into(), "hi-there".into()),
        ("CI".into(), "true".into()),
    ];
    let (outcome, recorder) = run(&spec).await;
    let text = recorder.text();
    assert_eq!(
        outcome.status,
        Status::Success,
        "{outcome:?}\n{}",
        recorder.all_text()
    );
    assert_eq!(outcome.steps[0].exit_code, Some(0));
    assert!(text.contains("greeting=hi-there"), "{text}");
    assert!(text.contains("hello from the source tree"), "{text}");
    assert!(text.contains("/workspace"), "{text}");
    assert!(text.contains("ci=true"), "{text}");
    assert_no_objects(TEST_LABEL, &id).await;

    let (spec, id) = docker_spec(
        &fixture,
        "failing",
        &["echo first", "echo second >&2; exit 3", "echo third"],
    );
    let (outcome, recorder) = run(&spec).await;
    let text = recorder.text();
    assert_eq!(outcome.status, Status::Failure, "{outcome:?}");
    assert_eq!(outcome.steps[0].status, Status::Success);
    assert_eq!(outcome.steps[1].status, Status::Failure);
    assert_eq!(outcome.steps[1].exit_code, Some(3));
    assert_eq!(outcome.steps[2].status, Status::Skipped);
    assert!(text.contains("first") && text.contains("second"), "{text}");
    assert!(!text.contains("third"), "{text}");
    assert!(
        outcome.error.as_deref().unwrap_or("").contains("code 3"),
        "{:?}",
        outcome.error
    );
    assert_no_objects(TEST_LABEL, &id).await;
}

#[tokio::test]
async fn concurrent_tasks_each_reach_their_own_service_by_alias() {
    fn spec_with_db(fixture: &Fixture, task: &str, content: &str, id: &str) -> TaskSpec {
        let poll = "for i in $(seq 1 100); do \
                      if out=$(wget -q -O- http://db:8080/ 2>/dev/null); then echo \"got:$out\"; exit 0; fi; \
                      sleep 0.1; \
                    done; echo 'db never answered'; exit 1";
        let (mut spec, _) = docker_spec(fixture, task, &[poll]);
        spec.labels = vec![(TEST_LABEL.to_string(), id.to_string())];
        let serve = format!(
            "mkdir -p /www && echo {content} > /www/index.html && exec httpd -f -p 8080 -h /www"
        );
        spec.services = vec![Service {
            alias: "db".into(),
            image: TEST_IMAGE.into(),
            env: vec![("ROLE".into(), "db".into())],
            command: Some(vec!["sh".into(), "-c".into(), serve]),
        }];
        spec
    }
    let fixture = Fixture::new(&[]);
    let id = unique();
    let (task_a, task_b) = (format!("svc-a-{id}"), format!("svc-b-{id}"));
    let spec_a = spec_with_db(&fixture, &task_a, "from-A", &id);
    let spec_b = spec_with_db(&fixture, &task_b, "from-B", &id);
    let executor = executor().await;
    let (rec_a, rec_b) = (Recorder::new(), Recorder::new());
    let (outcome_a, outcome_b) = tokio::join!(
        executor.run(&spec_a, rec_a.clone(), CancellationToken::new()),
        executor.run(&spec_b, rec_b.clone(), CancellationToken::new()),
    );
    assert_eq!(
        outcome_a.status,
        Status::Success,
        "{outcome_a:?}\n{}",
        rec_a.all_text()
    );
    assert_eq!(
        outcome_b.status,
        Status::Success,
        "{outcome_b:?}\n{}",
        rec_b.all_text()
    );
    assert!(rec_a.text().contains("got:from-A"), "{}", rec_a.text());
    assert!(rec_b.text().contains("got:from-B"), "{}", rec_b.text());
    assert!(
        rec_a
            .all_text()
            .contains(&format!("starting service db ({TEST_IMAGE})")),
        "{}",
        rec_a.all_text()
    );
    assert_no_objects("kiln.task", &task_a).await;
    assert_no_objects("kiln.task", &task_b).await;
    assert_no_objects(TEST_LABEL, &id).await;
}

#[tokio::test]
async fn a_task_over_its_timeout_is_stopped_and_removed() {
    let fixture = Fixture::new(&[]);
    let (mut spec, id) = docker_spec(&fixture, "slow", &["sleep 30", "echo never"]);
    spec.timeout = Some(Duration::from_secs(2));
    let start = Instant::now();
    let (outcome, recorder) = run(&spec).await;
    let took = start.elapsed();
    assert_eq!(
        outcome.status,
        Status::TimedOut,
        "{outcome:?}\n{}",
        recorder.all_text()
    );
    assert_eq!(outcome.steps[0].status, Status::TimedOut);
    assert_eq!(outcome.steps[1].status, Status::Skipped);
    assert!(
        outcome.error.as_deref().unwrap_or("").contains("timeout"),
        "{:?}",
        outcome.error
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_no_objects(TEST_LABEL, &id).await;
}

#[tokio::test]
async fn cancelling_stops_the_task_and_removes_everything() {
    let fixture = Fixture::new(&[]);
    let (spec, id) = docker_spec(&fixture, "cancelled", &["sleep 30"]);
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let recorder = Recorder::new();
    let executor = executor().await;
    let started = recorder.clone();
    tokio::spawn(async move {
        // Cancel one second into the step itself, not into the set-up.
        while started.started.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        trigger.cancel();
    });
    let start = Instant::now();
    let outcome = executor.run(&spec, recorder.clone(), cancel).await;
    assert_eq!(
        outcome.status,
        Status::Cancelled,
        "{outcome:?}\n{}",
        recorder.all_text()
    );
    assert_eq!(outcome.steps[0].status, Status::Cancelled);
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
    wait_until_gone(TEST_LABEL, &id, Duration::from_secs(2)).await;
}

#[tokio::test]
async fn dropping_a_running_task_still_removes_its_objects() {
    let fixture = Fixture::new(&[]);
    let (mut spec, id) = docker_spec(&fixture, "dropped", &["sleep 30"]);
    spec.services = vec![Service {
        alias: "sidecar".into(),
        image: TEST_IMAGE.into(),
        env: vec![],
        command: Some(vec!["sleep".into(), "300".into()]),
    }];
    let executor = executor().await;
    let recorder = Recorder::new();
    let step_started = async {
        while recorder.started.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        outcome = executor.run(&spec, recorder.clone(), CancellationToken::new()) => {
            panic!("the task ended before it was dropped: {outcome:?}\n{}", recorder.all_text())
        }
        _ = step_started => {}
    }
    // The step runs, so the task and service containers and the network exist;
    // the run future has just been dropped by `select!`.
    wait_until_gone(TEST_LABEL, &id, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn secrets_never_reach_the_log() {
    let fixture = Fixture::new(&[]);
    let (mut spec, id) = docker_spec(
        &fixture,
        "secrets",
        &["echo \"token is $API_TOKEN\"; printf 'hun'; printf 'ter2\\n'; echo done"],
    );
    spec.secrets = vec![("API_TOKEN".into(), "hunter2".into())];
    let (outcome, recorder) = run(&spec).await;
    let all = recorder.all_text();
    assert_eq!(outcome.status, Status::Success, "{outcome:?}\n{all}");
    assert!(!all.contains("hunter2"), "{all}");
    assert_eq!(recorder.text().matches("***").count(), 2, "{all}");
    assert!(recorder.text().contains("token is ***"), "{all}");
    assert!(recorder.text().contains("done"), "{all}");
    assert_no_objects(TEST_LABEL, &id).await;
    // The step itself does see the value.
    let (mut spec, _) = docker_spec(&fixture, "secret-env", &["env | grep API_TOKEN= | wc -l"]);
    spec.secrets = vec![("API_TOKEN".into(), "s3cr3t-value".into())];
    let (outcome, recorder) = run(&spec).await;
    assert_eq!(outcome.status, Status::Success);
    assert!(recorder.text().trim().ends_with('1'), "{}", recorder.text());
}

#[tokio::test]
async fn output_waits_for_a_sink_that_is_not_ready_and_none_is_lost() {
    let fixture = Fixture::new(&[]);
    let (spec, id) = docker_spec(
        &fixture,
        "paused",
        &["head -c 1048576 /dev/zero | tr '\\0' x; echo; echo done >&2"],
    );
    let (outcome, text) =
        run_with_paused_sink(&executor().await, &spec, Duration::from_secs(2)).await;
    assert_eq!(outcome.status, Status::Success, "{outcome:?}");
    assert_eq!(text.matches('x').count(), 1048576, "every byte arrived");
    assert!(
        text.contains("done"),
        "{}",
        &text[text.len().saturating_sub(200)..]
    );
    assert_no_objects(TEST_LABEL, &id).await;
}

/// Removes a built image tag when the test ends, even by a panic.
struct RemoveImage(Option<String>);

impl Drop for RemoveImage {
    fn drop(&mut self) {
        if let Some(tag) = self.0.take() {
            let _ = std::process::Command::new("docker")
                .args(["rmi", "-f", &tag])
                .output();
        }
    }
}

fn built_tag(log: &str, prefix: &str) -> Option<String> {
    let at = log.find(prefix)? + prefix.len();
    Some(log[at..].split_whitespace().next()?.to_string())
}

#[tokio::test]
async fn builds_the_image_from_a_dockerfile_once() {
    // The random file makes the context, hence the tag, new to this run.
    let nonce = unique();
    let fixture = Fixture::new(&[
        (
            "ci/Dockerfile",
            "FROM kiln-test/busybox:latest\nRUN echo built > /built.txt\n",
        ),
        ("nonce.txt", &nonce),
    ]);
    let (mut spec, id) = docker_spec(&fixture, "built", &["cat /built.txt", "cat nonce.txt"]);
    spec.image = None;
    spec.build = Some(Build {
        dockerfile: "ci/Dockerfile".into(),
        context: ".".into(),
    });
    let mut cleanup = RemoveImage(None);

    let (outcome, recorder) = run(&spec).await;
    let log = recorder.all_text();
    let tag = built_tag(&log, "building image ").unwrap_or_else(|| panic!("no build in:\n{log}"));
    cleanup.0 = Some(tag.clone());
    assert!(
        tag.starts_with("kiln-build:") && tag.len() == "kiln-build:".len() + 16,
        "{tag}"
    );
    assert_eq!(outcome.status, Status::Success, "{outcome:?}\n{log}");
    assert!(recorder.text().contains("built"), "{log}");
    assert!(recorder.text().contains(&nonce), "{log}");

    let (outcome, recorder) = run(&spec).await;
    let log = recorder.all_text();
    assert_eq!(outcome.status, Status::Success, "{outcome:?}\n{log}");
    assert_eq!(
        built_tag(&log, "using cached image "),
        Some(tag.clone()),
        "{log}"
    );
    assert!(!log.contains("building image"), "{log}");
    assert!(recorder.text().contains("built"), "{log}");
    assert_no_objects(TEST_LABEL, &id).await;

    // A Dockerfile that fails to build fails the task with the build's message.
    let broken = Fixture::new(&[
        (
            "Dockerfile",
            "FROM kiln-test/busybox:latest\nRUN echo failing-build && exit 7\n",
        ),
        ("n", &nonce),
    ]);
    let (mut spec, _) = docker_spec(&broken, "broken-build", &["true"]);
    spec.image = None;
    spec.build = Some(Build {
        dockerfile: "Dockerfile".into(),
        context: ".".into(),
    });
    let (outcome, recorder) = run(&spec).await;
    assert_eq!(outcome.status, Status::Error, "{outcome:?}");
    let error = outcome.error.unwrap_or_default();
    assert!(
        error.starts_with("building Dockerfile") && error.contains("7"),
        "{error}"
    );
    assert!(
        recorder.all_text().contains("failing-build"),
        "{}",
        recorder.all_text()
    );
}

#[tokio::test]
async fn collects_only_the_declared_artifacts_and_reports() {
    let fixture = Fixture::new(&[]);
    let script = "mkdir -p out/b reports/deep && echo a > out/a.txt && echo c > out/b/c.txt && echo junk > junk.txt \
                  && echo '<testsuite/>' > reports/unit.xml && echo nested > reports/deep/x.xml \
                  && ln -s /etc/passwd out/link && printf '#!/bin/sh\\n' > out/tool && chmod 755 out/tool";
    let (mut spec, id) = docker_spec(&fixture, "outputs", &[script]);
    spec.artifacts = vec!["out".into(), "dist/*.tar".into()];
    spec.reports = vec!["reports/*.xml".into()];
    let (outcome, recorder) = run(&spec).await;
    assert_eq!(
        outcome.status,
        Status::Success,
        "{outcome:?}\n{}",
        recorder.all_text()
    );
    let paths = |list: &[PathBuf]| {
        list.iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        paths(&outcome.artifacts),
        ["out/a.txt", "out/b/c.txt", "out/tool"]
    );
    assert_eq!(paths(&outcome.reports), ["reports/unit.xml"]);
    assert_eq!(read(&fixture.output("artifacts/out/a.txt")), "a\n");
    assert_eq!(read(&fixture.output("artifacts/out/b/c.txt")), "c\n");
    assert_eq!(
        read(&fixture.output("reports/reports/unit.xml")),
        "<testsuite/>\n"
    );
    assert!(!fixture.output("artifacts/junk.txt").exists());
    assert!(
        std::fs::symlink_metadata(fixture.output("artifacts/out/link")).is_err(),
        "a symlink was written"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(fixture.output("artifacts/out/tool"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "executable bit lost: {mode:o}");
    let log = recorder.all_text();
    assert!(
        log.contains("artifact pattern `dist/*.tar` matched no file"),
        "{log}"
    );
    assert!(!log.contains("pattern `out`"), "{log}");
    assert!(
        log.contains("artifact `out/link` is a symlink to `/etc/passwd`, outside the workspace"),
        "{log}"
    );
    assert_no_objects(TEST_LABEL, &id).await;
}

#[tokio::test]
async fn a_missing_image_is_an_error_naming_it() {
    let fixture = Fixture::new(&[]);
    let (mut spec, id) = docker_spec(&fixture, "missing", &["true"]);
    spec.image = Some("kiln-test/does-not-exist:1".into());
    let (outcome, _) = run(&spec).await;
    assert_eq!(outcome.status, Status::Error, "{outcome:?}");
    let error = outcome.error.unwrap_or_default();
    assert!(error.contains("kiln-test/does-not-exist:1"), "{error}");
    assert!(error.contains("not present locally"), "{error}");
    assert_eq!(outcome.steps[0].status, Status::Skipped);
    assert_no_objects(TEST_LABEL, &id).await;

    let (mut spec, _) = docker_spec(&fixture, "no-image", &["true"]);
    spec.image = None;
    let (outcome, _) = run(&spec).await;
    assert_eq!(outcome.status, Status::Error);
    assert_eq!(
        outcome.error.as_deref(),
        Some("task has no `image` or `build`; the docker executor needs one")
    );
}

#[tokio::test]
async fn resources_become_container_limits() {
    // The engine on the machine decides the cgroup layout the container sees.
    let cgroup_v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let script = if cgroup_v2 {
        "echo mem=$(cat /sys/fs/cgroup/memory.max); echo cpu=$(cat /sys/fs/cgroup/cpu.max)"
    } else {
        "echo mem=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes); \
         echo cpu=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)"
    };
    let fixture = Fixture::new(&[]);
    let (mut spec, id) = docker_spec(&fixture, "limited", &[script]);
    spec.resources.memory_bytes = Some(64 * 1024 * 1024);
    spec.resources.cpus = Some(0.5);
    let (outcome, recorder) = run(&spec).await;
    let text = recorder.text();
    assert_eq!(
        outcome.status,
        Status::Success,
        "{outcome:?}\n{}",
        recorder.all_text()
    );
    assert!(text.contains("mem=67108864"), "{text}");
    assert!(text.contains("cpu=50000 100000"), "{text}");
    assert_no_objects(TEST_LABEL, &id).await;
}

#[tokio::test]
async fn remove_leftovers_sweeps_labelled_objects() {
    let id = unique();
    let label = format!("{TEST_LABEL}={id}");
    docker(&[
        "network",
        "create",
        "--label",
        &label,
        &format!("kiln-leftover-{id}"),
    ])
    .await;
    docker(&[
        "create",
        "--label",
        &label,
        "--network",
        &format!("kiln-leftover-{id}"),
        TEST_IMAGE,
        "sleep",
        "60",
    ])
    .await;
    assert_eq!(objects(TEST_LABEL, &id).await.len(), 2);
    let removed = executor()
        .await
        .remove_leftovers(TEST_LABEL, &id)
        .await
        .expect("sweep");
    assert_eq!(removed, 2);
    assert_no_objects(TEST_LABEL, &id).await;
}

/// A build repository of one test's own, so that pruning it never touches the
/// images of tests running beside it; its images go when the test ends.
struct BuildRepo {
    name: String,
    id: String,
}

impl BuildRepo {
    fn new() -> BuildRepo {
        let id = unique();
        BuildRepo {
            name: format!("kiln-test-cache-{id}"),
            id,
        }
    }

    async fn executor(&self, max_images: usize, max_age: Duration) -> DockerExecutor {
        let mut executor = executor().await;
        executor.build_repository = self.name.clone();
        executor.build_cache = BuildCachePolicy {
            max_images,
            max_age,
        };
        executor
    }

    /// A source tree whose Dockerfile makes an image of its own for each `n`.
    fn fixture(&self, n: u32) -> Fixture {
        let dockerfile = format!(
            "FROM kiln-test/busybox:latest\nRUN echo {}-{n} > /n.txt\n",
            self.id
        );
        Fixture::new(&[("Dockerfile", &dockerfile)])
    }

    fn spec(&self, fixture: &Fixture, scripts: &[&str]) -> TaskSpec {
        let (mut spec, _) = docker_spec(fixture, "cached-build", scripts);
        spec.labels = vec![(TEST_LABEL.to_string(), self.id.clone())];
        spec.image = None;
        spec.build = Some(Build {
            dockerfile: "Dockerfile".into(),
            context: ".".into(),
        });
        spec
    }

    /// Runs a task on the image of `n`; returns its tag and whether it was built.
    async fn run(&self, executor: &DockerExecutor, n: u32) -> (String, bool) {
        let fixture = self.fixture(n);
        let spec = self.spec(&fixture, &["cat /n.txt"]);
        let recorder = Recorder::new();
        let outcome = executor
            .run(&spec, recorder.clone(), CancellationToken::new())
            .await;
        let log = recorder.all_text();
        assert_eq!(outcome.status, Status::Success, "{outcome:?}\n{log}");
        assert!(recorder.text().contains(&format!("-{n}")), "{log}");
        match built_tag(&log, "building image ") {
            Some(tag) => (tag, true),
            None => (
                built_tag(&log, "using cached image ")
                    .unwrap_or_else(|| panic!("no image in:\n{log}")),
                false,
            ),
        }
    }

    /// The repository's tags, sorted.
    async fn tags(&self) -> Vec<String> {
        let listed = docker(&["images", &self.name, "--format", "{{.Repository}}:{{.Tag}}"]).await;
        let mut tags: Vec<String> = listed.lines().map(str::to_string).collect();
        tags.sort();
        tags
    }
}

impl Drop for BuildRepo {
    fn drop(&mut self) {
        // A test that failed half-way may have left a container on an image.
        let label = format!("label={TEST_LABEL}={}", self.id);
        if let Ok(listed) = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", &label])
            .output()
        {
            for id in String::from_utf8_lossy(&listed.stdout).lines() {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f", id])
                    .output();
            }
        }
        let Ok(listed) = std::process::Command::new("docker")
            .args(["images", &self.name, "--format", "{{.Repository}}:{{.Tag}}"])
            .output()
        else {
            return;
        };
        for tag in String::from_utf8_lossy(&listed.stdout).lines() {
            let _ = std::process::Command::new("docker")
                .args(["rmi", "-f", tag])
                .output();
        }
    }
}

fn sorted(tags: &[&String]) -> Vec<String> {
    let mut tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    tags.sort();
    tags
}

#[tokio::test]
async fn a_build_prunes_the_least_recently_used_images_beyond_the_count() {
    let repo = BuildRepo::new();
    let executor = repo.executor(2, Duration::from_secs(24 * 3600)).await;
    let (one, built) = repo.run(&executor, 1).await;
    assert!(
        built && one.starts_with(&format!("{}:", repo.name)),
        "{one}"
    );
    let (two, _) = repo.run(&executor, 2).await;
    assert_eq!(repo.tags().await, sorted(&[&one, &two]));
    let (three, built) = repo.run(&executor, 3).await;
    assert!(built);
    assert_eq!(
        repo.tags().await,
        sorted(&[&two, &three]),
        "the oldest went"
    );

    // Using an image counts, not building it: `two` is now the newest used.
    let (again, built) = repo.run(&executor, 2).await;
    assert!(!built && again == two, "{again}");
    let (four, _) = repo.run(&executor, 4).await;
    assert_eq!(repo.tags().await, sorted(&[&two, &four]));
    assert_no_objects(TEST_LABEL, &repo.id).await;
}

#[tokio::test]
async fn pruning_spares_images_in_use_and_the_one_just_built() {
    let repo = BuildRepo::new();
    // Keep nothing, but what must be kept.
    let executor = repo.executor(0, Duration::ZERO).await;

    // An image a container outside Kiln uses: the engine refuses to remove it.
    let (outside, _) = repo.run(&executor, 1).await;
    assert_eq!(
        repo.tags().await,
        sorted(&[&outside]),
        "the one just built stays"
    );
    let holder = docker(&[
        "create",
        "--label",
        &format!("{TEST_LABEL}={}", repo.id),
        &outside,
        "true",
    ])
    .await;
    let holder = holder.trim().to_string();

    // A task of this executor runs on its image meanwhile.
    let fixture = repo.fixture(2);
    let spec = repo.spec(&fixture, &["sleep 30"]);
    let recorder = Recorder::new();
    let cancel = CancellationToken::new();
    let running = executor.run(&spec, recorder.clone(), cancel.clone());
    tokio::pin!(running);
    tokio::select! {
        outcome = &mut running => panic!("ended early: {outcome:?}\n{}", recorder.all_text()),
        _ = async {
            while recorder.started.lock().unwrap().is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        } => {}
    }
    let running_tag = built_tag(&recorder.all_text(), "building image ").unwrap();

    // Another build prunes: failing to remove `outside` does not fail it.
    let (just_built, built) = repo.run(&executor, 3).await;
    assert!(built);
    assert_eq!(
        repo.tags().await,
        sorted(&[&outside, &running_tag, &just_built])
    );

    // Pruning now takes only the image no one uses.
    let report = executor.prune_build_images().await.expect("prune");
    assert_eq!(report.removed, sorted(&[&just_built]), "{report:?}");
    assert_eq!(report.in_use, sorted(&[&outside]), "{report:?}");
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(repo.tags().await, sorted(&[&outside, &running_tag]));

    cancel.cancel();
    let outcome = running.await;
    assert_eq!(outcome.status, Status::Cancelled, "{outcome:?}");
    docker(&["rm", "-f", &holder]).await;
    let report = executor.prune_build_images().await.expect("prune");
    assert!(report.removed.contains(&running_tag), "{report:?}");
    assert_eq!(repo.tags().await, Vec::<String>::new());
    assert_no_objects(TEST_LABEL, &repo.id).await;
}

#[tokio::test]
async fn a_build_prunes_images_unused_for_longer_than_the_age() {
    let repo = BuildRepo::new();
    // Far above what a build takes, even on a loaded machine.
    let max_age = Duration::from_secs(10);
    let executor = repo.executor(100, max_age).await;
    let (used, _) = repo.run(&executor, 1).await;
    let (unused, _) = repo.run(&executor, 2).await;
    tokio::time::sleep(max_age / 2 + Duration::from_secs(1)).await;
    let (again, built) = repo.run(&executor, 1).await;
    assert!(!built && again == used, "{again}");
    assert_eq!(repo.tags().await, sorted(&[&used, &unused]));
    tokio::time::sleep(max_age / 2).await;
    // `unused` was last used over 11 s ago, `used` about 5 s ago.
    let (new, _) = repo.run(&executor, 3).await;
    assert_eq!(repo.tags().await, sorted(&[&used, &new]));
    assert_no_objects(TEST_LABEL, &repo.id).await;
}

/// Tasks without services share one network on which containers cannot
/// talk to each other: a task cannot reach another's server (on the
/// engine's default bridge it could).
#[tokio::test]
async fn a_task_cannot_reach_another_tasks_container() {
    let fixture = Fixture::new(&[]);
    let serve = "mkdir -p /www && echo secret-page > /www/index.html && httpd -f -p 8080 -h /www & sleep 60";
    let (server_spec, server_id) = docker_spec(&fixture, &format!("serve-{}", unique()), &[serve]);
    let executor = executor().await;
    let cancel = CancellationToken::new();
    let serving = executor.run(&server_spec, Recorder::new(), cancel.clone());
    let find_address = async {
        let filter = format!("label={TEST_LABEL}={server_id}");
        let started = Instant::now();
        loop {
            let ids = docker(&["ps", "-q", "--filter", &filter]).await;
            if let Some(id) = ids.lines().next() {
                let address = docker(&[
                    "inspect",
                    "-f",
                    "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                    id,
                ])
                .await;
                let address = address.trim().to_string();
                if !address.is_empty() {
                    return address;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the server task never started"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let probe = async {
        let address = find_address.await;
        // Give httpd a moment to listen, then try for a few seconds.
        let script = format!(
            "sleep 1; if wget -q -T 3 -O- http://{address}:8080/; then echo REACHED; else echo 'could not reach'; fi"
        );
        let (spec, _) = docker_spec(&fixture, &format!("probe-{}", unique()), &[&script]);
        let (outcome, recorder) = run(&spec).await;
        cancel.cancel();
        (outcome, recorder)
    };
    let (served, (outcome, recorder)) = tokio::join!(serving, probe);
    assert_eq!(served.status, Status::Cancelled, "{served:?}");
    assert_eq!(
        outcome.status,
        Status::Success,
        "{outcome:?}\n{}",
        recorder.all_text()
    );
    let text = recorder.text();
    assert!(
        text.contains("could not reach") && !text.contains("secret-page"),
        "a task reached another task's container:\n{}",
        recorder.all_text()
    );
    let options = docker(&[
        "network",
        "inspect",
        "-f",
        "{{index .Options \"com.docker.network.bridge.enable_icc\"}}",
        kiln_exec::docker::TASKS_NETWORK,
    ])
    .await;
    assert_eq!(options.trim(), "false");
}
