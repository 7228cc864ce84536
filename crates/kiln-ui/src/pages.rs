//! The pages of DESIGN.md §7, each a function from what it shows to HTML.
//! Every page has the same frame ([`layout`]): a skip link, the top bar
//! (who is signed in, sign-out), and a `<title>` that says where you are.

use chrono::{DateTime, Utc};
use kiln_api::{Agent, Artifact, Job, Run, Task};
use maud::{DOCTYPE, Markup, html};

use crate::graph;
use crate::log::LogView;
use crate::time::{elapsed, exact, relative};
use crate::{Viewer, assets, job_href, run_href, segment, task_href};

/// Statuses after which nothing more happens to a run or task.
pub fn is_terminal(status: &str) -> bool {
    matches!(
        status,
        "success" | "failure" | "cancelled" | "timed_out" | "skipped" | "error"
    )
}

pub(crate) fn layout(viewer: &Viewer, title: &str, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · Kiln" }
                link rel="stylesheet" href=(assets::stylesheet());
                script type="module" src=(assets::script()) {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { "Kiln" }
                    nav aria-label="Main" {
                        a href="/" { "Runs" }
                        a href="/jobs" { "Jobs" }
                        @if viewer.admin {
                            a href="/agents" { "Agents" }
                            a href="/admin/users" { "Users" }
                            a href="/admin/audit" { "Audit" }
                        }
                    }
                    div.who {
                        @if let Some(user) = &viewer.user {
                            span { "Signed in as " strong { (user) } }
                            a href="/settings/tokens" { "Your tokens" }
                            form.inline method="post" action="/logout" {
                                (csrf_field(viewer))
                                button type="submit" { "Sign out" }
                            }
                        } @else {
                            a href="/login" { "Sign in" }
                        }
                    }
                }
                main #main tabindex="-1" { (body) }
            }
        }
    }
    .into_string()
}

pub(crate) fn csrf_field(viewer: &Viewer) -> Markup {
    html! {
        @if let Some(token) = &viewer.csrf {
            input type="hidden" name="csrf" value=(token);
        }
    }
}

/// A status as a word in a coloured pill.
pub fn status(status: &str) -> Markup {
    html! { span class=(format!("status s-{status}")) { (status.replace('_', " ")) } }
}

/// A time, relative, with the exact time on hover.
pub(crate) fn when(at: DateTime<Utc>, now: DateTime<Utc>) -> Markup {
    html! {
        time datetime=(at.to_rfc3339()) title=(exact(at)) data-relative {
            (relative(at, now))
        }
    }
}

