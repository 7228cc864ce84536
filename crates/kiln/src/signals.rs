//! Waiting for the signals that ask a long-running command to stop.

/// Resolves on Ctrl-C (SIGINT) or SIGTERM, as a terminal or a service
/// manager sends them.
pub async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Writes a line about the command's own state to stderr. Unlike
/// `eprintln!` it never panics: a server or agent whose stderr was closed
/// (its terminal gone, its supervisor's pipe reader ended) must still obey
/// the signal that follows.
pub fn notice(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// [`notice`] on stdout, flushed at once, for lines scripts wait for
/// (`agent … connected`).
pub fn announce(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
