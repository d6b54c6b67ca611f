//! A whole cluster in one process: a master and N chunkservers as tasks, each with its
//! own data dir and real TCP listener. `dfs up` runs one; tests and benches use the same
//! code with port 0, and stop and restart single nodes to exercise recovery.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use dfs_chunkserver::ChunkserverConfig;
use dfs_client::{Client, ClusterSecret, Identity};
use dfs_master::MasterConfig;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How to lay out a local cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub data_dir: PathBuf,
    /// The master's address; port 0 picks a free one.
    pub master_addr: SocketAddr,
    /// First chunkserver port (the others follow); 0 picks free ports.
    pub chunkserver_base_port: u16,
    pub chunkservers: usize,
    pub replication: u32,
    pub chunk_size: u64,
    pub dead_after: Duration,
    pub heartbeat: Duration,
    /// Per-chunkserver capacity; the disk's free space when `None`.
    pub capacity: Option<u64>,
    pub trash_retention: Duration,
    pub safe_start: Duration,
    /// Scrubber rate per chunkserver (bytes/s, 0 = off) and idle threshold.
    pub scrub_rate: u64,
    pub scrub_idle: Duration,
    /// Largest atomic append; a quarter of the chunk size when `None`.
    pub max_append: Option<u64>,
    /// Append lease duration.
    pub lease: Duration,
    /// A chunkserver dead this long is forgotten.
    pub forget_dead_after: Duration,
    /// Every link over TLS with the files in this dir (`dfs tls init`).
    pub tls: Option<PathBuf>,
    /// A fault knob: holds the master's operation log writes while closed.
    pub sync_gate: Option<std::sync::Arc<dfs_master::oplog::SyncGate>>,
    /// The master's clock: the machine's when `None`, else a test's manual one,
    /// which every (re)start of the master reads.
    pub clock: Option<dfs_master::clock::Clock>,
    /// Where the master serves its status page and `/metrics`; each chunkserver then
    /// serves its `/metrics` on the ports that follow (free ports for port 0).
    pub http: Option<SocketAddr>,
    /// Chunkservers write new chunks with `O_DIRECT` where the disk allows it.
    pub direct_io: bool,
    /// Chunkservers pack new chunks of at most this many bytes (0: none).
    pub pack_below: u64,
    /// Chunks per message of a chunkserver's full report (the rest follow in
    /// heartbeats).
    pub report_piece: usize,
}

impl ClusterOptions {
    /// A test-sized cluster on free loopback ports under `data_dir`.
    pub fn for_tests(data_dir: impl Into<PathBuf>) -> ClusterOptions {
        ClusterOptions {
            data_dir: data_dir.into(),
            master_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            chunkserver_base_port: 0,
            chunkservers: 3,
            replication: 3,
            chunk_size: 1 << 20,
            dead_after: Duration::from_secs(10),
            heartbeat: Duration::from_millis(100),
            capacity: None,
            trash_retention: Duration::from_secs(24 * 3600),
            safe_start: Duration::from_secs(5),
            scrub_rate: 0,
            scrub_idle: Duration::from_secs(60),
            max_append: None,
            lease: Duration::from_secs(5),
            forget_dead_after: Duration::from_secs(24 * 3600),
            tls: None,
            sync_gate: None,
            clock: None,
            http: None,
            direct_io: true,
            pack_below: dfs_chunkserver::DEFAULT_PACK_BELOW,
            report_piece: dfs_chunkserver::DEFAULT_REPORT_PIECE,
        }
    }
}

#[derive(Debug)]
struct Node {
    addr: SocketAddr,
    /// Where it serves HTTP (bound again there on a restart).
    http: Option<SocketAddr>,
    data_dir: PathBuf,
    running: Option<(CancellationToken, JoinHandle<anyhow::Result<()>>)>,
}

impl Node {
    async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some((token, handle)) = self.running.take() {
            token.cancel();
            handle.await.context("node task panicked")??;
        }
        Ok(())
    }
}

