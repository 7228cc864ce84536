//! What requests carry: bodies, path and query parameters. Each is made of
//! [`kiln_api::fields`], so deserializing one checks it, and its schema in
//! the OpenAPI document is generated from the same type: the two cannot
//! disagree. What no schema can say (a freestyle pipeline's validity, a
//! commit that exists) is checked by the handlers and answered `422`.

use kiln_api::fields::{
    ApiUrl, AttemptNumber, BranchName, CommitSha, Cursor, ExpiresIn, ForgeName, JobName, PageSize,
    Password, PipelinePath, PollInterval, RepositoryUrl, SecretName, SecretValue, StatusFilter,
    TokenName, UserName,
};
use kiln_store::{ClosedSet, ForkPrs, MemberRole, UserRole, Visibility};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{IntoParams, PartialSchema, ToSchema};

/// A pipeline that runs anywhere, for the document's examples.
const EXAMPLE_PIPELINE: &str =
    "version: 1\ntasks:\n  build:\n    steps:\n      - run: echo hello\n";

/// Body of `POST /api/v1/jobs`: a new job and its name; `kind` says which
/// fields it takes.
#[derive(Debug)]
pub enum NewJob {
    Git(NewGitJob),
    Freestyle(NewFreestyleJob),
}

/// Body of `PUT /api/v1/jobs/{job}`: a job as it should be; `kind` says
/// which fields it takes. The URL names it; `name`, if given, must be the
/// same.
#[derive(Debug)]
pub enum JobDefinition {
    Git(GitJob),
    Freestyle(FreestyleJob),
}

/// `kind` of a job built from a repository.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GitKind {
    Git,
}

/// `kind` of a job whose pipeline is stored with it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FreestyleKind {
    Freestyle,
}

/// A new job built from a repository: its pipeline file is read at each
/// run's commit.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewGitJob {
    pub kind: GitKind,
    pub name: JobName,
    pub repository: RepositoryUrl,
    /// Where the pipeline file is in the repository; `.kiln.yml` by default.
    pub pipeline_path: Option<PipelinePath>,
    /// Branch built when a trigger names none; `main` by default.
    pub default_branch: Option<BranchName>,
    /// `private` (members only; the default for a new job) or `public`
    /// (anyone may read its runs); unchanged when left out of a `PUT`.
    #[schema(value_type = Option<VisibilityName>)]
    pub visibility: Option<Choice<Visibility>>,
    /// The forge whose webhooks trigger the job (see `PUT /api/v1/forges/{forge}`);
    /// none when left out.
    pub forge: Option<ForgeName>,
    /// What a pull request from a fork does; `approve` when left out.
    #[schema(value_type = Option<ForkPrsName>)]
    pub fork_prs: Option<Choice<ForkPrs>>,
    /// Poll the repository this often for new branch heads and tags, for
    /// a repository no webhook reaches; not polled when left out.
    pub poll_interval: Option<PollInterval>,
}

/// A new job whose pipeline is stored with it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewFreestyleJob {
    pub kind: FreestyleKind,
    pub name: JobName,
    /// The pipeline YAML, checked when it is stored.
    #[schema(example = json!(EXAMPLE_PIPELINE))]
    pub pipeline: String,
    /// The branch a run reports (and `when` matches) when a trigger names none.
    pub default_branch: Option<BranchName>,
    /// `private` (members only; the default for a new job) or `public`
    /// (anyone may read its runs); unchanged when left out of a `PUT`.
    #[schema(value_type = Option<VisibilityName>)]
    pub visibility: Option<Choice<Visibility>>,
}

/// A job built from a repository: its pipeline file is read at each run's
/// commit.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GitJob {
    pub kind: GitKind,
    /// The URL's job name, if given.
    pub name: Option<JobName>,
    pub repository: RepositoryUrl,
    /// Where the pipeline file is in the repository; `.kiln.yml` by default.
    pub pipeline_path: Option<PipelinePath>,
    /// Branch built when a trigger names none; `main` by default.
    pub default_branch: Option<BranchName>,
    /// `private` (members only; the default for a new job) or `public`
    /// (anyone may read its runs); unchanged when left out of a `PUT`.
    #[schema(value_type = Option<VisibilityName>)]
    pub visibility: Option<Choice<Visibility>>,
    /// The forge whose webhooks trigger the job (see `PUT /api/v1/forges/{forge}`);
    /// none when left out.
    pub forge: Option<ForgeName>,
    /// What a pull request from a fork does; `approve` when left out.
    #[schema(value_type = Option<ForkPrsName>)]
    pub fork_prs: Option<Choice<ForkPrs>>,
    /// Poll the repository this often for new branch heads and tags, for
    /// a repository no webhook reaches; not polled when left out.
    pub poll_interval: Option<PollInterval>,
}

