//! Time bounds for tests: a whole test fails instead of hanging, and conditions are
//! polled until they hold or a deadline passes (never fixed sleeps).

use std::future::Future;
use std::time::Duration;

/// How long one test may take unless it says otherwise.
pub const TEST_BOUND: Duration = Duration::from_secs(120);

/// Fails the test instead of hanging it.
pub async fn bounded<T>(fut: impl Future<Output = T>) -> T {
    bounded_for(TEST_BOUND, fut).await
}

/// Like [`bounded`], with its own limit (for long fault schedules).
pub async fn bounded_for<T>(limit: Duration, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| panic!("test exceeded its time bound of {limit:?}"))
}

/// Polls `cond` every 50 ms until it holds or `limit` passes.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + limit;
    while !cond().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
