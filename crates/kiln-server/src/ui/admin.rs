//! `/admin/users` (users, and what an admin changes of them) and
//! `/admin/audit` (the audit log): for admins. An anonymous visitor is
//! sent to sign in; a signed-in user who is not an admin is told `403`
//! by the API's own functions, which the forms go through.

use axum::Form;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use kiln_api::fields::{Cursor, Password, UserName};
use kiln_store::{Database, UserRole};
use kiln_ui::settings::{AuditPage, UsersPage};
use serde::Deserialize;

use super::Visitor;
use super::settings::{DoneQuery, TokenOnlyForm, about_input, checked, choose, done};
use crate::api::admin::audit_page;
use crate::api::bodies::{AuditQuery, Choice, NewUserBody, UserPatch};
use crate::api::users;
use crate::auth::Identity;
use crate::error::ApiError;
use crate::state::AppState;

const USERS: &str = "/admin/users";

/// The users page again, with `change` made to it (what was typed, why
/// it was refused), at `status`.
async fn users_page<D: Database>(
    visitor: &Visitor,
    state: &AppState<D>,
    identity: &Identity,
    status: StatusCode,
    change: impl FnOnce(&mut UsersPage),
) -> Response {
    match users::list_users(state, identity).await {
        Ok(list) => {
            let mut page = UsersPage {
                users: list,
                ..UsersPage::default()
            };
            change(&mut page);
            visitor.page(status, kiln_ui::settings::users(&visitor.viewer, &page))
        }
        Err(e) => visitor.refuse(e),
    }
}

/// `GET /admin/users`.
pub async fn users<D: Database>(
    visitor: Visitor,
    State(state): State<AppState<D>>,
    query: Result<Query<DoneQuery>, QueryRejection>,
) -> Response {
    let Some(identity) = &visitor.identity else {
        return visitor.sign_in();
    };
    let notice = query
        .ok()
        .and_then(|Query(q)| kiln_ui::settings::notice(q.done()));
    users_page(&visitor, &state, identity, StatusCode::OK, |page| {
        page.notice = notice
    })
    .await
}

/// The new-user form.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct NewUserForm {
    csrf: String,
    name: String,
    /// Empty: the user signs in with tokens only.
    password: String,
    /// `true` when the box is ticked; absent when not.
    admin: String,
}

/// `POST /admin/users`: a new user, as the API's `POST /users` makes it.
pub async fn create_user<D: Database>(
    visitor: Visitor,
    State(state): State<AppState<D>>,
    Form(form): Form<NewUserForm>,
) -> Response {
    let caller = match visitor.form_author(&form.csrf) {
        Ok(caller) => caller,
        Err(refused) => return *refused,
    };
    let admin = form.admin == "true";
    let created = async {
        let name = checked("name", UserName::new(form.name.trim().to_string()))?;
        let password = Some(form.password.clone())
            .filter(|p| !p.is_empty())
            .map(|p| checked("password", Password::new(p)))
            .transpose()?;
        let role = if admin {
            UserRole::Admin
        } else {
            UserRole::User
        };
        let body = NewUserBody {
            name,
            role: Some(Choice(role)),
            password,
        };
        users::create_user(&state, caller, body).await
    }
    .await;
    match created {
        Ok(_) => done(USERS, "user-created", "user-list"),
        Err(e) if about_input(&e) => {
            users_page(&visitor, &state, caller, e.status, |page| {
                page.name = form.name.clone();
                page.admin = admin;
                page.create_error = Some(e.detail);
            })
            .await
        }
        Err(e) => visitor.refuse(e),
    }
}

/// A change to a user: each field left empty stays as it is.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct UserChangeForm {
    csrf: String,
    /// `admin` or `user`.
    role: String,
    /// `true` or `false`.
    disabled: String,
    password: String,
}

