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
    let cluster = cluster_in(dir.path(), tweak).await;
    (dir, cluster)
}

/// A cluster in `dir`, which the test owns (and may share with process nodes).
pub async fn cluster_in(
    dir: &std::path::Path,
    tweak: impl FnOnce(&mut ClusterOptions),
) -> LocalCluster {
    let mut options = ClusterOptions::for_tests(dir);
    tweak(&mut options);
    LocalCluster::start(options).await.expect("cluster starts")
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

/// Ports handed out for servers the test starts later: below Linux's ephemeral range
/// (32768 and up by default), so no outgoing connection of any test takes one
/// between the check here and the server's own bind.
const SERVER_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A loopback address with a port nothing listens on now (bound, checked, released),
/// for a server started afterwards. Two tests may still pick the same one: servers
/// the kit starts as processes are restarted on another port if theirs is taken.
pub fn free_addr() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    for _ in 0..200 {
        let port = rng.random_range(SERVER_PORTS);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return format!("127.0.0.1:{port}");
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .to_string()
}

/// A loopback port for [`free_addr`]'s use by the kit.
pub(crate) fn free_port() -> u16 {
    free_addr()
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("a port")
}

/// A raw, authenticated admin connection to `cluster`'s master, for tests that
/// speak the protocol themselves (requests out of the client library's order,
/// pipelined frames).
pub async fn master_conn(cluster: &LocalCluster) -> dfs_protocol::net::TcpConn {
    dfs_protocol::net::dial(
        &cluster.master_addr().to_string(),
        dfs_protocol::PeerKind::Client,
        &dfs_protocol::Identity::cluster_admin(cluster.secret()),
        std::time::Duration::from_secs(10),
    )
    .await
    .expect("dial the master")
}
