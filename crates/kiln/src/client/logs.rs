//! `kiln logs JOB RUN [TASK] [--attempt N] [--follow]`: a run's console
//! logs, printed or followed as the tasks write them. A retried task's log
//! holds every attempt, each after the first opened by `--- attempt N`;
//! `--attempt` shows one.

use std::collections::HashSet;

use anyhow::Context;
use futures_util::StreamExt;
use kiln_api::{Run, Task};
use kiln_client::Client;

use super::output::{emit, emit_bytes, print_json};
use super::runs::{Outage, POLL_INTERVAL, Poller, is_final, task_state};
use super::{ClientArgs, EXIT_API_ERROR, Output, connect, is_broken_pipe};
use kiln_exec::LogStream;

use crate::console::TerminalLines;
use crate::run_command::EXIT_SUCCESS;

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The job of the run.
    pub job: String,
    /// Run number.
    #[arg(value_parser = clap::value_parser!(i64).range(1..))]
    pub run: i64,
    /// A task, or a matrix task's base name for all its combinations; every
    /// task of the run when omitted.
    pub task: Option<String>,
    /// Only this attempt of the task (from 1); every attempt, one after
    /// another, when omitted.
    #[arg(long, requires = "task", value_parser = clap::value_parser!(i64).range(1..))]
    pub attempt: Option<i64>,
    /// Keep printing as the tasks write, until the run ends.
    #[arg(long, short = 'f')]
    pub follow: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub(super) async fn logs(args: LogsArgs) -> anyhow::Result<i32> {
    let client = connect(&args.client)?;
    let json = args.client.output == Output::Json;
    let run = client.get_run(&args.job, args.run).await?;
    let all: Vec<Task> = run.tasks.clone().unwrap_or_default();
    let selected: Vec<Task> = match &args.task {
        None => all.clone(),
        Some(name) => {
            let exact: Vec<Task> = all.iter().filter(|t| t.name == *name).cloned().collect();
            if exact.is_empty() {
                let prefix = format!("{name}[");
                all.iter()
                    .filter(|t| t.name.starts_with(&prefix))
                    .cloned()
                    .collect()
            } else {
                exact
            }
        }
    };
    if selected.is_empty() {
        let names: Vec<&str> = all.iter().map(|t| t.name.as_str()).collect();
        match &args.task {
            Some(task) => eprintln!(
                "error: run #{} of {} has no task `{task}`; its tasks: {}",
                run.number,
                run.job,
                if names.is_empty() {
                    "(none yet)".to_string()
                } else {
                    names.join(", ")
                }
            ),
            None => eprintln!("run #{} of {} has no tasks yet", run.number, run.job),
        }
        return Ok(if args.task.is_some() {
            EXIT_API_ERROR
        } else {
            EXIT_SUCCESS
        });
    }
    // One task named by the user: its log as it is, no headers or prefixes.
    let raw = args.task.is_some() && selected.len() == 1 && !json;
    if args.follow {
        follow_logs(&client, &args.job, &run, selected, args.attempt, raw, json).await?;
    } else {
        print_logs(
            &client,
            &args.job,
            run.number,
            &selected,
            args.attempt,
            raw,
            json,
        )
        .await?;
    }
    Ok(EXIT_SUCCESS)
}

/// Whether a task has (or will soon have) a console log.
fn has_started(task: &Task) -> bool {
    task.started_at.is_some() || task.status == "running"
}

async fn print_logs(
    client: &Client,
    job: &str,
    number: i64,
    tasks: &[Task],
    attempt: Option<i64>,
    raw: bool,
    json: bool,
) -> anyhow::Result<()> {
    let mut documents = Vec::new();
    for (i, task) in tasks.iter().enumerate() {
        let log = if has_started(task) {
            match client.console(job, number, &task.name, attempt, None).await {
                Ok(log) => Some(log),
                Err(kiln_client::Error::Api { status: 404, .. }) => None,
                Err(e) => return Err(e.into()),
            }
        } else {
            None
        };
        if json {
            documents.push(serde_json::json!({
                "task": task.name,
                "status": task.status,
                "log": log.as_deref().map(String::from_utf8_lossy),
            }));
            continue;
        }
        if raw {
            emit_bytes(log.as_deref().unwrap_or_default())?;
            continue;
        }
        let mut text = String::new();
        if i > 0 {
            text.push('\n');
        }
        text.push_str(&format!("==> {}: {} <==\n", task.name, task_state(task)));
        emit(&text)?;
        match log {
            Some(log) if !log.is_empty() => {
                emit_bytes(&log)?;
                if !log.ends_with(b"\n") {
                    emit("\n")?;
                }
            }
            _ => emit("(no output)\n")?,
        }
    }
    if json {
        print_json(&documents)?;
    }
    Ok(())
}

