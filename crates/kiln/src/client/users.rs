//! `kiln user create|list|set|delete` (admins). A password is read from
//! standard input with `--password-stdin` (typed at a hidden prompt when
//! that is a terminal), never from the command line.

use anyhow::bail;
use chrono::Utc;
use clap::Subcommand;
use kiln_api::{User, UserBody, UserPatchBody};

use super::input::read_secret_input;
use super::output::{ago, emit, print_done, print_json, table};
use super::{ClientArgs, Output, connect};
use crate::run_command::EXIT_SUCCESS;

/// The global roles (DESIGN.md §1).
const ROLES: [&str; 2] = ["admin", "user"];

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user, who then gets API tokens with `kiln token create --user`.
    Create(UserCreateArgs),
    /// List the users.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Change a user's role, password, or whether they may act at all.
    Set(UserSetArgs),
    /// Delete a user and their tokens.
    Delete {
        /// The user to delete.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, clap::Args)]
pub struct UserCreateArgs {
    /// The user's name, as they sign in with it.
    pub name: String,
    /// `admin` (may do anything) or `user` (what their job roles allow);
    /// `user` when left out.
    #[arg(long, value_parser = ROLES)]
    pub role: Option<String>,
    /// Read a password for the web UI from standard input (a hidden prompt
    /// on a terminal); without it the user has none.
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, clap::Args)]
#[command(group(
    clap::ArgGroup::new("change")
        .required(true)
        .multiple(true)
        .args(["role", "disable", "enable", "password_stdin"])
))]
pub struct UserSetArgs {
    /// The user to change.
    pub name: String,
    /// The new global role.
    #[arg(long, value_parser = ROLES)]
    pub role: Option<String>,
    /// Disable the user: their tokens and sessions stop working at once.
    #[arg(long, conflicts_with = "enable")]
    pub disable: bool,
    /// Enable a disabled user again.
    #[arg(long)]
    pub enable: bool,
    /// Read a new password from standard input (a hidden prompt on a
    /// terminal).
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub(super) async fn run(command: UserCommand) -> anyhow::Result<i32> {
    match command {
        UserCommand::Create(args) => user_create(args).await,
        UserCommand::List { client } => user_list(&client).await,
        UserCommand::Set(args) => user_set(args).await,
        UserCommand::Delete { name, client } => user_delete(&client, &name).await,
    }
}

/// A password from standard input when `wanted` (`--password-stdin` of
/// `kiln user {command}`).
async fn read_password(wanted: bool, name: &str, command: &str) -> anyhow::Result<Option<String>> {
    if !wanted {
        return Ok(None);
    }
    let prompt = format!("password for user `{name}`");
    let password = read_secret_input(&prompt, "the password").await?;
    if password.is_empty() {
        bail!(
            "the password is empty: pass it on standard input, e.g. `kiln user {command} {name} --password-stdin < file`"
        );
    }
    Ok(Some(password))
}

async fn user_create(args: UserCreateArgs) -> anyhow::Result<i32> {
    let body = UserBody {
        password: read_password(args.password_stdin, &args.name, "create").await?,
        name: args.name,
        role: args.role,
    };
    let user = connect(&args.client)?.create_user(&body).await?;
    print_user(args.client.output, "created", &user)
}

async fn user_list(args: &ClientArgs) -> anyhow::Result<i32> {
    let users = connect(args)?.list_users().await?;
    if args.output == Output::Json {
        return print_json(&users);
    }
    let now = Utc::now();
    let rows = users
        .iter()
        .map(|user| {
            vec![
                user.name.clone(),
                user.role.clone(),
                state(user).into(),
                if user.has_password { "yes" } else { "no" }.into(),
                ago(user.created_at, now),
            ]
        })
        .collect();
    emit(&table(
        &["NAME", "ROLE", "STATE", "PASSWORD", "CREATED"],
        rows,
    ))?;
    Ok(EXIT_SUCCESS)
}

async fn user_set(args: UserSetArgs) -> anyhow::Result<i32> {
    let body = UserPatchBody {
        role: args.role,
        disabled: (args.disable || args.enable).then_some(args.disable),
        password: read_password(args.password_stdin, &args.name, "set").await?,
    };
    let user = connect(&args.client)?
        .update_user(&args.name, &body)
        .await?;
    print_user(args.client.output, "updated", &user)
}

/// The user as a change left them (``updated user `ada`: user, enabled, no
/// password``), or the JSON.
fn print_user(output: Output, done: &str, user: &User) -> anyhow::Result<i32> {
    if output == Output::Json {
        return print_json(user);
    }
    let password = if user.has_password {
        "with a password"
    } else {
        "no password"
    };
    emit(&format!(
        "{done} user `{}`: {}, {}, {password}\n",
        user.name,
        user.role,
        state(user)
    ))?;
    Ok(EXIT_SUCCESS)
}

async fn user_delete(args: &ClientArgs, name: &str) -> anyhow::Result<i32> {
    connect(args)?.delete_user(name).await?;
    print_done(args.output, &format!("deleted user `{name}`"))
}

fn state(user: &User) -> &'static str {
    if user.disabled { "disabled" } else { "enabled" }
}
