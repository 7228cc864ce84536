//! Live output of `kiln run`: each line prefixed by its task, in colour on a
//! terminal, and a copy of each task's output in its `console.log`.
//!
//! `console.log` keeps the bytes the executor passed on, as a server would
//! store them. The terminal view cuts them into lines ([`TerminalLines`]);
//! everything Kiln itself prints there is masked with the run's secrets.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_exec::mask::Masker;
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
    /// The values of the run's secrets, for what Kiln prints of its own.
    masker: Masker,
    out: Arc<Mutex<std::io::Stdout>>,
    open: Mutex<HashMap<String, Arc<TaskConsole>>>,
}

impl Console {
    pub fn new(tasks: &[Task], run_dir: PathBuf, color: bool, masker: Masker) -> Console {
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
            masker,
            out: Arc::new(Mutex::new(std::io::stdout())),
            open: Mutex::new(HashMap::new()),
        }
    }

    fn prefix(&self, name: &str) -> String {
        let shown = self.masker.mask_str(name);
        let padded = format!("{shown:<width$}", width = self.width);
        match (self.color, self.colors.get(name)) {
            (true, Some(color)) => format!("\x1b[{color}m{padded} │\x1b[0m "),
            _ => format!("{padded} │ "),
        }
    }

    fn say(&self, name: &str, message: &str) {
        let message = self.masker.mask_str(message);
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
                lines: TerminalLines::default(),
                log,
            }),
        });
        if attempt > 1 {
            console.log(
                LogStream::System,
                kiln_store::queue::attempt_header(i64::from(attempt)).as_bytes(),
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
    lines: TerminalLines,
    log: Option<File>,
}

impl TaskConsole {
    fn emit(&self, lines: &[(LogStream, Vec<u8>)]) {
        if lines.is_empty() {
            return;
        }
        let mut text = Vec::with_capacity(lines.iter().map(|(_, l)| l.len() + 64).sum());
        for (stream, line) in lines {
            text.extend_from_slice(self.prefix.as_bytes());
            let dim = self.color && *stream == LogStream::System;
            if dim {
                text.extend_from_slice(b"\x1b[2m");
            }
            text.extend_from_slice(line);
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
        let mut lines = Vec::new();
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .lines
            .flush(&mut lines);
        self.emit(&lines);
    }
}

impl TaskEvents for TaskConsole {
    fn log(&self, stream: LogStream, bytes: &[u8]) {
        let mut lines = Vec::new();
        {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(log) = state.log.as_mut() {
                let _ = log.write_all(bytes);
            }
            state.lines.push(stream, bytes, &mut lines);
        }
        self.emit(&lines);
    }

    fn step_finished(&self, _index: usize, result: &StepResult) {
        if result.status != Status::Success {
            // Make the failing step stand out from its output.
            self.flush();
        }
    }
}

/// Cuts a task's log into the lines of the terminal view, each shown after
/// the task's prefix. A line ends at `\n`; at `\r` too, since a progress
/// bar redraws its line with one, which would send the cursor back over the
/// prefix (`\r\n` ends one line, not two); at a change of stream; or when
/// it reaches [`MAX_LINE`], so that a line never ending is still shown.
#[derive(Debug, Default)]
pub(crate) struct TerminalLines {
    partial: Vec<u8>,
    stream: Option<LogStream>,
    /// The last line ended at a `\r`, so a `\n` right after it ends none.
    after_cr: bool,
}

impl TerminalLines {
    /// Takes `bytes` of `stream`; appends the lines they complete to `out`.
    pub(crate) fn push(
        &mut self,
        stream: LogStream,
        bytes: &[u8],
        out: &mut Vec<(LogStream, Vec<u8>)>,
    ) {
        if self.stream != Some(stream) {
            self.flush(out);
            self.stream = Some(stream);
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            if self.after_cr && rest[0] == b'\n' {
                rest = &rest[1..];
            }
            self.after_cr = false;
            let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') else {
                self.partial.extend_from_slice(rest);
                if self.partial.len() >= MAX_LINE {
                    out.push((stream, std::mem::take(&mut self.partial)));
                }
                break;
            };
            self.partial.extend_from_slice(&rest[..end]);
            self.after_cr = rest[end] == b'\r';
            // A bare `\r` with nothing before it redraws nothing worth a line.
            if !(self.after_cr && self.partial.is_empty()) {
                out.push((stream, std::mem::take(&mut self.partial)));
            }
            rest = &rest[end + 1..];
        }
    }

    /// Appends the unfinished line, if any, to `out`.
    pub(crate) fn flush(&mut self, out: &mut Vec<(LogStream, Vec<u8>)>) {
        if let Some(stream) = self.stream
            && !self.partial.is_empty()
        {
            out.push((stream, std::mem::take(&mut self.partial)));
        }
        self.after_cr = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(pushes: &[(LogStream, &[u8])]) -> Vec<(LogStream, String)> {
        let mut cutter = TerminalLines::default();
        let mut out = Vec::new();
        for (stream, bytes) in pushes {
            cutter.push(*stream, bytes, &mut out);
        }
        cutter.flush(&mut out);
        out.into_iter()
            .map(|(s, l)| (s, String::from_utf8(l).unwrap()))
            .collect()
    }

    #[test]
    fn carriage_returns_end_terminal_lines() {
        use LogStream::{Output, System};
        let text = |list: &[&str]| -> Vec<(LogStream, String)> {
            list.iter().map(|l| (Output, l.to_string())).collect()
        };
        assert_eq!(
            lines(&[(Output, b"10%\r50%\r100%\ndone\n")]),
            text(&["10%", "50%", "100%", "done"])
        );
        // `\r\n` is one line end, even split between two writes.
        assert_eq!(
            lines(&[(Output, b"crlf\r"), (Output, b"\nnext\r\n")]),
            text(&["crlf", "next"])
        );
        assert_eq!(lines(&[(Output, b"a\n\nb")]), text(&["a", "", "b"]));
        assert_eq!(
            lines(&[(Output, b"half"), (System, b"--- step 2\n")]),
            [(Output, "half".into()), (System, "--- step 2".into())]
        );
    }
}
