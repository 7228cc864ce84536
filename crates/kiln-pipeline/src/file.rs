//! The shape of the `.kiln.yml` file as written, before validation and matrix
//! expansion. Everything that is checked after deserializing keeps its source
//! location ([`Sp`]), so that errors point at the offending text.
//!
//! The doc comments on these types become the descriptions in
//! `docs/kiln.schema.json`, which editors show as hover help: write them for
//! the person editing a pipeline file.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Location, Spanned};

use crate::{Duration, Event};

/// Pattern of task names (the keys under `tasks:`), templates included.
const TASK_NAME_PATTERN: &str = "^\\.?[A-Za-z0-9_][A-Za-z0-9_.-]*$";
/// Pattern of environment variable and secret names.
const ENV_NAME_PATTERN: &str = "^[A-Za-z_][A-Za-z0-9_]*$";
/// Pattern of service aliases: they become host names on the task's network.
const SERVICE_ALIAS_PATTERN: &str = "^[a-z0-9]([a-z0-9-]{0,62})$";

/// A Kiln pipeline: the tasks to run for a commit and how they depend on each
/// other. Tasks without `needs` run in parallel.
#[derive(Debug, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[schemars(title = "Kiln pipeline (.kiln.yml)")]
pub(crate) struct PipelineFile {
    /// Version of the file format. Must be `1`.
    #[schemars(required, schema_with = "version_schema")]
    pub version: Option<Sp<u64>>,
    /// Umbrella timeout for the whole run, e.g. `1h`. When it expires, every
    /// task still running is stopped and ends `timed_out`. Default: no limit
    /// beyond the tasks' own timeouts.
    pub timeout: Option<Sp<Duration>>,
    /// Environment variables for every task. A task's own `env` wins over these.
    /// Values may be strings, numbers or booleans; they are passed as written.
    /// `${{ matrix.NAME }}` is not available here, only in a task's `env`.
    #[serde(default)]
    #[schemars(schema_with = "env_schema")]
    pub env: Option<OrderedMap<Scalar>>,
    /// The tasks, by name. A name is letters, digits, `_`, `.` and `-`, at most
    /// 64 characters, not starting with `.` or `-`. A name starting with `.` is
    /// a template: it is never run, and exists to be reused with YAML anchors
    /// and merge keys (`<<: *template`).
    #[schemars(required, schema_with = "tasks_schema")]
    pub tasks: Option<Sp<OrderedMap<TaskFile>>>,
}

/// One task: a list of steps run in order in one container (or one process)
/// on one agent.
#[derive(Debug, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[schemars(rename = "Task")]
pub(crate) struct TaskFile {
    /// Container image the steps run in, e.g. `rust:1.83`. Cannot be combined
    /// with `build`. Without `image` or `build`, the executor decides (the
    /// `process` executor runs the steps on the host).
    pub image: Option<Sp<String>>,
    /// Build the task's image from a Dockerfile in the repository instead of
    /// pulling `image`.
    pub build: Option<BuildFile>,
    /// Agent labels that must all be present on the agent that runs the task,
    /// e.g. `[linux, gpu]`. A single string is one label. Default: any agent.
    #[serde(default)]
    #[schemars(with = "StringOrList")]
    pub runs_on: Option<StrList>,
    /// Run the task once per combination of values, e.g.
    /// `{ db: [postgres, sqlite], os: [linux, mac] }` gives four tasks named
    /// `NAME[db=postgres,os=linux]` and so on, in file order. Inside the task,
    /// `${{ matrix.db }}` is replaced by the combination's value. At most 256
    /// combinations.
    #[serde(default)]
    #[schemars(schema_with = "matrix_schema")]
    pub matrix: Option<OrderedMap<Vec<Scalar>>>,
    /// Sidecar containers (databases, caches…) started before the steps, on a
    /// private network shared with the task. Each is reached by its key as a
    /// host name, e.g. `postgres:5432`.
    #[serde(default)]
    #[schemars(schema_with = "services_schema")]
    pub services: Option<OrderedMap<ServiceFile>>,
    /// Environment variables for the steps, over the pipeline's `env`. Names
    /// starting with `KILN_`, and `CI` and `KILN`, are reserved.
    #[serde(default)]
    #[schemars(schema_with = "env_schema")]
    pub env: Option<OrderedMap<Scalar>>,
    /// Names of the job's secrets to expose to the steps as environment
    /// variables. A run fails with a clear error when one is not set for the
    /// job. Secret values are masked in logs.
    #[serde(default)]
    #[schemars(with = "Vec<EnvName>")]
    pub secrets: Option<Vec<Sp<String>>>,
    /// The steps: shell scripts run in order; the first that fails fails the
    /// task. Each is `{ name, run }`, or just the script as a string.
    // Required of runnable tasks only (templates may leave it to their
    // users): see `tasks_schema`.
    #[schemars(length(min = 1))]
    pub steps: Option<Sp<Vec<StepFile>>>,
    /// Tasks that must succeed before this one starts. Naming a matrix task
    /// waits for all its combinations. A need that fails, is skipped, is
    /// cancelled or times out skips this task (a need that failed with
    /// `allow-failure: true` counts as passed).
    pub needs: Option<Vec<Sp<String>>>,
    /// Run the task only for some branches or events; otherwise it is skipped.
    pub when: Option<WhenFile>,
    /// Time limit for the task, e.g. `20m` or `1h30m`. Default: no limit
    /// beyond the pipeline's `timeout`.
    pub timeout: Option<Sp<Duration>>,
    /// How many times to run the task again after a failure or a lost agent.
    /// Default: 0. At most 10.
    #[schemars(range(max = 10))]
    pub retry: Option<Sp<u32>>,
    /// When `true`, a failure of this task does not fail the run, and tasks
    /// that need it still run. Default: `false`.
    pub allow_failure: Option<bool>,
    /// CPU and memory limits of the task's container.
    pub resources: Option<ResourcesFile>,
    /// Files to keep after the task, downloadable from the run's page and API.
    pub artifacts: Option<ArtifactsFile>,
    /// Test reports to parse and show with the run.
    pub reports: Option<ReportsFile>,
}

