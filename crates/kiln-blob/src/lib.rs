//! The blob store for logs, artifacts and test reports: a local directory, or
//! (with the `s3` feature) an S3 or S3-compatible bucket, both through the
//! `object_store` crate so servers sharing one bucket see the same blobs.
//!
//! Every key goes through [`blob_key`], which refuses anything that could
//! name a place outside the store (`..`, absolute paths, backslashes, empty
//! segments, control characters), so a hostile artifact path from a build
//! cannot reach the server's files.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Longest key accepted, in bytes (S3's limit is 1024).
pub const MAX_KEY_LEN: usize = 1024;

/// Size of the parts of a streamed upload. S3 needs at least 5 MiB per part;
/// larger parts mean fewer requests, but more memory per upload in flight.
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploaded at once per streamed upload: bounds memory to about
/// `PART_SIZE * (UPLOAD_CONCURRENCY + 1)`.
const UPLOAD_CONCURRENCY: usize = 2;
/// How much of a file is read at a time by [`BlobStore::put_file`].
const READ_CHUNK: usize = 256 * 1024;

/// Errors from the blob store.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("invalid blob key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("blob {0} not found")]
    NotFound(String),
    #[error("range starts at byte {start}, but blob {key} has only {size} bytes")]
    RangeNotSatisfiable { key: String, start: u64, size: u64 },
    #[error("invalid blob store URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("blob store: {0}")]
    Store(#[source] object_store::Error),
    #[error("blob store: {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = BlobError> = std::result::Result<T, E>;

fn store_err(key: &str) -> impl FnOnce(object_store::Error) -> BlobError + '_ {
    move |e| match e {
        object_store::Error::NotFound { .. } => BlobError::NotFound(key.to_owned()),
        other => BlobError::Store(other),
    }
}

/// Name and size of a stored blob, from [`BlobStore::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobMeta {
    pub key: String,
    pub size: u64,
}

/// A handle on the blob store; cheap to clone and share between tasks.
#[derive(Debug, Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    description: String,
}

impl std::fmt::Display for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

