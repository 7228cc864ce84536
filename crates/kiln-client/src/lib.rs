//! A typed client for the Kiln REST API (`/api/v1`, DESIGN.md §4), shared by
//! the `kiln` CLI and the end-to-end tests.
//!
//! Every method maps one route; request and response bodies are the
//! [`kiln_api`] types the server uses, so the two cannot drift apart. Errors
//! carry a message a person can act on: an unreachable server, a refused
//! token and the server's own `application/problem+json` are told apart.
//!
//! TLS is rustls with the *ring* provider (installed as the process default
//! by [`Client::new`] when none is), so that building the client needs no C
//! toolchain beyond what *ring* itself needs.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use kiln_api::{
    Agent, AgentTokenBody, AuditList, Forge, ForgeBody, Job, JobBody, Member, MemberBody, Problem,
    Results, Run, RunList, Secret, SecretBody, Token, TokenBody, TokenCreated, TriggerBody, User,
    UserBody, UserPatchBody,
};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use kiln_api;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How long to wait for a TCP (and TLS) connection before calling the server
/// unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Limit for calls that answer with a small JSON document. Logs and artifacts
/// have none: they can be large, and a followed log lasts as long as its task.
const JSON_TIMEOUT: Duration = Duration::from_secs(60);
/// Most of a non-JSON error body quoted in an error message.
const MAX_QUOTED_BODY: usize = 300;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid server address `{server}`: {reason}")]
    InvalidServer { server: String, reason: String },
    /// An argument that cannot be put in a request, e.g. a path segment `..`
    /// or a token with a line break.
    #[error("{0}")]
    InvalidArgument(String),
    #[error(
        "cannot reach the Kiln server at {server}: {}; is it running? (set --server or KILN_SERVER)",
        innermost(.source)
    )]
    Connect {
        server: String,
        source: reqwest::Error,
    },
    /// The connection broke or timed out after it was made.
    #[error("the request to {url} failed: {}", innermost(.source))]
    Transport { url: String, source: reqwest::Error },
    #[error("the server refused the token (401): set --token or KILN_TOKEN")]
    Unauthorized,
    #[error("the server refused this request (403 Forbidden): {detail}")]
    Forbidden { detail: String },
    /// Any other error status, with the server's problem document (or one
    /// made from the status when the body was not one).
    #[error("{}", ProblemText(.problem))]
    Api { status: u16, problem: Problem },
    #[error("unexpected response from {url}: {message}")]
    Decode { url: String, message: String },
}

impl Error {
    /// The HTTP status of an error answer from the server.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Unauthorized => Some(401),
            Error::Forbidden { .. } => Some(403),
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the failure may go away on its own (the server restarting, a
    /// dropped connection), so a long-running follower may try again.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Connect { .. } | Error::Transport { .. } => true,
            Error::Api { status, .. } => matches!(status, 502..=504),
            _ => false,
        }
    }
}

/// The last error of a chain: for reqwest that is the one that says what
/// happened ("Connection refused (os error 111)"), where the outer ones only
/// say that a request was being sent.
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut last = error;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

/// `<title>: <detail>`, then each located error on its own line.
struct ProblemText<'a>(&'a Problem);

impl fmt::Display for ProblemText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let problem = self.0;
        match (problem.title.is_empty(), problem.detail.is_empty()) {
            (false, false) => write!(f, "{}: {}", problem.title, problem.detail)?,
            (true, false) => f.write_str(&problem.detail)?,
            (false, true) => f.write_str(&problem.title)?,
            (true, true) => write!(f, "the server answered {}", problem.status)?,
        }
        for line in &problem.errors {
            write!(f, "\n  {line}")?;
        }
        Ok(())
    }
}

/// A connection to one Kiln server. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// The server's base URL without a trailing `/`, e.g. `http://host:8080`
    /// or `https://ci.example.com/kiln`.
    base: String,
}

impl fmt::Debug for Client {
    // Not derived: the HTTP client holds the token in its default headers.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("base", &self.base).finish()
    }
}

