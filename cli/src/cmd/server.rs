//! The server verbs: `dfs master`, `dfs chunkserver` and `dfs up`, run until Ctrl-C or
//! SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use dfs_cli::cluster::{ClusterOptions, LocalCluster};
use dfs_cli::credentials;
use dfs_client::Role;
use tokio_util::sync::CancellationToken;

use crate::args::{ChunkserverArgs, MasterArgs, UpArgs};
use crate::cmd::shutdown_signal;

/// `dfs master`: runs a master until Ctrl-C or SIGTERM.
pub(crate) async fn master(a: MasterArgs) -> anyhow::Result<()> {
    let mut config = dfs_master::MasterConfig::new(&a.data);
    config.replication = a.replication;
    config.chunk_size = a.chunk_size;
    config.dead_after = a.dead_after;
    config.trash_retention = a.trash_retention;
    config.safe_start = a.safe_start;
    config.balance_threshold = f64::from(a.balance_threshold) / 100.0;
    config.max_append = a.max_append;
    config.lease = a.lease;
    config.token_ttl = a.token_ttl;
    config.forget_dead_after = a.forget_dead_after;
    let file = match &a.config {
        Some(p) => dfs_cli::config::read(p)?,
        None => Default::default(),
    };
    if let Some(dir) = a.tls.as_ref().or(file.tls.as_ref()) {
        config.tls = Some(dfs_cli::tls::load_server(dir)?);
    }
    config.secret = credentials::server_secret(a.secret_file.as_deref(), &file)?;
    config.validate()?;
    if let Some(adv) = &a.advertise {
        tracing::info!(advertise = %adv, "clients should dial the advertised address");
    }
    let http = bind_http(a.http).await?;
    serve(a.listen, |listener, token| async move {
        Ok(dfs_master::run_with_http(config, listener, http, token).await?)
    })
    .await
}

/// The HTTP listener for `--http`, if given.
async fn bind_http(addr: Option<SocketAddr>) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    match addr {
        Some(addr) => Ok(Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} for --http"))?,
        )),
        None => Ok(None),
    }
}

/// `dfs chunkserver`: runs a chunkserver until Ctrl-C or SIGTERM.
pub(crate) async fn chunkserver(a: ChunkserverArgs, master: &str) -> anyhow::Result<()> {
    let file = match &a.config {
        Some(p) => dfs_cli::config::read(p)?,
        None => Default::default(),
    };
    let secret =
        credentials::server_secret(a.secret_file.as_deref(), &file)?.with_context(|| {
            "no cluster secret: pass --secret-file or set $DFS_SECRET \
         (the master wrote it to cluster.secret in its data dir)"
        })?;
    let mut config = dfs_chunkserver::ChunkserverConfig::new(&a.data, master.to_string(), secret);
    config.capacity = a.capacity;
    config.heartbeat = a.heartbeat;
    config.full_report_every = a.full_report_every;
    config.advertise = a.advertise;
    config.scrub_rate = a.scrub_rate;
    config.scrub_idle = a.scrub_idle;
    config.replication_rate = a.replication_rate;
    config.direct_io = !a.buffered_writes;
    config.pack_below = a.pack_below;
    if let Some(dir) = a.tls.as_ref().or(file.tls.as_ref()) {
        config.tls = Some(dfs_cli::tls::load_server(dir)?);
    }
    config.validate()?;
    let http = bind_http(a.http).await?;
    serve(a.listen, |listener, token| async move {
        Ok(dfs_chunkserver::run_with_http(config, listener, http, token).await?)
    })
    .await
}

/// Servers hold a socket per client and peer: take every file descriptor the hard
/// limit allows rather than the (often 1024) soft default.
pub(crate) fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!(error = %e, "could not raise the open file limit");
        }
    }
}

/// Binds `addr`, runs the server built by `start` on it, and on Ctrl-C or SIGTERM
/// cancels it and waits for its clean stop.
pub(crate) async fn serve<F, Fut>(addr: SocketAddr, start: F) -> anyhow::Result<()>
where
    F: FnOnce(tokio::net::TcpListener, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let token = CancellationToken::new();
    let server = start(listener, token.clone());
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => return r,
        _ = shutdown_signal() => {
            tracing::info!("stopping");
            token.cancel();
        }
    }
    server.await
}

