//! The master's configuration, validated before anything binds.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::MasterError;

pub const MAX_REPLICATION: u32 = 16;
pub const MIN_CHUNK_SIZE: u64 = 64 << 10;
pub const MAX_CHUNK_SIZE: u64 = 4 << 30;

/// Largest record appended atomically, whatever the chunk size.
pub const MAX_APPEND: u64 = 128 << 20;

#[derive(Clone, Debug)]
pub struct MasterConfig {
    /// Where the metadata store lives.
    pub data_dir: PathBuf,
    /// Default replicas per chunk.
    pub replication: u32,
    /// Size at which files are cut into chunks.
    pub chunk_size: u64,
    /// A chunkserver silent this long is dead.
    pub dead_after: Duration,
    /// Concurrent connections served; more wait in the accept queue.
    pub max_connections: usize,
    /// How long removed entries stay in the trash; zero removes at once.
    pub trash_retention: Duration,
    /// After a start, how long to wait for chunkservers to report before chunks may be
    /// declared missing or garbage deleted (left early once every chunk has a replica).
    pub safe_start: Duration,
    /// How often the store is flushed and the operation log compacted.
    pub checkpoint_interval: Duration,
    /// An upload with no allocation for this long is abandoned and its chunks reclaimed.
    pub upload_idle: Duration,
    /// The balancer moves chunks while the used fractions of the fullest and emptiest
    /// live chunkservers differ by more than this (0.10 = ten percentage points).
    pub balance_threshold: f64,
    /// Largest record appended atomically; `None` is a quarter of the chunk size.
    pub max_append: Option<u64>,
    /// How long an append lease lasts without being extended by its primary's heartbeats.
    pub lease: Duration,
    /// The cluster secret; `None` reads (or first creates) `cluster.secret` in the data dir.
    pub secret: Option<dfs_protocol::ClusterSecret>,
    /// How long a chunk token handed out with locations stays valid.
    pub token_ttl: Duration,
    /// A connection silent this long between requests is closed.
    pub idle_timeout: Duration,
    /// A chunkserver dead this long is forgotten (no longer listed or counted).
    pub forget_dead_after: Duration,
    /// Serve (and dial chunkservers) over TLS with these settings.
    pub tls: Option<dfs_protocol::net::Tls>,
    /// A test's fault knob: holds the operation log's writes while closed.
    pub sync_gate: Option<std::sync::Arc<crate::oplog::SyncGate>>,
    /// The clock the master reads: the machine's, or a test's manual one.
    pub clock: crate::clock::Clock,
}

impl MasterConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> MasterConfig {
        MasterConfig {
            data_dir: data_dir.into(),
            replication: 3,
            chunk_size: 64 << 20,
            dead_after: Duration::from_secs(10),
            max_connections: 4096,
            trash_retention: Duration::from_secs(24 * 3600),
            safe_start: Duration::from_secs(30),
            checkpoint_interval: Duration::from_secs(30),
            upload_idle: Duration::from_secs(3600),
            balance_threshold: 0.10,
            max_append: None,
            lease: Duration::from_secs(60),
            secret: None,
            token_ttl: Duration::from_secs(3600),
            idle_timeout: Duration::from_secs(300),
            forget_dead_after: Duration::from_secs(24 * 3600),
            tls: None,
            sync_gate: None,
            clock: crate::clock::Clock::system(),
        }
    }

    /// The largest atomic record: `--max-append`, else a quarter of the chunk size
    /// (at most `MAX_APPEND`, what a chunkserver holds in memory per record).
    pub fn max_append(&self) -> u64 {
        self.max_append
            .unwrap_or((self.chunk_size / 4).min(MAX_APPEND))
    }

    pub fn validate(&self) -> Result<(), MasterError> {
        if !(1..=MAX_REPLICATION).contains(&self.replication) {
            return Err(MasterError::Config(format!(
                "--replication must be between 1 and {MAX_REPLICATION}"
            )));
        }
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&self.chunk_size) {
            return Err(MasterError::Config(
                "--chunk-size must be between 64KiB and 4GiB".into(),
            ));
        }
        if self.dead_after < Duration::from_millis(100) {
            return Err(MasterError::Config(
                "--dead-after must be at least 100ms".into(),
            ));
        }
        if self.checkpoint_interval < Duration::from_millis(10) {
            return Err(MasterError::Config(
                "checkpoint interval must be at least 10ms".into(),
            ));
        }
        if self.upload_idle < Duration::from_secs(1) {
            return Err(MasterError::Config(
                "upload idle limit must be at least 1s".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.balance_threshold) {
            return Err(MasterError::Config(
                "--balance-threshold must be between 0 and 100 (percent)".into(),
            ));
        }
        if self
            .max_append
            .is_some_and(|m| m == 0 || m > self.chunk_size)
        {
            return Err(MasterError::Config(
                "--max-append must be positive and at most the chunk size".into(),
            ));
        }
        if self.lease < Duration::from_millis(100) {
            return Err(MasterError::Config("--lease must be at least 100ms".into()));
        }
        if self.token_ttl < Duration::from_secs(10) {
            return Err(MasterError::Config(
                "--token-ttl must be at least 10s".into(),
            ));
        }
        if self.forget_dead_after < self.dead_after {
            return Err(MasterError::Config(
                "--forget-dead-after must be at least --dead-after".into(),
            ));
        }
        if self.idle_timeout < Duration::from_secs(1) {
            return Err(MasterError::Config(
                "--idle-timeout must be at least 1s".into(),
            ));
        }
        if self.tls.as_ref().is_some_and(|t| !t.serves()) {
            return Err(MasterError::Config(
                "TLS needs a certificate and key to serve".into(),
            ));
        }
        if self.max_connections == 0 {
            return Err(MasterError::Config(
                "max_connections must be positive".into(),
            ));
        }
        Ok(())
    }
}
