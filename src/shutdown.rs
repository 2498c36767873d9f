//! The signals that stop the process: SIGTERM (the kubelet) and SIGINT (Ctrl-C).

/// Completes on the first SIGTERM or SIGINT and says which. If the handlers cannot be
/// installed, it never completes (and says so in the log): the process then stops the
/// way the kernel stops it, which is what it would do without handlers.
pub async fn signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (term, int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(error), _) | (_, Err(error)) => {
            tracing::error!(%error, "cannot install signal handlers; graceful shutdown unavailable");
            return std::future::pending().await;
        }
    };
    let (mut term, mut int) = (term, int);
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