pub(crate) async fn up(a: UpArgs, master: &str) -> anyhow::Result<()> {
    let listen = match a.listen {
        Some(addr) => addr,
        None => master.parse().with_context(|| {
            format!("--master {master} is not an IP:port to listen on; pass --listen")
        })?,
    };
    if a.chunkservers == 0 {
        bail!("--chunkservers must be at least 1");
    }
    let replication = a
        .replication
        .unwrap_or_else(|| u32::try_from(a.chunkservers.min(3)).unwrap_or(3));
    let options = ClusterOptions {
        data_dir: a.data.clone(),
        master_addr: listen,
        chunkserver_base_port: if listen.port() == 0 {
            0
        } else {
            listen.port().saturating_add(1)
        },
        chunkservers: a.chunkservers,
        replication,
        chunk_size: a.chunk_size,
        dead_after: a.dead_after,
        heartbeat: a.heartbeat,
        capacity: a.capacity,
        trash_retention: a.trash_retention,
        safe_start: a.safe_start,
        scrub_rate: 16 << 20,
        scrub_idle: Duration::from_secs(60),
        max_append: None,
        lease: Duration::from_secs(60),
        forget_dead_after: Duration::from_secs(24 * 3600),
        tls: None,
        sync_gate: None,
        clock: None,
        http: (!a.no_http).then_some(a.http),
        direct_io: !a.buffered_writes,
        pack_below: a.pack_below,
        report_piece: dfs_chunkserver::DEFAULT_REPORT_PIECE,
    };
    let mut options = options;
    if a.tls {
        let dir = a.data.join("tls");
        if !dir.join(dfs_cli::tls::CA_CERT).exists() {
            dfs_cli::tls::init(&dir, &[listen.ip().to_string()])?;
        }
        options.tls = Some(dir);
    }
    let cluster = LocalCluster::start(options).await?;
    let key_path = up_admin_key(&cluster, &a.data).await?;
    if !a.tls {
        // A CA left by an earlier `dfs up --tls` on this address would make client
        // verbs try TLS against this plain cluster.
        if let Some(stale) = dfs_cli::tls::default_ca_path(&cluster.master_addr().to_string()) {
            let _ = std::fs::remove_file(stale);
        }
    }
    if a.tls {
        let ca = a.data.join("tls").join(dfs_cli::tls::CA_CERT);
        let stored = dfs_cli::tls::default_ca_path(&cluster.master_addr().to_string())
            .context("neither $XDG_CONFIG_HOME nor $HOME is set: cannot store the CA")?;
        let pem = std::fs::read_to_string(&ca).with_context(|| format!("read {}", ca.display()))?;
        credentials::write_private(&stored, pem.trim_end())?;
    }
    let addrs: Vec<String> = cluster
        .chunkserver_addrs()
        .iter()
        .map(ToString::to_string)
        .collect();
    eprintln!(
        "dfs up: master on {}, {} chunkservers on {}, replication {}, data in {}\n\
         dfs up: admin key in {} (client verbs on this machine find it with no flags)",
        cluster.master_addr(),
        addrs.len(),
        addrs.join(", "),
        replication,
        a.data.display(),
        key_path.display()
    );
    if let Some(http) = cluster.master_http_addr() {
        let metrics: Vec<String> = cluster
            .chunkserver_http_addrs()
            .iter()
            .flatten()
            .map(|a| format!("http://{a}/metrics"))
            .collect();
        eprintln!(
            "dfs up: status page on http://{http}/ (metrics on http://{http}/metrics; chunkservers' on {})",
            metrics.join(", ")
        );
    }
    eprintln!("dfs up: try `dfs put FILE /FILE` from another terminal; Ctrl-C stops the cluster");
    shutdown_signal().await;
    eprintln!("dfs up: stopping");
    cluster.shutdown().await
}

/// Makes sure the local cluster has an admin key called `admin`, kept in the data
/// dir and where client verbs for this master look by default; returns that path.
pub(crate) async fn up_admin_key(cluster: &LocalCluster, data: &Path) -> anyhow::Result<PathBuf> {
    const NAME: &str = "admin";
    let admin = cluster.client();
    let kept = data.join("admin.key");
    let existing = credentials::read_key_file(&kept).ok();
    let listed = admin.list_keys().await?;
    let key = match existing {
        Some(k) if k.name == NAME && listed.iter().any(|i| i.name == NAME) => k,
        _ => {
            if listed.iter().any(|i| i.name == NAME) {
                admin.remove_key(NAME).await?;
            }
            let k = admin.create_key(NAME, Role::Admin).await?;
            credentials::write_private(&kept, &k.encode())?;
            k
        }
    };
    let master = cluster.master_addr().to_string();
    let path = credentials::default_key_path(&master)
        .context("neither $XDG_CONFIG_HOME nor $HOME is set: cannot store the admin key")?;
    credentials::write_private(&path, &key.encode())?;
    Ok(path)
}
