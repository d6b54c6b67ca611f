//! The client's error: what failed, and whether trying again could help.

use std::time::Duration;

use dfs_protocol::{ChunkHandle, ErrorCode, ProtocolError};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The master or a chunkserver answered with an error code.
    #[error(transparent)]
    Remote(#[from] ErrorCode),
    /// Talking to a peer failed (refused, reset, garbled).
    #[error("{addr}: {source}")]
    Peer {
        addr: String,
        #[source]
        source: ProtocolError,
    },
    #[error("{addr}: no answer within {after:?}")]
    Timeout { addr: String, after: Duration },
    /// No replica of a chunk could serve it.
    #[error("chunk {handle}: no replica could serve it ({last})")]
    NoReplica { handle: ChunkHandle, last: String },
    #[error("{addr}: unexpected reply {got}")]
    Unexpected { addr: String, got: &'static str },
    /// A reply of the right kind whose contents do not add up.
    #[error("{addr}: malformed reply: {reason}")]
    BadReply { addr: String, reason: String },
    /// Reading what the caller asked us to store.
    #[error("reading input: {0}")]
    Input(#[source] std::io::Error),
    /// Writing what the caller asked us to fetch.
    #[error("writing output: {0}")]
    Output(#[source] std::io::Error),
    /// A task this client started for part of an operation ended without an answer
    /// (it panicked, or its runtime is shutting down).
    #[error("a task of this client failed: {reason}")]
    Task { reason: String },
}

impl ClientError {
    /// Wraps a failed exchange with `addr`; error codes stay codes.
    pub fn peer(addr: &str, e: ProtocolError) -> ClientError {
        match e {
            ProtocolError::Remote(code) => ClientError::Remote(code),
            source => ClientError::Peer {
                addr: addr.to_string(),
                source,
            },
        }
    }

    /// The peer that did not answer, or broke the exchange, if that is what failed
    /// (not an error it answered with, nor a reply that failed its checks).
    pub fn unreachable(&self) -> Option<&str> {
        match self {
            ClientError::Peer { addr, .. } | ClientError::Timeout { addr, .. } => Some(addr),
            _ => None,
        }
    }

    /// Whether the same operation may succeed if tried again.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Remote(code) => code.is_retryable(),
            ClientError::Peer { .. }
            | ClientError::Timeout { .. }
            | ClientError::NoReplica { .. }
            | ClientError::BadReply { .. } => true,
            ClientError::Unexpected { .. }
            | ClientError::Input(_)
            | ClientError::Output(_)
            | ClientError::Task { .. } => false,
        }
    }
}