/// A job whose pipeline is stored with it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FreestyleJob {
    pub kind: FreestyleKind,
    /// The URL's job name, if given.
    pub name: Option<JobName>,
    /// The pipeline YAML, checked when it is stored.
    #[schema(example = json!(EXAMPLE_PIPELINE))]
    pub pipeline: String,
    /// The branch a run reports (and `when` matches) when a trigger names none.
    pub default_branch: Option<BranchName>,
    /// `private` (members only; the default for a new job) or `public`
    /// (anyone may read its runs); unchanged when left out of a `PUT`.
    #[schema(value_type = Option<VisibilityName>)]
    pub visibility: Option<Choice<Visibility>>,
}

/// Reads a job body by its `kind`, so that an error names the kind's own
/// fields (an untagged enum would only say that nothing matched).
fn by_kind<'de, D, G, F>(deserializer: D) -> Result<Result<G, F>, D::Error>
where
    D: Deserializer<'de>,
    G: DeserializeOwned,
    F: DeserializeOwned,
{
    let object = serde_json::Map::<String, Value>::deserialize(deserializer)?;
    let kind = match object.get("kind") {
        Some(Value::String(kind)) => kind.clone(),
        Some(other) => {
            return Err(D::Error::custom(format!(
                "`kind` must be `git` or `freestyle`, not {other}"
            )));
        }
        None => {
            return Err(D::Error::custom(
                "the job needs `kind`: `git` or `freestyle`",
            ));
        }
    };
    let object = Value::Object(object);
    match kind.as_str() {
        "git" => serde_json::from_value(object).map(Ok),
        "freestyle" => serde_json::from_value(object).map(Err),
        other => {
            return Err(D::Error::custom(format!(
                "unknown job kind `{other}`: expected `git` or `freestyle`"
            )));
        }
    }
    .map_err(D::Error::custom)
}

impl<'de> Deserialize<'de> for NewJob {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<NewJob, D::Error> {
        Ok(match by_kind(deserializer)? {
            Ok(git) => NewJob::Git(git),
            Err(freestyle) => NewJob::Freestyle(freestyle),
        })
    }
}

impl<'de> Deserialize<'de> for JobDefinition {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<JobDefinition, D::Error> {
        Ok(match by_kind(deserializer)? {
            Ok(git) => JobDefinition::Git(git),
            Err(freestyle) => JobDefinition::Freestyle(freestyle),
        })
    }
}

/// `oneOf` the two kinds' schemas, as [`by_kind`] reads them.
fn one_of<G: ToSchema, F: ToSchema>(description: &str) -> RefOr<Schema> {
    OneOfBuilder::new()
        .item(Ref::from_schema_name(G::name()))
        .item(Ref::from_schema_name(F::name()))
        .description(Some(description))
        .into()
}

fn push_kinds<G: ToSchema, F: ToSchema>(schemas: &mut Vec<(String, RefOr<Schema>)>) {
    schemas.push((G::name().into(), G::schema()));
    G::schemas(schemas);
    schemas.push((F::name().into(), F::schema()));
    F::schemas(schemas);
}

impl PartialSchema for NewJob {
    fn schema() -> RefOr<Schema> {
        one_of::<NewGitJob, NewFreestyleJob>("A new job: `kind` says which fields it takes.")
    }
}

impl ToSchema for NewJob {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        push_kinds::<NewGitJob, NewFreestyleJob>(schemas);
    }
}

impl PartialSchema for JobDefinition {
    fn schema() -> RefOr<Schema> {
        one_of::<GitJob, FreestyleJob>("A job as it should be: `kind` says which fields it takes.")
    }
}

impl ToSchema for JobDefinition {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        push_kinds::<GitJob, FreestyleJob>(schemas);
    }
}

/// Where a job's pipeline comes from, whichever request defined it.
#[derive(Debug)]
pub enum JobSource {
    Git {
        repository: RepositoryUrl,
        pipeline_path: Option<PipelinePath>,
        default_branch: Option<BranchName>,
        forge: Option<ForgeName>,
        fork_prs: Option<ForkPrs>,
        /// Seconds.
        poll_interval: Option<i64>,
    },
    Freestyle {
        pipeline: String,
        default_branch: Option<BranchName>,
    },
}

