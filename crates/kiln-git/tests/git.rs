//! Tests against real repositories made with the `git` command, served over
//! file://, plain paths, `git daemon` (git://) and smart HTTP with basic
//! authentication (`git http-backend` behind a small test server).

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_git::testing::HttpGit;
use kiln_git::{Credentials, GitCache, GitError, Ref};
use tokio::net::{TcpListener, TcpStream};

/// Runs git for test setup, isolated from the machine's git config.
fn git(cwd: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(cwd)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Kiln Test")
        .env("GIT_AUTHOR_EMAIL", "test@kiln.invalid")
        .env("GIT_COMMITTER_NAME", "Kiln Test")
        .env("GIT_COMMITTER_EMAIL", "test@kiln.invalid")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

struct Repo {
    _tmp: tempfile::TempDir,
    /// The working repository (a non-bare repo served as is).
    work: PathBuf,
    /// A directory holding a bare copy, `served/repo.git`, for daemons.
    served: PathBuf,
    /// main: c1 -> c2; feature: c2 -> c3.
    c1: String,
    c2: String,
    c3: String,
}

impl Repo {
    fn new() -> Repo {
        let tmp = tempfile::tempdir().unwrap();
        let work = tmp.path().join("work");
        std::fs::create_dir(&work).unwrap();
        git(&work, &["init", "-q", "-b", "main"]);
        std::fs::write(work.join("README"), "v1\n").unwrap();
        std::fs::write(work.join(".kiln.yml"), "tasks: {}\n").unwrap();
        git(&work, &["add", "."]);
        git(&work, &["commit", "-q", "-m", "first"]);
        let c1 = git(&work, &["rev-parse", "HEAD"]);

        std::fs::write(work.join("README"), "v2\n").unwrap();
        std::fs::create_dir(work.join("ci")).unwrap();
        std::fs::write(work.join("ci/deploy.sh"), "#!/bin/sh\necho deploy\n").unwrap();
        std::os::unix::fs::symlink("README", work.join("link")).unwrap();
        git(&work, &["add", "."]);
        git(&work, &["commit", "-q", "-m", "second"]);
        let c2 = git(&work, &["rev-parse", "HEAD"]);

        git(&work, &["checkout", "-q", "-b", "feature"]);
        std::fs::write(work.join("feature.txt"), "feature\n").unwrap();
        git(&work, &["add", "."]);
        git(&work, &["commit", "-q", "-m", "feature"]);
        let c3 = git(&work, &["rev-parse", "HEAD"]);
        git(&work, &["checkout", "-q", "main"]);

        let served = tmp.path().join("served");
        std::fs::create_dir(&served).unwrap();
        git(
            &served,
            &["clone", "-q", "--bare", work.to_str().unwrap(), "repo.git"],
        );
        Repo {
            _tmp: tmp,
            work,
            served,
            c1,
            c2,
            c3,
        }
    }

    fn file_url(&self) -> String {
        format!("file://{}", self.work.display())
    }
}

fn cache() -> (tempfile::TempDir, GitCache) {
    let dir = tempfile::tempdir().unwrap();
    let cache = GitCache::new(dir.path().join("mirrors"));
    (dir, cache)
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "port {port} never opened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A child process killed when the test ends, pass or fail.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn resolves_branches_and_shas() {
    let repo = Repo::new();
    let (_dir, cache) = cache();
    for url in [repo.file_url(), repo.work.display().to_string()] {
        let main = cache
            .resolve(&url, Ref::Branch("main".into()))
            .await
            .unwrap();
        assert_eq!(main, repo.c2);
        let feature = cache
            .resolve(&url, Ref::Branch("refs/heads/feature".into()))
            .await
            .unwrap();
        assert_eq!(feature, repo.c3);

        assert_eq!(
            cache
                .resolve(&url, Ref::Sha(repo.c1.clone()))
                .await
                .unwrap(),
            repo.c1
        );
        assert_eq!(
            cache
                .resolve(&url, Ref::Sha(repo.c3.to_uppercase()))
                .await
                .unwrap(),
            repo.c3
        );
        assert_eq!(
            cache
                .resolve(&url, Ref::Sha(repo.c1[..7].to_owned()))
                .await
                .unwrap(),
            repo.c1
        );
    }
}

/// A cache given as a path relative to the working directory (as
/// `kiln up --data-dir .kiln-data` gives it) resolves and reads files:
/// git runs inside the mirror, where the relative path means something else.
#[tokio::test]
async fn a_cache_at_a_relative_path_resolves_and_reads() {
    let repo = Repo::new();
    let dir = tempfile::tempdir().unwrap();
    let cwd = std::env::current_dir().unwrap();
    let mut relative = PathBuf::new();
    for _ in cwd.components().skip(1) {
        relative.push("..");
    }
    relative.push(dir.path().join("mirrors").strip_prefix("/").unwrap());
    assert!(relative.is_relative());
    let cache = GitCache::new(&relative);
    assert!(cache.dir().is_absolute(), "{}", cache.dir().display());
    let sha = cache
        .resolve(&repo.file_url(), Ref::Branch("main".into()))
        .await
        .unwrap();
    assert_eq!(sha, repo.c2);
    let file = cache
        .read_file(&repo.file_url(), &sha, ".kiln.yml")
        .await
        .unwrap();
    assert_eq!(file.as_deref(), Some(&b"tasks: {}\n"[..]));
    assert!(dir.path().join("mirrors").is_dir());
}

#[tokio::test]
async fn abbreviated_sha_of_a_commit_not_yet_in_the_mirror() {
    let repo = Repo::new();
    let (_dir, cache) = cache();
    let url = repo.file_url();
    // The first lookup finds an empty mirror and must fetch everything.
    assert_eq!(
        cache
            .resolve(&url, Ref::Sha(repo.c3[..8].to_owned()))
            .await
            .unwrap(),
        repo.c3
    );
    // After a shallow fetch of c2 only, an abbreviation of c1 (its parent)
    // is still found.
    let (_dir2, cache2) = self::cache();
    cache2.read_file(&url, &repo.c2, "README").await.unwrap();
    assert_eq!(
        cache2
            .resolve(&url, Ref::Sha(repo.c1[..10].to_owned()))
            .await
            .unwrap(),
        repo.c1
    );
}

#[tokio::test]
async fn missing_branch_and_commit_are_clear_errors() {
    let repo = Repo::new();
    let (_dir, cache) = cache();
    let url = repo.file_url();

    let err = cache
        .resolve(&url, Ref::Branch("nope".into()))
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::BranchNotFound { .. }), "{err}");
    assert_eq!(err.to_string(), format!("branch nope not found in {url}"));

    let ghost = "deadbeef".repeat(5);
    let err = cache
        .resolve(&url, Ref::Sha(ghost.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::CommitNotFound { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!("commit {ghost} not found in {url}")
    );

    let err = cache
        .resolve(&url, Ref::Sha("abcdef1".into()))
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::CommitNotFound { .. }), "{err}");

    let err = cache.read_file(&url, &ghost, "README").await.unwrap_err();
    assert!(matches!(err, GitError::CommitNotFound { .. }), "{err}");

    for bad in ["", "main branch", "-f", "a..b"] {
        let err = cache
            .resolve(&url, Ref::Branch(bad.into()))
            .await
            .unwrap_err();
        assert!(
            matches!(err, GitError::InvalidBranch { .. }),
            "{bad}: {err}"
        );
    }
    for bad in ["", "xyz", "abc", "HEAD", "main"] {
        let err = cache.resolve(&url, Ref::Sha(bad.into())).await.unwrap_err();
        assert!(matches!(err, GitError::InvalidSha { .. }), "{bad}: {err}");
    }

    // A repository that does not exist: git's own message is included.
    let nowhere = format!("file://{}/nowhere", repo.work.display());
    let err = cache
        .resolve(&nowhere, Ref::Branch("main".into()))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, GitError::Command { .. }), "{msg}");
    assert!(
        msg.contains("ls-remote") && msg.contains("nowhere"),
        "{msg}"
    );
    assert!(
        msg.contains("does not appear to be a git repository") || msg.contains("not found"),
        "{msg}"
    );
}

