//! The client commands (DESIGN.md §3): `kiln job`, `apply`, `trigger`,
//! `runs`, `logs`, `cancel`, `approve`, `secret`, `agents`, `agent-token`, `user`,
//! `token`, `member`, `audit` and `forge`, which talk to a Kiln server's REST API
//! through [`kiln_client`]. One module per resource holds its commands'
//! arguments and handlers (`kiln secret set`: `secrets.rs`); `output`
//! prints for all of them, and `input` reads secret values (never from the
//! command line).
//!
//! Output is a table (or plain lines) for people and, with `--output json`,
//! the API's JSON for scripts. Exit codes: 0 done, 1 the server refused or
//! failed (or a followed run did not succeed), 2 a usage error.

pub mod agents;
pub mod apply;
pub mod audit;
pub mod forges;
mod input;
pub mod jobs;
pub mod logs;
pub mod members;
mod output;
pub mod runs;
pub mod secrets;
pub mod tokens;
pub mod users;

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use kiln_client::Client;

use crate::run_command::EXIT_SUCCESS;
use agents::{AgentTokenCommand, AgentsArgs};
use apply::ApplyArgs;
use audit::AuditArgs;
use forges::ForgeCommand;
use jobs::JobCommand;
use logs::LogsArgs;
use members::MemberCommand;
use runs::{ApproveArgs, CancelArgs, RunsArgs, TriggerArgs};
use secrets::SecretCommand;
use tokens::TokenCommand;
use users::UserCommand;

/// Exit code when the server refused a request or could not be reached.
pub const EXIT_API_ERROR: i32 = 1;

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Create, list, show and delete jobs on a Kiln server.
    #[command(subcommand)]
    Job(JobCommand),
    /// Create or update every job of a YAML file (`jobs: [...]`), idempotently.
    Apply(ApplyArgs),
    /// Start a run of a job, and optionally follow it to its end.
    Trigger(TriggerArgs),
    /// List a job's runs, newest first.
    Runs(RunsArgs),
    /// Print, or follow, the console logs of a run's tasks.
    Logs(LogsArgs),
    /// Cancel a run.
    Cancel(CancelArgs),
    /// Approve a blocked run (a pull request from a fork; maintainers).
    Approve(ApproveArgs),
    /// Set, list and delete a job's secrets.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// List the agents known to the server.
    Agents(AgentsArgs),
    /// Make tokens for agents (admins).
    #[command(subcommand)]
    AgentToken(AgentTokenCommand),
    /// Create, list, change and delete users (admins).
    #[command(subcommand)]
    User(UserCommand),
    /// Make, list and revoke API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Set, list and remove users' roles on a job.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Show the audit log, newest first (admins).
    Audit(AuditArgs),
    /// Set, list and delete the forges whose webhooks start runs (admins).
    #[command(subcommand)]
    Forge(ForgeCommand),
}

/// Where the server is and how to talk to it; on every client command.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// The Kiln server's HTTP address.
    #[arg(
        long,
        env = "KILN_SERVER",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    pub server: String,
    /// API token, sent as a bearer token.
    #[arg(long, env = "KILN_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// PEM CA certificate(s) trusted for an `https://` server besides the
    /// system's roots (a private CA, a self-signed certificate).
    #[arg(long, env = "KILN_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// `table` for people, `json` for the API's JSON.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// Runs a client command; returns the exit code. Errors from the server are
/// reported here (exit 1); other errors go back to `main` (exit 2).
pub async fn run(command: ClientCommand) -> anyhow::Result<i32> {
    match dispatch(command).await {
        Ok(code) => Ok(code),
        Err(error) => {
            if is_broken_pipe(&error) {
                // `kiln runs JOB | head`: the reader has all it wanted.
                return Ok(EXIT_SUCCESS);
            }
            match describe_client_error(&error) {
                Some(message) => {
                    eprintln!("error: {message}");
                    Ok(EXIT_API_ERROR)
                }
                None => Err(error),
            }
        }
    }
}

async fn dispatch(command: ClientCommand) -> anyhow::Result<i32> {
    match command {
        ClientCommand::Job(command) => jobs::run(command).await,
        ClientCommand::Apply(args) => apply::apply(args).await,
        ClientCommand::Trigger(args) => runs::trigger(args).await,
        ClientCommand::Runs(args) => runs::runs(args).await,
        ClientCommand::Logs(args) => logs::logs(args).await,
        ClientCommand::Cancel(args) => runs::cancel(args).await,
        ClientCommand::Approve(args) => runs::approve(args).await,
        ClientCommand::Secret(command) => secrets::run(command).await,
        ClientCommand::Agents(args) => agents::agents(&args.client).await,
        ClientCommand::AgentToken(command) => agents::agent_token(command).await,
        ClientCommand::User(command) => users::run(command).await,
        ClientCommand::Token(command) => tokens::run(command).await,
        ClientCommand::Member(command) => members::run(command).await,
        ClientCommand::Audit(args) => audit::audit(args).await,
        ClientCommand::Forge(command) => forges::run(command).await,
    }
}

/// The message of an error that came from the client library, with any
/// context added on top of it; `None` for other errors. The library's own
/// message already includes what its source says, so the chain stops there.
fn describe_client_error(error: &anyhow::Error) -> Option<String> {
    let mut parts = Vec::new();
    for cause in error.chain() {
        parts.push(cause.to_string());
        if cause.is::<kiln_client::Error>() {
            return Some(parts.join(": "));
        }
    }
    None
}

/// Whether the reader of the output went away (`kiln runs JOB | head`).
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

/// A client for the server `args` name.
fn connect(args: &ClientArgs) -> anyhow::Result<Client> {
    let ca_cert = match &args.ca_cert {
        Some(path) => Some(std::fs::read(path).with_context(|| {
            format!(
                "cannot read the CA certificate (--ca-cert) {}",
                path.display()
            )
        })?),
        None => None,
    };
    Ok(Client::with_ca_cert(
        &args.server,
        args.token.as_deref(),
        ca_cert.as_deref(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_are_told_from_others() {
        let error = anyhow::Error::from(kiln_client::Error::Unauthorized);
        assert_eq!(
            describe_client_error(&error).as_deref(),
            Some("the server refused the token (401): set --token or KILN_TOKEN")
        );
        assert_eq!(describe_client_error(&anyhow::anyhow!("other")), None);
    }
}
