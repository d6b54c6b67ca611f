//! Record append: concurrent appenders (client instances, and separate `dfs`
//! processes) never lose, tear or interleave a record; a chunkserver SIGKILLed in
//! the middle loses no acknowledged record; `dfs tail -f` follows a growing file.
//!
//! Records are self-describing (magic, writer, sequence number, length, and a blake3
//! of all that and the payload), so the file can be parsed back: any torn or
//! interleaved record, or padding, breaks the parse.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dfs_cli::cluster::ClusterOptions;
use dfs_client::{AppendOptions, Client};
use dfs_testkit::{bounded, data, wait_until, Procs};
use rand::{Rng, SeedableRng};

const MAGIC: u32 = 0xA99E_4D01;
const HEAD: usize = 16;
const TAIL: usize = 8;
/// Chunk size of these tests: a quarter of it (64 KiB) is the largest record, and
/// 8 x 200 records of up to that cross a chunk boundary every few records.
const CHUNK_SIZE: u64 = 256 << 10;
const WRITERS: u32 = 8;
const RECORDS: u32 = 200;

fn record(writer: u32, seq: u32, len: usize) -> Bytes {
    let mut r = Vec::with_capacity(len);
    r.extend_from_slice(&MAGIC.to_le_bytes());
    r.extend_from_slice(&writer.to_le_bytes());
    r.extend_from_slice(&seq.to_le_bytes());
    r.extend_from_slice(&(len as u32).to_le_bytes());
    r.extend(data(
        len - HEAD - TAIL,
        u64::from(writer) << 32 | u64::from(seq),
    ));
    let sum = blake3::hash(&r);
    r.extend_from_slice(&sum.as_bytes()[..TAIL]);
    Bytes::from(r)
}

/// The sizes writer `w` uses: random, from the smallest record up to `max`.
fn sizes(w: u32, n: u32, max: usize) -> Vec<usize> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(u64::from(w) + 1000);
    (0..n)
        .map(|_| rng.random_range(HEAD + TAIL..=max))
        .collect()
}

/// Every record of the file in order, as (writer, seq, offset); fails on anything
/// that is not a whole, intact record.
fn parse(file: &[u8]) -> Vec<(u32, u32, u64)> {
    let mut out = Vec::new();
    let mut at = 0usize;
    let word = |i: usize| u32::from_le_bytes(file[i..i + 4].try_into().expect("4 bytes"));
    while at < file.len() {
        assert!(file.len() - at >= HEAD + TAIL, "short tail at {at}");
        assert_eq!(
            word(at),
            MAGIC,
            "no record starts at {at}: torn, interleaved or padded"
        );
        let len = word(at + 12) as usize;
        assert!(
            len >= HEAD + TAIL && at + len <= file.len(),
            "bad length at {at}"
        );
        let body = &file[at..at + len - TAIL];
        assert_eq!(
            &blake3::hash(body).as_bytes()[..TAIL],
            &file[at + len - TAIL..at + len],
            "record at {at} is damaged"
        );
        out.push((word(at + 4), word(at + 8), at as u64));
        at += len;
    }
    out
}

/// Checks what every run must show: each acknowledged record present and intact
/// (at its acknowledged offset when known), each writer's records in its order
/// (first appearances), and exactly once unless `duplicates_allowed`.
fn check(
    parsed: &[(u32, u32, u64)],
    acked: &HashMap<(u32, u32), Option<u64>>,
    duplicates_allowed: bool,
) {
    let mut seen: HashMap<(u32, u32), Vec<u64>> = HashMap::new();
    for (w, s, at) in parsed {
        seen.entry((*w, *s)).or_default().push(*at);
    }
    for (key, offset) in acked {
        let at = seen
            .get(key)
            .unwrap_or_else(|| panic!("acknowledged record {key:?} lost"));
        if let Some(o) = offset {
            assert!(
                at.contains(o),
                "record {key:?} not at its acknowledged offset {o}"
            );
        }
        if !duplicates_allowed {
            assert_eq!(at.len(), 1, "record {key:?} appears {} times", at.len());
        }
    }
    let mut last: HashMap<u32, u32> = HashMap::new();
    let mut first = std::collections::HashSet::new();
    for (w, s, _) in parsed {
        if first.insert((*w, *s)) {
            if let Some(prev) = last.insert(*w, *s) {
                assert!(prev < *s, "writer {w}: record {s} after {prev}");
            }
        }
    }
}

