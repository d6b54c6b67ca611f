//! Durability holes that only odd failure schedules reach, each shown by a test that
//! failed before its fix.

use std::sync::Arc;
use std::time::Duration;

use dfs_client::PutOptions;
use dfs_master::oplog::SyncGate;
use dfs_testkit::{bounded, cluster_with, data, on_disk, wait_until};

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

/// `dfs` as a user runs it against the master at `master`, with the cluster secret.
fn dfs(master: &str, secret: &dfs_client::ClusterSecret) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_dfs"));
    c.env("DFS_MASTER", master)
        .env("DFS_SECRET", secret.encode())
        .env_remove("DFS_KEY")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    c
}

fn signal(pid: u32, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid).expect("pid")).expect("pid");
    rustix::process::kill_process(pid, sig).expect("signal");
}

/// Issue 11, hole 10 (get): `dfs get` writes to an unguessable temp name beside the
/// target, created exclusively, and leaves nothing behind when interrupted mid-way,
/// here by Ctrl-C while every chunkserver is frozen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_get_leaves_no_partial_file() {
    use rustix::process::Signal;
    bounded(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let cluster = dfs_testkit::cluster_in(dir.path(), |o| o.chunkservers = 0).await;
        let master = cluster.master_addr().to_string();
        let mut procs =
            dfs_testkit::Procs::start(&master, cluster.secret(), dir.path(), 3, &[]).await;
        procs.wait_registered(&cluster).await;
        let c = cluster.client();
        c.put("/big", &data(4 << 20, 2)[..], PutOptions::default())
            .await
            .expect("put");

        // Frozen chunkservers: the get creates its temp file, then waits for data.
        let pids: Vec<u32> = (0..3).filter_map(|i| procs.pid(i)).collect();
        for &p in &pids {
            signal(p, Signal::STOP);
        }
        let out_dir = dir.path().join("out");
        std::fs::create_dir_all(&out_dir).expect("out dir");
        let get = dfs(&master, cluster.secret())
            .args(["get", "/big"])
            .arg(out_dir.join("big"))
            .spawn()
            .expect("dfs get");
        let partial = || {
            std::fs::read_dir(&out_dir)
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| n.starts_with(".big.dfs-partial-"))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        };
        wait_until(Duration::from_secs(20), "the temp file", || {
            let found = !partial().is_empty();
            async move { found }
        })
        .await;
        let name = partial().remove(0);
        let suffix = name.trim_start_matches(".big.dfs-partial-");
        assert!(
            suffix.len() == 32 && suffix.chars().all(|c| c.is_ascii_hexdigit()),
            "an unguessable temp name: {name}"
        );
        signal(get.id().expect("pid"), Signal::INT);
        let out = tokio::time::timeout(Duration::from_secs(20), get.wait_with_output())
            .await
            .expect("dfs get stops on Ctrl-C")
            .expect("wait");
        for &p in &pids {
            signal(p, Signal::CONT);
        }
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("interrupted"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(partial().is_empty(), "no partial file left behind");
        assert!(!out_dir.join("big").exists(), "no target either");

        // Thawed, the same get completes.
        let out = dfs(&master, cluster.secret())
            .args(["get", "/big"])
            .arg(out_dir.join("big"))
            .output()
            .await
            .expect("dfs get");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(std::fs::read(out_dir.join("big")).expect("read") == data(4 << 20, 2));
        assert!(partial().is_empty());
        procs.kill_all().await;
        cluster.shutdown().await.expect("shutdown");
    })
    .await
}

/// Bytes process `pid` has read so far (`/proc/PID/io`, `rchar`).
fn read_so_far(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("rchar: ")
                    .and_then(|v| v.trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

/// Issue 11, hole 10 (put): a local file that changes while `dfs put` reads it
/// fails the put, and nothing is stored: before, a mix of old and new bytes was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_changing_during_put_fails_it_and_stores_nothing() {
    bounded(async {
        let (dir, cluster) = cluster_with(|_| {}).await;
        let local = dir.path().join("growing.bin");
        std::fs::write(&local, data(48 << 20, 3)).expect("write");
        let put = dfs(&cluster.master_addr().to_string(), cluster.secret())
            .arg("put")
            .arg(&local)
            .arg("/growing.bin")
            .spawn()
            .expect("dfs put");
        let pid = put.id().expect("pid");
        // Once the put is well into the file (and far from its end), the file grows.
        wait_until(Duration::from_secs(30), "the put to read 4 MiB", || {
            let n = read_so_far(pid);
            async move { n >= 4 << 20 }
        })
        .await;
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&local)
                .expect("open");
            f.write_all(b"written while the put was reading")
                .expect("append");
        }
        let out = tokio::time::timeout(Duration::from_secs(120), put.wait_with_output())
            .await
            .expect("the put ends")
            .expect("wait");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "a changed file must not be stored");
        assert!(err.contains("changed while it was being read"), "{err}");
        let c = cluster.client();
        assert!(
            matches!(
                c.stat("/growing.bin").await,
                Err(dfs_client::ClientError::Remote(
                    dfs_client::ErrorCode::NotFound { .. }
                ))
            ),
            "nothing visible"
        );
        cluster.shutdown().await.expect("shutdown");
    })
    .await
}

