//! Test helpers for code that talks to git servers, behind the `testing`
//! feature: a smart-HTTP git server that demands basic authentication.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A minimal HTTP server in front of `git http-backend` (CGI) that demands
/// basic authentication. It records each request line and whether it
/// carried credentials.
pub struct HttpGit {
    pub port: u16,
    /// One line per request: the request line, its host and whether it
    /// carried credentials (`auth=true`).
    pub log: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpGit {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HttpGit {
    /// With `redirect`, requests for host 127.0.0.1 are redirected to the
    /// same server under the name `localhost`: another host to git.
    /// Serves the bare repositories under `root` (`/repo.git` is
    /// `root/repo.git`) to `user`:`password`.
    pub async fn start(root: PathBuf, user: &str, password: &str, redirect: bool) -> HttpGit {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let log = Arc::new(Mutex::new(Vec::new()));
        let task_log = Arc::clone(&log);
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (root, expected, log) = (root.clone(), expected.clone(), Arc::clone(&task_log));
                tokio::spawn(async move {
                    let _ =
                        handle_http(sock, &root, &expected, &log, redirect.then_some(port)).await;
                });
            }
        });
        HttpGit { port, log, task }
    }
}

async fn handle_http(
    mut sock: TcpStream,
    root: &Path,
    expected_auth: &str,
    log: &Mutex<Vec<String>>,
    redirect_port: Option<u16>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let header_end = loop {
        let mut chunk = [0u8; 4096];
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        assert!(buf.len() < 64 * 1024, "headers too long");
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let mut body = buf[header_end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    if let Some(len) = headers.get("content-length") {
        let len: usize = len.parse().unwrap();
        while body.len() < len {
            let mut chunk = vec![0u8; len - body.len()];
            let n = sock.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    let authorized = headers.get("authorization").map(String::as_str) == Some(expected_auth);
    log.lock().unwrap().push(format!(
        "{request_line} host={} auth={}",
        headers.get("host").map(String::as_str).unwrap_or_default(),
        headers.contains_key("authorization")
    ));
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    if let Some(port) = redirect_port
        && headers
            .get("host")
            .is_some_and(|h| h.starts_with("127.0.0.1"))
    {
        let resp = format!(
            "HTTP/1.1 302 Found\r\nLocation: http://localhost:{port}{target}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        sock.write_all(resp.as_bytes()).await?;
        return sock.shutdown().await;
    }
    if !authorized {
        let resp = "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"kiln\"\r\n\
                    Content-Length: 0\r\nConnection: close\r\n\r\n";
        sock.write_all(resp.as_bytes()).await?;
        return sock.shutdown().await;
    }

    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut cgi = tokio::process::Command::new("git");
    cgi.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("REMOTE_USER", "tester")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("CONTENT_LENGTH", body.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(ct) = headers.get("content-type") {
        cgi.env("CONTENT_TYPE", ct);
    }
    if let Some(p) = headers.get("git-protocol") {
        cgi.env("GIT_PROTOCOL", p);
    }
    if let Some(enc) = headers.get("content-encoding") {
        cgi.env("HTTP_CONTENT_ENCODING", enc);
    }
    let mut child = cgi.spawn()?;
    let mut stdin = child.stdin.take().unwrap();
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
    });
    let out = child.wait_with_output().await?;
    let _ = writer.await;

    let raw = out.stdout;
    let (cgi_head, cgi_body) = match raw.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => (&raw[..i], &raw[i + 4..]),
        None => match raw.windows(2).position(|w| w == b"\n\n") {
            Some(i) => (&raw[..i], &raw[i + 2..]),
            None => (&raw[..0], &raw[..]),
        },
    };
    let mut status = "200 OK".to_owned();
    let mut resp = String::new();
    for line in String::from_utf8_lossy(cgi_head).lines() {
        match line.split_once(':') {
            Some((k, v)) if k.eq_ignore_ascii_case("status") => status = v.trim().to_owned(),
            Some(_) => {
                resp.push_str(line.trim_end());
                resp.push_str("\r\n");
            }
            None => {}
        }
    }
    let head = format!(
        "HTTP/1.1 {status}\r\n{resp}Content-Length: {}\r\nConnection: close\r\n\r\n",
        cgi_body.len()
    );
    sock.write_all(head.as_bytes()).await?;
    sock.write_all(cgi_body).await?;
    sock.shutdown().await
}
