//! A randomized fault schedule. Per seed, a fresh cluster (a master and four
//! chunkservers as processes, replication 3, 256 KiB chunks) runs a sequence of
//! puts, appends, gets, renames and removes, with a fault injected between steps:
//! kill -9 or freeze a chunkserver, kill -9 the master, partition, delay or reset
//! the client's links to a chunkserver, or flip a byte of a replica on disk. Every
//! get must return exactly what was acknowledged; after healing, every acknowledged
//! byte reads back identical, every acknowledged record is in the log, and `fsck`
//! is healthy.
//!
//! Seeds: `DFS_SCHEDULE_SEEDS` (a count, default 50) from `DFS_SCHEDULE_SEED`
//! (default 1), two at a time. A failing seed is named in the failure and
//! reproduces alone with `DFS_SCHEDULE_SEEDS=1 DFS_SCHEDULE_SEED=N`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use dfs_client::{AppendOptions, Client, ClientOptions, PutOptions, Routes};
use dfs_testkit::{
    bounded_for, corrupt_replica, data, has_replica, wait_until, Direction, FaultProxy, MasterProc,
    Procs,
};
use rand::{Rng, SeedableRng};

const CHUNKSERVERS: usize = 4;
const STEPS: usize = 14;
const LOG: &str = "/log";

/// A file as the test knows it: its bytes, and whether it must exist (an operation
/// with an unknown outcome leaves it "maybe": if it exists, it holds these bytes).
#[derive(Debug, Clone)]
struct Known {
    bytes: Vec<u8>,
    certain: bool,
}

fn record(id: u32) -> Vec<u8> {
    let len = 50 + (id as usize * 7919) % 3000;
    let mut r = format!("R{id:06}:").into_bytes();
    r.extend(std::iter::repeat_n(b'a' + (id % 26) as u8, len));
    r.push(b'\n');
    r
}

/// Parses the log: every line must be a whole record. Returns the ids found.
fn parse_log(bytes: &[u8]) -> Result<BTreeSet<u32>, String> {
    let mut ids = BTreeSet::new();
    for line in bytes.split_inclusive(|b| *b == b'\n') {
        let id: u32 = std::str::from_utf8(line.get(1..7).unwrap_or_default())
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                format!(
                    "a line that is no record: {:?}",
                    String::from_utf8_lossy(&line[..line.len().min(40)])
                )
            })?;
        if line != record(id).as_slice() {
            return Err(format!("record {id} damaged or torn"));
        }
        ids.insert(id);
    }
    Ok(ids)
}

struct Run {
    seed: u64,
    master: MasterProc,
    procs: Procs,
    proxies: Vec<FaultProxy>,
    client: Client,
    admin: Client,
    files: BTreeMap<String, Known>,
    acked: BTreeSet<u32>,
    next_id: u32,
    next_file: u32,
    killed: BTreeSet<usize>,
    faults: Vec<String>,
}

fn new_client(master: &str, secret: &dfs_protocol::ClusterSecret, routes: Routes) -> Client {
    Client::with_options(
        master.to_string(),
        dfs_protocol::Identity::cluster_admin(secret),
        ClientOptions {
            connect_timeout: Duration::from_secs(1),
            io_timeout: Duration::from_secs(3),
            routes,
            ..ClientOptions::default()
        },
    )
}

impl Run {
    fn fail(&self, what: impl std::fmt::Display) -> ! {
        panic!(
            "seed {}: {what}\nfaults so far: {:?}",
            self.seed, self.faults
        )
    }

    async fn master_answers(&self) {
        wait_until(Duration::from_secs(30), "the master", || async {
            self.admin.status().await.is_ok()
        })
        .await;
    }

    /// Undoes the faults that last one step: freezes, partitions, delays.
    fn heal_transient(&mut self) {
        for k in 0..CHUNKSERVERS {
            self.procs.thaw(k);
        }
        for p in &self.proxies {
            p.heal();
        }
    }

    async fn inject(&mut self, rng: &mut impl Rng) {
        let k = rng.random_range(0..CHUNKSERVERS);
        match rng.random_range(0..10) {
            // At most one chunkserver down at a time, so puts at replication 3 go on.
            0 if self.killed.is_empty() => {
                self.procs.kill(k).await;
                self.killed.insert(k);
                self.faults.push(format!("kill -9 chunkserver {k}"));
            }
            1 if !self.killed.is_empty() => {
                let back: Vec<usize> = self.killed.iter().copied().collect();
                for b in back {
                    self.procs.spawn(b);
                    self.faults.push(format!("restart chunkserver {b}"));
                }
                self.killed.clear();
            }
            2 if !self.killed.contains(&k) => {
                self.procs.freeze(k);
                self.faults.push(format!("freeze chunkserver {k}"));
            }
            3 => {
                self.master.kill().await;
                self.master.restart();
                self.faults.push("kill -9 master".into());
                self.master_answers().await;
            }
            4 => {
                self.proxies[k].partition(Direction::Both);
                self.faults
                    .push(format!("partition client / chunkserver {k}"));
            }
            5 => {
                self.proxies[k].delay(Duration::from_millis(30));
                self.faults.push(format!("delay client / chunkserver {k}"));
            }
            6 => {
                self.proxies[k].reset();
                self.faults.push(format!("reset client / chunkserver {k}"));
            }
            7 => self.corrupt(rng).await,
            _ => {}
        }
    }