/// Replica addresses of `path`'s first chunk, as the master reports them, and its version.
async fn first_chunk(c: &dfs_client::Client, path: &str) -> (dfs_protocol::ChunkVersion, usize) {
    match c.stat(path).await {
        Ok(s) => s
            .chunks
            .first()
            .map(|ch| (ch.version, ch.replicas.len()))
            .unwrap_or((dfs_protocol::ChunkVersion(0), 0)),
        Err(_) => (dfs_protocol::ChunkVersion(0), 0),
    }
}

/// Issue 11, hole 4: the master crashed after a lease grant moved every replica to a
/// new version and before it logged the grant. The first replica to register again
/// is adopted at the new version; the others, reporting the same version later, must
/// join it, not be called off-chain and deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_of_an_adopted_version_is_kept() {
    bounded(async {
        let (_dir, mut cluster) = cluster_with(|o| {
            o.safe_start = Duration::from_millis(300);
        })
        .await;
        let c = cluster.client();
        let body = data(3000, 4);
        c.put("/log", &body[..], PutOptions::default())
            .await
            .expect("put");
        let (v1, _) = first_chunk(&c, "/log").await;
        let handle = c.stat("/log").await.expect("stat").chunks[0].handle;

        // What the lost grant left: every replica one version ahead of the log.
        for i in 0..3 {
            cluster.stop_chunkserver(i).await.expect("stop");
        }
        cluster.stop_master().await.expect("stop master");
        let v2 = dfs_protocol::ChunkVersion(v1.0 + 1);
        for i in 0..3 {
            let dir = cluster.chunkserver_data_dir(i).expect("dir").to_path_buf();
            let store = dfs_chunkserver::store::ChunkStore::open(&dir, None).expect("store");
            store.bump(handle, Some(v1), v2).expect("bump");
        }
        cluster.restart_master().await.expect("master");
        cluster.restart_chunkserver(0).await.expect("cs 0");
        wait_until(
            Duration::from_secs(30),
            "the new version adopted",
            || async { first_chunk(&c, "/log").await.0 == v2 },
        )
        .await;
        cluster.restart_chunkserver(1).await.expect("cs 1");
        cluster.restart_chunkserver(2).await.expect("cs 2");
        wait_until(
            Duration::from_secs(30),
            "all three replicas current",
            || async { first_chunk(&c, "/log").await == (v2, 3) },
        )
        .await;
        // And they stay: no deletion order comes for them.
        let beat = cluster.options().heartbeat;
        for _ in 0..WATCHED_BEATS {
            tokio::time::sleep(beat).await;
            assert_eq!(first_chunk(&c, "/log").await, (v2, 3));
            assert!((0..3).all(|i| on_disk(&cluster, i, &handle)));
        }
        let mut back = Vec::new();
        c.get("/log", &mut back).await.expect("get");
        assert_eq!(back, body);
        cluster.shutdown().await.expect("shutdown");
    })
    .await
}

/// Writes `body` as chunk `alloc` through the chain it names, as the client library
/// does, and waits for the head's confirmation.
async fn write_chain(
    alloc: &dfs_protocol::ChunkAllocation,
    chain: &[String],
    identity: &dfs_protocol::Identity,
    body: &[u8],
) {
    use dfs_protocol::{ChunkRequest, Frame, PeerKind, Request, Response};
    let limit = Duration::from_secs(10);
    let mut conn = dfs_protocol::net::dial(&chain[0], PeerKind::Client, identity, limit)
        .await
        .expect("dial the head");
    let id = conn.next_request_id();
    let open = Frame::request(
        id,
        Request::Chunk(ChunkRequest::WriteChunk {
            handle: alloc.handle,
            version: alloc.version,
            downstream: chain[1..].to_vec(),
            token: alloc.token,
        }),
    );
    conn.send(&open).await.expect("open");
    let packet = Frame::request(id, Request::Chunk(ChunkRequest::WritePacket { last: true }))
        .with_payload(bytes::Bytes::copy_from_slice(body));
    conn.send(&packet).await.expect("packet");
    let (reply, _) = conn.recv_response(id, "WriteChunk").await.expect("written");
    assert!(matches!(reply, Response::ChunkWritten { .. }), "{reply:?}");
}

