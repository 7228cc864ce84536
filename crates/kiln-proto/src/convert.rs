//! Between the pipeline's expanded [`Task`] and the protocol's
//! [`TaskDefinition`]: the one place that says which of a task's fields
//! travel to an agent.

use std::time::Duration as StdDuration;

use kiln_pipeline::{Artifacts, Build, Duration, Reports, Resources, Service, Step, Task};

use crate::v1;

impl From<&Task> for v1::TaskDefinition {
    fn from(task: &Task) -> Self {
        v1::TaskDefinition {
            name: task.name.clone(),
            base: task.base.clone(),
            matrix: pairs(&task.matrix),
            image: task.image.clone().unwrap_or_default(),
            build: task.build.as_ref().map(|build| v1::DockerBuild {
                dockerfile: build.dockerfile.clone(),
                context: build.context.clone(),
            }),
            runs_on: task.runs_on.clone(),
            services: task
                .services
                .iter()
                .map(|service| v1::Service {
                    alias: service.alias.clone(),
                    image: service.image.clone(),
                    env: pairs(&service.env),
                    command: service.command.clone().map(|argv| v1::Command { argv }),
                })
                .collect(),
            env: pairs(&task.env),
            secrets: task.secrets.clone(),
            steps: task
                .steps
                .iter()
                .map(|step| v1::Step {
                    name: step.name.clone(),
                    run: step.run.clone(),
                })
                .collect(),
            timeout_ms: task
                .timeout
                .map_or(0, |t| t.as_std().as_millis().try_into().unwrap_or(u64::MAX)),
            cpus: task.resources.cpus.unwrap_or(0.0),
            memory_bytes: task.resources.memory_bytes.unwrap_or(0),
            artifact_paths: task.artifacts.paths.clone(),
            junit_reports: task.reports.junit.clone(),
        }
    }
}

/// The task an agent runs. What stays on the server (`needs`, `when`,
/// `retry`, `allow-failure`, artifacts' `expire-in`) is left empty.
impl From<v1::TaskDefinition> for Task {
    fn from(task: v1::TaskDefinition) -> Self {
        Task {
            name: task.name,
            base: task.base,
            matrix: unpairs(task.matrix),
            image: (!task.image.is_empty()).then_some(task.image),
            build: task.build.map(|build| Build {
                dockerfile: build.dockerfile,
                context: build.context,
            }),
            runs_on: task.runs_on,
            services: task
                .services
                .into_iter()
                .map(|service| Service {
                    alias: service.alias,
                    image: service.image,
                    env: unpairs(service.env),
                    command: service.command.map(|command| command.argv),
                })
                .collect(),
            env: unpairs(task.env),
            secrets: task.secrets,
            steps: task
                .steps
                .into_iter()
                .map(|step| Step {
                    name: step.name,
                    run: step.run,
                })
                .collect(),
            needs: Vec::new(),
            when: None,
            timeout: (task.timeout_ms > 0)
                .then(|| Duration(StdDuration::from_millis(task.timeout_ms))),
            retry: 0,
            allow_failure: false,
            resources: Resources {
                cpus: (task.cpus > 0.0).then_some(task.cpus),
                memory_bytes: (task.memory_bytes > 0).then_some(task.memory_bytes),
            },
            artifacts: Artifacts {
                paths: task.artifact_paths,
                expire_in: None,
            },
            reports: Reports {
                junit: task.junit_reports,
            },
        }
    }
}

fn pairs(values: &[(String, String)]) -> Vec<v1::NameValue> {
    values
        .iter()
        .map(|(name, value)| v1::NameValue {
            name: name.clone(),
            value: value.clone(),
        })
        .collect()
}

fn unpairs(values: Vec<v1::NameValue>) -> Vec<(String, String)> {
    values.into_iter().map(|p| (p.name, p.value)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field an agent uses survives the trip; the server's own are
    /// dropped on purpose.
    #[test]
    fn a_task_travels_whole() {
        let text = r#"
version: 1
tasks:
  base: { steps: [make] }
  built:
    build: { dockerfile: ci/Dockerfile, context: ci }
    steps: [make]
  test:
    image: busybox
    runs-on: [linux, executor:docker]
    matrix: { db: [pg] }
    needs: [base]
    retry: 2
    allow-failure: true
    services:
      db: { image: postgres, env: { A: b }, command: [run, it] }
      cache: { image: redis }
    env: { X: "${{ matrix.db }}" }
    secrets: [TOKEN]
    steps:
      - { name: first, run: echo 1 }
      - run: echo 2
    timeout: 90s
    resources: { cpus: 1.5, memory: 512m }
    artifacts: { paths: [out/], expire-in: 2d }
    reports: { junit: [report.xml] }
"#;
        let pipeline = kiln_pipeline::parse(".kiln.yml", text).unwrap();
        for task in &pipeline.tasks {
            let back = Task::from(v1::TaskDefinition::from(task));
            let expected = Task {
                needs: Vec::new(),
                when: None,
                retry: 0,
                allow_failure: false,
                artifacts: Artifacts {
                    expire_in: None,
                    ..task.artifacts.clone()
                },
                ..task.clone()
            };
            assert_eq!(back, expected);
        }
        let test = Task::from(v1::TaskDefinition::from(&pipeline.tasks[2]));
        assert!(test.services[0].command.is_some() && test.services[1].command.is_none());
        assert!(test.timeout.is_some() && test.resources.memory_bytes.is_some());
        assert!(
            Task::from(v1::TaskDefinition::from(&pipeline.tasks[1]))
                .build
                .is_some()
        );
    }
}
