//! Shared helpers for the executor tests.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use kiln_exec::docker::DockerExecutor;
use kiln_exec::process::ProcessExecutor;
use kiln_exec::{
    CancellationToken, Executor, LogStream, SourceTree, StepResult, TaskEvents, TaskOutcome,
    TaskSpec,
};
use kiln_pipeline::Step;

/// The busybox image made by `scripts/setup-test-env.sh`.
pub const TEST_IMAGE: &str = "kiln-test/busybox:latest";

/// Records everything a task reports.
#[derive(Default)]
pub struct Recorder {
    pub output: Mutex<Vec<(LogStream, Vec<u8>)>>,
    pub chunks: Mutex<usize>,
    pub started: Mutex<Vec<(usize, String)>>,
    pub finished: Mutex<Vec<(usize, StepResult)>>,
}

impl Recorder {
    pub fn new() -> Arc<Recorder> {
        Arc::new(Recorder::default())
    }

    /// All stdout and stderr, in arrival order.
    pub fn text(&self) -> String {
        let output = self.output.lock().unwrap();
        let bytes: Vec<u8> = output
            .iter()
            .filter(|(s, _)| *s != LogStream::System)
            .flat_map(|(_, b)| b.clone())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Everything, Kiln's own lines included.
    pub fn all_text(&self) -> String {
        let output = self.output.lock().unwrap();
        let bytes: Vec<u8> = output.iter().flat_map(|(_, b)| b.clone()).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl TaskEvents for Recorder {
    fn log(&self, stream: LogStream, bytes: &[u8]) {
        self.output.lock().unwrap().push((stream, bytes.to_vec()));
        *self.chunks.lock().unwrap() += 1;
    }
    fn step_started(&self, index: usize, name: &str) {
        self.started.lock().unwrap().push((index, name.to_string()));
    }
    fn step_finished(&self, index: usize, result: &StepResult) {
        self.finished.lock().unwrap().push((index, result.clone()));
    }
}

/// A sink that has fallen behind: records like [`Recorder`], but says it is
/// ready for more output only once [`Gated::open`] is called.
pub struct Gated {
    pub recorder: Arc<Recorder>,
    open: tokio::sync::watch::Sender<bool>,
}

impl Gated {
    pub fn new() -> Arc<Gated> {
        Arc::new(Gated {
            recorder: Recorder::new(),
            open: tokio::sync::watch::Sender::new(false),
        })
    }

    pub fn open(&self) {
        self.open.send_replace(true);
    }
}

impl TaskEvents for Gated {
    fn log(&self, stream: LogStream, bytes: &[u8]) {
        self.recorder.log(stream, bytes);
    }
    fn ready(&self) -> BoxFuture<'_, ()> {
        let mut open = self.open.subscribe();
        Box::pin(async move {
            let _ = open.wait_for(|open| *open).await;
        })
    }
    fn step_started(&self, index: usize, name: &str) {
        self.recorder.step_started(index, name);
    }
    fn step_finished(&self, index: usize, result: &StepResult) {
        self.recorder.step_finished(index, result);
    }
}

/// Both executors, for what must behave the same on each.
pub async fn executors() -> Vec<Box<dyn Executor>> {
    let docker = DockerExecutor::connect()
        .await
        .unwrap_or_else(|e| panic!("no Docker engine (run scripts/setup-test-env.sh): {e}"));
    vec![Box::new(ProcessExecutor::default()), Box::new(docker)]
}

/// `spec` as `executor` needs it: the docker executor needs an image, and
/// the process executor would note one as ignored.
pub fn for_executor(executor: &dyn Executor, mut spec: TaskSpec) -> TaskSpec {
    if executor.kind() == "docker" {
        spec.image = Some(TEST_IMAGE.to_string());
    }
    spec
}

/// Runs `spec` on `executor` to its end, recording what it reports.
pub async fn run_on(executor: &dyn Executor, spec: &TaskSpec) -> (TaskOutcome, Arc<Recorder>) {
    let events = Recorder::new();
    let outcome = executor
        .run(spec, events.clone(), CancellationToken::new())
        .await;
    (outcome, events)
}

/// The log from the first step's header on, Kiln's lines included: what
/// comes before (image pulls, notes) differs between executors.
pub fn log_from_first_step(events: &Recorder) -> String {
    let all = events.all_text();
    match all.find("--- step 1:") {
        Some(at) => all[at..].to_string(),
        None => panic!("no step header in the log:\n{all}"),
    }
}

pub fn steps(scripts: &[&str]) -> Vec<Step> {
    scripts
        .iter()
        .map(|s| Step {
            name: s.lines().next().unwrap_or("").to_string(),
            run: s.to_string(),
        })
        .collect()
}

/// A source directory with a few files, and a spec whose outputs go to a temp dir.
pub struct Fixture {
    pub source: tempfile::TempDir,
    pub outputs: tempfile::TempDir,
}

impl Fixture {
    pub fn new(files: &[(&str, &str)]) -> Fixture {
        let source = tempfile::tempdir().unwrap();
        for (path, content) in files {
            let path = source.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        Fixture {
            source,
            outputs: tempfile::tempdir().unwrap(),
        }
    }

    pub fn spec(&self, name: &str, scripts: &[&str]) -> TaskSpec {
        let tree = Arc::new(SourceTree::scan(self.source.path()).unwrap());
        TaskSpec::new(
            name,
            steps(scripts),
            tree,
            self.outputs.path().to_path_buf(),
        )
    }

    pub fn output(&self, relative: &str) -> PathBuf {
        self.outputs.path().join(relative)
    }
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Runs `spec` with a sink that takes nothing for `pause`: the step must not
/// end and nothing may be read meanwhile. Then the sink opens; returns the
/// outcome and everything the sink got.
pub async fn run_with_paused_sink(
    executor: &dyn Executor,
    spec: &TaskSpec,
    pause: std::time::Duration,
) -> (TaskOutcome, String) {
    let events = Gated::new();
    let run = executor.run(spec, events.clone(), CancellationToken::new());
    tokio::pin!(run);
    tokio::select! {
        outcome = &mut run => panic!("the step ended with its output unread: {outcome:?}"),
        _ = tokio::time::sleep(pause) => {}
    }
    assert_eq!(
        events.recorder.text(),
        "",
        "nothing is read while the sink is not ready"
    );
    events.open();
    let outcome = run.await;
    (outcome, events.recorder.text())
}
