//! A future run on a task of its own, and aborted with its handle: work a caller
//! fans out (the ranges of a get) runs on every core, and stops when the caller
//! stops waiting for it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio_util::task::AbortOnDropHandle;

use crate::error::ClientError;

/// The output of a future spawned with [`spawn`]; dropping it aborts the task.
#[derive(Debug)]
pub(crate) struct Owned<T>(AbortOnDropHandle<Result<T, ClientError>>);

/// Runs `fut` on a task of its own. The task belongs to the returned handle: it is
/// aborted when the handle is dropped, so a get given up on leaves nothing running.
pub(crate) fn spawn<T, F>(fut: F) -> Owned<T>
where
    T: Send + 'static,
    F: Future<Output = Result<T, ClientError>> + Send + 'static,
{
    Owned(AbortOnDropHandle::new(tokio::spawn(fut)))
}

impl<T> Future for Owned<T> {
    type Output = Result<T, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|joined| {
            joined.unwrap_or_else(|e| {
                Err(ClientError::Task {
                    reason: e.to_string(),
                })
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn the_output_comes_through() {
        let got = spawn(async { Ok::<_, ClientError>(7) }).await.expect("ok");
        assert_eq!(got, 7);
    }

    #[tokio::test]
    async fn a_panic_is_an_error_not_a_panic() {
        let got = spawn(async {
            if true {
                panic!("boom");
            }
            Ok::<u8, ClientError>(0)
        })
        .await;
        assert!(matches!(got, Err(ClientError::Task { .. })), "{got:?}");
    }

    /// Sets its flag when dropped: the task's future was dropped.
    struct Flag(Arc<AtomicBool>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn dropping_the_handle_stops_the_task() {
        let dropped = Arc::new(AtomicBool::new(false));
        let (started, mut running) = tokio::sync::mpsc::channel::<()>(1);
        let flag = Flag(dropped.clone());
        let handle = spawn(async move {
            let _flag = flag;
            let _ = started.send(()).await;
            std::future::pending::<()>().await;
            Ok::<(), ClientError>(())
        });
        running.recv().await.expect("task started");
        drop(handle);
        tokio::time::timeout(Duration::from_secs(10), async {
            while !dropped.load(Ordering::SeqCst) {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the task's future was dropped within 10 s");
    }
}
