//! Checked values of requests: each type refuses, when it is deserialized,
//! what its schema refuses, and its schema is built from the same pattern and
//! bounds. The API's description and its checks cannot drift apart: the
//! tests hold every pattern against its check.
//!
//! Patterns use only what ECMA-262, Python's `re` and Rust's `regex` read
//! alike: no look-around, no `\s`/`\w`, characters named by code.

use std::borrow::Cow;
use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::{RefOr, SchemaFormat};
use utoipa::{PartialSchema, ToSchema};

/// A string schema with this pattern and description.
fn string_schema(pattern: &str, description: &str, example: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .pattern(Some(pattern))
        .description(Some(description))
        .examples([example])
}

/// A string that passed `check`, with a schema from `schema`.
macro_rules! checked_string {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The value, if it is valid; else why not, for a person.
            pub fn new(value: impl Into<String>) -> Result<$name, String> {
                let value = value.into();
                $name::check(&value)?;
                Ok($name(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_inner(self) -> String {
                self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(value: &str) -> Result<$name, String> {
                $name::new(value)
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;

            fn try_from(value: String) -> Result<$name, String> {
                $name::new(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<$name, D::Error> {
                $name::new(String::deserialize(deserializer)?).map_err(D::Error::custom)
            }
        }

        impl ToSchema for $name {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }
        }
    };
}

/// `^…$` of a name: a letter or digit, then letters, digits, `-`, `_`, `.`.
const PLAIN_NAME_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$";

fn check_plain_name(what: &str, name: &str) -> Result<(), String> {
    let valid = name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid {what} name: use letters, digits, `-`, `_` and `.`, starting with a letter or digit, at most 64 characters"
        ))
    }
}

checked_string! {
    /// A job's name: it appears in URLs and in `KILN_JOB`, so it is kept
    /// plain.
    JobName
}

impl JobName {
    pub const PATTERN: &str = PLAIN_NAME_PATTERN;

    fn check(name: &str) -> Result<(), String> {
        check_plain_name("job", name)
    }
}

impl PartialSchema for JobName {
    fn schema() -> RefOr<Schema> {
        string_schema(
            JobName::PATTERN,
            "Letters, digits, `-`, `_` and `.`, starting with a letter or digit; at most 64 characters.",
            "app",
        )
        .into()
    }
}

checked_string! {
    /// A token's name, to recognise it by (e.g. the agent's host).
    TokenName
}

impl TokenName {
    pub const PATTERN: &str = PLAIN_NAME_PATTERN;

    fn check(name: &str) -> Result<(), String> {
        check_plain_name("token", name)
    }
}

impl PartialSchema for TokenName {
    fn schema() -> RefOr<Schema> {
        string_schema(
            TokenName::PATTERN,
            "A name to recognise the token by: letters, digits, `-`, `_` and `.`, starting with a letter or digit; at most 64 characters.",
            "build-host-1",
        )
        .into()
    }
}

checked_string! {
    /// A user's name: it appears in URLs and in the audit log.
    UserName
}

impl UserName {
    pub const PATTERN: &str = PLAIN_NAME_PATTERN;

    fn check(name: &str) -> Result<(), String> {
        check_plain_name("user", name)
    }
}

impl PartialSchema for UserName {
    fn schema() -> RefOr<Schema> {
        string_schema(
            UserName::PATTERN,
            "Letters, digits, `-`, `_` and `.`, starting with a letter or digit; at most 64 characters.",
            "ada",
        )
        .into()
    }
}

checked_string! {
    /// A password: [`Password::MIN_CHARS`] to [`Password::MAX_CHARS`]
    /// characters (the bound keeps hashing cheap to refuse).
    Password
}

impl Password {
    pub const MIN_CHARS: usize = 8;
    pub const MAX_CHARS: usize = 1024;

    fn check(value: &str) -> Result<(), String> {
        let chars = value.chars().count();
        if (Password::MIN_CHARS..=Password::MAX_CHARS).contains(&chars) {
            Ok(())
        } else {
            Err(format!(
                "a password must be {} to {} characters",
                Password::MIN_CHARS,
                Password::MAX_CHARS
            ))
        }
    }
}

impl PartialSchema for Password {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .min_length(Some(Password::MIN_CHARS))
            .max_length(Some(Password::MAX_CHARS))
            .description(Some("A password; it can never be read back."))
            .into()
    }
}

