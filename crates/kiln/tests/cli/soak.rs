//! Soak: a real `kiln server` (SQLite, no worker of its own) and four real
//! `kiln agent` processes (process executor) over gRPC on loopback run one
//! run of 1 000 independent tasks while a killer SIGKILLs a random agent
//! every 0.5–2 s and starts it again under the same name.
//!
//! Afterwards, through the REST API only: every task ended exactly once (a
//! terminal status; `error: agent lost` only when its retries ran out), the
//! console of every task holds its own lines exactly once and in order and
//! nothing of another task, the server's counters of claims and accepted
//! finishes agree with the tasks' attempts, and no agent still holds a task.
//!
//! The kill schedule comes from a seed printed at the start;
//! `KILN_SOAK_SEED=<seed>` replays it (the interleaving with the tasks
//! still depends on timing). `KILN_LOG=kiln_server=debug` shows the
//! server's log.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;

use crate::agents::Agent;
use crate::server::Server;

const TASKS: usize = 1_000;
const AGENTS: usize = 4;
const CAPACITY: u32 = 4;
/// Extra attempts per task: a task ends `agent lost` only when killed 4 times.
const RETRY: i64 = 3;
const LEASE: &str = "2s";
const JOB: &str = "soak";
/// Killing stops once this many tasks have ended, or after `KILLING_FOR`.
const STOP_KILLING_AT: usize = TASKS * 9 / 10;
const KILLING_FOR: Duration = Duration::from_secs(150);
/// The whole run must end within this; a hang panics with the stuck tasks.
const RUN_LIMIT: Duration = Duration::from_secs(360);

/// xorshift64*: a seeded schedule without a new dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to - from + 1))
    }
}

