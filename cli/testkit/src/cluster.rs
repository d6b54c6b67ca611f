//! An in-process cluster on 127.0.0.1 in a fresh temp dir: a master and chunkservers
//! as tasks of the test's runtime, each stopped and restarted on its own
//! ([`LocalCluster`]'s `stop_*`/`restart_*`), with the knobs of [`ClusterOptions`]
//! (a manual clock, a gate on the master's log).

use dfs_cli::cluster::{ClusterOptions, LocalCluster};

/// A master and three chunkservers, 1 MiB chunks, replication 3.
pub async fn cluster() -> (tempfile::TempDir, LocalCluster) {
    cluster_with(|_| {}).await
}

/// A cluster with the test defaults as changed by `tweak`. Keep the dir as long as
/// the cluster.
pub async fn cluster_with(
    tweak: impl FnOnce(&mut ClusterOptions),
) -> (tempfile::TempDir, LocalCluster) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut options = ClusterOptions::for_tests(dir.path());
    tweak(&mut options);
    let cluster = LocalCluster::start(options).await.expect("cluster starts");
    (dir, cluster)
}

/// For benches, which run outside a runtime: a multi-threaded runtime, a temp dir
/// and a cluster started in it.
pub fn runtime_cluster(
    tweak: impl FnOnce(&mut ClusterOptions),
) -> (tokio::runtime::Runtime, tempfile::TempDir, LocalCluster) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (dir, cluster) = rt.block_on(cluster_with(tweak));
    (rt, dir, cluster)
}

/// A loopback address with a port nothing listens on now (bound, learned, released).
pub fn free_addr() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .to_string()
}
