//! `/jobs/{job}/settings` (the job, its secrets' names, its members, and
//! their forms) and `/settings/tokens` (your API tokens).
//!
//! Each form goes through the API's own function for its change
//! (`crate::api::{jobs, secrets, members, users}`), which checks the
//! caller's role as the API does. A change that went through is answered
//! with a redirect back to the page and a `?done=` code (post, redirect,
//! get: a reload does not post again); one that was refused for what was
//! typed gets the page again with why, and what was typed — never a
//! secret's value or a password.

use axum::Form;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use kiln_api::fields::{
    BranchName, ExpiresIn, ForgeName, JobName, PipelinePath, RepositoryUrl, SecretName,
    SecretValue, TokenName, UserName,
};
use kiln_store::{ClosedSet, Database, MemberRole, Upserted, Visibility};
use kiln_ui::settings::{FormError, JobFields, JobSettings, Section, TokensPage, settings_href};
use serde::Deserialize;

use super::Visitor;
use super::jobs::job_and_power;
use crate::access;
use crate::api::bodies::{JobSource, NewUserToken};
use crate::api::{jobs, members, secrets, users};
use crate::auth::Identity;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::views;

/// `?done=`: which change went through, for the page to say so.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DoneQuery {
    done: String,
}

impl DoneQuery {
    pub fn done(&self) -> &str {
        &self.done
    }
}

fn done_of(query: Result<Query<DoneQuery>, QueryRejection>) -> Option<&'static str> {
    query
        .ok()
        .and_then(|Query(q)| kiln_ui::settings::notice(&q.done))
}

/// One of a closed set of names, as a form sends it.
pub(super) fn choose<T: ClosedSet>(field: &str, text: &str) -> ApiResult<T> {
    text.parse().map_err(|_| {
        let names: Vec<&str> = T::all().iter().map(|value| value.name()).collect();
        ApiError::unprocessable(format!(
            "{field}: `{text}` is not a {}; expected one of {}",
            T::WHAT,
            names.join(", ")
        ))
    })
}

/// A field's checked value, or a `422` that names the field.
pub(super) fn checked<T>(field: &str, value: Result<T, String>) -> ApiResult<T> {
    value.map_err(|why| ApiError::unprocessable(format!("{field}: {why}")))
}

/// Back to `href` saying `done`, at `section`.
pub(super) fn done(href: &str, done: &str, section: &str) -> Response {
    Redirect::to(&format!("{href}?done={done}#{section}")).into_response()
}

/// Whether a refusal is about what was typed (the form again, with why)
/// rather than about who asked (a page that says so).
pub(super) fn about_input(error: &ApiError) -> bool {
    matches!(
        error.status,
        StatusCode::UNPROCESSABLE_ENTITY | StatusCode::NOT_FOUND | StatusCode::CONFLICT
    )
}

/// What the settings page of job `name` shows `identity`.
async fn load<D: Database>(
    state: &AppState<D>,
    identity: &Identity,
    name: &str,
) -> ApiResult<JobSettings> {
    let (job, power) = job_and_power(state, Some(identity), name).await?;
    let secrets = if power >= MemberRole::Developer {
        Some(secrets::list_secrets(state, identity, name).await?)
    } else {
        None
    };
    let members = members::list_members(state, Some(identity), name).await?;
    let job = views::job(&job);
    Ok(JobSettings {
        fields: JobFields::of(&job),
        job,
        can_edit: power >= MemberRole::Maintainer,
        secrets,
        members,
        secret_name: String::new(),
        member_user: String::new(),
        member_role: String::new(),
        notice: None,
        error: None,
    })
}

/// `GET /jobs/{job}/settings`: for whoever signed in may read the job.
pub async fn show<D: Database>(
    visitor: Visitor,
    State(state): State<AppState<D>>,
    Path(name): Path<String>,
    query: Result<Query<DoneQuery>, QueryRejection>,
) -> Response {
    let Some(identity) = &visitor.identity else {
        return visitor.sign_in();
    };
    match load(&state, identity, &name).await {
        Ok(mut page) => {
            page.notice = done_of(query);
            visitor.page(
                StatusCode::OK,
                kiln_ui::settings::job_settings(&visitor.viewer, &page),
            )
        }
        Err(e) => visitor.refuse(e),
    }
}

