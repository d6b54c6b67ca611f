//! The embeddable async dfs client.
//!
//! ```no_run
//! # async fn demo() -> Result<(), dfs_client::ClientError> {
//! let key = dfs_client::ClientKey::parse(&std::env::var("DFS_KEY").unwrap_or_default())
//!     .expect("a key from `dfs key create`");
//! let client = dfs_client::Client::new("127.0.0.1:7070", dfs_client::Identity::key(&key));
//! client.mkdir("/logs", true).await?;
//! let stored = client.put("/logs/a.txt", &b"hello"[..], Default::default()).await?;
//! let mut out = Vec::new();
//! client.get("/logs/a.txt", &mut out).await?;
//! assert_eq!(stored, out.len() as u64);
//! # Ok(()) }
//! ```
//!
//! Layout:
//! - [`client`]: `Client` — metadata calls, the streaming put, the parallel get.
//! - [`copy`]: server-side copies and checksums composed from chunk digests.
//! - [`append`]: record append, and the length of chunks being appended to.
//! - [`keys`]: issuing, listing and removing client keys.
//! - [`listing`]: directory, trash, fsck and status listings in pages.
//! - [`rewrite`]: writes at any offset and truncates, by copy-on-write chunks.
//! - `suspects`: chunkservers that failed this client lately, tried last.
//! - [`pool`]: dialing with a timeout and the handshake; idle connections per address.
//! - `link`: the one pipelined connection that carries a client's metadata calls.
//! - `task`: work fanned out to tasks of its own, aborted when no longer awaited.
//! - [`error`]: `ClientError`, which says whether a retry makes sense.

pub mod append;
pub mod client;
pub mod copy;
pub mod error;
pub mod keys;
mod link;
pub mod listing;
pub mod pool;
pub mod rewrite;
mod suspects;
mod task;

pub use append::AppendOptions;
pub use client::{Client, ClientOptions, PutOptions, Routes, SetAttr};
pub use copy::FileChecksum;
pub use dfs_protocol::{
    BalanceReport, ChunkInfo, ClientKey, ClusterSecret, ClusterStatus, DirEntry, ErrorCode,
    FileHealth, FileKind, FileStat, FsckReport, Identity, KeyInfo, Role, ServerStatus, TrashInfo,
};
pub use error::ClientError;
pub use listing::Summary;
