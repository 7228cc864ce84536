//! The contract every [`Database`] backend must meet, one test per case,
//! each on a fresh, empty store. A backend's test binary makes them with
//! [`testsuite!`](crate::testsuite!), given a function that makes a fresh
//! store, runs a test on it and cleans up:
//!
//! ```text
//! async fn with_store<F, Fut>(test: F)
//! where
//!     F: FnOnce(MyStore) -> Fut,
//!     Fut: Future<Output = ()> + Send + 'static,
//! {
//!     let store = MyStore::open_fresh().await;
//!     test(store).await;
//! }
//!
//! kiln_store::testsuite!(with_store);
//! ```
//!
//! Time is always passed in (`now`), so leases and deadlines expire without
//! sleeping. Failures panic with what was expected, as tests do.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use crate::queue::Retry;
use crate::queue::cases::{self, Observed};
use crate::{
    Artifact, AuditFilter, Claim, Database, Event, Holder, Job, JobId, JobKind, JobSpec,
    LatestRuns, LogAppend, MemberRole, NewAuditEntry, NewRun, NewTask, NewUser, NewUserToken,
    Refusal, RunDetail, RunFilter, RunId, RunScope, Status, StepRow, StoreError, TaskHold, TaskId,
    TaskResult, TaskRow, TokenKind, Undelivered, Upserted, User, UserChange, UserRole, Visibility,
};
use crate::{
    ForkPrs, NewForge, NewQueuedTrigger, PollOutcome, PullRequest, RunTrigger, TriggerKind,
};
use crate::{StatusOutcome, WantedStatus};

/// One `#[tokio::test]` per case of the contract, in the module it is
/// invoked in. `$with` is called with each test, an
/// `FnOnce(Store) -> impl Future<Output = ()> + Send + 'static`, and must
/// run it on a fresh store (see the [module docs](crate::testsuite)).
#[macro_export]
macro_rules! testsuite {
    ($with:expr) => {
        $crate::testsuite!(@borrowing $with;
            tokens, jobs, secrets, delete_job_cascades, run_numbering,
            invalid_pipeline_run, run_keeps_its_pipeline, needs_release_and_skip, skipped_at_creation,
            allow_failure, labels_and_order, unplaceable, fair_between_jobs, steps,
            retry_on_failure, stale_attempts_are_fenced, agent_tokens_are_bound, ended_leases_are_lost, no_retry_when_pointless, lease_expiry, holder_checks, wide_run, undelivered,
            cancel, blocked_runs, deadline, logs, log_limit, dropped_calls_leave_nothing_open, artifacts_and_reports, artifact_expiry, list_runs, latest_runs, counts,
            queue_cases, duplicate_user, update_user, last_admin_stays, token_lookup_states,
            revoke_token, user_tokens_without_hashes, touch_token, members,
            members_cascade, creator_is_maintainer, job_and_role, runs_are_audited_with_their_number, sessions_expire, audit_filters_and_paging,
            failed_sign_ins, forges, queued_triggers, commit_statuses, polls);
        // Races between claimers: they take the store, and more threads.
        $crate::testsuite!(@owning $with; claims_are_exclusive, concurrent_workers);
    };
    (@borrowing $with:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                ($with)(|db| async move { $crate::testsuite::$case(&db).await }).await;
            }
        )*
    };
    (@owning $with:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                ($with)(|db| async move { $crate::testsuite::$case(db).await }).await;
            }
        )*
    };
}

// --- helpers

/// A fixed instant plus `seconds`; milliseconds are what backends keep.
pub fn at(seconds: i64) -> DateTime<Utc> {
    match Utc.timestamp_millis_opt(1_700_000_000_000 + seconds * 1000) {
        chrono::LocalResult::Single(time) => time,
        _ => panic!("test time {seconds}s is out of range"),
    }
}

/// The tasks of a pipeline file, none skipped.
pub fn tasks(yaml: &str) -> Vec<NewTask> {
    let pipeline = kiln_pipeline::parse("test.kiln.yml", yaml)
        .unwrap_or_else(|e| panic!("test pipeline is invalid: {e:?}\n{yaml}"));
    pipeline
        .tasks
        .into_iter()
        .map(|task| NewTask {
            task,
            skip_reason: None,
        })
        .collect()
}

pub fn new_run(tasks: Vec<NewTask>) -> NewRun {
    NewRun {
        branch: Some("main".into()),
        sha: Some("0123456789abcdef0123456789abcdef01234567".into()),
        event: Event::Push,
        error: None,
        timeout: None,
        tasks,
        pipeline: None,
        audit: None,
        trigger: RunTrigger::default(),
        pull_request: None,
        tag: None,
        queued_trigger: None,
        blocked: false,
    }
}

pub fn freestyle(name: &str) -> JobSpec {
    JobSpec {
        name: name.into(),
        kind: JobKind::Freestyle,
        repository: None,
        pipeline_path: None,
        default_branch: None,
        pipeline: Some("version: 1\ntasks:\n  a:\n    steps:\n      - run: true\n".into()),
        visibility: Visibility::Private,
        forge: None,
        fork_prs: ForkPrs::Approve,
        poll_interval: None,
    }
}

/// A poll is claimed by one holder at a time, only when due; its refs and
/// error are kept, a failed poll keeps the refs seen before, and a claim
/// left by a stopped server expires.
pub async fn polls<D: Database>(db: &D) {
    let job = job(db, "polled").await;
    assert_eq!(db.get_poll(job.id).await.unwrap(), None);
    let first = db.claim_poll(job.id, "a", at(0), at(60)).await.unwrap();
    let first = first.expect("a job never polled is due");
    assert_eq!((first.refs, first.error), (None, None));
    assert_eq!(
        db.claim_poll(job.id, "b", at(1), at(61)).await.unwrap(),
        None,
        "claimed by a"
    );
    let refs: std::collections::BTreeMap<String, String> =
        [("refs/heads/main".to_string(), "a".repeat(40))].into();
    let outcome = PollOutcome {
        refs: Some(refs.clone()),
        error: None,
        polled_at: at(2),
        next_poll_at: at(10),
    };
    assert!(
        !db.finish_poll(job.id, "b", &outcome).await.unwrap(),
        "b holds nothing"
    );
    assert!(db.finish_poll(job.id, "a", &outcome).await.unwrap());
    assert_eq!(
        db.claim_poll(job.id, "b", at(5), at(65)).await.unwrap(),
        None,
        "not due before next_poll_at"
    );
    let second = db.claim_poll(job.id, "b", at(10), at(70)).await.unwrap();
    assert_eq!(second.expect("due").refs, Some(refs.clone()));
    let failed = PollOutcome {
        refs: None,
        error: Some("cannot reach it".into()),
        polled_at: at(11),
        next_poll_at: at(20),
    };
    assert!(db.finish_poll(job.id, "b", &failed).await.unwrap());
    let stored = db.get_poll(job.id).await.unwrap().expect("polled");
    assert_eq!(stored.refs, Some(refs));
    assert_eq!(stored.error.as_deref(), Some("cannot reach it"));
    assert_eq!(
        (stored.polled_at, stored.next_poll_at),
        (Some(at(11)), at(20))
    );

    // A claim whose holder stopped expires at its lease.
    assert!(
        db.claim_poll(job.id, "c", at(20), at(30))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        db.claim_poll(job.id, "d", at(29), at(39)).await.unwrap(),
        None
    );
    assert!(
        db.claim_poll(job.id, "d", at(30), at(40))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        !db.finish_poll(job.id, "c", &failed).await.unwrap(),
        "c lost it"
    );
}

async fn job<D: Database>(db: &D, name: &str) -> Job {
    db.create_job(&freestyle(name), None, at(0))
        .await
        .unwrap_or_else(|e| panic!("create job {name}: {e}"))
}

async fn create<D: Database>(db: &D, job: &Job, run: NewRun, now: DateTime<Utc>) -> RunDetail {
    db.create_run(job.id, run, now)
        .await
        .unwrap_or_else(|e| panic!("create run of {}: {e}", job.spec.name))
}

async fn run<D: Database>(db: &D, job: &Job, number: i64) -> RunDetail {
    db.get_run(job.id, number)
        .await
        .expect("get_run")
        .unwrap_or_else(|| panic!("run #{number} of {} is missing", job.spec.name))
}

fn task<'a>(detail: &'a RunDetail, name: &str) -> &'a TaskRow {
    detail
        .tasks
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no task {name} in run #{}", detail.run.number))
}

fn statuses(detail: &RunDetail) -> Vec<(&str, Status)> {
    detail
        .tasks
        .iter()
        .map(|t| (t.name.as_str(), t.status))
        .collect()
}

pub fn claim_of(holder: &str, labels: &[&str], now: DateTime<Utc>) -> Claim {
    Claim {
        holder: holder.into(),
        labels: labels.iter().map(|s| s.to_string()).collect(),
        lease: Duration::from_secs(60),
        now,
    }
}

async fn claim<D: Database>(db: &D, holder: &str, now: DateTime<Utc>) -> Option<TaskRow> {
    db.claim_task(&claim_of(holder, &[], now))
        .await
        .expect("claim_task")
}

/// Claims the next task, which must be `name`.
async fn claim_named<D: Database>(db: &D, holder: &str, name: &str, now: DateTime<Utc>) -> TaskRow {
    let task = claim(db, holder, now)
        .await
        .unwrap_or_else(|| panic!("{holder} expected to claim {name}, got nothing"));
    assert_eq!(task.name, name, "{holder} claimed the wrong task");
    task
}

async fn finish<D: Database>(
    db: &D,
    task: &TaskRow,
    holder: &str,
    status: Status,
    now: DateTime<Utc>,
) -> bool {
    db.finish_task(
        task.id,
        &Holder::new(holder, task.attempt),
        &TaskResult {
            status,
            reason: None,
            retry: Retry::Allowed,
            now,
        },
    )
    .await
    .expect("finish_task")
    .is_some()
}

/// Claims every queued task, so runs of earlier tests do not get in the
/// way of a test that claims.
async fn drain<D: Database>(db: &D) {
    while let Some(task) = claim(db, "drain", at(0)).await {
        assert!(finish(db, &task, "drain", Status::Success, at(0)).await);
    }
}

// --- tests

pub async fn tokens<D: Database>(db: &D) {
    assert!(
        !db.has_admin_token().await.unwrap(),
        "fresh database has no admin"
    );
    let agent = db
        .insert_token("hash-agent", TokenKind::Agent, "builder-1", false, at(0))
        .await
        .unwrap();
    assert!(!db.has_admin_token().await.unwrap());
    let admin = db
        .insert_token("hash-admin", TokenKind::User, "admin", true, at(0))
        .await
        .unwrap();
    assert_ne!(agent, admin);
    assert!(db.has_admin_token().await.unwrap());
    let found = db
        .find_token("hash-admin")
        .await
        .unwrap()
        .expect("admin token");
    assert_eq!(found.id, admin);
    assert_eq!(found.kind, TokenKind::User);
    assert_eq!(found.name, "admin");
    assert!(found.is_admin);
    let found = db
        .find_token("hash-agent")
        .await
        .unwrap()
        .expect("agent token");
    assert_eq!((found.kind, found.is_admin), (TokenKind::Agent, false));
    assert!(db.find_token("nope").await.unwrap().is_none());
    match db
        .insert_token("hash-agent", TokenKind::User, "again", false, at(1))
        .await
    {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("duplicate token hash: expected Conflict, got {other:?}"),
    }
}

pub async fn jobs<D: Database>(db: &D) {
    let spec = freestyle("jobs-a");
    let created = db.create_job(&spec, None, at(0)).await.unwrap();
    assert_eq!(created.spec, spec);
    assert_eq!((created.created_at, created.updated_at), (at(0), at(0)));
    assert_eq!(db.get_job("jobs-a").await.unwrap(), Some(created.clone()));
    assert!(db.get_job("jobs-missing").await.unwrap().is_none());
    match db.create_job(&spec, None, at(1)).await {
        Err(StoreError::Conflict(message)) => assert!(message.contains("jobs-a"), "{message}"),
        other => panic!("second create: expected Conflict, got {other:?}"),
    }

    let (same, how) = db.upsert_job(&spec, None, at(2)).await.unwrap();
    assert_eq!(how, Upserted::Unchanged);
    assert_eq!(same, created, "unchanged upsert keeps updated_at");

    let git = JobSpec {
        name: "jobs-a".into(),
        kind: JobKind::Git,
        repository: Some("file:///srv/repo.git".into()),
        pipeline_path: Some(".kiln.yml".into()),
        default_branch: Some("main".into()),
        pipeline: None,
        visibility: Visibility::Public,
        // Kept as given: the server checks that the forge exists.
        forge: Some("hub".into()),
        fork_prs: ForkPrs::Ignore,
        poll_interval: Some(60),
    };
    let (updated, how) = db.upsert_job(&git, None, at(3)).await.unwrap();
    assert_eq!(how, Upserted::Updated);
    assert_eq!(updated.id, created.id);
    assert_eq!(updated.spec, git);
    assert_eq!((updated.created_at, updated.updated_at), (at(0), at(3)));

    let (fresh, how) = db
        .upsert_job(&freestyle("jobs-b"), None, at(4))
        .await
        .unwrap();
    assert_eq!(how, Upserted::Created);
    assert_eq!(fresh.spec.name, "jobs-b");

    let names: Vec<String> = db
        .list_jobs()
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.spec.name)
        .filter(|n| n.starts_with("jobs-"))
        .collect();
    assert_eq!(names, ["jobs-a", "jobs-b"], "listed by name");

    assert!(db.delete_job("jobs-b").await.unwrap());
    assert!(!db.delete_job("jobs-b").await.unwrap(), "already gone");
    assert!(db.get_job("jobs-b").await.unwrap().is_none());
}

pub async fn secrets<D: Database>(db: &D) {
    let job = job(db, "secrets").await;
    db.put_secret(job.id, "TOKEN", b"sealed-1", true, at(1))
        .await
        .unwrap();
    db.put_secret(job.id, "API_KEY", b"sealed-2", true, at(2))
        .await
        .unwrap();
    db.put_secret(job.id, "TOKEN", b"sealed-3", false, at(3))
        .await
        .unwrap();
    let listed: Vec<(String, DateTime<Utc>, bool)> = db
        .list_secrets(job.id)
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.name, s.updated_at, s.allow_forks))
        .collect();
    // Setting a secret again sets whether forks may have it again too.
    assert_eq!(
        listed,
        [
            ("API_KEY".to_string(), at(2), true),
            ("TOKEN".to_string(), at(3), false)
        ]
    );
    let sealed = db
        .sealed_secrets(job.id, &["TOKEN".into(), "MISSING".into()])
        .await
        .unwrap();
    assert_eq!(sealed, [("TOKEN".to_string(), b"sealed-3".to_vec())]);
    assert!(db.sealed_secrets(job.id, &[]).await.unwrap().is_empty());
    assert!(db.delete_secret(job.id, "TOKEN").await.unwrap());
    assert!(!db.delete_secret(job.id, "TOKEN").await.unwrap());
    assert_eq!(db.list_secrets(job.id).await.unwrap().len(), 1);
    match db.put_secret(JobId(-1), "X", b"x", false, at(4)).await {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("secret of a missing job: expected NotFound, got {other:?}"),
    }
}

