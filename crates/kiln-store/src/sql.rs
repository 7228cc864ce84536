//! What the two sqlx backends share besides the queue's rules: their
//! errors as [`StoreError`]s (so `?` works on sqlx's), and reading rows into
//! the store's types. Both schemas name and type these columns alike
//! (times as unix milliseconds, statuses and kinds as text, task specs as
//! JSON text), so one reader serves both; the SQL that selects and writes
//! them stays in each backend, in its own dialect.

use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::values::{event, job_kind, name, opt_time, spec, status, time, token_kind};
use crate::{
    Artifact, AuditEntry, AuditId, Job, JobId, JobSpec, Member, MemberRole, Result, Run, RunId,
    SecretInfo, Session, Status, StepRow, StoreError, TaskHold, TaskId, TaskRow, TokenId,
    TokenInfo, TokenLookup, User, UserId, UserToken,
};

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        StoreError::backend(error)
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(error: sqlx::migrate::MigrateError) -> Self {
        StoreError::backend(error)
    }
}

/// Begins a transaction on `pool` — with `statement` such as `BEGIN
/// IMMEDIATE`, else the plain `BEGIN` — in a task of its own.
///
/// sqlx counts a BEGIN as the connection's transaction only once the call
/// has returned. A caller dropped while it is under way (a gRPC call whose
/// agent was killed) would hand the connection back to the pool inside a
/// transaction nobody ends: every later transaction on it then fails
/// ("begin_with at non-zero transaction depth") and its single statements
/// never commit — on SQLite's one writer, the whole server stops. Begun in
/// its own task, the call always completes; a transaction nobody takes any
/// more is dropped there, which rolls it back.
pub async fn begin<DB: sqlx::Database>(
    pool: &sqlx::Pool<DB>,
    statement: Option<&'static str>,
) -> Result<sqlx::Transaction<'static, DB>> {
    let pool = pool.clone();
    let begun = tokio::spawn(async move {
        match statement {
            Some(statement) => pool.begin_with(statement).await,
            None => pool.begin().await,
        }
    });
    match begun.await {
        Ok(transaction) => Ok(transaction?),
        Err(task) => Err(StoreError::backend(task)),
    }
}

/// `NotFound(what)` when `result` failed on a foreign key — the job or
/// task a new row belongs to does not exist; any other error as it is.
pub fn or_missing<T>(
    result: std::result::Result<T, sqlx::Error>,
    what: impl FnOnce() -> String,
) -> Result<T> {
    match result {
        Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
            Err(StoreError::NotFound(what()))
        }
        other => Ok(other?),
    }
}

/// A JSON encoding the store made of its own values failed: a bug, but
/// reported as an error rather than a panic.
pub fn json<T: serde::Serialize + ?Sized>(what: &str, value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| crate::values::Corrupt(format!("{what}: {e}")).into())
}

/// A row of either backend, read by column name as the store's columns
/// are typed.
pub trait StoreRow: Row {
    fn int(&self, column: &str) -> Result<i64>;
    fn opt_int(&self, column: &str) -> Result<Option<i64>>;
    fn text(&self, column: &str) -> Result<String>;
    fn opt_text(&self, column: &str) -> Result<Option<String>>;
    fn flag(&self, column: &str) -> Result<bool>;
    fn bytes(&self, column: &str) -> Result<Vec<u8>>;
    fn opt_bytes(&self, column: &str) -> Result<Option<Vec<u8>>>;
}

impl<R> StoreRow for R
where
    R: Row,
    for<'c> &'c str: ColumnIndex<R>,
    i64: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    String: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    bool: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    Vec<u8>: for<'r> Decode<'r, R::Database> + Type<R::Database>,
{
    fn int(&self, column: &str) -> Result<i64> {
        Ok(self.try_get(column)?)
    }

    fn opt_int(&self, column: &str) -> Result<Option<i64>> {
        Ok(self.try_get(column)?)
    }

    fn text(&self, column: &str) -> Result<String> {
        Ok(self.try_get(column)?)
    }

    fn opt_text(&self, column: &str) -> Result<Option<String>> {
        Ok(self.try_get(column)?)
    }

    fn flag(&self, column: &str) -> Result<bool> {
        Ok(self.try_get(column)?)
    }

    fn bytes(&self, column: &str) -> Result<Vec<u8>> {
        Ok(self.try_get(column)?)
    }

    fn opt_bytes(&self, column: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.try_get(column)?)
    }
}