fn seed() -> u64 {
    match std::env::var("KILN_SOAK_SEED") {
        Ok(text) => text
            .trim()
            .parse()
            .expect("KILN_SOAK_SEED must be an unsigned integer"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    }
}

fn task_name(i: usize) -> String {
    format!("t{i:04}")
}

/// What task `name` prints, line by line, across its two steps. The pauses
/// are longer than the agent's 20 ms linger, so a task's output travels in
/// several chunks (split again at the step boundary), and a kill often
/// lands in the middle of a task.
fn expected_lines(name: &str) -> Vec<String> {
    (1..=5).map(|k| format!("{name} line {k}")).collect()
}

fn pipeline() -> String {
    let mut text = String::from("version: 1\ntasks:\n");
    for i in 0..TASKS {
        let name = task_name(i);
        let line = |k: u32| format!("echo {name} line {k}");
        text.push_str(&format!(
            "  {name}:\n    retry: {RETRY}\n    steps:\n      \
             - {{name: first, run: '{}; sleep 0.15; {}; sleep 0.15; {}'}}\n      \
             - {{name: second, run: 'sleep 0.15; {}; sleep 0.15; {}'}}\n",
            line(1),
            line(2),
            line(3),
            line(4),
            line(5),
        ));
    }
    text
}

fn is_terminal(status: &str) -> bool {
    !["pending", "queued", "running"].contains(&status)
}

fn describe(task: &Value) -> String {
    format!(
        "{} {} attempt {} agent {} reason {}",
        task["name"].as_str().unwrap_or("?"),
        task["status"].as_str().unwrap_or("?"),
        task["attempt"],
        task["agent"].as_str().unwrap_or("-"),
        task["reason"].as_str().unwrap_or("-"),
    )
}

/// Kills a random agent every 0.5–2 s (SIGKILL, like a crashed machine) and
/// starts it again under the same name after 0–2.5 s (so sometimes within
/// the lease, sometimes after it), on a thread of its own until stopped.
/// Dropping it (a failed assertion too) stops it and waits for it, so no
/// process outlives the test.
struct Killer {
    stop: Arc<AtomicBool>,
    kills: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<Vec<Option<Agent>>>>,
}

impl Killer {
    fn start(server: Arc<Server>, agents: Vec<Option<Agent>>, rng: Rng) -> Killer {
        let stop = Arc::new(AtomicBool::new(false));
        let kills = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, kills) = (stop.clone(), kills.clone());
            std::thread::spawn(move || kill_loop(server, agents, rng, stop, kills))
        };
        Killer {
            stop,
            kills,
            thread: Some(thread),
        }
    }

    fn kills(&self) -> usize {
        self.kills.load(Ordering::SeqCst)
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Passes on a panic of the killer (an agent that did not come back).
    fn check(&mut self) {
        if !self.stopped() && self.thread.as_ref().is_some_and(|t| t.is_finished()) {
            self.finish();
            unreachable!("the killer returned before it was told to stop");
        }
    }

    /// Stops killing; returns the agents, all running.
    fn finish(&mut self) -> Vec<Option<Agent>> {
        self.stop();
        match self.thread.take().expect("finished once").join() {
            Ok(agents) => agents,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for Killer {
    fn drop(&mut self) {
        self.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn kill_loop(
    server: Arc<Server>,
    mut agents: Vec<Option<Agent>>,
    mut rng: Rng,
    stop: Arc<AtomicBool>,
    kills: Arc<AtomicUsize>,
) -> Vec<Option<Agent>> {
    let started = Instant::now();
    let nap = |length: Duration| {
        let until = Instant::now() + length;
        while Instant::now() < until && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    while !stop.load(Ordering::SeqCst) {
        nap(rng.millis(500, 2_000));
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let i = rng.below(AGENTS as u64) as usize;
        let name = format!("soak-{}", i + 1);
        let work_dir = agents[i].take().map(Agent::kill); // SIGKILL, then reaped
        let n = kills.fetch_add(1, Ordering::SeqCst) + 1;
        let pause = rng.millis(0, 2_500);
        eprintln!(
            "soak: {:5.1}s kill #{n}: SIGKILL {name}, restart in {pause:?}",
            started.elapsed().as_secs_f64()
        );
        // The restart happens even once told to stop: every agent comes back.
        std::thread::sleep(pause);
        // In its work directory, where its own token is.
        let work_dir = work_dir.unwrap_or_else(|| tempfile::tempdir().unwrap());
        agents[i] = Some(Agent::start_in(
            &server, &name, "linux", CAPACITY, "process", work_dir,
        ));
    }
    agents
}

/// Files under `dir` whose names end with `suffix`.
async fn metrics(server: &Server) -> BTreeMap<String, f64> {
    let text = server.get("/metrics").await.text().await.unwrap();
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// Status of every task of the run, or the detail when something is odd.
async fn run_detail(server: &Server, run: i64) -> Value {
    server.json(&format!("/api/v1/jobs/{JOB}/runs/{run}")).await
}

#[tokio::test]
async fn a_thousand_tasks_survive_agents_killed_at_random() {
    let seed = seed();
    eprintln!("soak: seed {seed} (KILN_SOAK_SEED={seed} replays the kill schedule)");
    let test_started = Instant::now();
    let server = Arc::new(Server::start_for_agents_with_lease(
        tempfile::tempdir().unwrap(),
        "127.0.0.1:0",
        LEASE,
    ));
    let agents: Vec<Option<Agent>> = (1..=AGENTS)
        .map(|i| {
            Some(Agent::start(
                &server,
                &format!("soak-{i}"),
                "linux",
                CAPACITY,
            ))
        })
        .collect();

    let run = server.freestyle(JOB, &pipeline()).await;
    let mut killer = Killer::start(server.clone(), agents, Rng::new(seed));

    // Watch the run; stop killing when most tasks have ended.
    let started = Instant::now();
    let mut last_report = Instant::now() - Duration::from_secs(60);
    let detail = loop {
        let detail = run_detail(&server, run).await;
        let tasks = detail["tasks"].as_array().expect("the run has tasks");
        let mut by_status: BTreeMap<&str, usize> = BTreeMap::new();
        for task in tasks {
            *by_status
                .entry(task["status"].as_str().unwrap_or("?"))
                .or_default() += 1;
        }
        let ended = tasks
            .iter()
            .filter(|t| is_terminal(t["status"].as_str().unwrap_or("")))
            .count();
        let retried = tasks
            .iter()
            .filter(|t| t["attempt"].as_i64().unwrap_or(0) > 1)
            .count();
        if last_report.elapsed() >= Duration::from_secs(5) || ended == TASKS {
            eprintln!(
                "soak: {:5.1}s {ended}/{TASKS} ended {by_status:?}, {retried} retried, {} kills",
                started.elapsed().as_secs_f64(),
                killer.kills()
            );
            last_report = Instant::now();
        }
        if !killer.stopped() && (ended >= STOP_KILLING_AT || started.elapsed() > KILLING_FOR) {
            eprintln!(
                "soak: {:5.1}s stop killing at {ended}/{TASKS} ended",
                started.elapsed().as_secs_f64()
            );
            killer.stop();
        }
        killer.check();
        if is_terminal(detail["status"].as_str().unwrap_or("")) {
            break detail;
        }
        if started.elapsed() > RUN_LIMIT {
            let stuck: Vec<String> = tasks
                .iter()
                .filter(|t| !is_terminal(t["status"].as_str().unwrap_or("")))
                .map(describe)
                .collect();
            let listed = server.json("/api/v1/agents").await;
            let outputs: Vec<String> = killer
                .finish()
                .iter()
                .flatten()
                .map(|agent| {
                    let output = agent.output.lock().unwrap();
                    let mut tail = output.len().saturating_sub(4_000);
                    while !output.is_char_boundary(tail) {
                        tail += 1;
                    }
                    output[tail..].to_string()
                })
                .collect();
            panic!(
                "the run did not end within {RUN_LIMIT:?} (seed {seed}); run status {}, {} tasks not ended:\n{}\nagents: {listed:#}\nagents' output (KILN_LOG=kiln_agent=debug for more):\n{}",
                detail["status"],
                stuck.len(),
                stuck.join("\n"),
                outputs.join("\n---\n")
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let agents = killer.finish();
    let kills = killer.kills();
    eprintln!(
        "soak: run ended {} after {:.1}s, {kills} kills",
        detail["status"],
        started.elapsed().as_secs_f64()
    );

    // Every task once, each in a terminal state it may be in.
    let tasks = detail["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), TASKS, "seed {seed}: {detail:#}");
    let names: HashSet<&str> = tasks.iter().filter_map(|t| t["name"].as_str()).collect();
    let wanted: Vec<String> = (0..TASKS).map(task_name).collect();
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|n| !names.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty() && names.len() == TASKS,
        "seed {seed}: tasks missing or named twice: {missing:?}"
    );
    let mut wrong = Vec::new();
    let (mut succeeded, mut lost, mut attempts) = (0usize, 0usize, 0i64);
    for task in tasks {
        let attempt = task["attempt"].as_i64().unwrap_or(0);
        attempts += attempt;
        let reason = task["reason"].as_str().unwrap_or("");
        match task["status"].as_str().unwrap_or("") {
            "success" if (1..=RETRY + 1).contains(&attempt) => succeeded += 1,
            "error" if reason.contains("agent lost") && attempt == RETRY + 1 => lost += 1,
            _ => wrong.push(describe(task)),
        }
        if task["finished_at"].is_null() {
            wrong.push(format!("{} (no finished_at)", describe(task)));
        }
    }
    assert!(
        wrong.is_empty(),
        "seed {seed}: {} tasks ended in a state they should not be in:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    let expected_run = if lost == 0 { "success" } else { "error" };
    assert_eq!(detail["status"], expected_run, "seed {seed}");
    assert!(!detail["finished_at"].is_null(), "seed {seed}: {detail:#}");
    eprintln!(
        "soak: {succeeded} success, {lost} error (agent lost, retries exhausted), {} attempts in all ({} beyond the first)",
        attempts,
        attempts - TASKS as i64
    );
    assert!(kills > 0, "seed {seed}: the soak killed no agent");
    assert!(
        attempts > TASKS as i64,
        "seed {seed}: {kills} kills but no task was ever retried: the soak tested nothing"
    );

    // Each console holds every attempt's log, one after another, each after
    // the first opened by its `--- attempt N` line. Each attempt's holds
    // the task's own lines once, in order, and nothing else but the
    // runner's `--- ` headers: all of them for the attempt that succeeded,
    // a prefix for one cut short by a killed agent.
    let checks = tasks.iter().map(|task| {
        let server = &server;
        async move {
            let name = task["name"].as_str().unwrap();
            let response = server
                .get(&format!(
                    "/api/v1/jobs/{JOB}/runs/{run}/tasks/{name}/results/console"
                ))
                .await;
            let code = response.status();
            let log = response.text().await.unwrap();
            let mut parts: Vec<Vec<&str>> = vec![Vec::new()];
            for line in log.lines() {
                if line.starts_with("--- attempt ") {
                    parts.push(Vec::new());
                } else if !line.starts_with("--- ") {
                    parts.last_mut().unwrap().push(line);
                }
            }
            let expected = expected_lines(name);
            let is_prefix = |lines: &Vec<&str>| {
                lines.len() <= expected.len() && lines.iter().zip(&expected).all(|(a, b)| a == b)
            };
            let good = code.is_success()
                && parts.len() as i64 == task["attempt"].as_i64().unwrap()
                && parts.iter().all(is_prefix)
                && (task["status"] != "success"
                    || parts
                        .last()
                        .is_some_and(|last| last.len() == expected.len()));
            (!good).then(|| format!("{} ({code}):\n{log}", describe(task)))
        }
    });
    // A few at a time: each request loads the whole run on the server.
    let bad_logs: Vec<String> = futures_util::stream::iter(checks)
        .buffer_unordered(4)
        .filter_map(|bad| async move { bad })
        .collect()
        .await;
    assert!(
        bad_logs.is_empty(),
        "seed {seed}: {} consoles lost, doubled or mixed lines:\n{}",
        bad_logs.len(),
        bad_logs.join("\n")
    );

    // Small consoles stay in the database: none was moved to the blob store
    // (`<data-dir>/blobs/…/runs/<n>/consoles/<id>.log`).
    let blobs = crate::server::files_ending_with(&server.data_dir.path().join("blobs"), ".log");
    assert!(blobs.is_empty(), "seed {seed}: {blobs:?}");

    // The server's own counters: one claim per attempt (and per assignment
    // lost with a killed agent's session and put back in the queue when it
    // came back under the same name), one accepted finish
    // per task an agent finished (tasks here never fail on their own, so
    // every accepted finish ended its task, and every lost attempt ended by
    // the lease sweeper, which counts no finish).
    let counters = metrics(&server).await;
    let counter = |key: &str| counters.get(key).copied().unwrap_or(-1.0);
    eprintln!(
        "soak: metrics: claims {}, requeued {}, accepted finishes {}, tasks success {}, error {}",
        counter("kiln_task_queue_seconds_count"),
        counter("kiln_tasks_requeued_total"),
        counter("kiln_task_duration_seconds_count"),
        counter("kiln_tasks{status=\"success\"}"),
        counter("kiln_tasks{status=\"error\"}"),
    );
    assert_eq!(
        counter("kiln_task_queue_seconds_count"),
        attempts as f64 + counter("kiln_tasks_requeued_total"),
        "seed {seed}: claims of the server against the tasks' attempts and the requeued"
    );
    assert_eq!(
        counter("kiln_task_duration_seconds_count"),
        succeeded as f64,
        "seed {seed}: finishes the server accepted against tasks that succeeded"
    );
    assert_eq!(
        counter("kiln_tasks{status=\"success\"}"),
        succeeded as f64,
        "seed {seed}"
    );

    // No agent still holds a task: each is connected, idle, and runs nothing
    // (an assignment lost with a killed session is forgotten within a lease
    // or so, hence the wait).
    let waited = Instant::now();
    loop {
        let listed = server.json("/api/v1/agents").await;
        let list = listed.as_array().unwrap();
        let settled = list.len() == AGENTS
            && list.iter().all(|a| {
                a["state"] == "idle" && a["running_tasks"].as_array().is_some_and(|r| r.is_empty())
            });
        if settled {
            break;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "seed {seed}: agents still hold tasks after the run ended: {listed:#}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(agents);
    eprintln!(
        "soak: passed in {:.1}s",
        test_started.elapsed().as_secs_f64()
    );
}
