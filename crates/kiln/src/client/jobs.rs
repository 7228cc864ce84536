//! `kiln job list|show|create|delete`.

use std::path::PathBuf;

use chrono::Utc;
use clap::{ArgGroup, Subcommand};
use kiln_api::{Job, JobBody};

use super::apply::read_jobs_text;
use super::output::{ago, dash, emit, local_time, print_json, table};
use super::{ClientArgs, Output, connect};
use crate::run_command::{EXIT_INVALID, EXIT_SUCCESS};

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// List the jobs.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one job.
    Show {
        /// The job's name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Create a git job (`--repository`) or a freestyle one (`--pipeline-file`).
    Create(JobCreateArgs),
    /// Delete a job with its runs, logs and secrets.
    Delete {
        /// The job's name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, clap::Args)]
#[command(group(ArgGroup::new("source").required(true).args(["repository", "pipeline_file"])))]
pub struct JobCreateArgs {
    /// The new job's name (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// Git URL of the repository whose pipeline the job runs.
    #[arg(long, value_name = "URL")]
    pub repository: Option<String>,
    /// Path of the pipeline file in the repository [default: .kiln.yml].
    #[arg(long, value_name = "PATH", requires = "repository")]
    pub pipeline_path: Option<String>,
    /// Branch built when a trigger names none [default: main].
    #[arg(long, value_name = "BRANCH", requires = "repository")]
    pub default_branch: Option<String>,
    /// A local pipeline file to store on the server: a freestyle job.
    #[arg(long, value_name = "FILE")]
    pub pipeline_file: Option<PathBuf>,
    /// Let anyone, signed in or not, read its runs, logs and results
    /// (private jobs are seen by their members only).
    #[arg(long)]
    pub public: bool,
    /// The forge whose webhooks trigger the job (see `kiln forge set`).
    #[arg(long, value_name = "FORGE", requires = "repository")]
    pub forge: Option<String>,
    /// What a pull request from a fork does: `approve` (the default),
    /// `run` or `ignore`.
    #[arg(long, value_name = "WHAT", requires = "repository")]
    pub fork_prs: Option<String>,
    /// Poll the repository this often (e.g. `60s`, at least `10s`) for new
    /// branch heads and tags: for a repository no webhook can reach.
    #[arg(long, value_name = "INTERVAL", requires = "repository")]
    pub poll_interval: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub(super) async fn run(command: JobCommand) -> anyhow::Result<i32> {
    match command {
        JobCommand::List { client } => job_list(&client).await,
        JobCommand::Show { name, client } => job_show(&client, &name).await,
        JobCommand::Create(args) => job_create(args).await,
        JobCommand::Delete { name, client } => job_delete(&client, &name).await,
    }
}

async fn job_list(args: &ClientArgs) -> anyhow::Result<i32> {
    let jobs = connect(args)?.list_jobs().await?;
    if args.output == Output::Json {
        return print_json(&jobs);
    }
    if jobs.is_empty() {
        emit("no jobs yet: create one with `kiln job create` or `kiln apply`\n")?;
        return Ok(EXIT_SUCCESS);
    }
    let now = Utc::now();
    let rows = jobs
        .iter()
        .map(|job| {
            vec![
                job.name.clone(),
                job.kind.clone(),
                job_source(job),
                dash(job.default_branch.as_deref()),
                ago(job.updated_at, now),
            ]
        })
        .collect();
    emit(&table(
        &["NAME", "KIND", "SOURCE", "BRANCH", "UPDATED"],
        rows,
    ))?;
    Ok(EXIT_SUCCESS)
}

fn job_source(job: &Job) -> String {
    match (&job.repository, job.kind.as_str()) {
        (Some(repository), _) => match job.pipeline_path.as_deref() {
            Some(path) if path != ".kiln.yml" => format!("{repository} ({path})"),
            _ => repository.clone(),
        },
        (None, "freestyle") => "(pipeline stored on the server)".into(),
        (None, _) => "-".into(),
    }
}

async fn job_show(args: &ClientArgs, name: &str) -> anyhow::Result<i32> {
    let job = connect(args)?.get_job(name).await?;
    if args.output == Output::Json {
        return print_json(&job);
    }
    let mut text = String::new();
    let mut field = |key: &str, value: &str| text.push_str(&format!("{key:<16}{value}\n"));
    field("name:", &job.name);
    field("kind:", &job.kind);
    if let Some(repository) = &job.repository {
        field("repository:", repository);
    }
    if let Some(path) = &job.pipeline_path {
        field("pipeline path:", path);
    }
    if let Some(branch) = &job.default_branch {
        field("default branch:", branch);
    }
    field("visibility:", &job.visibility);
    if let Some(forge) = &job.forge {
        field("forge:", forge);
        field("fork PRs:", &job.fork_prs);
    }
    if let Some(interval) = &job.poll_interval {
        field("polled every:", interval);
    }
    if let Some(error) = &job.poll_error {
        field("last poll:", error);
    }
    field("created:", &local_time(job.created_at));
    field("updated:", &local_time(job.updated_at));
    if let Some(pipeline) = &job.pipeline {
        text.push_str("pipeline:\n");
        for line in pipeline.lines() {
            text.push_str(&format!("  {line}\n"));
        }
    }
    emit(&text)?;
    Ok(EXIT_SUCCESS)
}

async fn job_create(args: JobCreateArgs) -> anyhow::Result<i32> {
    let name = Some(args.name.clone());
    let mut body = match &args.pipeline_file {
        Some(path) => freestyle_body(name, read_jobs_text(path)?),
        None => git_body(
            name,
            args.repository.clone(),
            args.pipeline_path.clone(),
            args.default_branch.clone(),
        ),
    };
    if args.public {
        body.visibility = Some("public".into());
    }
    body.forge = args.forge.clone();
    body.fork_prs = args.fork_prs.clone();
    body.poll_interval = args.poll_interval.clone();
    if let (Some(path), Some(pipeline)) = (&args.pipeline_file, &body.pipeline)
        && let Err(diagnostics) = kiln_pipeline::parse(&path.display().to_string(), pipeline)
    {
        for diagnostic in &diagnostics.0 {
            eprintln!("error: {diagnostic}");
        }
        return Ok(EXIT_INVALID);
    }
    let job = connect(&args.client)?.create_job(&body).await?;
    if args.client.output == Output::Json {
        return print_json(&job);
    }
    emit(&format!("created {} job `{}`\n", job.kind, job.name))?;
    Ok(EXIT_SUCCESS)
}

/// A git job: its pipeline is read from the repository at each run. `name`
/// is left out where the URL names the job (`PUT /jobs/{job}`).
pub(super) fn git_body(
    name: Option<String>,
    repository: Option<String>,
    pipeline_path: Option<String>,
    default_branch: Option<String>,
) -> JobBody {
    JobBody {
        name,
        kind: "git".into(),
        repository,
        pipeline_path,
        default_branch,
        pipeline: None,
        visibility: None,
        forge: None,
        fork_prs: None,
        poll_interval: None,
    }
}

/// A freestyle job: its pipeline is stored on the server, with no repository.
pub(super) fn freestyle_body(name: Option<String>, pipeline: String) -> JobBody {
    JobBody {
        name,
        kind: "freestyle".into(),
        repository: None,
        pipeline_path: None,
        default_branch: None,
        pipeline: Some(pipeline),
        visibility: None,
        forge: None,
        fork_prs: None,
        poll_interval: None,
    }
}

async fn job_delete(args: &ClientArgs, name: &str) -> anyhow::Result<i32> {
    connect(args)?.delete_job(name).await?;
    // DELETE answers with no body, so there is no JSON to print.
    if args.output == Output::Table {
        emit(&format!("deleted job `{name}`\n"))?;
    }
    Ok(EXIT_SUCCESS)
}
