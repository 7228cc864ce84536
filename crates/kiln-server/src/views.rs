//! Conversions from store rows to the API's shapes.

use kiln_store::{Job, RunDetail, StepRow, TaskRow};

pub fn job(job: &Job) -> kiln_api::Job {
    kiln_api::Job {
        name: job.spec.name.clone(),
        kind: match job.spec.kind {
            kiln_store::JobKind::Git => "git".into(),
            kiln_store::JobKind::Freestyle => "freestyle".into(),
        },
        repository: job.spec.repository.clone(),
        pipeline_path: job.spec.pipeline_path.clone(),
        default_branch: job.spec.default_branch.clone(),
        pipeline: job.spec.pipeline.clone(),
        visibility: job.spec.visibility.to_string(),
        created_at: job.created_at,
        updated_at: job.updated_at,
        change: None,
    }
}

pub fn run(run: &kiln_store::Run) -> kiln_api::Run {
    kiln_api::Run {
        job: run.job.clone(),
        number: run.number,
        status: run.status.to_string(),
        branch: run.branch.clone(),
        sha: run.sha.clone(),
        event: run.event.to_string(),
        error: run.error.clone(),
        created_at: run.created_at,
        started_at: run.started_at,
        finished_at: run.finished_at,
        tasks: None,
    }
}

pub fn run_detail(detail: &RunDetail) -> kiln_api::Run {
    let mut view = run(&detail.run);
    view.tasks = Some(detail.tasks.iter().map(task).collect());
    view
}

pub fn task(task: &TaskRow) -> kiln_api::Task {
    kiln_api::Task {
        name: task.name.clone(),
        status: task.status.to_string(),
        reason: task.reason.clone(),
        agent: task.agent.clone(),
        attempt: task.attempt,
        started_at: task.started_at,
        finished_at: task.finished_at,
        steps: task.steps.iter().map(step).collect(),
    }
}

fn step(step: &StepRow) -> kiln_api::Step {
    kiln_api::Step {
        name: step.name.clone(),
        status: step.status.to_string(),
        exit_code: step.exit_code,
        started_at: step.started_at,
        finished_at: step.finished_at,
    }
}
