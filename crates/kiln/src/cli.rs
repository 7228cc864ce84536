//! Command-line arguments (DESIGN.md §3).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "kiln",
    version,
    about = "Kiln continuous integration",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the current repository's pipeline on this machine.
    Run(RunArgs),
    /// Check a pipeline file and report every problem with its location.
    Validate(ValidateArgs),
    /// Print the JSON Schema of the pipeline file, for editors.
    Schema,
    /// All in one: server, one embedded agent, SQLite and local storage in --data-dir.
    Up(UpArgs),
    /// The server alone: REST API over the database queue.
    Server(ServerArgs),
    /// An agent: takes tasks from a server over gRPC and runs them here.
    Agent(AgentArgs),
    // The client commands (`job`, `apply`, `trigger`, `runs`, `logs`, …).
    #[command(flatten)]
    Client(crate::client::ClientCommand),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExecutorKind {
    Docker,
    Process,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Tasks to run (a name, or a matrix task's base name for all its
    /// combinations), with everything they need. All tasks when none given.
    pub tasks: Vec<String>,
    /// Pipeline file; `.kiln.yml` at the repository's top by default.
    #[arg(long, short = 'f')]
    pub file: Option<PathBuf>,
    /// How tasks are run; `docker` when an engine answers, else `process`.
    #[arg(long, value_enum)]
    pub executor: Option<ExecutorKind>,
    /// A secret as NAME=VALUE, or NAME to take the value from the environment.
    #[arg(long = "secret", value_name = "NAME[=VALUE]")]
    pub secrets: Vec<String>,
    /// A file of NAME=VALUE lines with secrets.
    #[arg(long = "secret-file", value_name = "FILE")]
    pub secret_files: Vec<PathBuf>,
    /// An extra environment variable for every task, over the pipeline's own.
    #[arg(long = "env", value_name = "K=V", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,
    /// How many tasks may run at once; the number of CPUs by default.
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
    /// Disable colours (also with NO_COLOR set, or when not on a terminal).
    #[arg(long)]
    pub no_color: bool,
}

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Pipeline file; `.kiln.yml` at the repository's top by default.
    #[arg(long, short = 'f')]
    pub file: Option<PathBuf>,
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    text.parse::<kiln_pipeline::Duration>().map(|d| d.as_std())
}

/// A size in bytes: a number, optionally followed by `KiB`, `MiB` or `GiB`
/// (or `K`, `M`, `G`, which mean the same), e.g. `64MiB`.
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size: expected e.g. `64MiB` or `1048576`"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit `{other}`: expected KiB, MiB or GiB"
            ));
        }
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("`{text}` is too large"))
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("expected K=V, found `{text}`")),
    }
}

#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Address of the HTTP API.
    #[arg(long, default_value = "127.0.0.1:8080", env = "KILN_LISTEN")]
    pub listen: std::net::SocketAddr,
    /// Address agents connect to over gRPC.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub grpc_listen: std::net::SocketAddr,
    /// Where the SQLite database, the key file, logs and artifacts live.
    #[arg(long, default_value = ".kiln-data", env = "KILN_DATA_DIR")]
    pub data_dir: PathBuf,
    /// `postgres://…` to use PostgreSQL instead of SQLite in the data dir.
    #[arg(long, env = "KILN_DATABASE_URL")]
    pub database_url: Option<String>,
    /// `s3://bucket/prefix` for an S3-compatible blob store (AWS_* variables
    /// configure it); the data dir by default.
    #[arg(long, env = "KILN_BLOB_URL")]
    pub blob_url: Option<String>,
    /// Where people reach this server, e.g. `https://ci.example.com`: the
    /// link commit statuses on forges point to (none without it).
    #[arg(long, env = "KILN_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// How long a task stays with an agent that stopped sending heartbeats
    /// before it is retried elsewhere or ends `error: agent lost`.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub agent_lease: std::time::Duration,
    /// The largest report file (JUnit XML) a task may keep, e.g. `64MiB`; a
    /// bigger one is refused and the task's console says so.
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    pub max_report_size: u64,
    /// Also run tasks in this process, like an agent on the server's machine.
    #[arg(long)]
    pub worker: bool,
    /// Executor of the in-process worker; `docker` when an engine answers.
    #[arg(long, value_enum, requires = "worker")]
    pub worker_executor: Option<ExecutorKind>,
    /// Labels of the in-process worker, for `runs-on`.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "linux",
        requires = "worker"
    )]
    pub worker_labels: Vec<String>,
    /// Tasks the in-process worker runs at once.
    #[arg(long, default_value_t = 2, requires = "worker")]
    pub worker_capacity: usize,
    #[command(flatten)]
    pub isolation: EmbeddedIsolationArgs,
    #[command(flatten)]
    pub build_cache: BuildCacheArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// What one task may store on the server; a task that goes past a limit