impl Client {
    /// A client for the server at `server` (`http://` is assumed when no
    /// scheme is given), sending `token` as a bearer token when there is one.
    pub fn new(server: &str, token: Option<&str>) -> Result<Client> {
        Client::with_ca_cert(server, token, None)
    }

    /// [`Client::new`], trusting for an `https://` server the PEM
    /// certificates in `ca_cert` (a private CA) besides the system's roots.
    pub fn with_ca_cert(
        server: &str,
        token: Option<&str>,
        ca_cert: Option<&[u8]>,
    ) -> Result<Client> {
        let base = normalize_server(server)?;
        let mut headers = HeaderMap::new();
        if let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                Error::InvalidArgument(
                    "the token holds characters that cannot be sent in a header".into(),
                )
            })?;
            // Keeps the token out of reqwest's and hyper's debug output.
            value.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, value);
        }
        // reqwest is built without a crypto provider (its default one needs
        // aws-lc-rs, hence cmake); `Err` only means one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder();
        if let Some(pem) = ca_cert {
            let roots = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                Error::InvalidArgument(format!("the CA certificate is not PEM: {}", innermost(&e)))
            })?;
            builder = builder.tls_certs_merge(roots);
        }
        let http = builder
            .default_headers(headers)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::InvalidServer {
                server: server.to_string(),
                reason: innermost(&e),
            })?;
        Ok(Client { http, base })
    }

    /// The server's base URL, as requests are made to it.
    pub fn server(&self) -> &str {
        &self.base
    }

    /// The server's host name or address, without scheme or port.
    pub fn server_host(&self) -> String {
        Url::parse(&self.base)
            .ok()
            .and_then(|url| url.host_str().map(str::to_string))
            .unwrap_or_default()
    }

    // ---- jobs ----

    pub async fn list_jobs(&self) -> Result<Vec<Job>> {
        self.get_json(&["jobs"], &[]).await
    }

    pub async fn get_job(&self, job: &str) -> Result<Job> {
        self.get_json(&["jobs", job], &[]).await
    }

    /// `POST /jobs`: `body.name` names the new job.
    pub async fn create_job(&self, body: &JobBody) -> Result<Job> {
        self.send_json(Method::POST, &["jobs"], body).await
    }

    /// `PUT /jobs/{job}`, the idempotent upsert; the answer's `change` says
    /// whether the job was `created`, `updated` or `unchanged`.
    pub async fn put_job(&self, job: &str, body: &JobBody) -> Result<Job> {
        self.send_json(Method::PUT, &["jobs", job], body).await
    }

    pub async fn delete_job(&self, job: &str) -> Result<()> {
        self.send_empty(Method::DELETE, &["jobs", job], None::<&()>)
            .await
    }

    // ---- runs ----

    /// `POST /jobs/{job}/runs`: a run of the branch or commit in `body`, or of
    /// the default branch when it names neither.
    pub async fn trigger(&self, job: &str, body: &TriggerBody) -> Result<Run> {
        self.send_json(Method::POST, &["jobs", job, "runs"], body)
            .await
    }

    /// One page of runs, newest first; pass the answer's `next_cursor` back
    /// for the next one.
    pub async fn list_runs(
        &self,
        job: &str,
        status: Option<&str>,
        branch: Option<&str>,
        cursor: Option<&str>,
    ) -> Result<RunList> {
        let query = present(&[("status", status), ("branch", branch), ("cursor", cursor)]);
        self.get_json(&["jobs", job, "runs"], &query).await
    }

    /// A run with its tasks and their steps.
    pub async fn get_run(&self, job: &str, number: i64) -> Result<Run> {
        self.get_json(&["jobs", job, "runs", &number.to_string()], &[])
            .await
    }

    pub async fn cancel_run(&self, job: &str, number: i64) -> Result<Run> {
        let number = number.to_string();
        self.send_json(
            Method::POST,
            &["jobs", job, "runs", &number, "cancel"],
            &serde_json::json!({}),
        )
        .await
    }

    /// Approves a `blocked` run (a pull request from a fork) so that it runs.
    pub async fn approve_run(&self, job: &str, number: i64) -> Result<Run> {
        let number = number.to_string();
        self.send_json(
            Method::POST,
            &["jobs", job, "runs", &number, "approve"],
            &serde_json::json!({}),
        )
        .await
    }

    // ---- results ----

    /// The kinds of result a task has: console, JUnit report, artifacts.
    pub async fn results(&self, job: &str, number: i64, task: &str) -> Result<Results> {
        let number = number.to_string();
        self.get_json(
            &["jobs", job, "runs", &number, "tasks", task, "results"],
            &[],
        )
        .await
    }

    /// The task's console log as it is now — `attempt`'s, or every
    /// attempt's one after another — from byte `range_start` on when given
    /// (so a caller can fetch only what is new since the last call).
    pub async fn console(
        &self,
        job: &str,
        number: i64,
        task: &str,
        attempt: Option<i64>,
        range_start: Option<u64>,
    ) -> Result<Bytes> {
        let url = self.console_url(job, number, task, attempt, false)?;
        let mut request = self.http.get(url);
        if let Some(start) = range_start {
            request = request.header(header::RANGE, format!("bytes={start}-"));
        }
        let response = match self.send(request).await {
            // Nothing at or past `start` yet: not an error for a poller.
            Err(Error::Api { status: 416, .. }) => return Ok(Bytes::new()),
            other => other?,
        };
        let partial = response.status() == StatusCode::PARTIAL_CONTENT;
        let body = self.body(response).await?;
        match range_start {
            // A server (or proxy) that ignored `Range` sent the whole log:
            // cut it here so callers always get what they asked for.
            Some(start) if !partial => {
                let start = usize::try_from(start).unwrap_or(usize::MAX);
                Ok(body.slice(start.min(body.len())..))
            }
            _ => Ok(body),
        }
    }

    /// The task's console log from its start, then each new piece as the
    /// task writes it, until the server closes the stream (the task ended).
    pub async fn follow_console(
        &self,
        job: &str,
        number: i64,
        task: &str,
        attempt: Option<i64>,
    ) -> Result<impl Stream<Item = Result<Bytes>> + Send + Unpin + 'static> {
        let url = self.console_url(job, number, task, attempt, true)?;
        let response = self.send(self.http.get(url)).await?;
        let url = response.url().to_string();
        Ok(Box::pin(response.bytes_stream().map(move |chunk| {
            chunk.map_err(|source| Error::Transport {
                url: url.clone(),
                source,
            })
        })))
    }

    /// The task's parsed JUnit report, as the server shapes it.
    pub async fn junit(&self, job: &str, number: i64, task: &str) -> Result<serde_json::Value> {
        let number = number.to_string();
        self.get_json(
            &[
                "jobs", job, "runs", &number, "tasks", task, "results", "junit",
            ],
            &[],
        )
        .await
    }

    /// One artifact file; `path` is relative to the task's artifacts and may
    /// hold `/`.
    pub async fn artifact(&self, job: &str, number: i64, task: &str, path: &str) -> Result<Bytes> {
        let number = number.to_string();
        let mut segments = vec![
            "jobs",
            job,
            "runs",
            &number,
            "tasks",
            task,
            "results",
            "artifacts",
        ];
        segments.extend(path.split('/'));
        let url = self.url(&segments, &[])?;
        let response = self.send(self.http.get(url)).await?;
        self.body(response).await
    }

    // ---- secrets ----

    /// Sets (creates or replaces) a secret of a job; `allow_forks` lets
    /// runs of pull requests from forks receive it.
    pub async fn put_secret(
        &self,
        job: &str,
        name: &str,
        value: &str,
        allow_forks: bool,
    ) -> Result<()> {
        let body = SecretBody {
            value: value.to_string(),
            allow_forks,
        };
        self.send_empty(Method::PUT, &["jobs", job, "secrets", name], Some(&body))
            .await
    }

    pub async fn delete_secret(&self, job: &str, name: &str) -> Result<()> {
        self.send_empty(Method::DELETE, &["jobs", job, "secrets", name], None::<&()>)
            .await
    }

    /// The names of a job's secrets (values are write-only).
    pub async fn list_secrets(&self, job: &str) -> Result<Vec<Secret>> {
        self.get_json(&["jobs", job, "secrets"], &[]).await
    }

    // ---- forges ----

    /// Creates or replaces a forge (admins); a token or secret left out
    /// of `body` is kept.
    pub async fn put_forge(&self, name: &str, body: &ForgeBody) -> Result<Forge> {
        self.send_json(Method::PUT, &["forges", name], body).await
    }

    /// The forges, without their tokens and secrets (admins).
    pub async fn list_forges(&self) -> Result<Vec<Forge>> {
        self.get_json(&["forges"], &[]).await
    }

    pub async fn delete_forge(&self, name: &str) -> Result<()> {
        self.send_empty(Method::DELETE, &["forges", name], None::<&()>)
            .await
    }

    // ---- agents ----

    /// A new per-agent token; its value is shown only in this answer.
    pub async fn create_agent_token(&self, body: &AgentTokenBody) -> Result<TokenCreated> {
        self.send_json(Method::POST, &["agent-tokens"], body).await
    }

    pub async fn list_agents(&self) -> Result<Vec<Agent>> {
        self.get_json(&["agents"], &[]).await
    }

    // ---- users ----

    /// Every user (admins).
    pub async fn list_users(&self) -> Result<Vec<User>> {
        self.get_json(&["users"], &[]).await
    }

    /// `POST /users`: `body.name` names the new user (admins).
    pub async fn create_user(&self, body: &UserBody) -> Result<User> {
        self.send_json(Method::POST, &["users"], body).await
    }

    pub async fn get_user(&self, user: &str) -> Result<User> {
        self.get_json(&["users", user], &[]).await
    }

    /// `PATCH /users/{user}`: changes the fields `body` holds, keeps the rest.
    pub async fn update_user(&self, user: &str, body: &UserPatchBody) -> Result<User> {
        self.send_json(Method::PATCH, &["users", user], body).await
    }

    pub async fn delete_user(&self, user: &str) -> Result<()> {
        self.send_empty(Method::DELETE, &["users", user], None::<&()>)
            .await
    }

    // ---- tokens ----

    /// The caller's API tokens, or (admins) `user`'s; never their values.
    pub async fn list_tokens(&self, user: Option<&str>) -> Result<Vec<Token>> {
        self.get_json(&["tokens"], &present(&[("user", user)]))
            .await
    }

    /// A new API token, for the caller or (admins) for `body.user`; its
    /// value is shown only in this answer.
    pub async fn create_token(&self, body: &TokenBody) -> Result<TokenCreated> {
        self.send_json(Method::POST, &["tokens"], body).await
    }

    /// Revokes a token: it stops working at once, and stays listed.
    pub async fn revoke_token(&self, id: i64) -> Result<()> {
        self.send_empty(Method::DELETE, &["tokens", &id.to_string()], None::<&()>)
            .await
    }

    // ---- members ----

    /// The users with a role on a job.
    pub async fn list_members(&self, job: &str) -> Result<Vec<Member>> {
        self.get_json(&["jobs", job, "members"], &[]).await
    }

    /// Gives `user` the `role` (`viewer`, `developer` or `maintainer`) on a
    /// job, replacing any role they had.
    pub async fn set_member(&self, job: &str, user: &str, role: &str) -> Result<Member> {
        let body = MemberBody {
            role: role.to_string(),
        };
        self.send_json(Method::PUT, &["jobs", job, "members", user], &body)
            .await
    }

    pub async fn remove_member(&self, job: &str, user: &str) -> Result<()> {
        self.send_empty(Method::DELETE, &["jobs", job, "members", user], None::<&()>)
            .await
    }

    // ---- audit ----

    /// One page of the audit log, newest first (admins): at most `limit`
    /// entries (the server's default when `None`) that match `filter`,
    /// from `cursor` (the previous page's `next_cursor`) on.
    pub async fn audit(
        &self,
        filter: &AuditFilter,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<AuditList> {
        let limit = limit.map(|n| n.to_string());
        let query = present(&[
            ("actor", filter.actor.as_deref()),
            ("action", filter.action.as_deref()),
            ("object", filter.object.as_deref()),
            ("cursor", cursor),
            ("limit", limit.as_deref()),
        ]);
        self.get_json(&["audit"], &query).await
    }

    // ---- plumbing ----

    /// `<base>/api/v1/<segments…>?<query>`, each segment percent-encoded.
    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Result<Url> {
        let mut text = format!("{}/api/v1", self.base);
        for segment in segments {
            // URL parsers resolve `.` and `..` (even escaped as `%2E`), which
            // would silently address another resource.
            if segment.is_empty() || *segment == "." || *segment == ".." {
                return Err(Error::InvalidArgument(format!(
                    "`{segment}` cannot be used as a name or path component"
                )));
            }
            text.push('/');
            text.extend(kiln_api::url::segment(segment));
        }
        let mut url = Url::parse(&text).map_err(|e| Error::InvalidServer {
            server: self.base.clone(),
            reason: e.to_string(),
        })?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    fn console_url(
        &self,
        job: &str,
        number: i64,
        task: &str,
        attempt: Option<i64>,
        follow: bool,
    ) -> Result<Url> {
        let number = number.to_string();
        let attempt = attempt.map(|n| n.to_string());
        let mut query: Vec<(&str, &str)> = Vec::new();
        if follow {
            query.push(("follow", "true"));
        }
        if let Some(attempt) = &attempt {
            query.push(("attempt", attempt));
        }
        self.url(
            &[
                "jobs", job, "runs", &number, "tasks", task, "results", "console",
            ],
            &query,
        )
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<T> {
        let url = self.url(segments, query)?;
        let response = self.send(self.http.get(url).timeout(JSON_TIMEOUT)).await?;
        self.decode(response).await
    }

    async fn send_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: &B,
    ) -> Result<T> {
        let url = self.url(segments, &[])?;
        let request = self
            .http
            .request(method, url)
            .timeout(JSON_TIMEOUT)
            .json(body);
        let response = self.send(request).await?;
        self.decode(response).await
    }

    /// A call whose answer carries nothing the caller needs (`204`, or a
    /// body that is ignored).
    async fn send_empty<B: Serialize + ?Sized>(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&B>,
    ) -> Result<()> {
        let url = self.url(segments, &[])?;
        let mut request = self.http.request(method, url).timeout(JSON_TIMEOUT);
        if let Some(body) = body {
            request = request.json(body);
        }
        self.send(request).await.map(drop)
    }

    /// Sends a request and turns error statuses into [`Error`]s.
    async fn send(&self, request: RequestBuilder) -> Result<Response> {
        let response = request.send().await.map_err(|e| self.transport(e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        // The body is only read to explain the error; failing to read it
        // still leaves the status to report.
        let body = response.bytes().await.unwrap_or_default();
        let problem = problem_from(status, &body);
        Err(match status {
            StatusCode::UNAUTHORIZED => Error::Unauthorized,
            StatusCode::FORBIDDEN => Error::Forbidden {
                detail: if problem.detail.is_empty() {
                    problem.title
                } else {
                    problem.detail
                },
            },
            _ => Error::Api {
                status: status.as_u16(),
                problem,
            },
        })
    }

    async fn body(&self, response: Response) -> Result<Bytes> {
        response.bytes().await.map_err(|e| self.transport(e))
    }

    async fn decode<T: DeserializeOwned>(&self, response: Response) -> Result<T> {
        let url = response.url().to_string();
        let body = self.body(response).await?;
        serde_json::from_slice(&body).map_err(|e| Error::Decode {
            url,
            message: format!("{e} in {}", quote_body(&body)),
        })
    }

    fn transport(&self, source: reqwest::Error) -> Error {
        if source.is_connect() {
            Error::Connect {
                server: self.base.clone(),
                source,
            }
        } else {
            let url = source
                .url()
                .map_or_else(|| self.base.clone(), Url::to_string);
            Error::Transport { url, source }
        }
    }
}

/// Which audit entries to list; `None` matches any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Who: a user's name.
    pub actor: Option<String>,
    /// What, e.g. `user.create`.
    pub action: Option<String>,
    /// Which, e.g. `job/app`.
    pub object: Option<String>,
}

/// The query parameters that have a value.
fn present<'a>(pairs: &[(&'a str, Option<&'a str>)]) -> Vec<(&'a str, &'a str)> {
    pairs
        .iter()
        .filter_map(|&(key, value)| Some((key, value?)))
        .collect()
}

/// The base URL for `server`: `http://` added when no scheme is given, the
/// trailing `/` removed; only `http` and `https` are accepted.
fn normalize_server(server: &str) -> Result<String> {
    let trimmed = server.trim();
    let invalid = |reason: &str| Error::InvalidServer {
        server: server.to_string(),
        reason: reason.to_string(),
    };
    if trimmed.is_empty() {
        return Err(invalid("it is empty"));
    }
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_string()
    } else {
        format!("http://{trimmed}")
    };
    let url = Url::parse(&with_scheme).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("expected an http:// or https:// URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("it names no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("expected no `?query` or `#fragment`"));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// The problem document of an error answer; one made from the status (and
/// the start of the body) when the server, or a proxy before it, sent
/// something else.
fn problem_from(status: StatusCode, body: &[u8]) -> Problem {
    /// Lenient: a server that omits a member still gets its message shown.
    #[derive(serde::Deserialize)]
    struct Loose {
        #[serde(rename = "type")]
        kind: Option<String>,
        title: Option<String>,
        detail: Option<String>,
        #[serde(default)]
        errors: Vec<String>,
    }
    let reason = status
        .canonical_reason()
        .map_or_else(|| format!("HTTP {}", status.as_u16()), str::to_string);
    match serde_json::from_slice::<Loose>(body) {
        Ok(loose) if loose.title.is_some() || loose.detail.is_some() => Problem {
            kind: loose.kind.unwrap_or_else(|| "about:blank".into()),
            title: loose.title.unwrap_or(reason),
            status: status.as_u16(),
            detail: loose.detail.unwrap_or_default(),
            errors: loose.errors,
        },
        _ => Problem {
            kind: "about:blank".into(),
            title: reason,
            status: status.as_u16(),
            detail: if body.iter().all(u8::is_ascii_whitespace) {
                String::new()
            } else {
                quote_body(body)
            },
            errors: Vec::new(),
        },
    }
}

/// The start of a body, for an error message.
fn quote_body(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "an empty body".into();
    }
    match text.char_indices().nth(MAX_QUOTED_BODY) {
        Some((cut, _)) => format!("`{}…`", &text[..cut]),
        None => format!("`{text}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_are_normalized() {
        let ok = |s: &str| normalize_server(s).unwrap();
        assert_eq!(ok("127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(ok("http://ci:8080/"), "http://ci:8080");
        assert_eq!(
            ok("https://ci.example.com/kiln/"),
            "https://ci.example.com/kiln"
        );
        assert!(normalize_server("ftp://ci").is_err());
        assert!(normalize_server("").is_err());
        assert!(normalize_server("http://ci/?x=1").is_err());
    }

    #[test]
    fn segments_are_escaped_and_dots_refused() {
        let client = Client::new("ci:8080/base", None).unwrap();
        let url = client
            .url(&["jobs", "a b/c", "x[k=v,w]~-._"], &[("status", "a&b")])
            .unwrap();
        assert_eq!(
            url.as_str(),
            "http://ci:8080/base/api/v1/jobs/a%20b%2Fc/x%5Bk%3Dv%2Cw%5D~-._?status=a%26b"
        );
        assert!(client.url(&["jobs", ".."], &[]).is_err());
        assert!(client.url(&["jobs", ""], &[]).is_err());
    }

    #[test]
    fn non_problem_bodies_still_explain() {
        let problem = problem_from(StatusCode::BAD_GATEWAY, b"upstream down\n");
        assert_eq!(problem.title, "Bad Gateway");
        assert_eq!(problem.detail, "`upstream down`");
        let problem = problem_from(StatusCode::NOT_FOUND, br#"{"detail":"no job `x`"}"#);
        assert_eq!(ProblemText(&problem).to_string(), "Not Found: no job `x`");
    }
}