#[tokio::test]
async fn reads_files_at_commits() {
    let repo = Repo::new();
    let (_dir, cache) = cache();
    let url = repo.file_url();

    let read = |sha: &str, path: &str| {
        let (cache, url, sha, path) = (cache.clone(), url.clone(), sha.to_owned(), path.to_owned());
        async move { cache.read_file(&url, &sha, &path).await }
    };
    assert_eq!(read(&repo.c2, "README").await.unwrap().unwrap(), b"v2\n");
    // An older commit.
    assert_eq!(read(&repo.c1, "README").await.unwrap().unwrap(), b"v1\n");
    assert_eq!(
        read(&repo.c1, "./.kiln.yml").await.unwrap().unwrap(),
        b"tasks: {}\n"
    );
    // A commit only on another branch.
    assert_eq!(
        read(&repo.c3, "feature.txt").await.unwrap().unwrap(),
        b"feature\n"
    );
    assert_eq!(
        read(&repo.c2, "ci/deploy.sh").await.unwrap().unwrap(),
        b"#!/bin/sh\necho deploy\n"
    );
    // Missing files.
    assert_eq!(read(&repo.c1, "ci/deploy.sh").await.unwrap(), None);
    assert_eq!(read(&repo.c2, "missing.txt").await.unwrap(), None);
    assert_eq!(read(&repo.c2, "README/x").await.unwrap(), None);
    assert_eq!(read(&repo.c2, "feature.txt").await.unwrap(), None);
    // Literal paths: no pathspec magic or globbing.
    assert_eq!(read(&repo.c2, "READ*").await.unwrap(), None);
    assert_eq!(read(&repo.c2, ":(glob)**/deploy.sh").await.unwrap(), None);

    // Not files.
    let err = read(&repo.c2, "ci").await.unwrap_err();
    assert!(
        matches!(
            err,
            GitError::NotAFile {
                kind: "a directory",
                ..
            }
        ),
        "{err}"
    );
    let err = read(&repo.c2, "link").await.unwrap_err();
    assert!(
        matches!(
            err,
            GitError::NotAFile {
                kind: "a symbolic link",
                ..
            }
        ),
        "{err}"
    );

    // Size limit.
    let small = cache.clone().with_max_file_size(2);
    let err = small.read_file(&url, &repo.c2, "README").await.unwrap_err();
    assert!(
        matches!(
            err,
            GitError::FileTooLarge {
                size: 3,
                limit: 2,
                ..
            }
        ),
        "{err}"
    );

    // The mirror holds a ref for each fetched commit, so gc keeps them.
    let mirror = cache.mirror_path(&url);
    assert!(mirror.join("HEAD").is_file());
    assert!(mirror.starts_with(cache.dir()));
}

