//! `kiln secret set|list|delete`; `set` reads the value from standard
//! input, hidden when that is a terminal.

use chrono::Utc;
use clap::Subcommand;

use super::input::read_secret_input;
use super::output::{ago, emit, print_done, print_json, table};
use super::{ClientArgs, Output, connect};
use crate::run_command::{EXIT_INVALID, EXIT_SUCCESS};

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Set a secret; its value is read from standard input.
    Set {
        /// The job the secret belongs to.
        job: String,
        /// The secret's name, as tasks list it under `secrets:`.
        name: String,
        /// Let runs of pull requests from forks receive it (their code
        /// could print it: only for what is safe to share).
        #[arg(long)]
        allow_forks: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List a job's secrets (names only: values are write-only).
    List {
        /// The job whose secrets to list.
        job: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a secret.
    Delete {
        /// The job the secret belongs to.
        job: String,
        /// The secret's name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub(super) async fn run(command: SecretCommand) -> anyhow::Result<i32> {
    match command {
        SecretCommand::Set {
            job,
            name,
            allow_forks,
            client,
        } => secret_set(&client, &job, &name, allow_forks).await,
        SecretCommand::List { job, client } => secret_list(&client, &job).await,
        SecretCommand::Delete { job, name, client } => secret_delete(&client, &job, &name).await,
    }
}

async fn secret_set(
    args: &ClientArgs,
    job: &str,
    name: &str,
    allow_forks: bool,
) -> anyhow::Result<i32> {
    let prompt = format!("value of secret `{name}` for job `{job}`");
    let value = read_secret_input(&prompt, "the secret").await?;
    if value.is_empty() {
        eprintln!(
            "error: the secret's value is empty: pass it on standard input, e.g. `kiln secret set {job} {name} < file`"
        );
        return Ok(EXIT_INVALID);
    }
    connect(args)?
        .put_secret(job, name, &value, allow_forks)
        .await?;
    if args.output == Output::Table {
        let forks = if allow_forks {
            " (runs of pull requests from forks receive it)"
        } else {
            ""
        };
        emit(&format!("set secret `{name}` of job `{job}`{forks}\n"))?;
    }
    Ok(EXIT_SUCCESS)
}

async fn secret_list(args: &ClientArgs, job: &str) -> anyhow::Result<i32> {
    let secrets = connect(args)?.list_secrets(job).await?;
    if args.output == Output::Json {
        return print_json(&secrets);
    }
    if secrets.is_empty() {
        emit(&format!("job `{job}` has no secrets\n"))?;
        return Ok(EXIT_SUCCESS);
    }
    let now = Utc::now();
    let rows = secrets
        .iter()
        .map(|s| {
            let forks = if s.allow_forks { "yes" } else { "no" };
            vec![s.name.clone(), ago(s.updated_at, now), forks.to_string()]
        })
        .collect();
    emit(&table(&["NAME", "UPDATED", "FORKS"], rows))?;
    Ok(EXIT_SUCCESS)
}

async fn secret_delete(args: &ClientArgs, job: &str, name: &str) -> anyhow::Result<i32> {
    connect(args)?.delete_secret(job, name).await?;
    print_done(
        args.output,
        &format!("deleted secret `{name}` of job `{job}`"),
    )
}
