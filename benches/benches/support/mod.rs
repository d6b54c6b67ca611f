//! What the cluster benches share: a runtime and a real loopback cluster in a temp dir.

use dfs_cli::cluster::{ClusterOptions, LocalCluster};

/// A multi-threaded runtime, a temp dir, and a cluster started in it with the
/// test-sized defaults as changed by `tweak`. Keep the dir alive as long as the cluster.
pub fn start(
    tweak: impl FnOnce(&mut ClusterOptions),
) -> (tokio::runtime::Runtime, tempfile::TempDir, LocalCluster) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut options = ClusterOptions::for_tests(dir.path());
    tweak(&mut options);
    let cluster = rt.block_on(LocalCluster::start(options)).expect("cluster");
    (rt, dir, cluster)
}