checked_string! {
    /// How long a token works: a count and a unit, `s`, `m`, `h` or `d`
    /// (`90m`, `30d`); never zero.
    ExpiresIn
}

impl ExpiresIn {
    pub const PATTERN: &str = "^[1-9][0-9]{0,5}[smhd]$";

    fn check(value: &str) -> Result<(), String> {
        ExpiresIn::seconds_of(value).map(|_| ()).ok_or_else(|| {
            format!("`{value}` is not a lifetime: give a count from 1 to 999999 and a unit, `s`, `m`, `h` or `d` (e.g. `30d`)")
        })
    }

    fn seconds_of(value: &str) -> Option<i64> {
        let (count, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
        let valid = (1..=6).contains(&count.len())
            && !count.starts_with('0')
            && count.chars().all(|c| c.is_ascii_digit());
        let count: i64 = valid.then(|| count.parse().ok()).flatten()?;
        let unit = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return None,
        };
        Some(count * unit)
    }

    /// The lifetime in seconds.
    pub fn seconds(&self) -> i64 {
        ExpiresIn::seconds_of(&self.0).unwrap_or_default()
    }
}

impl PartialSchema for ExpiresIn {
    fn schema() -> RefOr<Schema> {
        string_schema(
            ExpiresIn::PATTERN,
            "How long the token works: a count and a unit, `s`, `m`, `h` or `d`.",
            "30d",
        )
        .into()
    }
}

checked_string! {
    /// How often a git job's repository is polled: a count and a unit, at
    /// least ten seconds.
    PollInterval
}

impl PollInterval {
    pub const PATTERN: &str = "^[1-9][0-9]{0,5}[smh]$";

    fn check(value: &str) -> Result<(), String> {
        match PollInterval::seconds_of(value) {
            Some(seconds) if seconds >= 10 => Ok(()),
            Some(_) => Err(format!(
                "`{value}` is too often to poll a repository: give at least `10s`"
            )),
            None => Err(format!(
                "`{value}` is not an interval: give a count from 1 to 999999 and a unit, `s`, `m` or `h` (e.g. `60s`)"
            )),
        }
    }

    fn seconds_of(value: &str) -> Option<i64> {
        (!value.ends_with('d'))
            .then(|| ExpiresIn::seconds_of(value))
            .flatten()
    }

    /// The interval in seconds.
    pub fn seconds(&self) -> i64 {
        PollInterval::seconds_of(&self.0).unwrap_or_default()
    }

    /// How a stored interval is shown: `90s`, `5m`, `2h`.
    pub fn show(seconds: i64) -> String {
        match seconds {
            s if s % 3600 == 0 => format!("{}h", s / 3600),
            s if s % 60 == 0 => format!("{}m", s / 60),
            s => format!("{s}s"),
        }
    }
}

impl PartialSchema for PollInterval {
    fn schema() -> RefOr<Schema> {
        string_schema(
            PollInterval::PATTERN,
            "How often to poll the repository: a count and a unit, `s`, `m` or `h`; at least `10s`.",
            "60s",
        )
        .into()
    }
}

checked_string! {
    /// A secret's name: it becomes an environment variable's name.
    SecretName
}

impl SecretName {
    pub const PATTERN: &str = "^[A-Za-z_][A-Za-z0-9_]{0,127}$";

    fn check(name: &str) -> Result<(), String> {
        let valid = name.len() <= 128
            && name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if valid {
            Ok(())
        } else {
            Err(format!(
                "`{name}` is not a valid secret name: letters, digits and `_`, not starting with a digit, at most 128 characters"
            ))
        }
    }
}

