//! The dfs chunkserver: stores chunks as checksummed files, serves verified reads,
//! takes part in write pipelines and heartbeats the master.
//!
//! Layout:
//! - [`config`]: `ChunkserverConfig` and its validation.
//! - [`identity`]: the server id kept in the data dir, and the data dir lock.
//! - [`store`]: chunk and checksum files on disk (blocking; used via the blocking pool).
//! - [`failpoint`]: named steps inside the store's writes, where tests inject faults.
//! - [`ctx`]: what every handler and background task shares.
//! - [`access`]: client keys pushed by the master; who may send what; chunk tokens.
//! - [`server`]: accept loop, authentication, dispatch.
//! - [`write`]: pipelined chunk writes; [`read`]: verified, streamed reads.
//! - [`stream`]: data packets after a request, and the disk writer.
//! - [`append`]: record append: leases held as primary, batches, secondaries.
//! - [`heartbeat`]: registration and heartbeats; hands copy orders to the replicator.
//! - [`repair`]: copying chunks from other replicas at the master's order.
//! - [`scrub`]: background verification of idle chunks.
//! - [`compact`]: background compaction of the pack files small chunks live in.
//! - [`net`]: dialing peers.
//! - [`metrics`]: Prometheus metrics, served at `/metrics` with `--http`.

pub mod access;
pub mod append;
pub mod compact;
pub mod config;
pub mod ctx;
pub mod error;
pub mod failpoint;
pub mod heartbeat;
pub mod identity;
pub mod metrics;
pub mod net;
pub mod read;
pub mod repair;
pub mod scrub;
pub mod server;
pub mod store;
pub mod stream;
pub mod write;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{ChunkserverConfig, DEFAULT_PACK_BELOW, DEFAULT_REPORT_PIECE};
pub use error::{ChunkserverError, StoreError};

/// Copy orders waiting for the replicator; more are dropped and reissued by the master.
const REPLICATION_QUEUE: usize = 256;

/// The address peers should dial, from `--advertise` or the bound address.
fn advertised(config: &ChunkserverConfig, local: SocketAddr) -> Result<String, ChunkserverError> {
    match &config.advertise {
        Some(a) => Ok(a.clone()),
        None if local.ip().is_unspecified() => Err(ChunkserverError::Config(format!(
            "listening on {local}: pass --advertise with the address other machines should dial"
        ))),
        None => Ok(local.to_string()),
    }
}

/// Runs a chunkserver on `listener` until `shutdown` is cancelled.
pub async fn run(
    config: ChunkserverConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ChunkserverError> {
    run_with_http(config, listener, None, shutdown).await
}

/// `run`, also serving `/metrics` on `http` when given.
pub async fn run_with_http(
    config: ChunkserverConfig,
    listener: TcpListener,
    http: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), ChunkserverError> {
    config.validate()?;
    let local = listener
        .local_addr()
        .map_err(|e| StoreError::io("listener address", e))?;
    let advertise = advertised(&config, local)?;
    let dir = config.data_dir.clone();
    let capacity = config.capacity;
    let direct_io = config.direct_io;
    let pack_below = config.pack_below;
    let (lock, (id, id_key), store) =
        tokio::task::spawn_blocking(move || -> Result<_, ChunkserverError> {
            let lock = identity::lock_data_dir(&dir)?;
            let id = identity::load_or_create(&dir)?;
            let id_key = identity::load_or_create_key(&dir)?;
            let store = store::ChunkStore::open(&dir, capacity)?
                .with_direct_io(direct_io)
                .with_pack_below(pack_below);
            Ok((lock, (id, id_key), store))
        })
        .await
        .map_err(|e| ChunkserverError::Task(e.to_string()))??;
    tracing::info!(%id, %advertise, chunks = store.len(), capacity = store.capacity(), "chunkserver starting");

    let (replicate, orders) = tokio::sync::mpsc::channel(REPLICATION_QUEUE);
    let copy_pace = repair::Pace::new(config.replication_rate);
    let identity = match &config.tls {
        Some(tls) => dfs_protocol::Identity::chunkserver(id, &config.secret).with_tls(tls.clone()),
        None => dfs_protocol::Identity::chunkserver(id, &config.secret),
    };
    let token_key = config.secret.token_key();
    let streams = Arc::new(tokio::sync::Semaphore::new(config.max_streams));
    // Stops everything below: the caller's shutdown, or the master refusing us.
    let stop = shutdown.child_token();
    let tracker = TaskTracker::new();
    let ctx = Arc::new(ctx::Ctx {
        tasks: tracker.clone(),
        stop: stop.clone(),
        store,
        identity,
        id_key,
        token_key,
        streams,
        keys: Default::default(),
        config,
        replicate,
        busy: Default::default(),
        copy_pace,
        leases: Default::default(),
        append_budget: Arc::new(tokio::sync::Semaphore::new(append::APPEND_BUDGET as usize)),
        metrics: Default::default(),
        peers: Default::default(),
    });
    if let Some(http) = http {
        tracker.spawn(metrics::serve(ctx.clone(), http, stop.clone()));
    }
    let beats = tracker.spawn(heartbeat::heartbeat_loop(
        ctx.clone(),
        id,
        advertise,
        stop.clone(),
    ));
    tracker.spawn(repair::replicator(ctx.clone(), orders, stop.child_token()));
    tracker.spawn(scrub::scrubber(ctx.clone(), stop.child_token()));
    tracker.spawn(compact::compactor(ctx.clone(), stop.child_token()));
    server::accept_loop(ctx, listener, stop.clone(), tracker.clone()).await;
    tracker.close();
    tracker.wait().await;
    drop(lock);
    beats
        .await
        .map_err(|e| ChunkserverError::Task(e.to_string()))??;
    tracing::info!(%id, "chunkserver stopped");
    Ok(())
}
