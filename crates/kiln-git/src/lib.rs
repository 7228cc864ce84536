//! Resolving commits and reading files from git repositories, with the `git`
//! command (no libgit2) and a cache of bare mirrors.
//!
//! The server uses this to turn a branch into a commit for a new run and to
//! read the pipeline file at that commit. Every repository URL gets one bare
//! mirror under the cache directory, named by a hash of the URL; commits are
//! fetched into it on demand (shallow first, whole history if the server
//! refuses a fetch by commit id).
//!
//! Safety, because URLs and paths come from users:
//! - URLs are limited to `file://`, `http(s)://`, `git://` and local paths;
//!   a URL starting with `-` or holding a control character is refused, and
//!   `--` separates options from the URL wherever git accepts it. Git is
//!   also told (`GIT_ALLOW_PROTOCOL`) to use no other transport, redirects
//!   and submodules included.
//! - Paths are relative, without `.`/`..` segments, matched literally.
//! - Credentials reach git through the environment and a credential helper
//!   that answers only for the URL's own host; they are never in the URL or
//!   in any command line.
//! - Every git command has a timeout; on expiry its whole process group is
//!   killed (git starts helpers such as `git-remote-https`).
//! - Commands that touch one mirror are serialised per URL.

#[cfg(feature = "testing")]
pub mod testing;

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::process::Command;

/// Default limit for one git command.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Default limit for a file read with [`GitCache::read_file`].
pub const DEFAULT_MAX_FILE_SIZE: u64 = 4 * 1024 * 1024;
/// How much of git's stderr goes into an error message.
const MAX_STDERR_IN_ERROR: usize = 2000;
/// Transports git may use, redirects and submodules included.
const ALLOWED_PROTOCOLS: &str = "file:git:http:https";

/// Which commit to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ref {
    /// A branch name (`main`; `refs/heads/main` is accepted too).
    Branch(String),
    /// A commit id, full or abbreviated (at least 4 hex digits).
    Sha(String),
}

