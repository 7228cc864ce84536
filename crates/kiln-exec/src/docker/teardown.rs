//! Removal of everything a task created on the engine, even when the future
//! running the task is dropped half-way.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, RemoveContainerOptionsBuilder,
};

use super::is_not_found;

/// Names of the containers and networks of one task, recorded *before* each is
/// created: a create request still in flight when the run is dropped may yet
/// succeed on the engine, and only a name known in advance finds it again.
pub(super) struct Teardown {
    docker: Docker,
    /// `key=value` of the label only this task's objects carry.
    instance_label: String,
    containers: Vec<String>,
    networks: Vec<String>,
}

impl Teardown {
    pub(super) fn new(docker: Docker, instance_label: String) -> Teardown {
        Teardown {
            docker,
            instance_label,
            containers: Vec::new(),
            networks: Vec::new(),
        }
    }

    pub(super) fn container(&mut self, name: &str) {
        self.containers.push(name.to_string());
    }

    pub(super) fn network(&mut self, name: &str) {
        self.networks.push(name.to_string());
    }

    /// Removes everything recorded. The lists are only cleared once removal
    /// finished, so a drop during this call still leaves work for [`Drop`].
    pub(super) async fn run(&mut self) -> Result<(), String> {
        let result = remove_named(&self.docker, &self.containers, &self.networks).await;
        self.containers.clear();
        self.networks.clear();
        result
    }
}

impl Drop for Teardown {
    fn drop(&mut self) {
        if self.containers.is_empty() && self.networks.is_empty() {
            return;
        }
        let containers = std::mem::take(&mut self.containers);
        let networks = std::mem::take(&mut self.networks);
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                ?containers,
                ?networks,
                "task dropped outside a runtime; its Docker objects remain"
            );
            return;
        };
        let docker = self.docker.clone();
        let label = self.instance_label.clone();
        tracing::debug!(
            ?containers,
            ?networks,
            "task dropped mid-way; removing its Docker objects"
        );
        handle.spawn(async move {
            if let Err(e) = remove_named(&docker, &containers, &networks).await {
                tracing::warn!("removing the objects of a dropped task: {e}");
            }
            // A create request that was in flight when the run was dropped can
            // complete after the removal above; sweep by label once it settled.
            tokio::time::sleep(Duration::from_secs(1)).await;
            if let Err(e) = sweep(&docker, &label).await {
                tracing::warn!("sweeping the objects of a dropped task: {e}");
            }
        });
    }
}

/// Force-removes containers (with their anonymous volumes), then networks,
/// which the engine refuses to remove while containers are attached.
async fn remove_named(
    docker: &Docker,
    containers: &[String],
    networks: &[String],
) -> Result<(), String> {
    let removals = containers.iter().map(|name| remove_container(docker, name));
    let mut errors: Vec<String> = futures_util::future::join_all(removals)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    for network in networks {
        if let Err(e) = remove_network(docker, network).await {
            errors.push(e);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

async fn remove_container(docker: &Docker, name: &str) -> Result<(), String> {
    let options = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(name, Some(options)).await {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) || is_removal_in_progress(&e) => Ok(()),
        Err(e) => Err(format!(
            "removing container {name}: {}",
            super::engine_message(&e)
        )),
    }
}

async fn remove_network(docker: &Docker, name: &str) -> Result<(), String> {
    // Right after a forced container removal the engine may still count the
    // endpoint as attached for a moment.
    let mut attempts = 0;
    loop {
        match docker.remove_network(name).await {
            Ok(()) => return Ok(()),
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) if attempts < 10 => {
                tracing::debug!("removing network {name}, will retry: {e}");
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                return Err(format!(
                    "removing network {name}: {}",
                    super::engine_message(&e)
                ));
            }
        }
    }
}

fn is_removal_in_progress(e: &bollard::errors::Error) -> bool {
    matches!(e, bollard::errors::Error::DockerResponseServerError { status_code: 409, message }
        if message.contains("already in progress"))
}

/// Force-removes every container, then every network, carrying `label`
/// (`key=value`). Returns how many objects were removed.
pub(super) async fn sweep(docker: &Docker, label: &str) -> Result<usize, String> {
    let filters = HashMap::from([("label", vec![label])]);
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(|e| {
            format!(
                "listing containers labelled {label}: {}",
                super::engine_message(&e)
            )
        })?;
    let container_ids: Vec<String> = containers.into_iter().filter_map(|c| c.id).collect();
    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
        .map_err(|e| {
            format!(
                "listing networks labelled {label}: {}",
                super::engine_message(&e)
            )
        })?;
    let network_ids: Vec<String> = networks.into_iter().filter_map(|n| n.id).collect();
    remove_named(docker, &container_ids, &network_ids).await?;
    Ok(container_ids.len() + network_ids.len())
}
