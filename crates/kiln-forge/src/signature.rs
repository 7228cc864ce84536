//! Is a webhook delivery from the forge? Each forge proves it differently:
//!
//! - GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`
//!   keyed with the webhook secret.
//! - Gitea and Forgejo: `X-Gitea-Signature` / `X-Forgejo-Signature`, the
//!   same HMAC as bare hex. (They also send GitHub's headers, which is why
//!   the forge's kind comes from the hook's URL, never from the headers.)
//! - GitLab: `X-Gitlab-Token`, the secret itself.
//!
//! Comparisons take the same time whatever the bytes, and a forge with no
//! secret refuses every delivery: an unsigned hook would let anyone start
//! runs.

use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::ForgeKind;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error(
        "this forge has no webhook secret, so no delivery can be trusted: \
         set one (`kiln forge set … --webhook-secret-file F`) and the same in the forge's hook"
    )]
    NoSecret,
    #[error("the delivery has no `{0}` header: set a secret in the forge's webhook")]
    Missing(&'static str),
    #[error("the `{0}` header is not a hex HMAC-SHA256")]
    Malformed(&'static str),
    #[error("the delivery's signature does not match this forge's webhook secret")]
    Mismatch,
}

/// Checks that `body` was sent by a forge of `kind` that knows `secret`.
pub fn verify(
    kind: ForgeKind,
    secret: &[u8],
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), SignatureError> {
    if secret.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    match kind {
        ForgeKind::Github => {
            const NAME: &str = "x-hub-signature-256";
            let value = header(headers, NAME).ok_or(SignatureError::Missing(NAME))?;
            let hex = value
                .strip_prefix("sha256=")
                .ok_or(SignatureError::Malformed(NAME))?;
            check_hmac(secret, body, hex, NAME)
        }
        ForgeKind::Gitea => {
            // Forgejo sends both names; older Gitea only its own.
            let (name, value) = ["x-forgejo-signature", "x-gitea-signature"]
                .into_iter()
                .find_map(|name| header(headers, name).map(|value| (name, value)))
                .ok_or(SignatureError::Missing("X-Gitea-Signature"))?;
            check_hmac(secret, body, value, name)
        }
        ForgeKind::Gitlab => {
            const NAME: &str = "x-gitlab-token";
            let value = header(headers, NAME).ok_or(SignatureError::Missing(NAME))?;
            // Hashing both sides first makes the comparison's time
            // independent of the secret's length too.
            let given = Sha256::digest(value.as_bytes());
            let expected = Sha256::digest(secret);
            if bool::from(given.ct_eq(&expected)) {
                Ok(())
            } else {
                Err(SignatureError::Mismatch)
            }
        }
    }
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

fn check_hmac(
    secret: &[u8],
    body: &[u8],
    hex_signature: &str,
    name: &'static str,
) -> Result<(), SignatureError> {
    let given = hex::decode(hex_signature).map_err(|_| SignatureError::Malformed(name))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| SignatureError::NoSecret)?;
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&given)
        .map_err(|_| SignatureError::Mismatch)
}

/// The hex HMAC-SHA256 of `body` under `secret`: what GitHub puts after
/// `sha256=` and Gitea sends bare. Kiln's own notification webhooks sign
/// the same way.
pub fn hmac_sha256_hex(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with(name: &'static str, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn github_signs_with_a_prefixed_hmac() {
        // The example of GitHub's "Validating webhook deliveries" page.
        let body = b"Hello, World!";
        let secret = b"It's a Secret to Everybody";
        let good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        let headers = with("x-hub-signature-256", good);
        assert_eq!(verify(ForgeKind::Github, secret, &headers, body), Ok(()));
        assert_eq!(
            verify(ForgeKind::Github, b"another", &headers, body),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(ForgeKind::Github, secret, &headers, b"Hello, World?"),
            Err(SignatureError::Mismatch)
        );
        let bare = with("x-hub-signature-256", &good[7..]);
        assert_eq!(
            verify(ForgeKind::Github, secret, &bare, body),
            Err(SignatureError::Malformed("x-hub-signature-256"))
        );
        assert_eq!(
            verify(ForgeKind::Github, secret, &HeaderMap::new(), body),
            Err(SignatureError::Missing("x-hub-signature-256"))
        );
    }

    #[test]
    fn gitea_and_forgejo_sign_with_bare_hex() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let signature = hmac_sha256_hex(b"s3cret", body);
        for name in ["x-gitea-signature", "x-forgejo-signature"] {
            let headers = with(name, &signature);
            assert_eq!(verify(ForgeKind::Gitea, b"s3cret", &headers, body), Ok(()));
            assert_eq!(
                verify(ForgeKind::Gitea, b"other", &headers, body),
                Err(SignatureError::Mismatch)
            );
        }
        // GitHub's header alone does not do for a Gitea forge.
        let github = with("x-hub-signature-256", &format!("sha256={signature}"));
        assert!(verify(ForgeKind::Gitea, b"s3cret", &github, body).is_err());
    }

    #[test]
    fn gitlab_sends_the_secret_itself() {
        let headers = with("x-gitlab-token", "s3cret");
        assert_eq!(
            verify(ForgeKind::Gitlab, b"s3cret", &headers, b"{}"),
            Ok(())
        );
        assert_eq!(
            verify(ForgeKind::Gitlab, b"s3cret-longer", &headers, b"{}"),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_forge_without_a_secret_trusts_nothing() {
        let headers = with("x-gitlab-token", "");
        for kind in [ForgeKind::Github, ForgeKind::Gitlab, ForgeKind::Gitea] {
            assert_eq!(
                verify(kind, b"", &headers, b"{}"),
                Err(SignatureError::NoSecret)
            );
        }
    }
}