/// Follows the logs of `tasks` until the run ends: each task's stream from
/// the time it starts, lines prefixed by the task name unless `raw`.
async fn follow_logs(
    client: &Client,
    job: &str,
    run: &Run,
    tasks: Vec<Task>,
    attempt: Option<i64>,
    raw: bool,
    json: bool,
) -> anyhow::Result<()> {
    let wanted: HashSet<String> = tasks.iter().map(|t| t.name.clone()).collect();
    let width = wanted.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    let mut following: HashSet<String> = HashSet::new();
    let mut followers = tokio::task::JoinSet::new();
    let mut poller = Poller::default();
    let mut current = Some(run.clone());
    loop {
        if let Some(run) = current.take() {
            for task in run.tasks.as_deref().unwrap_or_default() {
                if !wanted.contains(&task.name)
                    || !has_started(task)
                    || !following.insert(task.name.clone())
                {
                    continue;
                }
                let sink = LineSink::new(&task.name, width, raw, json);
                let client = client.clone();
                let (job, number, name) = (job.to_string(), run.number, task.name.clone());
                followers.spawn(async move {
                    let result = follow_task(&client, &job, number, &name, attempt, sink).await;
                    (name, result)
                });
            }
            if is_final(&run.status) || following.len() == wanted.len() {
                break;
            }
        }
        tokio::time::sleep(POLL_INTERVAL).await;
        current = poller.get_run(client, job, run.number).await?;
    }
    while let Some(joined) = followers.join_next().await {
        let (name, result) = joined.context("a log follower stopped unexpectedly")?;
        if let Err(e) = result {
            if is_broken_pipe(&e) {
                return Err(e);
            }
            eprintln!("warning: the log of `{name}` was cut short: {e:#}");
        }
    }
    Ok(())
}

/// Streams one task's log into `sink` until the server closes it; picks up
/// where it was after a dropped connection.
async fn follow_task(
    client: &Client,
    job: &str,
    number: i64,
    task: &str,
    attempt: Option<i64>,
    mut sink: LineSink,
) -> anyhow::Result<()> {
    let mut received: u64 = 0;
    let mut outage = Outage::default();
    'connect: loop {
        let stream = match client.follow_console(job, number, task, attempt).await {
            Ok(stream) => stream,
            // A task that ended without writing anything has no log.
            Err(kiln_client::Error::Api { status: 404, .. }) => break,
            Err(e) if e.is_transient() => {
                if !outage.bearable() {
                    return Err(e.into());
                }
                tokio::time::sleep(POLL_INTERVAL).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        // A new stream starts at the beginning of the log: skip what was shown.
        let mut skip = received;
        let mut stream = stream;
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) if e.is_transient() => {
                    if !outage.bearable() {
                        return Err(e.into());
                    }
                    continue 'connect;
                }
                Err(e) => return Err(e.into()),
            };
            outage.end();
            let start = usize::try_from(skip).unwrap_or(usize::MAX).min(chunk.len());
            skip -= start as u64;
            received += (chunk.len() - start) as u64;
            sink.write(&chunk[start..])?;
        }
        break;
    }
    sink.finish()?;
    Ok(())
}

/// Turns a task's log bytes into output: passed through as they come when
/// `raw`, else cut into lines, each written whole with the task's prefix
/// (or as a JSON object) so that tasks followed together never interleave
/// within a line.
struct LineSink {
    prefix: String,
    task: String,
    raw: bool,
    json: bool,
    lines: TerminalLines,
}

impl LineSink {
    fn new(task: &str, width: usize, raw: bool, json: bool) -> LineSink {
        LineSink {
            prefix: format!("{task:<width$} │ "),
            task: task.to_string(),
            raw,
            json,
            lines: TerminalLines::default(),
        }
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.raw {
            return emit_bytes(bytes);
        }
        let out = self.feed(bytes);
        emit_bytes(&out)
    }

    fn finish(&mut self) -> std::io::Result<()> {
        let out = self.flush();
        emit_bytes(&out)
    }

    /// The output for the lines `bytes` complete, cut as `kiln run` cuts
    /// its terminal view (at `\n`, at a progress bar's `\r`).
    fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut lines = Vec::new();
        self.lines.push(LogStream::Output, bytes, &mut lines);
        self.format(lines)
    }

    /// The output for an unfinished last line, at the end of the log.
    fn flush(&mut self) -> Vec<u8> {
        let mut lines = Vec::new();
        self.lines.flush(&mut lines);
        self.format(lines)
    }

    fn format(&self, lines: Vec<(LogStream, Vec<u8>)>) -> Vec<u8> {
        let mut out = Vec::new();
        for (_, line) in lines {
            self.format_line(&line, &mut out);
        }
        out
    }

    fn format_line(&self, line: &[u8], out: &mut Vec<u8>) {
        if self.json {
            let object = serde_json::json!({
                "task": self.task,
                "line": String::from_utf8_lossy(line),
            });
            out.extend_from_slice(object.to_string().as_bytes());
        } else {
            out.extend_from_slice(self.prefix.as_bytes());
            out.extend_from_slice(line);
        }
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_sink_prefixes_whole_lines() {
        let mut sink = LineSink::new("t", 3, false, false);
        assert_eq!(sink.feed(b"one\r\ntw"), "t   │ one\n".as_bytes());
        assert_eq!(sink.feed(b"o\nthr"), "t   │ two\n".as_bytes());
        assert_eq!(sink.flush(), "t   │ thr\n".as_bytes());
        assert!(sink.flush().is_empty());
        // A progress bar's `\r` ends a line: the prefix is never overwritten.
        assert_eq!(
            sink.feed(b"10%\r50%\r100%\n"),
            "t   │ 10%\nt   │ 50%\nt   │ 100%\n".as_bytes()
        );

        let mut sink = LineSink::new("t[x=1]", 0, false, true);
        assert_eq!(
            String::from_utf8(sink.feed(b"hi\n")).unwrap(),
            "{\"line\":\"hi\",\"task\":\"t[x=1]\"}\n"
        );
    }
}