impl NewJob {
    pub fn into_parts(self) -> (JobName, JobSource, Option<Visibility>) {
        match self {
            NewJob::Git(job) => (
                job.name,
                JobSource::Git {
                    repository: job.repository,
                    pipeline_path: job.pipeline_path,
                    default_branch: job.default_branch,
                    forge: job.forge,
                    fork_prs: job.fork_prs.map(Choice::get),
                    poll_interval: job.poll_interval.as_ref().map(PollInterval::seconds),
                },
                job.visibility.map(Choice::get),
            ),
            NewJob::Freestyle(job) => (
                job.name,
                JobSource::Freestyle {
                    pipeline: job.pipeline,
                    default_branch: job.default_branch,
                },
                job.visibility.map(Choice::get),
            ),
        }
    }
}

impl JobDefinition {
    pub fn into_parts(self) -> (Option<JobName>, JobSource, Option<Visibility>) {
        match self {
            JobDefinition::Git(job) => (
                job.name,
                JobSource::Git {
                    repository: job.repository,
                    pipeline_path: job.pipeline_path,
                    default_branch: job.default_branch,
                    forge: job.forge,
                    fork_prs: job.fork_prs.map(Choice::get),
                    poll_interval: job.poll_interval.as_ref().map(PollInterval::seconds),
                },
                job.visibility.map(Choice::get),
            ),
            JobDefinition::Freestyle(job) => (
                job.name,
                JobSource::Freestyle {
                    pipeline: job.pipeline,
                    default_branch: job.default_branch,
                },
                job.visibility.map(Choice::get),
            ),
        }
    }
}

/// Body of `POST /api/v1/jobs/{job}/runs`: a branch or a commit, not both
/// (the schema's `maxProperties`, which the handler checks), and neither
/// `null`. No body, `null` or `{}` builds the job's default branch.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(max_properties = 1)]
pub struct RunTrigger {
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    pub branch: Option<BranchName>,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    pub sha: Option<CommitSha>,
}

/// An optional field that, when given, is not `null`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

/// Body of `PUT /api/v1/jobs/{job}/secrets/{name}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretValueBody {
    pub value: SecretValue,
    /// Whether runs of pull requests from forks may receive it: a fork's
    /// code could print it, so only for what is safe to share.
    #[serde(default)]
    pub allow_forks: bool,
}

/// Body of `PUT /api/v1/forges/{forge}`: the forge as it should be. The
/// token and webhook secret are write-only: left out, the stored ones stay.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgeDefinition {
    pub kind: ForgeKindName,
    pub api_url: ApiUrl,
    /// An access token, for commit statuses.
    pub token: Option<SecretValue>,
    /// The secret the forge's webhook is signed with: without one, every
    /// delivery is refused.
    pub webhook_secret: Option<SecretValue>,
}

/// Which forge's webhooks and API a forge speaks. Forgejo is `gitea`.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ForgeKindName {
    Github,
    Gitlab,
    #[serde(alias = "forgejo")]
    Gitea,
}

impl From<ForgeKindName> for kiln_forge::ForgeKind {
    fn from(kind: ForgeKindName) -> Self {
        match kind {
            ForgeKindName::Github => kiln_forge::ForgeKind::Github,
            ForgeKindName::Gitlab => kiln_forge::ForgeKind::Gitlab,
            ForgeKindName::Gitea => kiln_forge::ForgeKind::Gitea,
        }
    }
}

/// `/api/v1/forges/{forge}` and `/hooks/{forge}`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ForgePath {
    /// The forge's name.
    #[param(inline)]
    pub forge: ForgeName,
}

/// Body of `POST /api/v1/agent-tokens`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAgentToken {
    /// The agent's name: the only one the token may be used under.
    pub name: TokenName,
    /// The labels the agent may offer; any when left out.
    pub labels: Option<Vec<TokenName>>,
    /// The most tasks the agent may take at once (1 to 64); 64 when left out.
    pub max_capacity: Option<AgentCapacity>,
}

/// How many tasks an agent may take at once.
#[derive(Debug, Clone, Copy)]
pub struct AgentCapacity(pub i64);

