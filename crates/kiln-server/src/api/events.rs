//! `GET /api/v1/events`: the change feed ([`crate::events`]) as
//! server-sent events, filtered to the jobs the caller may read and
//! coalesced per connection, so a client gets at most a few messages a
//! second however busy the server is.
//!
//! Each message is `event: changes` with the newest change's `id` and, as
//! `data`, a JSON array of the changes since the last message, the latest
//! of each run, task or step only. A client that resumes with
//! `Last-Event-ID` gets what it missed while it is still kept; otherwise,
//! and when it falls too far behind, it gets `event: reset` and reloads.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use kiln_store::{Database, MemberRole};
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::bodies::EventsQuery;
use super::extract::ApiQuery;
use crate::access::{self, Decision};
use crate::auth::{Caller, Identity, Presented};
use crate::error::{ApiError, ApiResult};
use crate::events::{ChangeKey, Published};
use crate::state::AppState;

/// The header a reconnecting `EventSource` sends.
const LAST_EVENT_ID: &str = "last-event-id";

/// The largest id a client may name: the document's `int64`.
const MAX_ID: u64 = i64::MAX as u64;

/// Distinct runs, tasks and steps one message may carry; a client whose
/// backlog is wider is told to reload instead.
const MAX_BATCH: usize = crate::events::RING_SIZE;

/// One message of the stream, as an `EventSource` hands it over: the
/// document's schema of each event (the stream itself is SSE text).
#[derive(serde::Serialize, utoipa::ToSchema)]
// Only its schema is used: axum's `Sse` writes the messages.
#[allow(dead_code)]
pub struct StreamEvent {
    event: StreamEventName,
    /// The newest change's id: what to resume after (`Last-Event-ID`).
    #[schema(pattern = "^[0-9]+$", example = "1764777600000000")]
    id: String,
    /// JSON. `changes`: an array of changes, each an object with `kind`
    /// (`run`, `task` or `step`) and its fields (docs/server.md);
    /// `reset`: `{"reason": "…"}`.
    #[schema(
        example = r#"[{"kind":"run","job":"app","number":1,"status":"running","branch":"main","sha":null,"event":"api","created_at":"2026-12-03T16:00:00Z","started_at":"2026-12-03T16:00:01Z","finished_at":null}]"#
    )]
    data: String,
}

/// What a message says: changes, or reload.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum StreamEventName {
    Changes,
    Reset,
}

#[utoipa::path(operation_id = "stream_events", get, path = "/api/v1/events", tag = "events", security((), ("bearer" = []), ("session" = [])),
    params(EventsQuery,
        ("Last-Event-ID" = Option<u64>, Header, description = "The `id` of the last message received: the changes after it are sent first, if still kept (else `event: reset`)")),
    responses((status = 200, description = "`text/event-stream` of the changes to runs, tasks and steps of the jobs the caller may read. \
        `event: changes` carries a JSON array of changes (each with `kind`: `run`, `task` or `step`), the latest of each only, at most a few messages a second; \
        `event: reset` says changes were missed (resume too old, or the client fell behind): reload, then go on reading. \
        An idle stream gets a comment every 15 seconds. See docs/server.md.",
            content_type = "text/event-stream", body = StreamEvent),
        (status = 404, description = "`job` does not exist, or the caller may not read it", body = kiln_api::Problem)))]