/// Issue 11, hole 5: a put that failed over to a new chain leaves a whole replica at
/// the old version on a live chunkserver (here: the head it blamed). At commit that
/// replica is stale and deleted, so `fsck` is healthy again within heartbeats, not
/// only once that server happens to register again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_over_put_leaves_no_stale_replica_behind() {
    use dfs_protocol::{ClientToMaster, Request, Response};
    bounded(async {
        let (_dir, cluster) = cluster_with(|o| {
            o.chunkservers = 4;
            o.safe_start = Duration::from_millis(200);
        })
        .await;
        let c = cluster.client();
        wait_until(Duration::from_secs(20), "safe mode to end", || async {
            matches!(c.status().await, Ok(s) if !s.safe_mode)
        })
        .await;
        let identity = dfs_protocol::Identity::cluster_admin(cluster.secret());
        let mut master = dfs_testkit::master_conn(&cluster).await;
        let mut call =
            async |r: ClientToMaster| master.call(Request::Master(r)).await.expect("call");
        let Response::PutStarted { upload, .. } = call(ClientToMaster::BeginPut {
            path: "/f".into(),
            replication: None,
            overwrite: false,
        })
        .await
        else {
            panic!("no upload")
        };
        let Response::ChunkAllocated(first) = call(ClientToMaster::AllocateChunk { upload }).await
        else {
            panic!("no allocation")
        };
        let body = data(5000, 6);
        // Only the head got the whole chunk; the client blamed it and failed over.
        let head = first.replicas[0].clone();
        write_chain(&first, &first.replicas[..1], &identity, &body).await;
        let Response::ChunkAllocated(second) = call(ClientToMaster::RetryChunk {
            upload,
            handle: first.handle,
            failed: vec![head.clone()],
        })
        .await
        else {
            panic!("no new chain")
        };
        assert!(second.version > first.version && !second.replicas.contains(&head));
        write_chain(&second, &second.replicas, &identity, &body).await;
        // The head has reported its replica before the commit.
        wait_until(
            Duration::from_secs(20),
            "the head to report its replica",
            || async {
                c.status().await.is_ok_and(|s| {
                    s.chunkservers
                        .iter()
                        .any(|cs| cs.addr == head && cs.chunks == 1)
                })
            },
        )
        .await;
        let committed = call(ClientToMaster::CommitPut {
            upload,
            chunks: vec![dfs_protocol::CommittedChunk {
                handle: first.handle,
                size: body.len() as u64,
            }],
        })
        .await;
        assert!(matches!(committed, Response::Ok), "{committed:?}");

        let head_index = cluster
            .chunkserver_addrs()
            .iter()
            .position(|a| a.to_string() == head)
            .expect("head index");
        wait_until(
            Duration::from_secs(20),
            "fsck healthy and the old replica gone",
            || async {
                let healthy = c
                    .fsck("/")
                    .await
                    .is_ok_and(|r| r.stale == 0 && r.problems.is_empty());
                healthy && !on_disk(&cluster, head_index, &first.handle)
            },
        )
        .await;
        let mut back = Vec::new();
        c.get("/f", &mut back).await.expect("get");
        assert_eq!(back, body);
        cluster.shutdown().await.expect("shutdown");
    })
    .await
}

/// Issue 11, hole 2: a file being appended to loses a replica of its open chunk. The
/// lease that follows is granted on fresh replicas too (filled from the primary), so
/// the chunk is back at its replication while it is still open and appended to;
/// before, it stayed on the replicas left for as long as the file was busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_chunk_that_loses_a_replica_is_refilled_while_open() {
    heal_open_chunk(4, false).await;
}

/// Issue 11, hole 2: with no spare server when the replica is lost, the lease goes
/// to the two left; once a server is back (its stale copy deleted), the master
/// refills the open chunk while its lease runs, instead of when it lapses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_chunk_is_refilled_once_a_server_is_free_again() {
    heal_open_chunk(3, true).await;
}

