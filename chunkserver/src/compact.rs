//! Pack upkeep: now and then gives back the space of dead packed records (deleted,
//! superseded or moved-out chunks), through the store's `compact_packs`.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::ctx::Ctx;

/// How often pack files are looked at. A pass only reads the index unless a file
/// is at most half live, so most passes cost next to nothing.
const COMPACT_EVERY: Duration = Duration::from_secs(30);

pub async fn compactor(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(COMPACT_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The first tick is immediate: a start has just scanned every pack file.
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let store = ctx.store.clone();
        match tokio::task::spawn_blocking(move || store.compact_packs()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "pack compaction failed"),
            Err(e) => tracing::error!(error = %e, "pack compaction task failed"),
        }
    }
}