impl PartialSchema for SecretName {
    fn schema() -> RefOr<Schema> {
        string_schema(
            SecretName::PATTERN,
            "An environment variable's name: letters, digits and `_`, not starting with a digit; at most 128 characters.",
            "DEPLOY_KEY",
        )
        .into()
    }
}

checked_string! {
    /// A secret's value: [`SecretValue::MIN_CHARS`] to
    /// [`SecretValue::MAX_CHARS`] characters (Unicode scalar values, as JSON
    /// Schema counts them).
    SecretValue
}

impl SecretValue {
    /// Task output is masked wherever a value appears: a shorter one would
    /// mask every occurrence of a few common characters, and be guessed.
    pub const MIN_CHARS: usize = 4;
    pub const MAX_CHARS: usize = 64 * 1024;

    fn check(value: &str) -> Result<(), String> {
        // Bytes bound characters from above: count only when it matters.
        let too_short = value.len() < SecretValue::MIN_CHARS
            || (value.len() < 4 * SecretValue::MIN_CHARS
                && value.chars().count() < SecretValue::MIN_CHARS);
        let too_long =
            value.len() > SecretValue::MAX_CHARS && value.chars().count() > SecretValue::MAX_CHARS;
        if too_short || too_long {
            Err(format!(
                "a secret's value must be {} to {} characters{}",
                SecretValue::MIN_CHARS,
                SecretValue::MAX_CHARS,
                if too_short {
                    ": task output is masked wherever the value appears, and a shorter one would hide common text"
                } else {
                    ""
                }
            ))
        } else {
            Ok(())
        }
    }
}

impl PartialSchema for SecretValue {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .min_length(Some(SecretValue::MIN_CHARS))
            .max_length(Some(SecretValue::MAX_CHARS))
            .description(Some("The value; it can never be read back."))
            .into()
    }
}

checked_string! {
    /// A branch to build: what git would take as a branch, and never an
    /// option (`-…`).
    BranchName
}

impl BranchName {
    /// Not starting with `-`; no NUL, LF, CR, space, `~`, `^` or `:`.
    pub const PATTERN: &str = r"^[^\x00\x0A\x0D\x20\x2D~\^:][^\x00\x0A\x0D\x20~\^:]*$";

    fn check(branch: &str) -> Result<(), String> {
        const REFUSED: [char; 7] = ['\0', '\n', '\r', ' ', '~', '^', ':'];
        let valid = branch.chars().next().is_some_and(|c| c != '-') && !branch.contains(REFUSED);
        if valid {
            Ok(())
        } else {
            Err(format!(
                "`{branch}` is not a branch name: it may not be empty, start with `-`, or hold spaces, line breaks, `~`, `^` or `:`"
            ))
        }
    }
}

impl PartialSchema for BranchName {
    fn schema() -> RefOr<Schema> {
        string_schema(
            BranchName::PATTERN,
            "A branch: not empty, not starting with `-`, without spaces, line breaks, `~`, `^` or `:`.",
            "main",
        )
        .into()
    }
}

checked_string! {
    /// A commit: its full sha or an abbreviation of it.
    CommitSha
}

impl CommitSha {
    pub const PATTERN: &str = "^[0-9A-Fa-f]{1,64}$";

    fn check(sha: &str) -> Result<(), String> {
        if (1..=64).contains(&sha.len()) && sha.chars().all(|c| c.is_ascii_hexdigit()) {
            Ok(())
        } else {
            Err(format!("`{sha}` is not a commit sha"))
        }
    }
}

impl PartialSchema for CommitSha {
    fn schema() -> RefOr<Schema> {
        string_schema(
            CommitSha::PATTERN,
            "A commit's sha, full or abbreviated.",
            "3f2a9c1",
        )
        .into()
    }
}

checked_string! {
    /// Where a git job's repository is: a URL (`file://`, `http(s)://`,
    /// `git://`) or a path. Never an option (`-…`), nothing but one line.
    RepositoryUrl
}