impl BlobStore {
    /// A store in a local directory, created if missing.
    pub fn local(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| BlobError::Io {
            context: format!("creating {}", dir.display()),
            source,
        })?;
        // Removing the last blob of a run should not leave a tree of empty
        // directories behind.
        let store = LocalFileSystem::new_with_prefix(dir)
            .map_err(BlobError::Store)?
            .with_automatic_cleanup(true);
        Ok(BlobStore {
            store: Arc::new(store),
            description: format!("local directory {}", dir.display()),
        })
    }

    /// A store from a URL: `file:///abs/dir` or a plain path for a local
    /// directory, `s3://bucket/optional/prefix` for S3 (with the `s3`
    /// feature), configured from the standard `AWS_*` environment variables
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
    /// `AWS_ENDPOINT_URL` for S3-compatible stores; an `http://` endpoint is
    /// allowed).
    pub fn from_url(url: &str) -> Result<Self> {
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(BlobError::InvalidUrl {
                    url: url.to_owned(),
                    reason: "a file:// URL needs an absolute path".into(),
                });
            }
            return Self::local(Path::new(path));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            return Self::s3(url, rest);
        }
        if url.contains("://") {
            return Err(BlobError::InvalidUrl {
                url: url.to_owned(),
                reason: "supported are a directory path, file:///dir and s3://bucket/prefix".into(),
            });
        }
        Self::local(Path::new(url))
    }

    #[cfg(feature = "s3")]
    fn s3(url: &str, rest: &str) -> Result<Self> {
        use object_store::aws::AmazonS3Builder;
        use object_store::prefix::PrefixStore;

        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(BlobError::InvalidUrl {
                url: url.to_owned(),
                reason: "the bucket name is missing".into(),
            });
        }
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        // Not every environment variable name object_store reads is the one
        // the AWS CLI uses; accept both spellings.
        let endpoint = std::env::var("AWS_ENDPOINT_URL_S3")
            .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
            .or_else(|_| std::env::var("AWS_ENDPOINT"))
            .ok()
            .filter(|e| !e.is_empty());
        if let Some(endpoint) = &endpoint {
            builder = builder
                .with_endpoint(endpoint.clone())
                .with_allow_http(endpoint.starts_with("http://"));
            // S3-compatible servers (MinIO, Garage, Ceph) commonly serve
            // path-style requests only; virtual-hosted style needs DNS.
            if std::env::var("AWS_VIRTUAL_HOSTED_STYLE_REQUEST").is_err() {
                builder = builder.with_virtual_hosted_style_request(false);
            }
        }
        if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err() {
            // object_store defaults to us-east-1 as well; S3-compatible
            // stores generally ignore the region but still sign with it.
            builder = builder.with_region("us-east-1");
        }
        let s3 = builder.build().map_err(|e| BlobError::InvalidUrl {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        let prefix = prefix.trim_end_matches('/');
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            Arc::new(s3)
        } else {
            let prefix = StorePath::parse(prefix).map_err(|e| BlobError::InvalidUrl {
                url: url.to_owned(),
                reason: e.to_string(),
            })?;
            Arc::new(PrefixStore::new(s3, prefix))
        };
        Ok(BlobStore {
            store,
            description: format!("s3://{rest}"),
        })
    }

    #[cfg(not(feature = "s3"))]
    fn s3(url: &str, _rest: &str) -> Result<Self> {
        Err(BlobError::InvalidUrl {
            url: url.to_owned(),
            reason: "this build has no S3 support (build kiln-blob with the `s3` feature)".into(),
        })
    }

    /// Wraps any `object_store` implementation (e.g. an in-memory one for tests).
    pub fn from_object_store(store: Arc<dyn ObjectStore>) -> Self {
        let description = store.to_string();
        BlobStore { store, description }
    }

    fn path(key: &str) -> Result<StorePath> {
        check_key(key)?;
        StorePath::parse(key).map_err(|_| BlobError::InvalidKey {
            key: key.to_owned(),
            reason: "not a valid object path",
        })
    }

    /// Stores `bytes` under `key`, replacing any previous blob.
    pub async fn put(&self, key: &str, bytes: impl Into<Bytes>) -> Result<()> {
        let path = Self::path(key)?;
        self.store
            .put(&path, PutPayload::from_bytes(bytes.into()))
            .await
            .map_err(store_err(key))?;
        Ok(())
    }

    /// Stores a stream of chunks as one blob, uploading in parts as it goes
    /// (never holding the whole blob in memory). The blob appears only once
    /// the stream has ended without error; on error nothing is stored.
    pub async fn put_stream<S, E>(&self, key: &str, stream: S) -> Result<u64>
    where
        S: futures_util::Stream<Item = Result<Bytes, E>> + Send,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = Self::path(key)?;
        let mut writer = BufWriter::with_capacity(Arc::clone(&self.store), path, PART_SIZE)
            .with_max_concurrency(UPLOAD_CONCURRENCY);
        let mut stream = std::pin::pin!(stream);
        let mut total = 0u64;
        let result: Result<()> = async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| BlobError::Io {
                    context: format!("reading the data for {key}"),
                    source: std::io::Error::other(e),
                })?;
                total += chunk.len() as u64;
                writer.put(chunk).await.map_err(store_err(key))?;
            }
            writer.shutdown().await.map_err(|source| BlobError::Io {
                context: format!("finishing upload of {key}"),
                source,
            })
        }
        .await;
        if let Err(e) = result {
            // Best effort: drop uploaded parts so they do not linger (and
            // cost money on S3); the original error is what matters.
            let _ = writer.abort().await;
            return Err(e);
        }
        Ok(total)
    }

    /// Stores everything read from `reader` as one blob, in parts.
    pub async fn put_reader<R>(&self, key: &str, reader: R) -> Result<u64>
    where
        R: AsyncRead + Send,
    {
        let chunks = futures_util::stream::try_unfold(
            (Box::pin(reader), vec![0u8; READ_CHUNK]),
            |(mut reader, mut buf)| async move {
                let n = reader.read(&mut buf).await?;
                if n == 0 {
                    return Ok::<_, std::io::Error>(None);
                }
                let chunk = Bytes::copy_from_slice(&buf[..n]);
                Ok(Some((chunk, (reader, buf))))
            },
        );
        self.put_stream(key, chunks).await
    }

    /// Stores the file at `path` as one blob, streaming it in parts.
    pub async fn put_file(&self, key: &str, path: &Path) -> Result<u64> {
        Self::path(key)?;
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|source| BlobError::Io {
                context: format!("opening {}", path.display()),
                source,
            })?;
        self.put_reader(key, file).await
    }

    /// The whole blob. For large blobs prefer [`BlobStore::get_stream`].
    pub async fn get(&self, key: &str) -> Result<Bytes> {
        let path = Self::path(key)?;
        let result = self.store.get(&path).await.map_err(store_err(key))?;
        result.bytes().await.map_err(store_err(key))
    }

    /// Bytes `range.start..range.end` of the blob. The end is clamped to the
    /// blob's size; a start at or past the end is
    /// [`BlobError::RangeNotSatisfiable`] (HTTP 416).
    pub async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let path = Self::path(key)?;
        if range.start >= range.end {
            return Ok(Bytes::new());
        }
        let start = range.start;
        match self.store.get_range(&path, range).await {
            Ok(bytes) => Ok(bytes),
            Err(e) => Err(self.range_error(key, start, e).await),
        }
    }

    /// Backends word a range past the end differently (or not at all); ask
    /// for the size to tell that case apart from other failures.
    async fn range_error(&self, key: &str, start: u64, error: object_store::Error) -> BlobError {
        let error = store_err(key)(error);
        if matches!(error, BlobError::NotFound(_)) {
            return error;
        }
        match self.size(key).await {
            Ok(size) if start >= size => BlobError::RangeNotSatisfiable {
                key: key.to_owned(),
                start,
                size,
            },
            _ => error,
        }
    }

    /// The blob as a stream of chunks, for serving without buffering it.
    pub async fn get_stream(&self, key: &str) -> Result<BoxStream<'static, Result<Bytes>>> {
        let path = Self::path(key)?;
        let result = self.store.get(&path).await.map_err(store_err(key))?;
        Ok(result.into_stream().map_err(BlobError::Store).boxed())
    }

    /// Part of the blob as a stream (an HTTP `Range` response).
    pub async fn get_range_stream(
        &self,
        key: &str,
        range: Range<u64>,
    ) -> Result<BoxStream<'static, Result<Bytes>>> {
        let path = Self::path(key)?;
        if range.start >= range.end {
            return Ok(futures_util::stream::empty().boxed());
        }
        let start = range.start;
        let options = object_store::GetOptions::default().with_range(Some(range));
        let result = match self.store.get_opts(&path, options).await {
            Ok(result) => result,
            Err(e) => return Err(self.range_error(key, start, e).await),
        };
        Ok(result.into_stream().map_err(BlobError::Store).boxed())
    }

    /// The blob's size in bytes.
    pub async fn size(&self, key: &str) -> Result<u64> {
        let path = Self::path(key)?;
        let meta = self.store.head(&path).await.map_err(store_err(key))?;
        Ok(meta.size)
    }

    /// Whether a blob exists under `key`.
    pub async fn exists(&self, key: &str) -> Result<bool> {
        match self.size(key).await {
            Ok(_) => Ok(true),
            Err(BlobError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes one blob; removing a missing blob is not an error.
    pub async fn delete(&self, key: &str) -> Result<()> {
        let path = Self::path(key)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(BlobError::Store(e)),
        }
    }

    /// Every blob under `prefix` (whole segments: `jobs/a` does not match
    /// `jobs/ab/x`), sorted by key.
    pub async fn list(&self, prefix: &str) -> Result<Vec<BlobMeta>> {
        let path = Self::path(prefix)?;
        let mut out: Vec<BlobMeta> = self
            .store
            .list(Some(&path))
            .map_ok(|m| BlobMeta {
                key: m.location.to_string(),
                size: m.size,
            })
            .try_collect()
            .await
            .map_err(store_err(prefix))?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Removes every blob under `prefix` (whole segments, as in
    /// [`BlobStore::list`]); returns how many were removed.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<u64> {
        let path = Self::path(prefix)?;
        let locations = self.store.list(Some(&path)).map_ok(|m| m.location).boxed();
        let mut results = self.store.delete_stream(locations);
        let mut deleted = 0;
        while let Some(result) = results.next().await {
            match result {
                Ok(_) => deleted += 1,
                // Deleted concurrently by someone else: fine.
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(BlobError::Store(e)),
            }
        }
        Ok(deleted)
    }
}

/// Checks one whole key (segments joined by `/`).
fn check_key(key: &str) -> Result<()> {
    let bad = |reason| {
        Err(BlobError::InvalidKey {
            key: key.to_owned(),
            reason,
        })
    };
    if key.is_empty() {
        return bad("empty");
    }
    if key.len() > MAX_KEY_LEN {
        return bad("longer than 1024 bytes");
    }
    if key.starts_with('/') {
        return bad("absolute path");
    }
    if key.contains('\\') {
        return bad("contains a backslash");
    }
    if key.chars().any(char::is_control) {
        return bad("contains a control character (NUL, newline, …)");
    }
    for segment in key.split('/') {
        match segment {
            "" => return bad("empty path segment (`//` or a trailing `/`)"),
            "." | ".." => return bad("`.` or `..` path segment"),
            // The local backend keeps partial uploads as `name#<n>`; such a
            // name could collide with one.
            s if s
                .rsplit_once('#')
                .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) =>
            {
                return bad("a name ending in `#` and digits is reserved");
            }
            // The local backend turns names into URL references, where a
            // name such as `ab:` or `¡A:` cannot be stored.
            s if s.ends_with(':') => return bad("a name ending in `:`"),
            _ => {}
        }
    }
    Ok(())
}

/// Joins `parts` into a blob key, refusing anything that could escape the
/// store: each part must be non-empty and may itself contain `/`-separated
/// segments (an artifact path), none of which may be empty, `.` or `..`; no
/// leading `/`, backslash, NUL or other control character.
pub fn blob_key(parts: &[&str]) -> Result<String> {
    if parts.is_empty() {
        return Err(BlobError::InvalidKey {
            key: String::new(),
            reason: "no parts",
        });
    }
    for part in parts {
        if part.is_empty() {
            return Err(BlobError::InvalidKey {
                key: parts.join("/"),
                reason: "empty part",
            });
        }
        check_key(part)?;
    }
    let key = parts.join("/");
    check_key(&key)?;
    // The local backend resolves keys against its root as URL references,
    // where a `:` before the first `/` reads as a scheme (`A:` is a URL).
    if key
        .split('/')
        .next()
        .is_some_and(|first| first.contains(':'))
    {
        return Err(BlobError::InvalidKey {
            key,
            reason: "a `:` in the first path segment",
        });
    }
    Ok(key)
}

/// Where everything of one job lives (for deleting a job).
pub fn job_prefix(job: &str) -> Result<String> {
    blob_key(&["jobs", job])
}

/// Where everything of one run lives.
pub fn run_prefix(job: &str, run: u64) -> Result<String> {
    blob_key(&["jobs", job, "runs", &run.to_string()])
}

/// Where everything of one task of a run lives.
pub fn task_prefix(job: &str, run: u64, task: &str) -> Result<String> {
    blob_key(&["jobs", job, "runs", &run.to_string(), "tasks", task])
}

/// The console log of a task (one attempt).
pub fn console_key(job: &str, run: u64, task: &str, attempt: u32) -> Result<String> {
    blob_key(&[
        &task_prefix(job, run, task)?,
        "console",
        &format!("{attempt}.log"),
    ])
}

/// A JUnit report file collected from a task, by its path in the workspace.
pub fn junit_key(job: &str, run: u64, task: &str, path: &str) -> Result<String> {
    blob_key(&[&task_prefix(job, run, task)?, "junit", path])
}

/// The prefix under which a task's artifacts live.
pub fn artifacts_prefix(job: &str, run: u64, task: &str) -> Result<String> {
    blob_key(&[&task_prefix(job, run, task)?, "artifacts"])
}

/// An artifact of a task, by its path in the workspace (`dist/app.tar.gz`).
pub fn artifact_key(job: &str, run: u64, task: &str, path: &str) -> Result<String> {
    blob_key(&[&artifacts_prefix(job, run, task)?, path])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(blob_key(&["a", "b/c.txt"]).unwrap(), "a/b/c.txt");
        assert_eq!(
            artifact_key("web", 7, "build", "dist/app.tar.gz").unwrap(),
            "jobs/web/runs/7/tasks/build/artifacts/dist/app.tar.gz"
        );
        assert_eq!(
            console_key("web", 7, "build", 2).unwrap(),
            "jobs/web/runs/7/tasks/build/console/2.log"
        );
        assert!(artifact_key("web", 7, "build", "../../../etc/passwd").is_err());
        assert!(artifact_key("../x", 7, "build", "a").is_err());
        assert!(blob_key(&[]).is_err());
        assert!(blob_key(&["a", ""]).is_err());
        assert!(blob_key(&["a/", "b"]).is_err());
        assert!(blob_key(&["a#12"]).is_err());
        assert!(blob_key(&["issue#12a", "c#", "#"]).is_ok());
    }
}
