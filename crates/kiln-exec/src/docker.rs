//! The `docker` executor: one container per task, sidecar services on a
//! private network, the workspace copied in, everything removed afterwards.
//!
//! Nothing of the host is mounted into a container: the workspace travels in
//! as a tar archive and artifacts travel out the same way, so a task sees
//! only its own files and no port of the host is ever published.

mod cache;
mod image;
mod outputs;
mod pipe;
mod teardown;

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkCreateRequest, NetworkingConfig,
};
use bollard::query_parameters::{CreateContainerOptionsBuilder, UploadToContainerOptionsBuilder};
use bollard::{ClientVersion, Docker};
use chrono::Utc;
use futures_util::future::BoxFuture;
use futures_util::{StreamExt, TryStreamExt};
use kiln_pipeline::Service;

pub use self::cache::{BuildCachePolicy, PruneError, PruneReport};
pub use self::image::DEFAULT_BUILD_REPOSITORY;
use crate::mask::MaskedEvents;
use crate::workspace::collect_each;
use crate::{
    CancellationToken, Executor, Interrupt, LogStream, Status, StepExit, TaskEvents, TaskOutcome,
    TaskSpec, deadline_for, drive_steps, interruptible, step_environment,
};

/// Where the task's files live inside its container.
const WORKSPACE: &str = "/workspace";

/// Keeps the task container alive between steps, which run as execs; exits
/// at once on the engine's stop signal instead of waiting to be killed.
const KEEP_ALIVE: [&str; 3] = [
    "/bin/sh",
    "-c",
    "trap 'exit 0' TERM; while :; do sleep 3600 & wait; done",
];

/// How a step's script is run in the task container: the outer shell puts
/// its stderr on its stdout and becomes the script's `sh -e` (`$1` is the
/// script). One pipe keeps the order in which the script wrote to either,
/// as a terminal would; the engine's two streams would be read apart.
const STEP_SHELL: [&str; 4] = [
    "/bin/sh",
    "-c",
    "exec /bin/sh -e -c \"$1\" 2>&1",
    "kiln-step",
];

/// Label every object of one task run carries, with a value unique to that
/// run, so the objects of a dropped run can be found again.
const INSTANCE_LABEL: &str = "kiln.instance";

const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// How long the engine may take to answer when connecting.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Per-request limit on waiting for the engine's response headers (streamed
/// bodies, such as a step's output, are not limited by it).
const REQUEST_TIMEOUT_SECS: u64 = 120;

/// How long the end of a task waits for the pruning its build started; past
/// that the pruning goes on unwatched.
const PRUNE_WAIT: Duration = Duration::from_secs(30);

pub struct DockerExecutor {
    docker: Docker,
    endpoint: String,
    /// Which of the images built from tasks' Dockerfiles are kept; applied
    /// after each build.
    pub build_cache: BuildCachePolicy,
    /// Repository the images built from tasks' Dockerfiles are tagged in
    /// (`<repository>:<hash of the context>`), [`DEFAULT_BUILD_REPOSITORY`]
    /// unless set. Pruning considers only this repository's tags, so
    /// executors with different repositories keep separate caches. Must be a
    /// valid repository name (lowercase), or builds fail.
    pub build_repository: String,
    /// Build images this executor's tasks are using, which pruning skips.
    in_use: cache::InUse,
}

impl DockerExecutor {
    /// Connects to the local engine (`DOCKER_HOST` or the default socket) and
    /// checks that it answers.
    pub async fn connect() -> Result<DockerExecutor, String> {
        let endpoint = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|host| !host.is_empty())
            .unwrap_or_else(|| DEFAULT_HOST.to_string());
        let docker = tokio::time::timeout(PING_TIMEOUT, negotiate(&endpoint))
            .await
            .map_err(|_| {
                format!(
                    "the Docker engine at {endpoint} did not answer within {}s",
                    PING_TIMEOUT.as_secs()
                )
            })??;
        Ok(DockerExecutor {
            docker,
            endpoint,
            build_cache: BuildCachePolicy::default(),
            build_repository: DEFAULT_BUILD_REPOSITORY.to_string(),
            in_use: cache::InUse::default(),
        })
    }

    /// Where the engine was found, for messages such as "executor: docker (…)".
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Force-removes the containers and networks labelled `label_key=label_value`,
    /// e.g. what tasks interrupted by Ctrl-C left behind. Returns how many
    /// objects were removed.
    pub async fn remove_leftovers(
        &self,
        label_key: &str,
        label_value: &str,
    ) -> Result<usize, String> {
        teardown::sweep(&self.docker, &format!("{label_key}={label_value}")).await
    }

    /// Applies [`DockerExecutor::build_cache`] to the images of
    /// [`DockerExecutor::build_repository`] now, e.g. when an agent starts;
    /// the executor does so by itself after each build. Images its running
    /// tasks use are kept.
    pub async fn prune_build_images(&self) -> Result<PruneReport, PruneError> {
        cache::prune(
            &self.docker,
            &self.build_repository,
            self.build_cache,
            &self.in_use,
            None,
        )
        .await
    }
}

