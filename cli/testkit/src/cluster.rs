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

/// Ports this test binary has handed out. None is handed out twice: a server a test
/// killed keeps its port for its restart, and a server not yet bound (a process still
/// starting) must not be given it again. Before this, two chunkservers of one test
/// could get one port; the loser exited, and the check that it listened was answered
/// by the winner.
static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// A loopback address with a port nothing listens on now (bound, checked, released)
/// and never handed out before by this test binary, for a server started afterwards.
/// Another program may still take it first: servers the kit starts as processes are
/// restarted on another port if theirs is taken.
pub fn free_addr() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let port = rng.random_range(SERVER_PORTS);
        if !handed.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed.insert(port);
            return format!("127.0.0.1:{port}");
        }
    }
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    handed.insert(addr.port());
    addr.to_string()
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