/// The settings page again after `error`, with `typed` kept, when the
/// error is about the form and the visitor maintains the job; else a page
/// that says what was wrong.
async fn refused<D: Database>(
    visitor: &Visitor,
    state: &AppState<D>,
    caller: &Identity,
    name: &str,
    section: Section,
    error: ApiError,
    typed: impl FnOnce(&mut JobSettings),
) -> Response {
    if !about_input(&error) {
        return visitor.refuse(error);
    }
    let mut page = match load(state, caller, name).await {
        Ok(page) if page.can_edit => page,
        Ok(_) => return visitor.refuse(error),
        Err(e) => return visitor.refuse(e),
    };
    typed(&mut page);
    page.error = Some(FormError {
        section,
        message: error.detail,
        details: error.errors,
    });
    visitor.page(
        error.status,
        kiln_ui::settings::job_settings(&visitor.viewer, &page),
    )
}

/// The job form: what a job's kind takes (the kind stays).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct JobForm {
    csrf: String,
    repository: String,
    pipeline_path: String,
    default_branch: String,
    pipeline: String,
    visibility: String,
}

impl JobForm {
    fn fields(&self) -> JobFields {
        JobFields {
            repository: self.repository.clone(),
            pipeline_path: self.pipeline_path.clone(),
            default_branch: self.default_branch.clone(),
            pipeline: self.pipeline.clone(),
            visibility: self.visibility.clone(),
        }
    }

    /// The job's new source, of `job`'s kind; empty optional fields are
    /// left out (their defaults apply, as in the API). The page does not
    /// edit a job's forge settings: they stay as they are.
    fn source(&self, job: &kiln_store::Job) -> ApiResult<JobSource> {
        let optional = |text: &str| Some(text.trim().to_string()).filter(|t| !t.is_empty());
        let default_branch = optional(&self.default_branch)
            .map(|b| checked("default branch", BranchName::new(b)))
            .transpose()?;
        Ok(match job.spec.kind {
            kiln_store::JobKind::Git => JobSource::Git {
                repository: checked(
                    "repository",
                    RepositoryUrl::new(self.repository.trim().to_string()),
                )?,
                pipeline_path: optional(&self.pipeline_path)
                    .map(|p| checked("pipeline file", PipelinePath::new(p)))
                    .transpose()?,
                default_branch,
                forge: job
                    .spec
                    .forge
                    .clone()
                    .map(ForgeName::new)
                    .transpose()
                    .map_err(ApiError::internal)?,
                fork_prs: Some(job.spec.fork_prs),
                poll_interval: job.spec.poll_interval,
            },
            // Browsers send a textarea's lines ending in CR LF.
            kiln_store::JobKind::Freestyle => JobSource::Freestyle {
                pipeline: self.pipeline.replace("\r\n", "\n"),
                default_branch,
            },
        })
    }
}

/// `POST /jobs/{job}/settings`: the job changed, as the API's `PUT` does.
pub async fn update_job<D: Database>(
    visitor: Visitor,
    State(state): State<AppState<D>>,
    Path(name): Path<String>,
    Form(form): Form<JobForm>,
) -> Response {
    let caller = match visitor.form_author(&form.csrf) {
        Ok(caller) => caller,
        Err(refused) => return *refused,
    };
    let saved = async {
        // Only a job that is there, and that the caller maintains, is
        // changed here: the page never creates one.
        let job = access::job(&state, Some(caller), &name, MemberRole::Maintainer).await?;
        let job_name = JobName::new(job.spec.name.clone()).map_err(ApiError::internal)?;
        let source = form.source(&job)?;
        let visibility = choose::<Visibility>("visibility", &form.visibility)?;
        jobs::upsert_job(&state, caller, &job_name, source, Some(visibility)).await
    }
    .await;
    match saved {
        Ok((job, change)) => {
            let code = if change == Upserted::Unchanged {
                "job-unchanged"
            } else {
                "job-saved"
            };
            done(&settings_href(&job.spec.name), code, "job")
        }
        Err(e) => {
            let fields = form.fields();
            refused(&visitor, &state, caller, &name, Section::Job, e, |page| {
                page.fields = fields
            })
            .await
        }
    }
}