pub async fn delete_job_cascades<D: Database>(db: &D) {
    let job = job(db, "cascade").await;
    db.put_secret(job.id, "S", b"s", false, at(0))
        .await
        .unwrap();
    let detail = create(db, &job, new_run(tasks(PAIR)), at(0)).await;
    let a = claim_named(db, "agent", "a", at(1)).await;
    assert!(
        db.append_log(a.id, &Holder::new("agent", 1), 0, b"hello")
            .await
            .unwrap()
    );
    db.add_artifact(a.id, 1, &artifact("out.txt"))
        .await
        .unwrap();
    db.put_report(a.id, 1, "junit", "{}").await.unwrap();
    assert!(db.delete_job("cascade").await.unwrap());
    assert!(db.list_secrets(job.id).await.unwrap().is_empty());
    assert!(
        db.get_run(job.id, detail.run.number)
            .await
            .unwrap()
            .is_none()
    );
    assert!(db.get_task(a.id).await.unwrap().is_none());
    assert!(
        db.read_log(a.id, 1, 0, usize::MAX)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(db.list_artifacts(a.id, 1).await.unwrap().is_empty());
    assert!(db.get_report(a.id, 1, "junit").await.unwrap().is_none());
    assert!(
        claim(db, "agent", at(2)).await.is_none(),
        "b went with its job"
    );
}

const PAIR: &str = "version: 1
tasks:
  a:
    steps:
      - run: echo a
  b:
    needs: [a]
    steps:
      - run: echo b
";

pub async fn run_numbering<D: Database>(db: &D) {
    let first = job(db, "numbering-1").await;
    let second = job(db, "numbering-2").await;
    for expected in 1..=3 {
        let detail = create(db, &first, new_run(tasks(PAIR)), at(expected)).await;
        assert_eq!(detail.run.number, expected);
        assert_eq!(detail.run.job, "numbering-1");
        assert_eq!(detail.run.job_id, first.id);
        assert_eq!(detail.run.created_at, at(expected));
    }
    let other = create(db, &second, new_run(tasks(PAIR)), at(9)).await;
    assert_eq!(other.run.number, 1, "numbers are per job");
    let two = run(db, &first, 2).await;
    assert_eq!(two.run.number, 2);
    assert_eq!(
        db.get_run_by_id(two.run.id).await.unwrap(),
        Some(two.run.clone()),
        "by id as by number"
    );
    assert!(db.get_run_by_id(RunId(-1)).await.unwrap().is_none());
    assert_eq!(two.run.branch.as_deref(), Some("main"));
    assert_eq!(two.run.event, Event::Push);
    assert_eq!(
        statuses(&two),
        [("a", Status::Queued), ("b", Status::Pending)]
    );
    assert_eq!(two.run.status, Status::Queued);
    assert_eq!(task(&two, "a").queued_at, Some(at(2)));
    assert_eq!(task(&two, "b").queued_at, None);
    assert_eq!(task(&two, "a").attempt, 1);
    assert!(db.get_run(first.id, 4).await.unwrap().is_none());
    match db.create_run(JobId(-1), new_run(tasks(PAIR)), at(0)).await {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("run of a missing job: expected NotFound, got {other:?}"),
    }
}

pub async fn invalid_pipeline_run<D: Database>(db: &D) {
    let job = job(db, "invalid").await;
    let mut bad = new_run(Vec::new());
    bad.error = Some(".kiln.yml:3:5: unknown key `stpes`".into());
    bad.timeout = Some(Duration::from_secs(60));
    let detail = create(db, &job, bad, at(5)).await;
    assert_eq!(detail.run.number, 1);
    assert_eq!(detail.run.status, Status::Error);
    assert_eq!(
        detail.run.error.as_deref(),
        Some(".kiln.yml:3:5: unknown key `stpes`")
    );
    assert!(detail.tasks.is_empty());
    assert_eq!(detail.run.finished_at, Some(at(5)));
    assert_eq!(detail.run.started_at, None);
    // The next run still gets the next number.
    let next = create(db, &job, new_run(tasks(PAIR)), at(6)).await;
    assert_eq!(next.run.number, 2);
    assert_eq!(next.run.error, None);
}

/// Each run keeps the text it was made from, whatever later runs keep.
pub async fn run_keeps_its_pipeline<D: Database>(db: &D) {
    let job = job(db, "kept").await;
    // Quotes, a backslash, a tab and non-ASCII letters: kept byte for byte.
    let first_text = format!("{PAIR}# r\u{e9}sum\u{e9} \"v1\" \\ \t\n");
    let mut first = new_run(tasks(PAIR));
    first.pipeline = Some(first_text.clone());
    let first = create(db, &job, first, at(1)).await;
    let mut second = new_run(tasks(DIAMOND));
    second.pipeline = Some(DIAMOND.into());
    let second = create(db, &job, second, at(2)).await;
    // An invalid pipeline is kept too: a rerun meets the same error.
    let mut invalid = new_run(Vec::new());
    invalid.error = Some("test.kiln.yml:1:1: expected a mapping".into());
    invalid.pipeline = Some("- not a pipeline\n".into());
    let invalid = create(db, &job, invalid, at(3)).await;
    // A git run whose file could not be read has none.
    let mut unread = new_run(Vec::new());
    unread.error = Some("the pipeline file .kiln.yml does not exist".into());
    let unread = create(db, &job, unread, at(4)).await;

    let kept = |id| async move { db.run_pipeline(id).await.expect("run_pipeline") };
    assert_eq!(kept(first.run.id).await, Some(first_text));
    assert_eq!(kept(second.run.id).await.as_deref(), Some(DIAMOND));
    assert_eq!(
        kept(invalid.run.id).await.as_deref(),
        Some("- not a pipeline\n")
    );
    assert_eq!(kept(unread.run.id).await, None);
    assert_eq!(kept(RunId(-1)).await, None, "no such run");
}

const DIAMOND: &str = "version: 1
tasks:
  a:
    steps:
      - run: echo a
  b:
    needs: [a]
    steps:
      - run: echo b
  c:
    needs: [b]
    steps:
      - run: echo c
  d:
    steps:
      - run: echo d
";

pub async fn needs_release_and_skip<D: Database>(db: &D) {
    let job = job(db, "needs").await;

    // Success releases the dependant.
    create(db, &job, new_run(tasks(DIAMOND)), at(0)).await;
    let a = claim_named(db, "agent-1", "a", at(10)).await;
    assert_eq!(a.status, Status::Running);
    assert_eq!(a.agent.as_deref(), Some("agent-1"));
    assert_eq!(a.started_at, Some(at(10)));
    assert_eq!(a.lease_expires_at, Some(at(70)));
    let started = run(db, &job, 1).await;
    assert_eq!(started.run.status, Status::Running);
    assert_eq!(started.run.started_at, Some(at(10)));
    assert!(finish(db, &a, "agent-1", Status::Success, at(20)).await);
    let after = run(db, &job, 1).await;
    assert_eq!(
        statuses(&after),
        [
            ("a", Status::Success),
            ("b", Status::Queued),
            ("c", Status::Pending),
            ("d", Status::Queued),
        ]
    );
    let done = task(&after, "a");
    assert_eq!(done.finished_at, Some(at(20)));
    assert_eq!(done.lease_expires_at, None);
    assert_eq!(done.agent.as_deref(), Some("agent-1"), "agent is kept");
    assert_eq!(task(&after, "b").queued_at, Some(at(20)));
    assert_eq!(after.run.status, Status::Running);
    drain(db).await;
    let all = run(db, &job, 1).await;
    assert_eq!(all.run.status, Status::Success);
    assert_eq!(all.run.finished_at, Some(at(0)), "drain finishes at(0)");

    // A failure skips dependants, transitively; independent tasks go on.
    create(db, &job, new_run(tasks(DIAMOND)), at(100)).await;
    let a = claim_named(db, "agent-1", "a", at(110)).await;
    assert!(finish(db, &a, "agent-1", Status::Failure, at(120)).await);
    let after = run(db, &job, 2).await;
    assert_eq!(
        statuses(&after),
        [
            ("a", Status::Failure),
            ("b", Status::Skipped),
            ("c", Status::Skipped),
            ("d", Status::Queued),
        ]
    );
    assert_eq!(
        task(&after, "b").reason.as_deref(),
        Some("needs `a`, which ended failure")
    );
    assert_eq!(
        task(&after, "c").reason.as_deref(),
        Some("needs `b`, which ended skipped")
    );
    assert_eq!(task(&after, "c").finished_at, Some(at(120)));
    assert_eq!(after.run.status, Status::Running, "d is still queued");
    assert_eq!(after.run.finished_at, None);
    let d = claim_named(db, "agent-2", "d", at(130)).await;
    assert!(finish(db, &d, "agent-2", Status::Success, at(140)).await);
    let done = run(db, &job, 2).await;
    assert_eq!(done.run.status, Status::Failure);
    assert_eq!(done.run.finished_at, Some(at(140)));
    assert_eq!(done.run.started_at, Some(at(110)));
    assert_eq!(done.run.error, None);
}

pub async fn skipped_at_creation<D: Database>(db: &D) {
    let job = job(db, "when").await;
    let mut new = tasks(DIAMOND);
    new[0].skip_reason = Some("`when` does not match branch dev".into());
    let detail = create(db, &job, new_run(new), at(0)).await;
    assert_eq!(
        statuses(&detail),
        [
            ("a", Status::Skipped),
            ("b", Status::Skipped),
            ("c", Status::Skipped),
            ("d", Status::Queued),
        ]
    );
    assert_eq!(
        task(&detail, "a").reason.as_deref(),
        Some("`when` does not match branch dev")
    );
    assert_eq!(
        task(&detail, "b").reason.as_deref(),
        Some("needs `a`, which ended skipped")
    );
    assert_eq!(task(&detail, "a").queued_at, None);
    assert!(
        task(&detail, "a")
            .steps
            .iter()
            .all(|s| s.status == Status::Skipped),
        "steps of a task that will not run are skipped"
    );
    assert_eq!(detail.run.status, Status::Queued);
    assert_eq!(
        detail,
        run(db, &job, 1).await,
        "create returns what get reads"
    );
    drain(db).await;

    // Nothing to run: the run is over as soon as it is created.
    let mut new = tasks(PAIR);
    new[0].skip_reason = Some("no".into());
    let detail = create(db, &job, new_run(new), at(5)).await;
    assert_eq!(
        statuses(&detail),
        [("a", Status::Skipped), ("b", Status::Skipped)]
    );
    assert_eq!(detail.run.status, Status::Success);
    assert_eq!(detail.run.finished_at, Some(at(5)));
}

pub async fn allow_failure<D: Database>(db: &D) {
    let job = job(db, "allow-failure").await;
    let yaml = "version: 1
tasks:
  lint:
    allow-failure: true
    steps:
      - run: false
  deploy:
    needs: [lint]
    steps:
      - run: echo deploy
";
    create(db, &job, new_run(tasks(yaml)), at(0)).await;
    let lint = claim_named(db, "agent", "lint", at(1)).await;
    assert!(finish(db, &lint, "agent", Status::Failure, at(2)).await);
    let after = run(db, &job, 1).await;
    assert_eq!(
        statuses(&after),
        [("lint", Status::Failure), ("deploy", Status::Queued)]
    );
    let deploy = claim_named(db, "agent", "deploy", at(3)).await;
    assert!(finish(db, &deploy, "agent", Status::Success, at(4)).await);
    assert_eq!(run(db, &job, 1).await.run.status, Status::Success);
}

pub async fn labels_and_order<D: Database>(db: &D) {
    let job = job(db, "labels").await;
    let yaml = "version: 1
tasks:
  gpu:
    runs-on: [linux, gpu]
    steps:
      - run: nvidia-smi
  any:
    steps:
      - run: echo any
";
    create(db, &job, new_run(tasks(yaml)), at(0)).await;
    create(db, &job, new_run(tasks(yaml)), at(1)).await;
    // Older first; a task is only given to an agent with all its labels.
    let claim_with = |labels: &'static [&'static str], now| {
        let claim = claim_of("agent", labels, now);
        async move { db.claim_task(&claim).await.expect("claim_task") }
    };
    let first = claim_with(&["linux"], at(2)).await.expect("any of run 1");
    assert_eq!(
        (first.name.as_str(), first.run_id),
        ("any", run(db, &job, 1).await.run.id)
    );
    let second = claim_with(&["linux"], at(2)).await.expect("any of run 2");
    assert_eq!(second.name, "any");
    assert_eq!(second.run_id, run(db, &job, 2).await.run.id);
    assert!(
        claim_with(&["linux"], at(2)).await.is_none(),
        "gpu needs gpu"
    );
    assert!(claim_with(&["gpu", "mac"], at(2)).await.is_none());
    let gpu = claim_with(&["gpu", "linux", "big"], at(3))
        .await
        .expect("a gpu task");
    assert_eq!(gpu.name, "gpu");
    assert_eq!(gpu.run_id, run(db, &job, 1).await.run.id, "oldest first");
    assert_eq!(gpu.spec.runs_on, ["linux", "gpu"]);
    let gpu_2 = claim_with(&["gpu", "linux"], at(3))
        .await
        .expect("the gpu task of run 2");
    assert_eq!(gpu_2.run_id, run(db, &job, 2).await.run.id);
    for task in [&first, &second, &gpu, &gpu_2] {
        assert!(finish(db, task, "agent", Status::Success, at(4)).await);
    }
    drain(db).await;
    assert_eq!(run(db, &job, 1).await.run.status, Status::Success);
    assert_eq!(run(db, &job, 2).await.run.status, Status::Success);
}

const PLACEMENTS: &str = "version: 1
tasks:
  gpu:
    runs-on: [gpu, linux]
    steps:
      - run: nvidia-smi
  db:
    image: alpine:3
    services:
      postgres: { image: postgres:16 }
    steps:
      - run: psql -h postgres
";

/// Services need a docker agent; label sets of queued tasks are listed; the
/// "no connected agent" reason is set, kept and cleared only on those tasks.
pub async fn unplaceable<D: Database>(db: &D) {
    let job = job(db, "placements").await;
    create(db, &job, new_run(tasks(PLACEMENTS)), at(0)).await;
    let mut sets = db.queued_label_sets().await.unwrap();
    sets.sort();
    assert_eq!(
        sets,
        [
            vec!["executor:docker".to_string()],
            vec!["gpu".to_string(), "linux".to_string()]
        ]
    );
    let gpu = vec!["gpu".to_string(), "linux".to_string()];
    let reason = format!("{} (labels: gpu, linux)", crate::NO_AGENT_REASON);
    assert_eq!(db.note_unplaceable(&gpu, Some(&reason)).await.unwrap(), 1);
    assert_eq!(
        db.note_unplaceable(&gpu, Some(&reason)).await.unwrap(),
        0,
        "already noted"
    );
    let detail = run(db, &job, 1).await;
    assert_eq!(
        task(&detail, "gpu").reason.as_deref(),
        Some(reason.as_str())
    );
    assert_eq!(task(&detail, "db").reason, None);

    // Claiming clears the reason; without the executor label, the
    // services task is not claimable.
    let gpu_task = db
        .claim_task(&claim_of("plain", &["gpu", "linux"], at(1)))
        .await
        .unwrap()
        .expect("an agent with both labels takes the gpu task");
    assert_eq!(gpu_task.name, "gpu");
    assert_eq!(
        gpu_task.reason, None,
        "claimed: no longer waiting for an agent"
    );
    assert!(finish(db, &gpu_task, "plain", Status::Success, at(1)).await);
    assert!(
        db.claim_task(&claim_of("plain", &["gpu", "linux"], at(1)))
            .await
            .unwrap()
            .is_none()
    );
    let claimed = db
        .claim_task(&claim_of("docker", &["executor:docker"], at(2)))
        .await
        .unwrap()
        .expect("a docker agent takes the task with services");
    assert_eq!(claimed.name, "db");
    assert!(finish(db, &claimed, "docker", Status::Success, at(2)).await);
    assert_eq!(
        db.queued_label_sets().await.unwrap(),
        Vec::<Vec<String>>::new()
    );

    // Clearing touches only its own reason.
    create(db, &job, new_run(tasks(PLACEMENTS)), at(3)).await;
    assert_eq!(db.note_unplaceable(&gpu, Some(&reason)).await.unwrap(), 1);
    assert_eq!(db.note_unplaceable(&gpu, None).await.unwrap(), 1);
    assert_eq!(task(&run(db, &job, 2).await, "gpu").reason, None);
}

