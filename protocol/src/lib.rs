//! The dfs wire protocol: frames, the codec, every message and error code.
//!
//! Layout:
//! - [`frame`]: the fixed prelude, limits, the tokio-util `Decoder`/`Encoder`.
//! - [`message`]: `Request` and `Response`, append-only enums, and their records.
//! - [`error`]: `ErrorCode` (crosses the wire), `CodecError`, `ProtocolError`.
//! - [`ids`]: newtypes for handles, versions, server and request ids.
//! - [`auth`]: the cluster secret, client keys, handshake proofs, chunk tokens.
//! - [`checksum`]: blake3 per 64 KiB block, computed and verified the same everywhere.
//! - [`conn`]: a framed connection over any byte stream, request/reply and handshake.
//! - [`spares`]: large frames' read buffers, reused once their payloads are dropped.
//!
//! - [`net`] (feature `net`): TCP framing and dialing with the handshake.
//! - [`grace`] (feature `net`): bounded shutdown of connection tasks.
//!
//! Without `net` nothing here touches a socket; `docs/protocol.md` is the written spec.

pub mod auth;
pub mod checksum;
pub mod conn;
pub mod error;
pub mod frame;
#[cfg(feature = "net")]
pub mod grace;
pub mod ids;
pub mod message;
#[cfg(feature = "net")]
pub mod net;
pub mod spares;

pub use auth::{ChunkToken, ClientKey, ClusterSecret, Credential, KeyInfo, KeyTable, Peer, Role};
pub use conn::{write_frame, Accepted, Connection, Identity, Session};
pub use error::{CodecError, ErrorCode, ProtocolError};
pub use frame::{Body, Frame, FrameCodec, Limits};
pub use ids::{ChunkHandle, ChunkVersion, RequestId, ServerId, UploadId};
pub use message::*;

/// Carried by `Hello`: "DFS" and a zero byte.
pub const HANDSHAKE_MAGIC: [u8; 4] = *b"DFS\0";
/// Version of the message set; peers must agree exactly.
pub const PROTOCOL_VERSION: u32 = 11;
/// Size of a data packet in a pipelined write or a streamed read.
pub const PACKET_SIZE: usize = 1 << 20;
/// Checksum block: blake3 covers each block of this many bytes of a chunk.
pub const CHECKSUM_BLOCK: u64 = 64 << 10;