/// A user name and password (or access token) for an HTTP(S) repository.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Errors from git operations. Messages name the repository with any
/// password in its URL removed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("invalid repository URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("invalid branch name {name:?}: {reason}")]
    InvalidBranch { name: String, reason: &'static str },
    #[error("invalid commit id {sha:?}: expected 4 to 64 hexadecimal digits")]
    InvalidSha { sha: String },
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("invalid credentials: {0}")]
    InvalidCredentials(&'static str),
    #[error("branch {branch} not found in {url}")]
    BranchNotFound { branch: String, url: String },
    #[error("commit {sha} not found in {url}")]
    CommitNotFound { sha: String, url: String },
    #[error("commit id {sha} is ambiguous in {url}; give more digits")]
    AmbiguousCommit { sha: String, url: String },
    #[error("{path} at commit {sha} is {kind}, not a file")]
    NotAFile {
        path: String,
        sha: String,
        kind: &'static str,
    },
    #[error("{path} at commit {sha} is {size} bytes, more than the limit of {limit} bytes")]
    FileTooLarge {
        path: String,
        sha: String,
        size: u64,
        limit: u64,
    },
    #[error("git {command} for {url} failed ({status}): {stderr}")]
    Command {
        command: String,
        url: String,
        status: String,
        stderr: String,
    },
    #[error("git {command} for {url} did not finish within {seconds} s and was stopped")]
    Timeout {
        command: String,
        url: String,
        seconds: u64,
    },
    #[error("could not run git (is it installed?): {0}")]
    Spawn(#[source] std::io::Error),
    #[error("git cache directory {path}: {source}")]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = GitError> = std::result::Result<T, E>;

/// Bare mirrors of remote repositories under one directory. Cheap to clone;
/// clones share the mirrors and their locks.
#[derive(Clone)]
pub struct GitCache {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    timeout: Duration,
    max_file_size: u64,
    /// One lock per mirror: two fetches into one bare repository at once
    /// can fail on git's own lock files or race on the shallow file.
    locks: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

impl fmt::Debug for GitCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitCache")
            .field("dir", &self.inner.dir)
            .field("timeout", &self.inner.timeout)
            .field("max_file_size", &self.inner.max_file_size)
            .finish()
    }
}

impl GitCache {
    /// A cache in `dir` (created when first needed).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self::build(dir.into(), DEFAULT_TIMEOUT, DEFAULT_MAX_FILE_SIZE)
    }

    fn build(dir: PathBuf, timeout: Duration, max_file_size: u64) -> Self {
        // git runs with the mirror as its working directory, where a
        // relative path to the cache would mean something else.
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        GitCache {
            inner: Arc::new(Inner {
                dir,
                timeout,
                max_file_size,
                locks: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The same cache with another limit per git command.
    pub fn with_timeout(self, timeout: Duration) -> Self {
        Self::build(self.inner.dir.clone(), timeout, self.inner.max_file_size)
    }

    /// The same cache with another size limit for [`GitCache::read_file`].
    pub fn with_max_file_size(self, limit: u64) -> Self {
        Self::build(self.inner.dir.clone(), self.inner.timeout, limit)
    }

    /// The directory holding the mirrors.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Where the mirror of `url` lives (it may not exist yet).
    pub fn mirror_path(&self, url: &str) -> PathBuf {
        let digest = hex::encode(Sha256::digest(url.as_bytes()));
        self.inner.dir.join(&digest[..32])
    }

    /// The full commit id that `r` names in the repository at `url`.
    pub async fn resolve(&self, url: &str, r: Ref) -> Result<String> {
        self.resolve_with_auth(url, r, None).await
    }

    /// [`GitCache::resolve`] with credentials for an HTTP(S) repository.
    pub async fn resolve_with_auth(
        &self,
        url: &str,
        r: Ref,
        auth: Option<&Credentials>,
    ) -> Result<String> {
        let remote = Remote::new(url, auth)?;
        match r {
            Ref::Branch(name) => self.resolve_branch(&remote, &name).await,
            Ref::Sha(sha) => self.resolve_sha(&remote, &sha).await,
        }
    }

    /// The content of `path` at commit `sha` (full id), or `None` if the
    /// commit has no such path. Fetches the commit into the mirror first if
    /// needed.
    pub async fn read_file(&self, url: &str, sha: &str, path: &str) -> Result<Option<Vec<u8>>> {
        self.read_file_with_auth(url, sha, path, None).await
    }

    /// [`GitCache::read_file`] with credentials for an HTTP(S) repository.
    pub async fn read_file_with_auth(
        &self,
        url: &str,
        sha: &str,
        path: &str,
        auth: Option<&Credentials>,
    ) -> Result<Option<Vec<u8>>> {
        let remote = Remote::new(url, auth)?;
        let sha = check_sha(sha)?;
        if !is_full_sha(&sha) {
            return Err(GitError::InvalidSha { sha });
        }
        let path = check_path(path)?;

        let mirror = self.mirror_path(url);
        let lock = self.lock_for(&mirror);
        let _guard = lock.lock().await;
        self.ensure_mirror(&remote, &mirror).await?;
        self.fetch_commit(&remote, &mirror, &sha).await?;

        // `ls-tree` tells a file from a directory, symlink or submodule,
        // which `cat-file` on `sha:path` would not.
        let listing = self
            .git(&remote, Some(&mirror))
            .args(["ls-tree", "-z", "-l", "--full-tree", &sha, "--", &path])
            .run("ls-tree")
            .await?;
        let Some(entry) = listing
            .split(|b| *b == 0)
            .filter_map(parse_ls_tree_entry)
            .find(|e| e.path == path.as_bytes())
        else {
            return Ok(None);
        };
        let kind = match (entry.mode, entry.kind) {
            ("100644" | "100755" | "100664", "blob") => None,
            ("120000", _) => Some("a symbolic link"),
            (_, "tree") => Some("a directory"),
            (_, "commit") => Some("a submodule"),
            _ => Some("not a regular file"),
        };
        if let Some(kind) = kind {
            return Err(GitError::NotAFile { path, sha, kind });
        }
        let limit = self.inner.max_file_size;
        if entry.size > limit {
            return Err(GitError::FileTooLarge {
                path,
                sha,
                size: entry.size,
                limit,
            });
        }
        let content = self
            .git(&remote, Some(&mirror))
            .args(["cat-file", "blob", entry.oid])
            .run("cat-file")
            .await?;
        if content.len() as u64 > limit {
            return Err(GitError::FileTooLarge {
                path,
                sha,
                size: content.len() as u64,
                limit,
            });
        }
        Ok(Some(content))
    }

    /// Fetches `reference`, a full ref name other than a branch or tag
    /// (a pull request's `refs/pull/7/head`, a merge request's
    /// `refs/merge-requests/7/head`), into the mirror, and returns the
    /// commit it names. Its commit can then be resolved and read like any
    /// other, though no branch or tag holds it (a fork's commits reach the
    /// base repository only through such a ref).
    pub async fn fetch_ref(
        &self,
        url: &str,
        reference: &str,
        auth: Option<&Credentials>,
    ) -> Result<String> {
        let remote = Remote::new(url, auth)?;
        let name = reference
            .strip_prefix("refs/")
            .ok_or_else(|| GitError::InvalidBranch {
                name: reference.to_owned(),
                reason: "not a full ref name (`refs/…`)",
            })?;
        let name = check_branch(name)?;
        let local = format!("refs/kiln/fetched/{name}");
        let mirror = self.mirror_path(url);
        let lock = self.lock_for(&mirror);
        let _guard = lock.lock().await;
        self.ensure_mirror(&remote, &mirror).await?;
        self.git(&remote, Some(&mirror))
            .args(["fetch", "--quiet", "--no-tags", "--"])
            .arg(remote.url)
            .arg(format!("+refs/{name}:{local}"))
            .run("fetch")
            .await?;
        let out = self
            .git(&remote, Some(&mirror))
            .args(["rev-parse", "--verify", "--quiet"])
            .arg(format!("{local}^{{commit}}"))
            .run("rev-parse")
            .await?;
        let sha = String::from_utf8_lossy(&out).trim().to_owned();
        if is_full_sha(&sha) {
            Ok(sha)
        } else {
            Err(GitError::BranchNotFound {
                branch: reference.to_owned(),
                url: remote.display(),
            })
        }
    }

    /// The paths that differ between commits `from` and `to` (full ids),
    /// both sides of a rename included, or `None` when there are more than
    /// `limit` of them (a caller treats that as "everything changed" rather
    /// than hold a huge list). Fetches the commits into the mirror first if
    /// needed; only their trees are compared, so shallow commits do.
    pub async fn changed_files(
        &self,
        url: &str,
        from: &str,
        to: &str,
        auth: Option<&Credentials>,
        limit: usize,
    ) -> Result<Option<Vec<String>>> {
        let remote = Remote::new(url, auth)?;
        let from = check_full_sha(from)?;
        let to = check_full_sha(to)?;
        let mirror = self.mirror_path(url);
        let lock = self.lock_for(&mirror);
        let _guard = lock.lock().await;
        self.ensure_mirror(&remote, &mirror).await?;
        self.fetch_commit(&remote, &mirror, &from).await?;
        self.fetch_commit(&remote, &mirror, &to).await?;
        let out = self
            .git(&remote, Some(&mirror))
            .args([
                "diff-tree",
                "-r",
                "-z",
                "--name-only",
                "--no-renames",
                "--no-commit-id",
            ])
            .args([&from, &to])
            .run("diff-tree")
            .await?;
        let mut files = Vec::new();
        for path in out.split(|b| *b == 0).filter(|p| !p.is_empty()) {
            if files.len() == limit {
                return Ok(None);
            }
            files.push(String::from_utf8_lossy(path).into_owned());
        }
        Ok(Some(files))
    }

    /// The best common ancestor of commits `a` and `b` (full ids), where a
    /// pull request's change set starts; `None` if they share no history.
    /// The mirror holds single commits after shallow fetches, so a first
    /// miss fetches the whole history and asks again.
    pub async fn merge_base(
        &self,
        url: &str,
        a: &str,
        b: &str,
        auth: Option<&Credentials>,
    ) -> Result<Option<String>> {
        let remote = Remote::new(url, auth)?;
        let a = check_full_sha(a)?;
        let b = check_full_sha(b)?;
        let mirror = self.mirror_path(url);
        let lock = self.lock_for(&mirror);
        let _guard = lock.lock().await;
        self.ensure_mirror(&remote, &mirror).await?;
        self.fetch_commit(&remote, &mirror, &a).await?;
        self.fetch_commit(&remote, &mirror, &b).await?;
        for attempt in 0..2 {
            let out = self
                .git(&remote, Some(&mirror))
                .args(["merge-base", &a, &b])
                .output("merge-base")
                .await?;
            let base = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if out.success && is_full_sha(&base) {
                return Ok(Some(base));
            }
            let shallow = self
                .git(&remote, Some(&mirror))
                .args(["rev-parse", "--is-shallow-repository"])
                .run("rev-parse")
                .await?;
            if attempt > 0 || !shallow.starts_with(b"true") {
                break;
            }
            self.fetch_all(&remote, &mirror).await?;
        }
        Ok(None)
    }

    /// The branch heads and tags of the repository at `url` now, as
    /// `refs/heads/…` and `refs/tags/…` names to commit ids (an annotated
    /// tag's commit, not the tag object), straight from the server with
    /// `git ls-remote`: no mirror, no lock.
    pub async fn list_refs(
        &self,
        url: &str,
        auth: Option<&Credentials>,
    ) -> Result<std::collections::BTreeMap<String, String>> {
        let remote = Remote::new(url, auth)?;
        self.ensure_dir()?;
        let out = self
            .git(&remote, None)
            .args(["ls-remote", "--heads", "--tags", "--"])
            .arg(remote.url)
            .run("ls-remote")
            .await?;
        let mut refs = std::collections::BTreeMap::new();
        let mut peeled = Vec::new();
        for (sha, name) in String::from_utf8_lossy(&out)
            .lines()
            .filter_map(|line| line.split_once('\t'))
        {
            if !is_full_sha(sha) {
                continue;
            }
            match name.strip_suffix("^{}") {
                // The commit an annotated tag points at, listed after it.
                Some(tag) => peeled.push((tag.to_owned(), sha.to_owned())),
                None => {
                    refs.insert(name.to_owned(), sha.to_owned());
                }
            }
        }
        refs.extend(peeled);
        Ok(refs)
    }

    async fn resolve_branch(&self, remote: &Remote<'_>, name: &str) -> Result<String> {
        let name = check_branch(name)?;
        let full = format!("refs/heads/{name}");
        self.ensure_dir()?;
        // ls-remote asks the server directly: no mirror, no lock, and the
        // answer is current even if the mirror is stale.
        let out = self
            .git(remote, None)
            .arg("ls-remote")
            .arg("--")
            .arg(remote.url)
            .arg(&full)
            .run("ls-remote")
            .await?;
        let out = String::from_utf8_lossy(&out);
        // ls-remote matches patterns against the tail of ref names, so
        // `refs/heads/x` also matches `refs/heads/a/refs/heads/x`: compare
        // exactly.
        out.lines()
            .filter_map(|line| line.split_once('\t'))
            .find(|(_, r)| *r == full)
            .map(|(sha, _)| sha.to_owned())
            .filter(|sha| is_full_sha(sha))
            .ok_or_else(|| GitError::BranchNotFound {
                branch: name.to_owned(),
                url: remote.display(),
            })
    }

    async fn resolve_sha(&self, remote: &Remote<'_>, sha: &str) -> Result<String> {
        let sha = check_sha(sha)?;
        let mirror = self.mirror_path(remote.url);
        let lock = self.lock_for(&mirror);
        let _guard = lock.lock().await;
        self.ensure_mirror(remote, &mirror).await?;
        if is_full_sha(&sha) {
            self.fetch_commit(remote, &mirror, &sha).await?;
            return Ok(sha);
        }
        // An abbreviation cannot be fetched by name: look in the mirror, and
        // if it is not there, fetch every branch and tag and look again.
        if let Some(full) = self.lookup_abbrev(remote, &mirror, &sha).await? {
            return Ok(full);
        }
        self.fetch_all(remote, &mirror).await?;
        self.lookup_abbrev(remote, &mirror, &sha)
            .await?
            .ok_or_else(|| GitError::CommitNotFound {
                sha,
                url: remote.display(),
            })
    }

    async fn lookup_abbrev(
        &self,
        remote: &Remote<'_>,
        mirror: &Path,
        abbrev: &str,
    ) -> Result<Option<String>> {
        let out = self
            .git(remote, Some(mirror))
            .args(["rev-parse", "--verify", "--quiet"])
            .arg(format!("{abbrev}^{{commit}}"))
            .output("rev-parse")
            .await?;
        if out.success {
            let full = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if is_full_sha(&full) {
                return Ok(Some(full));
            }
        }
        if String::from_utf8_lossy(&out.stderr).contains("ambiguous") {
            return Err(GitError::AmbiguousCommit {
                sha: abbrev.to_owned(),
                url: remote.display(),
            });
        }
        Ok(None)
    }

    async fn has_commit(&self, remote: &Remote<'_>, mirror: &Path, sha: &str) -> Result<bool> {
        let out = self
            .git(remote, Some(mirror))
            .args(["cat-file", "-e"])
            .arg(format!("{sha}^{{commit}}"))
            .output("cat-file")
            .await?;
        Ok(out.success)
    }

    /// Makes sure commit `sha` (full id) and its tree are in the mirror.
    async fn fetch_commit(&self, remote: &Remote<'_>, mirror: &Path, sha: &str) -> Result<()> {
        if self.has_commit(remote, mirror, sha).await? {
            return Ok(());
        }
        // Shallow fetch of just this commit: cheap for big repositories.
        // Servers that refuse unadvertised commit ids (older git, dumb HTTP)
        // make this fail; then fetch everything.
        let shallow = self
            .git(remote, Some(mirror))
            .args(["fetch", "--quiet", "--no-tags", "--depth", "1", "--"])
            .arg(remote.url)
            .arg(format!("+{sha}:refs/kiln/commits/{sha}"))
            .run("fetch")
            .await;
        match shallow {
            Ok(_) if self.has_commit(remote, mirror, sha).await? => return Ok(()),
            Ok(_) => {}
            // A timeout is not worth repeating with a bigger fetch.
            Err(e @ GitError::Timeout { .. }) => return Err(e),
            Err(e) => {
                tracing::debug!(error = %e, "shallow fetch by commit id failed; fetching all")
            }
        }
        self.fetch_all(remote, mirror).await?;
        if self.has_commit(remote, mirror, sha).await? {
            Ok(())
        } else {
            Err(GitError::CommitNotFound {
                sha: sha.to_owned(),
                url: remote.display(),
            })
        }
    }

    /// Fetches all branches and tags, with their whole history.
    async fn fetch_all(&self, remote: &Remote<'_>, mirror: &Path) -> Result<()> {
        let shallow = self
            .git(remote, Some(mirror))
            .args(["rev-parse", "--is-shallow-repository"])
            .run("rev-parse")
            .await?;
        let mut cmd = self.git(remote, Some(mirror));
        cmd.args(["fetch", "--quiet", "--prune", "--no-tags"]);
        if shallow.starts_with(b"true") {
            // Earlier shallow fetches left boundaries that would hide older
            // commits from an abbreviated-id lookup.
            cmd.arg("--unshallow");
        }
        cmd.arg("--")
            .arg(remote.url)
            .args(["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"])
            .run("fetch")
            .await?;
        Ok(())
    }

    fn ensure_dir(&self) -> Result<()> {
        std::fs::create_dir_all(&self.inner.dir).map_err(|source| GitError::Cache {
            path: self.inner.dir.clone(),
            source,
        })
    }

    /// Creates the bare mirror if missing: in a temporary directory renamed
    /// into place, so an interrupted `git init` never leaves a half-made
    /// mirror that later calls would trip over.
    async fn ensure_mirror(&self, remote: &Remote<'_>, mirror: &Path) -> Result<()> {
        if mirror.join("HEAD").is_file() {
            return Ok(());
        }
        self.ensure_dir()?;
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let tmp = self.inner.dir.join(format!(
            ".init-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let result = async {
            self.git(remote, None)
                .args(["init", "--bare", "--quiet", "--"])
                .arg(&tmp)
                .run("init")
                .await?;
            // Automatic gc must finish inside our lock, not in the
            // background while the next fetch runs.
            self.git(remote, Some(&tmp))
                .args(["config", "gc.autoDetach", "false"])
                .run("config")
                .await?;
            match std::fs::rename(&tmp, mirror) {
                Ok(()) => Ok(()),
                // Another process made it first; use theirs.
                Err(_) if mirror.join("HEAD").is_file() => Ok(()),
                Err(source) => Err(GitError::Cache {
                    path: mirror.to_owned(),
                    source,
                }),
            }
        }
        .await;
        if tmp.exists() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        result
    }

    fn lock_for(&self, mirror: &Path) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .inner
            .locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Arc::clone(locks.entry(mirror.to_owned()).or_default())
    }

    fn git<'a>(&'a self, remote: &'a Remote<'a>, git_dir: Option<&Path>) -> GitCommand<'a> {
        let mut args: Vec<OsString> = Vec::new();
        if let Some(dir) = git_dir {
            let mut arg = OsString::from("--git-dir=");
            arg.push(dir);
            args.push(arg);
        }
        // Never use or store the server user's saved credentials; only the
        // ones given for this call (below) count.
        args.push("-c".into());
        args.push("credential.helper=".into());
        if remote.auth.is_some() {
            args.push("-c".into());
            args.push(CREDENTIAL_HELPER.into());
        }
        GitCommand {
            cache: self,
            remote,
            args,
        }
    }
}

/// Longest any one git command of [`checkout`] may take: a whole-history
/// fetch of a big repository takes longer than a mirror update.
pub const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(600);

/// Puts the files of exactly commit `sha` (a full or abbreviated id) of `url`
/// into `dest` (created if missing; it should be empty), as a task's source:
/// a shallow fetch of that commit alone first, the whole history if the
/// server refuses a fetch by commit id, then a detached checkout. `.git` is
/// removed at the end, so the task sees files, not fetch state (or the
/// credentials' host). The same URL checks and credential handling as
/// [`GitCache`] apply.
pub async fn checkout(url: &str, sha: &str, dest: &Path, auth: Option<&Credentials>) -> Result<()> {
    let remote = Remote::new(url, auth)?;
    let sha = check_sha(sha)?;
    std::fs::create_dir_all(dest).map_err(|source| GitError::Cache {
        path: dest.to_owned(),
        source,
    })?;
    // A cache rooted at `dest` only lends its timeout and working directory.
    let runner = GitCache::build(dest.to_owned(), CHECKOUT_TIMEOUT, DEFAULT_MAX_FILE_SIZE);
    let git_dir = dest.join(".git");
    runner
        .git(&remote, None)
        .args(["init", "--quiet", "--"])
        .arg(dest)
        .run("init")
        .await?;
    let has_commit = |runner: &GitCache| {
        let (remote, git_dir, sha) = (&remote, &git_dir, &sha);
        let runner = runner.clone();
        async move {
            let out = runner
                .git(remote, Some(git_dir))
                .args(["cat-file", "-e"])
                .arg(format!("{sha}^{{commit}}"))
                .output("cat-file")
                .await?;
            Ok::<bool, GitError>(out.success)
        }
    };
    // Only a full id can be fetched by itself; an abbreviated one needs
    // the branches' history to be found in.
    let shallow = if is_full_sha(&sha) {
        runner
            .git(&remote, Some(&git_dir))
            .args(["fetch", "--quiet", "--no-tags", "--depth", "1", "--"])
            .arg(remote.url)
            .arg(format!("+{sha}:refs/kiln/commit"))
            .run("fetch")
            .await
            .map(|_| ())
    } else {
        Err(GitError::InvalidSha { sha: sha.clone() })
    };
    match shallow {
        Ok(()) if has_commit(&runner).await? => {}
        Err(e @ GitError::Timeout { .. }) => return Err(e),
        _ => {
            runner
                .git(&remote, Some(&git_dir))
                .args(["fetch", "--quiet", "--no-tags", "--"])
                .arg(remote.url)
                .args(["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"])
                .run("fetch")
                .await?;
            if !has_commit(&runner).await? {
                return Err(GitError::CommitNotFound {
                    sha,
                    url: remote.display(),
                });
            }
        }
    }
    let mut work_tree = OsString::from("--work-tree=");
    work_tree.push(dest);
    runner
        .git(&remote, Some(&git_dir))
        .arg(work_tree)
        .args([
            "-c",
            "advice.detachedHead=false",
            "checkout",
            "--quiet",
            "--detach",
        ])
        .arg(format!("{sha}^{{commit}}"))
        .run("checkout")
        .await?;
    std::fs::remove_dir_all(&git_dir).map_err(|source| GitError::Cache {
        path: git_dir.clone(),
        source,
    })
}

/// A credential helper that answers `get` with the user name and password
/// from the environment (not the command line, where other users could read
/// them), and only for the host of the URL being fetched, so a redirect to
/// another host does not receive them.
const CREDENTIAL_HELPER: &str = "credential.helper=!f() { \
    test \"$1\" = get || exit 0; \
    host=; \
    while IFS= read -r line && test -n \"$line\"; do \
      case \"$line\" in host=*) host=\"${line#host=}\";; esac; \
    done; \
    test \"$host\" = \"$KILN_GIT_HOST\" || exit 0; \
    printf 'username=%s\\npassword=%s\\n' \"$KILN_GIT_USERNAME\" \"$KILN_GIT_PASSWORD\"; \
  }; f";

/// A repository URL checked for safety, with its credentials.
struct Remote<'a> {
    url: &'a str,
    auth: Option<&'a Credentials>,
    host: String,
}

impl<'a> Remote<'a> {
    fn new(url: &'a str, auth: Option<&'a Credentials>) -> Result<Self> {
        check_url(url)?;
        if let Some(auth) = auth {
            for value in [&auth.username, &auth.password] {
                if value.chars().any(char::is_control) {
                    return Err(GitError::InvalidCredentials(
                        "user name and password may not contain control characters",
                    ));
                }
            }
        }
        Ok(Remote {
            url,
            auth,
            host: url_host(url).unwrap_or_default().to_owned(),
        })
    }

    /// The URL without any user name or password in it, for messages.
    fn display(&self) -> String {
        redact_url(self.url)
    }

    /// Removes secrets from git's output before it goes into an error.
    fn scrub(&self, text: &str) -> String {
        let mut text = text.replace(self.url, &self.display());
        // Very short passwords are left alone: replacing every "a" would
        // garble the message more than it protects.
        if let Some(auth) = self.auth
            && auth.password.len() >= 4
        {
            text = text.replace(&auth.password, "***");
        }
        text
    }
}

struct GitCommand<'a> {
    cache: &'a GitCache,
    remote: &'a Remote<'a>,
    args: Vec<OsString>,
}