/// Claims are fair between jobs: the task claimed belongs to the job with
/// the fewest running tasks, so one job's long queue cannot starve another
/// job's task queued a moment later.
pub async fn fair_between_jobs<D: Database>(db: &D) {
    let big = job(db, "fair-big").await;
    let small = job(db, "fair-small").await;
    let mut yaml = String::from("version: 1\ntasks:\n");
    for i in 0..50 {
        yaml.push_str(&format!("  a{i:02}:\n    steps:\n      - run: echo {i}\n"));
    }
    create(db, &big, new_run(tasks(&yaml)), at(0)).await;
    let one = "version: 1
tasks:
  b:
    steps:
      - run: echo b
";
    create(db, &small, new_run(tasks(one)), at(1)).await;
    let small_run = run(db, &small, 1).await.run.id;
    let big_run = run(db, &big, 1).await.run.id;

    // One claimer: the big job's oldest task first (both jobs run nothing,
    // so age decides), then the small job's, as the big one now runs one.
    let first = claim(db, "agent", at(2)).await.expect("a task");
    let second = claim(db, "agent", at(2)).await.expect("a task");
    assert_eq!(first.run_id, big_run, "tie on running counts: oldest first");
    assert_eq!(
        second.run_id, small_run,
        "the small job's task is among the first 2 claims"
    );
    assert!(finish(db, &second, "agent", Status::Success, at(3)).await);

    // The big job runs 3, the small job none: a newer small task goes
    // before the big job's older ones.
    let mut running = vec![first];
    for _ in 0..2 {
        let task = claim(db, "agent", at(3)).await.expect("a task");
        assert_eq!(task.run_id, big_run, "only the big job has queued tasks");
        running.push(task);
    }
    create(db, &small, new_run(tasks(one)), at(10)).await;
    let newer = run(db, &small, 2).await.run.id;
    let next = claim(db, "agent", at(11)).await.expect("a task");
    assert_eq!(next.run_id, newer, "fewest running beats oldest queued");
    assert!(finish(db, &next, "agent", Status::Success, at(12)).await);
    for task in &running {
        assert!(finish(db, task, "agent", Status::Success, at(12)).await);
    }

    // A batch claim is fair within itself: the small job's new task is
    // among it, each task is claimed once, all by the one holder.
    create(db, &small, new_run(tasks(one)), at(13)).await;
    let newest = run(db, &small, 3).await.run.id;
    let batch = db
        .claim_tasks(&claim_of("batcher", &[], at(14)), 3)
        .await
        .unwrap();
    assert_eq!(batch.len(), 3);
    assert_eq!(batch.iter().filter(|t| t.run_id == newest).count(), 1);
    let ids: HashSet<_> = batch.iter().map(|t| t.id).collect();
    assert_eq!(ids.len(), 3, "no task twice");
    assert!(
        batch
            .iter()
            .all(|t| t.status == Status::Running && t.agent.as_deref() == Some("batcher"))
    );
    assert_eq!(run(db, &small, 3).await.run.status, Status::Running);
    for task in &batch {
        assert!(finish(db, task, "batcher", Status::Success, at(15)).await);
    }
    drain(db).await;
    assert!(
        db.claim_tasks(&claim_of("batcher", &[], at(16)), 4)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(run(db, &big, 1).await.run.status, Status::Success);
    assert_eq!(run(db, &small, 2).await.run.status, Status::Success);
}

const STEPS: &str = "version: 1
tasks:
  build:
    steps:
      - name: fetch
        run: git fetch
      - name: compile
        run: cargo build
      - name: test
        run: cargo test
";

pub async fn steps<D: Database>(db: &D) {
    let job = job(db, "steps").await;
    let detail = create(db, &job, new_run(tasks(STEPS)), at(0)).await;
    let steps = &task(&detail, "build").steps;
    assert_eq!(
        steps
            .iter()
            .map(|s| (s.index, s.name.as_str(), s.status))
            .collect::<Vec<_>>(),
        [
            (0, "fetch", Status::Pending),
            (1, "compile", Status::Pending),
            (2, "test", Status::Pending),
        ]
    );
    let build = claim_named(db, "agent", "build", at(1)).await;
    assert_eq!(build.steps.len(), 3, "a claimed task comes with its steps");
    let fetched = StepRow {
        index: 0,
        name: "fetch".into(),
        status: Status::Success,
        exit_code: Some(0),
        started_at: Some(at(1)),
        finished_at: Some(at(2)),
    };
    assert!(
        db.update_step(build.id, &Holder::new("agent", 1), &fetched)
            .await
            .unwrap()
    );
    assert!(
        !db.update_step(build.id, &Holder::new("intruder", 1), &fetched)
            .await
            .unwrap()
    );
    let compiling = StepRow {
        index: 1,
        name: "compile".into(),
        status: Status::Running,
        exit_code: None,
        started_at: Some(at(2)),
        finished_at: None,
    };
    assert!(
        db.update_step(build.id, &Holder::new("agent", 1), &compiling)
            .await
            .unwrap()
    );
    let missing = StepRow {
        index: 7,
        ..compiling.clone()
    };
    assert!(matches!(
        db.update_step(build.id, &Holder::new("agent", 1), &missing)
            .await,
        Err(StoreError::NotFound(_))
    ));
    let now = db.get_task(build.id).await.unwrap().expect("task");
    assert_eq!(now.steps[0], fetched);
    assert_eq!(now.steps[1], compiling);
    assert_eq!(now.steps[2].status, Status::Pending);

    assert!(finish(db, &build, "agent", Status::Failure, at(5)).await);
    let ended = db.get_task(build.id).await.unwrap().expect("task");
    assert_eq!(ended.status, Status::Failure);
    assert_eq!(ended.steps[0], fetched, "ended steps are kept");
    assert_eq!(
        ended.steps[1].status,
        Status::Failure,
        "running step ends with its task"
    );
    assert_eq!(ended.steps[1].finished_at, Some(at(5)));
    assert_eq!(ended.steps[2].status, Status::Skipped, "never ran");
    assert!(
        !db.update_step(build.id, &Holder::new("agent", 1), &fetched)
            .await
            .unwrap(),
        "not running any more"
    );
}

const RETRY: &str = "version: 1
tasks:
  flaky:
    retry: 1
    steps:
      - run: ./flaky.sh
";

pub async fn agent_tokens_are_bound<D: Database>(db: &D) {
    let labels = vec!["linux".to_string(), "gpu".to_string()];
    let token = crate::NewAgentToken {
        hash: "h-builder",
        name: "builder",
        labels: Some(&labels),
        max_capacity: Some(4),
    };
    db.insert_agent_token(&token, at(0)).await.unwrap();
    let found = db.lookup_token("h-builder").await.unwrap().unwrap();
    assert_eq!(found.token.kind, TokenKind::Agent);
    assert_eq!(found.token.name, "builder");
    assert_eq!(found.token.agent_labels, Some(labels.clone()));
    assert_eq!(found.token.max_capacity, Some(4));
    // One agent, one live token.
    let again = crate::NewAgentToken {
        hash: "h-builder-2",
        ..token.clone()
    };
    conflict(db.insert_agent_token(&again, at(1)).await, "second token");
    assert_eq!(db.revoke_agent_tokens("builder", at(2)).await.unwrap(), 1);
    let revoked = db.lookup_token("h-builder").await.unwrap().unwrap();
    assert_eq!(revoked.refusal(at(3)), Some(Refusal::Revoked));
    let unbounded = crate::NewAgentToken {
        labels: None,
        max_capacity: None,
        ..again
    };
    db.insert_agent_token(&unbounded, at(4)).await.unwrap();
    let found = db.lookup_token("h-builder-2").await.unwrap().unwrap();
    assert_eq!(
        (found.token.agent_labels, found.token.max_capacity),
        (None, None)
    );
    // The registration kind reads back.
    db.insert_token("h-shared", TokenKind::Registration, "shared", false, at(5))
        .await
        .unwrap();
    let shared = db.find_token("h-shared").await.unwrap().unwrap();
    assert_eq!(shared.kind, TokenKind::Registration);
}

/// An agent removed by an admin: its leases end, and the tasks are lost.
pub async fn ended_leases_are_lost<D: Database>(db: &D) {
    let job = job(db, "removed").await;
    create(db, &job, new_run(tasks(RETRY)), at(0)).await;
    let task = claim_named(db, "gone", "flaky", at(1)).await;
    assert_eq!(db.end_leases("gone", at(2)).await.unwrap(), 1);
    assert_eq!(db.end_leases("other", at(2)).await.unwrap(), 0);
    let touched = db.expire(at(2)).await.unwrap();
    assert_eq!(touched, [task.id]);
    let again = db.get_task(task.id).await.unwrap().unwrap();
    assert_eq!(
        (again.status, again.attempt),
        (Status::Queued, 2),
        "retried"
    );
}

/// A retry on the same agent: the lost attempt's late calls change nothing.
pub async fn stale_attempts_are_fenced<D: Database>(db: &D) {
    let job = job(db, "fenced").await;
    create(db, &job, new_run(tasks(RETRY)), at(0)).await;
    let first = claim_named(db, "agent", "flaky", at(10)).await;
    let old = Holder::new("agent", first.attempt);
    assert!(db.append_log(first.id, &old, 0, b"one").await.unwrap());
    // The lease runs out (the agent was cut off); the task is retried and
    // the same agent, back, takes the new attempt.
    db.expire(at(1000)).await.unwrap();
    let second = claim_named(db, "agent", "flaky", at(1001)).await;
    assert_eq!((second.id, second.attempt), (first.id, 2));
    let new = Holder::new("agent", 2);
    let step = StepRow {
        index: 0,
        name: "./flaky.sh".into(),
        status: Status::Success,
        exit_code: Some(0),
        started_at: Some(at(1002)),
        finished_at: Some(at(1003)),
    };
    // Everything the old attempt still sends is refused.
    assert!(!db.append_log(first.id, &old, 1, b"late").await.unwrap());
    assert!(!db.update_step(first.id, &old, &step).await.unwrap());
    assert!(!db.renew_lease(first.id, &old, at(2000)).await.unwrap());
    let success = TaskResult {
        status: Status::Success,
        reason: None,
        retry: Retry::Allowed,
        now: at(1004),
    };
    assert_eq!(
        db.finish_task(first.id, &old, &success).await.unwrap(),
        None
    );
    let holds = db.task_holds(&[first.id]).await.unwrap();
    assert!(!holds[0].held_by(&old) && holds[0].held_by(&new));
    assert_eq!(
        db.read_log(first.id, 2, 0, usize::MAX).await.unwrap(),
        [],
        "nothing of the old attempt in the new one's log"
    );
    assert_eq!(
        db.read_log(first.id, 1, 0, usize::MAX).await.unwrap(),
        [(0, b"one".to_vec())],
        "nor added to its own"
    );
    let task = db.get_task(first.id).await.unwrap().unwrap();
    assert_eq!(
        task.status,
        Status::Running,
        "the late finish changed nothing"
    );
    // The current attempt reports as usual.
    assert!(db.append_log(first.id, &new, 0, b"two").await.unwrap());
    assert!(db.update_step(first.id, &new, &step).await.unwrap());
    assert_eq!(
        db.finish_task(first.id, &new, &success).await.unwrap(),
        Some(Status::Success)
    );
}

pub async fn retry_on_failure<D: Database>(db: &D) {
    let job = job(db, "retry").await;
    create(db, &job, new_run(tasks(RETRY)), at(0)).await;
    let first = claim_named(db, "agent-1", "flaky", at(10)).await;
    assert_eq!(first.attempt, 1);
    assert!(
        db.append_log(first.id, &Holder::new("agent-1", 1), 0, b"attempt one")
            .await
            .unwrap()
    );
    let step = StepRow {
        index: 0,
        name: "./flaky.sh".into(),
        status: Status::Failure,
        exit_code: Some(1),
        started_at: Some(at(10)),
        finished_at: Some(at(11)),
    };
    assert!(
        db.update_step(first.id, &Holder::new("agent-1", 1), &step)
            .await
            .unwrap()
    );
    assert_eq!(
        db.finish_task(
            first.id,
            &Holder::new("agent-1", 1),
            &TaskResult {
                status: Status::Failure,
                reason: Some("exit code 1".into()),
                retry: Retry::Allowed,
                now: at(20),
            },
        )
        .await
        .unwrap(),
        Some(Status::Queued),
        "to be retried"
    );
    let again = db.get_task(first.id).await.unwrap().expect("task");
    assert_eq!(again.status, Status::Queued, "retried");
    assert_eq!(again.attempt, 2);
    assert_eq!(again.queued_at, Some(at(20)));
    assert_eq!(again.lease_expires_at, None);
    assert_eq!(again.finished_at, None);
    assert!(
        again
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("exit code 1")),
        "reason tells why: {:?}",
        again.reason
    );
    assert_eq!(again.steps[0].status, Status::Pending, "steps start over");
    assert_eq!(again.steps[0].exit_code, None);
    assert_eq!(
        db.read_log(first.id, 1, 0, usize::MAX).await.unwrap(),
        [(0, b"attempt one".to_vec())],
        "the first attempt's log is kept"
    );
    assert!(
        db.read_log(first.id, 2, 0, usize::MAX)
            .await
            .unwrap()
            .is_empty(),
        "the new attempt writes its own log, from seq 0"
    );
    // `queue::run_status`: nothing runs and nothing ended, so the run waits
    // for an agent again; it keeps its first start.
    let waiting = run(db, &job, 1).await.run;
    assert_eq!(waiting.status, Status::Queued);
    assert_eq!(waiting.started_at, Some(at(10)));
    assert!(
        !finish(db, &first, "agent-1", Status::Failure, at(21)).await,
        "the old holder lost it"
    );

    let second = claim_named(db, "agent-2", "flaky", at(30)).await;
    assert_eq!(second.attempt, 2);
    assert_eq!(second.agent.as_deref(), Some("agent-2"));
    assert!(
        db.append_log(second.id, &Holder::new("agent-2", 2), 0, b"attempt two")
            .await
            .unwrap()
    );
    assert_eq!(
        db.read_log(second.id, 2, 0, usize::MAX).await.unwrap(),
        [(0, b"attempt two".to_vec())],
        "chunks go to the attempt that runs"
    );
    assert_eq!(
        db.read_log(second.id, 1, 0, usize::MAX).await.unwrap(),
        [(0, b"attempt one".to_vec())],
        "seq 0 of the second attempt did not replace the first's"
    );
    assert_eq!(second.started_at, Some(at(10)), "the first start is kept");
    assert!(finish(db, &second, "agent-2", Status::Failure, at(40)).await);
    let ended = run(db, &job, 1).await;
    assert_eq!(
        task(&ended, "flaky").status,
        Status::Failure,
        "no attempts left"
    );
    assert_eq!(task(&ended, "flaky").attempt, 2);
    assert_eq!(ended.run.status, Status::Failure);
    assert_eq!(ended.run.finished_at, Some(at(40)));

    // Success is never retried.
    create(db, &job, new_run(tasks(RETRY)), at(50)).await;
    let ok = claim_named(db, "agent-1", "flaky", at(51)).await;
    assert!(finish(db, &ok, "agent-1", Status::Success, at(52)).await);
    let ended = run(db, &job, 2).await;
    assert_eq!(task(&ended, "flaky").attempt, 1);
    assert_eq!(ended.run.status, Status::Success);
}

pub async fn no_retry_when_pointless<D: Database>(db: &D) {
    let job = job(db, "misconfigured").await;
    create(db, &job, new_run(tasks(RETRY)), at(0)).await;
    let first = claim_named(db, "agent-1", "flaky", at(10)).await;
    let ended = db
        .finish_task(
            first.id,
            &Holder::new("agent-1", 1),
            &TaskResult {
                status: Status::Error,
                reason: Some("task has no image".into()),
                retry: Retry::Pointless,
                now: at(11),
            },
        )
        .await
        .unwrap();
    assert_eq!(ended, Some(Status::Error), "not queued again");
    let detail = run(db, &job, 1).await;
    let flaky = task(&detail, "flaky");
    assert_eq!(flaky.attempt, 1);
    assert_eq!(flaky.reason.as_deref(), Some("task has no image"));
    assert_eq!(detail.run.status, Status::Error);
}

pub async fn lease_expiry<D: Database>(db: &D) {
    let job = job(db, "lease").await;
    create(db, &job, new_run(tasks(RETRY)), at(0)).await;
    // Lease runs to at(60).
    let first = claim_named(db, "agent-1", "flaky", at(0)).await;
    assert!(
        db.renew_lease(first.id, &Holder::new("agent-1", 1), at(100))
            .await
            .unwrap()
    );
    assert!(
        !db.renew_lease(first.id, &Holder::new("agent-2", 1), at(500))
            .await
            .unwrap()
    );
    assert_eq!(
        db.get_task(first.id)
            .await
            .unwrap()
            .expect("task")
            .lease_expires_at,
        Some(at(100))
    );
    assert!(
        db.expire(at(99)).await.unwrap().is_empty(),
        "lease still valid"
    );
    assert_eq!(db.expire(at(101)).await.unwrap(), [first.id]);
    let again = db.get_task(first.id).await.unwrap().expect("task");
    assert_eq!((again.status, again.attempt), (Status::Queued, 2));
    assert!(
        again
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("agent lost")),
        "{:?}",
        again.reason
    );
    assert!(
        !db.renew_lease(first.id, &Holder::new("agent-1", 1), at(200))
            .await
            .unwrap()
    );
    assert!(!finish(db, &first, "agent-1", Status::Success, at(102)).await);
    assert!(
        db.expire(at(102)).await.unwrap().is_empty(),
        "queued, not expired"
    );

    let second = claim_named(db, "agent-2", "flaky", at(110)).await;
    assert_eq!(db.expire(at(171)).await.unwrap(), [second.id]);
    let ended = run(db, &job, 1).await;
    let flaky = task(&ended, "flaky");
    assert_eq!(flaky.status, Status::Error);
    assert_eq!(flaky.reason.as_deref(), Some("agent lost"));
    assert_eq!(flaky.finished_at, Some(at(171)));
    assert_eq!(ended.run.status, Status::Error);
    assert_eq!(ended.run.error.as_deref(), Some("agent lost"));
    assert_eq!(ended.run.finished_at, Some(at(171)));
    assert!(
        db.expire(at(1000)).await.unwrap().is_empty(),
        "nothing left"
    );

    // With no retry the first loss ends the task.
    create(db, &job, new_run(tasks(PAIR)), at(200)).await;
    let a = claim_named(db, "agent-1", "a", at(200)).await;
    assert_eq!(db.expire(at(261)).await.unwrap(), [a.id]);
    let ended = run(db, &job, 2).await;
    assert_eq!(
        statuses(&ended),
        [("a", Status::Error), ("b", Status::Skipped)]
    );
    assert_eq!(ended.run.status, Status::Error);
    assert_eq!(ended.run.error.as_deref(), Some("agent lost"));
}