/// Opens a client speaking the newest API version both sides know: the
/// engine refuses every request, even `/version`, made with a newer one.
async fn negotiate(endpoint: &str) -> Result<Docker, String> {
    let newest = bollard::API_DEFAULT_VERSION;
    let docker = client(endpoint, newest)?;
    let supported = match docker.version().await {
        Ok(version) => version.api_version.as_deref().and_then(parse_api_version),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 400,
            message,
        }) if message.contains("too new") => {
            // "client version 1.53 is too new. Maximum supported API version is 1.41"
            let older = message.rsplit(' ').next().and_then(parse_api_version);
            if older.is_none() {
                return Err(format!(
                    "the Docker engine at {endpoint} refused the API version: {message}"
                ));
            }
            older
        }
        Err(e) => {
            return Err(format!(
                "the Docker engine at {endpoint} does not answer: {}",
                engine_message(&e)
            ));
        }
    };
    match supported {
        Some(version) if version < *newest => {
            let docker = client(endpoint, &version)?;
            docker.ping().await.map_err(|e| {
                format!(
                    "the Docker engine at {endpoint} does not answer: {}",
                    engine_message(&e)
                )
            })?;
            tracing::debug!(
                "talking to {endpoint} with API {}.{}",
                version.major_version,
                version.minor_version
            );
            Ok(docker)
        }
        _ => Ok(docker),
    }
}

fn client(endpoint: &str, version: &ClientVersion) -> Result<Docker, String> {
    let connected = if endpoint.starts_with("unix://") {
        Docker::connect_with_unix(endpoint, REQUEST_TIMEOUT_SECS, version)
    } else if endpoint.starts_with("tcp://") || endpoint.starts_with("http://") {
        Docker::connect_with_http(endpoint, REQUEST_TIMEOUT_SECS, version)
    } else {
        return Err(format!(
            "unsupported DOCKER_HOST `{endpoint}`: use unix://, tcp:// or http://"
        ));
    };
    connected.map_err(|e| format!("cannot use the Docker engine at {endpoint}: {e}"))
}

fn parse_api_version(text: &str) -> Option<ClientVersion> {
    let (major, minor) = text.trim().trim_end_matches('.').split_once('.')?;
    Some(ClientVersion {
        major_version: major.parse().ok()?,
        minor_version: minor.parse().ok()?,
    })
}

/// The message the engine gave, without bollard's wrapping.
fn engine_message(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => {
            message.trim().to_string()
        }
        bollard::errors::Error::DockerStreamError { error } => error.trim().to_string(),
        other => other.to_string(),
    }
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

impl Executor for DockerExecutor {
    fn kind(&self) -> &'static str {
        "docker"
    }

    fn run<'a>(
        &'a self,
        spec: &'a TaskSpec,
        events: Arc<dyn TaskEvents>,
        cancel: CancellationToken,
    ) -> BoxFuture<'a, TaskOutcome> {
        Box::pin(async move {
            let events = MaskedEvents::for_task(events, spec);
            let outcome = self.run_masked(spec, &events, &cancel).await;
            events.finish();
            outcome
        })
    }
}

/// A task's use of the build cache.
#[derive(Default)]
struct ImageUse {
    /// Keeps the task's build image from this executor's pruning until the
    /// task ends.
    lease: Option<cache::Lease>,
    /// The pruning started after the task built its image.
    pruning: Option<tokio::task::JoinHandle<()>>,
}

/// Why setting a task up stopped.
enum Stop {
    Interrupted(Interrupt),
    Failed(String),
}

/// Runs one phase of the set-up under the task's deadline and cancel token.
async fn phase<T>(
    work: impl Future<Output = Result<T, String>>,
    deadline: Option<tokio::time::Instant>,
    cancel: &CancellationToken,
) -> Result<T, Stop> {
    match interruptible(work, deadline, cancel).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(message)) => Err(Stop::Failed(message)),
        Err(interrupt) => Err(Stop::Interrupted(interrupt)),
    }
}