#[tokio::test]
async fn path_escapes_are_rejected() {
    let repo = Repo::new();
    let (_dir, cache) = cache();
    let url = repo.file_url();
    for bad in [
        "../x",
        "/etc/passwd",
        "a/../../b",
        "..",
        ".",
        "",
        "a//b",
        "a\\..\\b",
        "a\0b",
        "ci/",
    ] {
        let err = cache.read_file(&url, &repo.c2, bad).await.unwrap_err();
        assert!(
            matches!(err, GitError::InvalidPath { .. }),
            "{bad:?}: {err}"
        );
    }
    let err = cache
        .read_file(&url, &repo.c2[..7], "README")
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::InvalidSha { .. }), "{err}");
}

#[tokio::test]
async fn argument_injection_urls_are_rejected() {
    let repo = Repo::new();
    let (dir, cache) = cache();
    let marker = dir.path().join("pwned");
    let evil = [
        "-upload-pack=evil".to_owned(),
        format!("--upload-pack=touch {}", marker.display()),
        format!("-u touch {}", marker.display()),
        format!("{}\n--upload-pack=evil", repo.file_url()),
        format!("{}\0", repo.file_url()),
        format!("ext::sh -c touch% {}", marker.display()),
        "ssh://-oProxyCommand=evil/x".to_owned(),
        "relative/path".to_owned(),
    ];
    for url in &evil {
        let err = cache
            .resolve(url, Ref::Branch("main".into()))
            .await
            .unwrap_err();
        assert!(matches!(err, GitError::InvalidUrl { .. }), "{url:?}: {err}");
        let err = cache.read_file(url, &repo.c2, "README").await.unwrap_err();
        assert!(matches!(err, GitError::InvalidUrl { .. }), "{url:?}: {err}");
    }
    assert!(!marker.exists());
    // Nothing ran, so not even the cache directory was made.
    assert!(!cache.dir().exists());
}

