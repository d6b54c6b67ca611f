//! Errors: the typed codes that cross the wire, and the codec's own failures.

use serde::{Deserialize, Serialize};

use crate::ids::{ChunkHandle, ChunkVersion};

/// An error answered by a remote peer. Stable and append-only: bincode encodes the
/// variant index, so new codes go at the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ErrorCode {
    #[error("{path}: no such file or directory")]
    NotFound { path: String },
    #[error("{path}: already exists")]
    AlreadyExists { path: String },
    #[error("{path}: not a directory")]
    NotADirectory { path: String },
    #[error("{path}: is a directory")]
    IsADirectory { path: String },
    #[error("{path}: directory not empty")]
    NotEmpty { path: String },
    #[error("{path}: invalid path: {reason}")]
    InvalidPath { path: String, reason: String },
    #[error("chunk {handle}: checksum mismatch at offset {offset}")]
    ChecksumMismatch { handle: ChunkHandle, offset: u64 },
    #[error("chunk {handle}: stale version (have {have}, want {want})")]
    StaleVersion {
        handle: ChunkHandle,
        have: ChunkVersion,
        want: ChunkVersion,
    },
    #[error("no space left: {needed} bytes needed, {available} available")]
    NoSpace { needed: u64, available: u64 },
    #[error("not enough chunkservers: {wanted} replicas wanted, {alive} chunkservers alive")]
    NotEnoughServers { wanted: u32, alive: u32 },
    #[error("chunk {handle}: not held here")]
    UnknownChunk { handle: ChunkHandle },
    #[error("upload unknown to the master (it may have restarted): start the put again")]
    UnknownUpload,
    #[error("protocol version mismatch: we speak {ours}, peer speaks {theirs}")]
    VersionMismatch { ours: u32, theirs: u32 },
    #[error("bad request: {reason}")]
    BadRequest { reason: String },
    #[error("server I/O error: {reason}")]
    Io { reason: String },
    #[error("unavailable: {reason}")]
    Unavailable { reason: String },
    #[error("invalid argument: {reason}")]
    InvalidArgument { reason: String },
    #[error("{path}: not in the trash")]
    NotInTrash { path: String },
    /// A replica of a write pipeline failed; the writer retries without it.
    #[error("replica {addr} failed: {reason}")]
    ReplicaFailed { addr: String, reason: String },
    /// A record did not fit in the chunk, which is now closed at `size`.
    #[error("chunk {handle} is full at {size} bytes")]
    ChunkFull { handle: ChunkHandle, size: u64 },
    /// An append reached a server that holds no lease on the chunk (any more).
    #[error("chunk {handle}: no append lease held here")]
    NotPrimary { handle: ChunkHandle },
    /// The handshake failed: unknown, removed or wrong credential, or a bad proof.
    #[error("authentication failed: {reason}")]
    AuthFailed { reason: String },
    /// The peer is authenticated but its role does not allow the request.
    #[error("permission denied: {reason}")]
    Forbidden { reason: String },
    /// A chunk token was missing, forged, expired, or for something else.
    #[error("chunk {handle}: token refused: {reason}")]
    TokenRefused { handle: ChunkHandle, reason: String },
}

impl ErrorCode {
    /// Whether the same request may succeed if tried again (elsewhere or later).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ErrorCode::ChecksumMismatch { .. }
                | ErrorCode::StaleVersion { .. }
                | ErrorCode::UnknownChunk { .. }
                | ErrorCode::Io { .. }
                | ErrorCode::Unavailable { .. }
                | ErrorCode::ReplicaFailed { .. }
                | ErrorCode::NotPrimary { .. }
        )
    }
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad frame magic {0:#06x}: peer does not speak dfs")]
    BadMagic(u16),
    #[error("unsupported frame version {0}")]
    UnsupportedVersion(u8),
    #[error("unknown frame kind {0}")]
    BadKind(u8),
    #[error("frame header of {len} bytes exceeds the limit of {max}")]
    HeaderTooLarge { len: u64, max: u64 },
    #[error("frame payload of {len} bytes exceeds the limit of {max}")]
    PayloadTooLarge { len: u64, max: u64 },
    #[error("undecodable frame header: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("unencodable frame header: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("connection closed in the middle of a frame")]
    Truncated,
}

/// A failed exchange on a connection: the transport broke, the peer answered out of
/// turn, or it answered with an error code.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("connection closed by peer")]
    Closed,
    #[error("unexpected reply {got} to {to}")]
    Unexpected { got: &'static str, to: &'static str },
    #[error("reply for request {got} while waiting for {want}")]
    RequestIdMismatch { got: u64, want: u64 },
    #[error(transparent)]
    Remote(#[from] ErrorCode),
}

impl ProtocolError {
    /// Whether a retry (on another connection or replica) may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProtocolError::Remote(code) => code.is_retryable(),
            _ => true,
        }
    }
}