/// The columns [`job`] reads.
pub const JOB_COLUMNS: &str = "id, name, kind, repository, pipeline_path, default_branch, \
     pipeline, visibility, forge, fork_prs, poll_interval, created_at, updated_at";

pub fn job(row: &impl StoreRow) -> Result<Job> {
    Ok(Job {
        id: JobId(row.int("id")?),
        spec: JobSpec {
            name: row.text("name")?,
            kind: job_kind(&row.text("kind")?)?,
            repository: row.opt_text("repository")?,
            pipeline_path: row.opt_text("pipeline_path")?,
            default_branch: row.opt_text("default_branch")?,
            pipeline: row.opt_text("pipeline")?,
            visibility: name(&row.text("visibility")?)?,
            forge: row.opt_text("forge")?,
            fork_prs: name(&row.text("fork_prs")?)?,
            poll_interval: row.opt_int("poll_interval")?,
        },
        created_at: time(row.int("created_at")?)?,
        updated_at: time(row.int("updated_at")?)?,
    })
}

/// A job's polling state, from [`crate::polls::POLL_COLUMNS`].
pub fn job_poll(row: &impl StoreRow) -> Result<crate::JobPoll> {
    let refs = row
        .opt_text("refs")?
        .map(|text| serde_json::from_str(&text))
        .transpose()
        .map_err(|e| crate::values::Corrupt(format!("a job's polled refs: {e}")))?;
    Ok(crate::JobPoll {
        job_id: JobId(row.int("job_id")?),
        refs,
        polled_at: row.opt_int("polled_at")?.map(time).transpose()?,
        error: row.opt_text("error")?,
        next_poll_at: time(row.int("next_poll_at")?)?,
    })
}

/// Selects runs as [`run`] reads them; callers append `WHERE …`.
pub const RUN_SELECT: &str = "SELECT r.id, r.job_id, j.name AS job, r.number, r.status, \
     r.branch, r.sha, r.event, r.error, r.created_at, r.started_at, r.finished_at, r.deadline, \
     r.trigger_kind, r.trigger_user, r.pull_request, r.tag FROM runs r JOIN jobs j ON j.id = r.job_id";

pub fn run(row: &impl StoreRow) -> Result<Run> {
    Ok(Run {
        id: RunId(row.int("id")?),
        job_id: JobId(row.int("job_id")?),
        job: row.text("job")?,
        number: row.int("number")?,
        status: status(&row.text("status")?)?,
        branch: row.opt_text("branch")?,
        sha: row.opt_text("sha")?,
        event: event(&row.text("event")?)?,
        error: row.opt_text("error")?,
        created_at: time(row.int("created_at")?)?,
        started_at: opt_time(row.opt_int("started_at")?)?,
        finished_at: opt_time(row.opt_int("finished_at")?)?,
        deadline: opt_time(row.opt_int("deadline")?)?,
        trigger: crate::RunTrigger::new(
            name(&row.text("trigger_kind")?)?,
            row.opt_text("trigger_user")?,
        ),
        pull_request: row
            .opt_text("pull_request")?
            .map(|text| {
                serde_json::from_str(&text)
                    .map_err(|e| crate::values::Corrupt(format!("run pull request: {e}")))
            })
            .transpose()?,
        tag: row.opt_text("tag")?,
    })
}

/// The columns [`forge`] reads.
pub const FORGE_COLUMNS: &str =
    "name, kind, api_url, token, webhook_secret, created_at, updated_at";

pub fn forge(row: &impl StoreRow) -> Result<crate::Forge> {
    Ok(crate::Forge {
        name: row.text("name")?,
        kind: row.text("kind")?,
        api_url: row.text("api_url")?,
        token: row.opt_bytes("token")?,
        webhook_secret: row.opt_bytes("webhook_secret")?,
        created_at: time(row.int("created_at")?)?,
        updated_at: time(row.int("updated_at")?)?,
    })
}

/// The columns [`queued_trigger`] reads.
pub const QUEUED_TRIGGER_COLUMNS: &str = "id, job_id, delivery, payload, received_at";