struct GitOutput {
    success: bool,
    status: String,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl GitCommand<'_> {
    fn arg(&mut self, arg: impl Into<OsString>) -> &mut Self {
        self.args.push(arg.into());
        self
    }

    fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Runs the command; a non-zero exit is an error with git's stderr.
    async fn run(&mut self, name: &str) -> Result<Vec<u8>> {
        let out = self.output(name).await?;
        if out.success {
            return Ok(out.stdout);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let mut stderr = self.remote.scrub(stderr.trim());
        if stderr.len() > MAX_STDERR_IN_ERROR {
            let mut cut = MAX_STDERR_IN_ERROR;
            while !stderr.is_char_boundary(cut) {
                cut -= 1;
            }
            stderr.truncate(cut);
            stderr.push('…');
        }
        if stderr.is_empty() {
            stderr = "no message".into();
        }
        Err(GitError::Command {
            command: name.to_owned(),
            url: self.remote.display(),
            status: out.status,
            stderr,
        })
    }

    /// Runs the command and returns its output whatever the exit status.
    async fn output(&mut self, name: &str) -> Result<GitOutput> {
        let inner = &self.cache.inner;
        let mut cmd = Command::new("git");
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group, so a timeout can stop git's helpers
            // (remote-https, index-pack, upload-pack) along with it.
            .process_group(0)
            .env("GIT_TERMINAL_PROMPT", "0")
            // An empty GIT_ASKPASS stops git from falling back to
            // core.askPass or SSH_ASKPASS (a GUI prompt on a server).
            .env("GIT_ASKPASS", "")
            .env_remove("SSH_ASKPASS")
            .env("GIT_ALLOW_PROTOCOL", ALLOWED_PROTOCOLS)
            .env("GIT_LITERAL_PATHSPECS", "1")
            .env("GIT_NO_REPLACE_OBJECTS", "1")
            // Messages we match on ("ambiguous") must not be translated.
            .env("LC_ALL", "C")
            .env("LANGUAGE", "C");
        // A git environment inherited from a hook or a test must not point
        // the commands at another repository.
        for var in [
            "GIT_DIR",
            "GIT_WORK_TREE",
            "GIT_INDEX_FILE",
            "GIT_OBJECT_DIRECTORY",
            "GIT_ALTERNATE_OBJECT_DIRECTORIES",
            "GIT_COMMON_DIR",
            "GIT_NAMESPACE",
            "GIT_CONFIG_PARAMETERS",
            "GIT_CONFIG_COUNT",
        ] {
            cmd.env_remove(var);
        }
        if inner.dir.is_dir() {
            // Outside any repository, so a repository around the server's
            // working directory cannot lend its config to ls-remote.
            cmd.current_dir(&inner.dir);
            if let Some(parent) = inner.dir.parent() {
                cmd.env("GIT_CEILING_DIRECTORIES", parent);
            }
        }
        if let Some(auth) = self.remote.auth {
            cmd.env("KILN_GIT_USERNAME", &auth.username)
                .env("KILN_GIT_PASSWORD", &auth.password)
                .env("KILN_GIT_HOST", &self.remote.host);
        }

        let child = cmd.spawn().map_err(GitError::Spawn)?;
        let mut group = GroupKiller(child.id());
        match tokio::time::timeout(inner.timeout, child.wait_with_output()).await {
            Ok(Ok(out)) => {
                group.disarm();
                Ok(GitOutput {
                    success: out.status.success(),
                    status: out.status.to_string(),
                    stdout: out.stdout,
                    stderr: out.stderr,
                })
            }
            Ok(Err(e)) => Err(GitError::Spawn(e)),
            Err(_elapsed) => Err(GitError::Timeout {
                command: name.to_owned(),
                url: self.remote.display(),
                seconds: inner.timeout.as_secs(),
            }),
        }
    }
}

/// Kills a process group when dropped (timeout, or the caller's future was
/// cancelled), unless disarmed after a normal exit.
struct GroupKiller(Option<u32>);

impl GroupKiller {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        if let Some(pid) = self.0.and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: kill(2) takes no pointers; a negative pid names the
            // process group that `process_group(0)` created for this child.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
}

/// One entry of `git ls-tree -z -l`: `<mode> <type> <oid> <size>\t<path>`.
struct TreeEntry<'a> {
    mode: &'a str,
    kind: &'a str,
    oid: &'a str,
    size: u64,
    path: &'a [u8],
}

