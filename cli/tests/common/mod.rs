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

/// A loopback address with a port nothing listens on now (bound, learned, released).
pub fn free_addr() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .to_string()
}

/// `dfs up` as a process, with its own config dir (`home`), as a user runs it.
#[derive(Debug)]
pub struct Up {
    pub child: tokio::process::Child,
    /// The master's address.
    pub master: String,
    /// `127.0.0.1_PORT`: how the stored key and CA files for this master are named.
    pub stem: String,
    pub home: std::path::PathBuf,
}

/// Starts `dfs up` with `args` (and `--listen`, `--data DIR/data`) on a port whose
/// following ports (its chunkservers') are free too, and waits until its admin key
/// (and CA, with `--tls`) are stored. Fails with `dfs up`'s own error if it exits.
pub async fn dfs_up(dir: &std::path::Path, chunkservers: u16, args: &[&str]) -> Up {
    let home = dir.join("home");
    for attempt in 0..5 {
        let port = (0..20)
            .find_map(|_| {
                let l = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
                let port = l.local_addr().ok()?.port();
                let rest: Option<Vec<_>> = (1..=chunkservers)
                    .map(|i| std::net::TcpListener::bind(("127.0.0.1", port.checked_add(i)?)).ok())
                    .collect();
                rest.map(|_| port)
            })
            .expect("a run of free ports");
        let master = format!("127.0.0.1:{port}");
        let log = dir.join(format!("up-{attempt}.log"));
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_dfs"))
            .args(["up", "--listen", &master, "--data"])
            .arg(dir.join("data"))
            .args(["--chunkservers", &chunkservers.to_string()])
            .args(args)
            .env_remove("DFS_SECRET")
            .env_remove("DFS_KEY")
            .env_remove("DFS_TLS_CA")
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env("RUST_LOG", "error")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn dfs up");
        let stem = format!("127.0.0.1_{port}");
        let keys = home.join("config/dfs/keys");
        let tls = args.contains(&"--tls");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let ready = keys.join(format!("{stem}.key")).exists()
                && (!tls || keys.join(format!("{stem}.ca.pem")).exists());
            if ready {
                return Up {
                    child,
                    master,
                    stem,
                    home,
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                let err = std::fs::read_to_string(&log).unwrap_or_default();
                if err.contains("cannot listen") {
                    break; // a port was taken meanwhile: another run of ports
                }
                panic!("dfs up exited ({status}): {err}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "dfs up did not get ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!("dfs up found no free ports in 5 attempts");
}

/// A `dfs master` process on `addr` with data in `dir`, sharing `secret`, with
/// `args` added; killed when dropped.
pub fn master_process(
    addr: &str,
    dir: &std::path::Path,
    secret: &dfs_client::ClusterSecret,
    args: &[&str],
) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_dfs"))
        .args(["master", "--listen", addr, "--data"])
        .arg(dir)
        .args(args)
        .env("DFS_SECRET", secret.encode())
        .env("RUST_LOG", "error")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn master")
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
        let port = free_addr()
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
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

    /// Chunkserver `i`'s process, while it runs (to signal or wait for it).
    pub fn child_mut(&mut self, i: usize) -> Option<&mut tokio::process::Child> {
        self.procs[i].as_mut()
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