/// fails, and its console says which.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// The most console output one task attempt keeps, e.g. `64MiB`: the
    /// log keeps what came before, says the limit was reached, and the task
    /// fails.
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    pub max_log_bytes: u64,
    /// The most artifact bytes one task attempt keeps, all files together,
    /// e.g. `1GiB`; past it the upload stops and the task fails.
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    pub max_artifact_bytes: u64,
    /// The largest single artifact file a task may keep, e.g. `512MiB`.
    #[arg(long, default_value = "512MiB", value_parser = parse_size)]
    pub max_artifact_file_bytes: u64,
}

impl LimitArgs {
    pub fn limits(&self) -> kiln_server::Limits {
        kiln_server::Limits {
            max_log_bytes: self.max_log_bytes,
            max_artifact_bytes: self.max_artifact_bytes,
            max_artifact_file_bytes: self.max_artifact_file_bytes,
        }
    }
}

/// The server's own TLS: with a certificate, the API and the agents' port
/// speak TLS only.
#[derive(Debug, Clone, clap::Args)]
pub struct TlsArgs {
    /// PEM certificate chain of the server (leaf first): serves the API and
    /// the agents' gRPC port over TLS only.
    #[arg(long, env = "KILN_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "KILN_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s): agents must present a client certificate
    /// signed by one to use the gRPC port.
    #[arg(
        long,
        env = "KILN_CLIENT_CA",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Address of the HTTP API and (later) the web UI.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Where everything is kept: SQLite database, key file, logs, artifacts.
    #[arg(long, default_value = ".kiln-data")]
    pub data_dir: PathBuf,
    /// Executor of the embedded agent; `docker` when an engine answers.
    #[arg(long, value_enum)]
    pub executor: Option<ExecutorKind>,
    /// Tasks the embedded agent runs at once.
    #[arg(long, default_value_t = 2)]
    pub capacity: usize,
    #[command(flatten)]
    pub isolation: EmbeddedIsolationArgs,
    /// Address agents connect to over gRPC: the embedded one, and any
    /// other started with `kiln agent --server http://ADDR`.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub grpc_listen: std::net::SocketAddr,
    #[command(flatten)]
    pub build_cache: BuildCacheArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// How the agent in a server's process keeps tasks from the server.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct EmbeddedIsolationArgs {
    /// Let the in-process agent run tasks on the process executor even
    /// where they cannot be given users of their own (the server is not
    /// root): its steps can then read the data directory (key, database)
    /// and the server's environment. Only for a machine and jobs you trust.
    #[arg(long)]
    pub allow_unisolated_tasks: bool,
    /// Uids given to running tasks when the server runs as root, FIRST-LAST
    /// (see `kiln agent --task-uids`).
    #[arg(long, value_name = "FIRST-LAST", default_value_t = kiln_exec::isolation::UidRange::DEFAULT)]
    pub task_uids: kiln_exec::isolation::UidRange,
}

/// How many images built from tasks' Dockerfiles an agent keeps.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct BuildCacheArgs {
    /// Most `kiln-build:*` images kept (the most recently used); older ones
    /// are removed after each build [default: 20].
    #[arg(long, value_name = "N")]
    pub build_cache_images: Option<usize>,
    /// `kiln-build:*` images unused for this long are removed after a
    /// build [default: 7d].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub build_cache_max_age: Option<std::time::Duration>,
}