impl RepositoryUrl {
    /// The first character neither a control character, a space nor `-`;
    /// no NUL, LF or CR after it.
    pub const PATTERN: &str = r"^[^\x00-\x20\x2D][^\x00\x0A\x0D]*$";

    fn check(url: &str) -> Result<(), String> {
        let valid = url.chars().next().is_some_and(|c| c > ' ' && c != '-')
            && !url.contains(['\0', '\n', '\r']);
        if valid {
            Ok(())
        } else {
            Err(format!("`{url}` is not a repository URL"))
        }
    }
}

impl PartialSchema for RepositoryUrl {
    fn schema() -> RefOr<Schema> {
        string_schema(
            RepositoryUrl::PATTERN,
            "A URL (`file://`, `http(s)://`, `git://`) or a path; not starting with `-` or a space, one line.",
            "https://git.example.com/team/app.git",
        )
        .into()
    }
}

checked_string! {
    /// Where the pipeline file is in a repository: a relative path that
    /// does not leave it.
    PipelinePath
}

/// One component of a [`PipelinePath`]: anything without `/` but `..`.
macro_rules! component {
    () => {
        r"(?:[^/.][^/]*|\.[^/.][^/]*|\.\.[^/]+|\.)"
    };
}

impl PipelinePath {
    /// Not empty, not starting with `/`, no component `..`.
    pub const PATTERN: &str = concat!("^", component!(), "(?:/", component!(), "?)*$");

    fn check(path: &str) -> Result<(), String> {
        if !path.is_empty() && !path.starts_with('/') && path.split('/').all(|c| c != "..") {
            Ok(())
        } else {
            Err("`pipeline_path` must be a relative path inside the repository".into())
        }
    }
}

impl PartialSchema for PipelinePath {
    fn schema() -> RefOr<Schema> {
        string_schema(
            PipelinePath::PATTERN,
            "A relative path inside the repository: not starting with `/`, no `..`.",
            ".kiln.yml",
        )
        .into()
    }
}

/// `cursor` of a run listing: `next_cursor` of the previous page; empty for
/// the first page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor(pub Option<i64>);

impl Cursor {
    /// At most 18 digits: always an `i64`.
    pub const PATTERN: &str = "^[0-9]{0,18}$";
}

impl std::str::FromStr for Cursor {
    type Err = String;

    fn from_str(text: &str) -> Result<Cursor, String> {
        if text.is_empty() {
            return Ok(Cursor(None));
        }
        if text.len() <= 18 && text.chars().all(|c| c.is_ascii_digit()) {
            // 18 digits always fit.
            return Ok(Cursor(text.parse().ok()));
        }
        Err(format!("`{text}` is not a cursor from this API"))
    }
}

impl<'de> Deserialize<'de> for Cursor {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Cursor, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(D::Error::custom)
    }
}

impl PartialSchema for Cursor {
    fn schema() -> RefOr<Schema> {
        string_schema(
            Cursor::PATTERN,
            "`next_cursor` of the previous page; empty or absent for the first page.",
            "42",
        )
        .into()
    }
}

impl ToSchema for Cursor {}

/// `limit` of a listing: how many per page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSize(i64);

impl PageSize {
    pub const DEFAULT: PageSize = PageSize(50);
    pub const MAX: i64 = 500;

    pub fn new(size: i64) -> Result<PageSize, String> {
        if (1..=PageSize::MAX).contains(&size) {
            Ok(PageSize(size))
        } else {
            Err(format!("`limit` must be between 1 and {}", PageSize::MAX))
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl Default for PageSize {
    fn default() -> PageSize {
        PageSize::DEFAULT
    }
}

impl<'de> Deserialize<'de> for PageSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<PageSize, D::Error> {
        PageSize::new(i64::deserialize(deserializer)?).map_err(D::Error::custom)
    }
}

impl PartialSchema for PageSize {
    fn schema() -> RefOr<Schema> {
        positive_integer()
            .maximum(Some(PageSize::MAX))
            .default(Some(PageSize::DEFAULT.0.into()))
            .description(Some("Page size: 50 by default, at most 500."))
            .into()
    }
}

impl ToSchema for PageSize {}

/// The schema of an `int64` of at least 1, for the types that add to it.
fn positive_integer() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::Integer))
        .format(Some(SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::Int64,
        )))
        .minimum(Some(1))
}

