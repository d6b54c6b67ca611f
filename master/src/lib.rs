//! The dfs master: the namespace, the chunk map, placement and chunkserver liveness.
//!
//! Layout:
//! - [`config`]: `MasterConfig` and its validation.
//! - [`path`]: path normalisation and limits.
//! - [`oplog`]: the operation log: record format, group commit, recovery, compaction.
//! - [`mutation`]: the logical mutations the log records.
//! - [`store`]: the sled seam (the only module that imports sled).
//! - [`namespace`]: plans mutations and applies them to the store; derived indexes.
//! - [`access`]: who may send what: handshake key lookup, roles per request.
//! - [`secret`]: the cluster secret: configured, or generated in the data dir.
//! - [`chunkmap`]: chunkservers, replica locations (not persisted), placement.
//! - [`clock`]: monotonic time and cluster seconds, with logged floors; drivable by tests.
//! - [`service`]: the answer to each request.
//! - [`recovery`]: start-up: open the store, replay the log, checkpoint.
//! - [`server`]: `run`: accept loop, upkeep and checkpoint tasks, shutdown.
//! - [`metrics`]: Prometheus metrics: requests, the log's fsyncs, cluster health.
//! - [`recent`]: the recent operations the status page shows.
//! - [`http`]: the status page, its JSON API and `/metrics` (`--http`).
//! - [`footprint`]: estimated bytes per in-memory structure.

pub mod access;
pub mod chunkmap;
pub mod clock;
pub mod config;
pub mod error;
pub mod footprint;
pub mod http;
pub mod metrics;
pub mod mutation;
pub mod namespace;
pub mod oplog;
pub mod path;
pub mod recent;
pub mod recovery;
pub mod secret;
pub mod server;
pub mod service;
pub mod store;

pub use config::MasterConfig;
pub use error::MasterError;
pub use server::{run, run_with_http};

/// Seconds since the Unix epoch, for the root's time in a new store (the running
/// master reads its [`clock::Clock`]).
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