pub async fn stream<D: Database>(
    caller: Caller,
    State(state): State<AppState<D>>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> ApiResult<Response> {
    let after = match headers.get(LAST_EVENT_ID) {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok())
                .filter(|id| *id <= MAX_ID)
                .ok_or_else(|| {
                    ApiError::unprocessable("Last-Event-ID must be the `id` of a message received")
                })?,
        ),
        None => query.after,
    };
    if after.is_some_and(|id| id > MAX_ID) {
        return Err(ApiError::unprocessable(
            "`after` must be the `id` of a message received",
        ));
    }
    if query.run.is_some() && query.job.is_none() {
        return Err(ApiError::unprocessable(
            "`run` is a run number within a job: give `job` with it",
        ));
    }
    if query.timeout.is_some_and(|t| t > 86_400) {
        return Err(ApiError::unprocessable(
            "`timeout` is at most 86400 seconds",
        ));
    }
    if let Some(job) = &query.job {
        access::job(&state, caller.identity(), job, MemberRole::Viewer).await?;
    }
    let hub = state.events.clone();
    let settings = hub.settings;
    let subscription = hub.subscribe(after);
    let now = Instant::now();
    let mut connection = Connection {
        state,
        presented: Presented::of(&headers),
        identity: caller.0,
        checked_at: now,
        decisions: HashMap::new(),
        job: query.job.map(String::from),
        run: query.run,
        receiver: subscription.receiver,
        pending: HashMap::new(),
        skip_through: 0,
        reset: None,
        ready: VecDeque::new(),
        last_flush: None,
        ends_at: query
            .timeout
            .map(|seconds| now + Duration::from_secs(u64::from(seconds))),
        done: false,
        flush_every: settings.flush_every,
        access_for: settings.access_for,
    };
    if subscription.missed {
        connection.reset = Some("the changes after Last-Event-ID are no longer kept");
    }
    for published in subscription.replay {
        connection.take(published);
    }
    if connection.ends_at == Some(now) {
        // `timeout=0`: what the resume replays, then the end.
        connection.flush().await;
        connection.done = true;
    }
    let events = futures_util::stream::unfold(connection, |mut connection| async move {
        let event = connection.next_event().await?;
        Some((Ok::<_, Infallible>(event), connection))
    });
    let stopped = hub.stopped.clone();
    let events = futures_util::StreamExt::take_until(events, stopped.cancelled_owned());
    let sse = Sse::new(events).keep_alive(KeepAlive::new().interval(settings.keep_alive));
    // Proxies must pass each message on as it comes.
    Ok(([("x-accel-buffering", "no")], sse).into_response())
}

/// One client's stream: what it may see, what it has not been sent yet.
struct Connection<D> {
    state: AppState<D>,
    presented: Presented,
    identity: Option<Identity>,
    /// When the credential was last checked.
    checked_at: Instant,
    /// Job name → whether the caller may read it, and since when.
    decisions: HashMap<String, (Instant, bool)>,
    job: Option<String>,
    run: Option<i64>,
    receiver: broadcast::Receiver<Arc<Published>>,
    /// The latest change of each run, task and step not sent yet.
    pending: HashMap<ChangeKey, Arc<Published>>,
    /// Changes up to this id are covered by a reset sent: not sent again.
    skip_through: u64,
    /// A reset to send first, and why.
    reset: Option<&'static str>,
    ready: VecDeque<SseEvent>,
    last_flush: Option<Instant>,
    ends_at: Option<Instant>,
    done: bool,
    flush_every: Duration,
    access_for: Duration,
}