async fn heal_open_chunk(chunkservers: usize, bring_back: bool) {
    use dfs_client::AppendOptions;
    bounded(async {
        let (_dir, mut cluster) = cluster_with(|o| {
            o.chunkservers = chunkservers;
            o.chunk_size = 64 << 20;
            o.safe_start = Duration::from_millis(200);
        })
        .await;
        let c = cluster.client();
        wait_until(Duration::from_secs(20), "safe mode to end", || async {
            matches!(c.status().await, Ok(s) if !s.safe_mode && s.chunkservers.len() == chunkservers)
        })
        .await;
        let record = |i: u32| bytes::Bytes::from(format!("record {i:06} {}\n", "x".repeat(200)));
        let mut acked = Vec::new();
        for i in 0..20 {
            c.append_record("/log", record(i), AppendOptions::default())
                .await
                .expect("append");
            acked.push(i);
        }
        let chunk = c.stat("/log").await.expect("stat").chunks[0].clone();
        assert!(chunk.open);
        assert_eq!(chunk.replicas.len(), 3);
        let primary = chunk.primary.clone().expect("a primary");
        let addrs: Vec<String> = cluster
            .chunkserver_addrs()
            .iter()
            .map(|a| a.to_string())
            .collect();
        let lost = chunk
            .replicas
            .iter()
            .find(|a| **a != primary)
            .cloned()
            .expect("a secondary");
        let lost_index = addrs.iter().position(|a| *a == lost).expect("index");
        cluster.stop_chunkserver(lost_index).await.expect("stop");
        if bring_back {
            // The lease moves to the two replicas left: no other server to add.
            c.append_record("/log", record(20), AppendOptions::default())
                .await
                .expect("append");
            acked.push(20);
            let now = c.stat("/log").await.expect("stat").chunks[0].clone();
            assert_eq!(now.replicas.len(), 2, "{:?}", now.replicas);
            cluster.restart_chunkserver(lost_index).await.expect("restart");
        }

        // The file stays busy: appends go on while we wait for the chunk to heal.
        let mut i = 21;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let healed = loop {
            c.append_record("/log", record(i), AppendOptions::default())
                .await
                .expect("append while a replica is down");
            acked.push(i);
            i += 1;
            let now = c.stat("/log").await.expect("stat").chunks[0].clone();
            // Back at three, on a server that did not hold this version before.
            if now.replicas.len() == 3 && now.version > chunk.version {
                break now;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the open chunk stayed on {:?}",
                now.replicas
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(healed.open, "healed while still open");
        for _ in 0..5 {
            c.append_record("/log", record(i), AppendOptions::default())
                .await
                .expect("append");
            acked.push(i);
            i += 1;
        }

        // The fresh replica holds every acknowledged record: read it alone.
        let fresh: Vec<String> = if bring_back {
            vec![lost.clone()]
        } else {
            healed
                .replicas
                .iter()
                .filter(|a| !chunk.replicas.contains(a))
                .cloned()
                .collect()
        };
        assert_eq!(fresh.len(), 1, "{:?} vs {:?}", healed.replicas, chunk.replicas);
        assert!(healed.replicas.contains(&fresh[0]));
        for (j, a) in addrs.iter().enumerate() {
            if *a != fresh[0] {
                cluster.stop_chunkserver(j).await.expect("stop");
            }
        }
        let mut back = Vec::new();
        c.get("/log", &mut back).await.expect("get from the fresh replica");
        let text = String::from_utf8(back).expect("text");
        for i in acked {
            assert!(
                text.contains(&format!("record {i:06} ")),
                "acknowledged record {i} missing"
            );
        }
        cluster.shutdown().await.expect("shutdown");
    })
    .await
}

/// Upkeep rounds (one a second) watched while nothing may happen.
const WATCHED_UPKEEPS: u32 = 3;

/// Issue 11, hole 9: trash purge and upload expiry go by the master's monotonic
/// clock. A wall clock stepped forward by weeks while the master runs purges nothing
/// and aborts no put in flight; the same time passing on the monotonic clock does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wall_clock_step_purges_no_trash_and_aborts_no_put() {
    use dfs_protocol::{ClientToMaster, Request, Response};
    bounded(async {
        let clock = dfs_master::clock::Clock::manual(1_700_000_000);
        let (_dir, cluster) = cluster_with(|o| {
            o.clock = Some(clock.clone());
            o.safe_start = Duration::ZERO;
            o.trash_retention = Duration::from_secs(3600);
        })
        .await;
        let c = cluster.client();
        c.put("/old", &data(1000, 7)[..], PutOptions::default())
            .await
            .expect("put");
        c.remove("/old", false, false).await.expect("rm to trash");
        // A put in flight: begun, not committed.
        let mut master = dfs_testkit::master_conn(&cluster).await;
        let begun = master
            .call(Request::Master(ClientToMaster::BeginPut {
                path: "/new".into(),
                replication: None,
                overwrite: false,
            }))
            .await
            .expect("begin");
        let Response::PutStarted { upload, .. } = begun else {
            panic!("{begun:?}")
        };

        clock.step_wall(60 * 86_400);
        for _ in 0..WATCHED_UPKEEPS {
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert_eq!(c.trash_list().await.expect("trash").len(), 1, "trash kept");
        }
        let commit = master
            .call(Request::Master(ClientToMaster::CommitPut {
                upload,
                chunks: Vec::new(),
            }))
            .await;
        assert!(
            matches!(commit, Ok(Response::Ok)),
            "the put in flight lives: {commit:?}"
        );

        // An hour passing for real (on the monotonic clock) does purge.
        clock.advance(Duration::from_secs(3601));
        wait_until(Duration::from_secs(20), "the trash purged", || async {
            c.trash_list().await.is_ok_and(|t| t.is_empty())
        })
        .await;
        cluster.shutdown().await.expect("shutdown");
    })
    .await
}

/// Issue 11, hole 9: liveness reads the master's clock, so a test can pause it and
/// move it: a stopped chunkserver stays alive while the clock stands still, and is
/// dead as soon as the clock passes `dead_after`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_follows_a_clock_the_test_drives() {
    bounded(async {
        let clock = dfs_master::clock::Clock::manual(1_700_000_000);
        let (_dir, mut cluster) = cluster_with(|o| {
            o.clock = Some(clock.clone());
            o.safe_start = Duration::ZERO;
            o.dead_after = Duration::from_secs(10);
        })
        .await;
        let c = cluster.client();
        let gone = cluster.chunkserver_addrs()[0].to_string();
        cluster.stop_chunkserver(0).await.expect("stop");
        let alive = |s: &dfs_protocol::ClusterStatus, addr: &str| {
            s.chunkservers.iter().any(|cs| cs.addr == addr && cs.alive)
        };
        // Stopped, but no time passes: still alive, for as long as the test likes.
        for _ in 0..WATCHED_BEATS {
            tokio::time::sleep(cluster.options().heartbeat).await;
            assert!(alive(&c.status().await.expect("status"), &gone));
        }
        clock.advance(Duration::from_secs(11));
        wait_until(
            Duration::from_secs(10),
            "the others to heartbeat again",
            || async {
                c.status().await.is_ok_and(|s| {
                    s.chunkservers
                        .iter()
                        .filter(|cs| cs.addr != gone)
                        .all(|cs| cs.alive)
                })
            },
        )
        .await;
        let s = c.status().await.expect("status");
        assert!(!alive(&s, &gone), "dead once the clock passed dead_after");
        cluster.shutdown().await.expect("shutdown");
    })
    .await
}