impl PartialSchema for AgentCapacity {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::Integer))
            .minimum(Some(1))
            .maximum(Some(crate::grpc::MAX_CAPACITY))
            .description(Some("The most tasks the agent may take at once."))
            .into()
    }
}

impl ToSchema for AgentCapacity {}

impl<'de> Deserialize<'de> for AgentCapacity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<AgentCapacity, D::Error> {
        let most = crate::grpc::MAX_CAPACITY;
        // JSON Schema's integers include `48.0`: any number without a fraction.
        let number = serde_json::Number::deserialize(deserializer)?;
        let value = match (number.as_i64(), number.as_f64()) {
            (Some(value), _) => value,
            (None, Some(value)) if value.fract() == 0.0 && value.abs() < 1e15 => value as i64,
            _ => {
                return Err(D::Error::custom(format!(
                    "`max_capacity` must be a whole number, not {number}"
                )));
            }
        };
        if (1..=most).contains(&value) {
            Ok(AgentCapacity(value))
        } else {
            Err(D::Error::custom(format!(
                "`max_capacity` must be 1 to {most}, not {value}"
            )))
        }
    }
}

/// `/api/v1/agents/{agent}`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct AgentPath {
    /// The agent's name.
    #[param(inline)]
    pub agent: TokenName,
}

/// Body of `POST /api/v1/tokens`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUserToken {
    pub name: TokenName,
    /// How long it works; forever when left out.
    pub expires_in: Option<ExpiresIn>,
    /// Admins: whose token it is; the caller's when left out.
    pub user: Option<UserName>,
}

/// One of a closed set of names, as its schema's `enum` lists them; an
/// unknown one is refused with the list.
#[derive(Debug, Clone, Copy)]
pub struct Choice<T>(pub T);

impl<T> Choice<T> {
    pub fn get(self) -> T {
        self.0
    }
}

impl<'de, T: ClosedSet> Deserialize<'de> for Choice<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Choice<T>, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map(Choice).map_err(|_| {
            let names: Vec<&str> = T::all().iter().map(|value| value.name()).collect();
            D::Error::custom(format!(
                "unknown {} `{text}`: expected one of {}",
                T::WHAT,
                names.join(", ")
            ))
        })
    }
}

/// The `enum` schema of a [`Choice`].
fn choice_schema<T: ClosedSet>(description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .enum_values(Some(T::all().iter().map(|value| value.name())))
        .description(Some(description))
        .into()
}

/// Declares a named schema for a [`Choice`] of `$set`.
macro_rules! choice_schema {
    ($name:ident, $set:ty, $description:literal) => {
        pub struct $name;
        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                choice_schema::<$set>($description)
            }
        }
        impl ToSchema for $name {}
    };
}

choice_schema!(
    ForkPrsName,
    ForkPrs,
    "`approve`: a fork's pull request waits for a maintainer; `run`: it runs; `ignore`: it starts nothing."
);
choice_schema!(
    VisibilityName,
    Visibility,
    "`private`: members only; `public`: anyone reads its runs, logs and results."
);
choice_schema!(
    UserRoleName,
    UserRole,
    "`admin`: everything, everywhere; `user`: what the roles of their jobs allow."
);
choice_schema!(
    MemberRoleName,
    MemberRole,
    "`viewer`: read; `developer`: + trigger, cancel, rerun; `maintainer`: + change the job, its secrets and members."
);

/// Body of `POST /api/v1/users`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUserBody {
    pub name: UserName,
    /// `user` when left out.
    #[schema(value_type = Option<UserRoleName>)]
    pub role: Option<Choice<UserRole>>,
    /// For signing in to the web UI; without one, the user only uses tokens.
    pub password: Option<Password>,
}

/// Body of `PATCH /api/v1/users/{user}`: what is left out stays.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    #[schema(value_type = Option<UserRoleName>)]
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    pub role: Option<Choice<UserRole>>,
    /// A disabled user's tokens and sessions stop working at once.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    pub disabled: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    pub password: Option<Password>,
}

/// Body of `PUT /api/v1/jobs/{job}/members/{user}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberRoleBody {
    #[schema(value_type = MemberRoleName)]
    pub role: Choice<MemberRole>,
}

/// Body of `POST /login`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    pub username: String,
    pub password: String,
}

/// `/api/v1/users/{user}`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct UserPath {
    /// The user's name.
    #[param(inline)]
    pub user: UserName,
}