/// A running local cluster.
#[derive(Debug)]
pub struct LocalCluster {
    options: ClusterOptions,
    secret: ClusterSecret,
    /// Server-side TLS settings (which also dial), when links use TLS.
    tls: Option<dfs_protocol::net::Tls>,
    master: Node,
    chunkservers: Vec<Node>,
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for the {what}"))
}

impl LocalCluster {
    /// Starts the master and every chunkserver and waits until all have registered.
    pub async fn start(options: ClusterOptions) -> anyhow::Result<LocalCluster> {
        let master_dir = options.data_dir.join("master");
        let (secret, _) = {
            let dir = master_dir.clone();
            tokio::task::spawn_blocking(move || dfs_master::secret::load_or_create(&dir))
                .await
                .context("secret task")??
        };
        let tls = match &options.tls {
            Some(dir) => Some(crate::tls::load_server(dir)?),
            None => None,
        };
        let listener = bind(options.master_addr, "master").await?;
        let master_addr = listener.local_addr()?;
        let http = match options.http {
            Some(addr) => Some(bind(addr, "status page").await?),
            None => None,
        };
        let http_addr = match &http {
            Some(l) => Some(l.local_addr()?),
            None => None,
        };
        let mut cluster = LocalCluster {
            secret,
            tls,
            master: Node {
                addr: master_addr,
                http: http_addr,
                data_dir: master_dir,
                running: None,
            },
            chunkservers: Vec::new(),
            options,
        };
        cluster.spawn_master(listener, http);
        for i in 0..cluster.options.chunkservers {
            let port = match cluster.options.chunkserver_base_port {
                0 => 0,
                base => base
                    .checked_add(u16::try_from(i).context("too many chunkservers")?)
                    .context("chunkserver port out of range")?,
            };
            let listener = bind(SocketAddr::new(master_addr.ip(), port), "chunkserver").await?;
            // Ports follow the configured one; a configured 0 means free ports for all.
            let http = match (cluster.options.http, http_addr) {
                (Some(configured), Some(at)) => {
                    let port = match configured.port() {
                        0 => 0,
                        p => p
                            .checked_add(u16::try_from(i + 1).context("too many chunkservers")?)
                            .context("metrics port out of range")?,
                    };
                    Some(bind(SocketAddr::new(at.ip(), port), "chunkserver metrics").await?)
                }
                _ => None,
            };
            let node = Node {
                addr: listener.local_addr()?,
                http: match &http {
                    Some(l) => Some(l.local_addr()?),
                    None => None,
                },
                data_dir: cluster.options.data_dir.join(format!("cs{}", i + 1)),
                running: None,
            };
            cluster.chunkservers.push(node);
            cluster.spawn_chunkserver(i, listener, http);
        }
        cluster
            .wait_for_chunkservers(cluster.options.chunkservers, Duration::from_secs(30))
            .await?;
        Ok(cluster)
    }

    fn spawn_master(&mut self, listener: TcpListener, http: Option<TcpListener>) {
        let o = &self.options;
        let mut config = MasterConfig::new(&self.master.data_dir);
        config.replication = o.replication;
        config.chunk_size = o.chunk_size;
        config.dead_after = o.dead_after;
        config.trash_retention = o.trash_retention;
        config.safe_start = o.safe_start;
        config.max_append = o.max_append;
        config.lease = o.lease;
        config.secret = Some(self.secret.clone());
        config.forget_dead_after = o.forget_dead_after;
        config.tls = self.tls.clone();
        config.sync_gate = o.sync_gate.clone();
        if let Some(clock) = &o.clock {
            config.clock = clock.clone();
        }
        let token = CancellationToken::new();
        let handle = tokio::spawn({
            let token = token.clone();
            async move { Ok(dfs_master::run_with_http(config, listener, http, token).await?) }
        });
        self.master.running = Some((token, handle));
    }