/// `status` of a run listing: one of [`crate::STATUSES`], or empty for any.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusFilter(pub Option<&'static str>);

impl std::str::FromStr for StatusFilter {
    type Err = String;

    fn from_str(text: &str) -> Result<StatusFilter, String> {
        if text.is_empty() {
            return Ok(StatusFilter(None));
        }
        crate::STATUSES
            .iter()
            .find(|s| **s == text)
            .map(|s| StatusFilter(Some(s)))
            .ok_or_else(|| {
                format!(
                    "unknown status `{text}`: expected one of {}",
                    crate::STATUSES.join(", ")
                )
            })
    }
}

impl<'de> Deserialize<'de> for StatusFilter {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<StatusFilter, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(D::Error::custom)
    }
}

impl PartialSchema for StatusFilter {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .enum_values(Some(std::iter::once("").chain(crate::STATUSES)))
            .description(Some("Only runs with this status; empty for any."))
            .into()
    }
}

impl ToSchema for StatusFilter {}

/// `attempt` of a task's results: which attempt, from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptNumber(i64);

impl AttemptNumber {
    pub fn new(number: i64) -> Result<AttemptNumber, String> {
        if number >= 1 {
            Ok(AttemptNumber(number))
        } else {
            Err("`attempt` counts from 1".into())
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for AttemptNumber {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<AttemptNumber, D::Error> {
        AttemptNumber::new(i64::deserialize(deserializer)?).map_err(D::Error::custom)
    }
}

impl PartialSchema for AttemptNumber {
    fn schema() -> RefOr<Schema> {
        positive_integer()
            .description(Some(
                "Which attempt of the task, from 1; the task's latest when left out.",
            ))
            .into()
    }
}

impl ToSchema for AttemptNumber {}

checked_string! {
    /// A forge's name: it appears in the webhook's URL (`/hooks/{forge}`)
    /// and in jobs' `forge`.
    ForgeName
}

impl ForgeName {
    pub const PATTERN: &str = PLAIN_NAME_PATTERN;

    fn check(name: &str) -> Result<(), String> {
        check_plain_name("forge", name)
    }
}

impl PartialSchema for ForgeName {
    fn schema() -> RefOr<Schema> {
        string_schema(
            ForgeName::PATTERN,
            "Letters, digits, `-`, `_` and `.`, starting with a letter or digit; at most 64 characters.",
            "github",
        )
        .into()
    }
}

checked_string! {
    /// A forge's API: an `http(s)://` URL (GitHub Enterprise, a
    /// self-hosted GitLab or Gitea, or a stand-in).
    ApiUrl
}

impl ApiUrl {
    pub const PATTERN: &str = r"^[hH][tT][tT][pP][sS]?://[^\x00-\x20]+$";

    fn check(url: &str) -> Result<(), String> {
        let lower = url.to_ascii_lowercase();
        let rest = lower
            .strip_prefix("https://")
            .or_else(|| lower.strip_prefix("http://"));
        match rest {
            Some(rest)
                if !rest.is_empty() && !url.chars().any(|c| c <= ' ') && url.len() <= 2048 =>
            {
                Ok(())
            }
            _ => Err(format!(
                "`{url}` is not an API URL: give the forge's `http://` or `https://` API address, \
                 e.g. https://api.github.com"
            )),
        }
    }
}

impl PartialSchema for ApiUrl {
    fn schema() -> RefOr<Schema> {
        string_schema(
            ApiUrl::PATTERN,
            "The forge's API address, `http://` or `https://`.",
            "https://api.github.com",
        )
        .max_length(Some(2048))
        .into()
    }
}