/// `/api/v1/tokens/{id}`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TokenPath {
    /// The token's id, as `GET /tokens` lists it.
    #[param(example = 1)]
    pub id: i64,
}

/// `/api/v1/jobs/{job}/members/{user}`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct MemberPath {
    /// The job's name.
    #[param(inline)]
    pub job: JobName,
    /// The user's name.
    #[param(inline)]
    pub user: UserName,
}

/// `GET /api/v1/tokens?user=`
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(default)]
pub struct TokenListQuery {
    /// Admins: whose tokens to list; the caller's when left out.
    #[param(inline)]
    pub user: Option<UserName>,
}

/// `GET /api/v1/audit?actor=&action=&object=&cursor=&limit=`: newest first.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(default)]
pub struct AuditQuery {
    /// Only entries by this actor (a user's name).
    pub actor: Option<String>,
    /// Only entries of this action, e.g. `job.update`.
    pub action: Option<String>,
    /// Only entries whose object is this or under it, e.g. `job/app`.
    pub object: Option<String>,
    #[param(inline)]
    pub cursor: Cursor,
    #[param(inline)]
    pub limit: PageSize,
}

/// `/api/v1/jobs/{job}…`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct JobPath {
    /// The job's name.
    #[param(inline)]
    pub job: JobName,
}

/// `…/runs/{number}…`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RunPath {
    /// The job's name.
    #[param(inline)]
    pub job: JobName,
    /// The run's number within its job.
    #[param(example = 1)]
    pub number: i64,
}

/// `…/tasks/{task}…`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TaskPath {
    /// The job's name.
    #[param(inline)]
    pub job: JobName,
    /// The run's number within its job.
    #[param(example = 1)]
    pub number: i64,
    /// The task's name in the pipeline.
    #[param(example = "build")]
    pub task: String,
}

/// `…/results/artifacts/{path}`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ArtifactPath {
    /// The job's name.
    #[param(inline)]
    pub job: JobName,
    /// The run's number within its job.
    #[param(example = 1)]
    pub number: i64,
    /// The task's name in the pipeline.
    #[param(example = "build")]
    pub task: String,
    /// The artifact's path in the workspace, each segment percent-encoded
    /// as in the `url` its task's results give.
    #[param(example = "report.xml")]
    pub path: String,
}

/// `…/secrets/{name}`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SecretPath {
    /// The job's name.
    #[param(inline)]
    pub job: JobName,
    /// The secret's name.
    #[param(inline)]
    pub name: SecretName,
}

/// `GET …/runs?status=&branch=&cursor=&limit=`: newest first.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(default)]
pub struct RunListQuery {
    #[param(inline)]
    pub status: StatusFilter,
    /// Only runs of this branch; empty for any.
    pub branch: String,
    #[param(inline)]
    pub cursor: Cursor,
    #[param(inline)]
    pub limit: PageSize,
}

/// `GET …/results/console?follow=&attempt=`
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(default)]
pub struct ConsoleQuery {
    /// Keep the response open and stream new output until the task ends
    /// (or, with `attempt`, until that attempt ends).
    pub follow: bool,
    /// Only this attempt's log; every attempt's, one after another, when
    /// left out.
    #[param(inline)]
    pub attempt: Option<AttemptNumber>,
}

/// `GET /api/v1/events?job=&run=&timeout=&after=`
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(default)]
pub struct EventsQuery {
    /// Only the changes of this job (it must exist and be readable).
    #[param(inline)]
    pub job: Option<JobName>,
    /// Only the changes of this run of `job` (which it needs).
    #[param(example = 1)]
    pub run: Option<i64>,
    /// Seconds after which the server ends the stream; `0` sends what a
    /// resume (`Last-Event-ID`) replays and ends. Without it the stream
    /// lasts until the client leaves.
    #[param(maximum = 86400, example = 0)]
    pub timeout: Option<u32>,
    /// As `Last-Event-ID` (which wins when both are given), for a page
    /// that knows the id its content is as of: a browser's `EventSource`
    /// sends the header only when it reconnects.
    pub after: Option<u64>,
}

/// `GET …/results`, `…/results/junit`, `…/results/artifacts/{path}`:
/// `?attempt=`
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(default)]
pub struct AttemptQuery {
    /// Which attempt's results; the task's latest when left out.
    #[param(inline)]
    pub attempt: Option<AttemptNumber>,
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn client_form<T: serde::Serialize>(body: &T) -> Value {
        serde_json::to_value(body).unwrap()
    }

