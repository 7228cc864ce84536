//! Secret values are sealed with the server's key before they reach the
//! database, bound to their job and name so a sealed value moved elsewhere
//! does not open.

use kiln_crypto::SecretKey;
use kiln_store::Id;

fn place(job_id: Id, name: &str) -> Vec<u8> {
    format!("kiln-secret/{job_id}/{name}").into_bytes()
}

pub fn seal_secret(key: &SecretKey, job_id: Id, name: &str, value: &str) -> Vec<u8> {
    kiln_crypto::seal(key, value.as_bytes(), &place(job_id, name))
}

pub fn open_secret(
    key: &SecretKey,
    job_id: Id,
    name: &str,
    sealed: &[u8],
) -> Result<String, String> {
    let bytes = kiln_crypto::open(key, sealed, &place(job_id, name))
        .map_err(|e| format!("secret `{name}` cannot be decrypted (was the key changed?): {e}"))?;
    String::from_utf8(bytes).map_err(|_| format!("secret `{name}` is not UTF-8"))
}
