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
