//! `kiln member set|list|remove`: users' roles on a job (DESIGN.md §1).

use chrono::Utc;
use clap::Subcommand;

use super::output::{ago, emit, print_done, print_json, table};
use super::{ClientArgs, Output, connect};
use crate::run_command::EXIT_SUCCESS;

/// The roles on a job, each allowing what the one before does and more.
const ROLES: [&str; 3] = ["viewer", "developer", "maintainer"];

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// Give a user a role on a job, replacing any role they had (maintainers).
    Set {
        /// The job to give the role on.
        job: String,
        /// The user who gets the role.
        user: String,
        /// `viewer` (reads runs, logs, results), `developer` (+ triggers,
        /// cancels, reruns) or `maintainer` (+ edits the job, its secrets
        /// and members, deletes it).
        #[arg(value_parser = ROLES)]
        role: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the users with a role on a job.
    List {
        /// The job whose members to list.
        job: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Take a user's role on a job away (maintainers).
    Remove {
        /// The job to take the role away on.
        job: String,
        /// The user who loses their role.
        user: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub(super) async fn run(command: MemberCommand) -> anyhow::Result<i32> {
    match command {
        MemberCommand::Set {
            job,
            user,
            role,
            client,
        } => member_set(&client, &job, &user, &role).await,
        MemberCommand::List { job, client } => member_list(&client, &job).await,
        MemberCommand::Remove { job, user, client } => member_remove(&client, &job, &user).await,
    }
}

async fn member_set(args: &ClientArgs, job: &str, user: &str, role: &str) -> anyhow::Result<i32> {
    let member = connect(args)?.set_member(job, user, role).await?;
    if args.output == Output::Json {
        return print_json(&member);
    }
    emit(&format!(
        "`{}` is now {} of job `{job}`\n",
        member.user, member.role
    ))?;
    Ok(EXIT_SUCCESS)
}

async fn member_list(args: &ClientArgs, job: &str) -> anyhow::Result<i32> {
    let members = connect(args)?.list_members(job).await?;
    if args.output == Output::Json {
        return print_json(&members);
    }
    if members.is_empty() {
        emit(&format!(
            "job `{job}` has no members: add one with `kiln member set {job} USER ROLE`\n"
        ))?;
        return Ok(EXIT_SUCCESS);
    }
    let now = Utc::now();
    let rows = members
        .iter()
        .map(|m| vec![m.user.clone(), m.role.clone(), ago(m.updated_at, now)])
        .collect();
    emit(&table(&["USER", "ROLE", "SINCE"], rows))?;
    Ok(EXIT_SUCCESS)
}

async fn member_remove(args: &ClientArgs, job: &str, user: &str) -> anyhow::Result<i32> {
    connect(args)?.remove_member(job, user).await?;
    print_done(args.output, &format!("removed `{user}` from job `{job}`"))
}