/// Names of one task run's objects; unique, so that tasks running at the same
/// time never clash, even with equal service aliases.
struct Names {
    instance: String,
}

impl Names {
    fn new() -> Names {
        Names {
            instance: random_id(),
        }
    }

    fn network(&self) -> String {
        format!("kiln-{}", self.instance)
    }

    fn task(&self) -> String {
        format!("kiln-{}-task", self.instance)
    }

    fn service(&self, alias: &str) -> String {
        let alias: String = alias
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("kiln-{}-svc-{alias}", self.instance)
    }
}

/// Twelve hex digits, unique per call: std's hasher keys are random per
/// process, and the counter and clock keep calls within one process apart.
fn random_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    format!("{:012x}", hasher.finish() & 0xffff_ffff_ffff)
}

/// Why a task with neither `image` nor `build` cannot run in a container.
const NO_IMAGE: &str = "task has no `image` or `build`; the docker executor needs one";

/// The network of every task without services: one bridge, made by the
/// first task that needs it and kept, with traffic between its containers
/// off, so a task cannot reach another task's container (the engine's
/// default `bridge` lets it). A network per task isolates as well but costs
/// its creation and removal on every task (docs/agents.md, Isolation).
pub const TASKS_NETWORK: &str = "kiln-tasks";
/// The bridge driver's option that stops containers on one bridge from
/// talking to each other.
const ICC_OPTION: &str = "com.docker.network.bridge.enable_icc";