/// Build the task's image from a Dockerfile.
#[derive(Debug, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[schemars(rename = "Build")]
pub(crate) struct BuildFile {
    /// Path of the Dockerfile, relative to the repository root.
    #[schemars(extend("default" = "Dockerfile"))]
    pub dockerfile: Option<Sp<String>>,
    /// Build context directory, relative to the repository root.
    #[schemars(extend("default" = "."))]
    pub context: Option<Sp<String>>,
}

/// A sidecar container.
#[derive(Debug, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[schemars(rename = "Service")]
pub(crate) struct ServiceFile {
    /// Image of the service, e.g. `postgres:16`.
    #[schemars(required)]
    pub image: Option<Sp<String>>,
    /// Environment variables of the service container.
    #[serde(default)]
    #[schemars(schema_with = "env_schema")]
    pub env: Option<OrderedMap<Scalar>>,
    /// Command and arguments, replacing the image's default command, e.g.
    /// `[redis-server, --appendonly, "yes"]`.
    pub command: Option<Vec<Sp<String>>>,
}

/// A step: a shell script, with an optional name.
#[derive(Debug)]
pub(crate) struct StepFile {
    pub name: Option<Sp<String>>,
    /// Required, but checked after deserializing rather than by serde, so
    /// that a step without `run` does not hide the file's other errors, and
    /// so that a misspelt `run` is not also reported as missing.
    pub run: Option<Sp<String>>,
    /// Where the step is (for an alias, where it is used): errors about the
    /// whole step point here.
    pub at: Location,
}

/// The mapping form of a step.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct StepMap {
    name: Option<Sp<String>>,
    // Absent is `None`; empty (`run:`) is still an error here.
    #[serde(default, deserialize_with = "present")]
    run: Option<Sp<String>>,
}

/// Deserializes an optional field that, when written, may not be empty.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

/// Conditions for running a task. When both are given, both must match.
#[derive(Debug, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[schemars(rename = "When")]
pub(crate) struct WhenFile {
    /// Branch globs, e.g. `[main, "release/*"]`: `*` matches within one path
    /// segment, `**` across segments, `?` one character. A single string is
    /// one glob. Default: any branch.
    #[serde(default)]
    #[schemars(with = "StringOrList")]
    pub branch: Option<StrList>,
    /// Events that started the run: `push`, `pull_request`, `tag`, `cron`,
    /// `manual` or `api`. A single string is one event. Default: any event.
    // Kept as strings so that an unknown event is reported where it is
    // written, with a suggestion.
    #[serde(default)]
    #[schemars(schema_with = "events_schema")]
    pub event: Option<StrList>,
    /// Path globs, e.g. `["src/**", "!src/**/*.md"]`: the task runs only when
    /// the push or pull request changed a file that the list selects. The
    /// globs are matched in order and the last one that matches a file
    /// decides, a `!` one leaving the file out. Runs with no known change
    /// set (api, manual, cron, a new branch or tag) run the task. A single
    /// string is one glob. Default: any change.
    #[serde(default)]
    #[schemars(with = "StringOrList")]
    pub paths: Option<StrList>,
}

