//! The `docker` executor: one container per task, sidecar services on a
//! private network, the workspace copied in, everything removed afterwards.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::{CancellationToken, Executor, TaskEvents, TaskOutcome, TaskSpec};

pub struct DockerExecutor {
    endpoint: String,
}

impl DockerExecutor {
    /// Connects to the local engine (`DOCKER_HOST` or the default socket) and
    /// checks that it answers.
    pub async fn connect() -> Result<DockerExecutor, String> {
        Err("not implemented yet".into())
    }

    /// Where the engine was found, for messages such as "executor: docker (…)".
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

impl Executor for DockerExecutor {
    fn kind(&self) -> &'static str {
        "docker"
    }

    fn run<'a>(
        &'a self,
        spec: &'a TaskSpec,
        _events: Arc<dyn TaskEvents>,
        _cancel: CancellationToken,
    ) -> BoxFuture<'a, TaskOutcome> {
        Box::pin(async move { TaskOutcome::error(spec, "docker executor not implemented yet") })
    }
}
