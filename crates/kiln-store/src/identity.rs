//! Identity and access (DESIGN.md §1, §5): users, their tokens, members
//! of jobs, web sessions, the audit log and failed sign-ins. The store
//! keeps what it is given (password and token hashes, never secrets) and
//! decides nothing about access but one rule: the last enabled admin
//! cannot be removed, demoted or disabled ([`check_last_admin`]), checked
//! in the transaction that makes the change.

use std::fmt;
use std::future::Future;
use std::str::FromStr;

use chrono::{DateTime, TimeDelta, Utc};
use kiln_pipeline::UnknownName;
use serde::{Deserialize, Serialize};

use crate::{AuditId, JobId, Result, StoreError, TokenId, TokenInfo, UserId};

/// A closed set of names, for code that lists or reads any of them (an
/// API schema's `enum`).
pub trait ClosedSet: Sized + Copy + FromStr<Err = UnknownName> + Send + Sync + 'static {
    /// What one of them is, for messages: `role`, `member role`.
    const WHAT: &'static str;
    fn all() -> &'static [Self];
    fn name(self) -> &'static str;
}

/// A closed set of lower-case names: the enum, its one list of them
/// (`ALL`), `as_str`, `FromStr` (with [`UnknownName`]), `Display` and
/// [`ClosedSet`].
macro_rules! names {
    ($(#[$doc:meta])* $name:ident ($what:literal) { $($variant:ident = $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($variant,)*
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;
            fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|value| value.as_str() == text)
                    .ok_or_else(|| UnknownName {
                        what: <$name as ClosedSet>::WHAT,
                        name: text.to_string(),
                    })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ClosedSet for $name {
            const WHAT: &'static str = $what;
            fn all() -> &'static [Self] {
                $name::ALL
            }
            fn name(self) -> &'static str {
                self.as_str()
            }
        }
    };
}

names! {
    /// A user's global role.
    UserRole ("role") {
        Admin = "admin",
        User = "user",
    }
}

names! {
    /// A user's role on one job, weakest first (so `>=` compares powers).
    MemberRole ("member role") {
        Viewer = "viewer",
        Developer = "developer",
        Maintainer = "maintainer",
    }
}

names! {
    /// Who may read a job: its readers only, or anyone.
    Visibility ("visibility") {
        Private = "private",
        Public = "public",
    }
}

/// How long a token's or session's `last_used_at`/`last_seen_at` may lag:
/// `touch_*` writes only when the stored time is older than this, so a
/// client's every request is not also a write (SQLite has one writer;
/// PostgreSQL would rewrite the row and its index entries each time).
/// "Last used" to the minute is what a person listing tokens needs.
/// Callers that looked the token up first call `touch_token` only when
/// [`TokenLookup::needs_touch`] says so, so most requests write nothing;
/// the same condition in the `UPDATE` keeps servers that race from both
/// writing.
pub const TOUCH_INTERVAL: TimeDelta = TimeDelta::minutes(1);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub name: String,
    pub role: UserRole,
    pub disabled: bool,
    /// Whether it can sign in with a password (the hash is never read with it).
    pub has_password: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl User {
    /// An admin that is not disabled: what [`check_last_admin`] counts.
    pub fn is_active_admin(&self) -> bool {
        self.role == UserRole::Admin && !self.disabled
    }
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub name: String,
    pub role: UserRole,
    /// The hash to keep (e.g. argon2id's PHC string); the store never sees a password.
    pub password_hash: Option<String>,
}

/// A change to a user; `None` fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct UserChange {
    pub role: Option<UserRole>,
    pub disabled: Option<bool>,
    /// `Some(None)` removes the password.
    pub password_hash: Option<Option<String>>,
}

impl UserChange {
    /// The role and disabled flag `user` would have after the change.
    pub fn applied_to(&self, user: &User) -> (UserRole, bool) {
        (
            self.role.unwrap_or(user.role),
            self.disabled.unwrap_or(user.disabled),
        )
    }
}

/// `Conflict` when the change leaves no active admin: `user` is one now,
/// would not be after (`after` is its role and disabled flag, `None` when
/// deleted), and `admins` — every active admin, read (on PostgreSQL,
/// locked) in the change's transaction — holds no other.
pub fn check_last_admin(
    user: &User,
    after: Option<(UserRole, bool)>,
    admins: &[UserId],
) -> Result<()> {
    let stays = after == Some((UserRole::Admin, false));
    if user.is_active_admin() && !stays && admins.iter().all(|id| *id == user.id) {
        return Err(StoreError::Conflict(format!(
            "`{}` is the last enabled admin; make another admin first",
            user.name
        )));
    }
    Ok(())
}

/// A user-owned token to store.
#[derive(Debug, Clone)]
pub struct NewUserToken<'a> {
    pub hash: &'a str,
    pub name: &'a str,
    pub user: UserId,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A token as its owner lists it: never its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserToken {
    pub id: TokenId,
    pub name: String,
    /// The owner's name.
    pub user: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A token found by its hash, with what decides whether it may be used.
/// The store refuses nothing; [`TokenLookup::refusal`] says why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenLookup {
    pub token: TokenInfo,
    /// Its owner; `None` for agent tokens and the first-start admin token.
    pub user: Option<User>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Why a token (or session) may not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Revoked,
    Expired,
    UserDisabled,
}

impl TokenLookup {
    /// Whether `last_used_at` is unset or older than [`TOUCH_INTERVAL`] at `now`.
    pub fn needs_touch(&self, now: DateTime<Utc>) -> bool {
        self.last_used_at
            .is_none_or(|at| at <= now - TOUCH_INTERVAL)
    }