pub fn queued_trigger(row: &impl StoreRow) -> Result<crate::QueuedTrigger> {
    Ok(crate::QueuedTrigger {
        id: crate::QueuedTriggerId(row.int("id")?),
        job_id: JobId(row.int("job_id")?),
        delivery: row.text("delivery")?,
        trigger: row.text("payload")?,
        received_at: time(row.int("received_at")?)?,
    })
}

/// The columns [`task`] reads.
macro_rules! task_columns {
    () => {
        "id, run_id, name, status, reason, spec, attempt, agent, lease_expires_at, \
         cancel_requested, queued_at, started_at, finished_at"
    };
}

/// The columns [`task`] reads, for `SELECT … FROM` a CTE of tasks.
pub const TASK_COLUMNS: &str = task_columns!();

/// Selects tasks as [`task`] reads them; callers append `WHERE …`.
pub const TASK_SELECT: &str = concat!("SELECT ", task_columns!(), " FROM tasks");

/// A task without its steps (the caller adds them).
pub fn task(row: &impl StoreRow) -> Result<TaskRow> {
    Ok(TaskRow {
        id: TaskId(row.int("id")?),
        run_id: RunId(row.int("run_id")?),
        name: row.text("name")?,
        status: status(&row.text("status")?)?,
        reason: row.opt_text("reason")?,
        spec: spec(&row.text("spec")?)?,
        attempt: row.int("attempt")?,
        agent: row.opt_text("agent")?,
        lease_expires_at: opt_time(row.opt_int("lease_expires_at")?)?,
        cancel_requested: row.flag("cancel_requested")?,
        queued_at: opt_time(row.opt_int("queued_at")?)?,
        started_at: opt_time(row.opt_int("started_at")?)?,
        finished_at: opt_time(row.opt_int("finished_at")?)?,
        steps: Vec::new(),
    })
}

/// Selects steps as [`step`] reads them, with their `task_id`.
pub const STEP_SELECT: &str =
    "SELECT task_id, position, name, status, exit_code, started_at, finished_at FROM steps";

/// A step, with the id of its task.
pub fn step(row: &impl StoreRow) -> Result<(TaskId, StepRow)> {
    Ok((
        TaskId(row.int("task_id")?),
        StepRow {
            index: row.int("position")?,
            name: row.text("name")?,
            status: status(&row.text("status")?)?,
            exit_code: row.opt_int("exit_code")?,
            started_at: opt_time(row.opt_int("started_at")?)?,
            finished_at: opt_time(row.opt_int("finished_at")?)?,
        },
    ))
}

/// Selects holds as [`task_hold`] reads them; callers append `WHERE …`.
pub const HOLD_SELECT: &str =
    "SELECT id, run_id, name, status, attempt, agent, cancel_requested, started_at FROM tasks";

pub fn task_hold(row: &impl StoreRow) -> Result<TaskHold> {
    Ok(TaskHold {
        id: TaskId(row.int("id")?),
        run_id: RunId(row.int("run_id")?),
        name: row.text("name")?,
        status: status(&row.text("status")?)?,
        attempt: row.int("attempt")?,
        agent: row.opt_text("agent")?,
        cancel_requested: row.flag("cancel_requested")?,
        started_at: opt_time(row.opt_int("started_at")?)?,
    })
}

/// What ending a task needs to know of it, as [`held`] reads it.
#[derive(Debug, Clone)]
pub struct Held {
    pub id: TaskId,
    pub run_id: RunId,
    pub status: Status,
    pub attempt: i64,
    pub max_attempts: i64,
    pub cancel_requested: bool,
    pub lease_holder: Option<String>,
}

impl Held {
    /// Whether `holder` holds the task: it runs under `holder`'s lease,
    /// in `holder`'s attempt.
    pub fn by(&self, holder: &crate::Holder<'_>) -> bool {
        self.status == Status::Running
            && self.lease_holder.as_deref() == Some(holder.agent)
            && self.attempt == holder.attempt
    }

    /// Its attempt, as [`crate::queue::after_end`] needs it. A run past
    /// its deadline is stopped by `expire`, which ends its running tasks
    /// itself, so the only stop a report meets is a cancel.
    pub fn attempt(&self) -> crate::queue::Attempt {
        crate::queue::Attempt {
            number: self.attempt,
            max: self.max_attempts,
            stop: self.cancel_requested.then_some(crate::queue::Stop::Cancel),
        }
    }
}