/// Issue 11, hole 9: the master logs clock floors, so a wall clock stepped back
/// across a restart never takes file times back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wall_clock_stepped_back_across_a_restart_keeps_times_monotonic() {
    bounded(async {
        let clock = dfs_master::clock::Clock::manual(1_700_000_000);
        let (_dir, mut cluster) = cluster_with(|o| {
            o.clock = Some(clock.clone());
            o.safe_start = Duration::ZERO;
        })
        .await;
        let c = cluster.client();
        c.put("/before", &data(10, 1)[..], PutOptions::default())
            .await
            .expect("put");
        let before = c.stat("/before").await.expect("stat").mtime;
        clock.step_wall(-30 * 86_400);
        cluster.restart_master().await.expect("restart");
        wait_until(Duration::from_secs(20), "the chunkservers back", || async {
            c.status()
                .await
                .is_ok_and(|s| s.chunkservers.iter().filter(|cs| cs.alive).count() == 3)
        })
        .await;
        c.put("/after", &data(10, 2)[..], PutOptions::default())
            .await
            .expect("put");
        let after = c.stat("/after").await.expect("stat").mtime;
        assert!(after >= before, "{after} < {before}");
        cluster.shutdown().await.expect("shutdown");
    })
    .await
}

/// Issue 11, hole 2: a client that cannot reach the primary (here: partitioned from
/// it, while the primary serves everyone else) blames no replica. The master hands
/// the lease to another replica of the full chain; the primary is neither dropped
/// nor deleted, and the append goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cut_off_from_the_primary_blames_no_replica() {
    use dfs_client::{AppendOptions, Client, ClientOptions, Routes};
    use dfs_testkit::{Direction, FaultProxy};
    bounded(async {
        let (_dir, cluster) = cluster_with(|o| {
            o.safe_start = Duration::from_millis(200);
        })
        .await;
        let c = cluster.client();
        let record = |s: &str| bytes::Bytes::from(s.to_string());
        c.append_record("/log", record("first\n"), AppendOptions::default())
            .await
            .expect("append");
        let before = c.stat("/log").await.expect("stat").chunks[0].clone();
        let primary = before.primary.clone().expect("a primary");

        let proxy = FaultProxy::start(&primary).await;
        proxy.partition(Direction::Both);
        let options = ClientOptions {
            connect_timeout: Duration::from_secs(1),
            io_timeout: Duration::from_secs(2),
            routes: Routes::new([(primary.clone(), proxy.addr().to_string())]),
            ..ClientOptions::default()
        };
        let cut_off = Client::with_options(
            cluster.master_addr().to_string(),
            dfs_protocol::Identity::cluster_admin(cluster.secret()),
            options,
        );
        cut_off
            .append_record("/log", record("second\n"), AppendOptions::default())
            .await
            .expect("the append goes through another primary");

        let after = c.stat("/log").await.expect("stat").chunks[0].clone();
        assert_eq!(after.replicas.len(), 3, "{:?}", after.replicas);
        assert!(
            after.replicas.contains(&primary),
            "the old primary stays on the chain"
        );
        assert_ne!(after.primary.as_deref(), Some(primary.as_str()));
        let index = cluster
            .chunkserver_addrs()
            .iter()
            .position(|a| a.to_string() == primary)
            .expect("index");
        for _ in 0..WATCHED_BEATS {
            tokio::time::sleep(cluster.options().heartbeat).await;
            assert!(
                on_disk(&cluster, index, &before.handle),
                "the old primary's replica stays"
            );
        }
        let mut back = Vec::new();
        c.get("/log", &mut back).await.expect("get");
        assert_eq!(back, b"first\nsecond\n");
        proxy.stop().await;
        cluster.shutdown().await.expect("shutdown");
    })
    .await
}