/// Limits of the task's container.
#[derive(Debug, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[schemars(rename = "Resources")]
pub(crate) struct ResourcesFile {
    /// Number of CPUs, may be fractional, e.g. `2` or `0.5`.
    #[schemars(extend("exclusiveMinimum" = 0))]
    pub cpus: Option<Sp<f64>>,
    /// Memory limit: bytes, or a number with a unit `k`, `m`, `g` or `t`
    /// (powers of 1024), e.g. `512m`, `2g`, `1.5g`.
    pub memory: Option<Sp<Memory>>,
}

/// Files kept after the task.
#[derive(Debug, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[schemars(rename = "Artifacts")]
pub(crate) struct ArtifactsFile {
    /// Glob patterns relative to the workspace, e.g. `target/release/app` or
    /// `dist/**`. Absolute paths and `..` are not allowed.
    #[serde(default)]
    #[schemars(with = "Vec<RelativePath>")]
    pub paths: Option<Vec<Sp<String>>>,
    /// How long to keep the files, e.g. `30d`. Default: the server's setting.
    pub expire_in: Option<Sp<Duration>>,
}

/// Test reports.
#[derive(Debug, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[schemars(rename = "Reports")]
pub(crate) struct ReportsFile {
    /// Glob patterns of JUnit XML files relative to the workspace, e.g.
    /// `["target/junit/*.xml"]`.
    #[serde(default)]
    #[schemars(with = "Vec<RelativePath>")]
    pub junit: Option<Vec<Sp<String>>>,
}

/// A value together with where it is written in the file.
///
/// A local newtype so that it can describe itself in the JSON schema as the
/// value it wraps (the foreign `Spanned` cannot implement `JsonSchema` here).
#[derive(Debug, Clone)]
pub(crate) struct Sp<T>(pub Spanned<T>);

impl<T> Sp<T> {
    pub fn value(&self) -> &T {
        &self.0.value
    }

    /// Where the value is used: for an alias, the `*alias`; for a merged value,
    /// the `<<` entry.
    pub fn at(&self) -> Location {
        self.0.referenced
    }

    /// Where the value's text is written (the anchor, for an alias).
    pub fn defined(&self) -> Location {
        self.0.defined
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Sp<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Spanned::deserialize(deserializer).map(Sp)
    }
}

impl<T: JsonSchema> JsonSchema for Sp<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }

    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }

    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}

/// A YAML mapping that keeps the file's order; duplicate keys are rejected by
/// the parser options before they get here.
#[derive(Debug)]
pub(crate) struct OrderedMap<V>(pub Vec<(Sp<String>, V)>);

impl<V> OrderedMap<V> {
    pub fn iter(&self) -> impl Iterator<Item = (&Sp<String>, &V)> {
        self.0.iter().map(|(key, value)| (key, value))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = OrderedMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(OrderedMap(entries))
            }
        }
        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
}

impl<V: JsonSchema> JsonSchema for OrderedMap<V> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        format!("Map_of_{}", V::schema_name()).into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "object",
            "additionalProperties": generator.subschema_for::<V>(),
        })
    }
}

/// A string, number or boolean, kept as the text written in the file
/// (`1.10` stays `1.10`).
#[derive(Debug, Clone)]
pub(crate) struct Scalar(pub Sp<String>);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // serde-saphyr hands a plain number or boolean to a string target as
        // written, so no number formatting can change the value.
        Sp::deserialize(deserializer).map(Scalar)
    }
}

impl JsonSchema for Scalar {
    fn schema_name() -> Cow<'static, str> {
        "Scalar".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A string, number or boolean; used as the text written.",
            "type": ["string", "number", "boolean"],
        })
    }
}

/// A list of strings that may also be written as a single string.
#[derive(Debug)]
pub(crate) struct StrList(pub Vec<Sp<String>>);

