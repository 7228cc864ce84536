//! `/` (recent runs), `/jobs/{job}/runs/{n}` (a run: graph, tasks), and
//! the cancel and rerun forms. The two pages are live: they name the
//! change feed's newest change when they were read, which `live.js`
//! follows from.

use axum::Form;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use kiln_store::{Database, LatestRuns, MemberRole, RunDetail, RunId, RunScope};
use serde::Deserialize;

use super::Visitor;
use super::jobs::job_and_power;
use crate::access;
use crate::auth::Identity;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::views;

/// Runs the dashboard shows at a time.
const DASHBOARD_RUNS: i64 = 50;

/// `?before=` of the dashboard: the id of the last run of the page before.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DashboardQuery {
    before: String,
}

/// The runs `identity` may read: all for an admin, else public jobs' and
/// those of the jobs it is a member of.
fn scope(identity: Option<&Identity>) -> RunScope {
    match identity {
        Some(identity) if identity.admin => RunScope::All,
        Some(identity) => RunScope::Readable {
            user: identity.user,
        },
        None => RunScope::Readable { user: None },
    }
}

/// `GET /`: the latest runs of every job the visitor may read, newest
/// first, in one query whatever the number of jobs.
pub async fn dashboard<D: Database>(
    visitor: Visitor,
    State(state): State<AppState<D>>,
    query: Result<Query<DashboardQuery>, QueryRejection>,
) -> Response {
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let before = query.before.parse::<i64>().ok().map(RunId);
    // Read before the runs: a change made meanwhile is sent to the page.
    let events_after = state.events.latest();
    let page = LatestRuns {
        before,
        limit: DASHBOARD_RUNS,
    };
    let runs = match state
        .db
        .latest_runs(scope(visitor.identity.as_ref()), page)
        .await
    {
        Ok(runs) => runs,
        Err(e) => return visitor.refuse(e.into()),
    };
    let older = (runs.len() as i64 == DASHBOARD_RUNS)
        .then(|| runs.last().map(|r| r.id.0))
        .flatten();
    let page = kiln_ui::pages::Dashboard {
        runs: runs.iter().map(views::run).collect(),
        paged: before.is_some(),
        older,
        events_after,
    };
    visitor.page(
        StatusCode::OK,
        kiln_ui::pages::dashboard(&visitor.viewer, &page),
    )
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
            running_since: task.started_at.filter(|_| task.finished_at.is_none()),
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
    // Read before the run: a change made meanwhile is sent to the page.
    let events_after = state.events.latest();
    let found = async {
        let (job, power) = job_and_power(&state, visitor.identity.as_ref(), &name).await?;
        let detail = find(&state, &job, number).await?;
        let mut run = views::run_detail(&detail);
        if job.spec.forge.is_some() {
            run.statuses = Some(crate::statuses::shown(&state, detail.run.id).await?);
        }
        Ok::<_, ApiError>((power, detail, run))
    }
    .await;
    let (power, detail, run) = match found {
        Ok(found) => found,
        Err(e) => return visitor.refuse(e),
    };
    let page = kiln_ui::pages::RunPage {
        run,
        graph: graph(&detail, visitor.viewer.now),
        can_act: visitor.identity.is_some() && power >= MemberRole::Developer,
        can_approve: visitor.identity.is_some() && power >= MemberRole::Maintainer,
        events_after,
    };
    visitor.page(StatusCode::OK, kiln_ui::pages::run(&visitor.viewer, &page))
}

/// The cancel, approve and rerun forms.
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
    change_run(visitor, &state, &name, number, &form, Change::Cancel).await
}

/// `POST /jobs/{job}/runs/{n}/approve`: back to the run, queued.
pub async fn approve<D: Database>(
    visitor: Visitor,
    State(state): State<AppState<D>>,
    Path((name, number)): Path<(String, i64)>,
    Form(form): Form<ActionForm>,
) -> Response {
    change_run(visitor, &state, &name, number, &form, Change::Approve).await
}

/// What a button of the run page does to the run itself.
#[derive(Debug, Clone, Copy)]
enum Change {
    Cancel,
    Approve,
}

/// Cancels or approves run `number` of job `name` for the form's author,
/// through the function the API calls; back to the run.
async fn change_run<D: Database>(
    visitor: Visitor,
    state: &AppState<D>,
    name: &str,
    number: i64,
    form: &ActionForm,
    change: Change,
) -> Response {
    let caller = match visitor.form_author(&form.csrf) {
        Ok(caller) => caller,
        Err(refused) => return *refused,
    };
    let need = match change {
        Change::Cancel => MemberRole::Developer,
        Change::Approve => MemberRole::Maintainer,
    };
    let done = async {
        let job = access::job(state, Some(caller), name, need).await?;
        let run = find(state, &job, number).await?;
        match change {
            Change::Cancel => crate::api::runs::cancel_run(state, caller, &job, &run).await?,
            Change::Approve => crate::api::runs::approve_run(state, caller, &job, &run).await?,
        };
        Ok::<_, ApiError>(())
    }
    .await;
    match done {
        Ok(()) => Redirect::to(&kiln_ui::run_href(name, number)).into_response(),
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
