//! Live output of `kiln run`: each line prefixed by its task, in colour on a
//! terminal, and a copy of each task's output in its `console.log`.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_exec::{LogStream, StepResult, TaskEvents};
use kiln_pipeline::{Status, Task};

use crate::local::{RunObserver, TaskReport, task_dir_name};

const PALETTE: [&str; 6] = ["36", "35", "33", "32", "34", "96"];
/// A log line longer than this is shown in pieces rather than held back
/// (here and by `kiln logs --follow`).
pub(crate) const MAX_LINE: usize = 64 * 1024;

pub struct Console {
    color: bool,
    width: usize,
    colors: HashMap<String, &'static str>,
    run_dir: PathBuf,
    out: Arc<Mutex<std::io::Stdout>>,
    open: Mutex<HashMap<String, Arc<TaskConsole>>>,
}

impl Console {
    pub fn new(tasks: &[Task], run_dir: PathBuf, color: bool) -> Console {
        let width = tasks
            .iter()
            .map(|t| t.name.chars().count())
            .max()
            .unwrap_or(0)
            .min(40);
        let colors = tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), PALETTE[i % PALETTE.len()]))
            .collect();
        Console {
            color,
            width,
            colors,
            run_dir,
            out: Arc::new(Mutex::new(std::io::stdout())),
            open: Mutex::new(HashMap::new()),
        }
    }

    fn prefix(&self, name: &str) -> String {
        let padded = format!("{name:<width$}", width = self.width);
        match (self.color, self.colors.get(name)) {
            (true, Some(color)) => format!("\x1b[{color}m{padded} │\x1b[0m "),
            _ => format!("{padded} │ "),
        }
    }

    fn say(&self, name: &str, message: &str) {
        let line = if self.color {
            format!("{}\x1b[1m{message}\x1b[0m\n", self.prefix(name))
        } else {
            format!("{}{message}\n", self.prefix(name))
        };
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = out.write_all(line.as_bytes());
        let _ = out.flush();
    }
}

impl RunObserver for Console {
    fn task_events(&self, task: &Task, attempt: u32) -> Arc<dyn TaskEvents> {
        let dir = self.run_dir.join("tasks").join(task_dir_name(&task.name));
        let log = std::fs::create_dir_all(&dir)
            .and_then(|_| {
                File::options()
                    .create(true)
                    .append(true)
                    .open(dir.join("console.log"))
            })
            .ok();
        let console = Arc::new(TaskConsole {
            prefix: self.prefix(&task.name),
            color: self.color,
            out: self.out.clone(),
            state: Mutex::new(LineState {
                partial: Default::default(),
                log,
            }),
        });
        if attempt > 1 {
            console.log(
                LogStream::System,
                format!("--- attempt {attempt}\n").as_bytes(),
            );
        }
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(task.name.clone(), console.clone());
        console
    }

    fn task_started(&self, task: &Task, attempt: u32) {
        let total = task.retry + 1;
        if attempt == 1 {
            self.say(&task.name, "started");
        } else {
            self.say(
                &task.name,
                &format!("retrying (attempt {attempt} of {total})"),
            );
        }
    }

    fn task_finished(&self, task: &Task, report: &TaskReport) {
        if let Some(console) = self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&task.name)
        {
            console.flush();
        }
        let mut message = format!(
            "{} in {}",
            describe_status(report),
            format_duration(report.duration)
        );
        if let Some(reason) = &report.reason {
            message.push_str(&format!(": {reason}"));
        }
        self.say(&task.name, &message);
    }
}

/// `failure (allowed)` for a failure that does not fail the run.
pub fn describe_status(report: &TaskReport) -> String {
    if report.allow_failure && report.status == Status::Failure {
        "failure (allowed)".to_string()
    } else {
        report.status.to_string()
    }
}

/// `12.3s`, `4m05s`, `2h03m`: how long a run or task took, for people
/// (`kiln run` and the client commands alike).
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs < 60 {
        format!("{:.1}s", d.as_secs_f64())
    } else if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h{:02}m", secs / 3600, secs % 3600 / 60)
    }
}

struct TaskConsole {
    prefix: String,
    color: bool,
    out: Arc<Mutex<std::io::Stdout>>,
    state: Mutex<LineState>,
}

struct LineState {
    /// Unfinished last line of stdout, stderr and Kiln's own stream.
    partial: [Vec<u8>; 3],
    log: Option<File>,
}

impl TaskConsole {
    fn emit(&self, stream: LogStream, lines: &[u8]) {
        let mut text = Vec::with_capacity(lines.len() + 64);
        for line in lines.split_inclusive(|b| *b == b'\n') {
            text.extend_from_slice(self.prefix.as_bytes());
            let dim = self.color && stream == LogStream::System;
            if dim {
                text.extend_from_slice(b"\x1b[2m");
            }
            text.extend_from_slice(line.strip_suffix(b"\n").unwrap_or(line));
            if dim {
                text.extend_from_slice(b"\x1b[0m");
            }
            text.push(b'\n');
        }
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = out.write_all(&text);
        let _ = out.flush();
    }

    fn flush(&self) {
        let tails: Vec<(LogStream, Vec<u8>)> = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            LogStream::ALL
                .into_iter()
                .zip(state.partial.iter_mut())
                .map(|(s, p)| (s, std::mem::take(p)))
                .collect()
        };
        for (stream, tail) in tails {
            if !tail.is_empty() {
                self.emit(stream, &tail);
            }
        }
    }
}

impl TaskEvents for TaskConsole {
    fn log(&self, stream: LogStream, bytes: &[u8]) {
        let complete = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(log) = state.log.as_mut() {
                let _ = log.write_all(bytes);
            }
            let partial = &mut state.partial[stream.index()];
            partial.extend_from_slice(bytes);
            let cut = match partial.iter().rposition(|b| *b == b'\n') {
                Some(newline) => newline + 1,
                None if partial.len() > MAX_LINE => partial.len(),
                None => 0,
            };
            partial.drain(..cut).collect::<Vec<u8>>()
        };
        if !complete.is_empty() {
            self.emit(stream, &complete);
        }
    }

    fn step_finished(&self, _index: usize, result: &StepResult) {
        if result.status != Status::Success {
            // Make the failing step stand out from its output.
            self.flush();
        }
    }
}