impl BuildCacheArgs {
    pub fn policy(&self) -> kiln_exec::docker::BuildCachePolicy {
        let default = kiln_exec::docker::BuildCachePolicy::default();
        kiln_exec::docker::BuildCachePolicy {
            max_images: self.build_cache_images.unwrap_or(default.max_images),
            max_age: self.build_cache_max_age.unwrap_or(default.max_age),
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// The server's gRPC address (its `--grpc-listen`, port 9090 by
    /// default), with its scheme: `http://ci.example.com:9090`. Not the HTTP
    /// API's address that clients use (`KILN_SERVER`, port 8080).
    #[arg(long, env = "KILN_SERVER_GRPC", value_name = "URL")]
    pub server: String,
    /// Agent token: the server's shared `KILN_AGENT_TOKEN` or a per-agent
    /// one. Prefer --token-file or the environment: a token given here is
    /// wiped from the process's command line at start, but shows there
    /// until then.
    #[arg(
        long,
        env = "KILN_AGENT_TOKEN",
        hide_env_values = true,
        required_unless_present = "token_file",
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,
    /// File holding the agent token (surrounding whitespace ignored).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Uids given to running tasks when the agent runs as root, FIRST-LAST:
    /// each running task has one of its own (with the `kiln-task` group's
    /// gid), claimed machine-wide so agents never share one.
    #[arg(long, value_name = "FIRST-LAST", default_value_t = kiln_exec::isolation::UidRange::DEFAULT)]
    pub task_uids: kiln_exec::isolation::UidRange,
    /// Labels for `runs-on`, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "linux")]
    pub labels: Vec<String>,
    /// Tasks run at once.
    #[arg(long, default_value_t = 2)]
    pub capacity: usize,
    /// How tasks are run; `docker` when an engine answers, else `process`.
    #[arg(long, value_enum)]
    pub executor: Option<ExecutorKind>,
    /// Unique name of this agent; the host name by default.
    #[arg(long)]
    pub name: Option<String>,
    /// Where checkouts and task outputs live while tasks run.
    #[arg(long, default_value = ".kiln-agent")]
    pub work_dir: PathBuf,
    #[command(flatten)]
    pub build_cache: BuildCacheArgs,
    /// PEM CA certificate(s) trusted for an `https://` server instead of
    /// the system's roots (a private CA, a self-signed certificate).
    #[arg(long, env = "KILN_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate, for a server started with --client-ca.
    #[arg(long, value_name = "FILE", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// Send the token over `http://` to an address that is not loopback
    /// (refused otherwise): only on a network you trust.
    #[arg(long)]
    pub insecure: bool,
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    /// The defaults `--help` states are the executor's.
    #[test]
    fn build_cache_defaults_are_the_executors() {
        let help = super::Cli::command()
            .find_subcommand_mut("agent")
            .unwrap()
            .render_long_help()
            .to_string();
        let policy = kiln_exec::docker::BuildCachePolicy::default();
        assert!(
            help.contains(&format!("[default: {}]", policy.max_images)),
            "{help}"
        );
        let days = policy.max_age.as_secs() / 86_400;
        assert_eq!(policy.max_age.as_secs(), days * 86_400);
        assert!(help.contains(&format!("[default: {days}d]")), "{help}");
    }

    #[test]
    fn sizes() {
        use super::parse_size;
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("2 GiB"), Ok(2 << 30));
        assert_eq!(parse_size("3KiB"), Ok(3 << 10));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("1.5MiB").is_err());
        assert!(
            parse_size("5 parsecs")
                .unwrap_err()
                .contains("unit `parsecs`")
        );
        assert!(parse_size("99999999999999GiB").is_err());
    }

    proptest::proptest! {
        /// Any text is a size or an error, never a panic; a number with a
        /// unit is that many of it, unless that overflows.
        #[test]
        fn sizes_parse_or_fail(text in "\\PC{0,12}", n in 0u64..u64::MAX, unit in 0usize..7) {
            let _ = super::parse_size(&text);
            let (suffix, scale) = [("", 1u64), ("B", 1), ("K", 1 << 10), ("KiB", 1 << 10),
                ("MiB", 1 << 20), ("M", 1 << 20), ("GiB", 1 << 30)][unit];
            let parsed = super::parse_size(&format!("{n}{suffix}"));
            match n.checked_mul(scale) {
                Some(bytes) => proptest::prop_assert_eq!(parsed, Ok(bytes)),
                None => proptest::prop_assert!(parsed.is_err()),
            }
        }
    }

    /// The default `--max-report-size` is the server's.
    #[test]
    fn report_size_default_is_the_servers() {
        let help = super::Cli::command()
            .find_subcommand_mut("server")
            .unwrap()
            .render_long_help()
            .to_string();
        assert_eq!(kiln_server::DEFAULT_MAX_REPORT_SIZE, 64 << 20);
        assert!(help.contains("[default: 64MiB]"), "{help}");
    }

    /// The defaults of the limits' flags are the server's.
    #[test]
    fn limit_defaults_are_the_servers() {
        let cli = super::Cli::try_parse_from(["kiln", "server"]).unwrap();
        let super::Command::Server(args) = cli.command else {
            panic!("not the server command");
        };
        assert_eq!(args.limits.limits(), kiln_server::Limits::default());
        let cli = super::Cli::try_parse_from(["kiln", "up", "--max-log-bytes", "1KiB"]).unwrap();
        let super::Command::Up(args) = cli.command else {
            panic!("not the up command");
        };
        assert_eq!(args.limits.max_log_bytes, 1024);
    }

    /// `--help` describes every argument of every command, positional ones
    /// (`<JOB>`, `<NAME>`) included.
    #[test]
    fn every_argument_has_help() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                if arg.get_help().is_none() && !arg.is_hide_set() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in command.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "kiln", &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:?}");
    }
}