async fn read_all(c: &Client, path: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let n = c.get(path, &mut out).await.expect("get");
    assert_eq!(n, out.len() as u64);
    let size = c.stat(path).await.expect("stat").size;
    assert_eq!(size, out.len() as u64, "stat size equals what get returns");
    out
}

/// `WRITERS` client instances append `RECORDS` records each to `path`; returns
/// what was acknowledged, with offsets. `progress` counts acknowledged records.
async fn appenders(
    master: &str,
    identity: &dfs_client::Identity,
    path: &str,
    max: usize,
    progress: Arc<AtomicUsize>,
) -> HashMap<(u32, u32), Option<u64>> {
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let client = Client::new(master, identity.clone());
        let path = path.to_string();
        let progress = progress.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for (s, len) in sizes(w, RECORDS, max).into_iter().enumerate() {
                let s = s as u32;
                let at = client
                    .append_record(&path, record(w, s, len), AppendOptions::default())
                    .await
                    .unwrap_or_else(|e| panic!("writer {w} record {s}: {e}"));
                acked.push(((w, s), Some(at)));
                progress.fetch_add(1, Ordering::Relaxed);
            }
            acked
        }));
    }
    let mut acked = HashMap::new();
    for t in tasks {
        acked.extend(t.await.expect("appender task"));
    }
    acked
}

/// Starts the appenders on `/log` and returns once a third of the records are in.
async fn appenders_a_third_done(
    master: &str,
    identity: &dfs_client::Identity,
    max: usize,
) -> tokio::task::JoinHandle<HashMap<(u32, u32), Option<u64>>> {
    let progress = Arc::new(AtomicUsize::new(0));
    let run = tokio::spawn({
        let (master, progress, identity) = (master.to_string(), progress.clone(), identity.clone());
        async move { appenders(&master, &identity, "/log", max, progress).await }
    });
    let third = (WRITERS * RECORDS / 3) as usize;
    wait_until(Duration::from_secs(60), "a third of the records", || {
        let done = progress.load(Ordering::Relaxed);
        async move { done >= third }
    })
    .await;
    run
}

