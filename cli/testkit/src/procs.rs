//! Masters and chunkservers as real `dfs` processes, so tests can kill -9, SIGTERM,
//! freeze (SIGSTOP) and thaw them; and `dfs up` as a user runs it. Every child is
//! killed when its handle drops.

use std::path::{Path, PathBuf};
use std::time::Duration;

use dfs_protocol::ClusterSecret;
use rustix::process::Signal;

/// The `dfs` binary: `$DFS_BIN`, else `dfs` beside the test binary's own directory
/// (`target/<profile>/deps/..`), where cargo builds it for integration tests.
pub fn dfs_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("DFS_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("own path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let bin = profile_dir.join("dfs");
    assert!(
        bin.exists(),
        "no dfs binary at {}: build it (cargo build -p dfs-cli) or set DFS_BIN",
        bin.display()
    );
    bin
}

/// Sends `sig` to process `pid`.
pub fn signal(pid: u32, sig: Signal) {
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid).expect("pid")).expect("pid");
    rustix::process::kill_process(pid, sig).expect("signal");
}

/// SIGSTOP: the process keeps its sockets but answers nothing.
pub fn freeze(pid: u32) {
    signal(pid, Signal::STOP);
}

/// SIGCONT after [`freeze`].
pub fn thaw(pid: u32) {
    signal(pid, Signal::CONT);
}

fn quiet(cmd: &mut tokio::process::Command) -> &mut tokio::process::Command {
    cmd.env("RUST_LOG", "error")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
}

/// A `dfs master` process on `addr` with data in `dir`, sharing `secret`, with
/// `args` added; killed when dropped.
pub fn master_process(
    addr: &str,
    dir: &Path,
    secret: &ClusterSecret,
    args: &[&str],
) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::new(dfs_bin());
    cmd.args(["master", "--listen", addr, "--data"])
        .arg(dir)
        .args(args)
        .env("DFS_SECRET", secret.encode());
    quiet(&mut cmd).spawn().expect("spawn master")
}

/// A master process that keeps its address and data dir across kills and restarts.
#[derive(Debug)]
pub struct MasterProc {
    pub addr: String,
    dir: PathBuf,
    secret: ClusterSecret,
    args: Vec<String>,
    child: Option<tokio::process::Child>,
    frozen: bool,
}

impl MasterProc {
    /// Starts a master on a free port and waits until it listens (on another port if
    /// another test took this one first).
    pub async fn start(dir: &Path, secret: &ClusterSecret, args: &[&str]) -> MasterProc {
        let mut m = MasterProc {
            addr: crate::free_addr(),
            dir: dir.to_path_buf(),
            secret: secret.clone(),
            args: args.iter().map(|s| s.to_string()).collect(),
            child: None,
            frozen: false,
        };
        for _ in 0..5 {
            m.restart();
            let child = m.child.as_mut().expect("just started");
            if listening(&m.addr, child).await {
                return m;
            }
            m.kill().await;
            m.addr = crate::free_addr();
        }
        panic!("dfs master did not start on any of 5 ports");
    }

    /// Starts the master again (after a kill) on the same address and data.
    pub fn restart(&mut self) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.child = Some(master_process(&self.addr, &self.dir, &self.secret, &args));
        self.frozen = false;
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(tokio::process::Child::id)
    }

    /// kill -9: no flush, no goodbye.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
        self.frozen = false;
    }

    pub fn freeze(&mut self) {
        if let Some(pid) = self.pid() {
            freeze(pid);
            self.frozen = true;
        }
    }

    pub fn thaw(&mut self) {
        if let Some(pid) = self.pid() {
            thaw(pid);
        }
        self.frozen = false;
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn is_frozen(&self) -> bool {
        self.frozen
    }
}

/// Chunkservers as real `dfs chunkserver` processes, so tests can SIGKILL and freeze them.
#[derive(Debug)]
pub struct Procs {
    master: String,
    secret: String,
    dir: PathBuf,
    ports: Vec<u16>,
    procs: Vec<Option<tokio::process::Child>>,
    args: Vec<String>,
    /// `--advertise` per server, when it sits behind a proxy.
    advertise: Vec<Option<String>>,
}