    /// Flips a byte of one replica of a chunk of a file that must exist.
    async fn corrupt(&mut self, rng: &mut impl Rng) {
        let certain: Vec<String> = self
            .files
            .iter()
            .filter(|(_, f)| f.certain && !f.bytes.is_empty())
            .map(|(p, _)| p.clone())
            .collect();
        if certain.is_empty() {
            return;
        }
        let path = &certain[rng.random_range(0..certain.len())];
        let Ok(stat) = self.admin.stat(path).await else {
            return;
        };
        let Some(chunk) = stat.chunks.first() else {
            return;
        };
        let holders: Vec<usize> = (0..CHUNKSERVERS)
            .filter(|i| has_replica(&self.procs.data_dir(*i), &chunk.handle))
            .collect();
        if holders.len() < 2 {
            return;
        }
        let i = holders[rng.random_range(0..holders.len())];
        let offset = rng.random_range(0..chunk.size.max(1));
        if corrupt_replica(&self.procs.data_dir(i), &chunk.handle, offset).is_ok() {
            self.faults
                .push(format!("flip a byte of {path} on chunkserver {i}"));
        }
    }

    async fn step(&mut self, rng: &mut impl Rng) {
        let certain: Vec<String> = self
            .files
            .iter()
            .filter(|(_, f)| f.certain)
            .map(|(p, _)| p.clone())
            .collect();
        let pick = |rng: &mut dyn rand::RngCore| {
            (!certain.is_empty()).then(|| certain[rng.random_range(0..certain.len())].clone())
        };
        match rng.random_range(0..10) {
            0..=2 => {
                let path = format!("/f{}", self.next_file);
                self.next_file += 1;
                let size = rng.random_range(0..700_000);
                let bytes = data(size, self.seed * 10_000 + u64::from(self.next_file));
                let certain = self
                    .client
                    .put(&path, &bytes[..], PutOptions::default())
                    .await
                    .is_ok();
                self.files.insert(path, Known { bytes, certain });
            }
            3 | 4 => {
                let id = self.next_id;
                self.next_id += 1;
                let r = bytes::Bytes::from(record(id));
                if self
                    .client
                    .append_record(LOG, r, AppendOptions::default())
                    .await
                    .is_ok()
                {
                    self.acked.insert(id);
                }
            }
            5..=7 => {
                if let Some(path) = pick(rng) {
                    let mut got = Vec::new();
                    // A get may fail while servers are down; it may never be wrong.
                    if self.client.get(&path, &mut got).await.is_ok()
                        && got != self.files[&path].bytes
                    {
                        self.fail(format!("get {path} returned other bytes than acknowledged"));
                    }
                }
            }
            8 => {
                if let Some(src) = pick(rng) {
                    let dst = format!("/r{}", self.next_file);
                    self.next_file += 1;
                    let ok = self.client.rename(&src, &dst).await.is_ok();
                    let Some(mut known) = self.files.remove(&src) else {
                        self.fail(format!("{src} vanished from the model"))
                    };
                    if !ok {
                        // Either name may hold it now; neither must.
                        known.certain = false;
                        self.files.insert(src, known.clone());
                    }
                    self.files.insert(dst, known);
                }
            }
            _ => {
                if let Some(path) = pick(rng) {
                    if self.client.remove(&path, false, true).await.is_ok() {
                        self.files.remove(&path);
                    } else if let Some(f) = self.files.get_mut(&path) {
                        f.certain = false;
                    }
                }
            }
        }
    }

