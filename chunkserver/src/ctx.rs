//! What every connection handler and background task of a chunkserver shares.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use dfs_protocol::auth::TokenKey;
use dfs_protocol::{Identity, ReplicateOrder};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::KeyStore;
use crate::config::ChunkserverConfig;
use crate::store::ChunkStore;

/// What every connection handler shares.
#[derive(Debug)]
pub struct Ctx {
    pub store: ChunkStore,
    pub config: ChunkserverConfig,
    /// Copy orders from the master, for the replicator.
    pub replicate: mpsc::Sender<ReplicateOrder>,
    /// Requests being served, reported as load in heartbeats.
    pub busy: AtomicU32,
    /// Paces chunk copies to the configured bandwidth.
    pub copy_pace: crate::repair::Pace,
    /// Append leases held as primary.
    pub leases: crate::append::Leases,
    /// Bytes of records held in memory by appends, in any role.
    pub append_budget: Arc<Semaphore>,
    /// Streams (writes, reads, appends) served at once: each may hold a thread of the
    /// blocking pool, so they stay well below its size and never starve heartbeats,
    /// deletions or the scrubber.
    pub streams: Arc<Semaphore>,
    /// Who this server is when it dials the master or a peer.
    pub identity: Identity,
    /// This server's own key, which proves its id to the master.
    pub id_key: [u8; 32],
    /// Checks chunk tokens.
    pub token_key: TokenKey,
    /// Client keys, as the master last pushed them.
    pub keys: KeyStore,
    /// The server's task tree: tasks started by a request (an append lease's
    /// appender) live here, so shutdown waits for them.
    pub tasks: TaskTracker,
    /// Cancelled when the server stops.
    pub stop: CancellationToken,
    pub metrics: crate::metrics::ChunkserverMetrics,
    /// Idle connections to the next replicas of write chains.
    pub peers: crate::net::Peers,
}

/// Counts a request as load while it is alive.
pub(crate) struct Busy<'a>(&'a AtomicU32);

impl<'a> Busy<'a> {
    pub(crate) fn new(counter: &'a AtomicU32) -> Busy<'a> {
        counter.fetch_add(1, Ordering::Relaxed);
        Busy(counter)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
