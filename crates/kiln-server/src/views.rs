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
        forge: job.spec.forge.clone(),
        fork_prs: job.spec.fork_prs.to_string(),
        poll_interval: job
            .spec
            .poll_interval
            .map(kiln_api::fields::PollInterval::show),
        poll_error: None,
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
        trigger: kiln_api::TriggeredBy {
            kind: run.trigger.kind.to_string(),
            user: run.trigger.user.clone(),
        },
        pull_request: run.pull_request.as_ref().map(|pr| kiln_api::PullRequest {
            number: pr.number,
            title: pr.title.clone(),
            author: pr.author.clone(),
            head_branch: pr.head_branch.clone(),
            base_branch: pr.base_branch.clone(),
            from_fork: pr.from_fork,
        }),
        tag: run.tag.clone(),
        tasks: None,
        statuses: None,
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

pub fn user(user: &kiln_store::User) -> kiln_api::User {
    kiln_api::User {
        name: user.name.clone(),
        role: user.role.to_string(),
        disabled: user.disabled,
        has_password: user.has_password,
        created_at: user.created_at,
    }
}

pub fn token(token: &kiln_store::UserToken) -> kiln_api::Token {
    kiln_api::Token {
        id: token.id.0,
        name: token.name.clone(),
        user: token.user.clone(),
        created_at: token.created_at,
        expires_at: token.expires_at,
        last_used_at: token.last_used_at,
        revoked_at: token.revoked_at,
    }
}

pub fn member(member: &kiln_store::Member) -> kiln_api::Member {
    kiln_api::Member {
        user: member.user.clone(),
        role: member.role.to_string(),
        updated_at: member.updated_at,
    }
}

pub fn audit_entry(entry: &kiln_store::AuditEntry) -> kiln_api::AuditEntry {
    kiln_api::AuditEntry {
        id: entry.id.0,
        at: entry.at,
        actor: entry.actor.clone(),
        action: entry.action.clone(),
        object: entry.object.clone(),
        detail: entry.detail.clone(),
        source: entry.source.clone(),
    }
}

/// A forge without its token and secret: only whether they are set.
pub fn forge(forge: &kiln_store::Forge) -> kiln_api::Forge {
    kiln_api::Forge {
        name: forge.name.clone(),
        kind: forge.kind.clone(),
        api_url: forge.api_url.clone(),
        has_token: forge.token.is_some(),
        has_webhook_secret: forge.webhook_secret.is_some(),
        created_at: forge.created_at,
        updated_at: forge.updated_at,
        change: None,
    }
}
