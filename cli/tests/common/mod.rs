//! Shared test harness: a real cluster on loopback in temp dirs, bounded in time.

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use dfs_cli::cluster::{ClusterOptions, LocalCluster};
use rand::{Rng, SeedableRng};

pub const CHUNK: usize = 1 << 20;

/// Fails the test instead of hanging it.
pub async fn bounded<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), fut)
        .await
        .expect("test exceeded its time bound")
}

/// A master and three chunkservers on 127.0.0.1, 1 MiB chunks, in a fresh temp dir.
pub async fn cluster() -> (tempfile::TempDir, LocalCluster) {
    cluster_with(|_| {}).await
}

pub async fn cluster_with(
    tweak: impl FnOnce(&mut ClusterOptions),
) -> (tempfile::TempDir, LocalCluster) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut options = ClusterOptions::for_tests(dir.path());
    tweak(&mut options);
    let cluster = LocalCluster::start(options).await.expect("cluster starts");
    (dir, cluster)
}

/// Deterministic pseudo-random bytes, different per seed.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    v
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

/// Whether chunkserver `i` of `cluster` has the chunk file for `handle` on disk.
pub fn on_disk(cluster: &LocalCluster, i: usize, handle: &dfs_protocol::ChunkHandle) -> bool {
    cluster
        .chunkserver_data_dir(i)
        .map(|d| d.join("chunks").join(format!("{handle}.chunk")).exists())
        .unwrap_or(false)
}
