//! Damage chunk files on disk — flipped bytes in the first block, the middle, the last
//! partial block and the checksum file, truncation, deletion, old versions — and read
//! through the client: always the right bytes or a clear error, never wrong bytes; the
//! bad replica is replaced within a bounded time and fsck is healthy again.
//!
//! Clients read with `ReadStored`, which a chunkserver answers without hashing: the
//! client's own check finds the damage and its `Digest` request has the chunkserver
//! quarantine the replica. Peers copying a chunk read with `ReadChunk`, verified at
//! the source.

use std::fs::{self, OpenOptions};
use std::path::PathBuf;
use std::time::Duration;

use dfs_chunkserver::store::ChunkStore;
use dfs_cli::cluster::LocalCluster;
use dfs_client::{Client, ClientError, FileStat, PutOptions};
use dfs_protocol::{ChunkHandle, ChunkVersion};
use dfs_testkit::{bounded, cluster_with, data, wait_until, CHUNK};

/// Two full chunks and a third of 100,000 bytes: one full block and a partial one.
const SIZE: usize = 2 * CHUNK + 100_000;

fn chunk_file(cluster: &LocalCluster, server: usize, h: &ChunkHandle, ext: &str) -> PathBuf {
    cluster
        .chunkserver_data_dir(server)
        .unwrap()
        .join("chunks")
        .join(format!("{h}.{ext}"))
}

fn flip(path: &PathBuf, offset: u64) {
    let mut bytes = fs::read(path).unwrap();
    let i = usize::try_from(offset).unwrap().min(bytes.len() - 1);
    bytes[i] ^= 0x5A;
    fs::write(path, bytes).unwrap();
}

fn server_of(cluster: &LocalCluster, addr: &str) -> usize {
    cluster
        .chunkserver_addrs()
        .iter()
        .position(|a| a.to_string() == addr)
        .unwrap()
}

/// Replicas kept in the quarantine dirs of every chunkserver: the files of one
/// (its meta and chunk, or its packed record) share the stamp before the first dot.
fn quarantined(cluster: &LocalCluster) -> usize {
    (0..3)
        .map(|i| {
            let q = cluster.chunkserver_data_dir(i).unwrap().join("quarantine");
            let Ok(entries) = fs::read_dir(q) else {
                return 0;
            };
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.split_once('.').map(|(stamp, _)| stamp.to_string())
                })
                .collect::<std::collections::HashSet<_>>()
                .len()
        })
        .sum()
}

async fn read_ok(c: &Client, path: &str, want: &[u8]) {
    let mut out = Vec::new();
    c.get(path, &mut out)
        .await
        .expect("read must succeed from a good replica");
    assert!(out == want, "wrong bytes came back");
}

async fn healed(c: &Client, path: &str) {
    wait_until(
        Duration::from_secs(30),
        "fsck healthy with 3 replicas again",
        || async {
            let Ok(r) = c.fsck(path).await else {
                return false;
            };
            let Ok(stat) = c.stat(path).await else {
                return false;
            };
            r.healthy() && stat.chunks.iter().all(|ch| ch.replicas.len() == 3)
        },
    )
    .await;
}

