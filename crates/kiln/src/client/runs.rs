//! `kiln trigger`, `kiln runs`, `kiln cancel` and `kiln approve`, and following a run to
//! its end (`kiln trigger --follow`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kiln_api::{Run, Task, TriggerBody};
use kiln_client::Client;
use kiln_pipeline::Status;
use serde::Deserialize;

use super::output::{ago, dash, elapsed, emit, print_json, short_sha, table};
use super::{ClientArgs, Output, connect};
use crate::run_command::{EXIT_SUCCESS, EXIT_TASK_FAILED};

/// How often a followed run is polled for task status changes.
pub(super) const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How long a follower rides out an unreachable server (a restart) before
/// giving up.
const OUTAGE_GRACE: Duration = Duration::from_secs(60);
/// How long `kiln cancel` waits for the run's tasks to stop.
const CANCEL_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, clap::Args)]
pub struct TriggerArgs {
    /// The job to run.
    pub job: String,
    /// Branch to build; the job's default branch when neither this nor --sha.
    #[arg(long, conflicts_with = "sha")]
    pub branch: Option<String>,
    /// Commit to build.
    #[arg(long)]
    pub sha: Option<String>,
    /// Follow the run until it ends, showing task status changes; exit 0
    /// only if it succeeded.
    #[arg(long, short = 'f')]
    pub follow: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, clap::Args)]