/// Selects tasks as [`held`] reads them; callers append `WHERE …`.
pub const HELD_SELECT: &str = "SELECT id, run_id, status, attempt, max_attempts, \
     cancel_requested, lease_holder FROM tasks";

pub fn held(row: &impl StoreRow) -> Result<Held> {
    Ok(Held {
        id: TaskId(row.int("id")?),
        run_id: RunId(row.int("run_id")?),
        status: status(&row.text("status")?)?,
        attempt: row.int("attempt")?,
        max_attempts: row.int("max_attempts")?,
        cancel_requested: row.flag("cancel_requested")?,
        lease_holder: row.opt_text("lease_holder")?,
    })
}

/// Selects the tasks of a run as [`task_state`] reads them, with their
/// ids; callers append `WHERE run_id = …`.
pub const STATE_SELECT: &str = "SELECT id, name, status, reason, spec FROM tasks";

/// A task as the queue's rules see it, with its id.
pub fn task_state(row: &impl StoreRow) -> Result<(TaskId, crate::queue::TaskState)> {
    let spec = spec(&row.text("spec")?)?;
    Ok((
        TaskId(row.int("id")?),
        crate::queue::TaskState {
            name: row.text("name")?,
            status: status(&row.text("status")?)?,
            needs: spec.needs,
            allow_failure: spec.allow_failure,
            reason: row.opt_text("reason")?,
        },
    ))
}

/// A secret's name and when it changed, from `SELECT name, updated_at`.
pub fn secret_info(row: &impl StoreRow) -> Result<SecretInfo> {
    Ok(SecretInfo {
        name: row.text("name")?,
        updated_at: time(row.int("updated_at")?)?,
        allow_forks: row.flag("allow_forks")?,
    })
}

/// A sealed secret, from `SELECT name, sealed`.
pub fn sealed(row: &impl StoreRow) -> Result<(String, Vec<u8>)> {
    Ok((row.text("name")?, row.bytes("sealed")?))
}

/// A chunk of a log, from `SELECT seq, data`.
pub fn log_chunk(row: &impl StoreRow) -> Result<(i64, Vec<u8>)> {
    Ok((row.int("seq")?, row.bytes("data")?))
}

pub fn artifact(row: &impl StoreRow) -> Result<Artifact> {
    Ok(Artifact {
        path: row.text("path")?,
        size: row.int("size")?,
        content_type: row.text("content_type")?,
        blob_key: row.text("blob_key")?,
        expires_at: opt_time(row.opt_int("expires_at")?)?,
    })
}

/// The columns [`token`] reads, of `tokens t`.
pub const TOKEN_COLUMNS: &str = "t.id, t.kind, t.name, t.is_admin, t.agent_labels, t.max_capacity";

pub fn token(row: &impl StoreRow) -> Result<TokenInfo> {
    let agent_labels =
        match row.opt_text("agent_labels")? {
            Some(text) => Some(serde_json::from_str(&text).map_err(|e| {
                crate::values::Corrupt(format!("a token's labels do not read: {e}"))
            })?),
            None => None,
        };
    Ok(TokenInfo {
        id: TokenId(row.int("id")?),
        kind: token_kind(&row.text("kind")?)?,
        name: row.text("name")?,
        is_admin: row.flag("is_admin")?,
        agent_labels,
        max_capacity: row.opt_int("max_capacity")?,
    })
}

/// The columns [`user`] reads.
pub const USER_COLUMNS: &str =
    "id, name, role, disabled, password_hash IS NOT NULL AS has_password, created_at, updated_at";

pub fn user(row: &impl StoreRow) -> Result<User> {
    user_at(row, "")
}

/// A user whose columns are named `{prefix}id`, `{prefix}name`, … (a join's).
fn user_at(row: &impl StoreRow, prefix: &str) -> Result<User> {
    let column = |name: &str| format!("{prefix}{name}");
    Ok(User {
        id: UserId(row.int(&column("id"))?),
        name: row.text(&column("name"))?,
        role: name(&row.text(&column("role"))?)?,
        disabled: row.flag(&column("disabled"))?,
        has_password: row.flag(&column("has_password"))?,
        created_at: time(row.int(&column("created_at"))?)?,
        updated_at: time(row.int(&column("updated_at"))?)?,
    })
}

