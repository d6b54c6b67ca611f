//! Requests a test sends by hand, as a misbehaving peer would.

use dfs_protocol::{ChunkInfo, ChunkRequest, Request};

/// A read of `len` bytes at `offset` of `chunk`: as a client reads (`ReadStored`,
/// which a chunkserver may send from the file with `sendfile`) when `stored`, else
/// as a chunkserver copying a replica does (`ReadChunk`, verified by the sender).
pub fn chunk_read(chunk: &ChunkInfo, offset: u64, len: u64, stored: bool) -> Request {
    let (handle, version, token) = (chunk.handle, chunk.version, chunk.token);
    Request::Chunk(if stored {
        ChunkRequest::ReadStored {
            handle,
            version,
            offset,
            len,
            token,
        }
    } else {
        ChunkRequest::ReadChunk {
            handle,
            version,
            offset,
            len,
            token,
        }
    })
}
