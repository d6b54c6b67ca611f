//! Bounded shutdown for connection tasks (feature `net`): once a server is told to
//! stop, each connection may finish the request it is serving for a grace period,
//! then it is dropped, whatever its peer does (stops reading, stalls mid-frame).

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// What a connection gets to finish its current request after a stop.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Runs `task` to its end, or until `grace` after `stop` is cancelled, whichever is
/// first. `None` when it was cut off.
pub async fn until_stopped<F: Future>(
    task: F,
    stop: &CancellationToken,
    grace: Duration,
) -> Option<F::Output> {
    let cutoff = async {
        stop.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        out = task => Some(out),
        _ = cutoff => None,
    }
}
