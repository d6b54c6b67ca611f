//! The scrubber: verifies idle chunks in the background at a bounded rate, so damage
//! is found before a reader needs the data. A damaged replica is quarantined and
//! reported like one found by a read.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::ctx::Ctx;
use crate::store::Scrub;

/// Pause after a pass that found nothing to verify.
const IDLE_PASS_PAUSE: Duration = Duration::from_secs(5);

pub async fn scrubber(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    let rate = ctx.config.scrub_rate;
    if rate == 0 {
        return;
    }
    loop {
        let candidates = ctx.store.scrub_candidates(ctx.config.scrub_idle);
        let mut verified_any = false;
        for handle in candidates {
            if shutdown.is_cancelled() {
                return;
            }
            let store = ctx.store.clone();
            let started = tokio::time::Instant::now();
            let result = tokio::task::spawn_blocking(move || store.verify(handle)).await;
            let bytes = match result {
                Ok(Ok(Scrub::Clean(len))) => {
                    verified_any = true;
                    len
                }
                Ok(Ok(Scrub::Damaged(offset))) => {
                    tracing::warn!(%handle, offset, "scrubber found a damaged replica: quarantined");
                    ctx.metrics.damaged();
                    0
                }
                Ok(Ok(Scrub::Changed)) => 0,
                Ok(Err(e)) => {
                    tracing::error!(%handle, error = %e, "scrubbing failed");
                    0
                }
                Err(e) => {
                    tracing::error!(error = %e, "scrub task failed");
                    0
                }
            };
            // Rate limit: a chunk of `bytes` may take no less than bytes / rate.
            let budget = Duration::from_secs_f64(bytes as f64 / rate as f64);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(started + budget) => {}
            }
        }
        if !verified_any {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(IDLE_PASS_PAUSE.min(ctx.config.scrub_idle.max(Duration::from_millis(100)))) => {}
            }
        }
    }
}
