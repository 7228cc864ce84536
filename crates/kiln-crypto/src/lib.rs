//! Cryptographic helpers for the Kiln server.
//!
//! - [`SecretKey`]: the server's 32-byte master key, from `KILN_SECRET_KEY` or a
//!   `secret.key` file in the data directory (created on first start).
//! - [`seal`] / [`open`]: authenticated encryption of values at rest (job
//!   secrets) with XChaCha20-Poly1305. The `associated` data binds a sealed
//!   value to its place, so a ciphertext copied into another row does not open.
//! - [`new_token`] / [`hash_token`] / [`constant_time_eq`]: API and agent tokens.
//!
//! Sealed format, version 1: `[0x01][24-byte random nonce][ciphertext + 16-byte tag]`.
//! The leading version byte lets a later format (another cipher, key rotation
//! with a key id) be told apart from this one.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

/// Name of the environment variable that overrides the key file.
pub const SECRET_KEY_ENV: &str = "KILN_SECRET_KEY";
/// Name of the key file inside the data directory.
pub const SECRET_KEY_FILE: &str = "secret.key";
/// Length of a [`SecretKey`] in bytes.
pub const KEY_LEN: usize = 32;

const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// Errors from loading keys and opening sealed values.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error(
        "{SECRET_KEY_ENV} must be 64 hex characters or the base64 encoding of 32 bytes \
         (generate one with `openssl rand -hex 32`); {0}"
    )]
    InvalidEnvKey(String),
    #[error("secret key file {path} {problem}")]
    InvalidKeyFile { path: PathBuf, problem: String },
    #[error(
        "secret key file {path} is open to other users (mode {mode:04o}); \
         run `chmod 600 {path}`"
    )]
    InsecureKeyFile { path: PathBuf, mode: u32 },
    #[error("secret key file {path}: {source}")]
    KeyFileIo {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the system random number generator failed: {0}")]
    Random(String),
    #[error("sealed value is malformed: {0}")]
    Malformed(&'static str),
    #[error("sealed value uses unknown format version {0}")]
    UnknownVersion(u8),
    /// Wrong key, wrong associated data or a modified ciphertext: the AEAD
    /// cannot tell these apart, and neither should an attacker.
    #[error("sealed value could not be opened (wrong key, wrong place, or tampered)")]
    Open,
}

pub type Result<T, E = CryptoError> = std::result::Result<T, E>;

/// The server's master key. Zeroed on drop, never printed.
#[derive(Clone)]
pub struct SecretKey(Zeroizing<[u8; KEY_LEN]>);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl PartialEq for SecretKey {
    fn eq(&self, other: &Self) -> bool {
        constant_time_eq(self.0.as_slice(), other.0.as_slice())
    }
}

impl Eq for SecretKey {}

impl SecretKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        SecretKey(Zeroizing::new(bytes))
    }

    /// A fresh key from the operating system's random number generator.
    pub fn generate() -> Result<Self> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        getrandom::fill(bytes.as_mut_slice()).map_err(|e| CryptoError::Random(e.to_string()))?;
        Ok(SecretKey(bytes))
    }

    /// The raw key bytes (for deriving sub-keys; keep them out of logs).
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Loads the key from `KILN_SECRET_KEY` if set, else from
    /// `<data_dir>/secret.key`, creating that file (mode 0600) on first use.
    pub fn load(data_dir: &Path) -> Result<Self> {
        let env = std::env::var(SECRET_KEY_ENV).ok();
        Self::load_with_env(data_dir, env.as_deref())
    }

    /// [`SecretKey::load`] with the environment value passed in, so callers
    /// and tests need not touch the process environment. An empty value counts
    /// as unset (a blank line in an env file should not be a key).
    pub fn load_with_env(data_dir: &Path, env_value: Option<&str>) -> Result<Self> {
        match env_value.map(str::trim) {
            Some(value) if !value.is_empty() => Self::from_encoded(value),
            _ => Self::load_or_create_file(&data_dir.join(SECRET_KEY_FILE)),
        }
    }

    /// Parses a key given as 64 hex characters or as base64 (standard or
    /// URL-safe, padded or not) of exactly 32 bytes.
    pub fn from_encoded(value: &str) -> Result<Self> {
        let value = value.trim();
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        if value.len() == 2 * KEY_LEN && value.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode_to_slice(value, bytes.as_mut_slice())
                .map_err(|e| CryptoError::InvalidEnvKey(e.to_string()))?;
            return Ok(SecretKey(bytes));
        }
        let decoded = decode_base64(value).ok_or_else(|| {
            CryptoError::InvalidEnvKey(format!(
                "got {} characters that are neither hex nor base64",
                value.len()
            ))
        })?;
        if decoded.len() != KEY_LEN {
            return Err(CryptoError::InvalidEnvKey(format!(
                "the base64 value decodes to {} bytes, not {KEY_LEN}",
                decoded.len()
            )));
        }
        bytes.copy_from_slice(&decoded);
        Ok(SecretKey(bytes))
    }

    fn load_or_create_file(path: &Path) -> Result<Self> {
        match fs::symlink_metadata(path) {
            Ok(_) => Self::read_file(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => match Self::create_file(path) {
                Ok(key) => Ok(key),
                // Another process created it between our check and our rename
                // attempt: theirs won, use it so both agree on one key.
                Err(CryptoError::KeyFileIo { source, .. })
                    if source.kind() == io::ErrorKind::AlreadyExists =>
                {
                    Self::read_file(path)
                }
                Err(e) => Err(e),
            },
            Err(source) => Err(CryptoError::KeyFileIo {
                path: path.to_owned(),
                source,
            }),
        }
    }

    fn read_file(path: &Path) -> Result<Self> {
        let io_err = |source| CryptoError::KeyFileIo {
            path: path.to_owned(),
            source,
        };
        let meta = fs::metadata(path).map_err(io_err)?;
        if !meta.is_file() {
            return Err(CryptoError::InvalidKeyFile {
                path: path.to_owned(),
                problem: "is not a regular file".into(),
            });
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(CryptoError::InsecureKeyFile {
                    path: path.to_owned(),
                    mode,
                });
            }
        }
        let data = Zeroizing::new(fs::read(path).map_err(io_err)?);
        // Raw 32 bytes is what we write; an operator may also have put a hex
        // or base64 key there by hand.
        if data.len() == KEY_LEN {
            let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
            bytes.copy_from_slice(&data);
            return Ok(SecretKey(bytes));
        }
        let text = std::str::from_utf8(&data).map_err(|_| CryptoError::InvalidKeyFile {
            path: path.to_owned(),
            problem: format!(
                "holds {} bytes; expected 32 raw bytes, 64 hex characters or base64",
                data.len()
            ),
        })?;
        Self::from_encoded(text).map_err(|_| CryptoError::InvalidKeyFile {
            path: path.to_owned(),
            problem: format!(
                "holds {} bytes; expected 32 raw bytes, 64 hex characters or base64",
                data.len()
            ),
        })
    }

    /// Writes a new random key to a temporary file in the same directory and
    /// renames it into place, so a crash never leaves a half-written key that
    /// would make every sealed secret unreadable.
    fn create_file(path: &Path) -> Result<Self> {
        let io_err = |source| CryptoError::KeyFileIo {
            path: path.to_owned(),
            source,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(io_err)?;
        let key = Self::generate()?;

        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).map_err(|e| CryptoError::Random(e.to_string()))?;
        let tmp = dir.join(format!(".{SECRET_KEY_FILE}.{}.tmp", hex::encode(suffix)));
        let result = (|| -> io::Result<()> {
            let mut options = fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(&tmp)?;
            file.write_all(key.as_bytes())?;
            file.sync_all()?;
            drop(file);
            // hard_link fails if the target exists, unlike rename, so two
            // servers starting at once cannot overwrite each other's key.
            match fs::hard_link(&tmp, path) {
                Ok(()) => fs::remove_file(&tmp)?,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(e),
                // A filesystem without hard links: a plain rename is still atomic.
                Err(_) => fs::rename(&tmp, path)?,
            }
            // Make the new directory entry durable too.
            if let Ok(d) = fs::File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(())
        })();
        if let Err(source) = result {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(source));
        }
        Ok(key)
    }
}