fn env_strings(pairs: &[(String, String)]) -> Vec<String> {
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

impl DockerExecutor {
    async fn run_masked(
        &self,
        spec: &TaskSpec,
        events: &MaskedEvents,
        cancel: &CancellationToken,
    ) -> TaskOutcome {
        if spec.build.is_none() && spec.image.is_none() {
            return TaskOutcome::misconfigured(spec, NO_IMAGE);
        }
        let started_at = Utc::now();
        let deadline = deadline_for(spec.timeout);
        let names = Names::new();
        let mut teardown = teardown::Teardown::new(
            self.docker.clone(),
            format!("{INSTANCE_LABEL}={}", names.instance),
        );
        let mut outcome = TaskOutcome::error(spec, String::new());
        outcome.started_at = started_at;
        let mut image_use = ImageUse::default();

        match self
            .set_up(
                spec,
                events,
                deadline,
                cancel,
                &names,
                &mut teardown,
                &mut image_use,
            )
            .await
        {
            Err(Stop::Interrupted(interrupt)) => {
                outcome.status = interrupt.status();
                outcome.error = Some(interrupt.describe(spec));
            }
            Err(Stop::Failed(message)) => {
                outcome.status = Status::Error;
                outcome.error = Some(message);
            }
            Ok(container) => {
                // Secrets reach the steps only through their execs, so they are
                // not stored in the container's configuration for `docker inspect` to show.
                let env = env_strings(&step_environment(spec));
                let steps = drive_steps(spec, events, deadline, cancel, |_, step| {
                    Box::pin(run_step(&self.docker, &container, &step.run, &env, events))
                })
                .await;
                outcome.status = steps.status;
                outcome.error = steps.error;
                outcome.steps = steps.steps;
                if steps.status != Status::Cancelled {
                    self.collect(spec, &container, events, cancel, &mut outcome)
                        .await;
                }
            }
        }

        if let Err(e) = teardown.run().await {
            tracing::warn!("cleaning up task {}: {e}", spec.name);
            events.log(
                LogStream::System,
                format!("clean-up failed: {e}\n").as_bytes(),
            );
        }
        if let Some(pruning) = image_use.pruning.take() {
            // Waiting keeps prunings from piling up and leaves the cache
            // settled when `run` returns; it runs beside the steps, so this
            // rarely waits at all. A cancel is not held up by it.
            let waited =
                interruptible(tokio::time::timeout(PRUNE_WAIT, pruning), None, cancel).await;
            if !matches!(waited, Ok(Ok(Ok(())))) {
                tracing::debug!(
                    "task {} stopped waiting for the build cache's pruning",
                    spec.name
                );
            }
        }
        outcome.finished_at = Utc::now();
        outcome
    }

    /// Gets the image, starts the services and the task container with the
    /// workspace in it; returns the task container's name.
    #[allow(clippy::too_many_arguments)]
    async fn set_up(
        &self,
        spec: &TaskSpec,
        events: &MaskedEvents,
        deadline: Option<tokio::time::Instant>,
        cancel: &CancellationToken,
        names: &Names,
        teardown: &mut teardown::Teardown,
        image_use: &mut ImageUse,
    ) -> Result<String, Stop> {
        let image = phase(self.task_image(spec, events, image_use), deadline, cancel).await?;
        for service in &spec.services {
            phase(
                image::ensure(&self.docker, &service.image, events),
                deadline,
                cancel,
            )
            .await?;
        }

        let mut labels: HashMap<String, String> = spec.labels.iter().cloned().collect();
        labels.insert("kiln.task".into(), spec.name.clone());
        labels.insert(INSTANCE_LABEL.into(), names.instance.clone());

        let network = if spec.services.is_empty() {
            // Nothing to reach by alias: the shared network without
            // inter-container traffic, rather than a private network that
            // costs ~0.4 s a task to create and remove.
            phase(self.tasks_network(), deadline, cancel).await?
        } else {
            let network = names.network();
            teardown.network(&network);
            phase(self.create_network(&network, &labels), deadline, cancel).await?;
            network
        };

        for service in &spec.services {
            let name = names.service(&service.alias);
            teardown.container(&name);
            events.log(
                LogStream::System,
                format!("starting service {} ({})\n", service.alias, service.image).as_bytes(),
            );
            phase(
                self.start_service(service, &name, &network, &labels),
                deadline,
                cancel,
            )
            .await?;
        }

        let container = names.task();
        teardown.container(&container);
        phase(
            self.start_task_container(spec, &image, &container, &network, &labels),
            deadline,
            cancel,
        )
        .await?;
        Ok(container)
    }

    async fn task_image(
        &self,
        spec: &TaskSpec,
        events: &MaskedEvents,
        image_use: &mut ImageUse,
    ) -> Result<String, String> {
        match (&spec.build, &spec.image) {
            (Some(build), _) => {
                let context = image::plan(build, &spec.source, &self.build_repository).await?;
                let tag = context.tag().to_string();
                // Before the image is looked up, so that no pruning of this
                // executor removes it between the look-up and the task's end.
                image_use.lease = Some(self.in_use.lease(&tag).await);
                if image::build(&self.docker, build, context, events).await?
                    == image::Obtained::Built
                {
                    image_use.pruning = Some(self.start_pruning(&tag));
                }
                Ok(tag)
            }
            (None, Some(name)) => {
                image::ensure(&self.docker, name, events).await?;
                Ok(name.clone())
            }
            (None, None) => Err(NO_IMAGE.into()),
        }
    }

    /// Prunes the build cache beside the task, which need not wait for it.
    fn start_pruning(&self, built: &str) -> tokio::task::JoinHandle<()> {
        let docker = self.docker.clone();
        let repository = self.build_repository.clone();
        let policy = self.build_cache;
        let in_use = self.in_use.clone();
        let built = built.to_string();
        tokio::spawn(async move {
            match cache::prune(&docker, &repository, policy, &in_use, Some(&built)).await {
                Ok(report) => tracing::debug!(?report, "pruned the build cache"),
                // The task's own image is there; the next build tries again.
                Err(e) => tracing::warn!("pruning the build cache: {e}"),
            }
        })
    }

    /// The id of [`TASKS_NETWORK`], made unless it is there. One made by
    /// someone else with inter-container traffic on is refused, not used.
    /// The engine does not keep network names unique under concurrent
    /// creation: tasks of this process make it one at a time, and when
    /// agents raced, the oldest is used and the others removed.
    async fn tasks_network(&self) -> Result<String, String> {
        static MAKING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _one_at_a_time = MAKING.lock().await;
        let filters = HashMap::from([("name", vec![TASKS_NETWORK])]);
        let options = bollard::query_parameters::ListNetworksOptionsBuilder::new()
            .filters(&filters)
            .build();
        let mut found: Vec<_> = self
            .docker
            .list_networks(Some(options))
            .await
            .map_err(|e| format!("listing the networks: {}", engine_message(&e)))?
            .into_iter()
            // The name filter matches parts of names too.
            .filter(|n| n.name.as_deref() == Some(TASKS_NETWORK))
            .collect();
        found.sort_by_key(|n| n.created.as_ref().map(|c| c.to_string()));
        if let Some(oldest) = found.first() {
            for extra in &found[1..] {
                if let Some(id) = &extra.id {
                    let _ = self.docker.remove_network(id).await;
                }
            }
            let icc = oldest.options.as_ref().and_then(|o| o.get(ICC_OPTION));
            if icc.map(String::as_str) != Some("false") {
                return Err(format!(
                    "the Docker network {TASKS_NETWORK} lets its containers reach each other \
                     ({ICC_OPTION} is not false), so tasks could reach each other's: remove it \
                     (`docker network rm {TASKS_NETWORK}`) and Kiln makes it again"
                ));
            }
            return oldest
                .id
                .clone()
                .ok_or_else(|| format!("the engine lists {TASKS_NETWORK} without an id"));
        }
        let request = NetworkCreateRequest {
            name: TASKS_NETWORK.to_string(),
            driver: Some("bridge".into()),
            options: Some(HashMap::from([(
                ICC_OPTION.to_string(),
                "false".to_string(),
            )])),
            // Not a task's label: the sweeps of leftovers never remove it.
            labels: Some(HashMap::from([(
                "kiln.shared".to_string(),
                "tasks".to_string(),
            )])),
            ..Default::default()
        };
        let made = self.docker.create_network(request).await.map_err(|e| {
            format!(
                "creating the network {TASKS_NETWORK}: {}",
                engine_message(&e)
            )
        })?;
        tracing::info!("created the Docker network {TASKS_NETWORK}");
        Ok(made.id)
    }

    async fn create_network(
        &self,
        name: &str,
        labels: &HashMap<String, String>,
    ) -> Result<(), String> {
        let request = NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".into()),
            labels: Some(labels.clone()),
            ..Default::default()
        };
        self.docker
            .create_network(request)
            .await
            .map_err(|e| format!("creating the task's network: {}", engine_message(&e)))?;
        tracing::debug!("created network {name}");
        Ok(())
    }

    /// Attaches a container to `network` only; no port is published.
    fn attachment(network: &str, alias: Option<&str>) -> (HostConfig, NetworkingConfig) {
        let endpoint = EndpointSettings {
            aliases: alias.map(|a| vec![a.to_string()]),
            ..Default::default()
        };
        let host = HostConfig {
            network_mode: Some(network.to_string()),
            ..Default::default()
        };
        let networking = NetworkingConfig {
            endpoints_config: Some(HashMap::from([(network.to_string(), endpoint)])),
        };
        (host, networking)
    }

    async fn start_service(
        &self,
        service: &Service,
        name: &str,
        network: &str,
        labels: &HashMap<String, String>,
    ) -> Result<(), String> {
        let (host_config, networking_config) = Self::attachment(network, Some(&service.alias));
        let body = ContainerCreateBody {
            image: Some(service.image.clone()),
            env: Some(env_strings(&service.env)),
            cmd: service.command.clone(),
            labels: Some(labels.clone()),
            host_config: Some(host_config),
            networking_config: Some(networking_config),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new().name(name).build();
        let failed = |e: bollard::errors::Error| {
            format!("starting service {}: {}", service.alias, engine_message(&e))
        };
        self.docker
            .create_container(Some(options), body)
            .await
            .map_err(failed)?;
        self.docker
            .start_container(name, None)
            .await
            .map_err(failed)?;
        tracing::debug!("started service {} as {name}", service.alias);
        Ok(())
    }

    async fn start_task_container(
        &self,
        spec: &TaskSpec,
        image: &str,
        name: &str,
        network: &str,
        labels: &HashMap<String, String>,
    ) -> Result<(), String> {
        let (mut host_config, networking_config) = Self::attachment(network, None);
        host_config.nano_cpus = spec.resources.cpus.map(|cpus| (cpus * 1e9).round() as i64);
        host_config.memory = spec
            .resources
            .memory_bytes
            .map(|bytes| i64::try_from(bytes).unwrap_or(i64::MAX));
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            entrypoint: Some(KEEP_ALIVE.iter().map(|s| s.to_string()).collect()),
            cmd: Some(Vec::new()),
            working_dir: Some(WORKSPACE.into()),
            env: Some(env_strings(&spec.env)),
            labels: Some(labels.clone()),
            host_config: Some(host_config),
            networking_config: Some(networking_config),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new().name(name).build();
        self.docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| {
                format!(
                    "creating the task container from {image}: {}",
                    engine_message(&e)
                )
            })?;

        // The workspace goes in before the container starts, so no step can
        // ever see it half-copied.
        let source = spec.source.clone();
        let (chunks, job) = pipe::stream_from_blocking(move |out| {
            let mut tar = tar::Builder::new(out);
            source.append_to_tar(&mut tar, Path::new(WORKSPACE.trim_start_matches('/')))?;
            tar.finish()
        });
        let options = UploadToContainerOptionsBuilder::new().path("/").build();
        let body = bollard::body_try_stream(chunks.map_ok(Into::into));
        let uploaded = self
            .docker
            .upload_to_container(name, Some(options), body)
            .await;
        let archived = job
            .await
            .map_err(|e| format!("archiving the workspace: {e}"))?;
        archived.map_err(|e| format!("copying the workspace into the container: {e}"))?;
        uploaded.map_err(|e| {
            format!(
                "copying the workspace into the container: {}",
                engine_message(&e)
            )
        })?;

        self.docker.start_container(name, None).await.map_err(|e| {
            format!(
                "starting the task container from {image}: {}",
                engine_message(&e)
            )
        })?;
        tracing::debug!("started task container {name}");
        Ok(())
    }

    /// Copies artifacts and reports out of the task container.
    async fn collect(
        &self,
        spec: &TaskSpec,
        container: &str,
        events: &MaskedEvents,
        cancel: &CancellationToken,
        outcome: &mut TaskOutcome,
    ) {
        collect_each(spec, events, outcome, |patterns, dest| async move {
            // No deadline: after a timeout the outputs are still worth having.
            interruptible(
                outputs::collect(&self.docker, container, patterns, &dest),
                None,
                cancel,
            )
            .await
            .ok()
        })
        .await;
    }
}

