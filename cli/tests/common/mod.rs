//! Shared test harness: a real cluster on loopback in temp dirs, bounded in time.

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use dfs_cli::cluster::{ClusterOptions, LocalCluster};
use rand::{Rng, SeedableRng};

pub const CHUNK: usize = 1 << 20;

/// Fails the test instead of hanging it.
pub async fn bounded<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), fut)
        .await
        .expect("test exceeded its time bound")
}

/// A master and three chunkservers on 127.0.0.1, 1 MiB chunks, in a fresh temp dir.
pub async fn cluster() -> (tempfile::TempDir, LocalCluster) {
    cluster_with(|_| {}).await
}

pub async fn cluster_with(
    tweak: impl FnOnce(&mut ClusterOptions),
) -> (tempfile::TempDir, LocalCluster) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut options = ClusterOptions::for_tests(dir.path());
    tweak(&mut options);
    let cluster = LocalCluster::start(options).await.expect("cluster starts");
    (dir, cluster)
}

/// Deterministic pseudo-random bytes, different per seed.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    v
}

/// Polls `cond` every 50 ms until it holds or `limit` passes.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + limit;
    while !cond().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether chunkserver `i` of `cluster` has the chunk file for `handle` on disk.
pub fn on_disk(cluster: &LocalCluster, i: usize, handle: &dfs_protocol::ChunkHandle) -> bool {
    cluster
        .chunkserver_data_dir(i)
        .map(|d| d.join("chunks").join(format!("{handle}.chunk")).exists())
        .unwrap_or(false)
}

/// Chunkservers as real `dfs chunkserver` processes, so tests can SIGKILL them.
#[derive(Debug)]
pub struct Procs {
    master: String,
    secret: String,
    dir: std::path::PathBuf,
    ports: Vec<u16>,
    procs: Vec<Option<tokio::process::Child>>,
    args: Vec<String>,
}

impl Procs {
    /// Starts `n` chunkservers (each on a fixed free port, so a restart keeps its
    /// address) against `master`, sharing `secret`, with `args` added to every
    /// command line.
    pub fn start(
        master: &str,
        secret: &dfs_client::ClusterSecret,
        dir: &std::path::Path,
        n: usize,
        args: &[&str],
    ) -> Procs {
        let mut p = Procs {
            master: master.to_string(),
            secret: secret.encode(),
            dir: dir.to_path_buf(),
            ports: Vec::new(),
            procs: Vec::new(),
            args: args.iter().map(|s| s.to_string()).collect(),
        };
        for _ in 0..n {
            p.add();
        }
        p
    }

    /// Starts one more chunkserver; returns its index.
    pub fn add(&mut self) -> usize {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        self.ports.push(port);
        self.procs.push(None);
        let i = self.ports.len() - 1;
        self.spawn(i);
        i
    }

    /// The process id of chunkserver `i`, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.procs[i].as_ref().and_then(|c| c.id())
    }

    pub fn addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.ports[i])
    }

    pub fn data_dir(&self, i: usize) -> std::path::PathBuf {
        self.dir.join(format!("proc-cs{i}"))
    }

    /// (Re)starts chunkserver `i` on its address and data dir.
    pub fn spawn(&mut self, i: usize) {
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_dfs"))
            .args([
                "chunkserver",
                "--listen",
                &self.addr(i),
                "--master",
                &self.master,
            ])
            .args(["--heartbeat", "100ms"])
            .arg("--data")
            .arg(self.data_dir(i))
            .args(&self.args)
            .env("RUST_LOG", "error")
            .env("DFS_SECRET", &self.secret)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn chunkserver");
        self.procs[i] = Some(child);
    }

    /// SIGKILL: no goodbye, no flush.
    pub async fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.procs[i].take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }

    pub async fn kill_all(&mut self) {
        for i in 0..self.procs.len() {
            self.kill(i).await;
        }
    }
}
