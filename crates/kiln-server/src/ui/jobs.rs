//! `/jobs`, `/jobs/{job}` (its runs, filters, paging, trigger button),
//! the trigger form's `POST /jobs/{job}/trigger`, and the badge.

use axum::Form;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use kiln_pipeline::Event;
use kiln_store::{Database, Job, MemberRole, RunFilter, Visibility};
use serde::Deserialize;

use super::Visitor;
use crate::access;
use crate::audit::{self, job_object};
use crate::auth::Identity;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::trigger::{Target, trigger as start_run};
use crate::views;

/// Runs a job page shows at a time.
const PAGE_SIZE: i64 = 25;

/// The jobs `identity` may read, with what it may do on each.
pub(super) async fn readable<D: Database>(
    state: &AppState<D>,
    identity: Option<&Identity>,
) -> ApiResult<Vec<(Job, MemberRole)>> {
    let jobs = state.db.list_jobs().await?;
    let roles = match identity.and_then(|i| i.user) {
        Some(user) => state.db.member_roles(user).await?,
        None => Vec::new(),
    };
    Ok(jobs
        .into_iter()
        .filter_map(|job| {
            let role = roles
                .iter()
                .find(|(id, _)| *id == job.id)
                .map(|(_, role)| *role);
            access::power(identity, job.spec.visibility, role).map(|power| (job, power))
        })
        .collect())
}

/// The job of that name and what `identity` may do on it; `404` when it
/// may not read it.
pub(super) async fn job_and_power<D: Database>(
    state: &AppState<D>,
    identity: Option<&Identity>,
    name: &str,
) -> ApiResult<(Job, MemberRole)> {
    let user = identity.and_then(|i| i.user);
    let (job, role) = state
        .db
        .job_and_role(name, user)
        .await?
        .ok_or_else(|| access::not_found(name))?;
    let power = access::power(identity, job.spec.visibility, role)
        .ok_or_else(|| access::not_found(name))?;
    Ok((job, power))
}

/// `GET /jobs`.
pub async fn list<D: Database>(visitor: Visitor, State(state): State<AppState<D>>) -> Response {
    let rows = async {
        let mut rows = Vec::new();
        for (job, _) in readable(&state, visitor.identity.as_ref()).await? {
            let filter = RunFilter {
                limit: 1,
                ..RunFilter::default()
            };
            let last = state.db.list_runs(job.id, &filter).await?;
            rows.push(kiln_ui::pages::JobRow {
                job: views::job(&job),
                last: last.first().map(views::run),
            });
        }
        Ok::<_, ApiError>(rows)
    }
    .await;
    match rows {
        Ok(rows) => visitor.page(StatusCode::OK, kiln_ui::pages::jobs(&visitor.viewer, &rows)),
        Err(e) => visitor.refuse(e),
    }
}

/// `?status=&branch=&before=` of a job page; empty means none.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RunsQuery {
    status: String,
    branch: String,
    before: String,
}

/// `GET /jobs/{job}`.
pub async fn show<D: Database>(
    visitor: Visitor,
    State(state): State<AppState<D>>,
    Path(name): Path<String>,
    query: Result<Query<RunsQuery>, QueryRejection>,
) -> Response {
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let (job, power) = match job_and_power(&state, visitor.identity.as_ref(), &name).await {
        Ok(found) => found,
        Err(e) => return visitor.refuse(e),
    };
    let status = query.status.parse::<kiln_pipeline::Status>().ok();
    let before = query.before.parse::<i64>().ok();
    // Read before the runs: a change made meanwhile is sent to the page.
    let events_after = state.events.latest();
    let filter = RunFilter {
        status,
        branch: Some(query.branch.clone()).filter(|b| !b.is_empty()),
        before,
        limit: PAGE_SIZE,
    };
    let runs = match state.db.list_runs(job.id, &filter).await {
        Ok(runs) => runs,
        Err(e) => return visitor.refuse(e.into()),
    };
    let older = (runs.len() as i64 == PAGE_SIZE)
        .then(|| runs.last().map(|r| r.number))
        .flatten();
    let page = kiln_ui::pages::JobPage {
        job: views::job(&job),
        runs: runs.iter().map(views::run).collect(),
        status: status.map(|s| s.to_string()),
        branch: query.branch,
        paged: before.is_some(),
        older,
        can_trigger: visitor.identity.is_some() && power >= MemberRole::Developer,
        events_after,
    };
    visitor.page(StatusCode::OK, kiln_ui::pages::job(&visitor.viewer, &page))
}

/// The trigger form.
#[derive(Debug, Deserialize)]
pub struct TriggerForm {
    #[serde(default)]
    csrf: String,
    /// The job's default branch when empty.
    #[serde(default)]
    branch: String,
}

/// `POST /jobs/{job}/trigger`: a run, then its page.
pub async fn trigger<D: Database>(
    visitor: Visitor,
    State(state): State<AppState<D>>,
    Path(name): Path<String>,
    Form(form): Form<TriggerForm>,
) -> Response {
    let caller = match visitor.form_author(&form.csrf) {
        Ok(caller) => caller,
        Err(refused) => return *refused,
    };
    let started = async {
        let job = access::job(&state, Some(caller), &name, MemberRole::Developer).await?;
        let branch = form.branch.trim();
        let target = if branch.is_empty() {
            Target::Branch(None)
        } else {
            let checked = kiln_api::fields::BranchName::new(branch)
                .map_err(|why| ApiError::unprocessable(format!("branch: {why}")))?;
            Target::Branch(Some(String::from(checked)))
        };
        let audit = audit::entry(caller, "run.trigger", job_object(&job.spec.name), None);
        let detail = start_run(&state, &job, target, Event::Manual, Some(audit)).await?;
        Ok::<_, ApiError>(detail)
    }
    .await;
    match started {
        Ok(detail) => {
            Redirect::to(&kiln_ui::run_href(&detail.run.job, detail.run.number)).into_response()
        }
        Err(e) => visitor.refuse(e),
    }
}

/// `?branch=` of a badge.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct BadgeQuery {
    branch: String,
}

/// `GET /jobs/{job}/badge.svg?branch=B`: the status of the latest run of
/// a public job on a branch (its default branch when none is given). A
/// private job has no badge, whoever asks: badges are for pages anyone
/// reads, and are fetched without cookies.
pub async fn badge<D: Database>(
    State(state): State<AppState<D>>,
    Path(name): Path<String>,
    query: Result<Query<BadgeQuery>, QueryRejection>,
) -> Response {
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let job = match state.db.get_job(&name).await {
        Ok(Some(job)) if job.spec.visibility == Visibility::Public => job,
        Ok(_) => return ApiError::not_found(format!("no public job `{name}`")).into_response(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let branch = Some(query.branch)
        .filter(|b| !b.is_empty())
        .or_else(|| job.spec.default_branch.clone());
    let filter = RunFilter {
        branch,
        limit: 1,
        ..RunFilter::default()
    };
    let runs = match state.db.list_runs(job.id, &filter).await {
        Ok(runs) => runs,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let status = runs.first().map(|run| run.status.to_string());
    let svg = kiln_ui::badge::badge("kiln", status.as_deref());
    let mut response = svg.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("image/svg+xml; charset=utf-8"),
    );
    // A README shows the status as it is now.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