fn small_chunks(o: &mut ClusterOptions) {
    o.chunk_size = CHUNK_SIZE;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appenders_land_every_record_exactly_once() {
    bounded(async {
        let (_dir, cluster) = dfs_testkit::cluster_with(small_chunks).await;
        let c = cluster.client();
        let max = (CHUNK_SIZE / 4) as usize;
        assert_eq!(
            c.max_append("/log", AppendOptions::default())
                .await
                .expect("max"),
            max as u64
        );
        let acked = appenders(
            &cluster.master_addr().to_string(),
            &dfs_client::Identity::cluster_admin(cluster.secret()),
            "/log",
            max,
            Arc::new(AtomicUsize::new(0)),
        )
        .await;
        assert_eq!(acked.len(), (WRITERS * RECORDS) as usize);
        let file = read_all(&c, "/log").await;
        let parsed = parse(&file);
        assert_eq!(parsed.len(), acked.len(), "no record twice, none missing");
        check(&parsed, &acked, false);
        let stat = c.stat("/log").await.expect("stat");
        assert!(
            stat.chunks.len() >= 20,
            "crossed many chunk boundaries: {}",
            stat.chunks.len()
        );
        assert!(stat.chunks.iter().all(|ch| ch.size <= CHUNK_SIZE));
        // A record over the limit is refused, and nothing lands.
        let err = c
            .append_record(
                "/log",
                Bytes::from(vec![1u8; max + 1]),
                AppendOptions::default(),
            )
            .await
            .expect_err("too large");
        assert!(err.to_string().contains("max append"), "{err}");
        assert_eq!(read_all(&c, "/log").await.len(), file.len());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn separate_dfs_processes_append_concurrently() {
    bounded(async {
        let (dir, cluster) = dfs_testkit::cluster_with(small_chunks).await;
        let master = cluster.master_addr().to_string();
        let max = (CHUNK_SIZE / 4) as usize;
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let (master, dir) = (master.clone(), dir.path().to_path_buf());
            let secret = cluster.secret().encode();
            tasks.push(tokio::task::spawn_blocking(move || {
                let local = dir.join(format!("record-{w}"));
                for (s, len) in sizes(w, RECORDS, max).into_iter().enumerate() {
                    std::fs::write(&local, record(w, s as u32, len)).expect("write record");
                    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dfs"))
                        .env("DFS_SECRET", &secret)
                        .args(["--master", &master, "append"])
                        .arg(&local)
                        .arg("/shared.log")
                        .output()
                        .expect("run dfs append");
                    assert!(
                        out.status.success(),
                        "dfs append: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }));
        }
        for t in tasks {
            t.await.expect("appender process loop");
        }
        let acked = (0..WRITERS)
            .flat_map(|w| (0..RECORDS).map(move |s| ((w, s), None)))
            .collect();
        let parsed = parse(&read_all(&cluster.client(), "/shared.log").await);
        assert_eq!(parsed.len(), (WRITERS * RECORDS) as usize);
        check(&parsed, &acked, false);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chunkserver_killed_midway_loses_no_acknowledged_record() {
    bounded(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let cluster = dfs_testkit::cluster_in(dir.path(), |o| {
            o.chunkservers = 0;
            o.chunk_size = CHUNK_SIZE;
            o.dead_after = Duration::from_secs(2);
            o.safe_start = Duration::from_millis(500);
            o.lease = Duration::from_secs(2);
        })
        .await;
        let master = cluster.master_addr().to_string();
        let mut procs = Procs::start(&master, cluster.secret(), dir.path(), 4, &[]).await;
        procs.wait_registered(&cluster).await;
        let c = cluster.client();
        let max = (CHUNK_SIZE / 4) as usize;
        let run = appenders_a_third_done(
            &master,
            &dfs_client::Identity::cluster_admin(cluster.secret()),
            max,
        )
        .await;
        // The primary of the chunk being appended to, to hit the lease itself.
        let stat = c.stat("/log").await.expect("stat");
        let victim = stat
            .chunks
            .last()
            .and_then(|ch| ch.primary.clone())
            .and_then(|p| (0..4).find(|i| procs.addr(*i) == p))
            .unwrap_or(0);
        procs.kill(victim).await;
        let acked = run.await.expect("appenders finish despite the kill");
        assert_eq!(acked.len(), (WRITERS * RECORDS) as usize);
        let parsed = parse(&read_all(&c, "/log").await);
        check(&parsed, &acked, true);
        // Open chunks are settled once their leases lapse, then repaired to 3 replicas.
        wait_until(Duration::from_secs(60), "fsck healthy", || {
            let c = c.clone();
            async move { c.fsck("/").await.is_ok_and(|r| r.healthy()) }
        })
        .await;
        let again = parse(&read_all(&c, "/log").await);
        assert_eq!(again, parsed, "settling changes nothing readers saw");
        procs.kill_all().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dfs_append_creates_and_tail_follows() {
    bounded(async {
        let (dir, cluster) = dfs_testkit::cluster_with(small_chunks).await;
        let master = cluster.master_addr().to_string();
        let secret = cluster.secret().encode();
        let dfs = |args: &[&str]| {
            std::process::Command::new(env!("CARGO_BIN_EXE_dfs"))
                .env("DFS_SECRET", &secret)
                .args(["--master", &master])
                .args(args)
                .output()
                .expect("run dfs")
        };
        // Larger than max_append: cut into records, all of it lands in order.
        let big = data(300_000, 7);
        let local = dir.path().join("big");
        std::fs::write(&local, &big).expect("write");
        let out = dfs(&["append", local.to_str().expect("utf-8"), "/t/big"]);
        assert!(!out.status.success(), "the parent directory must exist");
        assert!(String::from_utf8_lossy(&out.stderr).starts_with("dfs: "));
        assert!(dfs(&["mkdir", "/t"]).status.success());
        let out = dfs(&["append", local.to_str().expect("utf-8"), "/t/big"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = dfs(&["cat", "/t/big"]);
        assert_eq!(out.stdout, big);
        let out = dfs(&["stat", "--json", "/t/big"]);
        let stat: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stat json");
        assert_eq!(stat["size"], 300_000);
        let last = &stat["chunks"][stat["chunks"].as_array().expect("chunks").len() - 1];
        assert_eq!(last["open"], true, "the last chunk takes appends: {stat}");
        assert!(last["primary"].is_string(), "with its lease holder: {stat}");
        let out = dfs(&["tail", "-c", "10", "/t/big"]);
        assert_eq!(out.stdout, &big[big.len() - 10..]);
        let out = dfs(&["append", "/t", "/t/big"]);
        assert!(!out.status.success(), "a directory is not an input");
        let out = dfs(&["append", local.to_str().expect("utf-8"), "/t"]);
        assert!(!out.status.success(), "cannot append to a directory");

        // tail -f prints what others append.
        let c = cluster.client();
        c.append_record(
            "/t/log",
            Bytes::from_static(b"first\n"),
            AppendOptions::default(),
        )
        .await
        .expect("append creates the file");
        let mut tail = tokio::process::Command::new(env!("CARGO_BIN_EXE_dfs"))
            .env("DFS_SECRET", &secret)
            .args([
                "--master",
                &master,
                "tail",
                "-f",
                "--interval",
                "100ms",
                "/t/log",
            ])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn tail");
        let mut stdout = tail.stdout.take().expect("stdout");
        let mut seen = Vec::new();
        let lines: Vec<String> = (0..50).map(|i| format!("line {i}\n")).collect();
        for l in &lines {
            c.append_record("/t/log", Bytes::from(l.clone()), AppendOptions::default())
                .await
                .expect("append");
        }
        let mut want = b"first\n".to_vec();
        want.extend(lines.concat().into_bytes());
        let mut buf = [0u8; 4096];
        while seen.len() < want.len() {
            use tokio::io::AsyncReadExt;
            let n = stdout.read(&mut buf).await.expect("read tail");
            assert!(n > 0, "tail -f ended");
            seen.extend_from_slice(&buf[..n]);
        }
        assert_eq!(seen, want);
        let _ = tail.start_kill();
        let _ = tail.wait().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_go_on_across_a_master_restart() {
    bounded(async {
        let (_dir, mut cluster) = dfs_testkit::cluster_with(|o| {
            small_chunks(o);
            o.lease = Duration::from_secs(2);
            o.safe_start = Duration::from_millis(500);
        })
        .await;
        let c = cluster.client();
        let master = cluster.master_addr().to_string();
        let max = (CHUNK_SIZE / 4) as usize;
        let run = appenders_a_third_done(
            &master,
            &dfs_client::Identity::cluster_admin(cluster.secret()),
            max,
        )
        .await;
        // The master forgets every lease; primaries keep serving the leases they hold
        // and report them, and the master adopts them.
        cluster.restart_master().await.expect("restart master");
        let acked = run.await.expect("appenders finish across the restart");
        let parsed = parse(&read_all(&c, "/log").await);
        check(&parsed, &acked, true);
        // Once the leases lapse the chunks are settled; nothing readers saw changes.
        wait_until(Duration::from_secs(30), "every chunk settled", || {
            let c = c.clone();
            async move {
                c.stat("/log")
                    .await
                    .is_ok_and(|s| s.chunks.iter().all(|ch| !ch.open))
            }
        })
        .await;
        assert_eq!(parse(&read_all(&c, "/log").await), parsed);
        assert!(c.fsck("/").await.expect("fsck").healthy());
    })
    .await;
}

/// One client with records in flight (`append_records`): every record lands once,
/// whole, at the offset returned for it; the order among those in flight together
/// is the primary's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_in_flight_land_whole_at_their_offsets() {
    bounded(async {
        let (_dir, cluster) = dfs_testkit::cluster_with(|o| {
            small_chunks(o);
            o.http = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        })
        .await;
        let c = cluster.client();
        let max = (CHUNK_SIZE / 4) as usize;
        let records: Vec<Bytes> = sizes(0, RECORDS, max)
            .into_iter()
            .enumerate()
            .map(|(s, len)| record(0, s as u32, len))
            .collect();
        let offsets = c
            .append_records("/log", records.clone(), AppendOptions::default(), 4)
            .await
            .expect("append_records");
        assert_eq!(offsets.len(), records.len());
        let file = read_all(&c, "/log").await;
        let parsed = parse(&file);
        assert_eq!(
            parsed.len(),
            records.len(),
            "each record once, nothing else"
        );
        let acked: HashMap<(u32, u32), Option<u64>> = offsets
            .iter()
            .enumerate()
            .map(|(s, at)| ((0, s as u32), Some(*at)))
            .collect();
        for (w, s, at) in &parsed {
            assert_eq!(acked.get(&(*w, *s)), Some(&Some(*at)), "record {s}");
        }
        assert!(c.stat("/log").await.expect("stat").chunks.len() > 1);

        // The primaries counted every record in exactly one batch.
        let (mut batches, mut batched) = (0.0, 0.0);
        for addr in cluster.chunkserver_http_addrs() {
            let addr = addr.expect("chunkserver metrics").to_string();
            let (status, m) = dfs_testkit::http_get(&addr, "/metrics").await;
            assert_eq!(status, 200);
            let get = |name| dfs_testkit::metric_sample(&m, name).unwrap_or(0.0);
            batches += get("dfs_chunkserver_append_batch_records_count");
            batched += get("dfs_chunkserver_append_batch_records_sum");
        }
        assert_eq!(batched, records.len() as f64);
        assert!(batches >= 1.0 && batches <= batched, "{batches} batches");
    })
    .await;
}