/// `POST /admin/users/{user}`: a role, the disabled flag or a password
/// changed, as the API's `PATCH /users/{user}` does.
pub async fn update_user<D: Database>(
    visitor: Visitor,
    State(state): State<AppState<D>>,
    Path(user): Path<String>,
    Form(form): Form<UserChangeForm>,
) -> Response {
    let caller = match visitor.form_author(&form.csrf) {
        Ok(caller) => caller,
        Err(refused) => return *refused,
    };
    let changed = async {
        let role = Some(form.role.as_str())
            .filter(|r| !r.is_empty())
            .map(|r| choose::<UserRole>("role", r).map(Choice))
            .transpose()?;
        let disabled = match form.disabled.as_str() {
            "" => None,
            "true" => Some(true),
            "false" => Some(false),
            other => {
                return Err(ApiError::unprocessable(format!(
                    "disabled: `{other}` is not `true` or `false`"
                )));
            }
        };
        let password = Some(form.password.clone())
            .filter(|p| !p.is_empty())
            .map(|p| checked("password", Password::new(p)))
            .transpose()?;
        if role.is_none() && disabled.is_none() && password.is_none() {
            return Err(ApiError::unprocessable("the form changes nothing"));
        }
        let patch = UserPatch {
            role,
            disabled,
            password,
        };
        users::update_user(&state, caller, &user, patch).await
    }
    .await;
    match changed {
        Ok(_) => done(USERS, "user-saved", "user-list"),
        Err(e) if about_input(&e) => {
            let error = format!("{user}: {}", e.detail);
            users_page(&visitor, &state, caller, e.status, |page| {
                page.error = Some(error)
            })
            .await
        }
        Err(e) => visitor.refuse(e),
    }
}

/// `POST /admin/users/{user}/delete`.
pub async fn delete_user<D: Database>(
    visitor: Visitor,
    State(state): State<AppState<D>>,
    Path(user): Path<String>,
    Form(form): Form<TokenOnlyForm>,
) -> Response {
    let caller = match visitor.form_author(&form.csrf) {
        Ok(caller) => caller,
        Err(refused) => return *refused,
    };
    match users::delete_user(&state, caller, &user).await {
        Ok(()) => done(USERS, "user-deleted", "user-list"),
        Err(e) if about_input(&e) => {
            let error = format!("{user}: {}", e.detail);
            users_page(&visitor, &state, caller, e.status, |page| {
                page.error = Some(error)
            })
            .await
        }
        Err(e) => visitor.refuse(e),
    }
}

/// `?actor=&action=&object=&cursor=` of the audit page; empty means none.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AuditFilters {
    actor: String,
    action: String,
    object: String,
    cursor: String,
}

/// `GET /admin/audit`: the audit log, newest first, a page at a time.
pub async fn audit<D: Database>(
    visitor: Visitor,
    State(state): State<AppState<D>>,
    query: Result<Query<AuditFilters>, QueryRejection>,
) -> Response {
    let Some(identity) = &visitor.identity else {
        return visitor.sign_in();
    };
    let filters = query.map(|Query(q)| q).unwrap_or_default();
    let given = |text: &str| Some(text.trim().to_string()).filter(|t| !t.is_empty());
    // A cursor that is not one (edited by hand) starts from the newest.
    let cursor = filters.cursor.parse::<Cursor>().unwrap_or_default();
    let query = AuditQuery {
        actor: given(&filters.actor),
        action: given(&filters.action),
        object: given(&filters.object),
        cursor,
        ..AuditQuery::default()
    };
    let paged = query.cursor.0.is_some();
    match audit_page(&state, identity, query).await {
        Ok(list) => {
            let page = AuditPage {
                entries: list.entries,
                actor: filters.actor,
                action: filters.action,
                object: filters.object,
                paged,
                older: list.next_cursor,
                error: None,
            };
            visitor.page(
                StatusCode::OK,
                kiln_ui::settings::audit(&visitor.viewer, &page),
            )
        }
        Err(e) => visitor.refuse(e),
    }
}
