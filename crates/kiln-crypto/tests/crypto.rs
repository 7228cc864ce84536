use std::os::unix::fs::PermissionsExt;

use base64::Engine as _;
use kiln_crypto::{CryptoError, SecretKey, open, seal};
use proptest::prelude::*;

#[test]
fn key_file_is_created_0600_and_loaded_again() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let first = SecretKey::load_with_env(&data_dir, None).unwrap();

    let path = data_dir.join("secret.key");
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.len(), 32);
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(&data_dir).unwrap().count(), 1);

    let second = SecretKey::load_with_env(&data_dir, None).unwrap();
    assert_eq!(first, second);
    // An empty env value counts as unset.
    let third = SecretKey::load_with_env(&data_dir, Some("  ")).unwrap();
    assert_eq!(first, third);

    let sealed = seal(&first, b"value", b"job/NAME");
    assert_eq!(open(&second, &sealed, b"job/NAME").unwrap(), b"value");
}

#[test]
fn env_key_overrides_file() {
    let dir = tempfile::tempdir().unwrap();
    let from_file = SecretKey::load_with_env(dir.path(), None).unwrap();

    let raw = [0x42u8; 32];
    let hex_key = hex::encode(raw);
    let from_hex = SecretKey::load_with_env(dir.path(), Some(&hex_key)).unwrap();
    assert_eq!(from_hex.as_bytes(), &raw);
    assert_ne!(from_hex, from_file);

    let upper = hex_key.to_uppercase();
    assert_eq!(
        SecretKey::load_with_env(dir.path(), Some(&upper)).unwrap(),
        from_hex
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
    assert_eq!(
        SecretKey::load_with_env(dir.path(), Some(&format!("{b64}\n"))).unwrap(),
        from_hex
    );
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xFBu8; 32]);
    assert_eq!(
        SecretKey::load_with_env(dir.path(), Some(&b64url))
            .unwrap()
            .as_bytes(),
        &[0xFB; 32]
    );
}

#[test]
fn bad_env_key_errors_clearly() {
    let dir = tempfile::tempdir().unwrap();
    for bad in [
        "not a key",
        "abcd",
        &"0".repeat(63),
        &"g".repeat(64),
        &base64::engine::general_purpose::STANDARD.encode([1u8; 16]),
    ] {
        let err = SecretKey::load_with_env(dir.path(), Some(bad)).unwrap_err();
        assert!(matches!(err, CryptoError::InvalidEnvKey(_)), "{bad}: {err}");
        assert!(err.to_string().contains("KILN_SECRET_KEY"), "{err}");
    }
    // A bad env key must not fall back to (or create) the key file.
    assert!(!dir.path().join("secret.key").exists());
}

#[test]
fn key_file_readable_by_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    SecretKey::load_with_env(dir.path(), None).unwrap();
    let path = dir.path().join("secret.key");
    for mode in [0o644, 0o640, 0o604] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let err = SecretKey::load_with_env(dir.path(), None).unwrap_err();
        assert!(
            matches!(err, CryptoError::InsecureKeyFile { .. }),
            "{mode:o}: {err}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
}

#[test]
fn key_file_with_wrong_content_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret.key");
    std::fs::write(&path, b"short").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = SecretKey::load_with_env(dir.path(), None).unwrap_err();
    assert!(matches!(err, CryptoError::InvalidKeyFile { .. }), "{err}");

    // A hand-written hex key in the file is accepted.
    std::fs::write(&path, format!("{}\n", "ab".repeat(32))).unwrap();
    let key = SecretKey::load_with_env(dir.path(), None).unwrap();
    assert_eq!(key.as_bytes(), &[0xAB; 32]);
}

#[test]
fn sealed_value_does_not_open_in_another_place() {
    let key = SecretKey::generate().unwrap();
    let sealed = seal(&key, b"db-password", b"job-a/DB");
    assert!(open(&key, &sealed, b"job-b/DB").is_err());
    assert!(open(&key, &sealed, b"job-a/DB2").is_err());
    assert!(open(&SecretKey::generate().unwrap(), &sealed, b"job-a/DB").is_err());
    assert_eq!(open(&key, &sealed, b"job-a/DB").unwrap(), b"db-password");
}

proptest! {
    #[test]
    fn seal_open_round_trips(
        key in any::<[u8; 32]>(),
        plaintext in proptest::collection::vec(any::<u8>(), 0..2048),
        associated in proptest::collection::vec(any::<u8>(), 0..128),
    ) {
        let key = SecretKey::from_bytes(key);
        let sealed = seal(&key, &plaintext, &associated);
        prop_assert_eq!(open(&key, &sealed, &associated).unwrap(), plaintext);
    }

    #[test]
    fn open_never_panics(
        sealed in proptest::collection::vec(any::<u8>(), 0..256),
        associated in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        let key = SecretKey::from_bytes([3; 32]);
        prop_assert!(open(&key, &sealed, &associated).is_err());
    }
}