#[tokio::test]
async fn works_over_git_daemon() {
    let repo = Repo::new();
    let port = free_port();
    let daemon = Command::new("git")
        .arg("daemon")
        .arg("--reuseaddr")
        .arg("--listen=127.0.0.1")
        .arg(format!("--port={port}"))
        .arg(format!("--base-path={}", repo.served.display()))
        .arg("--export-all")
        .arg("--informative-errors")
        .arg(&repo.served)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("git daemon starts");
    let _daemon = KillOnDrop(daemon);
    wait_for_port(port).await;

    let url = format!("git://127.0.0.1:{port}/repo.git");
    let (_dir, cache) = cache();
    assert_eq!(
        cache
            .resolve(&url, Ref::Branch("main".into()))
            .await
            .unwrap(),
        repo.c2
    );
    assert_eq!(
        cache
            .resolve(&url, Ref::Branch("feature".into()))
            .await
            .unwrap(),
        repo.c3
    );
    assert_eq!(
        cache
            .resolve(&url, Ref::Sha(repo.c1[..7].to_owned()))
            .await
            .unwrap(),
        repo.c1
    );
    assert_eq!(
        cache
            .read_file(&url, &repo.c1, "README")
            .await
            .unwrap()
            .unwrap(),
        b"v1\n"
    );
    assert_eq!(
        cache
            .read_file(&url, &repo.c3, "feature.txt")
            .await
            .unwrap()
            .unwrap(),
        b"feature\n"
    );
    let err = cache
        .resolve(&url, Ref::Branch("nope".into()))
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::BranchNotFound { .. }), "{err}");
    let missing = format!("git://127.0.0.1:{port}/missing.git");
    let err = cache
        .resolve(&missing, Ref::Branch("main".into()))
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::Command { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_share_one_mirror_safely() {
    let repo = Repo::new();
    let (_dir, cache) = cache();
    let url = repo.file_url();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let (cache, url) = (cache.clone(), url.clone());
        let (sha, path, want): (String, &str, &[u8]) = match i % 3 {
            0 => (repo.c1.clone(), "README", b"v1\n"),
            1 => (repo.c2.clone(), "README", b"v2\n"),
            _ => (repo.c3.clone(), "feature.txt", b"feature\n"),
        };
        tasks.spawn(async move {
            let got = cache.read_file(&url, &sha, path).await.unwrap().unwrap();
            assert_eq!(got, want);
            let resolved = cache.resolve(&url, Ref::Sha(sha[..9].to_owned())).await;
            assert_eq!(resolved.unwrap(), sha);
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let mirror = cache.mirror_path(&url);
    git(
        mirror.parent().unwrap(),
        &[
            "--git-dir",
            mirror.to_str().unwrap(),
            "fsck",
            "--no-progress",
        ],
    );
    // One mirror, and no leftover temporary directories.
    assert_eq!(std::fs::read_dir(cache.dir()).unwrap().count(), 1);
}

#[tokio::test]
async fn a_silent_server_times_out() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let (_dir, cache) = cache();
    let cache = cache.with_timeout(Duration::from_secs(2));
    let url = format!("git://127.0.0.1:{port}/repo.git");
    let started = Instant::now();
    let err = cache
        .resolve(&url, Ref::Branch("main".into()))
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(15));
    let err = cache
        .read_file(&url, &"a".repeat(40), "README")
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::Timeout { .. }), "{err}");
    holder.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smart_http_with_basic_auth() {
    let repo = Repo::new();
    let password = "s3cr3t-token-Zq9";
    let server = HttpGit::start(repo.served.clone(), "ci-bot", password, false).await;
    let url = format!("http://127.0.0.1:{}/repo.git", server.port);
    let (_dir, cache) = cache();
    let creds = Credentials::new("ci-bot", password);

    assert_eq!(
        cache
            .resolve_with_auth(&url, Ref::Branch("main".into()), Some(&creds))
            .await
            .unwrap(),
        repo.c2
    );
    assert_eq!(
        cache
            .read_file_with_auth(&url, &repo.c1, "README", Some(&creds))
            .await
            .unwrap()
            .unwrap(),
        b"v1\n"
    );
    assert_eq!(
        cache
            .resolve_with_auth(&url, Ref::Sha(repo.c3[..7].to_owned()), Some(&creds))
            .await
            .unwrap(),
        repo.c3
    );

    // No credentials: a prompt is impossible, so git fails at once.
    let started = Instant::now();
    let err = cache
        .resolve(&url, Ref::Branch("main".into()))
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::Command { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));

    // Wrong password: refused, and the password is not in the message. (A
    // fresh cache: commits already mirrored are served without asking the
    // remote again.)
    let (_dir2, fresh) = self::cache();
    let wrong = Credentials::new("ci-bot", "wrong-password-Xy7");
    let err = fresh
        .read_file_with_auth(&url, &repo.c2, "README", Some(&wrong))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, GitError::Command { .. }), "{msg}");
    assert!(!msg.contains("wrong-password-Xy7"), "{msg}");

    // Credentials travelled only in headers, never in a URL.
    let log = server.log.lock().unwrap().clone();
    assert!(log.iter().any(|l| l.ends_with("auth=true")), "{log:?}");
    assert!(
        log.iter()
            .all(|l| !l.contains(password) && !l.contains("ci-bot")),
        "{log:?}"
    );
    // And git saved them nowhere in the mirror.
    let config = std::fs::read_to_string(cache.mirror_path(&url).join("config")).unwrap();
    assert!(!config.contains(password), "{config}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_not_given_to_a_redirect_target() {
    let repo = Repo::new();
    let server = HttpGit::start(repo.served.clone(), "u", "pw-9f2", true).await;
    let (_dir, cache) = cache();
    let creds = Credentials::new("u", "pw-9f2");

    // Asked for by the name in the URL, the credentials are given.
    let direct = format!("http://localhost:{}/repo.git", server.port);
    assert_eq!(
        cache
            .resolve_with_auth(&direct, Ref::Branch("main".into()), Some(&creds))
            .await
            .unwrap(),
        repo.c2
    );
    server.log.lock().unwrap().clear();

    // Redirected from 127.0.0.1 to `localhost`, another host to git: the
    // helper keeps the credentials back and the fetch fails.
    let redirected = format!("http://127.0.0.1:{}/repo.git", server.port);
    let err = cache
        .resolve_with_auth(&redirected, Ref::Branch("main".into()), Some(&creds))
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::Command { .. }), "{err}");
    let log = server.log.lock().unwrap().clone();
    // git did follow the redirect, and asked the new host without them.
    assert!(log.iter().any(|l| l.contains("host=localhost")), "{log:?}");
    assert!(log.iter().all(|l| l.ends_with("auth=false")), "{log:?}");
}

