//! The settings and admin pages of DESIGN.md §7: a job's settings (the
//! job, its secrets' names, its members), your API tokens, and for admins
//! the users and the audit log.
//!
//! Every form that changes something posts the session's form token
//! ([`csrf_field`]) to a controller that goes through the API's own
//! function for it. A change that went through is answered with a
//! redirect back here and a `?done=` code ([`notice`]); one that did not
//! gets the page again, with why, and what was typed — never a secret's
//! value or a password, which no page ever holds.

use chrono::{DateTime, Utc};
use kiln_api::{AuditEntry, Job, Member, Secret, Token, TokenCreated, User};
use maud::{Markup, html};

use crate::pages::{csrf_field, layout, maybe_when, optional, when};
use crate::time::exact;
use crate::{Viewer, job_href, segment};

/// The sentence a `?done=` code stands for. Codes, not sentences, travel
/// in the URL, so a link from elsewhere cannot make a page say anything
/// but these.
pub fn notice(done: &str) -> Option<&'static str> {
    Some(match done {
        "job-saved" => "The job is saved.",
        "job-unchanged" => "Nothing changed: the job was already so.",
        "secret-saved" => "The secret is saved. Its value is not shown again.",
        "secret-deleted" => "The secret is deleted.",
        "member-saved" => "The member's role is saved.",
        "member-removed" => "The member is removed.",
        "token-revoked" => "The token is revoked: it stops working at once.",
        "user-created" => "The user is created.",
        "user-saved" => "The user is changed.",
        "user-deleted" => "The user is deleted, with its tokens and sessions.",
        _ => return None,
    })
}

/// A time to come (a token's expiry), as "in 7 days", the exact time on
/// hover. Not marked `data-relative`: the page's script counts only back.
fn until(at: DateTime<Utc>, now: DateTime<Utc>) -> Markup {
    let seconds = (at - now).num_seconds();
    let text = match seconds {
        ..=0 => "passed".to_string(),
        1..=3599 => format!("in {} min", (seconds + 59) / 60),
        3600..=86_399 => format!("in {} h", seconds / 3600),
        _ => format!("in {} days", seconds / 86_400),
    };
    html! { time datetime=(at.to_rfc3339()) title=(exact(at)) { (text) } }
}

/// The page of `job`'s settings.
pub fn settings_href(job: &str) -> String {
    format!("{}/settings", job_href(job))
}

/// Which form of a page an error is about: it is shown next to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Job,
    Secrets,
    Members,
    Delete,
}

/// Why a form was refused: a sentence, and the located errors of a
/// pipeline, if any.
#[derive(Debug, Clone)]
pub struct FormError {
    pub section: Section,
    pub message: String,
    pub details: Vec<String>,
}

/// What the job form shows: the job as stored, or as just typed.
#[derive(Debug, Clone, Default)]
pub struct JobFields {
    pub repository: String,
    pub pipeline_path: String,
    pub default_branch: String,
    pub pipeline: String,
    pub visibility: String,
}

impl JobFields {
    pub fn of(job: &Job) -> JobFields {
        JobFields {
            repository: job.repository.clone().unwrap_or_default(),
            pipeline_path: job.pipeline_path.clone().unwrap_or_default(),
            default_branch: job.default_branch.clone().unwrap_or_default(),
            pipeline: job.pipeline.clone().unwrap_or_default(),
            visibility: job.visibility.clone(),
        }
    }
}

/// What `/jobs/{job}/settings` shows.
#[derive(Debug, Clone)]
pub struct JobSettings {
    pub job: Job,
    /// The viewer maintains the job: it gets the forms.
    pub can_edit: bool,
    pub fields: JobFields,
    /// The secrets' names; `None` when the viewer's role may not see them.
    pub secrets: Option<Vec<Secret>>,
    pub members: Vec<Member>,
    /// What was typed in the secret and member forms.
    pub secret_name: String,
    pub member_user: String,
    pub member_role: String,
    pub notice: Option<&'static str>,
    pub error: Option<FormError>,
}

const MEMBER_ROLES: [&str; 3] = ["viewer", "developer", "maintainer"];