fn parse_ls_tree_entry(record: &[u8]) -> Option<TreeEntry<'_>> {
    let tab = record.iter().position(|b| *b == b'\t')?;
    let (meta, path) = (&record[..tab], &record[tab + 1..]);
    let meta = std::str::from_utf8(meta).ok()?;
    let mut fields = meta.split_ascii_whitespace();
    let mode = fields.next()?;
    let kind = fields.next()?;
    let oid = fields.next()?;
    let size = fields.next()?.parse().unwrap_or(0);
    Some(TreeEntry {
        mode,
        kind,
        oid,
        size,
        path,
    })
}

/// Refuses URLs git could take as an option or as a transport we do not
/// allow; accepts `file://`, `http://`, `https://`, `git://` and local paths.
pub fn check_url(url: &str) -> Result<()> {
    let bad = |reason: &str| {
        Err(GitError::InvalidUrl {
            url: redact_url(url),
            reason: reason.to_owned(),
        })
    };
    if url.is_empty() {
        return bad("empty");
    }
    if url.len() > 4096 {
        return bad("longer than 4096 characters");
    }
    if url.starts_with('-') {
        return bad("starts with `-` (it would be read as an option)");
    }
    if url.chars().any(char::is_control) {
        return bad("contains a control character (newline, NUL, …)");
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        if !matches!(
            scheme.to_ascii_lowercase().as_str(),
            "file" | "http" | "https" | "git"
        ) {
            return bad("supported are file://, http://, https://, git:// and local paths");
        }
        if rest.is_empty() || rest.starts_with('-') {
            return bad("no host or path after the scheme");
        }
        if scheme.eq_ignore_ascii_case("file") && !rest.starts_with('/') {
            return bad("a file:// URL needs an absolute path");
        }
        return Ok(());
    }
    // Without a scheme git reads `host:path` as SSH and `x::y` as a remote
    // helper; only unmistakable paths are allowed.
    if url.starts_with('/') || url.starts_with("./") || url.starts_with("../") {
        return Ok(());
    }
    bad("supported are file://, http://, https://, git:// and absolute or ./relative paths")
}