#[tokio::test]
async fn checkout_puts_exactly_one_commit_without_git_state() {
    let repo = Repo::new();
    let url = repo.file_url();
    let tmp = tempfile::tempdir().unwrap();

    // An older commit of main, not the tip.
    let first = tmp.path().join("first");
    kiln_git::checkout(&url, &repo.c1, &first, None)
        .await
        .unwrap();
    assert_eq!(std::fs::read(first.join("README")).unwrap(), b"v1\n");
    assert!(!first.join("ci").exists());
    assert!(!first.join(".git").exists(), "no fetch state is left");

    // A commit only on another branch, by an abbreviated id.
    let feature = tmp.path().join("feature");
    kiln_git::checkout(&url, &repo.c3[..12], &feature, None)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(feature.join("feature.txt")).unwrap(),
        b"feature\n"
    );
    assert_eq!(std::fs::read(feature.join("README")).unwrap(), b"v2\n");
    assert!(feature.join("link").is_symlink());

    // From a bare repository over a local path.
    let bare = tmp.path().join("bare");
    let bare_url = repo.served.join("repo.git").display().to_string();
    kiln_git::checkout(&bare_url, &repo.c2, &bare, None)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(bare.join("ci/deploy.sh")).unwrap(),
        b"#!/bin/sh\necho deploy\n"
    );

    let missing = "0123456789abcdef0123456789abcdef01234567";
    let err = kiln_git::checkout(&url, missing, &tmp.path().join("missing"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::CommitNotFound { .. }), "{err}");
    let err = kiln_git::checkout(&url, "not-a-sha", &tmp.path().join("bad"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::InvalidSha { .. }), "{err}");
    let err = kiln_git::checkout("-uhack", &repo.c1, &tmp.path().join("hack"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::InvalidUrl { .. }), "{err}");
}

