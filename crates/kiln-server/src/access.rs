//! Who may do what to a job (DESIGN.md §1, §5): one decision, which every
//! route that names a job takes through [`job`].
//!
//! A caller's power on a job is its member role; admins are maintainers
//! of every job; anyone, signed in or not, reads a public job. A caller
//! who may not read a job is told it does not exist (`404`), so private
//! jobs' names do not leak; one who may read it but not do the rest is
//! told why (`403`), or to sign in (`401`) when anonymous.

use kiln_store::{Database, Job, MemberRole, Visibility};

use crate::auth::Identity;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// `404`: the caller may not know the job exists.
    Hidden,
    /// `401`: an anonymous caller may read, but must sign in for more.
    SignIn,
    /// `403`: the caller reads the job but lacks the role.
    Forbidden,
}

/// What the caller may do on a job: its member role, raised to maintainer
/// for admins and to viewer on a public job; `None` when it may not read it.
pub fn power(
    caller: Option<&Identity>,
    visibility: Visibility,
    role: Option<MemberRole>,
) -> Option<MemberRole> {
    let admin = caller.is_some_and(|identity| identity.admin);
    let role = if admin {
        Some(MemberRole::Maintainer)
    } else {
        role
    };
    match visibility {
        Visibility::Public => role.max(Some(MemberRole::Viewer)),
        Visibility::Private => role,
    }
}

/// Whether the caller (with `role` on the job) may do what needs `need`.
pub fn decide(
    caller: Option<&Identity>,
    visibility: Visibility,
    role: Option<MemberRole>,
    need: MemberRole,
) -> Decision {
    match power(caller, visibility, role) {
        Some(power) if power >= need => Decision::Allowed,
        None => Decision::Hidden,
        Some(_) if caller.is_none() => Decision::SignIn,
        Some(_) => Decision::Forbidden,
    }
}

/// What `need` lets one do, for messages.
fn what(need: MemberRole) -> &'static str {
    match need {
        MemberRole::Viewer => "read it",
        MemberRole::Developer => "trigger, cancel and rerun its runs and see its secrets' names",
        MemberRole::Maintainer => "change it, its secrets and its members",
    }
}

pub fn not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("job `{name}` not found"))
}

/// The job of that name, if `caller` may do what needs `need` on it.
pub async fn job<D: Database>(
    state: &AppState<D>,
    caller: Option<&Identity>,
    name: &str,
    need: MemberRole,
) -> ApiResult<Job> {
    let user = caller.and_then(|identity| identity.user);
    let (job, role) = state
        .db
        .job_and_role(name, user)
        .await?
        .ok_or_else(|| not_found(name))?;
    match decide(caller, job.spec.visibility, role, need) {
        Decision::Allowed => Ok(job),
        Decision::Hidden => Err(not_found(name)),
        Decision::SignIn => Err(ApiError::unauthorized(format!(
            "sign in (or send a token) to {} on job `{name}`",
            what(need)
        ))),
        Decision::Forbidden => Err(ApiError::forbidden(format!(
            "only a {need} of job `{name}` (or an admin) may {}",
            what(need)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Credential;

    fn identity(admin: bool) -> Identity {
        Identity {
            user: Some(kiln_store::UserId(1)),
            name: "u".into(),
            admin,
            via: Credential::Session,
            source: None,
        }
    }

    /// Every caller × visibility × need, against DESIGN.md §1's table.
    #[test]
    fn the_roles_table() {
        use Decision::*;
        use MemberRole::*;
        let user = identity(false);
        let admin = identity(true);
        // (caller, role, visibility) → decisions for viewer, developer, maintainer needs.
        type Case<'a> = (
            Option<&'a Identity>,
            Option<MemberRole>,
            Visibility,
            [Decision; 3],
        );
        let cases: [Case; 12] = [
            (None, None, Visibility::Private, [Hidden, Hidden, Hidden]),
            (None, None, Visibility::Public, [Allowed, SignIn, SignIn]),
            (
                Some(&user),
                None,
                Visibility::Private,
                [Hidden, Hidden, Hidden],
            ),
            (
                Some(&user),
                None,
                Visibility::Public,
                [Allowed, Forbidden, Forbidden],
            ),
            (
                Some(&user),
                Some(Viewer),
                Visibility::Private,
                [Allowed, Forbidden, Forbidden],
            ),
            (
                Some(&user),
                Some(Viewer),
                Visibility::Public,
                [Allowed, Forbidden, Forbidden],
            ),
            (
                Some(&user),
                Some(Developer),
                Visibility::Private,
                [Allowed, Allowed, Forbidden],
            ),
            (
                Some(&user),
                Some(Developer),
                Visibility::Public,
                [Allowed, Allowed, Forbidden],
            ),
            (
                Some(&user),
                Some(Maintainer),
                Visibility::Private,
                [Allowed, Allowed, Allowed],
            ),
            (
                Some(&user),
                Some(Maintainer),
                Visibility::Public,
                [Allowed, Allowed, Allowed],
            ),
            (
                Some(&admin),
                None,
                Visibility::Private,
                [Allowed, Allowed, Allowed],
            ),
            (
                Some(&admin),
                Some(Viewer),
                Visibility::Public,
                [Allowed, Allowed, Allowed],
            ),
        ];
        for (caller, role, visibility, expected) in cases {
            for (need, expected) in [Viewer, Developer, Maintainer].into_iter().zip(expected) {
                assert_eq!(
                    decide(caller, visibility, role, need),
                    expected,
                    "caller {:?}, role {role:?}, {visibility}, needs {need}",
                    caller.map(|c| c.admin)
                );
            }
        }
    }
}