fn error_for(error: &Option<FormError>, section: Section) -> Markup {
    html! {
        @if let Some(error) = error.as_ref().filter(|e| e.section == section) {
            div.error.form-error {
                p { (error.message) }
                @if !error.details.is_empty() {
                    ul { @for detail in &error.details { li { code { (detail) } } } }
                }
            }
        }
    }
}

fn notice_line(notice: Option<&str>) -> Markup {
    html! {
        @if let Some(notice) = notice {
            p.notice.done role="status" { (notice) }
        }
    }
}

fn job_form(viewer: &Viewer, page: &JobSettings) -> Markup {
    let job = &page.job;
    let fields = &page.fields;
    let git = job.kind == "git";
    html! {
        form.stacked #job-form method="post" action=(settings_href(&job.name)) {
            (csrf_field(viewer))
            p.muted { "Kind: " strong { (job.kind) } }
            @if git {
                label for="repository" { "Repository" }
                input #repository type="text" name="repository" value=(fields.repository) required
                    autocomplete="off" spellcheck="false";
                label for="pipeline_path" { "Pipeline file" }
                input #pipeline_path type="text" name="pipeline_path" value=(fields.pipeline_path)
                    placeholder=".kiln.yml" spellcheck="false";
            } @else {
                label for="pipeline" { "Pipeline" }
                textarea #pipeline name="pipeline" rows="14" spellcheck="false" required { (fields.pipeline) }
            }
            label for="default_branch" { "Default branch" }
            input #default_branch type="text" name="default_branch" value=(fields.default_branch)
                placeholder=(if git { "main" } else { "" }) spellcheck="false";
            label for="visibility" { "Visibility" }
            select #visibility name="visibility" {
                option value="private" selected[fields.visibility != "public"] { "private: members only" }
                option value="public" selected[fields.visibility == "public"] { "public: anyone reads its runs" }
            }
            div { button.primary #save-job type="submit" { "Save job" } }
        }
    }
}

fn job_facts(job: &Job) -> Markup {
    html! {
        dl.facts {
            dt { "Kind" } dd { (job.kind) }
            @if let Some(repository) = &job.repository { dt { "Repository" } dd { code { (repository) } } }
            @if let Some(path) = &job.pipeline_path { dt { "Pipeline file" } dd { code { (path) } } }
            dt { "Default branch" } dd { (optional(&job.default_branch)) }
            dt { "Visibility" } dd { (job.visibility) }
        }
        @if let Some(pipeline) = &job.pipeline {
            pre.pipeline { (pipeline) }
        }
    }
}

