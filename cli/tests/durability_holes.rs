//! Durability holes that only odd failure schedules reach, each shown by a test that
//! failed before its fix.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{bounded, cluster_with, data, on_disk, wait_until};
use dfs_client::PutOptions;
use dfs_master::oplog::SyncGate;

/// Heartbeat intervals watched while nothing may happen.
const WATCHED_BEATS: u32 = 10;

/// Opens the gate when dropped, so a failing assertion fails the test instead of
/// leaving the master's log writer (and the test) waiting for ever.
struct Opens(Arc<SyncGate>);

impl Drop for Opens {
    fn drop(&mut self) {
        self.0.open();
    }
}

/// A chunk freed by a mutation is ordered deleted only once the record that frees
/// it is durable: while the log cannot sync, the chunks of a removed file stay on
/// every chunkserver (a crash then would replay the file back, and it must still
/// have its chunks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_waits_for_the_freeing_record_to_be_durable() {
    bounded(async {
        let gate = Arc::new(SyncGate::default());
        let (_dir, cluster) = cluster_with(|o| {
            o.safe_start = Duration::from_millis(200);
            o.sync_gate = Some(gate.clone());
        })
        .await;
        let c = cluster.client();
        wait_until(Duration::from_secs(20), "safe mode to end", || async {
            matches!(c.status().await, Ok(s) if !s.safe_mode)
        })
        .await;
        c.put("/f", &data(3000, 1)[..], PutOptions::default())
            .await
            .expect("put");
        let handle = c.stat("/f").await.expect("stat").chunks[0].handle;

        gate.close();
        let _opens = Opens(gate.clone());
        let remover = {
            let c = c.clone();
            tokio::spawn(async move { c.remove("/f", false, true).await })
        };
        // The removal is applied but cannot become durable: for many heartbeats,
        // no chunkserver may be told to delete the chunk.
        let beat = cluster.options().heartbeat;
        for _ in 0..WATCHED_BEATS * 4 {
            for i in 0..3 {
                assert!(
                    on_disk(&cluster, i, &handle),
                    "chunkserver {i} deleted a chunk whose freeing record is not durable"
                );
            }
            tokio::time::sleep(beat / 4).await;
        }
        assert!(
            !remover.is_finished(),
            "the removal is not acknowledged before it is durable"
        );

        gate.open();
        remover.await.expect("task").expect("remove");
        wait_until(
            Duration::from_secs(20),
            "the chunk to be collected",
            || async { (0..3).all(|i| !on_disk(&cluster, i, &handle)) },
        )
        .await;
        cluster.shutdown().await.expect("shutdown");
    })
    .await
}
