//! `kiln audit`: the audit log (admins), newest first — who changed what,
//! which object, when and from which address.

use kiln_api::AuditList;
use kiln_client::AuditFilter;

use super::output::{dash, emit, local_time, print_json, table};
use super::{ClientArgs, Output, connect};
use crate::run_command::EXIT_SUCCESS;

/// The most entries the server sends in one page.
const MAX_PAGE: u32 = 500;

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Only what this user did.
    #[arg(long, value_name = "USER")]
    pub actor: Option<String>,
    /// Only this action, e.g. `user.create`, `job.update`, `secret.put`.
    #[arg(long)]
    pub action: Option<String>,
    /// Only what was done to this object, e.g. `job/app`, `user/ada`.
    #[arg(long)]
    pub object: Option<String>,
    /// At most this many entries.
    #[arg(long, short = 'n', default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..), conflicts_with = "all")]
    pub limit: u32,
    /// Every matching entry, however many.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub(super) async fn audit(args: AuditArgs) -> anyhow::Result<i32> {
    let client = connect(&args.client)?;
    let filter = AuditFilter {
        actor: args.actor.clone(),
        action: args.action.clone(),
        object: args.object.clone(),
    };
    let mut entries = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let room = if args.all {
            MAX_PAGE
        } else {
            args.limit - entries.len() as u32
        };
        let page = client
            .audit(&filter, cursor.as_deref(), Some(room.min(MAX_PAGE)))
            .await?;
        let whole_page = page.entries.len() <= room as usize;
        entries.extend(page.entries.into_iter().take(room as usize));
        // A page cut short leaves no cursor that would resume exactly
        // after the last entry shown.
        cursor = if whole_page { page.next_cursor } else { None };
        if cursor.is_none() || (!args.all && entries.len() >= args.limit as usize) {
            break;
        }
    }
    if args.client.output == Output::Json {
        return print_json(&AuditList {
            entries,
            next_cursor: cursor,
        });
    }
    if entries.is_empty() {
        emit("no audit entries match\n")?;
        return Ok(EXIT_SUCCESS);
    }
    let rows = entries
        .iter()
        .map(|entry| {
            vec![
                local_time(entry.at),
                entry.actor.clone(),
                entry.action.clone(),
                entry.object.clone(),
                dash(entry.source.as_deref()),
                dash(entry.detail.as_deref()),
            ]
        })
        .collect();
    emit(&table(
        &["WHEN", "ACTOR", "ACTION", "OBJECT", "SOURCE", "DETAIL"],
        rows,
    ))?;
    if cursor.is_some() {
        eprintln!("(older entries not shown: raise --limit, or pass --all)");
    }
    Ok(EXIT_SUCCESS)
}