impl<D: Database> Connection<D> {
    async fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(event);
            }
            if self.done {
                return None;
            }
            // Wait for something to send (or the end).
            if self.pending.is_empty() && self.reset.is_none() {
                tokio::select! {
                    received = self.receiver.recv() => self.received(received),
                    _ = sleep_until(self.ends_at) => self.done = true,
                }
                if self.done {
                    continue;
                }
                if self.pending.is_empty() && self.reset.is_none() {
                    continue;
                }
            }
            // Then gather until this client's next message is due: the
            // first change after a quiet spell goes at once, a burst at
            // most once per `flush_every`.
            let due = self
                .last_flush
                .map_or_else(Instant::now, |at| at + self.flush_every);
            loop {
                tokio::select! {
                    received = self.receiver.recv() => self.received(received),
                    _ = tokio::time::sleep_until(due) => break,
                    _ = sleep_until(self.ends_at) => {
                        self.done = true;
                        break;
                    }
                }
                if self.done && self.pending.is_empty() {
                    break;
                }
            }
            self.flush().await;
            self.last_flush = Some(Instant::now());
        }
    }

    fn received(&mut self, received: Result<Arc<Published>, broadcast::error::RecvError>) {
        match received {
            Ok(published) => self.take(published),
            Err(broadcast::error::RecvError::Lagged(_)) => {
                self.reset = Some("this client fell behind the changes");
            }
            // The hub outlives every stream; closed means the server stops.
            Err(broadcast::error::RecvError::Closed) => self.done = true,
        }
    }

    /// Keeps a change for the next message if this stream wants it, in
    /// place of an older change of the same thing.
    fn take(&mut self, published: Arc<Published>) {
        if published.id <= self.skip_through || self.reset.is_some() {
            return;
        }
        let change = &published.change;
        if self.job.as_deref().is_some_and(|job| job != change.job())
            || self.run.is_some_and(|run| run != change.run())
        {
            return;
        }
        self.pending.insert(change.key(), published);
        if self.pending.len() > MAX_BATCH {
            self.reset = Some("this client fell behind the changes");
        }
    }

    /// Turns what is pending into a message (or a reset).
    async fn flush(&mut self) {
        if let Some(reason) = self.reset.take() {
            // The client reloads what it shows after this: what happened
            // up to now is in what it reloads.
            let latest = self.state.events.latest();
            self.skip_through = latest;
            self.pending.clear();
            let data = serde_json::json!({ "reason": reason }).to_string();
            self.ready.push_back(
                SseEvent::default()
                    .event("reset")
                    .id(latest.to_string())
                    .data(data),
            );
            return;
        }
        if self.pending.is_empty() {
            return;
        }
        if self.checked_at.elapsed() >= self.access_for && !self.recheck().await {
            self.done = true;
            self.pending.clear();
            return;
        }
        let mut batch: Vec<Arc<Published>> = self.pending.drain().map(|(_, p)| p).collect();
        batch.sort_unstable_by_key(|p| p.id);
        let newest = batch.last().map_or(0, |p| p.id);
        let mut visible = Vec::with_capacity(batch.len());
        for published in &batch {
            if self.may_read(published.change.job()).await {
                visible.push(&published.change);
            }
        }
        if visible.is_empty() {
            return;
        }
        match serde_json::to_string(&visible) {
            Ok(data) => self.ready.push_back(
                SseEvent::default()
                    .event("changes")
                    .id(newest.to_string())
                    .data(data),
            ),
            Err(e) => tracing::error!("encoding changes failed: {e}"),
        }
    }

    /// Whether the credential the stream was opened with still holds and
    /// is the same person; decisions are taken again after it.
    async fn recheck(&mut self) -> bool {
        self.checked_at = Instant::now();
        self.decisions.clear();
        let source = self.identity.as_ref().and_then(|i| i.source.clone());
        match self.presented.check(&self.state, source).await {
            Ok(now) => {
                let same = match (&now, &self.identity) {
                    (None, None) => true,
                    (Some(a), Some(b)) => a.user == b.user && a.name == b.name,
                    _ => false,
                };
                self.identity = now;
                same
            }
            Err(_) => false,
        }
    }

    /// Whether the caller may read `job`, decided at most `access_for` ago.
    async fn may_read(&mut self, job: &str) -> bool {
        if let Some((at, allowed)) = self.decisions.get(job)
            && at.elapsed() < self.access_for
        {
            return *allowed;
        }
        let caller = self.identity.as_ref();
        let allowed = if caller.is_some_and(|identity| identity.admin) {
            true
        } else {
            let user = caller.and_then(|identity| identity.user);
            match self.state.db.job_and_role(job, user).await {
                Ok(Some((found, role))) => {
                    access::decide(caller, found.spec.visibility, role, MemberRole::Viewer)
                        == Decision::Allowed
                }
                Ok(None) => false,
                Err(e) => {
                    tracing::warn!("deciding access to job {job} for events failed: {e}");
                    false
                }
            }
        };
        self.decisions
            .insert(job.to_string(), (Instant::now(), allowed));
        allowed
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
