//! Command-line arguments (DESIGN.md §3).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "kiln",
    version,
    about = "Kiln continuous integration",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the current repository's pipeline on this machine.
    Run(RunArgs),
    /// Check a pipeline file and report every problem with its location.
    Validate(ValidateArgs),
    /// Print the JSON Schema of the pipeline file, for editors.
    Schema,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExecutorKind {
    Docker,
    Process,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Tasks to run (a name, or a matrix task's base name for all its
    /// combinations), with everything they need. All tasks when none given.
    pub tasks: Vec<String>,
    /// Pipeline file; `.kiln.yml` at the repository's top by default.
    #[arg(long, short = 'f')]
    pub file: Option<PathBuf>,
    /// How tasks are run; `docker` when an engine answers, else `process`.
    #[arg(long, value_enum)]
    pub executor: Option<ExecutorKind>,
    /// A secret as NAME=VALUE, or NAME to take the value from the environment.
    #[arg(long = "secret", value_name = "NAME[=VALUE]")]
    pub secrets: Vec<String>,
    /// A file of NAME=VALUE lines with secrets.
    #[arg(long = "secret-file", value_name = "FILE")]
    pub secret_files: Vec<PathBuf>,
    /// An extra environment variable for every task, over the pipeline's own.
    #[arg(long = "env", value_name = "K=V", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,
    /// How many tasks may run at once; the number of CPUs by default.
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
    /// Disable colours (also with NO_COLOR set, or when not on a terminal).
    #[arg(long)]
    pub no_color: bool,
}

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Pipeline file; `.kiln.yml` at the repository's top by default.
    #[arg(long, short = 'f')]
    pub file: Option<PathBuf>,
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("expected K=V, found `{text}`")),
    }
}