fn decode_base64(value: &str) -> Option<Zeroizing<Vec<u8>>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(value).ok())
        .map(Zeroizing::new)
}

/// Encrypts `plaintext`, bound to `associated` (e.g. `"job-id/NAME"`).
///
/// # Panics
/// Only if the operating system's random number generator fails, which
/// leaves no safe way to continue (a reused nonce would break the cipher).
pub fn seal(key: &SecretKey, plaintext: &[u8], associated: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(&(*key.0).into());
    let mut nonce_bytes = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce_bytes).expect("the system random number generator failed");
    let nonce = XNonce::from(nonce_bytes);
    let ciphertext = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad: associated,
            },
        )
        // Encryption fails only for messages beyond ~256 GiB.
        .expect("XChaCha20-Poly1305 encryption failed");
    let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(&nonce_bytes);
    out.extend_from_slice(&ciphertext);
    out
}

/// Decrypts a value made by [`seal`] with the same key and associated data.
pub fn open(key: &SecretKey, sealed: &[u8], associated: &[u8]) -> Result<Vec<u8>> {
    let (&version, rest) = sealed
        .split_first()
        .ok_or(CryptoError::Malformed("empty"))?;
    if version != FORMAT_V1 {
        return Err(CryptoError::UnknownVersion(version));
    }
    if rest.len() < NONCE_LEN + TAG_LEN {
        return Err(CryptoError::Malformed("too short"));
    }
    let (nonce_bytes, ciphertext) = rest.split_at(NONCE_LEN);
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(nonce_bytes);
    let cipher = XChaCha20Poly1305::new(&(*key.0).into());
    cipher
        .decrypt(
            &XNonce::from(nonce),
            Payload {
                msg: ciphertext,
                aad: associated,
            },
        )
        .map_err(|_| CryptoError::Open)
}