    /// Reads `path` whole, retrying while the cluster settles (a replica found damaged
    /// is replaced, an open chunk is settled at a new version): `Some(true)` and its
    /// bytes, `Some(false)` when it is not there, `None` when it stays unreadable. A
    /// wrong answer is never retried away: the caller compares the bytes.
    async fn read_after_healing(&self, path: &str) -> (Option<bool>, Vec<u8>) {
        let mut got = Vec::new();
        for _ in 0..100 {
            got.clear();
            match self.admin.get(path, &mut got).await {
                Ok(_) => return (Some(true), got),
                Err(dfs_client::ClientError::Remote(dfs_client::ErrorCode::NotFound {
                    ..
                })) => return (Some(false), got),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        (None, got)
    }

    /// Heals everything and checks every acknowledged byte, then waits for fsck.
    async fn verify(&mut self) {
        self.heal_transient();
        for k in std::mem::take(&mut self.killed) {
            self.procs.spawn(k);
        }
        self.master_answers().await;
        wait_until(
            Duration::from_secs(30),
            "every chunkserver back",
            || async {
                self.admin.status().await.is_ok_and(|s| {
                    s.chunkservers.iter().filter(|c| c.alive).count() == CHUNKSERVERS
                })
            },
        )
        .await;
        let files = self.files.clone();
        for (path, known) in &files {
            let (found, got) = self.read_after_healing(path).await;
            match found {
                Some(true) if got == known.bytes => {}
                Some(true) => self.fail(format!("{path}: other bytes than acknowledged")),
                Some(false) if !known.certain => {}
                Some(false) => self.fail(format!("{path}: acknowledged, now missing")),
                None => self.fail(format!("{path}: unreadable after healing")),
            }
        }
        if !self.acked.is_empty() {
            let (found, log) = self.read_after_healing(LOG).await;
            if found != Some(true) {
                self.fail(format!("the log is unreadable after healing ({found:?})"));
            }
            match parse_log(&log) {
                Ok(ids) => {
                    if let Some(lost) = self.acked.difference(&ids).next() {
                        self.fail(format!("acknowledged record {lost} missing from the log"));
                    }
                }
                Err(e) => self.fail(format!("the log: {e}")),
            }
        }
        let admin = &self.admin;
        let mut last = None;
        let healthy = tokio::time::timeout(Duration::from_secs(90), async {
            loop {
                match admin.fsck("/").await {
                    Ok(r)
                        if r.missing == 0
                            && r.under_replicated == 0
                            && r.corrupt == 0
                            && r.stale == 0
                            && !r.safe_mode =>
                    {
                        return;
                    }
                    other => last = Some(format!("{other:?}")),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        if healthy.is_err() {
            self.fail(format!("fsck not healthy after healing: {last:?}"));
        }
    }
}

async fn run(seed: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = dfs_protocol::ClusterSecret::generate();
    let master = MasterProc::start(
        &dir.path().join("master"),
        &secret,
        &[
            "--chunk-size",
            "256KiB",
            "--safe-start",
            "1s",
            "--dead-after",
            "3s",
            "--lease",
            "3s",
        ],
    )
    .await;
    let procs = Procs::start(
        &master.addr,
        &secret,
        dir.path(),
        CHUNKSERVERS,
        &["--scrub-idle", "500ms"],
    )
    .await;
    let mut proxies = Vec::new();
    for i in 0..CHUNKSERVERS {
        proxies.push(FaultProxy::start(&procs.addr(i)).await);
    }
    let routes = Routes::new(
        proxies
            .iter()
            .map(|p| (p.target().to_string(), p.addr().to_string())),
    );
    let client = new_client(&master.addr, &secret, routes);
    let admin = new_client(&master.addr, &secret, Routes::default());
    let mut r = Run {
        seed,
        master,
        procs,
        proxies,
        client,
        admin,
        files: BTreeMap::new(),
        acked: BTreeSet::new(),
        next_id: 0,
        next_file: 0,
        killed: BTreeSet::new(),
        faults: Vec::new(),
    };
    wait_until(Duration::from_secs(30), "the cluster", || async {
        r.admin
            .status()
            .await
            .is_ok_and(|s| s.chunkservers.len() == CHUNKSERVERS && !s.safe_mode)
    })
    .await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for _ in 0..STEPS {
        r.step(&mut rng).await;
        r.heal_transient();
        r.inject(&mut rng).await;
    }
    r.verify().await;
    for p in std::mem::take(&mut r.proxies) {
        p.stop().await;
    }
    r.procs.kill_all().await;
    r.master.kill().await;
    eprintln!(
        "seed {seed}: {} files, {} records, faults: {:?}",
        r.files.len(),
        r.acked.len(),
        r.faults
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_bytes_survive_a_random_fault_schedule() {
    let seeds: Vec<u64> = dfs_testkit::seeds("DFS_SCHEDULE", 50).collect();
    let started = std::time::Instant::now();
    for pair in seeds.chunks(2) {
        let runs = pair
            .iter()
            .map(|&s| bounded_for(Duration::from_secs(240), run(s)));
        futures::future::join_all(runs).await;
    }
    eprintln!("{} seeds in {:?}", seeds.len(), started.elapsed());
}