pub(crate) fn maybe_when(at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Markup {
    match at {
        Some(at) => when(at, now),
        None => html! { span.muted { "—" } },
    }
}

fn short_sha(sha: &Option<String>) -> Markup {
    match sha {
        Some(sha) => html! { code title=(sha) { (sha.chars().take(8).collect::<String>()) } },
        None => html! { span.muted { "—" } },
    }
}

pub(crate) fn optional(text: &Option<String>) -> Markup {
    match text {
        Some(text) => html! { (text) },
        None => html! { span.muted { "—" } },
    }
}

/// The sign-in form. `next` is where to go once signed in.
pub fn login(viewer: &Viewer, next: &str, error: Option<&str>, username: &str) -> String {
    let action = format!("/login?next={}", segment(next));
    layout(
        viewer,
        "Sign in",
        html! {
            div.login {
                h1 { "Sign in to Kiln" }
                @if let Some(error) = error {
                    p.error #login-error role="alert" { (error) }
                }
                form method="post" action=(action) {
                    label for="username" { "User name" }
                    // After a failed try the name is kept: the password is next.
                    input #username type="text" name="username" value=(username)
                        autocomplete="username" required autofocus[username.is_empty()];
                    label for="password" { "Password" }
                    input #password type="password" name="password"
                        autocomplete="current-password" required autofocus[!username.is_empty()];
                    button.primary type="submit" { "Sign in" }
                }
            }
        },
    )
}

fn runs_table(viewer: &Viewer, runs: &[Run], with_job: bool) -> Markup {
    html! {
        div.scroll {
            table.runs {
                thead {
                    tr {
                        th { "Status" }
                        @if with_job { th { "Job" } }
                        th.num { "Run" }
                        th { "Branch" }
                        th.hide-narrow { "Commit" }
                        th.hide-narrow { "Trigger" }
                        th { "Started" }
                        th.num { "Duration" }
                    }
                }
                tbody {
                    @for run in runs {
                        // The key keeps a row (and a focused link in it)
                        // when live updates add rows above it.
                        tr data-key=(format!("run-{}-{}", run.job, run.number)) {
                            td { (status(&run.status)) }
                            @if with_job { td { a href=(job_href(&run.job)) { (run.job) } } }
                            td.num { a href=(run_href(&run.job, run.number)) { "#" (run.number) } }
                            td { (optional(&run.branch)) }
                            td.hide-narrow { (short_sha(&run.sha)) }
                            td.hide-narrow { (run.event) }
                            td { (when(run.created_at, viewer.now)) }
                            td.num { (lasting(run.started_at, run.finished_at, viewer.now)) }
                        }
                    }
                }
            }
        }
    }
}

/// Where a live page follows the change feed from: `GET /api/v1/events`
/// after change `after` (the newest one when the page was read, so none
/// is missed), for one job or one run of it, or every readable job.
pub fn events_href(after: u64, job: Option<&str>, run: Option<i64>) -> String {
    let mut href = format!("/api/v1/events?after={after}");
    if let Some(job) = job {
        href.push_str(&format!("&job={}", segment(job)));
        if let Some(run) = run {
            href.push_str(&format!("&run={run}"));
        }
    }
    href
}

/// The script that keeps the parts marked `data-live` current
/// (`assets/live.js`); a page works the same without it, as of when it
/// was read.
fn live_script() -> Markup {
    html! { script type="module" src=(assets::live_script()) {} }
}

/// How long something took, or has taken so far; while it lasts, marked
/// with when it started, so live.js counts on between refreshes.
fn lasting(
    started: Option<DateTime<Utc>>,
    finished: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Markup {
    match (started, finished) {
        (Some(since), None) => html! {
            span data-since=(since.to_rfc3339()) { (optional(&elapsed(started, None, now))) }
        },
        _ => optional(&elapsed(started, finished, now)),
    }
}

/// What `/` shows.
#[derive(Debug, Clone)]
pub struct Dashboard {
    /// Newest first.
    pub runs: Vec<Run>,
    /// Whether this page is not the newest one.
    pub paged: bool,
    /// The `before` of the next (older) page, if there is one.
    pub older: Option<i64>,
    /// The change feed's newest change when the runs were read.
    pub events_after: u64,
}

/// `/`: recent runs of the jobs the viewer may see, live.
pub fn dashboard(viewer: &Viewer, page: &Dashboard) -> String {
    layout(
        viewer,
        "Recent runs",
        html! {
            h1 { "Recent runs" }
            div #live-runs data-live=(events_href(page.events_after, None, None)) data-now=(viewer.now.to_rfc3339()) {
                @if page.runs.is_empty() {
                    p.note {
                        "No runs to show yet."
                        @if viewer.user.is_none() { " " a href="/login" { "Sign in" } " to see private jobs." }
                    }
                } @else {
                    (runs_table(viewer, &page.runs, true))
                }
                nav.pager aria-label="Pages" {
                    @if page.paged { a href="/" { "← Newest" } }
                    @if let Some(before) = page.older {
                        a href=(format!("/?before={before}")) { "Older runs →" }
                    }
                }
            }
            (live_script())
        },
    )
}

/// A job and its latest run, for `/jobs`.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub job: Job,
    pub last: Option<Run>,
}

