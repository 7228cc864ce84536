//! `/` (recent runs), `/jobs/{job}/runs/{n}` (a run: graph, tasks), and
//! the cancel and rerun forms.

use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use kiln_store::{Database, MemberRole, RunDetail, RunFilter};
use serde::Deserialize;

use super::Visitor;
use super::jobs::{job_and_power, readable};
use crate::access;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::views;

/// Runs the dashboard shows, and how many of each job's it looks at.
const DASHBOARD_RUNS: usize = 50;
const PER_JOB: i64 = 20;

/// `GET /`: the latest runs of every job the visitor may read, newest first.
pub async fn dashboard<D: Database>(
    visitor: Visitor,
    State(state): State<AppState<D>>,
) -> Response {
    let runs = async {
        let mut runs = Vec::new();
        for (job, _) in readable(&state, visitor.identity.as_ref()).await? {
            let filter = RunFilter {
                limit: PER_JOB,
                ..RunFilter::default()
            };
            runs.extend(state.db.list_runs(job.id, &filter).await?);
        }
        runs.sort_by_key(|run| std::cmp::Reverse(run.created_at));
        runs.truncate(DASHBOARD_RUNS);
        Ok::<_, ApiError>(runs)
    }
    .await;
    match runs {
        Ok(runs) => {
            let runs: Vec<kiln_api::Run> = runs.iter().map(views::run).collect();
            visitor.page(
                StatusCode::OK,
                kiln_ui::pages::dashboard(&visitor.viewer, &runs),
            )
        }
        Err(e) => visitor.refuse(e),
    }
}

async fn find<D: Database>(
    state: &AppState<D>,
    job: &kiln_store::Job,
    number: i64,
) -> ApiResult<RunDetail> {
    state.db.get_run(job.id, number).await?.ok_or_else(|| {
        ApiError::not_found(format!("run {number} of job `{}` not found", job.spec.name))
    })
}

/// The graph's boxes, one per task.
fn graph(detail: &RunDetail, now: chrono::DateTime<Utc>) -> Vec<kiln_ui::graph::Node> {
    detail
        .tasks
        .iter()
        .map(|task| kiln_ui::graph::Node {
            name: task.name.clone(),
            base: task.spec.base.clone(),
            needs: task.spec.needs.clone(),
            status: task.status.to_string(),
            duration: kiln_ui::time::elapsed(task.started_at, task.finished_at, now),
            href: kiln_ui::task_href(&detail.run.job, detail.run.number, &task.name),
        })
        .collect()
}

/// `GET /jobs/{job}/runs/{n}`.
pub async fn show<D: Database>(
    visitor: Visitor,
    State(state): State<AppState<D>>,
    Path((name, number)): Path<(String, i64)>,
) -> Response {
    let found = async {
        let (job, power) = job_and_power(&state, visitor.identity.as_ref(), &name).await?;
        let detail = find(&state, &job, number).await?;
        Ok::<_, ApiError>((power, detail))
    }
    .await;
    let (power, detail) = match found {
        Ok(found) => found,
        Err(e) => return visitor.refuse(e),
    };
    let page = kiln_ui::pages::RunPage {
        run: views::run_detail(&detail),
        graph: graph(&detail, visitor.viewer.now),
        can_act: visitor.identity.is_some() && power >= MemberRole::Developer,
    };
    visitor.page(StatusCode::OK, kiln_ui::pages::run(&visitor.viewer, &page))
}

/// The cancel and rerun forms.
#[derive(Debug, Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /jobs/{job}/runs/{n}/cancel`: back to the run.
pub async fn cancel<D: Database>(
    visitor: Visitor,
    State(state): State<AppState<D>>,
    Path((name, number)): Path<(String, i64)>,
    Form(form): Form<ActionForm>,
) -> Response {
    let caller = match visitor.form_author(&form.csrf) {
        Ok(caller) => caller,
        Err(refused) => return *refused,
    };
    let done = async {
        let job = access::job(&state, Some(caller), &name, MemberRole::Developer).await?;
        let run = find(&state, &job, number).await?;
        crate::api::runs::cancel_run(&state, caller, &job, &run).await?;
        Ok::<_, ApiError>(())
    }
    .await;
    match done {
        Ok(()) => Redirect::to(&kiln_ui::run_href(&name, number)).into_response(),
        Err(e) => visitor.refuse(e),
    }
}

/// `POST /jobs/{job}/runs/{n}/rerun`: on to the new run.
pub async fn rerun<D: Database>(
    visitor: Visitor,
    State(state): State<AppState<D>>,
    Path((name, number)): Path<(String, i64)>,
    Form(form): Form<ActionForm>,
) -> Response {
    let caller = match visitor.form_author(&form.csrf) {
        Ok(caller) => caller,
        Err(refused) => return *refused,
    };
    let done = async {
        let job = access::job(&state, Some(caller), &name, MemberRole::Developer).await?;
        let run = find(&state, &job, number).await?;
        crate::api::runs::rerun_run(&state, caller, &job, &run).await
    }
    .await;
    match done {
        Ok(detail) => {
            Redirect::to(&kiln_ui::run_href(&detail.run.job, detail.run.number)).into_response()
        }
        Err(e) => visitor.refuse(e),
    }
}
