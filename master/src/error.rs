//! The master's errors: fatal conditions kept apart from per-request answers.

use dfs_protocol::ErrorCode;

use crate::oplog::LogError;

/// The metadata store failed or holds something this build cannot read.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("record {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("record {key} has format version {found}; this build reads up to {supported}")]
    UnsupportedFormat {
        key: String,
        found: u8,
        supported: u8,
    },
    #[error("encoding a record: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// Why a request failed: the client's fault or the world's (answered with a code), or
/// the store's (answered as an I/O error and logged, since a human must look).
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error(transparent)]
    Client(#[from] ErrorCode),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The operation log cannot take or persist records: nothing can be acknowledged.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Why the master could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("metadata store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("operation log record {seq}: {reason}")]
    BadRecord { seq: u64, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("a background task failed: {0}")]
    Task(String),
}