/// Issue 11, hole 1: a failed operation-log write is fatal: the mutation is not
/// acknowledged, and the master stops instead of serving a state it cannot make
/// durable. Restarted, it holds everything acknowledged and takes mutations again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_log_write_stops_the_master_and_loses_nothing_acknowledged() {
    bounded(async {
        let gate = Arc::new(SyncGate::default());
        let (_dir, mut cluster) = cluster_with(|o| {
            o.sync_gate = Some(gate.clone());
        })
        .await;
        let c = cluster.client();
        c.mkdir("/kept", false).await.expect("mkdir");
        gate.fail_writes();
        assert!(
            c.mkdir("/never", false).await.is_err(),
            "a mutation the log could not take is not acknowledged"
        );
        // The master stopped on its own: it ends with the log failure.
        let stopped = tokio::time::timeout(Duration::from_secs(30), cluster.stop_master())
            .await
            .expect("the master stops");
        let err = stopped.expect_err("the master reports the failure");
        assert!(format!("{err:#}").contains("operation log"), "{err:#}");

        let mut o = cluster.options().clone();
        o.sync_gate = None;
        *cluster.options_mut() = o;
        cluster.restart_master().await.expect("restart");
        wait_until(Duration::from_secs(20), "the restarted master", || async {
            c.status().await.is_ok()
        })
        .await;
        assert!(c.stat("/kept").await.is_ok(), "acknowledged: kept");
        // `/never` was answered with an error, so its outcome is unknown to the
        // client (as after a timeout): either is right. The restarted master's store
        // and log agree, and it takes mutations again.
        c.mkdir("/after", false)
            .await
            .expect("mkdir after the restart");
        cluster.shutdown().await.expect("shutdown");
    })
    .await
}