/// The owner's columns of a join `… JOIN users u`, as [`user_at`] reads them with `u_`.
macro_rules! owner_columns {
    () => {
        "u.id AS u_id, u.name AS u_name, u.role AS u_role, u.disabled AS u_disabled, \
         u.password_hash IS NOT NULL AS u_has_password, \
         u.created_at AS u_created_at, u.updated_at AS u_updated_at"
    };
}

/// Selects a token's owner as [`owner`] reads it; callers append `WHERE t.id = …`.
pub const TOKEN_OWNER_SELECT: &str = concat!(
    "SELECT ",
    owner_columns!(),
    " FROM tokens t JOIN users u ON u.id = t.user_id"
);

/// A user selected with `owner_columns!` (`u_id`, `u_name`, …).
pub fn owner(row: &impl StoreRow) -> Result<User> {
    user_at(row, "u_")
}

/// Selects a user's tokens as [`user_token`] reads them; callers append `WHERE …`.
pub const USER_TOKEN_SELECT: &str = "SELECT t.id, t.name, u.name AS user_name, t.created_at, \
     t.expires_at, t.last_used_at, t.revoked_at FROM tokens t JOIN users u ON u.id = t.user_id";

pub fn user_token(row: &impl StoreRow) -> Result<UserToken> {
    Ok(UserToken {
        id: TokenId(row.int("id")?),
        name: row.text("name")?,
        user: row.text("user_name")?,
        created_at: time(row.int("created_at")?)?,
        expires_at: opt_time(row.opt_int("expires_at")?)?,
        last_used_at: opt_time(row.opt_int("last_used_at")?)?,
        revoked_at: opt_time(row.opt_int("revoked_at")?)?,
    })
}

/// Selects tokens with their owners as [`token_lookup`] reads them;
/// callers append `WHERE t.hash = …`.
pub const TOKEN_LOOKUP_SELECT: &str = concat!(
    "SELECT t.id, t.kind, t.name, t.is_admin, t.agent_labels, t.max_capacity, ",
    "t.expires_at, t.last_used_at, t.revoked_at, ",
    owner_columns!(),
    " FROM tokens t LEFT JOIN users u ON u.id = t.user_id"
);

pub fn token_lookup(row: &impl StoreRow) -> Result<TokenLookup> {
    let user = match row.opt_int("u_id")? {
        Some(_) => Some(user_at(row, "u_")?),
        None => None,
    };
    Ok(TokenLookup {
        token: token(row)?,
        user,
        expires_at: opt_time(row.opt_int("expires_at")?)?,
        last_used_at: opt_time(row.opt_int("last_used_at")?)?,
        revoked_at: opt_time(row.opt_int("revoked_at")?)?,
    })
}

/// Selects sessions with their users as [`session`] reads them; callers
/// append `WHERE s.hash = …`.
pub const SESSION_SELECT: &str = concat!(
    "SELECT s.created_at, s.expires_at, s.last_seen_at, ",
    owner_columns!(),
    " FROM sessions s JOIN users u ON u.id = s.user_id"
);

pub fn session(row: &impl StoreRow) -> Result<Session> {
    Ok(Session {
        user: user_at(row, "u_")?,
        created_at: time(row.int("created_at")?)?,
        expires_at: time(row.int("expires_at")?)?,
        last_seen_at: time(row.int("last_seen_at")?)?,
    })
}

/// Selects a job's members as [`member`] reads them; callers append `WHERE m.job_id = …`.
pub const MEMBER_SELECT: &str = "SELECT m.user_id, u.name AS user_name, m.role, m.updated_at \
     FROM members m JOIN users u ON u.id = m.user_id";

pub fn member(row: &impl StoreRow) -> Result<Member> {
    Ok(Member {
        user_id: UserId(row.int("user_id")?),
        user: row.text("user_name")?,
        role: name(&row.text("role")?)?,
        updated_at: time(row.int("updated_at")?)?,
    })
}

/// Selects the job named by the `name` placeholder as [`job_and_role`]
/// reads it, with the role of the user of the `user` placeholder.
pub fn job_and_role_select(user: &str, name: &str) -> String {
    format!(
        "SELECT {JOB_COLUMNS}, (SELECT m.role FROM members m WHERE m.job_id = jobs.id \
         AND m.user_id = {user}) AS member_role FROM jobs WHERE name = {name}"
    )
}