/// A new random token: `prefix` followed by 32 random bytes in unpadded
/// base64url (43 characters), e.g. `kiln_3q2…`. The prefix lets secret
/// scanners and people recognise the token.
///
/// # Panics
/// Only if the operating system's random number generator fails.
pub fn new_token(prefix: &str) -> String {
    let mut bytes = Zeroizing::new([0u8; 32]);
    getrandom::fill(bytes.as_mut_slice()).expect("the system random number generator failed");
    let mut token = String::with_capacity(prefix.len() + 43);
    token.push_str(prefix);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(bytes.as_slice(), &mut token);
    token
}

/// SHA-256 of the token, lowercase hex: what the database stores. Tokens
/// carry 256 bits of entropy, so a fast hash is enough (no password KDF).
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Checks `token` against a stored [`hash_token`] value in constant time.
pub fn verify_token(token: &str, stored_hash: &str) -> bool {
    let mut computed = hash_token(token);
    let equal = constant_time_eq(computed.as_bytes(), stored_hash.as_bytes());
    computed.zeroize();
    equal
}

/// Hashes a password with argon2id (the crate's recommended parameters)
/// and a fresh random salt, as a PHC string (`$argon2id$v=19$…`) that
/// [`verify_password`] reads back, parameters included.
///
/// # Panics
/// Only if the operating system's random number generator fails.
pub fn hash_password(password: &str) -> String {
    use argon2::password_hash::PasswordHasher;
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .expect("argon2id with its default parameters hashes any password")
        .to_string()
}

/// Whether `password` is the one `stored` was made from; false for a
/// `stored` that is not a PHC string.
pub fn verify_password(password: &str, stored: &str) -> bool {
    use argon2::password_hash::PasswordVerifier;
    argon2::Argon2::default()
        .verify_password(password.as_bytes(), stored)
        .is_ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_verify_only_against_their_hash() {
        let stored = hash_password("correct horse");
        assert!(stored.starts_with("$argon2id$"), "{stored}");
        assert!(verify_password("correct horse", &stored));
        assert!(!verify_password("correct hors", &stored));
        assert!(!verify_password("correct horse", "not a hash"));
        assert_ne!(stored, hash_password("correct horse"), "salted");
    }

    use super::*;

    fn key(byte: u8) -> SecretKey {
        SecretKey::from_bytes([byte; KEY_LEN])
    }

    #[test]
    fn round_trip() {
        let k = key(7);
        let sealed = seal(&k, b"hunter2", b"job-1/TOKEN");
        assert_eq!(sealed[0], FORMAT_V1);
        assert_eq!(sealed.len(), 1 + NONCE_LEN + 7 + TAG_LEN);
        assert_eq!(open(&k, &sealed, b"job-1/TOKEN").unwrap(), b"hunter2");
    }

    #[test]
    fn nonces_differ() {
        let k = key(7);
        assert_ne!(seal(&k, b"x", b"a"), seal(&k, b"x", b"a"));
    }

    #[test]
    fn wrong_key_fails() {
        let sealed = seal(&key(1), b"secret", b"job/A");
        assert!(matches!(
            open(&key(2), &sealed, b"job/A"),
            Err(CryptoError::Open)
        ));
    }

    #[test]
    fn wrong_associated_data_fails() {
        let k = key(1);
        let sealed = seal(&k, b"secret", b"job-1/A");
        assert!(matches!(
            open(&k, &sealed, b"job-2/A"),
            Err(CryptoError::Open)
        ));
    }

    #[test]
    fn every_tampered_byte_fails() {
        let k = key(1);
        let sealed = seal(&k, b"secret", b"job/A");
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(open(&k, &bad, b"job/A").is_err(), "byte {i}");
        }
        assert!(open(&k, &sealed[..sealed.len() - 1], b"job/A").is_err());
        assert!(matches!(open(&k, &[], b""), Err(CryptoError::Malformed(_))));
        assert!(matches!(
            open(&k, &[9; 60], b""),
            Err(CryptoError::UnknownVersion(9))
        ));
        assert!(matches!(
            open(&k, &[1; 20], b""),
            Err(CryptoError::Malformed(_))
        ));
    }

    #[test]
    fn tokens() {
        let a = new_token("kiln_");
        let b = new_token("kiln_");
        assert_ne!(a, b);
        assert!(a.starts_with("kiln_"));
        assert_eq!(a.len(), 5 + 43);
        assert!(
            a[5..]
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        let h = hash_token(&a);
        assert_eq!(h.len(), 64);
        assert_eq!(h, hash_token(&a));
        assert_ne!(h, hash_token(&b));
        assert!(verify_token(&a, &h));
        assert!(!verify_token(&b, &h));
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn constant_time_eq_works() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn debug_is_redacted() {
        assert_eq!(format!("{:?}", key(0xAB)), "SecretKey(<redacted>)");
    }
}