fn secrets_section(viewer: &Viewer, page: &JobSettings) -> Markup {
    let href = settings_href(&page.job.name);
    html! {
        h2 #secrets { "Secrets" }
        @match &page.secrets {
            None => p.muted { "Developers and maintainers of the job see its secrets' names." },
            Some(secrets) => {
                p.muted { "Values are write-only: nobody, not even an admin, can read them back. Tasks get only the secrets they name." }
                @if secrets.is_empty() {
                    p.note { "The job has no secrets." }
                } @else {
                    div.scroll {
                        table #secret-list {
                            thead { tr { th { "Name" } th { "Updated" } th { "Forks" } @if page.can_edit { th { span.visually-hidden { "Actions" } } } } }
                            tbody {
                                @for secret in secrets {
                                    tr {
                                        td { code { (secret.name) } }
                                        td { (when(secret.updated_at, viewer.now)) }
                                        td { @if secret.allow_forks { "given to forks' runs" } @else { "withheld from forks" } }
                                        @if page.can_edit {
                                            td.row-actions {
                                                form.inline method="post" action=(format!("{href}/secrets/{}/delete", segment(&secret.name))) {
                                                    (csrf_field(viewer))
                                                    button.danger type="submit" aria-label=(format!("Delete secret {}", secret.name)) { "Delete" }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                @if page.can_edit {
                    h3 { "Add or replace a secret" }
                    (error_for(&page.error, Section::Secrets))
                    form.inline #secret-form method="post" action=(format!("{href}/secrets")) {
                        (csrf_field(viewer))
                        div {
                            label for="secret-name" { "Name" }
                            input #secret-name type="text" name="name" value=(page.secret_name) required
                                placeholder="DEPLOY_KEY" autocomplete="off" spellcheck="false";
                        }
                        div {
                            label for="secret-value" { "Value" }
                            // Never pre-filled: a page holds no secret's value.
                            input #secret-value type="password" name="value" required autocomplete="new-password";
                        }
                        div {
                            label for="secret-allow-forks" {
                                input #secret-allow-forks type="checkbox" name="allow_forks";
                                " Give to pull requests from forks"
                            }
                        }
                        button.primary #save-secret type="submit" { "Save secret" }
                    }
                    p.muted.hint { "A name that exists gets the new value. A fork's code could print a secret: give forks only what is safe to share." }
                }
            }
        }
    }
}

fn role_select(id: &str, chosen: &str, label: &str) -> Markup {
    html! {
        select id=(id) name="role" aria-label=(label) {
            @for role in MEMBER_ROLES {
                option value=(role) selected[chosen == role] { (role) }
            }
        }
    }
}

fn members_section(viewer: &Viewer, page: &JobSettings) -> Markup {
    let href = settings_href(&page.job.name);
    html! {
        h2 #members { "Members" }
        p.muted { "Viewers read the job's runs; developers also trigger, cancel and rerun them; maintainers also change the job, its secrets and its members. Admins are maintainers of every job." }
        @if page.members.is_empty() {
            p.note { "The job has no members." }
        } @else {
            div.scroll {
                table #member-list {
                    thead { tr { th { "User" } th { "Role" } th.hide-narrow { "Since" } @if page.can_edit { th { span.visually-hidden { "Actions" } } } } }
                    tbody {
                        @for member in &page.members {
                            tr data-user=(member.user) {
                                td { (member.user) }
                                @if page.can_edit {
                                    td {
                                        form.inline method="post" action=(format!("{href}/members")) {
                                            (csrf_field(viewer))
                                            input type="hidden" name="user" value=(member.user);
                                            (role_select(&format!("role-{}", member.user), &member.role, &format!("Role of {}", member.user)))
                                            button type="submit" { "Change role" }
                                        }
                                    }
                                } @else {
                                    td { (member.role) }
                                }
                                td.hide-narrow { (when(member.updated_at, viewer.now)) }
                                @if page.can_edit {
                                    td.row-actions {
                                        form.inline method="post" action=(format!("{href}/members/{}/delete", segment(&member.user))) {
                                            (csrf_field(viewer))
                                            button.danger type="submit" aria-label=(format!("Remove {}", member.user)) { "Remove" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if page.can_edit {
            h3 { "Add a member" }
            (error_for(&page.error, Section::Members))
            form.inline #member-form method="post" action=(format!("{href}/members")) {
                (csrf_field(viewer))
                div {
                    label for="member-user" { "User" }
                    input #member-user type="text" name="user" value=(page.member_user) required
                        autocomplete="off" spellcheck="false";
                }
                div {
                    label for="member-role" { "Role" }
                    (role_select("member-role", if page.member_role.is_empty() { "developer" } else { &page.member_role }, "Role"))
                }
                button.primary #add-member type="submit" { "Add member" }
            }
        }
    }
}

fn delete_section(viewer: &Viewer, page: &JobSettings) -> Markup {
    let name = &page.job.name;
    html! {
        h2 #delete { "Delete the job" }
        p.muted { "Its runs, logs, artifacts, secrets and members go with it, for good." }
        (error_for(&page.error, Section::Delete))
        // Typing the name stands in for a confirmation dialog, which
        // would need a script.
        form.inline #delete-form method="post" action=(format!("{}/delete", settings_href(name))) {
            (csrf_field(viewer))
            div {
                label for="delete-confirm" { "Type " code { (name) } " to confirm" }
                input #delete-confirm type="text" name="confirm" required autocomplete="off" spellcheck="false";
            }
            button.danger #delete-job type="submit" { "Delete job" }
        }
    }
}

/// `/jobs/{job}/settings`: the job, its secrets' names and its members;
/// forms for its maintainers.
pub fn job_settings(viewer: &Viewer, page: &JobSettings) -> String {
    let job = &page.job;
    layout(
        viewer,
        &format!("Settings of {}", job.name),
        html! {
            p.crumbs { a href="/jobs" { "Jobs" } " / " a href=(job_href(&job.name)) { (job.name) } " / " }
            h1 { "Settings of " (job.name) }
            (notice_line(page.notice))
            @if let Some(error) = &page.error {
                @let anchor = match error.section { Section::Job => "#job", Section::Secrets => "#secrets", Section::Members => "#members", Section::Delete => "#delete" };
                // The form may be far down the page: say so at the top too.
                p.error #form-problem role="alert" {
                    "Not saved: " (error.message) " "
                    a href=(anchor) { "To the form" }
                }
            }
            h2 #job { "Job" }
            @if page.can_edit {
                (error_for(&page.error, Section::Job))
                (job_form(viewer, page))
            } @else {
                (job_facts(job))
                p.muted { "Maintainers of the job change it here." }
            }
            (secrets_section(viewer, page))
            (members_section(viewer, page))
            @if page.can_edit { (delete_section(viewer, page)) }
        },
    )
}

/// What `/settings/tokens` shows.
#[derive(Debug, Clone, Default)]
pub struct TokensPage {
    pub tokens: Vec<Token>,
    /// What was typed in the form.
    pub name: String,
    pub expires_in: String,
    pub notice: Option<&'static str>,
    pub error: Option<String>,
}

/// Lifetimes the form offers (the API takes any `^[1-9][0-9]{0,5}[smhd]$`).
const LIFETIMES: [(&str, &str); 6] = [
    ("1d", "1 day"),
    ("7d", "7 days"),
    ("30d", "30 days"),
    ("90d", "90 days"),
    ("365d", "1 year"),
    ("", "never"),
];

fn token_state(token: &Token, viewer: &Viewer) -> (&'static str, &'static str) {
    if token.revoked_at.is_some() {
        ("revoked", "s-cancelled")
    } else if token.expires_at.is_some_and(|at| at <= viewer.now) {
        ("expired", "s-cancelled")
    } else {
        ("active", "s-success")
    }
}

/// `/settings/tokens`: the viewer's API tokens, a form for a new one, and
/// a revoke button for each that still works.
pub fn tokens(viewer: &Viewer, page: &TokensPage) -> String {
    let expires = if page.error.is_some() {
        page.expires_in.as_str()
    } else {
        "30d"
    };
    layout(
        viewer,
        "Your tokens",
        html! {
            h1 { "Your API tokens" }
            (notice_line(page.notice))
            p.muted { "Scripts and the " code { "kiln" } " command call the API with a token: "
                code { "Authorization: Bearer <token>" } ", or " code { "KILN_TOKEN" } ". A token acts as you." }
            @if page.tokens.is_empty() {
                p.note { "You have no tokens." }
            } @else {
                div.scroll {
                    table #token-list {
                        thead { tr { th { "Name" } th { "State" } th { "Created" } th { "Last used" } th { "Expires" } th { span.visually-hidden { "Actions" } } } }
                        tbody {
                            @for token in &page.tokens {
                                @let (state, class) = token_state(token, viewer);
                                tr data-token=(token.id) {
                                    td { (token.name) }
                                    td { span class=(format!("status {class}")) { (state) } }
                                    td { (when(token.created_at, viewer.now)) }
                                    td { (maybe_when(token.last_used_at, viewer.now)) }
                                    td {
                                        @match token.expires_at {
                                            Some(at) => (until(at, viewer.now)),
                                            None => span.muted { "never" },
                                        }
                                    }
                                    td.row-actions {
                                        @if state == "active" {
                                            form.inline method="post" action=(format!("/settings/tokens/{}/revoke", token.id)) {
                                                (csrf_field(viewer))
                                                button.danger type="submit" aria-label=(format!("Revoke token {}", token.name)) { "Revoke" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "New token" }
            @if let Some(error) = &page.error {
                p.error.form-error role="alert" { (error) }
            }
            form.inline #token-form method="post" action="/settings/tokens" {
                (csrf_field(viewer))
                div {
                    label for="token-name" { "Name" }
                    input #token-name type="text" name="name" value=(page.name) required
                        placeholder="laptop" autocomplete="off" spellcheck="false";
                }
                div {
                    label for="token-expires" { "Expires after" }
                    select #token-expires name="expires_in" {
                        @for (value, text) in LIFETIMES {
                            option value=(value) selected[expires == value] { (text) }
                        }
                    }
                }
                button.primary #create-token type="submit" { "Create token" }
            }
        },
    )
}

/// The answer to creating a token: its value, this once.
pub fn token_created(viewer: &Viewer, created: &TokenCreated) -> String {
    layout(
        viewer,
        "New token",
        html! {
            p.crumbs { a href="/settings/tokens" { "Your tokens" } " / " }
            h1 { "Token " (created.name) }
            p.notice.done role="status" {
                strong { "Copy the token now: " }
                "it is shown this once, and Kiln keeps only a hash of it. "
                "Select it (a double click does) and copy it."
            }
            p { code #new-token.secret-value { (created.token) } }
            dl.facts {
                dt { "Expires" }
                dd {
                    @match created.expires_at {
                        Some(at) => (until(at, viewer.now)),
                        None => "never",
                    }
                }
            }
            p { a href="/settings/tokens" { "Back to your tokens" } }
        },
    )
}

/// What `/admin/users` shows.
#[derive(Debug, Clone, Default)]
pub struct UsersPage {
    pub users: Vec<User>,
    /// What was typed in the new-user form.
    pub name: String,
    pub admin: bool,
    pub notice: Option<&'static str>,
    /// Why the new-user form was refused.
    pub create_error: Option<String>,
    /// Why a change to a listed user was refused.
    pub error: Option<String>,
}

fn user_actions(viewer: &Viewer, user: &User) -> Markup {
    let href = format!("/admin/users/{}", segment(&user.name));
    let admin = user.role == "admin";
    html! {
        div.row-actions {
            form.inline method="post" action=(href) {
                (csrf_field(viewer))
                input type="hidden" name="disabled" value=(if user.disabled { "false" } else { "true" });
                button type="submit" { @if user.disabled { "Enable" } @else { "Disable" } }
            }
            form.inline method="post" action=(href) {
                (csrf_field(viewer))
                input type="hidden" name="role" value=(if admin { "user" } else { "admin" });
                button type="submit" { @if admin { "Make user" } @else { "Make admin" } }
            }
            details.reset {
                summary { "Set password" }
                form.inline method="post" action=(href) {
                    (csrf_field(viewer))
                    label.visually-hidden for=(format!("password-{}", user.name)) { "New password of " (user.name) }
                    input id=(format!("password-{}", user.name)) type="password" name="password"
                        required minlength="8" autocomplete="new-password" placeholder="new password";
                    button type="submit" { "Set" }
                }
            }
            form.inline method="post" action=(format!("{href}/delete")) {
                (csrf_field(viewer))
                button.danger type="submit" aria-label=(format!("Delete user {}", user.name)) { "Delete" }
            }
        }
    }
}

/// `/admin/users`: every user, with what an admin may change of each, and
/// a form for a new one.
pub fn users(viewer: &Viewer, page: &UsersPage) -> String {
    layout(
        viewer,
        "Users",
        html! {
            h1 { "Users" }
            (notice_line(page.notice))
            @if let Some(error) = &page.error {
                p.error role="alert" { (error) }
            }
            div.scroll {
                table #user-list {
                    thead { tr { th { "User" } th { "Role" } th { "State" } th.hide-narrow { "Created" } th { span.visually-hidden { "Actions" } } } }
                    tbody {
                        @for user in &page.users {
                            tr data-user=(user.name) {
                                td { (user.name) @if viewer.user.as_deref() == Some(user.name.as_str()) { " " span.muted { "(you)" } } }
                                td { (user.role) }
                                td {
                                    @if user.disabled {
                                        span.status.s-cancelled { "disabled" }
                                    } @else {
                                        span.status.s-success { "enabled" }
                                    }
                                    @if !user.has_password { br; small.muted { "no password: tokens only" } }
                                }
                                td.hide-narrow { (when(user.created_at, viewer.now)) }
                                td { (user_actions(viewer, user)) }
                            }
                        }
                    }
                }
            }
            p.muted { "Disabling a user or setting a password signs them out everywhere; a disabled user's tokens stop working at once. There is always one enabled admin." }
            h2 { "New user" }
            @if let Some(error) = &page.create_error {
                p.error.form-error role="alert" { (error) }
            }
            form.inline #user-form method="post" action="/admin/users" {
                (csrf_field(viewer))
                div {
                    label for="user-name" { "Name" }
                    input #user-name type="text" name="name" value=(page.name) required
                        autocomplete="off" spellcheck="false";
                }
                div {
                    label for="user-password" { "Password" }
                    input #user-password type="password" name="password" minlength="8"
                        autocomplete="new-password" placeholder="none: tokens only";
                }
                div.check {
                    input #user-admin type="checkbox" name="admin" value="true" checked[page.admin];
                    label for="user-admin" { "Admin" }
                }
                button.primary #create-user type="submit" { "Create user" }
            }
        },
    )
}

/// What `/admin/audit` shows.
#[derive(Debug, Clone, Default)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// The filters in force.
    pub actor: String,
    pub action: String,
    pub object: String,
    /// Whether this page is not the newest one.
    pub paged: bool,
    /// The cursor of the next (older) page, if there is one.
    pub older: Option<String>,
    pub error: Option<String>,
}

fn audit_query(page: &AuditPage) -> String {
    let mut query = String::new();
    for (key, value) in [
        ("actor", &page.actor),
        ("action", &page.action),
        ("object", &page.object),
    ] {
        if !value.is_empty() {
            query.push_str(&format!("&{key}={}", segment(value)));
        }
    }
    query
}

/// `/admin/audit`: the audit log, newest first, filtered and paged.
pub fn audit(viewer: &Viewer, page: &AuditPage) -> String {
    let filters = audit_query(page);
    layout(
        viewer,
        "Audit log",
        html! {
            h1 { "Audit log" }
            @if let Some(error) = &page.error {
                p.error role="alert" { (error) }
            }
            form.inline #audit-filter method="get" action="/admin/audit" {
                div {
                    label for="actor" { "Who" }
                    input #actor type="text" name="actor" value=(page.actor) placeholder="user name";
                }
                div {
                    label for="action" { "Action" }
                    input #action type="text" name="action" value=(page.action) placeholder="secret.put";
                }
                div {
                    label for="object" { "Object (or under it)" }
                    input #object type="text" name="object" value=(page.object) placeholder="job/app";
                }
                button type="submit" { "Filter" }
            }
            @if page.entries.is_empty() {
                p.note { "No entries match." }
            } @else {
                div.scroll {
                    table #audit-log {
                        thead { tr { th { "When" } th { "Who" } th { "Action" } th { "Object" } th.hide-narrow { "Detail" } th.hide-narrow { "From" } } }
                        tbody {
                            @for entry in &page.entries {
                                tr {
                                    td { (when(entry.at, viewer.now)) }
                                    td { (entry.actor) }
                                    td { code { (entry.action) } }
                                    td { code { (entry.object) } }
                                    td.hide-narrow { (optional(&entry.detail)) }
                                    td.hide-narrow { (optional(&entry.source)) }
                                }
                            }
                        }
                    }
                }
            }
            nav.pager aria-label="Pages" {
                @if page.paged {
                    a href=(format!("/admin/audit?{}", filters.trim_start_matches('&'))) { "← Newest" }
                }
                @if let Some(cursor) = &page.older {
                    a #older href=(format!("/admin/audit?cursor={}{filters}", segment(cursor))) { "Older entries →" }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    fn viewer() -> Viewer {
        Viewer {
            user: Some("ada".into()),
            admin: true,
            csrf: Some("t0k3n".into()),
            now: Utc::now(),
        }
    }

    fn job() -> Job {
        Job {
            name: "app".into(),
            kind: "git".into(),
            repository: Some("file:///srv/app".into()),
            pipeline_path: Some(".kiln.yml".into()),
            default_branch: Some("main".into()),
            pipeline: None,
            visibility: "private".into(),
            forge: None,
            fork_prs: "approve".into(),
            poll_interval: None,
            poll_error: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            change: None,
        }
    }

    fn settings(can_edit: bool) -> JobSettings {
        let job = job();
        JobSettings {
            fields: JobFields::of(&job),
            job,
            can_edit,
            secrets: Some(vec![Secret {
                name: "DEPLOY_KEY".into(),
                updated_at: Utc::now(),
                allow_forks: false,
            }]),
            members: vec![Member {
                user: "bob".into(),
                role: "developer".into(),
                updated_at: Utc::now(),
            }],
            secret_name: String::new(),
            member_user: String::new(),
            member_role: String::new(),
            notice: None,
            error: None,
        }
    }

    #[test]
    fn maintainers_get_the_forms_and_others_only_read() {
        let html = job_settings(&viewer(), &settings(true));
        assert!(html.contains("<title>Settings of app · Kiln</title>"));
        assert!(html.contains("id=\"secret-form\""));
        assert!(html.contains("action=\"/jobs/app/settings/secrets/DEPLOY_KEY/delete\""));
        assert!(html.contains("name=\"allow_forks\""));
        assert!(html.contains("withheld from forks"));
        assert!(html.contains("action=\"/jobs/app/settings/members/bob/delete\""));
        assert!(html.contains("value=\"file:///srv/app\""));
        assert!(html.contains("name=\"csrf\" value=\"t0k3n\""));
        assert!(html.contains("action=\"/jobs/app/settings/delete\""));
        let mut read_only = settings(false);
        read_only.secrets = None;
        let html = job_settings(&viewer(), &read_only);
        assert!(!html.contains("method=\"post\" action=\"/jobs"));
        assert!(!html.contains("DEPLOY_KEY"));
        assert!(html.contains("bob"));
    }

    #[test]
    fn a_refused_form_says_why_next_to_itself_and_keeps_what_was_typed() {
        let mut page = settings(true);
        page.secret_name = "BAD NAME".into();
        page.error = Some(FormError {
            section: Section::Secrets,
            message: "`BAD NAME` is not a valid secret name".into(),
            details: Vec::new(),
        });
        let html = job_settings(&viewer(), &page);
        assert!(html.contains("value=\"BAD NAME\""));
        let error = html.rfind("not a valid secret name").unwrap();
        let summary = html.find("id=\"form-problem\"").unwrap();
        assert!(
            summary < html.find("id=\"job\"").unwrap(),
            "said at the top too"
        );
        assert!(html[summary..].contains("href=\"#secrets\""));
        let form = html.find("id=\"secret-form\"").unwrap();
        let secrets = html.find("id=\"secrets\"").unwrap();
        assert!(
            secrets < error && error < form,
            "the error is in its section, above its form"
        );
    }

    #[test]
    fn a_new_token_is_shown_once_and_old_ones_never() {
        let created = TokenCreated {
            id: 3,
            name: "laptop".into(),
            token: "kiln_s3cr3t".into(),
            expires_at: None,
        };
        let html = token_created(&viewer(), &created);
        assert!(html.contains("kiln_s3cr3t"));
        assert!(html.contains("shown this once"));
        let page = TokensPage {
            tokens: vec![Token {
                id: 3,
                name: "laptop".into(),
                user: "ada".into(),
                created_at: Utc::now(),
                expires_at: None,
                last_used_at: None,
                revoked_at: Some(Utc::now()),
            }],
            ..TokensPage::default()
        };
        let html = tokens(&viewer(), &page);
        assert!(html.contains(">revoked<"));
        assert!(
            !html.contains("/settings/tokens/3/revoke"),
            "a revoked token has no revoke button"
        );
        assert!(html.contains("<option value=\"30d\" selected"));
    }

    #[test]
    fn expiries_count_forward() {
        let now = Utc::now();
        let week = until(now + chrono::TimeDelta::days(7), now).into_string();
        assert!(week.contains(">in 7 days<"), "{week}");
        assert!(
            !week.contains("data-relative"),
            "the script would count it back"
        );
        let gone = until(now - chrono::TimeDelta::hours(1), now).into_string();
        assert!(gone.contains(">passed<"), "{gone}");
    }

    #[test]
    fn only_known_notices_are_shown_and_audit_pages_keep_their_filters() {
        assert!(notice("secret-saved").is_some());
        assert!(notice("<script>").is_none());
        let page = AuditPage {
            actor: "ada".into(),
            older: Some("41".into()),
            ..AuditPage::default()
        };
        let html = audit(&viewer(), &page);
        assert!(html.contains("href=\"/admin/audit?cursor=41&amp;actor=ada\""));
        let nav = layout(&viewer(), "x", html! {});
        assert!(nav.contains("href=\"/admin/users\""));
        assert!(nav.contains("href=\"/settings/tokens\""));
    }
}