pub async fn holder_checks<D: Database>(db: &D) {
    let job = job(db, "holder").await;
    create(db, &job, new_run(tasks(PAIR)), at(0)).await;
    let b_id = task(&run(db, &job, 1).await, "b").id;
    // Not running: nobody holds it.
    assert!(
        !db.renew_lease(b_id, &Holder::new("agent", 1), at(10))
            .await
            .unwrap()
    );
    let pending = TaskRow {
        id: b_id,
        ..claim_named(db, "agent", "a", at(1)).await
    };
    assert!(!finish(db, &pending, "agent", Status::Success, at(2)).await);
    let a = db
        .get_task(task(&run(db, &job, 1).await, "a").id)
        .await
        .unwrap()
        .expect("a");
    assert_eq!(
        db.find_task(job.id, 1, "a").await.unwrap().as_ref(),
        Some(&a),
        "found by run number and name"
    );
    assert_eq!(db.find_task(job.id, 1, "zzz").await.unwrap(), None);
    assert_eq!(db.find_task(job.id, 99, "a").await.unwrap(), None);
    assert!(!finish(db, &a, "someone-else", Status::Success, at(2)).await);
    assert!(
        !db.renew_lease(a.id, &Holder::new("someone-else", 1), at(10))
            .await
            .unwrap()
    );
    assert!(matches!(
        db.finish_task(
            a.id,
            &Holder::new("agent", 1),
            &TaskResult {
                status: Status::Running,
                reason: None,
                retry: Retry::Allowed,
                now: at(2)
            }
        )
        .await,
        Err(StoreError::Conflict(_))
    ));
    let holds = db.task_holds(&[b_id, TaskId(-1), a.id]).await.unwrap();
    assert_eq!(
        holds,
        [
            TaskHold {
                id: a.id,
                run_id: a.run_id,
                name: "a".into(),
                status: Status::Running,
                attempt: 1,
                agent: Some("agent".into()),
                cancel_requested: false,
                started_at: Some(at(1)),
            },
            TaskHold {
                id: b_id,
                run_id: a.run_id,
                name: "b".into(),
                status: Status::Pending,
                attempt: 1,
                agent: None,
                cancel_requested: false,
                started_at: None,
            },
        ],
        "in id order, the unknown id left out"
    );
    assert!(
        holds
            .iter()
            .any(|h| h.id == a.id && h.held_by(&Holder::new("agent", 1)))
    );
    assert!(
        !holds
            .iter()
            .any(|h| h.held_by(&Holder::new("someone-else", 1)))
    );
    assert_eq!(db.task_holds(&[]).await.unwrap(), []);
    assert!(finish(db, &a, "agent", Status::Success, at(3)).await);
    assert!(
        !finish(db, &a, "agent", Status::Success, at(4)).await,
        "finished twice"
    );
    assert!(
        !db.renew_lease(a.id, &Holder::new("agent", 1), at(10))
            .await
            .unwrap()
    );
    assert!(
        !finish(
            db,
            &TaskRow {
                id: TaskId(-1),
                ..a
            },
            "agent",
            Status::Success,
            at(4)
        )
        .await
    );
}

const WIDE: &str = "version: 1
tasks:
  a:
    steps:
      - run: echo one
      - run: echo two
  b:
    steps:
      - run: echo b
  c:
    steps:
      - run: echo c
";

/// Independent tasks ending one by one (the counts-only path of settling):
/// the run stays `running` until the last ends, each ended task's steps
/// are closed, and the outcome is the worst.
pub async fn wide_run<D: Database>(db: &D) {
    let job = job(db, "wide").await;
    create(db, &job, new_run(tasks(WIDE)), at(0)).await;
    let a = claim_named(db, "agent", "a", at(1)).await;
    let b = claim_named(db, "agent", "b", at(1)).await;
    assert!(
        db.update_step(
            a.id,
            &Holder::new("agent", 1),
            &StepRow {
                index: 0,
                name: "step 1".into(),
                status: Status::Running,
                exit_code: None,
                started_at: Some(at(2)),
                finished_at: None,
            }
        )
        .await
        .unwrap()
    );
    assert!(finish(db, &a, "agent", Status::Failure, at(3)).await);
    let detail = run(db, &job, 1).await;
    assert_eq!(detail.run.status, Status::Running);
    assert_eq!(
        task(&detail, "a")
            .steps
            .iter()
            .map(|s| s.status)
            .collect::<Vec<_>>(),
        [Status::Failure, Status::Skipped],
        "a's running step ends with it, the one after is skipped"
    );
    assert_eq!(task(&detail, "b").steps[0].status, Status::Pending);
    assert!(finish(db, &b, "agent", Status::Success, at(4)).await);
    assert_eq!(run(db, &job, 1).await.run.status, Status::Running);
    let c = claim_named(db, "agent", "c", at(5)).await;
    assert!(finish(db, &c, "agent", Status::Success, at(6)).await);
    let over = run(db, &job, 1).await;
    assert_eq!(over.run.status, Status::Failure);
    assert_eq!(over.run.finished_at, Some(at(6)));
}

/// Tasks claimed for an agent that never got them go back to the queue
/// as they were; a started, ended, cancelled or spared task does not.
pub async fn undelivered<D: Database>(db: &D) {
    let job = job(db, "undelivered").await;
    let detail = create(db, &job, new_run(tasks(WIDE)), at(0)).await;
    let ids: Vec<TaskId> = ["a", "b", "c"]
        .iter()
        .map(|name| task(&detail, name).id)
        .collect();
    let (a, b, c) = (ids[0], ids[1], ids[2]);
    for name in ["a", "b", "c"] {
        claim_named(db, "agent", name, at(1)).await;
    }
    let started = StepRow {
        index: 0,
        name: "echo one".into(),
        status: Status::Running,
        exit_code: None,
        started_at: Some(at(2)),
        finished_at: None,
    };
    assert!(
        db.update_step(a, &Holder::new("agent", 1), &started)
            .await
            .unwrap()
    );

    // Only the holder's tasks, only those named.
    assert_eq!(
        db.requeue_undelivered("intruder", Undelivered::AllBut(&[]))
            .await
            .unwrap(),
        Vec::<TaskId>::new()
    );
    assert_eq!(
        db.requeue_undelivered("agent", Undelivered::These(&[a, b]))
            .await
            .unwrap(),
        [b],
        "a has a started step: it reached the agent"
    );
    let b_row = db.get_task(b).await.unwrap().expect("b");
    assert_eq!(
        (b_row.status, b_row.attempt, b_row.agent.as_deref()),
        (Status::Queued, 1, None)
    );
    assert_eq!((b_row.started_at, b_row.lease_expires_at), (None, None));
    assert!(
        !db.renew_lease(b, &Holder::new("agent", 1), at(3))
            .await
            .unwrap()
    );
    // Spared by the list: the agent says it runs c.
    assert_eq!(
        db.requeue_undelivered("agent", Undelivered::AllBut(&[c]))
            .await
            .unwrap(),
        Vec::<TaskId>::new()
    );
    // Claimed again, b keeps its place and attempt.
    let again = claim_named(db, "other", "b", at(4)).await;
    assert_eq!((again.attempt, again.agent.as_deref()), (1, Some("other")));
    assert_eq!(again.started_at, Some(at(4)));
    // A task whose run is being cancelled is left to end as cancelled.
    db.cancel_run(job.id, 1, at(5)).await.unwrap();
    assert_eq!(
        db.requeue_undelivered("agent", Undelivered::AllBut(&[]))
            .await
            .unwrap(),
        Vec::<TaskId>::new()
    );
    for (id, holder) in [(a, "agent"), (b, "other"), (c, "agent")] {
        let row = db.get_task(id).await.unwrap().expect("task");
        assert!(
            finish(db, &row, holder, Status::Cancelled, at(6)).await,
            "{holder} still holds {}",
            row.name
        );
    }
}

pub async fn cancel<D: Database>(db: &D) {
    let job = job(db, "cancel").await;

    // Nothing running: over at once.
    create(db, &job, new_run(tasks(PAIR)), at(0)).await;
    let cancelled = db.cancel_run(job.id, 1, at(5)).await.unwrap();
    assert_eq!(
        statuses(&cancelled),
        [("a", Status::Cancelled), ("b", Status::Cancelled)]
    );
    assert_eq!(cancelled.run.status, Status::Cancelled);
    assert_eq!(cancelled.run.finished_at, Some(at(5)));
    assert_eq!(task(&cancelled, "a").finished_at, Some(at(5)));
    assert!(
        task(&cancelled, "a")
            .steps
            .iter()
            .all(|s| s.status == Status::Skipped)
    );
    assert_eq!(cancelled, run(db, &job, 1).await);
    assert!(
        claim(db, "agent", at(6)).await.is_none(),
        "nothing left to claim"
    );
    match db.cancel_run(job.id, 1, at(6)).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("cancelling an ended run: expected Conflict, got {other:?}"),
    }
    match db.cancel_run(job.id, 99, at(6)).await {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("cancelling a missing run: expected NotFound, got {other:?}"),
    }

    // A running task is flagged and ends `cancelled` when its agent reports.
    create(db, &job, new_run(tasks(DIAMOND)), at(10)).await;
    let a = claim_named(db, "agent", "a", at(11)).await;
    let cancelling = db.cancel_run(job.id, 2, at(12)).await.unwrap();
    assert_eq!(
        statuses(&cancelling),
        [
            ("a", Status::Running),
            ("b", Status::Cancelled),
            ("c", Status::Cancelled),
            ("d", Status::Cancelled),
        ]
    );
    assert!(task(&cancelling, "a").cancel_requested);
    assert!(!task(&cancelling, "b").cancel_requested);
    assert_eq!(cancelling.run.status, Status::Running);
    assert_eq!(cancelling.run.finished_at, None);
    assert!(
        db.renew_lease(a.id, &Holder::new("agent", 1), at(100))
            .await
            .unwrap(),
        "still held"
    );
    assert!(claim(db, "agent", at(13)).await.is_none());
    // Even a task that was about to succeed, or asks to be retried, ends cancelled.
    assert!(finish(db, &a, "agent", Status::Success, at(14)).await);
    let over = run(db, &job, 2).await;
    assert_eq!(task(&over, "a").status, Status::Cancelled);
    assert_eq!(over.run.status, Status::Cancelled);
    assert_eq!(over.run.finished_at, Some(at(14)));

    // A retry is not attempted for a cancelled run.
    create(db, &job, new_run(tasks(RETRY)), at(20)).await;
    let flaky = claim_named(db, "agent", "flaky", at(21)).await;
    db.cancel_run(job.id, 3, at(22)).await.unwrap();
    let ended = db
        .finish_task(
            flaky.id,
            &Holder::new("agent", 1),
            &TaskResult {
                status: Status::Failure,
                reason: None,
                retry: Retry::Allowed,
                now: at(23),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        ended,
        Some(Status::Cancelled),
        "what the agent saw is overruled"
    );
    let over = run(db, &job, 3).await;
    assert_eq!(task(&over, "flaky").status, Status::Cancelled);
    assert_eq!(task(&over, "flaky").attempt, 1);
    assert_eq!(over.run.status, Status::Cancelled);
}

/// A blocked run (a fork's pull request) has nothing claimable, does not
/// time out while it waits, runs once approved — once — and can be
/// cancelled unapproved.
pub async fn blocked_runs<D: Database>(db: &D) {
    let job = job(db, "blocked").await;
    let mut blocked = new_run(tasks(PAIR));
    blocked.blocked = true;
    blocked.timeout = Some(Duration::from_secs(100));
    let detail = create(db, &job, blocked.clone(), at(0)).await;
    assert_eq!(detail.run.status, Status::Blocked);
    assert_eq!(
        statuses(&detail),
        [("a", Status::Blocked), ("b", Status::Pending)]
    );
    assert!(
        claim(db, "agent", at(1)).await.is_none(),
        "nothing claimable"
    );
    assert!(
        db.expire(at(1000)).await.unwrap().is_empty(),
        "a blocked run waits past its timeout"
    );
    assert_eq!(run(db, &job, 1).await.run.status, Status::Blocked);

    let approved = db.approve_run(job.id, 1, at(1000)).await.unwrap();
    assert_eq!(approved.run.status, Status::Queued);
    assert_eq!(
        statuses(&approved),
        [("a", Status::Queued), ("b", Status::Pending)]
    );
    assert_eq!(
        approved.run.deadline,
        Some(at(1100)),
        "the timeout counts from the approval"
    );
    let a = claim(db, "agent", at(1001))
        .await
        .expect("a is claimable now");
    assert_eq!(a.name, "a");
    match db.approve_run(job.id, 1, at(1002)).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("approving a run twice: expected Conflict, got {other:?}"),
    }
    match db.approve_run(job.id, 99, at(1002)).await {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("approving a missing run: expected NotFound, got {other:?}"),
    }

    create(db, &job, blocked, at(2000)).await;
    let cancelled = db.cancel_run(job.id, 2, at(2001)).await.unwrap();
    assert_eq!(cancelled.run.status, Status::Cancelled);
    assert_eq!(
        statuses(&cancelled),
        [("a", Status::Cancelled), ("b", Status::Cancelled)]
    );
    match db.approve_run(job.id, 2, at(2002)).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("approving a cancelled run: expected Conflict, got {other:?}"),
    }
}

pub async fn deadline<D: Database>(db: &D) {
    let job = job(db, "deadline").await;
    let mut timed = new_run(tasks(DIAMOND));
    timed.timeout = Some(Duration::from_secs(600));
    let detail = create(db, &job, timed, at(0)).await;
    assert_eq!(detail.run.deadline, Some(at(600)));
    let a = claim_named(db, "agent", "a", at(1)).await;
    assert!(
        db.renew_lease(a.id, &Holder::new("agent", 1), at(5000))
            .await
            .unwrap()
    );
    assert!(db.expire(at(599)).await.unwrap().is_empty());
    let mut touched = db.expire(at(601)).await.unwrap();
    touched.sort_unstable();
    let mut expected: Vec<TaskId> = detail.tasks.iter().map(|t| t.id).collect();
    expected.sort_unstable();
    assert_eq!(touched, expected);
    let over = run(db, &job, 1).await;
    assert_eq!(
        statuses(&over),
        [
            ("a", Status::TimedOut),
            ("b", Status::Skipped),
            ("c", Status::Skipped),
            ("d", Status::Skipped),
        ]
    );
    assert!(
        task(&over, "a").cancel_requested,
        "the agent is told to stop"
    );
    assert_eq!(task(&over, "a").finished_at, Some(at(601)));
    assert_eq!(
        task(&over, "d").reason.as_deref(),
        Some("the run reached its timeout")
    );
    assert_eq!(over.run.status, Status::TimedOut);
    assert_eq!(over.run.finished_at, Some(at(601)));
    assert!(
        !finish(db, &a, "agent", Status::Success, at(602)).await,
        "too late"
    );
    assert!(
        !db.renew_lease(a.id, &Holder::new("agent", 1), at(6000))
            .await
            .unwrap()
    );
    assert_eq!(run(db, &job, 1).await.run.status, Status::TimedOut);
    assert!(db.expire(at(10_000)).await.unwrap().is_empty(), "once only");
    assert!(claim(db, "agent", at(602)).await.is_none());

    // A run that ends in time is not touched by its deadline.
    let mut timed = new_run(tasks(PAIR));
    timed.timeout = Some(Duration::from_secs(600));
    create(db, &job, timed, at(1000)).await;
    drain(db).await;
    assert!(db.expire(at(5000)).await.unwrap().is_empty());
    assert_eq!(run(db, &job, 2).await.run.status, Status::Success);
}

