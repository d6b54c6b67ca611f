//! The chunkserver's errors: per-request answers apart from fatal conditions.

use dfs_protocol::ErrorCode;

/// A chunk store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The request cannot be served as asked (unknown chunk, stale version, bad range,
    /// checksum mismatch, no space): answered to the peer with this code.
    #[error(transparent)]
    Refused(#[from] ErrorCode),
    /// The disk failed under us.
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl StoreError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> StoreError {
        StoreError::Io {
            context: context.into(),
            source,
        }
    }

    /// The code to answer a peer with.
    pub fn to_code(&self) -> ErrorCode {
        match self {
            StoreError::Refused(code) => code.clone(),
            StoreError::Io { context, source } => ErrorCode::Io {
                reason: format!("{context}: {source}"),
            },
        }
    }
}

/// Why the chunkserver could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ChunkserverError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a background task failed: {0}")]
    Task(String),
    /// The master refused this server's credentials: a wrong cluster secret.
    #[error("the master refused this chunkserver: {0}")]
    Refused(String),
}