pub struct RunsArgs {
    /// The job whose runs to list.
    pub job: String,
    /// Only runs with this status.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(kiln_api::STATUSES))]
    pub status: Option<String>,
    /// Only runs of this branch.
    #[arg(long)]
    pub branch: Option<String>,
    /// At most this many runs.
    #[arg(long, short = 'n', default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, clap::Args)]
pub struct CancelArgs {
    /// The job of the run.
    pub job: String,
    /// Run number.
    #[arg(value_parser = clap::value_parser!(i64).range(1..))]
    pub run: i64,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `kiln approve JOB N` names a run as `kiln cancel` does.
pub type ApproveArgs = CancelArgs;

/// Approves a blocked run (a pull request from a fork): its tasks are
/// queued and run as any others.
pub(super) async fn approve(args: ApproveArgs) -> anyhow::Result<i32> {
    let run = connect(&args.client)?
        .approve_run(&args.job, args.run)
        .await?;
    if args.client.output == Output::Json {
        return print_json(&run);
    }
    emit(&format!(
        "approved run #{} of {} (commit {}): {}\n",
        run.number,
        run.job,
        run.sha.as_deref().unwrap_or("none"),
        run.status
    ))?;
    Ok(EXIT_SUCCESS)
}

pub(super) async fn trigger(args: TriggerArgs) -> anyhow::Result<i32> {
    let client = connect(&args.client)?;
    let json = args.client.output == Output::Json;
    let body = TriggerBody {
        branch: args.branch.clone(),
        sha: args.sha.clone(),
    };
    let run = client.trigger(&args.job, &body).await?;
    if !args.follow {
        if json {
            return print_json(&run);
        }
        emit(&format!("{}\n", run_headline(&run)))?;
        return Ok(EXIT_SUCCESS);
    }
    // With JSON on stdout, the progress goes to stderr so stdout stays one document.
    let progress = Progress { to_stderr: json };
    progress.say(&run_headline(&run))?;
    let run = follow_run(&client, &args.job, run.number, &progress).await?;
    if json {
        print_json(&run)?;
    }
    Ok(if run.status == "success" {
        EXIT_SUCCESS
    } else {
        EXIT_TASK_FAILED
    })
}

fn run_headline(run: &Run) -> String {
    let mut text = format!("run #{} of {}: {}", run.number, run.job, run.status);
    let at = match (&run.branch, &run.sha) {
        (Some(branch), Some(sha)) => format!(" ({branch} at {})", short_sha(sha)),
        (Some(branch), None) => format!(" ({branch})"),
        (None, Some(sha)) => format!(" ({})", short_sha(sha)),
        (None, None) => String::new(),
    };
    text.push_str(&at);
    text
}

/// Where follow-mode progress lines go.
struct Progress {
    to_stderr: bool,
}

impl Progress {
    fn say(&self, line: &str) -> std::io::Result<()> {
        if self.to_stderr {
            eprintln!("{line}");
            Ok(())
        } else {
            emit(&format!("{line}\n"))
        }
    }
}

/// Polls the run until it ends, saying each task status change; returns the
/// final run.
async fn follow_run(
    client: &Client,
    job: &str,
    number: i64,
    progress: &Progress,
) -> anyhow::Result<Run> {
    let mut known: HashMap<String, String> = HashMap::new();
    let mut poller = Poller::default();
    loop {
        if let Some(run) = poller.get_run(client, job, number).await? {
            let tasks = run.tasks.as_deref().unwrap_or_default();
            let width = tasks
                .iter()
                .map(|t| t.name.chars().count())
                .max()
                .unwrap_or(0);
            for task in tasks {
                let line = match known.get(&task.name) {
                    None => Some(format!("{:<width$}  {}", task.name, task_state(task))),
                    Some(old) if *old != task.status => Some(format!(
                        "{:<width$}  {old} → {}",
                        task.name,
                        task_state(task)
                    )),
                    Some(_) => None,
                };
                if let Some(line) = line {
                    progress.say(&line)?;
                    known.insert(task.name.clone(), task.status.clone());
                }
            }
            if is_final(&run.status) {
                let mut summary = format!("run #{}: {}", run.number, run.status);
                if let Some(duration) = run_duration(&run, Utc::now()) {
                    summary.push_str(&format!(" in {duration}"));
                }
                progress.say(&summary)?;
                if let Some(error) = &run.error {
                    progress.say(&format!("  {error}"))?;
                }
                return Ok(run);
            }
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A task's status with what explains it: duration when it ended, attempt
/// when retried, reason when not a success.
pub(super) fn task_state(task: &Task) -> String {
    let mut text = task.status.clone();
    if task.attempt > 1 && !is_final(&task.status) {
        text.push_str(&format!(" (attempt {})", task.attempt));
    }
    if is_final(&task.status)
        && let (Some(start), Some(end)) = (task.started_at, task.finished_at)
    {
        text.push_str(&format!(" ({})", elapsed(start, end)));
    }
    if task.status != "success"
        && let Some(reason) = task.reason.as_deref().filter(|r| !r.is_empty())
    {
        text.push_str(&format!(": {reason}"));
    }
    text
}

/// Fetches a run for a follower, riding out short outages (a restarting
/// server) instead of abandoning a long watch.
#[derive(Default)]
pub(super) struct Poller {
    outage: Outage,
}

impl Poller {
    pub(super) async fn get_run(
        &mut self,
        client: &Client,
        job: &str,
        number: i64,
    ) -> Result<Option<Run>, kiln_client::Error> {
        match client.get_run(job, number).await {
            Ok(run) => {
                if self.outage.end() {
                    eprintln!("(the server answers again)");
                }
                Ok(Some(run))
            }
            Err(e) if e.is_transient() => {
                if !self.outage.ongoing() {
                    eprintln!(
                        "warning: {e}; retrying for up to {}s",
                        OUTAGE_GRACE.as_secs()
                    );
                }
                if self.outage.bearable() {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
            Err(e) => Err(e),
        }
    }
}

pub(super) async fn runs(args: RunsArgs) -> anyhow::Result<i32> {
    let client = connect(&args.client)?;
    let limit = args.limit as usize;
    let mut runs = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = client
            .list_runs(
                &args.job,
                args.status.as_deref(),
                args.branch.as_deref(),
                cursor.as_deref(),
            )
            .await?;
        let room = limit - runs.len();
        let whole_page = page.runs.len() <= room;
        runs.extend(page.runs.into_iter().take(room));
        cursor = if whole_page { page.next_cursor } else { None };
        // A page cut short by --limit leaves no cursor that would resume
        // exactly after the last run shown.
        if runs.len() >= limit || cursor.is_none() {
            break;
        }
    }
    if args.client.output == Output::Json {
        return print_json(&kiln_api::RunList {
            runs,
            next_cursor: cursor,
        });
    }
    if runs.is_empty() {
        emit(&format!("no runs of `{}` yet\n", args.job))?;
        return Ok(EXIT_SUCCESS);
    }
    let now = Utc::now();
    let rows = runs
        .iter()
        .map(|run| {
            vec![
                run.number.to_string(),
                run.status.clone(),
                dash(run.branch.as_deref()),
                run.sha.as_deref().map_or_else(|| "-".into(), short_sha),
                run.event.clone(),
                ago(run.created_at, now),
                run_duration(run, now).unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    emit(&table(
        &[
            "NUMBER", "STATUS", "BRANCH", "SHA", "EVENT", "CREATED", "DURATION",
        ],
        rows,
    ))?;
    Ok(EXIT_SUCCESS)
}

pub(super) async fn cancel(args: CancelArgs) -> anyhow::Result<i32> {
    let client = connect(&args.client)?;
    let mut run = client.cancel_run(&args.job, args.run).await?;
    // Queued tasks end at once; running ones when their agent has stopped
    // them, within about a second. Wait for that, so what is printed is
    // the outcome of the cancel rather than the state before it.
    let deadline = Instant::now() + CANCEL_WAIT;
    while !is_final(&run.status) && Instant::now() < deadline {
        tokio::time::sleep(POLL_INTERVAL / 2).await;
        run = client.get_run(&args.job, args.run).await?;
    }
    if args.client.output == Output::Json {
        return print_json(&run);
    }
    if is_final(&run.status) {
        emit(&format!("{}\n", run_headline(&run)))?;
    } else {
        let stopping = run
            .tasks
            .iter()
            .flatten()
            .filter(|task| !is_final(&task.status))
            .count();
        emit(&format!(
            "run #{} of {}: cancelling, {stopping} task(s) still stopping (`kiln runs {}` shows when they end)\n",
            run.number, run.job, run.job
        ))?;
    }
    Ok(EXIT_SUCCESS)
}

/// Since when the server has not answered a follower: it rides out a
/// restart for up to [`OUTAGE_GRACE`] rather than abandon a long watch.
#[derive(Default)]
pub(super) struct Outage {
    since: Option<Instant>,
}

impl Outage {
    /// Whether the last attempt failed.
    pub(super) fn ongoing(&self) -> bool {
        self.since.is_some()
    }

    /// Notes a failed attempt; whether to try again (the outage has not
    /// lasted longer than [`OUTAGE_GRACE`]).
    pub(super) fn bearable(&mut self) -> bool {
        self.since.get_or_insert_with(Instant::now).elapsed() <= OUTAGE_GRACE
    }

    /// Notes an answer; whether it ends an outage.
    pub(super) fn end(&mut self) -> bool {
        self.since.take().is_some()
    }
}

/// Whether a run or task with this status changes no more (DESIGN.md §1),
/// as [`Status::is_terminal`] decides; a status this client does not know
/// is not final.
pub(super) fn is_final(status: &str) -> bool {
    use serde::de::IntoDeserializer;
    let status: Result<Status, serde::de::value::Error> =
        Status::deserialize(status.into_deserializer());
    status.is_ok_and(Status::is_terminal)
}

/// How long a run took, or has been running; `None` before it started.
fn run_duration(run: &Run, now: DateTime<Utc>) -> Option<String> {
    let start = run.started_at?;
    Some(match run.finished_at {
        Some(end) => elapsed(start, end),
        None if is_final(&run.status) => return None,
        None => format!("{}…", elapsed(start, now)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_statuses_are_the_terminal_ones() {
        let fin: Vec<&str> = kiln_api::STATUSES
            .into_iter()
            .filter(|s| is_final(s))
            .collect();
        assert_eq!(
            fin,
            [
                "success",
                "failure",
                "cancelled",
                "timed_out",
                "skipped",
                "error"
            ]
        );
        assert!(!is_final("paused"));
    }
}