impl Procs {
    /// Starts `n` chunkservers (each on a fixed free port, so a restart keeps its
    /// address) against `master`, sharing `secret`, with `args` added to every
    /// command line.
    /// Waits until each listens (see [`Procs::wait_listening`]).
    pub async fn start(
        master: &str,
        secret: &ClusterSecret,
        dir: &Path,
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
            advertise: Vec::new(),
        };
        for _ in 0..n {
            p.add();
        }
        p.wait_listening().await;
        p
    }

    /// Starts one more chunkserver; returns its index.
    pub fn add(&mut self) -> usize {
        self.ports.push(crate::cluster::free_port());
        self.procs.push(None);
        self.advertise.push(None);
        let i = self.ports.len() - 1;
        self.spawn(i);
        i
    }

    /// Waits until every running chunkserver listens; one whose port another test
    /// took first is moved to a new port (before it ever registered).
    pub async fn wait_listening(&mut self) {
        for i in 0..self.ports.len() {
            for _ in 0..5 {
                let addr = self.addr(i);
                let Some(child) = self.procs[i].as_mut() else {
                    break;
                };
                if listening(&addr, child).await {
                    break;
                }
                self.kill(i).await;
                self.ports[i] = crate::cluster::free_port();
                self.spawn(i);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.ports.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
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

    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("proc-cs{i}"))
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.procs[i].is_some()
    }

    /// (Re)starts chunkserver `i` on its address and data dir.
    pub fn spawn(&mut self, i: usize) {
        let mut cmd = tokio::process::Command::new(dfs_bin());
        cmd.args([
            "chunkserver",
            "--listen",
            &self.addr(i),
            "--master",
            &self.master,
        ])
        .args(["--heartbeat", "100ms"])
        .arg("--data")
        .arg(self.data_dir(i))
        .args(
            self.advertise[i]
                .iter()
                .flat_map(|a| ["--advertise", a.as_str()]),
        )
        .args(&self.args)
        .env("DFS_SECRET", &self.secret);
        quiet(&mut cmd);
        // Its warnings go to a file in the test's dir, so a failing wait can show them.
        if let Ok(log) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
        {
            cmd.env("RUST_LOG", "warn").stderr(log);
        }
        self.procs[i] = Some(cmd.spawn().expect("spawn chunkserver"));
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("proc-cs{i}.log"))
    }

    /// Waits until every running chunkserver is alive at `cluster`'s master. On a
    /// timeout, panics with each one's state and the end of its log.
    pub async fn wait_registered(&mut self, cluster: &dfs_cli::cluster::LocalCluster) {
        let running = self.procs.iter().filter(|p| p.is_some()).count();
        if cluster
            .wait_for_chunkservers(running, Duration::from_secs(30))
            .await
            .is_ok()
        {
            return;
        }
        let seen = match cluster.client().status().await {
            Ok(s) => s
                .chunkservers
                .iter()
                .map(|c| format!("{} alive={}", c.addr, c.alive))
                .collect::<Vec<_>>()
                .join(", "),
            Err(e) => format!("no status: {e}"),
        };
        panic!(
            "{running} chunkservers did not register within 30s; the master sees [{seen}]\n{}",
            self.describe()
        );
    }

    /// Each chunkserver's address, whether it runs, and the end of its log.
    pub fn describe(&mut self) -> String {
        let mut out = String::new();
        for i in 0..self.ports.len() {
            let state = match self.procs[i].as_mut().map(|c| c.try_wait()) {
                None => "stopped by the test".to_string(),
                Some(Ok(None)) => "running".to_string(),
                Some(Ok(Some(exit))) => format!("exited: {exit}"),
                Some(Err(e)) => format!("unknown: {e}"),
            };
            let log = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            out.push_str(&format!(
                "chunkserver {i} at {}: {state}; log {} bytes\n",
                self.addr(i),
                log.len()
            ));
            for line in tail.into_iter().rev() {
                out.push_str(&format!("    {line}\n"));
            }
        }
        out
    }

    /// Puts chunkserver `i` behind a fault proxy: it is restarted advertising the
    /// proxy's address, so everything that dials it (the master's orders, the other
    /// chunkservers' pipelines and copies, clients) goes through the proxy, while
    /// what it dials itself (heartbeats to the master, its own forwards) does not.
    pub async fn behind_proxy(&mut self, i: usize) -> crate::FaultProxy {
        let proxy = crate::FaultProxy::start(&self.addr(i)).await;
        self.advertise[i] = Some(proxy.addr().to_string());
        self.kill(i).await;
        self.spawn(i);
        proxy
    }

    /// The address chunkserver `i` tells others to dial.
    pub fn advertised(&self, i: usize) -> String {
        self.advertise[i].clone().unwrap_or_else(|| self.addr(i))
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

    pub fn freeze(&self, i: usize) {
        if let Some(pid) = self.pid(i) {
            freeze(pid);
        }
    }

    pub fn thaw(&self, i: usize) {
        if let Some(pid) = self.pid(i) {
            thaw(pid);
        }
    }
}

/// Whether the server `child` runs listens on `addr` within 20 s (`false` at once if
/// it exited: its port was taken).
async fn listening(addr: &str, child: &mut tokio::process::Child) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return false;
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// `dfs up` as a process, with its own config dir (`home`), as a user runs it.
#[derive(Debug)]
pub struct Up {
    pub child: tokio::process::Child,
    /// The master's address.
    pub master: String,
    /// `127.0.0.1_PORT`: how the stored key and CA files for this master are named.
    pub stem: String,
    pub home: PathBuf,
    /// What `dfs up` printed on stderr.
    pub log: PathBuf,
}

impl Up {
    /// The status page's address, as `dfs up` printed it (it serves one on a free
    /// loopback port unless started with `--http ADDR` or `--no-http`).
    pub async fn http_addr(&self) -> Option<String> {
        const MARK: &str = "status page on http://";
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(at) = log.find(MARK) {
                let rest = &log[at + MARK.len()..];
                return rest.split('/').next().map(str::to_string);
            }
            if log.contains("try `dfs put") {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

/// Starts `dfs up` with `args` (and `--listen`, `--data DIR/data`) on a port whose
/// following ports (its chunkservers') are free too, and waits until its admin key
/// (and CA, with `--tls`) are stored. Fails with `dfs up`'s own error if it exits.
pub async fn dfs_up(dir: &Path, chunkservers: u16, args: &[&str]) -> Up {
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
        let mut child = tokio::process::Command::new(dfs_bin())
            .args(["up", "--listen", &master, "--data"])
            .arg(dir.join("data"))
            .args(["--chunkservers", &chunkservers.to_string()])
            .args(args)
            .args(
                // Parallel tests must not share the default status page port.
                if args
                    .iter()
                    .any(|a| a.starts_with("--http") || *a == "--no-http")
                {
                    &[][..]
                } else {
                    &["--http", "127.0.0.1:0"][..]
                },
            )
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
                    log,
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