/// The secret form: a name, a value, and whether forks may have it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SecretForm {
    csrf: String,
    name: String,
    value: String,
    /// A checked checkbox sends `on`; an unchecked one, nothing.
    allow_forks: Option<String>,
}

/// `POST /jobs/{job}/settings/secrets`: a secret stored or replaced.
pub async fn put_secret<D: Database>(
    visitor: Visitor,
    State(state): State<AppState<D>>,
    Path(name): Path<String>,
    Form(form): Form<SecretForm>,
) -> Response {
    let caller = match visitor.form_author(&form.csrf) {
        Ok(caller) => caller,
        Err(refused) => return *refused,
    };
    let saved = async {
        let secret = checked("name", SecretName::new(form.name.trim().to_string()))?;
        let value = checked("value", SecretValue::new(form.value.clone()))?;
        let allow_forks = form.allow_forks.is_some();
        secrets::put_secret(&state, caller, &name, &secret, &value, allow_forks).await
    }
    .await;
    match saved {
        Ok(()) => done(&settings_href(&name), "secret-saved", "secrets"),
        Err(e) => {
            let typed = form.name.clone();
            refused(
                &visitor,
                &state,
                caller,
                &name,
                Section::Secrets,
                e,
                |page| page.secret_name = typed,
            )
            .await
        }
    }
}

/// The forms that only carry the form token.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TokenOnlyForm {
    pub(super) csrf: String,
}

/// `POST /jobs/{job}/settings/secrets/{name}/delete`.
pub async fn delete_secret<D: Database>(
    visitor: Visitor,
    State(state): State<AppState<D>>,
    Path((name, secret)): Path<(String, String)>,
    Form(form): Form<TokenOnlyForm>,
) -> Response {
    let caller = match visitor.form_author(&form.csrf) {
        Ok(caller) => caller,
        Err(refused) => return *refused,
    };
    match secrets::delete_secret(&state, caller, &name, &secret).await {
        Ok(()) => done(&settings_href(&name), "secret-deleted", "secrets"),
        Err(e) => refused(&visitor, &state, caller, &name, Section::Secrets, e, |_| {}).await,
    }
}

/// The member form: a user and a role (adds, or changes the role).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct MemberForm {
    csrf: String,
    user: String,
    role: String,
}

/// `POST /jobs/{job}/settings/members`: a member added, or its role changed.
pub async fn put_member<D: Database>(
    visitor: Visitor,
    State(state): State<AppState<D>>,
    Path(name): Path<String>,
    Form(form): Form<MemberForm>,
) -> Response {
    let caller = match visitor.form_author(&form.csrf) {
        Ok(caller) => caller,
        Err(refused) => return *refused,
    };
    let saved = async {
        let user = checked("user", UserName::new(form.user.trim().to_string()))?;
        let role = choose::<MemberRole>("role", &form.role)?;
        members::set_member(&state, caller, &name, &user, role).await
    }
    .await;
    match saved {
        Ok(_) => done(&settings_href(&name), "member-saved", "members"),
        Err(e) => {
            let (user, role) = (form.user.clone(), form.role.clone());
            refused(
                &visitor,
                &state,
                caller,
                &name,
                Section::Members,
                e,
                |page| {
                    page.member_user = user;
                    page.member_role = role;
                },
            )
            .await
        }
    }
}

/// `POST /jobs/{job}/settings/members/{user}/delete`.
pub async fn remove_member<D: Database>(
    visitor: Visitor,
    State(state): State<AppState<D>>,
    Path((name, user)): Path<(String, String)>,
    Form(form): Form<TokenOnlyForm>,
) -> Response {
    let caller = match visitor.form_author(&form.csrf) {
        Ok(caller) => caller,
        Err(refused) => return *refused,
    };
    match members::remove_member(&state, caller, &name, &user).await {
        Ok(()) => done(&settings_href(&name), "member-removed", "members"),
        Err(e) => refused(&visitor, &state, caller, &name, Section::Members, e, |_| {}).await,
    }
}

/// The job-deletion form: the job's name, typed to confirm.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DeleteJobForm {
    csrf: String,
    confirm: String,
}

