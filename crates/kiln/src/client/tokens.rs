//! `kiln token create|list|revoke`: API tokens, which belong to a user.
//! A token's value is shown once, when it is made, alone on standard output
//! so that a script can capture it (`TOKEN=$(kiln token create ci)`).

use chrono::{DateTime, Utc};
use clap::Subcommand;
use kiln_api::TokenBody;

use super::output::{ago, emit, local_time, print_done, print_json, table, until};
use super::{ClientArgs, Output, connect};
use crate::run_command::EXIT_SUCCESS;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make an API token; its value is printed this once, alone on standard
    /// output.
    Create {
        /// A name to recognise the token by, e.g. where it is used.
        name: String,
        /// How long it works (`30d`, `12h`, `90m`); forever when left out.
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
        /// Admins: make it for this user rather than for yourself.
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List API tokens, never their values: yours, or (admins) a user's.
    List {
        /// Admins: this user's tokens rather than your own.
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Revoke an API token: it stops working at once.
    Revoke {
        /// The token's id, as `kiln token list` shows it.
        #[arg(value_parser = clap::value_parser!(i64).range(1..))]
        id: i64,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub(super) async fn run(command: TokenCommand) -> anyhow::Result<i32> {
    match command {
        TokenCommand::Create {
            name,
            expires_in,
            user,
            client,
        } => {
            let body = TokenBody {
                name,
                expires_in,
                user,
            };
            token_create(&client, &body).await
        }
        TokenCommand::List { user, client } => token_list(&client, user.as_deref()).await,
        TokenCommand::Revoke { id, client } => token_revoke(&client, id).await,
    }
}

async fn token_create(args: &ClientArgs, body: &TokenBody) -> anyhow::Result<i32> {
    let created = connect(args)?.create_token(body).await?;
    if args.output == Output::Json {
        return print_json(&created);
    }
    let owner = body
        .user
        .as_deref()
        .map_or_else(|| "you".into(), |user| format!("user `{user}`"));
    let expiry = created.expires_at.map_or_else(
        || "never expires".into(),
        |at| format!("expires {}", local_time(at)),
    );
    // The note goes to stderr so that stdout holds the value alone.
    eprintln!(
        "API token `{}` (id {}) for {owner}, {expiry}; it is shown this once, keep it:",
        created.name, created.id
    );
    emit(&format!("{}\n", created.token))?;
    Ok(EXIT_SUCCESS)
}

async fn token_list(args: &ClientArgs, user: Option<&str>) -> anyhow::Result<i32> {
    let tokens = connect(args)?.list_tokens(user).await?;
    if args.output == Output::Json {
        return print_json(&tokens);
    }
    if tokens.is_empty() {
        let whose = user.map_or_else(|| "you have".into(), |u| format!("user `{u}` has"));
        emit(&format!(
            "{whose} no API tokens: make one with `kiln token create NAME`\n"
        ))?;
        return Ok(EXIT_SUCCESS);
    }
    let now = Utc::now();
    let rows = tokens
        .iter()
        .map(|token| {
            vec![
                token.id.to_string(),
                token.name.clone(),
                token.user.clone(),
                ago(token.created_at, now),
                token
                    .expires_at
                    .map_or_else(|| "never".into(), |at| expiry(at, now)),
                token
                    .last_used_at
                    .map_or_else(|| "never".into(), |at| ago(at, now)),
                token
                    .revoked_at
                    .map_or_else(|| "-".into(), |at| ago(at, now)),
            ]
        })
        .collect();
    emit(&table(
        &[
            "ID",
            "NAME",
            "USER",
            "CREATED",
            "EXPIRES",
            "LAST USED",
            "REVOKED",
        ],
        rows,
    ))?;
    Ok(EXIT_SUCCESS)
}

/// `in 29d`, or `expired 2h ago` once it has passed.
fn expiry(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    if at <= now {
        format!("expired {}", ago(at, now))
    } else {
        until(at, now)
    }
}

async fn token_revoke(args: &ClientArgs, id: i64) -> anyhow::Result<i32> {
    connect(args)?.revoke_token(id).await?;
    print_done(
        args.output,
        &format!("revoked token {id}: it no longer works"),
    )
}