/// A repository URL as it may be shown — in a log, a console, an error —
/// with any `user:password@` replaced by `***@`.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            return format!("{scheme}://***@{}", &rest[at + 1..]);
        }
    }
    url.to_owned()
}

/// The `host[:port]` of a URL, as git names it to credential helpers;
/// `None` for a local path.
pub fn url_host(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    Some(match authority.rfind('@') {
        Some(at) => &authority[at + 1..],
        None => authority,
    })
}

fn check_branch(name: &str) -> Result<&str> {
    let name = name.strip_prefix("refs/heads/").unwrap_or(name);
    let bad = |reason| {
        Err(GitError::InvalidBranch {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > 255 {
        return bad("longer than 255 characters");
    }
    if name.starts_with('-') {
        return bad("starts with `-`");
    }
    if name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        return bad("empty path component");
    }
    if name.ends_with('.') || name.contains("..") || name.contains("@{") || name == "@" {
        return bad("contains `..`, `@{`, ends with `.` or is `@`");
    }
    if name
        .chars()
        .any(|c| c.is_control() || c == ' ' || "~^:?*[\\".contains(c))
    {
        return bad("contains a space, control character or one of ~^:?*[\\");
    }
    if name
        .split('/')
        .any(|c| c.starts_with('.') || c.ends_with(".lock"))
    {
        return bad("a component starts with `.` or ends with `.lock`");
    }
    Ok(name)
}

fn check_sha(sha: &str) -> Result<String> {
    let sha = sha.trim();
    if (4..=64).contains(&sha.len()) && sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(sha.to_ascii_lowercase())
    } else {
        Err(GitError::InvalidSha {
            sha: sha.to_owned(),
        })
    }
}

/// A full commit id, as the change-set queries need (an abbreviation
/// cannot be fetched by name).
fn check_full_sha(sha: &str) -> Result<String> {
    let sha = check_sha(sha)?;
    if is_full_sha(&sha) {
        Ok(sha)
    } else {
        Err(GitError::InvalidSha { sha })
    }
}

fn is_full_sha(sha: &str) -> bool {
    (sha.len() == 40 || sha.len() == 64) && sha.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A path inside the repository: relative, `/`-separated, no `.` or `..`
/// segments (a leading `./` is dropped), no backslash or control character.
fn check_path(path: &str) -> Result<String> {
    let bad = |reason| {
        Err(GitError::InvalidPath {
            path: path.to_owned(),
            reason,
        })
    };
    let mut rel = path;
    while let Some(rest) = rel.strip_prefix("./") {
        rel = rest;
    }
    if rel.is_empty() {
        return bad("empty");
    }
    if rel.len() > 4096 {
        return bad("longer than 4096 characters");
    }
    if rel.starts_with('/') {
        return bad("absolute path");
    }
    if rel.contains('\\') {
        return bad("contains a backslash");
    }
    if rel.chars().any(char::is_control) {
        return bad("contains a control character");
    }
    for segment in rel.split('/') {
        match segment {
            "" => return bad("empty path segment"),
            "." | ".." => return bad("`.` or `..` segment"),
            _ => {}
        }
    }
    Ok(rel.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        for ok in [
            "https://example.com/a/b.git",
            "http://127.0.0.1:8080/r",
            "git://127.0.0.1:9418/repo",
            "file:///srv/git/repo",
            "/srv/git/repo",
            "./repo",
            "../repo",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-upload-pack=evil",
            "--upload-pack=touch /tmp/x",
            "https://example.com/a\nb",
            "https://example.com/\0",
            "ext::sh -c evil",
            "ssh://host/repo",
            "host:repo",
            "repo",
            "file://relative",
            "fd::17",
            "https://",
            "https://-oProxyCommand=evil",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redaction() {
        assert_eq!(
            redact_url("https://u:secret@host/path@x"),
            "https://***@host/path@x"
        );
        assert_eq!(redact_url("https://host/p"), "https://host/p");
        assert_eq!(url_host("https://u:p@host:8443/x"), Some("host:8443"));
        assert_eq!(url_host("/local"), None);
    }

    #[test]
    fn branches() {
        assert_eq!(check_branch("main").unwrap(), "main");
        assert_eq!(check_branch("refs/heads/feat/x").unwrap(), "feat/x");
        for bad in [
            "", "-x", "a..b", "a b", "a~1", "x^", "a:b", "a*", "a/", "/a", "a//b", ".hidden",
            "a/.b", "x.lock", "@", "a@{1}", "a\nb", "a.",
        ] {
            assert!(check_branch(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn shas_and_paths() {
        assert_eq!(check_sha("ABCD").unwrap(), "abcd");
        assert!(check_sha("abc").is_err());
        assert!(check_sha("xyz1").is_err());
        assert!(check_sha(&"a".repeat(65)).is_err());
        assert_eq!(check_path("./ci/.kiln.yml").unwrap(), "ci/.kiln.yml");
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a/./b",
            "a//b",
            "a\\b",
            ".",
            "a/",
            "a\0",
        ] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ls_tree_entries() {
        let e = parse_ls_tree_entry(
            b"100644 blob 0123456789abcdef0123456789abcdef01234567     1234\tdir/a b.txt",
        )
        .unwrap();
        assert_eq!((e.mode, e.kind, e.size), ("100644", "blob", 1234));
        assert_eq!(e.path, b"dir/a b.txt");
        let t = parse_ls_tree_entry(
            b"040000 tree 0123456789abcdef0123456789abcdef01234567       -\tdir",
        )
        .unwrap();
        assert_eq!((t.kind, t.size), ("tree", 0));
        assert!(parse_ls_tree_entry(b"").is_none());
    }

    #[test]
    fn credentials_debug_is_redacted() {
        let c = Credentials::new("bot", "s3cr3t");
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }
}