pub async fn logs<D: Database>(db: &D) {
    let job = job(db, "logs").await;
    let detail = create(db, &job, new_run(tasks(WIDE)), at(0)).await;
    let (a, b, c) = (
        task(&detail, "a").id,
        task(&detail, "b").id,
        task(&detail, "c").id,
    );
    for name in ["a", "b"] {
        claim_named(db, "agent", name, at(1)).await;
    }
    let append = |task_id: TaskId, holder: &'static str, seq: i64, data: &'static [u8]| async move {
        db.append_log(task_id, &Holder::new(holder, 1), seq, data)
            .await
            .expect("append_log")
    };
    assert!(append(a, "agent", 2, b"two\n").await);
    assert!(append(a, "agent", 0, b"zero\n").await);
    assert!(append(a, "agent", 1, b"one\n").await);
    // A chunk sent again (an agent retrying after a disconnect) is ignored.
    assert!(append(a, "agent", 1, b"ONE AGAIN\n").await);
    assert!(append(b, "agent", 0, b"other task\n").await);
    // Only the holder writes: not another agent, not to a queued task.
    assert!(!append(a, "intruder", 5, b"forged\n").await);
    assert!(!append(c, "agent", 0, b"not claimed\n").await);
    assert!(
        !append(TaskId(-1), "agent", 0, b"x").await,
        "a missing task"
    );
    assert_eq!(
        db.read_log(a, 1, 0, usize::MAX).await.unwrap(),
        [
            (0, b"zero\n".to_vec()),
            (1, b"one\n".to_vec()),
            (2, b"two\n".to_vec()),
        ]
    );
    assert_eq!(
        db.read_log(a, 1, 2, usize::MAX).await.unwrap(),
        [(2, b"two\n".to_vec())]
    );
    assert!(db.read_log(a, 1, 3, usize::MAX).await.unwrap().is_empty());
    assert_eq!(db.read_log(b, 1, 0, usize::MAX).await.unwrap().len(), 1);
    assert!(db.read_log(c, 1, 0, usize::MAX).await.unwrap().is_empty());
    let binary: Vec<u8> = (0..=255).collect();
    assert!(
        db.append_log(a, &Holder::new("agent", 1), 3, &binary)
            .await
            .unwrap()
    );
    assert_eq!(
        db.read_log(a, 1, 3, usize::MAX).await.unwrap(),
        [(3, binary)]
    );
    // Paged, and sized without reading it.
    let page: Vec<i64> = db
        .read_log(a, 1, 1, 2)
        .await
        .unwrap()
        .into_iter()
        .map(|(seq, _)| seq)
        .collect();
    assert_eq!(page, [1, 2]);
    assert_eq!(db.log_size(a, 1).await.unwrap(), 5 + 4 + 4 + 256);
    assert_eq!(db.log_size(c, 1).await.unwrap(), 0);
    db.delete_log(a, 1).await.unwrap();
    assert!(db.read_log(a, 1, 0, usize::MAX).await.unwrap().is_empty());
    assert_eq!(db.log_size(a, 1).await.unwrap(), 0);
    assert_eq!(
        db.read_log(b, 1, 0, usize::MAX).await.unwrap().len(),
        1,
        "others' logs stay"
    );
}

fn artifact(path: &str) -> Artifact {
    Artifact {
        path: path.into(),
        size: 42,
        content_type: "text/plain".into(),
        blob_key: format!("blobs/{path}"),
        expires_at: None,
    }
}

/// The log limit is counted in the store: a chunk crossing it is cut to
/// what fits, later ones keep nothing, a chunk sent again is not counted
/// twice, and the count is per attempt.
/// Calls dropped part-way — their caller went away, as a gRPC call does
/// when its agent is killed — leave no transaction open: later calls still
/// write, and readers see what they wrote.
pub async fn dropped_calls_leave_nothing_open<D: Database>(db: &D) {
    let job = job(db, "dropped").await;
    let detail = create(db, &job, new_run(tasks(WIDE)), at(0)).await;
    let a = task(&detail, "a").id;
    claim_named(db, "agent", "a", at(1)).await;
    let holder = Holder::new("agent", 1);
    for seq in 0..300u64 {
        // Dropped wherever it stands after 0–299 µs.
        let call = db.append_log_within(a, &holder, seq as i64, b"x", u64::MAX);
        let _ = tokio::time::timeout(std::time::Duration::from_micros(seq * 7 % 300), call).await;
    }
    let last = db
        .append_log_within(a, &holder, 1000, b"last\n", u64::MAX)
        .await
        .expect("a call after dropped ones");
    assert_eq!(last, LogAppend::Stored);
    let log = db.read_log(a, 1, 1000, 10).await.unwrap();
    assert_eq!(log, vec![(1000, b"last\n".to_vec())], "readers see it");
    let claimed = claim_named(db, "agent", "b", at(2)).await;
    assert_eq!(claimed.name, "b", "claims still work");
}

pub async fn log_limit<D: Database>(db: &D) {
    let job = job(db, "log-limit").await;
    let detail = create(db, &job, new_run(tasks(WIDE)), at(0)).await;
    let (a, b) = (task(&detail, "a").id, task(&detail, "b").id);
    for name in ["a", "b"] {
        claim_named(db, "agent", name, at(1)).await;
    }
    let holder = Holder::new("agent", 1);
    let within = |task_id: TaskId, seq: i64, data: &'static [u8], limit: u64| async move {
        db.append_log_within(task_id, &holder, seq, data, limit)
            .await
            .expect("append_log_within")
    };
    assert_eq!(within(a, 0, b"0123", 10).await, LogAppend::Stored);
    assert_eq!(
        within(a, 0, b"0123", 10).await,
        LogAppend::Stored,
        "a chunk sent again is stored once"
    );
    assert_eq!(within(a, 1, b"4567", 10).await, LogAppend::Stored);
    assert_eq!(
        within(a, 2, b"89abcdef", 10).await,
        LogAppend::OverLimit { kept: 2 }
    );
    assert_eq!(
        within(a, 3, b"more", 10).await,
        LogAppend::OverLimit { kept: 0 }
    );
    let log: Vec<u8> = db
        .read_log(a, 1, 0, usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .flat_map(|(_, data)| data)
        .collect();
    assert_eq!(
        log, b"0123456789",
        "what came before the limit, and no more"
    );
    assert_eq!(db.log_size(a, 1).await.unwrap(), 10);
    // A note past the limit goes in with no limit.
    assert_eq!(
        within(a, 1 << 40, b"limit reached", u64::MAX).await,
        LogAppend::Stored
    );
    assert_eq!(db.log_size(a, 1).await.unwrap(), 23);
    assert_eq!(
        within(b, 0, b"0123456789", 10).await,
        LogAppend::Stored,
        "each task counts its own"
    );
    assert_eq!(
        db.append_log_within(b, &Holder::new("other", 1), 1, b"x", 10)
            .await
            .unwrap(),
        LogAppend::NotHeld
    );
    assert!(
        db.append_log(b, &holder, 1, b"no limit").await.unwrap(),
        "append_log has none"
    );
}

/// An artifact keeps the instant its `expire-in` runs out, replaced with
/// the file.
pub async fn artifact_expiry<D: Database>(db: &D) {
    let job = job(db, "expiry").await;
    let detail = create(db, &job, new_run(tasks(PAIR)), at(0)).await;
    let a = task(&detail, "a").id;
    let expiring = Artifact {
        expires_at: Some(at(3600)),
        ..artifact("dist/app")
    };
    db.add_artifact(a, 1, &expiring).await.unwrap();
    db.add_artifact(a, 1, &artifact("kept")).await.unwrap();
    let listed = db.list_artifacts(a, 1).await.unwrap();
    assert_eq!(listed, [expiring.clone(), artifact("kept")]);
    let renewed = Artifact {
        expires_at: Some(at(7200)),
        ..expiring
    };
    db.add_artifact(a, 1, &renewed).await.unwrap();
    assert_eq!(
        db.list_artifacts(a, 1).await.unwrap()[0].expires_at,
        Some(at(7200))
    );
}