impl<'de> Deserialize<'de> for StrList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        enum OneOrMany {
            One(String),
            Many(Vec<Sp<String>>),
        }
        impl<'de> Deserialize<'de> for OneOrMany {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct OneOrManyVisitor;
                impl<'de> Visitor<'de> for OneOrManyVisitor {
                    type Value = OneOrMany;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str("a string or a list of strings")
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                        Ok(OneOrMany::One(v.to_owned()))
                    }
                    fn visit_seq<A: SeqAccess<'de>>(
                        self,
                        mut seq: A,
                    ) -> Result<OneOrMany, A::Error> {
                        let mut items = Vec::new();
                        while let Some(item) = seq.next_element()? {
                            items.push(item);
                        }
                        Ok(OneOrMany::Many(items))
                    }
                }
                deserializer.deserialize_any(OneOrManyVisitor)
            }
        }
        // The outer span gives the single-string form its location.
        let spanned: Spanned<OneOrMany> = Spanned::deserialize(deserializer)?;
        Ok(StrList(match spanned.value {
            OneOrMany::One(text) => {
                vec![Sp(Spanned::new(text, spanned.referenced, spanned.defined))]
            }
            OneOrMany::Many(items) => items,
        }))
    }
}

impl<'de> Deserialize<'de> for StepFile {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        enum Form {
            Script(String),
            Map(StepMap),
        }
        impl<'de> Deserialize<'de> for Form {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct FormVisitor;
                impl<'de> Visitor<'de> for FormVisitor {
                    type Value = Form;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str("a step: a shell script string, or a mapping with `run` and optional `name`")
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<Form, E> {
                        Ok(Form::Script(v.to_owned()))
                    }
                    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Form, A::Error> {
                        StepMap::deserialize(de::value::MapAccessDeserializer::new(map))
                            .map(Form::Map)
                    }
                }
                deserializer.deserialize_any(FormVisitor)
            }
        }
        let spanned: Spanned<Form> = Spanned::deserialize(deserializer)?;
        let at = spanned.referenced;
        Ok(match spanned.value {
            Form::Script(run) => StepFile {
                name: None,
                run: Some(Sp(Spanned::new(run, spanned.referenced, spanned.defined))),
                at,
            },
            Form::Map(StepMap { name, run }) => StepFile { name, run, at },
        })
    }
}

impl JsonSchema for StepFile {
    fn schema_name() -> Cow<'static, str> {
        "Step".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A step: a shell script, or `{ name, run }`. Steps run with `sh -e` in the workspace; the first that exits non-zero fails the task.",
            "anyOf": [
                {
                    "type": "string",
                    "description": "The script; the step is named after its first line.",
                    "minLength": 1,
                },
                {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["run"],
                    "properties": {
                        "name": {
                            "type": "string",
                            "description": "Name shown in logs and the UI. Default: the first line of `run`.",
                        },
                        "run": {
                            "type": "string",
                            "description": "The shell script. `${{ matrix.NAME }}` is replaced by the matrix value.",
                            "minLength": 1,
                        },
                    },
                },
            ],
        })
    }
}

/// A memory size in bytes, written as an integer or as `512m`, `1.5g`…
#[derive(Debug, Clone, Copy)]
pub(crate) struct Memory(pub u64);

impl<'de> Deserialize<'de> for Memory {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MemoryVisitor;
        impl Visitor<'_> for MemoryVisitor {
            type Value = Memory;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a memory size like `512m`, `2g` or a number of bytes")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Memory, E> {
                parse_memory(&v.to_string()).map(Memory).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Memory, E> {
                parse_memory(&v.to_string()).map(Memory).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Memory, E> {
                Err(E::custom(format!(
                    "expected a memory size like `512m`, `2g` or a whole number of bytes, found `{v}`"
                )))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Memory, E> {
                parse_memory(v).map(Memory).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(MemoryVisitor)
    }
}

impl JsonSchema for Memory {
    fn schema_name() -> Cow<'static, str> {
        "Memory".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A memory size: bytes, or a number with a unit k, m, g or t (powers of 1024), e.g. `512m`, `2g`, `1.5g`.",
            "anyOf": [
                { "type": "integer", "minimum": 1 },
                { "type": "string", "pattern": "^\\s*[0-9]+(\\.[0-9]+)?\\s*([kKmMgGtT]([iI]?[bB])?|[bB])?\\s*$" },
            ],
        })
    }
}