    /// The bodies the client builds (kiln-api's loose shapes) are what the
    /// server's checked types read.
    #[test]
    fn client_bodies_fit_the_server_types() {
        let git = kiln_api::JobBody {
            name: Some("app".into()),
            kind: "git".into(),
            repository: Some("file:///srv/git/app".into()),
            pipeline_path: Some("ci/kiln.yml".into()),
            default_branch: Some("main".into()),
            pipeline: None,
            visibility: Some("public".into()),
            forge: None,
            fork_prs: None,
            poll_interval: Some("90s".into()),
        };
        let (name, source, visibility) = serde_json::from_value::<NewJob>(client_form(&git))
            .unwrap()
            .into_parts();
        assert_eq!(name.as_str(), "app");
        assert!(matches!(
            source,
            JobSource::Git {
                poll_interval: Some(90),
                ..
            }
        ));
        assert_eq!(visibility, Some(Visibility::Public));
        let freestyle = kiln_api::JobBody {
            name: None,
            kind: "freestyle".into(),
            repository: None,
            pipeline_path: None,
            default_branch: None,
            pipeline: Some(EXAMPLE_PIPELINE.into()),
            visibility: None,
            forge: None,
            fork_prs: None,
            poll_interval: None,
        };
        let (name, source, visibility) =
            serde_json::from_value::<JobDefinition>(client_form(&freestyle))
                .unwrap()
                .into_parts();
        assert!(name.is_none());
        assert!(visibility.is_none());
        assert!(matches!(source, JobSource::Freestyle { .. }));

        let trigger = kiln_api::TriggerBody {
            branch: Some("feature/x".into()),
            sha: None,
        };
        let trigger: RunTrigger = serde_json::from_value(client_form(&trigger)).unwrap();
        assert_eq!(trigger.branch.unwrap().as_str(), "feature/x");
        let empty: RunTrigger =
            serde_json::from_value(client_form(&kiln_api::TriggerBody::default())).unwrap();
        assert!(empty.branch.is_none() && empty.sha.is_none());
        for refused in [
            json!({"branch": null}),
            json!({"branch": "-a"}),
            json!({"sha": "xyz"}),
            json!({"tag": "v1"}),
        ] {
            assert!(
                serde_json::from_value::<RunTrigger>(refused.clone()).is_err(),
                "{refused}"
            );
        }

        let secret = kiln_api::SecretBody {
            value: "s3cret".into(),
            allow_forks: true,
        };
        serde_json::from_value::<SecretValueBody>(client_form(&secret)).unwrap();
        let token = kiln_api::AgentTokenBody {
            name: "host-1".into(),
            labels: Some(vec!["linux".into()]),
            max_capacity: Some(2),
        };
        serde_json::from_value::<NewAgentToken>(client_form(&token)).unwrap();
    }

    #[test]
    fn agent_capacities_are_whole_numbers_in_range() {
        let read = |value: Value| serde_json::from_value::<AgentCapacity>(value).map(|c| c.0);
        assert_eq!(read(json!(48)).unwrap(), 48);
        assert_eq!(read(json!(48.0)).unwrap(), 48, "JSON Schema's integers");
        for refused in [json!(0), json!(65), json!(1.5), json!("2"), json!(-1)] {
            assert!(read(refused.clone()).is_err(), "{refused}");
        }
    }

    #[test]
    fn job_bodies_refuse_what_their_kind_does_not_take() {
        for body in [
            json!({"name": "a", "kind": "git"}),
            json!({"name": "a", "kind": "git", "repository": "/r", "pipeline": "x"}),
            json!({"name": "a", "kind": "freestyle", "pipeline": "x", "repository": "/r"}),
            json!({"name": "a", "kind": "svn"}),
            json!({"name": "a", "repository": "/r"}),
            json!({"kind": "git", "repository": "/r"}),
            json!({"name": "a b", "kind": "git", "repository": "/r"}),
            json!({"name": "a", "kind": "git", "repository": "/r", "pipeline_path": "../x"}),
            json!({"name": "a", "kind": "git", "repository": "/r", "visibility": "internal"}),
        ] {
            assert!(
                serde_json::from_value::<NewJob>(body.clone()).is_err(),
                "{body}"
            );
        }
        assert!(
            serde_json::from_value::<JobDefinition>(json!({"kind": "git", "repository": "/r"}))
                .is_ok()
        );
    }
}