/// A pull request's head that only `refs/pull/N/head` holds (a fork's
/// commit, on a forge) is fetched by that ref, and can then be read.
#[tokio::test]
async fn a_pull_requests_ref_brings_its_commit() {
    let repo = Repo::new();
    git(&repo.work, &["update-ref", "refs/pull/3/head", &repo.c3]);
    git(&repo.work, &["branch", "-q", "-D", "feature"]);
    let (_dir, cache) = cache();
    let url = repo.file_url();
    let head = cache
        .fetch_ref(&url, "refs/pull/3/head", None)
        .await
        .unwrap();
    assert_eq!(head, repo.c3);
    let file = cache
        .read_file(&url, &repo.c3, "feature.txt")
        .await
        .unwrap();
    assert_eq!(file.as_deref(), Some(&b"feature\n"[..]));

    for bad in [
        "pull/3/head",
        "refs/../heads/main",
        "refs/pull/3/head:x",
        "-refs/x",
    ] {
        let error = cache.fetch_ref(&url, bad, None).await.unwrap_err();
        assert!(
            error.to_string().contains(bad.trim_start_matches("refs/")),
            "{bad}: {error}"
        );
    }
    let missing = cache.fetch_ref(&url, "refs/pull/4/head", None).await;
    assert!(missing.is_err(), "{missing:?}");
}

/// A push's change set lists every path the commits differ in, and a list
/// longer than the limit is reported as too long, not cut short.
#[tokio::test]
async fn changed_files_between_two_commits() {
    let repo = Repo::new();
    let (_dir, cache) = cache();
    let url = repo.file_url();
    let files = cache
        .changed_files(&url, &repo.c1, &repo.c2, None, 100)
        .await
        .unwrap();
    assert_eq!(
        files,
        Some(vec!["README".into(), "ci/deploy.sh".into(), "link".into()])
    );
    let too_many = cache
        .changed_files(&url, &repo.c1, &repo.c2, None, 2)
        .await
        .unwrap();
    assert_eq!(too_many, None);
    let error = cache
        .changed_files(&url, &repo.c1[..8], &repo.c2, None, 100)
        .await
        .unwrap_err();
    assert!(matches!(error, GitError::InvalidSha { .. }), "{error}");
}

/// A pull request's change set starts at the merge base of its base and
/// head, found even when the mirror only holds shallow copies of both.
#[tokio::test]
async fn merge_base_after_shallow_fetches() {
    let repo = Repo::new();
    std::fs::write(repo.work.join("main.txt"), "later\n").unwrap();
    git(&repo.work, &["add", "."]);
    git(&repo.work, &["commit", "-q", "-m", "main moves on"]);
    let c4 = git(&repo.work, &["rev-parse", "HEAD"]);
    let (_dir, cache) = cache();
    let url = repo.file_url();
    // Shallow fetches of each commit alone, as reading pipelines does.
    for sha in [&c4, &repo.c3] {
        cache.read_file(&url, sha, ".kiln.yml").await.unwrap();
    }
    let base = cache.merge_base(&url, &c4, &repo.c3, None).await.unwrap();
    assert_eq!(base.as_deref(), Some(repo.c2.as_str()));
    let files = cache
        .changed_files(&url, &repo.c2, &repo.c3, None, 100)
        .await
        .unwrap();
    assert_eq!(files, Some(vec!["feature.txt".into()]));
}

/// Polling reads every branch head and tag, an annotated tag as its
/// commit.
#[tokio::test]
async fn list_refs_names_heads_and_tags_by_commit() {
    let repo = Repo::new();
    git(&repo.work, &["tag", "light", &repo.c1]);
    git(&repo.work, &["tag", "-a", "-m", "release", "v1", &repo.c2]);
    let (_dir, cache) = cache();
    let refs = cache.list_refs(&repo.file_url(), None).await.unwrap();
    let expected: Vec<(&str, &str)> = vec![
        ("refs/heads/feature", &repo.c3),
        ("refs/heads/main", &repo.c2),
        ("refs/tags/light", &repo.c1),
        ("refs/tags/v1", &repo.c2),
    ];
    let got: Vec<(&str, &str)> = refs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(got, expected);
    let missing = cache.list_refs("file:///nonexistent/repo", None).await;
    assert!(missing.is_err(), "{missing:?}");
}