/// `/jobs`: the jobs the viewer may see.
pub fn jobs(viewer: &Viewer, rows: &[JobRow]) -> String {
    layout(
        viewer,
        "Jobs",
        html! {
            h1 { "Jobs" }
            @if rows.is_empty() {
                p.note { "No jobs to show." }
            } @else {
                div.scroll {
                    table {
                        thead { tr { th { "Job" } th { "Latest run" } th.hide-narrow { "Kind" } th.hide-narrow { "Visibility" } th { "When" } } }
                        tbody {
                            @for row in rows {
                                tr {
                                    td { a href=(job_href(&row.job.name)) { (row.job.name) } }
                                    @if let Some(run) = &row.last {
                                        td { (status(&run.status)) " " a href=(run_href(&run.job, run.number)) { "#" (run.number) } }
                                    } @else {
                                        td { span.muted { "no runs" } }
                                    }
                                    td.hide-narrow { (row.job.kind) }
                                    td.hide-narrow { (row.job.visibility) }
                                    td { (maybe_when(row.last.as_ref().map(|r| r.created_at), viewer.now)) }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// What `/jobs/{job}` shows.
#[derive(Debug, Clone)]
pub struct JobPage {
    pub job: Job,
    pub runs: Vec<Run>,
    /// The filters in force.
    pub status: Option<String>,
    pub branch: String,
    /// Whether this page is not the newest one.
    pub paged: bool,
    /// The `before` of the next (older) page, if there is one.
    pub older: Option<i64>,
    /// The viewer may trigger runs.
    pub can_trigger: bool,
    /// The change feed's newest change when the runs were read.
    pub events_after: u64,
}

fn filter_query(status: &Option<String>, branch: &str) -> String {
    let mut query = String::new();
    if let Some(status) = status {
        query.push_str(&format!("&status={}", segment(status)));
    }
    if !branch.is_empty() {
        query.push_str(&format!("&branch={}", segment(branch)));
    }
    query
}

/// `/jobs/{job}`: its runs, filters, paging, trigger button and badge.
pub fn job(viewer: &Viewer, page: &JobPage) -> String {
    let job = &page.job;
    let href = job_href(&job.name);
    let default_branch = job.default_branch.clone().unwrap_or_else(|| "main".into());
    layout(
        viewer,
        &format!("Job {}", job.name),
        html! {
            p.crumbs { a href="/jobs" { "Jobs" } " / " }
            h1 { "Job " (job.name) }
            @if viewer.user.is_some() { p.settings-link { a #job-settings href=(crate::settings::settings_href(&job.name)) { "Settings" } } }
            dl.facts {
                dt { "Kind" } dd { (job.kind) }
                @if let Some(repository) = &job.repository { dt { "Repository" } dd { code { (repository) } } }
                dt { "Default branch" } dd { (default_branch) }
                dt { "Visibility" } dd { (job.visibility) }
            }
            @if page.can_trigger {
                form.inline.actions #trigger-form method="post" action=(format!("{href}/trigger")) {
                    (csrf_field(viewer))
                    div {
                        label for="branch" { "Branch" }
                        input #branch type="text" name="branch" placeholder=(default_branch);
                    }
                    button.primary #trigger type="submit" { "Trigger run" }
                }
            }
            @if job.visibility == "public" {
                @let badge = format!("{href}/badge.svg?branch={}", segment(&default_branch));
                p { img src=(badge) alt=(format!("Status of {} on {default_branch}", job.name)); }
            }
            h2 { "Runs" }
            form.inline method="get" action=(href) {
                div {
                    label for="status" { "Status" }
                    select #status name="status" {
                        option value="" selected[page.status.is_none()] { "any" }
                        @for name in kiln_api::STATUSES {
                            option value=(name) selected[page.status.as_deref() == Some(name)] { (name) }
                        }
                    }
                }
                div {
                    label for="branch-filter" { "Branch" }
                    input #branch-filter type="text" name="branch" value=(page.branch);
                }
                button type="submit" { "Filter" }
            }
            // The runs and the pager follow the feed; the forms above are
            // left alone, so what the reader types in them stays.
            div #live-runs data-live=(events_href(page.events_after, Some(&job.name), None)) data-now=(viewer.now.to_rfc3339()) {
                @if page.runs.is_empty() {
                    p.note { "No runs match." }
                } @else {
                    (runs_table(viewer, &page.runs, false))
                }
                nav.pager aria-label="Pages" {
                    @if page.paged {
                        a href=(format!("{href}?{}", filter_query(&page.status, &page.branch).trim_start_matches('&'))) { "← Newest" }
                    }
                    @if let Some(before) = page.older {
                        a href=(format!("{href}?before={before}{}", filter_query(&page.status, &page.branch))) { "Older runs →" }
                    }
                }
            }
            (live_script())
        },
    )
}

/// What `/jobs/{job}/runs/{n}` shows.
#[derive(Debug, Clone)]
pub struct RunPage {
    /// The run with its tasks.
    pub run: Run,
    pub graph: Vec<graph::Node>,
    /// The viewer may cancel and rerun.
    pub can_act: bool,
    /// The viewer may approve a blocked run (a maintainer).
    pub can_approve: bool,
    /// The change feed's newest change when the run was read.
    pub events_after: u64,
}

/// What each forge was told of the run, in one line: "github: success
/// (sent)", "github: pending (on its way)", or the refusal.
fn commit_statuses(statuses: &[kiln_api::CommitStatus]) -> String {
    statuses
        .iter()
        .map(|status| {
            let how = match (&status.error, status.sent_at) {
                (Some(error), _) => format!("refused: {error}"),
                (None, Some(_)) => "sent".to_string(),
                (None, None) => "on its way".to_string(),
            };
            format!("{}: {} ({how})", status.forge, status.state)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// `/jobs/{job}/runs/{n}`: the graph, the tasks, cancel and rerun.
pub fn run(viewer: &Viewer, page: &RunPage) -> String {
    let run = &page.run;
    let href = run_href(&run.job, run.number);
    let tasks: &[Task] = run.tasks.as_deref().unwrap_or(&[]);
    layout(
        viewer,
        &format!("Run #{} of {}", run.number, run.job),
        html! {
            p.crumbs { a href="/jobs" { "Jobs" } " / " a href=(job_href(&run.job)) { (run.job) } " / " }
            // Everything below the crumbs follows the run's changes.
            // An ended run changes no more: its page follows no feed.
            @let live = (!is_terminal(&run.status))
                .then(|| events_href(page.events_after, Some(&run.job), Some(run.number)));
            div #live-run data-live=[live] data-now=(viewer.now.to_rfc3339()) {
                h1 { "Run #" (run.number) " " span #run-status aria-live="polite" { (status(&run.status)) } }
                dl.facts {
                    dt { "Branch" } dd { (optional(&run.branch)) }
                    dt { "Commit" } dd { (short_sha(&run.sha)) }
                    dt { "Trigger" } dd { (run.event) }
                    dt { "Created" } dd { (when(run.created_at, viewer.now)) }
                    dt { "Duration" } dd { (lasting(run.started_at, run.finished_at, viewer.now)) }
                    @if let Some(statuses) = run.statuses.as_deref().filter(|s| !s.is_empty()) {
                        dt { "Commit status" } dd { (commit_statuses(statuses)) }
                    }
                }
                @if let Some(error) = &run.error {
                    pre.error { (error) }
                }
                @if run.status == "blocked" {
                    p.note #blocked-note { "A pull request from a fork: nothing of it runs until a maintainer approves this commit." }
                }
                @if page.can_act {
                    div.actions {
                        @if run.status == "blocked" && page.can_approve {
                            form.inline #approve-form method="post" action=(format!("{href}/approve")) {
                                (csrf_field(viewer))
                                button #approve type="submit" { "Approve" }
                            }
                        }
                        @if !is_terminal(&run.status) {
                            form.inline #cancel-form method="post" action=(format!("{href}/cancel")) {
                                (csrf_field(viewer))
                                button.danger #cancel type="submit" { "Cancel run" }
                            }
                        }
                        form.inline #rerun-form method="post" action=(format!("{href}/rerun")) {
                            (csrf_field(viewer))
                            button #rerun type="submit" { "Rerun" }
                        }
                    }
                }
                @if !tasks.is_empty() {
                    h2 { "Graph" }
                    div.scroll { (graph::svg(&page.graph)) }
                    h2 { "Tasks" }
                    div.scroll {
                        table.tasks {
                            thead { tr { th { "Task" } th { "Status" } th { "Steps" } th.hide-narrow { "Agent" } th.num.hide-narrow { "Attempt" } th { "Started" } th.num { "Duration" } } }
                            tbody {
                                @for task in tasks {
                                    tr data-key=(format!("task-{}", task.name)) {
                                        td { a href=(task_href(&run.job, run.number, &task.name)) { (task.name) } }
                                        td { (status(&task.status))
                                            @if let Some(reason) = &task.reason { br; small.muted { (reason) } } }
                                        td {
                                            @for step in &task.steps {
                                                span title=(format!("{}: {}", step.name, step.status)) { (step.name) " " (status(&step.status)) } " "
                                            }
                                        }
                                        td.hide-narrow { (optional(&task.agent)) }
                                        td.num.hide-narrow { (task.attempt) }
                                        td { (maybe_when(task.started_at, viewer.now)) }
                                        td.num { (lasting(task.started_at, task.finished_at, viewer.now)) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            (live_script())
        },
    )
}

/// What `/jobs/{job}/runs/{n}/tasks/{task}` shows.
#[derive(Debug, Clone)]
pub struct TaskPage {
    /// The run (without its tasks).
    pub run: Run,
    pub task: Task,
    /// The log's tail, which the page opens on; `None` before the task
    /// started.
    pub log: Option<LogView>,
    /// The whole log, as text.
    pub raw_href: String,
    pub report: Option<kiln_junit::Report>,
    pub artifacts: Vec<Artifact>,
}

/// Failures shown at most, and slowest tests.
const FAILURES_SHOWN: usize = 50;
const SLOWEST_SHOWN: usize = 10;

fn human_size(bytes: i64) -> String {
    let bytes = bytes.max(0) as f64;
    for (unit, scale) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= scale as f64 {
            return format!("{:.1} {unit}", bytes / scale as f64);
        }
    }
    format!("{bytes} B")
}

fn report_section(report: &kiln_junit::Report) -> Markup {
    let mut failures = Vec::new();
    let mut all = Vec::new();
    for suite in &report.suites {
        for case in &suite.cases {
            if matches!(
                case.status,
                kiln_junit::Status::Failed | kiln_junit::Status::Error
            ) {
                failures.push((suite, case));
            }
            all.push((suite, case));
        }
    }
    all.sort_by(|a, b| b.1.time_seconds.total_cmp(&a.1.time_seconds));
    html! {
        p #report-counts {
            strong { (report.tests) } " tests: "
            span class=(if report.failures + report.errors > 0 { "status s-failure" } else { "status s-success" }) {
                (report.failures) " failed"
            }
            " · " (report.errors) " errors · " (report.skipped) " skipped · "
            (format!("{:.2}", report.time_seconds)) " s"
        }
        @if !failures.is_empty() {
            h3 { "Failures" }
            ul {
                @for (suite, case) in failures.iter().take(FAILURES_SHOWN) {
                    li {
                        code { (suite.name) " › " (case.classname) "." (case.name) }
                        @if let Some(message) = &case.message { ": " (message) }
                    }
                }
            }
            @if failures.len() > FAILURES_SHOWN {
                p.muted { "and " (failures.len() - FAILURES_SHOWN) " more" }
            }
        }
        @if !all.is_empty() {
            h3 { "Slowest tests" }
            div.scroll {
                table {
                    thead { tr { th { "Test" } th.num { "Time" } } }
                    tbody {
                        @for (suite, case) in all.iter().take(SLOWEST_SHOWN) {
                            tr { td { code { (suite.name) " › " (case.name) } } td.num { (format!("{:.3} s", case.time_seconds)) } }
                        }
                    }
                }
            }
        }
    }
}

/// `/jobs/{job}/runs/{n}/tasks/{task}`: the log's tail, rendered here,
/// the test report and the artifacts.
pub fn task(viewer: &Viewer, page: &TaskPage) -> String {
    let run = &page.run;
    let task = &page.task;
    layout(
        viewer,
        &format!("{} · run #{} of {}", task.name, run.number, run.job),
        html! {
            p.crumbs {
                a href="/jobs" { "Jobs" } " / "
                a href=(job_href(&run.job)) { (run.job) } " / "
                a href=(run_href(&run.job, run.number)) { "run #" (run.number) } " / "
            }
            h1 { "Task " (task.name) " " span #task-status { (status(&task.status)) } }
            dl.facts {
                dt { "Agent" } dd { (optional(&task.agent)) }
                dt { "Attempt" } dd { (task.attempt) }
                dt { "Started" } dd { (maybe_when(task.started_at, viewer.now)) }
                dt { "Duration" } dd { (optional(&elapsed(task.started_at, task.finished_at, viewer.now))) }
                @if let Some(reason) = &task.reason { dt { "Why" } dd { (reason) } }
            }
            @if !task.steps.is_empty() {
                h2 { "Steps" }
                ol.steps {
                    @for step in &task.steps {
                        li {
                            (status(&step.status)) " " strong { (step.name) }
                            @if let Some(code) = step.exit_code { span.muted { "exit " (code) } }
                            span.muted { (optional(&elapsed(step.started_at, step.finished_at, viewer.now))) }
                        }
                    }
                }
            }
            h2 #log-title { "Log" }
            @match &page.log {
                None => p.note { "The task has not started: no log yet." },
                Some(log) => {
                    @let first = log.lines.first().map_or(0, |l| l.number);
                    @let last = log.lines.last().map_or(0, |l| l.number);
                    p.muted #log-where {
                        span #log-range {
                            @if log.lines.is_empty() {
                                "The log is empty."
                            } @else if first == 1 && last == log.total_lines {
                                "The whole log: " (log.total_lines) " lines."
                            } @else {
                                "Lines " (first) "–" (last) " of " (log.total_lines)
                                " (" (human_size(log.length as i64)) "), numbered as in the whole log."
                            }
                        }
                        " "
                        a #raw-log href=(page.raw_href) { "Download the raw log" }
                    }
                    // An ended task that printed nothing has nothing to page,
                    // search or follow.
                    @if log.lines.is_empty() && !log.live {} @else {
                    div #log-view data-window=(log.window_href) data-total=(log.total_lines)
                        data-live=(if log.live { "1" } else { "0" })
                        data-unfinished=(if log.unfinished { "1" } else { "0" }) {
                        @if log.sections.iter().any(|s| s.first_line.is_some()) {
                            nav.log-steps aria-label="Steps in the log" {
                                @for section in &log.sections {
                                    @if let Some(line) = section.first_line {
                                        a href=(format!("#L{line}")) {
                                            (section.name)
                                            span.muted {
                                                " " (section.status.replace('_', " "))
                                                @if let Some(duration) = &section.duration { " · " (duration) }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                        div.log-tools #log-tools hidden {
                            button #log-older type="button" { "Earlier lines" }
                            form #log-search role="search" {
                                label for="log-q" { "Search the log" }
                                input #log-q type="search" name="q" autocomplete="off";
                                button #log-next type="submit" { "Next" }
                                button #log-prev type="button" { "Previous" }
                                span #log-found role="status" aria-live="polite" {}
                            }
                        }
                        div.log role="log" aria-labelledby="log-title" tabindex="0" {
                            (crate::log::lines_html(&log.lines, log))
                        }
                        div.log-tools #log-tools-end hidden {
                            button #log-newer type="button" { "Later lines" }
                            button #log-end type="button" { "Last lines" }
                            span #log-follow role="status" aria-live="polite" {}
                        }
                    }
                    script type="module" src=(assets::log_script()) {}
                    }
                }
            }
            h2 { "Test report" }
            @match &page.report {
                None => p.muted { "No test report." },
                Some(report) => (report_section(report)),
            }
            h2 { "Artifacts" }
            @if page.artifacts.is_empty() {
                p.muted { "No artifacts." }
            } @else {
                div.scroll {
                    table #artifacts {
                        thead { tr { th { "File" } th.num { "Size" } } }
                        tbody {
                            @for artifact in &page.artifacts {
                                tr {
                                    td { a href=(artifact.url) download { (artifact.path) } }
                                    td.num { (human_size(artifact.size)) }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// `/agents`: the agents connected to this server, and the queue.
pub fn agents(viewer: &Viewer, agents: &[Agent], queued: i64) -> String {
    layout(
        viewer,
        "Agents",
        html! {
            h1 { "Agents" }
            p { strong #queued { (queued) } " tasks wait for an agent." }
            @if agents.is_empty() {
                p.note { "No agent is connected to this server." }
            } @else {
                div.scroll {
                    table {
                        thead { tr { th { "Agent" } th { "State" } th { "Labels" } th { "Running" } th { "Last heartbeat" } } }
                        tbody {
                            @for agent in agents {
                                tr {
                                    td { (agent.name) }
                                    td { (agent.state) }
                                    td { @for label in &agent.labels { code { (label) } " " } }
                                    td { @for task in &agent.running_tasks { code { (task) } " " } }
                                    td { (maybe_when(agent.last_heartbeat, viewer.now)) }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// A page that says why the request was refused or failed.
pub fn problem(viewer: &Viewer, status: u16, title: &str, detail: &str) -> String {
    layout(
        viewer,
        title,
        html! {
            h1 { (title) }
            p.error role="alert" { (detail) }
            p.muted { "HTTP " (status) " · " a href="/" { "Recent runs" } }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn viewer() -> Viewer {
        Viewer {
            user: Some("ada".into()),
            admin: false,
            csrf: Some("t0k3n".into()),
            now: Utc::now(),
        }
    }

    fn run(status: &str) -> Run {
        Run {
            job: "app".into(),
            number: 7,
            status: status.into(),
            branch: Some("main".into()),
            sha: Some("0123456789abcdef".into()),
            event: "api".into(),
            error: None,
            created_at: Utc::now(),
            started_at: Some(Utc::now()),
            finished_at: None,
            trigger: Default::default(),
            pull_request: None,
            tag: None,
            tasks: Some(Vec::new()),
            statuses: None,
        }
    }

    fn task_page(live: bool, lines: Vec<crate::log::LogLine>) -> String {
        let page = TaskPage {
            run: run(if live { "running" } else { "error" }),
            task: Task {
                name: "build".into(),
                status: if live { "running" } else { "error" }.into(),
                reason: None,
                agent: Some("a1".into()),
                attempt: 1,
                started_at: Some(Utc::now()),
                finished_at: None,
                steps: Vec::new(),
            },
            log: Some(LogView {
                total_lines: lines.len() as u64,
                length: 0,
                lines,
                sections: Vec::new(),
                window_href: "/jobs/app/runs/7/tasks/build/log".into(),
                live,
                unfinished: false,
            }),
            raw_href: "/raw".into(),
            report: None,
            artifacts: Vec::new(),
        };
        task(&viewer(), &page)
    }

    #[test]
    fn an_ended_empty_log_offers_nothing_to_page_or_search() {
        let ended = task_page(false, Vec::new());
        assert!(ended.contains("The log is empty."));
        assert!(!ended.contains("log-view") && !ended.contains("log-q"));
        // A running task's empty log is followed: its lines are coming.
        let running = task_page(true, Vec::new());
        assert!(running.contains("id=\"log-view\"") && running.contains("log-q"));
        let printed = task_page(
            false,
            vec![crate::log::LogLine {
                number: 1,
                html: "hello".into(),
            }],
        );
        assert!(printed.contains("id=\"log-view\""));
    }

    #[test]
    fn every_page_says_where_you_are_and_escapes_names() {
        let login = login(
            &Viewer::anonymous(Utc::now()),
            "/jobs/x",
            Some("wrong <pw>"),
            "a\"b",
        );
        assert!(login.contains("<title>Sign in · Kiln</title>"));
        assert!(login.contains("wrong &lt;pw&gt;"));
        assert!(login.contains("value=\"a&quot;b\""));
        assert!(login.contains("action=\"/login?next=%2Fjobs%2Fx\""));
        let page = RunPage {
            run: run("running"),
            graph: Vec::new(),
            can_act: true,
            can_approve: false,
            events_after: 41,
        };
        let html = super::run(&viewer(), &page);
        assert!(html.contains("<title>Run #7 of app · Kiln</title>"));
        assert!(html.contains("name=\"csrf\" value=\"t0k3n\""));
        assert!(html.contains("id=\"cancel\""));
        assert!(html.contains("data-live=\"/api/v1/events?after=41&amp;job=app&amp;run=7\""));
        assert!(html.contains(assets::live_script()));
        assert!(
            html.contains("data-since=\""),
            "a running run's duration counts on"
        );
        let ended = super::run(
            &viewer(),
            &RunPage {
                run: Run {
                    finished_at: Some(Utc::now()),
                    ..run("success")
                },
                ..page.clone()
            },
        );
        assert!(
            !ended.contains("data-live=") && !ended.contains("data-since="),
            "an ended run's page follows no feed"
        );
        // A blocked run says why; only a maintainer gets the approve button.
        let blocked = |can_approve| {
            super::run(
                &viewer(),
                &RunPage {
                    run: run("blocked"),
                    can_approve,
                    ..page.clone()
                },
            )
        };
        assert!(blocked(true).contains("id=\"approve\""));
        assert!(blocked(true).contains("action=\"/jobs/app/runs/7/approve\""));
        assert!(blocked(true).contains("status s-blocked"));
        assert!(!blocked(false).contains("id=\"approve\""));
        assert!(blocked(false).contains("until a maintainer approves"));
        assert!(!super::run(&viewer(), &page).contains("id=\"approve\""));
        let dashboard = dashboard(
            &viewer(),
            &Dashboard {
                runs: vec![run("success")],
                paged: false,
                older: Some(12),
                events_after: 0,
            },
        );
        assert!(dashboard.contains("data-live=\"/api/v1/events?after=0\""));
        assert!(dashboard.contains("href=\"/?before=12\""));
        assert!(dashboard.contains("href=\"/jobs/app/runs/7\""));
        assert!(dashboard.contains("title=\"0123456789abcdef\""));
        assert!(dashboard.contains("status s-success"));
    }

    #[test]
    fn the_trigger_button_is_there_only_for_those_who_may() {
        let job = Job {
            name: "app".into(),
            kind: "freestyle".into(),
            repository: None,
            pipeline_path: None,
            default_branch: None,
            pipeline: None,
            visibility: "public".into(),
            forge: None,
            fork_prs: "approve".into(),
            poll_interval: None,
            poll_error: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            change: None,
        };
        let mut page = JobPage {
            job,
            runs: vec![run("success")],
            status: None,
            branch: String::new(),
            paged: false,
            older: Some(7),
            can_trigger: true,
            events_after: 3,
        };
        assert!(super::job(&viewer(), &page).contains("id=\"trigger\""));
        page.can_trigger = false;
        let html = super::job(&viewer(), &page);
        assert!(!html.contains("id=\"trigger\""));
        assert!(html.contains("/jobs/app/badge.svg?branch=main"));
        assert!(html.contains("href=\"/jobs/app?before=7\""));
        assert!(html.contains("data-live=\"/api/v1/events?after=3&amp;job=app\""));
        assert!(html.contains("data-key=\"run-app-7\""));
    }
}