/// A cluster with a fast scrubber, and one file on it.
async fn setup(scrub: bool) -> (tempfile::TempDir, LocalCluster, Client, Vec<u8>, FileStat) {
    let (dir, cluster) = cluster_with(|o| {
        if scrub {
            o.scrub_rate = 1 << 30;
            o.scrub_idle = Duration::ZERO;
        }
    })
    .await;
    let c = cluster.client();
    let content = data(SIZE, 42);
    c.put("/f", &content[..], PutOptions::default())
        .await
        .unwrap();
    let stat = c.stat("/f").await.unwrap();
    assert_eq!(stat.chunks.len(), 3);
    (dir, cluster, c, content, stat)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_damage_is_caught_and_repaired() {
    bounded(async {
        let (_dir, cluster, c, content, stat) = setup(true).await;
        let h: Vec<ChunkHandle> = stat.chunks.iter().map(|ch| ch.handle).collect();
        // One damaged replica per case, on different servers and chunks.
        let s = |k: usize, r: usize| server_of(&cluster, &stat.chunks[k].replicas[r]);
        flip(&chunk_file(&cluster, s(0, 0), &h[0], "chunk"), 10); // first block
        flip(&chunk_file(&cluster, s(0, 1), &h[0], "chunk"), 500_000); // middle
        flip(&chunk_file(&cluster, s(2, 0), &h[2], "chunk"), 90_000); // last, partial block
        flip(&chunk_file(&cluster, s(1, 0), &h[1], "meta"), 40); // the checksums themselves
        let trunc = OpenOptions::new()
            .write(true)
            .open(chunk_file(&cluster, s(1, 1), &h[1], "chunk"))
            .unwrap();
        trunc.set_len(300_000).unwrap();
        drop(trunc);
        fs::remove_file(chunk_file(&cluster, s(2, 1), &h[2], "chunk")).unwrap();

        // Readers get the right bytes meanwhile, whatever replica they start with.
        for _ in 0..3 {
            read_ok(&c, "/f", &content).await;
        }
        // A get reads each chunk from one replica: the scrubber finds what the
        // reads did not, and the damaged copies are kept aside for a human, not
        // served. Until then the master counts them as good, so only then can
        // fsck's health mean they were replaced.
        wait_until(
            Duration::from_secs(30),
            "every damaged replica quarantined",
            || async { quarantined(&cluster) == 6 },
        )
        .await;
        healed(&c, "/f").await;
        read_ok(&c, "/f", &content).await;
        cluster.shutdown().await.unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_meets_damage_fails_over_and_triggers_repair() {
    bounded(async {
        // No scrubber: only the read can find the damage.
        let (_dir, cluster, c, content, stat) = setup(false).await;
        let h0 = stat.chunks[0].handle;
        // A get tries a chunk's replicas in the client's read order.
        let order = dfs_client::client::read_order(&stat.chunks[0]);
        let first = server_of(&cluster, &order[0]);
        let second = server_of(&cluster, &order[1]);
        flip(&chunk_file(&cluster, first, &h0, "chunk"), 70_000);
        flip(&chunk_file(&cluster, second, &h0, "chunk"), 1_000_000);
        read_ok(&c, "/f", &content).await;
        for s in [first, second] {
            assert!(
                !chunk_file(&cluster, s, &h0, "chunk").exists(),
                "server {s} stops serving its bad copy"
            );
        }
        healed(&c, "/f").await;
        read_ok(&c, "/f", &content).await;
        cluster.shutdown().await.unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_replica_is_bad_the_read_fails_clearly() {
    bounded(async {
        let (_dir, cluster, c, _content, stat) = setup(false).await;
        let h1 = stat.chunks[1].handle;
        for i in 0..3 {
            flip(&chunk_file(&cluster, i, &h1, "chunk"), 4096);
        }
        let err = c
            .get("/f", &mut Vec::new())
            .await
            .expect_err("no good replica");
        assert!(matches!(err, ClientError::NoReplica { .. }), "{err}");
        assert!(err.to_string().contains("checksum"), "{err}");
        wait_until(
            Duration::from_secs(10),
            "fsck to report the chunk missing",
            || async {
                c.fsck("/")
                    .await
                    .map(|r| r.missing == 1 && !r.healthy())
                    .unwrap_or(false)
            },
        )
        .await;
        let r = c.fsck("/").await.unwrap();
        assert_eq!(r.problems.len(), 1);
        assert_eq!(r.problems[0].path, "/f");
        cluster.shutdown().await.unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_an_old_version_is_never_served_and_is_replaced() {
    bounded(async {
        let (_dir, mut cluster, c, content, stat) = setup(false).await;
        let h0 = stat.chunks[0].handle;
        let victim = server_of(&cluster, &stat.chunks[0].replicas[0]);
        cluster.stop_chunkserver(victim).await.unwrap();
        {
            // What a server that missed a mutation epoch would hold: same chunk, older version.
            let store =
                ChunkStore::open(cluster.chunkserver_data_dir(victim).unwrap(), Some(1 << 30))
                    .unwrap();
            store.delete(h0).unwrap();
            let mut w = store.create(h0, ChunkVersion(0)).unwrap();
            w.write(&data(CHUNK, 99)).unwrap();
            w.commit().unwrap();
        }
        cluster.restart_chunkserver(victim).await.unwrap();
        wait_until(
            Duration::from_secs(10),
            "the stale replica to be noticed",
            || async {
                match c.fsck("/f").await {
                    Ok(r) => r.stale == 1 || r.healthy(),
                    Err(_) => false,
                }
            },
        )
        .await;
        read_ok(&c, "/f", &content).await;
        // Healed means three replicas at the file's version: the old copy is gone.
        healed(&c, "/f").await;
        read_ok(&c, "/f", &content).await;
        cluster.shutdown().await.unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scrubber_finds_damage_nobody_reads() {
    bounded(async {
        let (_dir, cluster, c, content, stat) = setup(true).await;
        let h2 = stat.chunks[2].handle;
        let s = server_of(&cluster, &stat.chunks[2].replicas[2]);
        flip(&chunk_file(&cluster, s, &h2, "chunk"), 65_536 + 7);
        let quarantine = cluster.chunkserver_data_dir(s).unwrap().join("quarantine");
        let name = h2.to_string();
        wait_until(
            Duration::from_secs(20),
            "the scrubber to quarantine the copy",
            || async {
                fs::read_dir(&quarantine)
                    .map(|d| {
                        d.filter_map(|e| e.ok())
                            .any(|e| e.file_name().to_string_lossy().contains(&name))
                    })
                    .unwrap_or(false)
            },
        )
        .await;
        healed(&c, "/f").await;
        read_ok(&c, "/f", &content).await;
        cluster.shutdown().await.unwrap();
    })
    .await
}

/// The same damage to replicas packed into pack files (`--pack-below`): every kind is
/// caught, never served, repaired, and a restarted chunkserver neither serves a bad
/// copy nor loses its good ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_to_packed_replicas_is_caught_and_repaired() {
    use dfs_testkit::{corrupt_replica, has_replica, remove_replica, truncate_replica};
    bounded(async {
        let (_dir, mut cluster) = cluster_with(|o| {
            // Every chunk of the file is packed.
            o.pack_below = CHUNK as u64;
            o.scrub_rate = 1 << 30;
            o.scrub_idle = Duration::ZERO;
            o.http = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        })
        .await;
        let c = cluster.client();
        let content = data(SIZE, 43);
        c.put("/f", &content[..], PutOptions::default())
            .await
            .unwrap();
        let stat = c.stat("/f").await.unwrap();
        let h: Vec<ChunkHandle> = stat.chunks.iter().map(|ch| ch.handle).collect();
        for i in 0..3 {
            let dir = cluster.chunkserver_data_dir(i).unwrap();
            for handle in &h {
                assert!(has_replica(dir, handle));
                assert!(
                    !dfs_testkit::replica_path(dir, handle).exists(),
                    "packed, no file"
                );
            }
        }
        // Each server's pack files hold its three records, at least the file's bytes.
        for addr in cluster.chunkserver_http_addrs() {
            let addr = addr.expect("chunkserver metrics").to_string();
            let (status, m) = dfs_testkit::http_get(&addr, "/metrics").await;
            assert_eq!(status, 200);
            let pack = dfs_testkit::metric_sample(&m, "dfs_chunkserver_pack_bytes").unwrap_or(0.0);
            assert!(pack >= SIZE as f64, "pack_bytes {pack} on {addr}");
        }
        let s = |k: usize, r: usize| server_of(&cluster, &stat.chunks[k].replicas[r]);
        let dirs: Vec<PathBuf> = (0..3)
            .map(|i| cluster.chunkserver_data_dir(i).unwrap().to_path_buf())
            .collect();
        let dir = |i: usize| dirs[i].clone();
        corrupt_replica(&dir(s(0, 0)), &h[0], 10).unwrap(); // first block
        corrupt_replica(&dir(s(0, 1)), &h[0], 500_000).unwrap(); // middle
        corrupt_replica(&dir(s(2, 0)), &h[2], 90_000).unwrap(); // last, partial block
        truncate_replica(&dir(s(1, 1)), &h[1], 300_000).unwrap();
        remove_replica(&dir(s(2, 1)), &h[2]).unwrap();

        for _ in 0..3 {
            read_ok(&c, "/f", &content).await;
        }
        healed(&c, "/f").await;
        read_ok(&c, "/f", &content).await;
        // fsck sees only damage a read or the scrubber has found, so it can be
        // healthy before the scrubber reaches the last damaged record (on a loaded
        // machine it did): wait for every one to be kept aside, then for the repairs
        // that follow.
        wait_until(
            Duration::from_secs(30),
            "every damaged record kept aside",
            || async { quarantined(&cluster) >= 5 },
        )
        .await;
        healed(&c, "/f").await;

        // A restart reads the pack files back: every replica there, none damaged.
        for i in 0..3 {
            cluster.stop_chunkserver(i).await.unwrap();
            cluster.restart_chunkserver(i).await.unwrap();
        }
        healed(&c, "/f").await;
        read_ok(&c, "/f", &content).await;
        for i in 0..3 {
            for handle in &h {
                assert!(has_replica(&dir(i), handle), "server {i} holds {handle}");
            }
        }
        cluster.shutdown().await.unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_read_is_sent_as_stored_and_a_peer_read_is_verified() {
    use dfs_protocol::{
        ChunkRequest, ErrorCode, Frame, PeerKind, ProtocolError, Request, Response,
    };
    bounded(async {
        let (_dir, cluster, _c, content, stat) = setup(false).await;
        let chunk = &stat.chunks[0];
        let addr = chunk.replicas[0].clone();
        let file = chunk_file(&cluster, server_of(&cluster, &addr), &chunk.handle, "chunk");
        flip(&file, 100);
        let mut conn = dfs_protocol::net::dial(
            &addr,
            PeerKind::Client,
            &dfs_protocol::Identity::cluster_admin(cluster.secret()),
            Duration::from_secs(10),
        )
        .await
        .expect("dial the chunkserver");

        // As stored: the damaged block comes out with its stored checksum.
        let id = conn.next_request_id();
        let read = Request::Chunk(ChunkRequest::ReadStored {
            handle: chunk.handle,
            version: chunk.version,
            offset: 0,
            len: 1000,
            token: chunk.token,
        });
        conn.send(&Frame::request(id, read)).await.expect("send");
        let (response, payload) = conn.recv_response(id, "ReadStored").await.expect("data");
        let Response::ReadData {
            last,
            offset,
            checksums,
        } = response
        else {
            panic!("not data: {response:?}");
        };
        assert!(last && offset == 0 && checksums.len() == 1);
        assert_eq!(payload.len(), 64 << 10, "the whole block");
        assert_ne!(
            &payload[..],
            &content[..payload.len()],
            "the damaged bytes, as stored"
        );
        assert_eq!(
            dfs_protocol::checksum::verify_blocks(&payload, &checksums),
            Err(0),
            "for the reader to find"
        );
        assert!(file.exists(), "not hashed there, so not quarantined yet");

        // A peer's read, verified there, refuses them and quarantines the replica
        // (the client's `Digest` after a failed check: the test above).
        let verified = conn
            .call(Request::Chunk(ChunkRequest::ReadChunk {
                handle: chunk.handle,
                version: chunk.version,
                offset: 0,
                len: 1000,
                token: chunk.token,
            }))
            .await;
        assert!(
            matches!(
                verified,
                Err(ProtocolError::Remote(ErrorCode::ChecksumMismatch { .. }))
            ),
            "{verified:?}"
        );
        assert!(!file.exists(), "quarantined");
        cluster.shutdown().await.expect("shutdown");
    })
    .await
}
