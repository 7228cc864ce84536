//! What a task on the process executor cannot reach, tried from its steps
//! as an attacker would, against a real server (whose in-process worker
//! runs tasks) and a real agent, both root as on the test machines: the
//! server's key, database and environment, the agent's token, another
//! running task's environment; and what it starts does not outlive it,
//! `setsid` included. Each check reads what the step printed, as its
//! author would.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::agents::Agent;
use crate::server::Server;

/// The shared registration token `Server` starts with, which the agent
/// gets on its command line (`--token`).
const AGENT_TOKEN: &str = "kiln_agent_shared_test_token";

async fn console(server: &Server, job: &str, run: i64, task: &str) -> String {
    let response = server
        .get(&format!(
            "/api/v1/jobs/{job}/runs/{run}/tasks/{task}/results/console"
        ))
        .await;
    assert!(response.status().is_success(), "console of {job}/{task}");
    response.text().await.unwrap()
}

async fn run_to_success(server: &Server, job: &str, pipeline: &str) -> i64 {
    let run = server.freestyle(job, pipeline).await;
    let detail: Value = server.wait_for_run(job, run).await;
    assert_eq!(detail["status"], "success", "{detail:#}");
    run
}

#[tokio::test]
async fn a_step_cannot_read_the_servers_key_database_or_environment() {
    let server = Server::start(None);
    let data = server.data_dir.path().display().to_string();
    let pid = server.pid();
    let pipeline = format!(
        "version: 1\ntasks:\n  peek:\n    runs-on: [linux]\n    steps:\n      - run: |\n          \
         for f in {data}/secret.key {data}/kiln.db /proc/{pid}/environ; do cat \"$f\" > /dev/null || true; done\n          \
         id -u\n"
    );
    let run = run_to_success(&server, "peek", &pipeline).await;
    let log = console(&server, "peek", run, "peek").await;
    for path in [
        format!("{data}/secret.key"),
        format!("{data}/kiln.db"),
        format!("/proc/{pid}/environ"),
    ] {
        assert!(
            log.contains(&format!("cat: {path}: Permission denied")),
            "the step could read {path}:\n{log}"
        );
    }
}

#[tokio::test]
async fn a_step_cannot_read_the_agents_token() {
    let server = Server::start(None);
    let agent = Agent::start(&server, "iso-token", "remote", 1);
    let (pid, work) = (agent.pid(), agent.work_dir().display().to_string());
    let pipeline = format!(
        "version: 1\ntasks:\n  peek:\n    runs-on: [remote]\n    steps:\n      - run: |\n          \
         cat {work}/agent.token > /dev/null || true\n          \
         cat /proc/{pid}/environ > /dev/null || true\n          \
         echo \"agent command line: $(tr '\\0' ' ' < /proc/{pid}/cmdline)\"\n"
    );
    let run = run_to_success(&server, "peek-agent", &pipeline).await;
    let log = console(&server, "peek-agent", run, "peek").await;
    for path in [
        format!("{work}/agent.token"),
        format!("/proc/{pid}/environ"),
    ] {
        assert!(
            log.contains(&format!("cat: {path}: Permission denied")),
            "the step could read {path}:\n{log}"
        );
    }
    assert!(log.contains("agent command line: "), "{log}");
    assert!(
        log.contains("--token") && !log.contains(AGENT_TOKEN),
        "the agent's token shows in its command line:\n{log}"
    );
}

#[tokio::test]
async fn a_task_cannot_read_or_signal_another_running_task() {
    let server = Server::start(None);
    let shared = tempfile::tempdir().unwrap();
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let dir = shared.path().display().to_string();
    // Both tasks run at once on the worker (capacity 2): the holder waits
    // until the prober is done.
    let pipeline = format!(
        "version: 1\ntasks:\n  \
         holder:\n    runs-on: [linux]\n    env: {{ PRIVATE: holder-private-7f3a }}\n    steps:\n      - run: |\n          \
         echo $$ > {dir}/holder.tmp && mv {dir}/holder.tmp {dir}/holder.pid\n          \
         i=0; while [ ! -e {dir}/done ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done\n  \
         prober:\n    runs-on: [linux]\n    steps:\n      - run: |\n          \
         i=0; while [ ! -e {dir}/holder.pid ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done\n          \
         pid=$(cat {dir}/holder.pid)\n          \
         tr '\\0' '\\n' < /proc/$pid/environ || true\n          \
         kill -STOP $pid || true\n          \
         touch {dir}/done\n"
    );
    let run = run_to_success(&server, "neighbours", &pipeline).await;
    let log = console(&server, "neighbours", run, "prober").await;
    assert!(
        !log.contains("holder-private-7f3a"),
        "the prober read the holder's environment:\n{log}"
    );
    assert!(
        log.contains("environ: Permission denied"),
        "the prober's read was not refused:\n{log}"
    );
    assert!(
        log.contains("Operation not permitted"),
        "the prober could signal the holder:\n{log}"
    );
}

#[tokio::test]
async fn nothing_a_task_started_outlives_it_setsid_included() {
    let server = Server::start(None);
    let pipeline = "version: 1\ntasks:\n  escape:\n    runs-on: [linux]\n    steps:\n      - run: |\n          \
         setsid sleep 1000 > /dev/null 2>&1 &\n          \
         echo \"sleeper $!\"\n";
    let run = run_to_success(&server, "escape", pipeline).await;
    let log = console(&server, "escape", run, "escape").await;
    let pid: u32 = log
        .lines()
        .find_map(|l| l.strip_prefix("sleeper "))
        .unwrap_or_else(|| panic!("no sleeper pid in:\n{log}"))
        .trim()
        .parse()
        .unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let alive = cmdline == b"sleep\x001000\x00";
    if alive {
        // Not left behind for the next test run either.
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    assert!(
        !alive,
        "`setsid sleep 1000` (pid {pid}) still runs after its task ended"
    );
}

/// A server that is not root cannot give tasks users of their own: its
/// in-process agent refuses the process executor and says how to go on.
#[test]
fn an_unprivileged_server_refuses_tasks_that_could_read_its_data() {
    let data = tempfile::tempdir().unwrap();
    let nobody = 65534;
    std::os::unix::fs::chown(data.path(), Some(nobody), Some(nobody)).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
    command
        .args([
            "up",
            "--listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--executor",
            "process",
            "--data-dir",
        ])
        .arg(data.path())
        .env_remove("KILN_ADMIN_TOKEN")
        .env_remove("KILN_AGENT_TOKEN")
        .stdin(Stdio::null())
        .uid(nobody)
        .gid(nobody);
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = wait_with_limit(child, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("refusing to run tasks on the process executor")
            && stderr.contains("--executor docker")
            && stderr.contains("--allow-unisolated-tasks"),
        "{stderr}"
    );
}

fn wait_with_limit(child: std::process::Child, limit: Duration) -> std::process::Output {
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()).ok());
    match rx.recv_timeout(limit) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &id.to_string()])
                .status();
            panic!("kiln up did not exit within {limit:?}");
        }
    }
}