/// Runs one step as an exec in the task container, streaming its output.
async fn run_step(
    docker: &Docker,
    container: &str,
    script: &str,
    env: &[String],
    events: &MaskedEvents,
) -> StepExit {
    let mut cmd = STEP_SHELL.to_vec();
    cmd.push(script);
    let config = CreateExecOptions {
        cmd: Some(cmd),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        working_dir: Some(WORKSPACE),
        env: Some(env.iter().map(String::as_str).collect()),
        ..Default::default()
    };
    let exec = match docker.create_exec(container, config).await {
        Ok(exec) => exec.id,
        Err(e) => return StepExit::Error(format!("cannot run the step: {}", engine_message(&e))),
    };
    match docker.start_exec(&exec, None).await {
        Ok(StartExecResults::Attached {
            mut output,
            input: _input,
        }) => {
            loop {
                // Not polling the stream leaves the engine's output unread,
                // which in turn blocks the step on its pipe.
                events.ready().await;
                let Some(item) = output.next().await else {
                    break;
                };
                match item {
                    // Only the outer shell could still write to stderr
                    // (if it failed to start the script).
                    Ok(
                        LogOutput::StdOut { message }
                        | LogOutput::StdErr { message }
                        | LogOutput::Console { message },
                    ) => events.log(LogStream::Output, &message),
                    Ok(LogOutput::StdIn { .. }) => {}
                    Err(e) => {
                        return StepExit::Error(format!(
                            "reading the step's output: {}",
                            engine_message(&e)
                        ));
                    }
                }
            }
        }
        Ok(StartExecResults::Detached) => {
            return StepExit::Error("the engine started the step detached".into());
        }
        Err(e) => return StepExit::Error(format!("cannot run the step: {}", engine_message(&e))),
    }
    // The output ends when the script closes it, which may be before it exits.
    let mut pause = Duration::from_millis(20);
    loop {
        match docker.inspect_exec(&exec).await {
            Ok(info) if info.running == Some(true) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            Ok(info) => {
                return match info.exit_code {
                    Some(code) => StepExit::Code(i32::try_from(code).unwrap_or(-1)),
                    None => StepExit::Error("the engine reported no exit code for the step".into()),
                };
            }
            Err(e) => {
                return StepExit::Error(format!(
                    "reading the step's exit code: {}",
                    engine_message(&e)
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions_parse() {
        let version = parse_api_version("1.41").unwrap();
        assert_eq!((version.major_version, version.minor_version), (1, 41));
        assert!(parse_api_version("1.41.").is_some());
        assert!(parse_api_version("one").is_none());
    }

    #[test]
    fn names_are_unique_and_valid() {
        let (a, b) = (Names::new(), Names::new());
        assert_ne!(a.network(), b.network());
        assert_eq!(a.service("my db").rsplit('-').next(), Some("my_db"));
    }
}
