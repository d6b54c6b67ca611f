//! The chunkserver's configuration, validated before anything binds.

use std::path::PathBuf;
use std::time::Duration;

use dfs_protocol::ClusterSecret;

use crate::error::ChunkserverError;

/// Packing is off by default: each chunk keeps a file of its own, named by its
/// handle and holding its raw bytes, which tools that look at a chunkserver's disk
/// rely on. `--pack-below 256KiB` is what the small-file figures were measured with.
pub const DEFAULT_PACK_BELOW: u64 = 0;

/// Chunks per message of a full report: about 2.2 MB of a message's 16 MiB.
pub const DEFAULT_REPORT_PIECE: usize = 100_000;

#[derive(Clone, Debug)]
pub struct ChunkserverConfig {
    /// Holds the identity file and `chunks/`.
    pub data_dir: PathBuf,
    /// The master's address.
    pub master: String,
    /// Address others dial to reach us; defaults to the listener's address.
    pub advertise: Option<String>,
    /// Bytes this server accepts; defaults to what is used plus the disk's free space.
    pub capacity: Option<u64>,
    pub heartbeat: Duration,
    /// Between heartbeats, which carry only what changed, a full chunk report goes to
    /// the master about this often (give or take a tenth, so servers started together
    /// spread out): a safety net for any change a heartbeat failed to carry.
    pub full_report_every: Duration,
    /// Chunks per message of a full report: the registration carries the first so
    /// many and heartbeats sent straight after it the rest, since one message holds
    /// at most 16 MiB (about 750,000 chunks).
    pub report_piece: usize,
    pub max_connections: usize,
    /// Limit on dialing a peer or the master.
    pub connect_timeout: Duration,
    /// A peer silent this long in the middle of a transfer is given up on.
    pub io_timeout: Duration,
    /// Bytes per second the scrubber may verify; 0 turns it off.
    pub scrub_rate: u64,
    /// A chunk untouched this long counts as idle and may be scrubbed.
    pub scrub_idle: Duration,
    /// Chunk copies (repairs, re-replication) run at once.
    pub replication_concurrency: usize,
    /// Bytes per second all copies together may pull; 0 = unlimited.
    pub replication_rate: u64,
    /// Shared with the master: proves this server and checks chunk tokens.
    pub secret: ClusterSecret,
    /// A connection silent this long between requests is closed.
    pub idle_timeout: Duration,
    /// The longest one request (a whole chunk write or read) may take.
    pub request_deadline: Duration,
    /// Streams served at once (each may hold a blocking-pool thread).
    pub max_streams: usize,
    /// Serve, and dial the master and peers, over TLS with these settings.
    pub tls: Option<dfs_protocol::net::Tls>,
    /// Write new chunks with `O_DIRECT` (where the file system allows it) instead of
    /// through the page cache: a fraction of the CPU per byte, same durability.
    pub direct_io: bool,
    /// New chunks of at most this many bytes (up to 16 MiB) go into shared pack files
    /// instead of files of their own (see the store's `pack` module); 0 packs none.
    pub pack_below: u64,
}

impl ChunkserverConfig {
    pub fn new(
        data_dir: impl Into<PathBuf>,
        master: impl Into<String>,
        secret: ClusterSecret,
    ) -> ChunkserverConfig {
        ChunkserverConfig {
            data_dir: data_dir.into(),
            master: master.into(),
            advertise: None,
            capacity: None,
            heartbeat: Duration::from_secs(1),
            full_report_every: Duration::from_secs(3600),
            report_piece: DEFAULT_REPORT_PIECE,
            max_connections: 4096,
            connect_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(60),
            scrub_rate: 16 << 20,
            scrub_idle: Duration::from_secs(60),
            replication_concurrency: 2,
            replication_rate: 64 << 20,
            secret,
            idle_timeout: Duration::from_secs(120),
            request_deadline: Duration::from_secs(600),
            // Tokio's blocking pool has 512 threads: streams keep to half of it.
            max_streams: 256,
            tls: None,
            direct_io: true,
            pack_below: DEFAULT_PACK_BELOW,
        }
    }

    pub fn validate(&self) -> Result<(), ChunkserverError> {
        if self.heartbeat < Duration::from_millis(10) || self.heartbeat > Duration::from_secs(600) {
            return Err(ChunkserverError::Config(
                "--heartbeat must be between 10ms and 10min".into(),
            ));
        }
        if self.full_report_every < self.heartbeat {
            return Err(ChunkserverError::Config(
                "--full-report-every must be at least --heartbeat".into(),
            ));
        }
        if self.report_piece == 0 {
            return Err(ChunkserverError::Config(
                "report_piece must be positive".into(),
            ));
        }
        if self.capacity == Some(0) {
            return Err(ChunkserverError::Config(
                "--capacity must be positive".into(),
            ));
        }
        if self.master.is_empty() {
            return Err(ChunkserverError::Config("--master is required".into()));
        }
        if self.max_streams == 0 || self.max_streams > 400 {
            return Err(ChunkserverError::Config(
                "max_streams must be between 1 and 400 (the blocking pool has 512 threads)".into(),
            ));
        }
        if self.idle_timeout < Duration::from_secs(1)
            || self.request_deadline < Duration::from_secs(1)
        {
            return Err(ChunkserverError::Config(
                "idle timeout and request deadline must be at least 1s".into(),
            ));
        }
        if self.tls.as_ref().is_some_and(|t| !t.serves()) {
            return Err(ChunkserverError::Config(
                "TLS needs a certificate and key to serve".into(),
            ));
        }
        if self.max_connections == 0 {
            return Err(ChunkserverError::Config(
                "max_connections must be positive".into(),
            ));
        }
        Ok(())
    }
}
