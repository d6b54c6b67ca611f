//! Hostile load on every port of a cluster of server processes: a thousand idle
//! connections, fifty slow readers and fifty slow writers each, while a real client
//! keeps working. Server memory (RSS) is measured before and during the attack.

use std::time::{Duration, Instant};

use bytes::Bytes;
use dfs_client::{Client, ClusterSecret, Identity, PutOptions};
use dfs_protocol::auth::{ops, unix_now};
use dfs_protocol::net::{dial, TcpConn};
use dfs_protocol::{ChunkHandle, ChunkToken, ChunkVersion, Frame, PeerKind, Request};
use dfs_protocol::{ChunkRequest, ClientToMaster};
use dfs_testkit::{bounded, chunk_read, data, wait_until, Procs};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const IDLE: usize = 1000;
const SLOW: usize = 50;
const LIMIT: Duration = Duration::from_secs(10);

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The attack needs about 4,500 sockets in this process: take what the hard limit
/// allows (and, as root, raise it).
fn enough_file_descriptors() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let want = 16_384;
    let have = getrlimit(Resource::Nofile);
    let max = have.maximum.map_or(want, |m| m.max(want));
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(max),
            maximum: Some(max),
        },
    );
    let now = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    assert!(
        now >= want,
        "this test needs {want} open files; the limit is {now} (raise `ulimit -n`)"
    );
}

/// Slow writers: authenticated, a chunk write announced, then a packet that never
/// finishes. On the master, half a frame after the handshake.
async fn slow_writer(
    addr: &str,
    identity: &Identity,
    secret: &ClusterSecret,
    chunkserver: bool,
) -> TcpConn {
    let mut conn = dial(addr, PeerKind::Client, identity, LIMIT)
        .await
        .expect("slow writer dials");
    if chunkserver {
        let handle = ChunkHandle::random();
        let token = ChunkToken::sign(
            &secret.token_key(),
            handle,
            ChunkVersion::FIRST,
            ops::WRITE,
            unix_now() + 600,
        );
        let id = conn.next_request_id();
        let head = Request::Chunk(ChunkRequest::WriteChunk {
            handle,
            version: ChunkVersion::FIRST,
            downstream: Vec::new(),
            token,
        });
        conn.send(&Frame::request(id, head)).await.expect("send");
    }
    // A frame prelude announcing a 1 MiB payload, then one byte of it.
    let mut half = vec![0xDF, 0x5A, 1, 1, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 2];
    half.extend_from_slice(&(1u32 << 20).to_be_bytes());
    half.push(0);
    conn.writer
        .write_all(&half)
        .await
        .expect("send half a frame");
    conn
}

/// Slow readers: authenticated, asking for data and never reading it.
async fn slow_reader(addr: &str, identity: &Identity, read: Option<Request>) -> TcpConn {
    let mut conn = dial(addr, PeerKind::Client, identity, LIMIT)
        .await
        .expect("slow reader dials");
    match read {
        Some(request) => {
            let id = conn.next_request_id();
            conn.send(&Frame::request(id, request)).await.expect("send");
        }
        None => {
            // The master: many requests whose answers are never read.
            for _ in 0..200 {
                let id = conn.next_request_id();
                let r = Frame::request(
                    id,
                    Request::Master(ClientToMaster::List { path: "/".into() }),
                );
                if conn.send(&r).await.is_err() {
                    break;
                }
            }
        }
    }
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_connections_do_not_starve_real_clients() {
    enough_file_descriptors();
    bounded(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let secret = ClusterSecret::generate();
        let master = dfs_testkit::free_addr();
        let mut master_proc = dfs_testkit::master_process(
            &master,
            &dir.path().join("master"),
            &secret,
            &["--chunk-size", "8MiB", "--safe-start", "1s"],
        );
        let mut procs = Procs::start(&master, &secret, dir.path(), 3, &[]).await;
        let admin = Identity::cluster_admin(&secret);
        let client = Client::new(master.clone(), admin.clone());
        wait_until(Duration::from_secs(30), "three chunkservers", || async {
            matches!(client.status().await, Ok(s) if s.chunkservers.iter().filter(|s| s.alive).count() == 3)
        })
        .await;
        let content = data(16 << 20, 5);
        client
            .put("/warm", &content[..], PutOptions::default())
            .await
            .expect("put");
        let mut pids = vec![("master".to_string(), master_proc.id().expect("pid"))];
        for i in 0..3 {
            pids.push((format!("chunkserver {i}"), procs.pid(i).expect("pid")));
        }
        let before: Vec<u64> = pids.iter().map(|(_, p)| rss_kib(*p)).collect();

        let chunk = client.stat("/warm").await.expect("stat").chunks[0].clone();
        let mut ports = vec![(master.clone(), false)];
        ports.extend((0..3).map(|i| (procs.addr(i), true)));
        let mut held = Vec::new();
        let mut idle = Vec::new();
        for (addr, chunkserver) in &ports {
            for _ in 0..IDLE {
                idle.push(TcpStream::connect(addr).await.expect("idle connection"));
            }
            for i in 0..SLOW {
                held.push(slow_writer(addr, &admin, &secret, *chunkserver).await);
                // Both kinds of read: a peer's, buffered and verified by the
                // chunkserver, and a client's, sent from the file by `sendfile`.
                let read = chunkserver.then(|| chunk_read(&chunk, 0, 8 << 20, i % 2 == 1));
                held.push(slow_reader(addr, &admin, read).await);
            }
        }

        // Real work goes on meanwhile, on new connections.
        let started = Instant::now();
        let fresh = Client::new(master.clone(), admin.clone());
        fresh
            .put("/during", &content[..], PutOptions::default())
            .await
            .expect("put during the attack");
        let mut back = Vec::new();
        fresh.get("/during", &mut back).await.expect("get");
        assert!(back == content, "read back whole");
        fresh.mkdir("/d", false).await.expect("mkdir");
        fresh
            .append_record("/log", Bytes::from_static(b"record"), Default::default())
            .await
            .expect("append");
        assert!(fresh.list("/").await.expect("ls").len() >= 4);
        let took = started.elapsed();
        let during: Vec<u64> = pids.iter().map(|(_, p)| rss_kib(*p)).collect();
        drop(idle);
        drop(held);
        for (i, (name, _)) in pids.iter().enumerate() {
            eprintln!(
                "{name}: RSS {} KiB before, {} KiB with {IDLE} idle + {SLOW} slow readers + {SLOW} slow writers",
                before[i], during[i]
            );
            // Each slow reader holds at most three 1 MiB packets (one read from
            // disk, one queued, one being sent); idle connections a few KiB each.
            assert!(
                during[i] < before[i] + (384 << 10),
                "{name} grew from {} to {} KiB",
                before[i],
                during[i]
            );
        }
        eprintln!("real work under attack: {took:?}");
        procs.kill_all().await;
        let _ = master_proc.start_kill();
        let _ = master_proc.wait().await;
    })
    .await
}
