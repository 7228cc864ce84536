//! Kiln's own overhead per task, on both executors.
//!
//! `cargo bench -p kiln --bench overhead` runs tasks whose only step is `true`
//! through the real scheduler and executor, one at a time, and compares the
//! time per task with the bare cost of the same work without Kiln:
//! spawning `sh -e -c true` for `process`, and `docker run --rm IMAGE true`
//! for `docker`. The difference is what Kiln adds.
//!
//! Set `KILN_BENCH_TASKS` / `KILN_BENCH_DOCKER_TASKS` to change the counts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln::local::{RunContext, RunObserver, RunPlan, run_pipeline};
use kiln_exec::docker::DockerExecutor;
use kiln_exec::process::ProcessExecutor;
use kiln_exec::{CancellationToken, Executor, LogStream, SourceTree, TaskEvents};
use kiln_pipeline::{Event, Pipeline, Status, Task};

const IMAGE: &str = "kiln-test/busybox:latest";

struct Quiet;

impl TaskEvents for Quiet {
    fn log(&self, _: LogStream, _: &[u8]) {}
}

impl RunObserver for Quiet {
    fn task_events(&self, _: &Task, _: u32) -> Arc<dyn TaskEvents> {
        Arc::new(Quiet)
    }
}

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A pipeline of `count` independent tasks whose one step is `true`.
fn trivial_pipeline(count: usize, image: Option<&str>) -> Pipeline {
    let mut text = String::from("version: 1\ntasks:\n");
    for i in 0..count {
        text.push_str(&format!("  t{i}:\n    steps:\n      - run: 'true'\n"));
        if let Some(image) = image {
            text.push_str(&format!("    image: {image}\n"));
        }
    }
    kiln_pipeline::parse("bench.kiln.yml", &text).expect("the benchmark pipeline is valid")
}

/// Seconds per task for `count` trivial tasks run one after another.
async fn per_task_through_kiln(
    executor: Arc<dyn Executor>,
    count: usize,
    image: Option<&str>,
) -> Duration {
    let source = tempfile::tempdir().unwrap();
    for name in ["README.md", "src/main.rs", "Cargo.toml"] {
        let path = source.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "fixture\n").unwrap();
    }
    let run_dir = tempfile::tempdir().unwrap();
    let plan = RunPlan {
        pipeline: trivial_pipeline(count, image),
        context: RunContext {
            job: "bench".into(),
            run_number: 1,
            branch: Some("main".into()),
            sha: None,
            event: Event::Manual,
            agent: "local".into(),
            pull_request: None,
            tag: None,
        },
        source: Arc::new(SourceTree::scan(source.path()).unwrap()),
        run_dir: run_dir.path().to_path_buf(),
        secrets: HashMap::new(),
        extra_env: Vec::new(),
        jobs: 1,
        labels: vec![("kiln.bench".into(), "1".into())],
    };
    let started = Instant::now();
    let report = run_pipeline(plan, executor, Arc::new(Quiet), CancellationToken::new()).await;
    let elapsed = started.elapsed();
    assert_eq!(report.status, Status::Success, "{report:#?}");
    elapsed / count as u32
}

async fn per_spawn_bare_shell(count: usize) -> Duration {
    let started = Instant::now();
    for _ in 0..count {
        let status = tokio::process::Command::new("sh")
            .args(["-e", "-c", "true"])
            .status()
            .await
            .unwrap();
        assert!(status.success());
    }
    started.elapsed() / count as u32
}

fn per_run_bare_docker(count: usize) -> Duration {
    let started = Instant::now();
    for _ in 0..count {
        let status = std::process::Command::new("docker")
            .args(["run", "--rm", IMAGE, "true"])
            .status()
            .unwrap();
        assert!(status.success());
    }
    started.elapsed() / count as u32
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn signed_ms(a: Duration, b: Duration) -> String {
    format!("{:+.2} ms", (a.as_secs_f64() - b.as_secs_f64()) * 1000.0)
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; with `cargo test --benches` just check it builds.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let tasks = env_count("KILN_BENCH_TASKS", 300);
    let docker_tasks = env_count("KILN_BENCH_DOCKER_TASKS", 20);

    // Warm up: the first spawns pay for page-ins and the allocator.
    per_task_through_kiln(Arc::new(ProcessExecutor::default()), 10, None).await;
    per_spawn_bare_shell(10).await;

    let kiln_process =
        per_task_through_kiln(Arc::new(ProcessExecutor::default()), tasks, None).await;
    let bare_shell = per_spawn_bare_shell(tasks).await;
    println!("process executor, {tasks} tasks with step `true`, one at a time:");
    println!("  kiln per task          {}", ms(kiln_process));
    println!("  bare `sh -e -c true`   {}", ms(bare_shell));
    println!(
        "  kiln overhead per task {}   (target < 5 ms)",
        signed_ms(kiln_process, bare_shell)
    );

    match DockerExecutor::connect().await {
        Ok(docker) => {
            let docker: Arc<dyn Executor> = Arc::new(docker);
            per_task_through_kiln(docker.clone(), 2, Some(IMAGE)).await;
            per_run_bare_docker(2);
            let kiln_docker = per_task_through_kiln(docker, docker_tasks, Some(IMAGE)).await;
            let bare_docker = per_run_bare_docker(docker_tasks);
            println!(
                "docker executor, {docker_tasks} tasks with step `true` in {IMAGE}, one at a time:"
            );
            println!("  kiln per task                  {}", ms(kiln_docker));
            println!("  bare `docker run --rm IMAGE true` {}", ms(bare_docker));
            println!(
                "  kiln above bare docker run     {}   (target < 100 ms)",
                signed_ms(kiln_docker, bare_docker)
            );
        }
        Err(e) => println!(
            "docker executor: skipped, no engine answered ({e}); run scripts/setup-test-env.sh"
        ),
    }
}