    /// Why it may not be used at `now`, if it may not.
    pub fn refusal(&self, now: DateTime<Utc>) -> Option<Refusal> {
        if self.revoked_at.is_some() {
            Some(Refusal::Revoked)
        } else if self.expires_at.is_some_and(|at| at <= now) {
            Some(Refusal::Expired)
        } else if self.user.as_ref().is_some_and(|user| user.disabled) {
            Some(Refusal::UserDisabled)
        } else {
            None
        }
    }
}

/// A user's role on a job, with the user's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub user_id: UserId,
    pub user: String,
    pub role: MemberRole,
    pub updated_at: DateTime<Utc>,
}

/// A signed-in browser's session, found by the hash of its cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: User,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewAuditEntry {
    /// Who: a user's name, or e.g. `admin-token`, `agent:builder-1`.
    pub actor: String,
    /// What, e.g. `job.create`, `user.sign_in_failed`.
    pub action: String,
    /// Which, e.g. `job/web`, `user/alice`.
    pub object: String,
    pub detail: Option<String>,
    /// The client's address.
    pub source: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: AuditId,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub object: String,
    pub detail: Option<String>,
    pub source: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    /// Entries whose object starts with this (`job/web` also matches `job/web/…`).
    pub object_prefix: Option<String>,
    /// Entries older than this one (newest first pagination).
    pub before: Option<AuditId>,
    /// At most this many; see [`crate::page_size`].
    pub limit: i64,
}

impl AuditFilter {
    pub fn page_size(&self) -> i64 {
        crate::page_size(self.limit)
    }
}

/// Users and their passwords' hashes.
pub trait UserStore {
    /// `Conflict` when the name is taken.
    fn create_user(
        &self,
        user: &NewUser,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<User>> + Send;
    fn get_user(&self, name: &str) -> impl Future<Output = Result<Option<User>>> + Send;
    /// The user and its password hash, for signing in.
    fn user_credentials(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<(User, Option<String>)>>> + Send;
    /// By name.
    fn list_users(&self) -> impl Future<Output = Result<Vec<User>>> + Send;
    /// `NotFound` for an unknown user; `Conflict` when it would leave no
    /// active admin ([`check_last_admin`]).
    fn update_user(
        &self,
        name: &str,
        change: &UserChange,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<User>> + Send;
    /// Deletes the user with its tokens, sessions and memberships (jobs it
    /// created keep no creator); false when there was none. `Conflict`
    /// when it is the last active admin.
    fn delete_user(&self, name: &str) -> impl Future<Output = Result<bool>> + Send;
}

/// Members of jobs.
pub trait MemberStore {
    /// Sets (or replaces) `user`'s role on the job; `NotFound` when either is missing.
    fn set_member(
        &self,
        job: JobId,
        user: UserId,
        role: MemberRole,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// By user name.
    fn list_members(&self, job: JobId) -> impl Future<Output = Result<Vec<Member>>> + Send;
    fn remove_member(&self, job: JobId, user: UserId) -> impl Future<Output = Result<bool>> + Send;
    fn role_of(
        &self,
        job: JobId,
        user: UserId,
    ) -> impl Future<Output = Result<Option<MemberRole>>> + Send;
    /// The job of that name and `user`'s role on it, in one query.
    fn job_and_role(
        &self,
        name: &str,
        user: Option<UserId>,
    ) -> impl Future<Output = Result<Option<(crate::Job, Option<MemberRole>)>>> + Send;
    /// Every job `user` is a member of, with the role.
    fn member_roles(
        &self,
        user: UserId,
    ) -> impl Future<Output = Result<Vec<(JobId, MemberRole)>>> + Send;
}

/// Web sign-in sessions, by the hash of their cookie's value.
pub trait SessionStore {
    /// `NotFound` for an unknown user, `Conflict` for a hash in use.
    fn create_session(
        &self,
        hash: &str,
        user: UserId,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// The session if it has not expired at `now`, with its user (whose
    /// `disabled` the caller checks).
    fn find_session(
        &self,
        hash: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<Session>>> + Send;
    /// Sets `last_seen_at` if older than [`TOUCH_INTERVAL`]; whether it wrote.
    fn touch_session(
        &self,
        hash: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool>> + Send;
    fn delete_session(&self, hash: &str) -> impl Future<Output = Result<bool>> + Send;
    /// Signs a user out everywhere; how many sessions ended.
    fn delete_user_sessions(&self, user: UserId) -> impl Future<Output = Result<u64>> + Send;
}

/// The audit log: appended to, never changed.
pub trait AuditStore {
    fn append_audit(
        &self,
        entry: &NewAuditEntry,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<AuditId>> + Send;
    /// Newest first.
    fn list_audit(
        &self,
        filter: &AuditFilter,
    ) -> impl Future<Output = Result<Vec<AuditEntry>>> + Send;
}

/// Failed sign-ins per name (known or not), to slow down guessing.
pub trait SignInStore {
    fn record_failed_sign_in(
        &self,
        name: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Failures for `name` at or after `since`.
    fn failed_sign_ins(
        &self,
        name: &str,
        since: DateTime<Utc>,
    ) -> impl Future<Output = Result<i64>> + Send;
    /// Forgets `name`'s failures (after a success).
    fn clear_failed_sign_ins(&self, name: &str) -> impl Future<Output = Result<()>> + Send;
}