/// `POST /jobs/{job}/settings/delete`: the job deleted, as the API's
/// `DELETE` does, once its name was typed; then on to `/jobs`.
pub async fn delete_job<D: Database>(
    visitor: Visitor,
    State(state): State<AppState<D>>,
    Path(name): Path<String>,
    Form(form): Form<DeleteJobForm>,
) -> Response {
    let caller = match visitor.form_author(&form.csrf) {
        Ok(caller) => caller,
        Err(refused) => return *refused,
    };
    let deleted = if form.confirm.trim() == name {
        jobs::delete_job(&state, caller, &name).await
    } else {
        Err(ApiError::unprocessable(format!(
            "type the job's name, `{name}`, to delete it"
        )))
    };
    match deleted {
        Ok(()) => Redirect::to("/jobs").into_response(),
        Err(e) => refused(&visitor, &state, caller, &name, Section::Delete, e, |_| {}).await,
    }
}

const TOKENS: &str = "/settings/tokens";

/// The tokens page for `identity`.
async fn tokens_page<D: Database>(
    state: &AppState<D>,
    identity: &Identity,
) -> ApiResult<TokensPage> {
    Ok(TokensPage {
        tokens: users::list_user_tokens(state, identity, None).await?,
        ..TokensPage::default()
    })
}

/// `GET /settings/tokens`.
pub async fn tokens<D: Database>(
    visitor: Visitor,
    State(state): State<AppState<D>>,
    query: Result<Query<DoneQuery>, QueryRejection>,
) -> Response {
    let Some(identity) = &visitor.identity else {
        return visitor.sign_in();
    };
    match tokens_page(&state, identity).await {
        Ok(mut page) => {
            page.notice = done_of(query);
            visitor.page(
                StatusCode::OK,
                kiln_ui::settings::tokens(&visitor.viewer, &page),
            )
        }
        Err(e) => visitor.refuse(e),
    }
}

/// The new-token form.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct NewTokenForm {
    csrf: String,
    name: String,
    /// Empty: the token never expires.
    expires_in: String,
}

/// `POST /settings/tokens`: the new token's value, on a page of its own
/// that no cache keeps (the one time it is shown).
pub async fn create_token<D: Database>(
    visitor: Visitor,
    State(state): State<AppState<D>>,
    Form(form): Form<NewTokenForm>,
) -> Response {
    let caller = match visitor.form_author(&form.csrf) {
        Ok(caller) => caller,
        Err(refused) => return *refused,
    };
    let created = async {
        let name = checked("name", TokenName::new(form.name.trim().to_string()))?;
        let expires_in = Some(form.expires_in.trim())
            .filter(|e| !e.is_empty())
            .map(|e| checked("expires after", ExpiresIn::new(e)))
            .transpose()?;
        let body = NewUserToken {
            name,
            expires_in,
            user: None,
        };
        users::create_user_token(&state, caller, body).await
    }
    .await;
    match created {
        Ok(created) => {
            let html = kiln_ui::settings::token_created(&visitor.viewer, &created);
            let mut response = visitor.page(StatusCode::CREATED, html);
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(e) if about_input(&e) => match tokens_page(&state, caller).await {
            Ok(mut page) => {
                page.name = form.name.clone();
                page.expires_in = form.expires_in.clone();
                page.error = Some(e.detail);
                visitor.page(e.status, kiln_ui::settings::tokens(&visitor.viewer, &page))
            }
            Err(e) => visitor.refuse(e),
        },
        Err(e) => visitor.refuse(e),
    }
}

/// `POST /settings/tokens/{id}/revoke`.
pub async fn revoke_token<D: Database>(
    visitor: Visitor,
    State(state): State<AppState<D>>,
    Path(id): Path<String>,
    Form(form): Form<TokenOnlyForm>,
) -> Response {
    let caller = match visitor.form_author(&form.csrf) {
        Ok(caller) => caller,
        Err(refused) => return *refused,
    };
    let revoked = match id.parse::<i64>() {
        Ok(id) => users::revoke_user_token(&state, caller, id).await,
        Err(_) => Err(ApiError::not_found(format!("token {id} not found"))),
    };
    match revoked {
        Ok(()) => done(TOKENS, "token-revoked", "token-list"),
        Err(e) => visitor.refuse(e),
    }
}
