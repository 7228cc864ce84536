//! Secret values are sealed with the server's key before they reach the
//! database, bound to their job and name so a sealed value moved elsewhere
//! does not open — and a git job's credentials also to the host of its
//! repository, so that a repository moved to another host (by whoever may
//! edit the job) is never sent the credentials set for the first one.

use kiln_crypto::SecretKey;
use kiln_store::{Database, Job, JobKind};

use crate::state::AppState;

/// The job secret with the password or access token for a private HTTP(S)
/// repository. The server uses it to resolve commits and read the pipeline
/// file; agents use it to fetch the commit. Tasks get it only if they name it.
pub const GIT_PASSWORD: &str = "GIT_PASSWORD";
/// The job secret with the user name that goes with [`GIT_PASSWORD`].
pub const GIT_USERNAME: &str = "GIT_USERNAME";
/// The user name when [`GIT_USERNAME`] is not set: hosts that take an access
/// token as the password accept any name.
const DEFAULT_GIT_USERNAME: &str = "git";

/// Where a secret is sealed to: its job and name, and the repository's
/// host for the credentials of a git job (`None` for other secrets).
fn place(job: &Job, name: &str) -> (Vec<u8>, Option<String>) {
    let host = credentials_host(job, name);
    let mut place = format!("kiln-secret/{}/{name}", job.id);
    if let Some(host) = &host {
        place.push('@');
        place.push_str(host);
    }
    (place.into_bytes(), host)
}

/// The host a git job's credential secret is for: its repository's, as
/// git names it (empty for a local path).
fn credentials_host(job: &Job, name: &str) -> Option<String> {
    let is_credential = name == GIT_USERNAME || name == GIT_PASSWORD;
    (job.spec.kind == JobKind::Git && is_credential).then(|| {
        job.spec
            .repository
            .as_deref()
            .and_then(kiln_git::url_host)
            .unwrap_or_default()
            .to_ascii_lowercase()
    })
}

pub fn seal_secret(key: &SecretKey, job: &Job, name: &str, value: &str) -> Vec<u8> {
    kiln_crypto::seal(key, value.as_bytes(), &place(job, name).0)
}

/// Why a secret of a job cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A git credential set while the repository was on another host (or
    /// before credentials were bound to one): the user sets it again.
    #[error(
        "secret `{name}` was not set for this repository's host `{host}`: git credentials \
         are only ever sent to the host they were set for; set it again for this one"
    )]
    OtherHost { name: String, host: String },
    #[error("secret `{0}` cannot be decrypted (was the server's key changed?)")]
    Undecryptable(String),
    #[error("secret `{0}` is not UTF-8")]
    NotText(String),
}

pub fn open_secret(
    key: &SecretKey,
    job: &Job,
    name: &str,
    sealed: &[u8],
) -> Result<String, OpenError> {
    let (place, host) = place(job, name);
    let bytes = kiln_crypto::open(key, sealed, &place).map_err(|_| match host {
        Some(host) => OpenError::OtherHost {
            name: name.to_string(),
            host,
        },
        None => OpenError::Undecryptable(name.to_string()),
    })?;
    String::from_utf8(bytes).map_err(|_| OpenError::NotText(name.to_string()))
}

/// The secret names that may hold a git job's repository credentials.
pub fn git_secret_names() -> [String; 2] {
    [GIT_USERNAME.to_string(), GIT_PASSWORD.to_string()]
}

/// Credentials for a job's repository from its opened `GIT_USERNAME` and
/// `GIT_PASSWORD` secrets (other names in `opened` are ignored); `None`
/// without a password.
pub fn git_credentials_from<'a>(
    opened: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Option<kiln_git::Credentials> {
    let (mut username, mut password) = (None, None);
    for (name, value) in opened {
        match name {
            GIT_USERNAME => username = Some(value),
            GIT_PASSWORD => password = Some(value),
            _ => {}
        }
    }
    password.map(|password| {
        kiln_git::Credentials::new(username.unwrap_or(DEFAULT_GIT_USERNAME), password)
    })
}

/// Why a git job's credentials cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error(transparent)]
    Store(#[from] kiln_store::StoreError),
    #[error(transparent)]
    Open(#[from] OpenError),
}

/// The credentials for a git job's repository, when its secrets hold them.
pub async fn git_credentials<D: Database>(
    state: &AppState<D>,
    job: &Job,
) -> Result<Option<kiln_git::Credentials>, CredentialsError> {
    if job.spec.kind != JobKind::Git {
        return Ok(None);
    }
    let sealed = state.db.sealed_secrets(job.id, &git_secret_names()).await?;
    let mut opened = Vec::new();
    for (name, value) in &sealed {
        opened.push((name.as_str(), open_secret(&state.key, job, name, value)?));
    }
    Ok(git_credentials_from(
        opened.iter().map(|(name, value)| (*name, value.as_str())),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_credentials_need_a_password_and_default_the_user_name() {
        assert_eq!(git_credentials_from([("GIT_USERNAME", "bot")]), None);
        assert_eq!(
            git_credentials_from([("DEPLOY", "x"), ("GIT_PASSWORD", "tok")]),
            Some(kiln_git::Credentials::new("git", "tok"))
        );
        assert_eq!(
            git_credentials_from([("GIT_PASSWORD", "tok"), ("GIT_USERNAME", "bot")]),
            Some(kiln_git::Credentials::new("bot", "tok"))
        );
    }
}
