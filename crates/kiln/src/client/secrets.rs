//! `kiln secret set|list|delete`; `set` reads the value from standard
//! input, hidden when that is a terminal.

use std::io::{IsTerminal, Read};

use anyhow::Context;
use chrono::Utc;
use clap::Subcommand;

use super::output::{ago, emit, print_json, table};
use super::{ClientArgs, Output, connect};
use crate::run_command::{EXIT_INVALID, EXIT_SUCCESS};

/// Largest secret value read from standard input.
const MAX_SECRET_BYTES: u64 = 1 << 20;

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Set a secret; its value is read from standard input.
    Set {
        /// The job the secret belongs to.
        job: String,
        /// The secret's name, as tasks list it under `secrets:`.
        name: String,
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
        SecretCommand::Set { job, name, client } => secret_set(&client, &job, &name).await,
        SecretCommand::List { job, client } => secret_list(&client, &job).await,
        SecretCommand::Delete { job, name, client } => secret_delete(&client, &job, &name).await,
    }
}

async fn secret_set(args: &ClientArgs, job: &str, name: &str) -> anyhow::Result<i32> {
    let value = if std::io::stdin().is_terminal() {
        eprint!("value of secret `{name}` for job `{job}` (input hidden): ");
        read_hidden_line().await?
    } else {
        let mut bytes = Vec::new();
        std::io::stdin()
            .take(MAX_SECRET_BYTES + 1)
            .read_to_end(&mut bytes)
            .context("cannot read the secret from standard input")?;
        if bytes.len() as u64 > MAX_SECRET_BYTES {
            eprintln!("error: the secret is larger than {MAX_SECRET_BYTES} bytes");
            return Ok(EXIT_INVALID);
        }
        String::from_utf8(bytes).context("the secret on standard input is not UTF-8")?
    };
    // `echo value | kiln secret set` adds a newline that is not part of it.
    let value = value
        .strip_suffix('\n')
        .map(|v| v.strip_suffix('\r').unwrap_or(v))
        .unwrap_or(&value);
    if value.is_empty() {
        eprintln!(
            "error: the secret's value is empty: pass it on standard input, e.g. `kiln secret set {job} {name} < file`"
        );
        return Ok(EXIT_INVALID);
    }
    connect(args)?.put_secret(job, name, value).await?;
    if args.output == Output::Table {
        emit(&format!("set secret `{name}` of job `{job}`\n"))?;
    }
    Ok(EXIT_SUCCESS)
}

/// One line from the terminal with echo off, so the secret never shows on
/// screen; the terminal is restored even on Ctrl-C.
#[cfg(unix)]
async fn read_hidden_line() -> anyhow::Result<String> {
    use std::os::fd::AsRawFd;
    let fd = std::io::stdin().as_raw_fd();
    let mut original = std::mem::MaybeUninit::<libc::termios>::uninit();
    // SAFETY: `fd` is open for the life of the process and `original` is a
    // valid place for tcgetattr to write a termios to.
    if unsafe { libc::tcgetattr(fd, original.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot read the terminal's settings");
    }
    // SAFETY: tcgetattr succeeded, so it filled `original` in.
    let original = unsafe { original.assume_init() };
    let mut hidden = original;
    hidden.c_lflag &= !libc::ECHO;
    hidden.c_lflag |= libc::ECHONL;
    // SAFETY: `hidden` is a valid termios copied from the terminal's own.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &hidden) } != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot turn the terminal's echo off");
    }
    let restore = move || {
        // SAFETY: as above; restores the settings read at the start.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &original) };
    };
    let read = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    });
    tokio::select! {
        line = read => {
            restore();
            Ok(line.context("the terminal reader stopped")?.context("cannot read the secret")?)
        }
        _ = tokio::signal::ctrl_c() => {
            restore();
            eprintln!();
            std::process::exit(crate::run_command::EXIT_INTERRUPTED);
        }
    }
}

#[cfg(not(unix))]
async fn read_hidden_line() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the secret")?;
    Ok(line)
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
        .map(|s| vec![s.name.clone(), ago(s.updated_at, now)])
        .collect();
    emit(&table(&["NAME", "UPDATED"], rows))?;
    Ok(EXIT_SUCCESS)
}

async fn secret_delete(args: &ClientArgs, job: &str, name: &str) -> anyhow::Result<i32> {
    connect(args)?.delete_secret(job, name).await?;
    if args.output == Output::Table {
        emit(&format!("deleted secret `{name}` of job `{job}`\n"))?;
    }
    Ok(EXIT_SUCCESS)
}