pub async fn artifacts_and_reports<D: Database>(db: &D) {
    let job = job(db, "results").await;
    let detail = create(db, &job, new_run(tasks(PAIR)), at(0)).await;
    let a = task(&detail, "a").id;
    assert!(db.list_artifacts(a, 1).await.unwrap().is_empty());
    db.add_artifact(a, 1, &artifact("target/app"))
        .await
        .unwrap();
    db.add_artifact(a, 1, &artifact("report.xml"))
        .await
        .unwrap();
    let replaced = Artifact {
        size: 7,
        blob_key: "blobs/new".into(),
        ..artifact("target/app")
    };
    db.add_artifact(a, 1, &replaced).await.unwrap();
    assert_eq!(
        db.list_artifacts(a, 1).await.unwrap(),
        [artifact("report.xml"), replaced],
        "by path; the same path uploaded again replaces it"
    );
    db.add_artifact(a, 2, &artifact("target/app"))
        .await
        .unwrap();
    assert_eq!(
        db.list_artifacts(a, 2).await.unwrap(),
        [artifact("target/app")],
        "each attempt has its own artifacts"
    );
    assert_eq!(db.list_artifacts(a, 1).await.unwrap().len(), 2);
    assert!(matches!(
        db.add_artifact(TaskId(-1), 1, &artifact("x")).await,
        Err(StoreError::NotFound(_))
    ));

    assert!(db.get_report(a, 1, "junit").await.unwrap().is_none());
    db.put_report(a, 1, "junit", r#"{"tests":1}"#)
        .await
        .unwrap();
    db.put_report(a, 1, "coverage", r#"{"lines":0.5}"#)
        .await
        .unwrap();
    db.put_report(a, 1, "junit", r#"{"tests":2}"#)
        .await
        .unwrap();
    assert_eq!(
        db.get_report(a, 1, "junit").await.unwrap().as_deref(),
        Some(r#"{"tests":2}"#)
    );
    assert!(db.get_report(a, 2, "junit").await.unwrap().is_none());
    db.put_report(a, 2, "junit", r#"{"tests":3}"#)
        .await
        .unwrap();
    assert_eq!(
        db.get_report(a, 1, "junit").await.unwrap().as_deref(),
        Some(r#"{"tests":2}"#),
        "each attempt has its own reports"
    );
    assert!(matches!(
        db.put_report(TaskId(-1), 1, "junit", "{}").await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn list_runs<D: Database>(db: &D) {
    let job = job(db, "listing").await;
    let other = job_named_other(db).await;
    for n in 1..=30 {
        let mut new = new_run(tasks(PAIR));
        new.branch = Some(if n % 2 == 0 { "main" } else { "dev" }.into());
        if n % 3 == 0 {
            new.error = Some("bad pipeline".into());
        }
        create(db, &job, new, at(n)).await;
    }
    create(db, &other, new_run(tasks(PAIR)), at(0)).await;
    let numbers = |filter: RunFilter| async move {
        db.list_runs(job.id, &filter)
            .await
            .expect("list_runs")
            .into_iter()
            .map(|r| r.number)
            .collect::<Vec<_>>()
    };
    let page = |limit, before| RunFilter {
        limit,
        before,
        ..RunFilter::default()
    };
    assert_eq!(numbers(page(5, None)).await, [30, 29, 28, 27, 26]);
    assert_eq!(numbers(page(5, Some(26))).await, [25, 24, 23, 22, 21]);
    assert_eq!(numbers(page(5, Some(3))).await, [2, 1]);
    assert!(numbers(page(5, Some(1))).await.is_empty());
    assert_eq!(numbers(page(100, None)).await.len(), 30);
    assert_eq!(
        numbers(page(0, None)).await.len(),
        30,
        "no limit given: a default page"
    );
    let errors = numbers(RunFilter {
        status: Some(Status::Error),
        limit: 4,
        ..RunFilter::default()
    })
    .await;
    assert_eq!(errors, [30, 27, 24, 21]);
    let main = numbers(RunFilter {
        branch: Some("main".into()),
        before: Some(10),
        limit: 3,
        ..RunFilter::default()
    })
    .await;
    assert_eq!(main, [8, 6, 4]);
    let both = numbers(RunFilter {
        status: Some(Status::Queued),
        branch: Some("dev".into()),
        limit: 50,
        ..RunFilter::default()
    })
    .await;
    assert_eq!(both, [29, 25, 23, 19, 17, 13, 11, 7, 5, 1]);
    let runs = db.list_runs(job.id, &page(1, None)).await.unwrap();
    assert_eq!(
        runs[0],
        run(db, &job, 30).await.run,
        "list shows what get reads"
    );
    assert!(
        db.list_runs(JobId(-1), &page(10, None))
            .await
            .unwrap()
            .is_empty(),
        "no such job"
    );
}

/// The dashboard's list: the newest runs across the jobs a viewer may
/// read, in pages.
pub async fn latest_runs<D: Database>(db: &D) {
    let open = db
        .create_job(
            &JobSpec {
                visibility: Visibility::Public,
                ..freestyle("open")
            },
            None,
            at(0),
        )
        .await
        .unwrap();
    let mine = job(db, "mine").await;
    let hidden = job(db, "hidden").await;
    let ivy = user(db, "ivy", UserRole::User).await;
    db.set_member(mine.id, ivy.id, MemberRole::Viewer, at(0))
        .await
        .unwrap();
    // Made in turn across the three jobs: 3 runs each.
    for n in 0..9 {
        let job = [&open, &mine, &hidden][n % 3];
        create(db, job, new_run(tasks(PAIR)), at(n as i64)).await;
    }
    let seen = |scope, before, limit| async move {
        db.latest_runs(scope, LatestRuns { before, limit })
            .await
            .expect("latest_runs")
            .into_iter()
            .map(|r| (r.job, r.number, r.id))
            .collect::<Vec<_>>()
    };
    let names = |runs: &[(String, i64, RunId)]| {
        runs.iter()
            .map(|(job, number, _)| format!("{job}#{number}"))
            .collect::<Vec<_>>()
    };
    let all = seen(RunScope::All, None, 0).await;
    assert_eq!(
        names(&all),
        [
            "hidden#3", "mine#3", "open#3", "hidden#2", "mine#2", "open#2", "hidden#1", "mine#1",
            "open#1"
        ],
        "an admin sees every job's runs, newest first"
    );
    let member = RunScope::Readable { user: Some(ivy.id) };
    let first = seen(member, None, 4).await;
    assert_eq!(names(&first), ["mine#3", "open#3", "mine#2", "open#2"]);
    let next = seen(member, Some(first[3].2), 4).await;
    assert_eq!(
        names(&next),
        ["mine#1", "open#1"],
        "the next page follows on"
    );
    assert!(seen(member, Some(next[1].2), 4).await.is_empty());
    let anonymous = seen(RunScope::Readable { user: None }, None, 0).await;
    assert_eq!(names(&anonymous), ["open#3", "open#2", "open#1"]);
    let listed = db.latest_runs(RunScope::All, LatestRuns::default()).await;
    assert_eq!(
        listed.unwrap()[0],
        run(db, &hidden, 3).await.run,
        "the list shows what get reads"
    );
    // A member no more sees the job's runs.
    db.remove_member(mine.id, ivy.id).await.unwrap();
    assert_eq!(
        names(&seen(member, None, 0).await),
        ["open#3", "open#2", "open#1"]
    );
}

async fn job_named_other<D: Database>(db: &D) -> Job {
    job(db, "listing-other").await
}

fn count(counts: &[(Status, i64)], status: Status) -> i64 {
    counts
        .iter()
        .filter(|(s, _)| *s == status)
        .map(|(_, n)| n)
        .sum()
}

pub async fn counts<D: Database>(db: &D) {
    let tasks_before = db.task_counts().await.unwrap();
    let runs_before = db.run_counts().await.unwrap();
    assert_eq!(count(&tasks_before, Status::Queued), 0, "a fresh store");
    let job = job(db, "counts").await;
    create(db, &job, new_run(tasks(DIAMOND)), at(0)).await;
    let tasks_after = db.task_counts().await.unwrap();
    let runs_after = db.run_counts().await.unwrap();
    assert_eq!(count(&tasks_after, Status::Queued), 2);
    assert_eq!(
        db.queue_depth().await.unwrap(),
        2,
        "the queue, counted alone"
    );
    assert_eq!(
        count(&tasks_after, Status::Pending) - count(&tasks_before, Status::Pending),
        2
    );
    assert_eq!(
        count(&runs_after, Status::Queued) - count(&runs_before, Status::Queued),
        1
    );
    let statuses: HashSet<Status> = tasks_after.iter().map(|(s, _)| *s).collect();
    assert_eq!(statuses.len(), tasks_after.len(), "one row per status");
    assert!(tasks_after.iter().all(|(_, n)| *n > 0));
    drain(db).await;
    let tasks_done = db.task_counts().await.unwrap();
    assert_eq!(
        count(&tasks_done, Status::Success) - count(&tasks_after, Status::Success),
        4
    );
}

/// Every whole run of the queue's table ([`crate::queue::cases`]) played
/// through claims and reports, each case a job of its own; all mismatches
/// are reported together.
pub async fn queue_cases<D: Database>(db: &D) {
    let mut failures = Vec::new();
    for (index, case) in cases::CASES.iter().enumerate() {
        let observed = play(db, case, &format!("case-{index}")).await;
        if let Err(message) = case.check(&observed) {
            failures.push(message);
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Runs `case` as job `name`: claims tasks one at a time and ends each as
/// scripted, cancelling the run where the case says.
async fn play<D: Database>(db: &D, case: &cases::Case, name: &str) -> Observed {
    let job = job(db, name).await;
    let new = case
        .pipeline()
        .into_iter()
        .map(|task| NewTask {
            skip_reason: cases::Case::skip_reason(&task, Event::Push),
            task,
        })
        .collect();
    let mut new = new_run(new);
    new.branch = Some(cases::BRANCH.into());
    let number = create(db, &job, new, at(0)).await.run.number;
    let mut attempts: Vec<(String, u32)> = Vec::new();
    let mut now = 1;
    while let Some(task) = claim(db, "player", at(now)).await {
        let n = match attempts.iter_mut().find(|(name, _)| *name == task.name) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                attempts.push((task.name.clone(), 1));
                1
            }
        };
        assert_eq!(task.attempt, i64::from(n), "attempt numbers count claims");
        if case.cancels(&task.name, n) {
            db.cancel_run(job.id, number, at(now)).await.unwrap();
        }
        let status = case.outcome(&task.name, n);
        assert!(finish(db, &task, "player", status, at(now)).await);
        now += 1;
    }
    let detail = run(db, &job, number).await;
    Observed {
        tasks: detail
            .tasks
            .iter()
            .map(|t| {
                let n = attempts.iter().find(|(name, _)| *name == t.name);
                (
                    t.name.clone(),
                    t.status,
                    n.map_or(0, |(_, n)| *n),
                    t.reason.clone(),
                )
            })
            .collect(),
        run: detail.run.status,
    }
}

/// 200 queued tasks, 8 claimers racing until none is left: every task is
/// handed out exactly once. Needs a multi-threaded runtime to mean much.
pub async fn claims_are_exclusive<D: Database>(db: D) {
    const RUNS: usize = 10;
    const TASKS_PER_RUN: usize = 20;
    const CLAIMERS: usize = 8;
    let job = job(&db, "exclusive").await;
    let mut yaml = String::from("version: 1\ntasks:\n");
    for i in 0..TASKS_PER_RUN {
        yaml.push_str(&format!("  t{i}:\n    steps:\n      - run: echo {i}\n"));
    }
    let mut expected = HashSet::new();
    for n in 0..RUNS {
        let detail = create(&db, &job, new_run(tasks(&yaml)), at(n as i64)).await;
        expected.extend(detail.tasks.iter().map(|t| t.id));
    }
    assert_eq!(expected.len(), RUNS * TASKS_PER_RUN);

    let mut claimers = Vec::new();
    for c in 0..CLAIMERS {
        let db = db.clone();
        claimers.push(tokio::spawn(async move {
            let holder = format!("claimer-{c}");
            let mut got = Vec::new();
            while let Some(task) = db
                .claim_task(&claim_of(&holder, &[], at(100)))
                .await
                .expect("claim_task")
            {
                assert_eq!(task.agent.as_deref(), Some(holder.as_str()));
                assert_eq!(task.status, Status::Running);
                got.push(task.id);
            }
            got
        }));
    }
    let mut seen = HashSet::new();
    let mut per_claimer = Vec::new();
    for claimer in claimers {
        let got = claimer.await.expect("claimer panicked");
        per_claimer.push(got.len());
        for id in got {
            assert!(seen.insert(id), "task {id} was claimed twice");
        }
    }
    assert_eq!(
        seen, expected,
        "every task claimed once (per claimer: {per_claimer:?})"
    );
    for n in 1..=RUNS as i64 {
        let detail = run(&db, &job, n).await;
        assert_eq!(detail.run.status, Status::Running);
        assert!(detail.tasks.iter().all(|t| t.status == Status::Running));
    }
}

/// Workers that claim and finish tasks while runs are cancelled under
/// them: finishing releases dependants as claims happen in the same runs,
/// which is where a backend's locking can deadlock or lose an update. Every
/// run must end (success, or cancelled), no task is claimed twice, and no
/// call fails. Needs a fresh database.
pub async fn concurrent_workers<D: Database>(db: D) {
    const RUNS: i64 = 12;
    const WORKERS: usize = 8;
    const CANCELLED: [i64; 3] = [3, 6, 9];
    let yaml = "version: 1
tasks:
  a:
    steps:
      - run: echo a
  b:
    needs: [a]
    steps:
      - run: echo b
  c:
    needs: [a]
    steps:
      - run: echo c
  d:
    needs: [b, c]
    steps:
      - run: echo d
  e:
    steps:
      - run: echo e
  f:
    steps:
      - run: echo f
";
    let job = job(&db, "workers").await;
    for n in 0..RUNS {
        create(&db, &job, new_run(tasks(yaml)), at(n)).await;
    }

    let canceller = {
        let db = db.clone();
        tokio::spawn(async move {
            let mut cancelled = Vec::new();
            for number in CANCELLED {
                tokio::task::yield_now().await;
                match db.cancel_run(job.id, number, at(50)).await {
                    Ok(_) => cancelled.push(number),
                    // It finished first: fine.
                    Err(StoreError::Conflict(_)) => {}
                    Err(e) => panic!("cancel run #{number}: {e}"),
                }
            }
            cancelled
        })
    };
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let db = db.clone();
        workers.push(tokio::spawn(async move {
            let holder = format!("worker-{w}");
            let mut done = Vec::new();
            for _ in 0..100_000 {
                match db
                    .claim_task(&claim_of(&holder, &[], at(100)))
                    .await
                    .expect("claim_task")
                {
                    Some(task) => {
                        let result = TaskResult {
                            status: Status::Success,
                            reason: None,
                            retry: Retry::Allowed,
                            now: at(100),
                        };
                        assert!(
                            db.finish_task(task.id, &Holder::new(&holder, task.attempt), &result)
                                .await
                                .expect("finish_task")
                                .is_some(),
                            "{holder} lost task {} it had just claimed",
                            task.id
                        );
                        done.push(task.id);
                    }
                    None => {
                        let counts = db.run_counts().await.expect("run_counts");
                        if counts.iter().all(|(s, _)| s.is_terminal()) {
                            return done;
                        }
                        // Others hold the remaining work; let them finish it.
                        tokio::task::yield_now().await;
                    }
                }
            }
            panic!("{holder}: runs never ended: {:?}", db.run_counts().await);
        }));
    }
    let cancelled = canceller.await.expect("canceller panicked");
    let mut seen = HashSet::new();
    for worker in workers {
        for id in worker.await.expect("worker panicked") {
            assert!(seen.insert(id), "task {id} was claimed twice");
        }
    }
    for number in 1..=RUNS {
        let detail = run(&db, &job, number).await;
        if cancelled.contains(&number) {
            assert_eq!(detail.run.status, Status::Cancelled, "run #{number}");
            assert!(
                detail
                    .tasks
                    .iter()
                    .all(|t| matches!(t.status, Status::Success | Status::Cancelled)),
                "run #{number}: {:?}",
                statuses(&detail)
            );
        } else {
            assert_eq!(detail.run.status, Status::Success, "run #{number}");
            assert!(
                detail.tasks.iter().all(|t| t.status == Status::Success),
                "run #{number}: {:?}",
                statuses(&detail)
            );
            assert!(detail.tasks.iter().all(|t| seen.contains(&t.id)));
        }
        assert!(detail.run.finished_at.is_some());
    }
}

// --- measurements, for the backends' benchmarks

/// The backends' benchmark, printed line by line after `backend: `: claims
/// per second with 8 concurrent claimers over 5 000 queued tasks, then
/// `list_runs` latency over 100 000 runs of one job, which `seed` (given
/// the job's id and the count) stores in bulk.
pub async fn benchmark<D, F, Fut>(db: D, backend: &str, seed: F)
where
    D: Database,
    F: FnOnce(JobId, i64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    const TASKS: usize = 5_000;
    const CLAIMERS: usize = 8;
    const RUNS: i64 = 100_000;
    const ITERATIONS: usize = 500;

    let (created, claimed) = measure_claims(db.clone(), TASKS, CLAIMERS).await;
    println!(
        "{backend}: created {TASKS} tasks in {created:.2}s; {CLAIMERS} claimers took them in \
         {claimed:.2}s = {:.0} claims/s",
        TASKS as f64 / claimed
    );

    let job = job(&db, "bench-list").await;
    let started = std::time::Instant::now();
    seed(job.id, RUNS).await;
    println!(
        "{backend}: inserted {RUNS} runs in {:.2}s",
        started.elapsed().as_secs_f64()
    );
    let page = |status, branch: Option<&str>, before| RunFilter {
        status,
        branch: branch.map(str::to_string),
        before,
        limit: 50,
    };
    let cases = [
        ("first page", page(None, None, None)),
        ("status=failure", page(Some(Status::Failure), None, None)),
        ("branch=dev", page(None, Some("dev"), None)),
        ("before=50000", page(None, None, Some(50_000))),
    ];
    for (name, filter) in cases {
        let times = measure_list_runs(&db, job.id, &filter, ITERATIONS).await;
        println!(
            "{backend}: list_runs {name} (limit 50, {RUNS} runs): p50 {:.3} ms, p99 {:.3} ms",
            percentile_ms(&times, 50),
            percentile_ms(&times, 99)
        );
    }
    // Keeps the seeding honest about what it stored.
    let newest = db
        .list_runs(job.id, &page(None, None, None))
        .await
        .expect("list");
    assert_eq!(newest[0].number, RUNS);
}

/// Queues `total` tasks (in runs of 50) on a new job, then has `claimers`
/// concurrent claimers take them all. Returns (seconds to create the runs,
/// seconds to claim everything).
pub async fn measure_claims<D: Database>(db: D, total: usize, claimers: usize) -> (f64, f64) {
    const PER_RUN: usize = 50;
    let job = job(&db, "bench-claims").await;
    let mut yaml = String::from("version: 1\ntasks:\n");
    for i in 0..PER_RUN {
        yaml.push_str(&format!("  t{i}:\n    steps:\n      - run: echo {i}\n"));
    }
    let template = tasks(&yaml);
    let started = std::time::Instant::now();
    let mut queued = 0;
    let mut n = 0;
    while queued < total {
        let take = PER_RUN.min(total - queued);
        create(&db, &job, new_run(template[..take].to_vec()), at(n)).await;
        queued += take;
        n += 1;
    }
    let created = started.elapsed().as_secs_f64();

    let started = std::time::Instant::now();
    let mut handles = Vec::new();
    for c in 0..claimers {
        let db = db.clone();
        handles.push(tokio::spawn(async move {
            let holder = format!("bench-{c}");
            let mut got = 0usize;
            while db
                .claim_task(&claim_of(&holder, &["linux"], at(10_000)))
                .await
                .expect("claim_task")
                .is_some()
            {
                got += 1;
            }
            got
        }));
    }
    let mut claimed = 0;
    for handle in handles {
        claimed += handle.await.expect("claimer panicked");
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(claimed, total, "every task claimed once");
    (created, elapsed)
}

/// Latencies of `iterations` calls of `list_runs(job_id, filter)`, sorted
/// ascending (index them for percentiles).
pub async fn measure_list_runs<D: Database>(
    db: &D,
    job_id: JobId,
    filter: &RunFilter,
    iterations: usize,
) -> Vec<Duration> {
    let mut times = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = std::time::Instant::now();
        let runs = db.list_runs(job_id, filter).await.expect("list_runs");
        times.push(started.elapsed());
        assert!(!runs.is_empty(), "the benchmark lists something");
    }
    times.sort_unstable();
    times
}

/// `p` (0–100) percentile of sorted latencies, in milliseconds.
pub fn percentile_ms(sorted: &[Duration], p: usize) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = (sorted.len() * p / 100).min(sorted.len() - 1);
    sorted[index].as_secs_f64() * 1000.0
}

// --- identity and access

async fn user<D: Database>(db: &D, name: &str, role: UserRole) -> User {
    let new = NewUser {
        name: name.into(),
        role,
        password_hash: Some(format!("hash-of-{name}")),
    };
    db.create_user(&new, at(0))
        .await
        .unwrap_or_else(|e| panic!("create user {name}: {e}"))
}

fn conflict<T: std::fmt::Debug>(result: crate::Result<T>, what: &str) {
    match result {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("{what}: expected Conflict, got {other:?}"),
    }
}

pub async fn duplicate_user<D: Database>(db: &D) {
    let alice = user(db, "alice", UserRole::User).await;
    assert_eq!(
        (alice.name.as_str(), alice.role, alice.disabled),
        ("alice", UserRole::User, false)
    );
    let again = NewUser {
        name: "alice".into(),
        role: UserRole::Admin,
        password_hash: None,
    };
    conflict(db.create_user(&again, at(1)).await, "duplicate user");
    assert_eq!(db.list_users().await.unwrap(), vec![alice.clone()]);
    assert_eq!(db.get_user("alice").await.unwrap(), Some(alice));
    assert!(db.get_user("bob").await.unwrap().is_none());
}

pub async fn update_user<D: Database>(db: &D) {
    user(db, "root", UserRole::Admin).await;
    let bob = user(db, "bob", UserRole::User).await;
    let (_, hash) = db.user_credentials("bob").await.unwrap().expect("bob");
    assert_eq!(hash.as_deref(), Some("hash-of-bob"));
    let change = UserChange {
        role: Some(UserRole::Admin),
        password_hash: Some(Some("new-hash".into())),
        ..UserChange::default()
    };
    let changed = db.update_user("bob", &change, at(5)).await.unwrap();
    assert_eq!((changed.id, changed.role), (bob.id, UserRole::Admin));
    assert_eq!((changed.created_at, changed.updated_at), (at(0), at(5)));
    let (_, hash) = db.user_credentials("bob").await.unwrap().expect("bob");
    assert_eq!(hash.as_deref(), Some("new-hash"));
    // Unset fields stay; `Some(None)` removes the password.
    let change = UserChange {
        password_hash: Some(None),
        ..UserChange::default()
    };
    let changed = db.update_user("bob", &change, at(6)).await.unwrap();
    assert_eq!(changed.role, UserRole::Admin);
    assert!(!changed.has_password);
    assert!(!db.get_user("bob").await.unwrap().unwrap().has_password);
    assert_eq!(
        db.user_credentials("bob").await.unwrap().expect("bob").1,
        None
    );
    match db
        .update_user("nobody", &UserChange::default(), at(7))
        .await
    {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("unknown user: expected NotFound, got {other:?}"),
    }
    assert!(db.delete_user("bob").await.unwrap());
    assert!(!db.delete_user("bob").await.unwrap());
    assert!(db.get_user("bob").await.unwrap().is_none());
}

pub async fn last_admin_stays<D: Database>(db: &D) {
    user(db, "root", UserRole::Admin).await;
    user(db, "carol", UserRole::User).await;
    let demote = UserChange {
        role: Some(UserRole::User),
        ..UserChange::default()
    };
    let disable = UserChange {
        disabled: Some(true),
        ..UserChange::default()
    };
    conflict(
        db.update_user("root", &demote, at(1)).await,
        "demote last admin",
    );
    conflict(
        db.update_user("root", &disable, at(1)).await,
        "disable last admin",
    );
    conflict(db.delete_user("root").await, "delete last admin");
    let root = db.get_user("root").await.unwrap().expect("root stays");
    assert!(root.is_active_admin(), "refused changes change nothing");
    // A disabled admin does not count as another.
    user(db, "dormant", UserRole::Admin).await;
    db.update_user("dormant", &disable, at(2)).await.unwrap();
    conflict(
        db.delete_user("root").await,
        "delete with only a disabled admin left",
    );
    // With another enabled admin, each change is allowed, down to the last.
    user(db, "second", UserRole::Admin).await;
    db.update_user("root", &demote, at(3)).await.unwrap();
    conflict(
        db.update_user("second", &disable, at(3)).await,
        "now second is last",
    );
    let promote = UserChange {
        role: Some(UserRole::Admin),
        ..UserChange::default()
    };
    db.update_user("root", &promote, at(4)).await.unwrap();
    db.update_user("second", &disable, at(5)).await.unwrap();
    user(db, "third", UserRole::Admin).await;
    assert!(db.delete_user("root").await.unwrap());
    // Non-admins change freely, and keeping an admin an admin is fine.
    db.update_user("carol", &disable, at(6)).await.unwrap();
    db.update_user("third", &promote, at(6)).await.unwrap();
}

pub async fn token_lookup_states<D: Database>(db: &D) {
    let dave = user(db, "dave", UserRole::User).await;
    let forever = NewUserToken {
        hash: "h-forever",
        name: "laptop",
        user: dave.id,
        expires_at: None,
    };
    let forever = db.insert_user_token(&forever, at(0)).await.unwrap();
    let brief = NewUserToken {
        hash: "h-brief",
        name: "ci",
        user: dave.id,
        expires_at: Some(at(60)),
    };
    db.insert_user_token(&brief, at(0)).await.unwrap();
    let found = db.lookup_token("h-forever").await.unwrap().expect("token");
    assert_eq!(found.token.id, forever);
    assert_eq!(found.token.kind, TokenKind::User);
    assert!(!found.token.is_admin);
    assert_eq!(found.user.as_ref().map(|u| u.id), Some(dave.id));
    assert_eq!(found.refusal(at(1)), None);
    // The old lookup still finds it, as it found every token.
    assert_eq!(
        db.find_token("h-forever").await.unwrap().map(|t| t.id),
        Some(forever)
    );
    let brief = db.lookup_token("h-brief").await.unwrap().expect("token");
    assert_eq!(brief.expires_at, Some(at(60)));
    assert_eq!(brief.refusal(at(59)), None);
    assert_eq!(brief.refusal(at(60)), Some(Refusal::Expired));
    let disable = UserChange {
        disabled: Some(true),
        ..UserChange::default()
    };
    db.update_user("dave", &disable, at(2)).await.unwrap();
    let found = db
        .lookup_token("h-forever")
        .await
        .unwrap()
        .expect("still found");
    assert_eq!(found.refusal(at(3)), Some(Refusal::UserDisabled));
    assert!(db.revoke_token(forever, at(4)).await.unwrap());
    let found = db
        .lookup_token("h-forever")
        .await
        .unwrap()
        .expect("still found");
    assert_eq!(found.revoked_at, Some(at(4)));
    assert_eq!(found.refusal(at(5)), Some(Refusal::Revoked));
    // Tokens of no user: agents' and the first-start admin's.
    db.insert_token("h-agent", TokenKind::Agent, "builder", false, at(0))
        .await
        .unwrap();
    let agent = db.lookup_token("h-agent").await.unwrap().expect("agent");
    assert!(agent.user.is_none());
    assert_eq!(agent.refusal(at(1)), None);
    assert!(db.lookup_token("nope").await.unwrap().is_none());
    // An admin token of no user is adopted by the admin user; agents' stay theirs.
    db.insert_token("h-admin", TokenKind::User, "admin", true, at(0))
        .await
        .unwrap();
    let root = user(db, "root", UserRole::Admin).await;
    assert_eq!(db.adopt_admin_tokens(root.id).await.unwrap(), 1);
    assert_eq!(db.adopt_admin_tokens(root.id).await.unwrap(), 0);
    let adopted = db.lookup_token("h-admin").await.unwrap().expect("admin");
    assert_eq!(adopted.user.map(|u| u.id), Some(root.id));
    assert!(
        db.lookup_token("h-agent")
            .await
            .unwrap()
            .unwrap()
            .user
            .is_none()
    );
    // A hash in use, or an unknown user, is refused.
    let taken = NewUserToken {
        hash: "h-agent",
        name: "x",
        user: dave.id,
        expires_at: None,
    };
    conflict(db.insert_user_token(&taken, at(6)).await, "hash in use");
    let orphan = NewUserToken {
        hash: "h-orphan",
        name: "x",
        user: crate::UserId(dave.id.0 + 1000),
        expires_at: None,
    };
    match db.insert_user_token(&orphan, at(6)).await {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("token of unknown user: expected NotFound, got {other:?}"),
    }
}

pub async fn revoke_token<D: Database>(db: &D) {
    let erin = user(db, "erin", UserRole::User).await;
    let token = NewUserToken {
        hash: "h-erin",
        name: "laptop",
        user: erin.id,
        expires_at: None,
    };
    let id = db.insert_user_token(&token, at(0)).await.unwrap();
    let owner = db.token_owner(id).await.unwrap().expect("erin's");
    assert_eq!((owner.id, owner.has_password), (erin.id, true));
    let agent = db
        .insert_token("h-agent", TokenKind::Agent, "builder", false, at(0))
        .await
        .unwrap();
    assert_eq!(db.token_owner(agent).await.unwrap(), None, "no owner");
    assert!(db.revoke_token(id, at(1)).await.unwrap());
    assert!(
        !db.revoke_token(id, at(2)).await.unwrap(),
        "already revoked"
    );
    let found = db.lookup_token("h-erin").await.unwrap().expect("token");
    assert_eq!(found.revoked_at, Some(at(1)), "the first revocation stays");
    assert!(
        !db.revoke_token(crate::TokenId(id.0 + 1000), at(3))
            .await
            .unwrap()
    );
    // Deleting the user deletes its tokens.
    user(db, "root", UserRole::Admin).await;
    assert!(db.delete_user("erin").await.unwrap());
    assert!(db.lookup_token("h-erin").await.unwrap().is_none());
}

pub async fn user_tokens_without_hashes<D: Database>(db: &D) {
    let fay = user(db, "fay", UserRole::User).await;
    let gus = user(db, "gus", UserRole::User).await;
    for (hash, name, owner) in [
        ("h1", "one", &fay),
        ("h2", "two", &fay),
        ("h3", "three", &gus),
    ] {
        let token = NewUserToken {
            hash,
            name,
            user: owner.id,
            expires_at: Some(at(100)),
        };
        db.insert_user_token(&token, at(1)).await.unwrap();
    }
    db.insert_token("h-agent", TokenKind::Agent, "agent", false, at(0))
        .await
        .unwrap();
    let listed = db.list_user_tokens(fay.id).await.unwrap();
    let names: Vec<_> = listed
        .iter()
        .map(|t| (t.name.as_str(), t.user.as_str()))
        .collect();
    assert_eq!(names, [("one", "fay"), ("two", "fay")]);
    assert_eq!(listed[0].created_at, at(1));
    assert_eq!(listed[0].expires_at, Some(at(100)));
    assert_eq!((listed[0].last_used_at, listed[0].revoked_at), (None, None));
    let json = serde_json::to_string(&listed).unwrap();
    assert!(!json.contains("h1") && !json.contains("hash"), "{json}");
    db.revoke_token(listed[1].id, at(2)).await.unwrap();
    let listed = db.list_user_tokens(fay.id).await.unwrap();
    assert_eq!(
        listed[1].revoked_at,
        Some(at(2)),
        "revoked ones are listed as such"
    );
}

pub async fn touch_token<D: Database>(db: &D) {
    let hal = user(db, "hal", UserRole::User).await;
    let token = NewUserToken {
        hash: "h-hal",
        name: "laptop",
        user: hal.id,
        expires_at: None,
    };
    let id = db.insert_user_token(&token, at(0)).await.unwrap();
    assert!(
        db.lookup_token("h-hal")
            .await
            .unwrap()
            .unwrap()
            .needs_touch(at(1))
    );
    assert!(db.touch_token(id, at(10)).await.unwrap(), "first use");
    assert!(
        !db.touch_token(id, at(30)).await.unwrap(),
        "within a minute"
    );
    let found = db.lookup_token("h-hal").await.unwrap().unwrap();
    assert_eq!(found.last_used_at, Some(at(10)));
    assert!(!found.needs_touch(at(69)));
    assert!(found.needs_touch(at(70)));
    assert!(db.touch_token(id, at(70)).await.unwrap(), "a minute later");
    let listed = db.list_user_tokens(hal.id).await.unwrap();
    assert_eq!(listed[0].last_used_at, Some(at(70)));
}

pub async fn members<D: Database>(db: &D) {
    let web = job(db, "web").await;
    let other = job(db, "other").await;
    let ivy = user(db, "ivy", UserRole::User).await;
    let jon = user(db, "jon", UserRole::User).await;
    assert_eq!(db.role_of(web.id, ivy.id).await.unwrap(), None);
    db.set_member(web.id, jon.id, MemberRole::Viewer, at(1))
        .await
        .unwrap();
    db.set_member(web.id, ivy.id, MemberRole::Developer, at(1))
        .await
        .unwrap();
    db.set_member(web.id, ivy.id, MemberRole::Maintainer, at(2))
        .await
        .unwrap();
    assert_eq!(
        db.role_of(web.id, ivy.id).await.unwrap(),
        Some(MemberRole::Maintainer)
    );
    assert_eq!(db.role_of(other.id, ivy.id).await.unwrap(), None, "per job");
    let listed = db.list_members(web.id).await.unwrap();
    let seen: Vec<_> = listed
        .iter()
        .map(|m| (m.user.as_str(), m.role, m.updated_at))
        .collect();
    assert_eq!(
        seen,
        [
            ("ivy", MemberRole::Maintainer, at(2)),
            ("jon", MemberRole::Viewer, at(1))
        ]
    );
    assert_eq!(listed[0].user_id, ivy.id);
    assert!(MemberRole::Maintainer > MemberRole::Developer);
    assert!(db.remove_member(web.id, jon.id).await.unwrap());
    assert!(!db.remove_member(web.id, jon.id).await.unwrap());
    assert_eq!(db.role_of(web.id, jon.id).await.unwrap(), None);
    let unknown = crate::UserId(jon.id.0 + 1000);
    match db
        .set_member(web.id, unknown, MemberRole::Viewer, at(3))
        .await
    {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("member of unknown user: expected NotFound, got {other:?}"),
    }
    assert_eq!(
        "developer".parse::<MemberRole>().unwrap(),
        MemberRole::Developer
    );
    assert!("owner".parse::<MemberRole>().is_err());
    assert_eq!(UserRole::ALL.len(), 2);
}

pub async fn creator_is_maintainer<D: Database>(db: &D) {
    let ada = user(db, "ada", UserRole::User).await;
    let made = db
        .create_job(&freestyle("made"), Some(ada.id), at(1))
        .await
        .unwrap();
    assert_eq!(made.spec.visibility, Visibility::Private);
    assert_eq!(
        db.role_of(made.id, ada.id).await.unwrap(),
        Some(MemberRole::Maintainer)
    );
    // Replacing the spec keeps the members; a new job by upsert gets its creator.
    let mut public = freestyle("made");
    public.visibility = Visibility::Public;
    let (replaced, how) = db.upsert_job(&public, None, at(2)).await.unwrap();
    assert_eq!(how, Upserted::Updated);
    assert_eq!(replaced.spec.visibility, Visibility::Public);
    assert_eq!(
        db.role_of(made.id, ada.id).await.unwrap(),
        Some(MemberRole::Maintainer)
    );
    let (upserted, how) = db
        .upsert_job(&freestyle("upserted"), Some(ada.id), at(3))
        .await
        .unwrap();
    assert_eq!(how, Upserted::Created);
    assert_eq!(
        db.role_of(upserted.id, ada.id).await.unwrap(),
        Some(MemberRole::Maintainer)
    );
    // An unknown creator leaves no job behind.
    let ghost = crate::UserId(ada.id.0 + 1000);
    match db.create_job(&freestyle("ghost"), Some(ghost), at(4)).await {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("job of unknown creator: expected NotFound, got {other:?}"),
    }
    assert!(db.get_job("ghost").await.unwrap().is_none());
}

pub async fn runs_are_audited_with_their_number<D: Database>(db: &D) {
    let web = job(db, "web").await;
    db.create_run(web.id, new_run(Vec::new()), at(1))
        .await
        .unwrap();
    let mut run = new_run(Vec::new());
    run.audit = Some(NewAuditEntry {
        actor: "ada".into(),
        action: "run.trigger".into(),
        object: "job/web".into(),
        detail: None,
        source: Some("10.0.0.1".into()),
    });
    let made = db.create_run(web.id, run, at(2)).await.unwrap();
    assert_eq!(made.run.number, 2);
    let filter = AuditFilter {
        limit: 10,
        ..AuditFilter::default()
    };
    let entries = db.list_audit(&filter).await.unwrap();
    let seen: Vec<_> = entries
        .iter()
        .map(|e| (e.actor.as_str(), e.object.as_str(), e.at))
        .collect();
    assert_eq!(
        seen,
        [("ada", "job/web/run/2", at(2))],
        "one entry, with the run"
    );
}

pub async fn job_and_role<D: Database>(db: &D) {
    let web = job(db, "web").await;
    let api = job(db, "api").await;
    let bo = user(db, "bo", UserRole::User).await;
    db.set_member(api.id, bo.id, MemberRole::Developer, at(1))
        .await
        .unwrap();
    let (found, role) = db.job_and_role("web", Some(bo.id)).await.unwrap().unwrap();
    assert_eq!((found, role), (web.clone(), None));
    let (found, role) = db.job_and_role("api", Some(bo.id)).await.unwrap().unwrap();
    assert_eq!((found.id, role), (api.id, Some(MemberRole::Developer)));
    let (_, role) = db.job_and_role("api", None).await.unwrap().unwrap();
    assert_eq!(role, None, "no user, no role");
    assert!(
        db.job_and_role("none", Some(bo.id))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        db.member_roles(bo.id).await.unwrap(),
        [(api.id, MemberRole::Developer)]
    );
}

pub async fn members_cascade<D: Database>(db: &D) {
    let web = job(db, "web").await;
    let api = job(db, "api").await;
    let kim = user(db, "kim", UserRole::User).await;
    let lou = user(db, "lou", UserRole::User).await;
    for (job, user) in [(&web, &kim), (&web, &lou), (&api, &kim)] {
        db.set_member(job.id, user.id, MemberRole::Viewer, at(1))
            .await
            .unwrap();
    }
    assert!(db.delete_job("web").await.unwrap());
    assert!(db.list_members(web.id).await.unwrap().is_empty());
    assert_eq!(
        db.role_of(api.id, kim.id).await.unwrap(),
        Some(MemberRole::Viewer)
    );
    assert!(db.delete_user("kim").await.unwrap());
    assert!(db.list_members(api.id).await.unwrap().is_empty());
    assert!(db.get_user("lou").await.unwrap().is_some());
}

pub async fn sessions_expire<D: Database>(db: &D) {
    let ned = user(db, "ned", UserRole::User).await;
    let oli = user(db, "oli", UserRole::User).await;
    db.create_session("s1", ned.id, at(100), at(0))
        .await
        .unwrap();
    db.create_session("s2", ned.id, at(100), at(0))
        .await
        .unwrap();
    db.create_session("s3", oli.id, at(100), at(0))
        .await
        .unwrap();
    conflict(
        db.create_session("s1", oli.id, at(100), at(1)).await,
        "hash in use",
    );
    let found = db.find_session("s1", at(99)).await.unwrap().expect("valid");
    assert_eq!(found.user, ned);
    assert_eq!(
        (found.created_at, found.expires_at, found.last_seen_at),
        (at(0), at(100), at(0))
    );
    assert!(
        db.find_session("s1", at(100)).await.unwrap().is_none(),
        "expired"
    );
    assert!(
        !db.touch_session("s1", at(30)).await.unwrap(),
        "within a minute"
    );
    assert!(db.touch_session("s1", at(60)).await.unwrap());
    let found = db.find_session("s1", at(61)).await.unwrap().unwrap();
    assert_eq!(found.last_seen_at, at(60));
    // The user's state comes with it.
    let disable = UserChange {
        disabled: Some(true),
        ..UserChange::default()
    };
    db.update_user("ned", &disable, at(62)).await.unwrap();
    assert!(
        db.find_session("s2", at(63))
            .await
            .unwrap()
            .unwrap()
            .user
            .disabled
    );
    assert!(db.delete_session("s1").await.unwrap());
    assert!(!db.delete_session("s1").await.unwrap());
    assert_eq!(db.delete_user_sessions(ned.id).await.unwrap(), 1);
    assert!(db.find_session("s2", at(63)).await.unwrap().is_none());
    assert!(
        db.find_session("s3", at(63)).await.unwrap().is_some(),
        "others stay"
    );
}

pub async fn audit_filters_and_paging<D: Database>(db: &D) {
    let entries = [
        ("alice", "job.create", "job/web"),
        ("bob", "job.create", "job/web_2"),
        ("alice", "secret.put", "job/web/secrets/KEY"),
        ("alice", "user.sign_in", "user/alice"),
        ("bob", "job.delete", "job/web"),
    ];
    let mut ids = Vec::new();
    for (n, (actor, action, object)) in entries.into_iter().enumerate() {
        let entry = NewAuditEntry {
            actor: actor.into(),
            action: action.into(),
            object: object.into(),
            detail: (n == 0).then(|| "kind freestyle".to_string()),
            source: Some("192.0.2.1".into()),
        };
        ids.push(db.append_audit(&entry, at(n as i64)).await.unwrap());
    }
    let all = db.list_audit(&AuditFilter::default()).await.unwrap();
    let seen: Vec<_> = all.iter().map(|e| e.id).collect();
    assert_eq!(
        seen,
        ids.iter().rev().copied().collect::<Vec<_>>(),
        "newest first"
    );
    let first = &all[4];
    assert_eq!(
        (first.at, first.actor.as_str(), first.action.as_str()),
        (at(0), "alice", "job.create")
    );
    assert_eq!(first.detail.as_deref(), Some("kind freestyle"));
    assert_eq!(first.source.as_deref(), Some("192.0.2.1"));
    let objects = |filter: AuditFilter| async move {
        let found = db.list_audit(&filter).await.unwrap();
        found.into_iter().map(|e| e.object).collect::<Vec<_>>()
    };
    let by_alice = AuditFilter {
        actor: Some("alice".into()),
        ..AuditFilter::default()
    };
    assert_eq!(
        objects(by_alice).await,
        ["user/alice", "job/web/secrets/KEY", "job/web"]
    );
    let creates = AuditFilter {
        action: Some("job.create".into()),
        ..AuditFilter::default()
    };
    assert_eq!(objects(creates).await, ["job/web_2", "job/web"]);
    // A prefix is taken literally: `_` and `%` are no wildcards.
    let web = AuditFilter {
        object_prefix: Some("job/web/".into()),
        ..AuditFilter::default()
    };
    assert_eq!(objects(web).await, ["job/web/secrets/KEY"]);
    let wild = AuditFilter {
        object_prefix: Some("job/we_".into()),
        ..AuditFilter::default()
    };
    assert!(objects(wild).await.is_empty());
    // Pages of two, each from the last id of the one before.
    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let filter = AuditFilter {
            before,
            limit: 2,
            ..AuditFilter::default()
        };
        let page = db.list_audit(&filter).await.unwrap();
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        pages.push(page.len());
    }
    assert_eq!(pages, [2, 2, 1]);
    let bobs_first = AuditFilter {
        actor: Some("bob".into()),
        limit: 1,
        ..AuditFilter::default()
    };
    assert_eq!(objects(bobs_first).await, ["job/web"]);
}

pub async fn failed_sign_ins<D: Database>(db: &D) {
    for second in [0, 10, 20] {
        db.record_failed_sign_in("pat", at(second)).await.unwrap();
    }
    db.record_failed_sign_in("nobody", at(5)).await.unwrap();
    assert_eq!(db.failed_sign_ins("pat", at(0)).await.unwrap(), 3);
    assert_eq!(
        db.failed_sign_ins("pat", at(10)).await.unwrap(),
        2,
        "since is inclusive"
    );
    assert_eq!(db.failed_sign_ins("pat", at(21)).await.unwrap(), 0);
    assert_eq!(db.failed_sign_ins("nobody", at(0)).await.unwrap(), 1);
    db.clear_failed_sign_ins("pat").await.unwrap();
    assert_eq!(db.failed_sign_ins("pat", at(0)).await.unwrap(), 0);
    assert_eq!(
        db.failed_sign_ins("nobody", at(0)).await.unwrap(),
        1,
        "per name"
    );
}

pub async fn forges<D: Database>(db: &D) {
    let hub = NewForge {
        name: "hub",
        kind: "github",
        api_url: "https://api.github.com",
        token: Some(b"sealed-token"),
        webhook_secret: None,
    };
    let (created, how) = db.put_forge(&hub, at(1)).await.unwrap();
    assert_eq!(how, Upserted::Created);
    assert_eq!(created.token.as_deref(), Some(&b"sealed-token"[..]));
    assert_eq!(created.webhook_secret, None);
    assert_eq!((created.created_at, created.updated_at), (at(1), at(1)));

    // Write-only values: leaving them out keeps them, and changes nothing.
    let same = NewForge {
        token: None,
        ..hub.clone()
    };
    let (kept, how) = db.put_forge(&same, at(2)).await.unwrap();
    assert_eq!((how, &kept), (Upserted::Unchanged, &created));

    let moved = NewForge {
        api_url: "https://ghe.example.com/api/v3",
        token: None,
        webhook_secret: Some(b"sealed-secret"),
        ..hub.clone()
    };
    let (updated, how) = db.put_forge(&moved, at(3)).await.unwrap();
    assert_eq!(how, Upserted::Updated);
    assert_eq!(updated.api_url, "https://ghe.example.com/api/v3");
    assert_eq!(
        updated.token.as_deref(),
        Some(&b"sealed-token"[..]),
        "token kept"
    );
    assert_eq!(
        updated.webhook_secret.as_deref(),
        Some(&b"sealed-secret"[..])
    );
    assert_eq!((updated.created_at, updated.updated_at), (at(1), at(3)));
    assert_eq!(db.get_forge("hub").await.unwrap(), Some(updated.clone()));
    assert_eq!(db.get_forge("nope").await.unwrap(), None);

    let lab = NewForge {
        name: "lab",
        kind: "gitlab",
        api_url: "https://gitlab.example.com/api/v4",
        token: None,
        webhook_secret: None,
    };
    db.put_forge(&lab, at(4)).await.unwrap();
    let names: Vec<String> = db
        .list_forges()
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert_eq!(names, ["hub", "lab"]);

    // A forge a job uses stays, and the refusal names the job.
    let mut spec = freestyle("forged");
    spec.forge = Some("lab".into());
    db.create_job(&spec, None, at(5)).await.unwrap();
    match db.delete_forge("lab").await {
        Err(StoreError::Conflict(why)) => assert!(why.contains("`forged`"), "{why}"),
        other => panic!("expected a conflict naming the job, got {other:?}"),
    }
    assert!(db.delete_forge("hub").await.unwrap());
    assert!(!db.delete_forge("hub").await.unwrap(), "already gone");
    spec.forge = None;
    db.upsert_job(&spec, None, at(6)).await.unwrap();
    assert!(db.delete_forge("lab").await.unwrap());
    assert!(db.list_forges().await.unwrap().is_empty());
}

pub async fn queued_triggers<D: Database>(db: &D) {
    let a = job(db, "hooked-a").await;
    let b = job(db, "hooked-b").await;
    let queue = |job: &Job, delivery: &str, body: &str| NewQueuedTrigger {
        job_id: job.id,
        delivery: delivery.into(),
        trigger: body.into(),
    };
    let queued = db
        .queue_triggers(
            &[queue(&a, "d1", "{\"a\":1}"), queue(&b, "d1", "{\"b\":1}")],
            at(1),
        )
        .await
        .unwrap();
    assert_eq!(queued, [a.id, b.id]);
    // A redelivery queues nothing; another delivery does.
    let again = db
        .queue_triggers(
            &[queue(&a, "d1", "{\"a\":2}"), queue(&a, "d2", "{\"a\":3}")],
            at(2),
        )
        .await
        .unwrap();
    assert_eq!(again, [a.id]);
    let pending = db.pending_triggers(10).await.unwrap();
    let seen: Vec<(JobId, &str, &str)> = pending
        .iter()
        .map(|t| (t.job_id, t.delivery.as_str(), t.trigger.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (a.id, "d1", "{\"a\":1}"),
            (b.id, "d1", "{\"b\":1}"),
            (a.id, "d2", "{\"a\":3}")
        ]
    );
    assert_eq!(pending[0].received_at, at(1));
    assert_eq!(db.pending_triggers(1).await.unwrap().len(), 1, "limit");

    // The run marks its trigger done in its own transaction: a second run
    // for the same trigger is refused and leaves nothing behind.
    let mut run = new_run(tasks(PAIR));
    run.trigger = RunTrigger::new(TriggerKind::Webhook, Some("octocat".into()));
    run.pull_request = Some(PullRequest {
        number: 7,
        title: "Fix \"quotes\"".into(),
        author: Some("octocat".into()),
        head_branch: "fix".into(),
        base_branch: "main".into(),
        from_fork: false,
    });
    run.queued_trigger = Some(pending[0].id);
    let made = create(db, &a, run.clone(), at(3)).await;
    assert_eq!(made.run.trigger, run.trigger);
    assert_eq!(made.run.pull_request, run.pull_request);
    match db.create_run(a.id, run, at(4)).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("expected a conflict for a trigger done already, got {other:?}"),
    }
    let runs = db.list_runs(a.id, &RunFilter::default()).await.unwrap();
    assert_eq!(runs.len(), 1, "the refused run left nothing");
    assert_eq!(runs[0].pull_request.as_ref().map(|pr| pr.number), Some(7));
    let read = db.get_run(a.id, made.run.number).await.unwrap().unwrap();
    assert_eq!(read.run.trigger.user.as_deref(), Some("octocat"));

    assert!(db.discard_trigger(pending[1].id, at(5)).await.unwrap());
    assert!(!db.discard_trigger(pending[1].id, at(6)).await.unwrap());
    let left: Vec<_> = db
        .pending_triggers(10)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(left, [pending[2].id]);
    // Runs made without a trigger read as made through the API.
    let plain = create(db, &b, new_run(tasks(PAIR)), at(7)).await;
    assert_eq!(plain.run.trigger, RunTrigger::new(TriggerKind::Api, None));
    assert_eq!((plain.run.pull_request, plain.run.tag), (None, None));
    let mut tagged = new_run(tasks(PAIR));
    tagged.event = Event::Tag;
    tagged.branch = None;
    tagged.tag = Some("v1.0.0".into());
    let tagged = create(db, &b, tagged, at(8)).await;
    assert_eq!(tagged.run.tag.as_deref(), Some("v1.0.0"));
    // A deleted job takes its queued triggers with it.
    db.delete_job("hooked-a").await.unwrap();
    assert!(db.pending_triggers(10).await.unwrap().is_empty());
}

/// The outbox of commit statuses: derived from runs of jobs with a forge,
/// one row per commit and context holding only the latest wanted state,
/// sends of older versions never recorded as the last word.
pub async fn commit_statuses<D: Database>(db: &D) {
    let hub = NewForge {
        name: "hub",
        kind: "github",
        api_url: "https://api.github.com",
        token: Some(b"sealed"),
        webhook_secret: None,
    };
    db.put_forge(&hub, at(0)).await.unwrap();
    let mut spec = freestyle("reported");
    spec.forge = Some("hub".into());
    let job = db.create_job(&spec, None, at(0)).await.unwrap();
    let quiet = self::job(db, "unreported").await;
    db.queue_triggers(
        &[NewQueuedTrigger {
            job_id: job.id,
            delivery: "d1".into(),
            trigger: "{\"repository\":\"octo/app\"}".into(),
        }],
        at(0),
    )
    .await
    .unwrap();
    let first = create(db, &job, new_run(tasks(PAIR)), at(1)).await;
    // Runs with no task to take (made `error`), so claims below find the
    // first run's.
    let mut unreported = new_run(Vec::new());
    unreported.error = Some("no pipeline".into());
    create(db, &quiet, unreported.clone(), at(1)).await;
    let mut no_commit = unreported.clone();
    no_commit.sha = None;
    create(db, &job, no_commit, at(1)).await;
    // A forge without a token takes webhooks only.
    let hooks_only = NewForge {
        name: "hooks-only",
        token: None,
        ..hub.clone()
    };
    db.put_forge(&hooks_only, at(0)).await.unwrap();
    let mut spec = freestyle("hooked");
    spec.forge = Some("hooks-only".into());
    let hooked = db.create_job(&spec, None, at(0)).await.unwrap();
    create(db, &hooked, unreported, at(1)).await;

    // Only the forge job's run with a commit is a candidate; the job's
    // newest trigger names the repository as the forge does.
    let candidates = db.status_candidates(None, 10).await.unwrap();
    assert_eq!(candidates.len(), 1, "{candidates:?}");
    let candidate = &candidates[0];
    assert_eq!(
        (candidate.run_id, candidate.status, candidate.forge.as_str()),
        (first.run.id, Status::Queued, "hub")
    );
    assert_eq!(candidate.job, "reported");
    assert_eq!(candidate.number, first.run.number);
    assert_eq!(candidate.sha, "0123456789abcdef0123456789abcdef01234567");
    assert_eq!(
        candidate.trigger.as_deref(),
        Some("{\"repository\":\"octo/app\"}")
    );

    let want = |run_id: RunId, run_status: Status| WantedStatus {
        forge: "hub",
        repository: "octo/app",
        sha: "0123456789abcdef0123456789abcdef01234567",
        context: "kiln/reported",
        run_id,
        run_status,
    };
    assert!(
        db.want_status(&want(first.run.id, Status::Queued), at(1))
            .await
            .unwrap()
    );
    assert!(
        !db.want_status(&want(first.run.id, Status::Queued), at(1))
            .await
            .unwrap(),
        "the same state again changes nothing"
    );
    assert!(db.status_candidates(None, 10).await.unwrap().is_empty());
    assert_eq!(db.next_status_due().await.unwrap(), Some(at(1)));

    let claimed = db.claim_statuses(at(1), at(61), 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let queued = &claimed[0];
    assert_eq!(queued.forge_kind.as_deref(), Some("github"));
    assert_eq!((queued.run_status, queued.version), (Status::Queued, 1));
    assert_eq!(
        (queued.repository.as_str(), queued.context.as_str()),
        ("octo/app", "kiln/reported")
    );
    assert!(
        db.claim_statuses(at(2), at(62), 10)
            .await
            .unwrap()
            .is_empty(),
        "a claimed status is not handed out twice"
    );
    assert_eq!(
        db.next_status_due().await.unwrap(),
        Some(at(61)),
        "a claimed status falls due again when its claim ends"
    );

    // The run starts while the queued state is on its way: its delivery
    // does not make the running state count as sent.
    let a = claim_named(db, "agent", "a", at(3)).await;
    let candidates = db.status_candidates(None, 10).await.unwrap();
    assert_eq!(candidates.len(), 1);
    assert_eq!(candidates[0].status, Status::Running);
    assert!(
        db.want_status(&want(first.run.id, Status::Running), at(3))
            .await
            .unwrap()
    );
    db.settle_status(queued.id, 1, &StatusOutcome::Delivered, at(4))
        .await
        .unwrap();
    let shown = db.run_statuses(first.run.id).await.unwrap();
    assert_eq!(shown.len(), 1);
    assert_eq!(
        (shown[0].run_status, shown[0].sent_at),
        (Status::Running, None)
    );
    let running = db.claim_statuses(at(4), at(64), 10).await.unwrap();
    assert_eq!(running.len(), 1);
    assert_eq!(
        (running[0].run_status, running[0].version),
        (Status::Running, 2)
    );

    // The forge asks for a wait: nothing is due before it, not even a
    // newer state.
    db.settle_status(
        running[0].id,
        2,
        &StatusOutcome::Retry { at: at(30) },
        at(5),
    )
    .await
    .unwrap();
    assert!(
        db.claim_statuses(at(10), at(70), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(db.next_status_due().await.unwrap(), Some(at(30)));
    assert!(finish(db, &a, "agent", Status::Success, at(6)).await);
    let b = claim_named(db, "agent", "b", at(6)).await;
    assert!(finish(db, &b, "agent", Status::Success, at(7)).await);
    assert!(
        db.status_candidates(Some(at(8)), 10)
            .await
            .unwrap()
            .is_empty(),
        "a run that ended before the look started is not looked at again"
    );
    let ended = db.status_candidates(Some(at(6)), 10).await.unwrap();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].status, Status::Success);
    assert!(
        db.want_status(&want(first.run.id, Status::Success), at(8))
            .await
            .unwrap()
    );
    assert!(
        db.claim_statuses(at(10), at(70), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let done = db.claim_statuses(at(30), at(90), 10).await.unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(
        (done[0].run_status, done[0].version, done[0].attempts),
        (Status::Success, 3, 1)
    );
    db.settle_status(done[0].id, 3, &StatusOutcome::Delivered, at(31))
        .await
        .unwrap();
    let shown = db.run_statuses(first.run.id).await.unwrap();
    assert_eq!(
        (
            shown[0].run_status,
            shown[0].sent_at,
            shown[0].error.clone()
        ),
        (Status::Success, Some(at(31)), None)
    );
    assert_eq!(db.next_status_due().await.unwrap(), None);
    assert!(
        db.claim_statuses(at(40), at(100), 10)
            .await
            .unwrap()
            .is_empty()
    );

    // A newer run on the same commit takes the row over; the older run
    // never takes it back.
    let second = create(db, &job, new_run(tasks(PAIR)), at(50)).await;
    assert!(
        db.want_status(&want(second.run.id, Status::Queued), at(50))
            .await
            .unwrap()
    );
    assert!(
        !db.want_status(&want(first.run.id, Status::Failure), at(51))
            .await
            .unwrap()
    );
    assert!(db.run_statuses(first.run.id).await.unwrap().is_empty());
    let candidates = db.status_candidates(None, 10).await.unwrap();
    assert!(
        candidates.iter().all(|c| c.run_id != first.run.id),
        "a run whose commit status a newer run took is looked at no more: {candidates:?}"
    );
    let refused = db.claim_statuses(at(51), at(111), 10).await.unwrap();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].run_id, second.run.id);
    db.settle_status(
        refused[0].id,
        refused[0].version,
        &StatusOutcome::Permanent("the forge answered 422: No commit found".into()),
        at(52),
    )
    .await
    .unwrap();
    let shown = db.run_statuses(second.run.id).await.unwrap();
    assert_eq!(shown.len(), 1);
    assert_eq!(
        shown[0].error.as_deref(),
        Some("the forge answered 422: No commit found")
    );
    assert_eq!(shown[0].sent_at, None);
    assert_eq!(
        db.next_status_due().await.unwrap(),
        None,
        "a refusal is not retried"
    );

    // A deleted job takes its statuses with it.
    db.delete_job("reported").await.unwrap();
    assert!(db.run_statuses(second.run.id).await.unwrap().is_empty());
}
