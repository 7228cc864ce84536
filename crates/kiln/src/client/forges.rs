//! `kiln forge set|list|delete` (admins): the code hosts whose webhooks
//! start runs. A forge's token and webhook secret are read from files (or
//! standard input, `-`), never from the command line.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use chrono::Utc;
use clap::Subcommand;
use kiln_api::ForgeBody;

use super::output::{ago, emit, print_done, print_json, table};
use super::{ClientArgs, Output, connect};
use crate::run_command::EXIT_SUCCESS;

/// Largest token or secret file read.
const MAX_SECRET_BYTES: u64 = 1 << 20;

#[derive(Debug, Subcommand)]
pub enum ForgeCommand {
    /// Create or change a forge; a token or secret not given is kept.
    Set {
        /// The forge's name: its webhook is `{server}/hooks/NAME`.
        name: String,
        /// `github`, `gitlab` or `gitea` (Forgejo is `gitea`).
        #[arg(long, value_name = "KIND")]
        kind: String,
        /// The forge's API address, e.g. https://api.github.com.
        #[arg(long, value_name = "URL")]
        api_url: String,
        /// A file holding an access token for commit statuses (`-`: standard input).
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// A file holding the webhook's secret, the same as set in the
        /// forge's hook (`-`: standard input).
        #[arg(long, value_name = "FILE")]
        webhook_secret_file: Option<PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the forges (without their tokens and secrets).
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a forge no job uses.
    Delete {
        /// The forge's name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub(super) async fn run(command: ForgeCommand) -> anyhow::Result<i32> {
    match command {
        ForgeCommand::Set {
            name,
            kind,
            api_url,
            token_file,
            webhook_secret_file,
            client,
        } => {
            if token_file.as_deref() == Some(Path::new("-"))
                && webhook_secret_file.as_deref() == Some(Path::new("-"))
            {
                bail!(
                    "standard input can hold the token or the webhook secret, not both: give one of them as a file"
                );
            }
            let body = ForgeBody {
                kind,
                api_url,
                token: token_file.as_deref().map(read_value).transpose()?,
                webhook_secret: webhook_secret_file.as_deref().map(read_value).transpose()?,
            };
            forge_set(&client, &name, &body).await
        }
        ForgeCommand::List { client } => forge_list(&client).await,
        ForgeCommand::Delete { name, client } => {
            connect(&client)?.delete_forge(&name).await?;
            print_done(client.output, &format!("deleted forge `{name}`"))
        }
    }
}

/// A token or secret from `path` (`-`: standard input), without the line
/// break an editor or `echo` leaves at its end.
fn read_value(path: &Path) -> anyhow::Result<String> {
    let mut bytes = Vec::new();
    let what = path.display();
    if path == Path::new("-") {
        std::io::stdin()
            .take(MAX_SECRET_BYTES + 1)
            .read_to_end(&mut bytes)
            .context("cannot read standard input")?;
    } else {
        std::fs::File::open(path)
            .with_context(|| format!("cannot open {what}"))?
            .take(MAX_SECRET_BYTES + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("cannot read {what}"))?;
    }
    if bytes.len() as u64 > MAX_SECRET_BYTES {
        bail!("{what} is larger than {MAX_SECRET_BYTES} bytes");
    }
    let text = String::from_utf8(bytes).with_context(|| format!("{what} is not UTF-8"))?;
    let value = text.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        bail!("{what} is empty");
    }
    Ok(value.to_string())
}

async fn forge_set(args: &ClientArgs, name: &str, body: &ForgeBody) -> anyhow::Result<i32> {
    let forge = connect(args)?.put_forge(name, body).await?;
    if args.output == Output::Json {
        return print_json(&forge);
    }
    let change = forge.change.as_deref().unwrap_or("updated");
    let mut text = format!("{change} forge `{}` ({})\n", forge.name, forge.kind);
    if !forge.has_webhook_secret {
        text.push_str("note: it has no webhook secret, so its webhooks are refused: set one with --webhook-secret-file\n");
    }
    emit(&text)?;
    Ok(EXIT_SUCCESS)
}

async fn forge_list(args: &ClientArgs) -> anyhow::Result<i32> {
    let forges = connect(args)?.list_forges().await?;
    if args.output == Output::Json {
        return print_json(&forges);
    }
    if forges.is_empty() {
        emit("no forges yet: add one with `kiln forge set`\n")?;
        return Ok(EXIT_SUCCESS);
    }
    let now = Utc::now();
    let yes_no = |set: bool| if set { "yes" } else { "no" }.to_string();
    let rows = forges
        .iter()
        .map(|forge| {
            vec![
                forge.name.clone(),
                forge.kind.clone(),
                forge.api_url.clone(),
                yes_no(forge.has_token),
                yes_no(forge.has_webhook_secret),
                ago(forge.updated_at, now),
            ]
        })
        .collect();
    emit(&table(
        &[
            "NAME",
            "KIND",
            "API URL",
            "TOKEN",
            "WEBHOOK SECRET",
            "UPDATED",
        ],
        rows,
    ))?;
    Ok(EXIT_SUCCESS)
}