    fn spawn_chunkserver(&mut self, i: usize, listener: TcpListener, http: Option<TcpListener>) {
        let node = &mut self.chunkservers[i];
        let mut config = ChunkserverConfig::new(
            &node.data_dir,
            self.master.addr.to_string(),
            self.secret.clone(),
        );
        config.heartbeat = self.options.heartbeat;
        config.tls = self.tls.clone();
        config.capacity = self.options.capacity;
        config.scrub_rate = self.options.scrub_rate;
        config.scrub_idle = self.options.scrub_idle;
        config.direct_io = self.options.direct_io;
        config.pack_below = self.options.pack_below;
        config.report_piece = self.options.report_piece;
        let token = CancellationToken::new();
        let handle = tokio::spawn({
            let token = token.clone();
            async move { Ok(dfs_chunkserver::run_with_http(config, listener, http, token).await?) }
        });
        node.running = Some((token, handle));
    }

    pub fn master_addr(&self) -> SocketAddr {
        self.master.addr
    }

    pub fn chunkserver_addrs(&self) -> Vec<SocketAddr> {
        self.chunkservers.iter().map(|n| n.addr).collect()
    }

    /// Where the master serves its status page and `/metrics`, if it does.
    pub fn master_http_addr(&self) -> Option<SocketAddr> {
        self.master.http
    }

    /// Where each chunkserver serves `/metrics`, if it does.
    pub fn chunkserver_http_addrs(&self) -> Vec<Option<SocketAddr>> {
        self.chunkservers.iter().map(|n| n.http).collect()
    }

    pub fn chunkserver_data_dir(&self, i: usize) -> Option<&Path> {
        self.chunkservers.get(i).map(|n| n.data_dir.as_path())
    }

    pub fn options(&self) -> &ClusterOptions {
        &self.options
    }

    /// Options used by the next (re)start of a node.
    pub fn options_mut(&mut self) -> &mut ClusterOptions {
        &mut self.options
    }

    /// The cluster secret the master and chunkservers share.
    pub fn secret(&self) -> &ClusterSecret {
        &self.secret
    }

    /// A client of this cluster holding the cluster secret (an admin).
    pub fn client(&self) -> Client {
        self.client_as(Identity::cluster_admin(&self.secret))
    }

    /// A client of this cluster proving `identity` (over TLS when the cluster uses it).
    pub fn client_as(&self, identity: Identity) -> Client {
        let identity = match &self.tls {
            Some(tls) => identity.with_tls(tls.clone()),
            None => identity,
        };
        Client::new(self.master.addr.to_string(), identity)
    }

    /// Stops the master (a clean stop: its store is flushed).
    pub async fn stop_master(&mut self) -> anyhow::Result<()> {
        self.master.stop().await
    }

    /// Starts the master again on the same address and data dir.
    pub async fn restart_master(&mut self) -> anyhow::Result<()> {
        self.master.stop().await?;
        let listener = bind(self.master.addr, "master").await?;
        let http = match self.master.http {
            Some(addr) => Some(bind(addr, "status page").await?),
            None => None,
        };
        self.spawn_master(listener, http);
        Ok(())
    }

    pub async fn stop_chunkserver(&mut self, i: usize) -> anyhow::Result<()> {
        match self.chunkservers.get_mut(i) {
            Some(node) => node.stop().await,
            None => bail!("no chunkserver {i}"),
        }
    }

    /// Starts chunkserver `i` again on the same address and data dir.
    pub async fn restart_chunkserver(&mut self, i: usize) -> anyhow::Result<()> {
        self.stop_chunkserver(i).await?;
        let listener = bind(self.chunkservers[i].addr, "chunkserver").await?;
        let http = match self.chunkservers[i].http {
            Some(addr) => Some(bind(addr, "chunkserver metrics").await?),
            None => None,
        };
        self.spawn_chunkserver(i, listener, http);
        Ok(())
    }

    /// Waits until the master reports at least `n` live chunkservers.
    pub async fn wait_for_chunkservers(&self, n: usize, limit: Duration) -> anyhow::Result<()> {
        let client = self.client();
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(status) = client.status().await {
                if status.chunkservers.iter().filter(|s| s.alive).count() >= n {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("{n} chunkservers did not register within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops every node, chunkservers first.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let mut first_error = None;
        for node in &mut self.chunkservers {
            if let Err(e) = node.stop().await {
                first_error.get_or_insert(e);
            }
        }
        if let Err(e) = self.master.stop().await {
            first_error.get_or_insert(e);
        }
        first_error.map_or(Ok(()), Err)
    }
}