pub fn job_and_role(row: &impl StoreRow) -> Result<(Job, Option<MemberRole>)> {
    let role = row
        .opt_text("member_role")?
        .as_deref()
        .map(name)
        .transpose()?;
    Ok((job(row)?, role))
}

/// A row of `SELECT job_id, role FROM members`.
pub fn member_role(row: &impl StoreRow) -> Result<(JobId, MemberRole)> {
    Ok((JobId(row.int("job_id")?), name(&row.text("role")?)?))
}

/// The columns [`audit_entry`] reads.
pub const AUDIT_COLUMNS: &str = "id, at, actor, action, object, detail, source";

pub fn audit_entry(row: &impl StoreRow) -> Result<AuditEntry> {
    Ok(AuditEntry {
        id: AuditId(row.int("id")?),
        at: time(row.int("at")?)?,
        actor: row.text("actor")?,
        action: row.text("action")?,
        object: row.text("object")?,
        detail: row.opt_text("detail")?,
        source: row.opt_text("source")?,
    })
}

/// Counts per status, from `SELECT status, COUNT(*) AS n … GROUP BY status`.
pub fn counts(rows: &[impl StoreRow]) -> Result<Vec<(Status, i64)>> {
    rows.iter()
        .map(|row| Ok((status(&row.text("status")?)?, row.int("n")?)))
        .collect()
}

/// Selects outbox rows as [`commit_status`] reads them; callers append
/// `WHERE …`.
pub const COMMIT_STATUS_SELECT: &str = "SELECT s.id, s.forge, f.kind AS forge_kind, \
     s.repository, s.sha, s.context, s.run_id, s.run_status, s.version, s.attempts, s.sent_at, \
     s.error FROM commit_statuses s LEFT JOIN forges f ON f.name = s.forge";

pub fn commit_status(row: &impl StoreRow) -> Result<crate::CommitStatus> {
    Ok(crate::CommitStatus {
        id: crate::CommitStatusId(row.int("id")?),
        forge: row.text("forge")?,
        forge_kind: row.opt_text("forge_kind")?,
        repository: row.text("repository")?,
        sha: row.text("sha")?,
        context: row.text("context")?,
        run_id: RunId(row.int("run_id")?),
        run_status: status(&row.text("run_status")?)?,
        version: row.int("version")?,
        attempts: row.int("attempts")?,
        sent_at: opt_time(row.opt_int("sent_at")?)?,
        error: row.opt_text("error")?,
    })
}

/// Selects runs whose status the outbox may not hold yet, as
/// [`status_candidate`] reads them: runs of jobs whose forge has a token
/// (one without reports nothing), with a commit, whose status no row
/// holds, and that no newer run of the job on that commit took the row
/// from (the context is `kiln/{job}`, as the server writes it).
/// `{finished}` is the backend's test of `finished_at` against the look's
/// start, `{limit}` its placeholder for the limit.
pub fn status_candidates_select(finished: &str, limit: &str) -> String {
    format!(
        "SELECT r.id, j.name AS job, j.repository, j.forge, r.number, r.status, r.sha, \
         COALESCE((SELECT q.payload FROM queued_triggers q WHERE q.run_id = r.id LIMIT 1), \
         (SELECT q.payload FROM queued_triggers q WHERE q.job_id = j.id ORDER BY q.id DESC \
         LIMIT 1)) AS trigger_payload \
         FROM runs r JOIN jobs j ON j.id = r.job_id \
         JOIN forges f ON f.name = j.forge AND f.token IS NOT NULL \
         WHERE r.sha IS NOT NULL AND ({finished}) \
         AND NOT EXISTS (SELECT 1 FROM commit_statuses s WHERE s.sha = r.sha \
         AND s.forge = j.forge AND s.context = 'kiln/' || j.name \
         AND (s.run_id > r.id OR (s.run_id = r.id AND s.run_status = r.status))) \
         ORDER BY r.id DESC LIMIT {limit}"
    )
}

pub fn status_candidate(row: &impl StoreRow) -> Result<crate::StatusCandidate> {
    Ok(crate::StatusCandidate {
        run_id: RunId(row.int("id")?),
        job: row.text("job")?,
        job_repository: row.opt_text("repository")?,
        forge: row.text("forge")?,
        number: row.int("number")?,
        status: status(&row.text("status")?)?,
        sha: row.text("sha")?,
        trigger: row.opt_text("trigger_payload")?,
    })
}
