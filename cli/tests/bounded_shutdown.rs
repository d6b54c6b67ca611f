//! Issue 11, hole 11: `dfs chunkserver` and `dfs master` stop within a bounded time on
//! SIGTERM whatever their peers do; here a peer that asked for a lot and stopped
//! reading. Before, shutdown waited for that peer's send deadline, or for ever.

use std::time::{Duration, Instant};

use dfs_client::PutOptions;
use dfs_protocol::{ClientToMaster, Frame, PeerKind, Request};
use dfs_testkit::{
    bounded, chunk_read, cluster_with, data, free_addr, master_process, wait_until, Procs,
};

/// What the grace period and a clean stop may take together, well below the 30 s a
/// blocked send may wait for its deadline.
const STOP_WITHIN: Duration = Duration::from_secs(15);

fn sigterm(pid: u32) {
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid).expect("pid")).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
}

async fn stops_in_time(child: &mut tokio::process::Child, what: &str) {
    let pid = child.id().expect("pid");
    let asked = Instant::now();
    sigterm(pid);
    let status = tokio::time::timeout(STOP_WITHIN, child.wait())
        .await
        .unwrap_or_else(|_| panic!("{what} still running {STOP_WITHIN:?} after SIGTERM"))
        .expect("wait");
    assert!(status.success(), "{what} exited with {status}");
    eprintln!("{what} stopped {:?} after SIGTERM", asked.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunkserver_stops_in_bounded_time_with_a_peer_that_stopped_reading() {
    chunkserver_stops_with_a_reader_that_stopped(false).await;
}

/// The same with a client's read, which the chunkserver sends from the file with
/// `sendfile` on a blocking thread: that thread must let go too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunkserver_stops_in_bounded_time_with_a_client_that_stopped_reading_its_get() {
    chunkserver_stops_with_a_reader_that_stopped(true).await;
}

async fn chunkserver_stops_with_a_reader_that_stopped(stored: bool) {
    bounded(async {
        let (dir, cluster) = cluster_with(|o| {
            o.chunkservers = 0;
            o.chunk_size = 64 << 20;
            o.replication = 1;
        })
        .await;
        let master = cluster.master_addr().to_string();
        let mut procs = Procs::start(&master, cluster.secret(), dir.path(), 1, &[]).await;
        procs.wait_registered(&cluster).await;
        let c = cluster.client();
        let size = 48 << 20;
        c.put("/big", &data(size, 9)[..], PutOptions::default())
            .await
            .expect("put");
        let chunk = c.stat("/big").await.expect("stat").chunks[0].clone();

        // A peer asks for the whole chunk and never reads a byte of the answer.
        let identity = dfs_protocol::Identity::cluster_admin(cluster.secret());
        let mut conn = dfs_protocol::net::dial(
            &procs.addr(0),
            PeerKind::Client,
            &identity,
            Duration::from_secs(10),
        )
        .await
        .expect("dial");
        let id = conn.next_request_id();
        conn.send(&Frame::request(
            id,
            chunk_read(&chunk, 0, size as u64, stored),
        ))
        .await
        .expect("ask");
        // The server is busy with it (its send is blocked): it reports load 1.
        wait_until(
            Duration::from_secs(20),
            "the read to be under way",
            || async {
                c.status()
                    .await
                    .is_ok_and(|s| s.chunkservers.iter().any(|cs| cs.load >= 1))
            },
        )
        .await;
        let child = procs.child_mut(0).expect("running");
        stops_in_time(child, "dfs chunkserver").await;
        drop(conn);
        procs.kill_all().await;
        cluster.shutdown().await.expect("shutdown");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_stops_in_bounded_time_with_a_client_that_stopped_reading() {
    bounded(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let secret = dfs_protocol::ClusterSecret::generate();
        let addr = free_addr();
        let mut master = master_process(&addr, &dir.path().join("m"), &secret, &[]);
        let identity = dfs_protocol::Identity::cluster_admin(&secret);
        // Polled like `wait_until`, keeping the connection that got through.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut conn = loop {
            let limit = Duration::from_secs(5);
            match dfs_protocol::net::dial(&addr, PeerKind::Client, &identity, limit).await {
                Ok(c) => break c,
                Err(e) => {
                    assert!(Instant::now() < deadline, "the master never listened: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        // Requests whose answers are never read: once the socket buffers fill, the
        // master's send blocks.
        // The client's own send blocks once the master stops reading: the sign that
        // the master is stuck on its send.
        let mut sent = 0u32;
        let stuck = loop {
            assert!(sent < 5_000_000, "the master never stopped reading");
            let id = conn.next_request_id();
            let ask = Frame::request(id, Request::Master(ClientToMaster::Status));
            match tokio::time::timeout(Duration::from_secs(1), conn.send(&ask)).await {
                Ok(Ok(())) => sent += 1,
                Ok(Err(e)) => panic!("send failed: {e}"),
                Err(_) => break sent,
            }
        };
        assert!(stuck > 1000, "only {stuck} requests went out");
        stops_in_time(&mut master, "dfs master").await;
    })
    .await
}
