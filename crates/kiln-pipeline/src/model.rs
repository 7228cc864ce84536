//! The validated pipeline, after matrix expansion: what executors and the
//! scheduler consume. The shape of the *file* lives in `file.rs`.

use serde::{Deserialize, Serialize};

use crate::{Duration, When};

/// A validated pipeline whose matrices are expanded into one [`Task`] each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    /// Umbrella timeout for the whole run.
    pub timeout: Option<Duration>,
    /// Tasks in file order (matrix expansions in the order of their combinations).
    pub tasks: Vec<Task>,
}

/// One unit of work, after matrix expansion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Unique name: the key under `tasks:` or, for a matrix task, the key
    /// followed by its combination, e.g. `test[db=postgres,os=linux]`.
    pub name: String,
    /// The key under `tasks:` this task came from.
    pub base: String,
    /// The matrix combination, in the order the axes are written in the file.
    pub matrix: Vec<(String, String)>,
    /// Container image; `None` with `build` or for process-only tasks.
    pub image: Option<String>,
    pub build: Option<Build>,
    pub runs_on: Vec<String>,
    pub services: Vec<Service>,
    /// The pipeline's `env` overlaid with the task's own, interpolated.
    pub env: Vec<(String, String)>,
    /// Names of the secrets this task needs.
    pub secrets: Vec<String>,
    pub steps: Vec<Step>,
    /// Names of expanded tasks this one waits for (a matrix need expands to all
    /// of its combinations).
    pub needs: Vec<String>,
    pub when: Option<When>,
    pub timeout: Option<Duration>,
    pub retry: u32,
    pub allow_failure: bool,
    pub resources: Resources,
    pub artifacts: Artifacts,
    pub reports: Reports,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Build {
    /// Path of the Dockerfile, relative to the repository root.
    pub dockerfile: String,
    /// Build context directory, relative to the repository root.
    pub context: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// The key under `services:`; the hostname the task reaches it by.
    pub alias: String,
    pub image: String,
    pub env: Vec<(String, String)>,
    pub command: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Given name, or the first line of `run` when none was given.
    pub name: String,
    pub run: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    pub cpus: Option<f64>,
    pub memory_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifacts {
    /// Glob patterns relative to the workspace.
    pub paths: Vec<String>,
    pub expire_in: Option<Duration>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reports {
    /// Glob patterns of JUnit XML files relative to the workspace.
    pub junit: Vec<String>,
}

impl Pipeline {
    pub fn task(&self, name: &str) -> Option<&Task> {
        self.tasks.iter().find(|t| t.name == name)
    }
}
