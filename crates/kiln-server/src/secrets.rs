//! Secret values are sealed with the server's key before they reach the
//! database, bound to their job and name so a sealed value moved elsewhere
//! does not open.

use kiln_crypto::SecretKey;
use kiln_store::{Database, Job, JobId, JobKind};

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

fn place(job_id: JobId, name: &str) -> Vec<u8> {
    format!("kiln-secret/{job_id}/{name}").into_bytes()
}

pub fn seal_secret(key: &SecretKey, job_id: JobId, name: &str, value: &str) -> Vec<u8> {
    kiln_crypto::seal(key, value.as_bytes(), &place(job_id, name))
}

pub fn open_secret(
    key: &SecretKey,
    job_id: JobId,
    name: &str,
    sealed: &[u8],
) -> Result<String, String> {
    let bytes = kiln_crypto::open(key, sealed, &place(job_id, name))
        .map_err(|e| format!("secret `{name}` cannot be decrypted (was the key changed?): {e}"))?;
    String::from_utf8(bytes).map_err(|_| format!("secret `{name}` is not UTF-8"))
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

/// The credentials for a git job's repository, when its secrets hold them.
pub async fn git_credentials<D: Database>(
    state: &AppState<D>,
    job: &Job,
) -> Result<Option<kiln_git::Credentials>, String> {
    if job.spec.kind != JobKind::Git {
        return Ok(None);
    }
    let sealed = state
        .db
        .sealed_secrets(job.id, &git_secret_names())
        .await
        .map_err(|e| e.to_string())?;
    let mut opened = Vec::new();
    for (name, value) in &sealed {
        opened.push((name.as_str(), open_secret(&state.key, job.id, name, value)?));
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