/// Parses a memory size: a decimal number with an optional binary unit.
/// Exact (no floating point), so `1.5g` is exactly 1 610 612 736 bytes.
pub(crate) fn parse_memory(text: &str) -> Result<u64, String> {
    let expected = || {
        format!(
            "expected a memory size like `512m`, `2g`, `1.5g` or a number of bytes, found `{text}`"
        )
    };
    let trimmed = text.trim();
    let number_len = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(number_len);
    let multiplier: u128 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "ki" | "kib" => 1 << 10,
        "m" | "mb" | "mi" | "mib" => 1 << 20,
        "g" | "gb" | "gi" | "gib" => 1 << 30,
        "t" | "tb" | "ti" | "tib" => 1 << 40,
        _ => return Err(expected()),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty()
        || whole.len() > 20
        || fraction.len() > 9
        || number.ends_with('.')
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(expected());
    }
    let whole: u128 = whole.parse().map_err(|_| expected())?;
    let fraction_value: u128 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().map_err(|_| expected())?
    };
    let scale = 10u128.pow(fraction.len() as u32);
    let too_large = || format!("memory size `{text}` is too large");
    let bytes = whole
        .checked_mul(scale)
        .and_then(|scaled| scaled.checked_add(fraction_value))
        .and_then(|scaled| scaled.checked_mul(multiplier))
        .ok_or_else(too_large)?
        / scale;
    if bytes == 0 {
        return Err(format!("memory size `{text}` must be greater than zero"));
    }
    u64::try_from(bytes).map_err(|_| too_large())
}

/// Schema-only stand-ins: shapes reused by several fields.
struct StringOrList;

impl JsonSchema for StringOrList {
    fn schema_name() -> Cow<'static, str> {
        "StringOrList".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [
                { "type": "string", "minLength": 1 },
                { "type": "array", "items": { "type": "string", "minLength": 1 } },
            ],
        })
    }
}

struct EnvName;

impl JsonSchema for EnvName {
    fn schema_name() -> Cow<'static, str> {
        "EnvName".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A name usable as an environment variable: letters, digits and `_`, not starting with a digit.",
            "type": "string",
            "pattern": ENV_NAME_PATTERN,
        })
    }
}

struct RelativePath;

impl JsonSchema for RelativePath {
    fn schema_name() -> Cow<'static, str> {
        "RelativePath".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A path or glob relative to the workspace; absolute paths and `..` are rejected. `${{ matrix.NAME }}` is replaced by the matrix value.",
            "type": "string",
            "minLength": 1,
        })
    }
}

fn version_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "Version of the file format. Must be `1`.",
        "const": 1,
    })
}

fn events_schema(generator: &mut SchemaGenerator) -> Schema {
    let event = generator.subschema_for::<Event>();
    json_schema!({
        "anyOf": [event, { "type": "array", "items": event }],
    })
}

fn env_schema(generator: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "propertyNames": { "pattern": ENV_NAME_PATTERN },
        "additionalProperties": generator.subschema_for::<Scalar>(),
    })
}

fn tasks_schema(generator: &mut SchemaGenerator) -> Schema {
    let task = generator.subschema_for::<TaskFile>();
    json_schema!({
        "type": "object",
        "minProperties": 1,
        "propertyNames": { "pattern": TASK_NAME_PATTERN, "maxLength": 65 },
        "patternProperties": { "^\\.": task },
        "additionalProperties": { "allOf": [task, { "required": ["steps"] }] },
    })
}

fn matrix_schema(generator: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "minProperties": 1,
        "propertyNames": { "pattern": "^[A-Za-z_][A-Za-z0-9_-]*$" },
        "additionalProperties": {
            "type": "array",
            "minItems": 1,
            "items": generator.subschema_for::<Scalar>(),
        },
    })
}

fn services_schema(generator: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "propertyNames": { "pattern": SERVICE_ALIAS_PATTERN },
        "additionalProperties": generator.subschema_for::<ServiceFile>(),
    })
}

#[cfg(test)]
mod tests {
    use super::parse_memory;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("512m"), Ok(512 << 20));
        assert_eq!(parse_memory("2g"), Ok(2 << 30));
        assert_eq!(parse_memory("1.5g"), Ok(1_610_612_736));
        assert_eq!(parse_memory("1024k"), Ok(1 << 20));
        assert_eq!(parse_memory("1048576"), Ok(1 << 20));
        assert_eq!(parse_memory("2GiB"), Ok(2 << 30));
        for bad in [
            "",
            "g",
            "1.5.g",
            "1.g",
            ".5g",
            "-1g",
            "0",
            "0m",
            "12x",
            "99999999999999999999999t",
            "99999999999999999999.999999999t",
        ] {
            assert!(parse_memory(bad).is_err(), "{bad} should be rejected");
        }
    }
}
