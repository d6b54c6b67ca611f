//! Server-side copies and checksums: work on whole chunks that the chunkservers do
//! among themselves, so a file's bytes never pass through the client.
//!
//! - `copy`: a new file whose chunks are new chunks, each pulled by its new replicas
//!   from a replica of the source chunk (`CopyFrom`), then committed like a put.
//! - `checksum`: each chunk's blake3, computed by a replica, composed into the file's
//!   digest (`checksum::FileDigest`).

use dfs_protocol::checksum::FileDigest;
use dfs_protocol::{
    ChunkAllocation, ChunkInfo, CommittedChunk, ErrorCode, FileKind, ReplicateOrder, Request,
    Response, UploadId,
};
use dfs_protocol::{ChunkRequest, ClientToMaster};
use futures::{StreamExt, TryStreamExt};

use crate::client::{Client, PutOptions};
use crate::error::ClientError;

/// Chunks copied (or hashed) at once for one file.
const CHUNKS_AT_ONCE: usize = 4;

/// Allocations tried for one chunk of a copy before the copy fails.
const MAX_COPY_ATTEMPTS: u32 = 4;

/// A file's checksum as `dfs checksum` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileChecksum {
    pub size: u64,
    pub chunk_size: u64,
    pub chunks: u64,
    pub digest: [u8; 32],
}

impl Client {
    /// Copies the file at `src` to `dst` on the chunkservers. `dst` appears whole
    /// or not at all, as with a put; its replication is `options.replication`, else
    /// the source's. `progress` is called with the bytes of each chunk done.
    /// Returns the bytes copied.
    pub async fn copy(
        &self,
        src: &str,
        dst: &str,
        options: PutOptions,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<u64, ClientError> {
        let stat = self.stat(src).await?;
        if stat.kind == FileKind::Dir {
            return Err(ErrorCode::IsADirectory { path: stat.path }.into());
        }
        let replication = Some(options.replication.unwrap_or(stat.replication));
        let (upload, _) = self.begin_put(dst, replication, options.overwrite).await?;
        let copied = futures::stream::iter(stat.chunks.iter().map(|c| async move {
            let done = self.copy_chunk(upload, c).await?;
            progress(done.size);
            Ok::<_, ClientError>(done)
        }))
        .buffered(CHUNKS_AT_ONCE)
        .try_collect::<Vec<_>>()
        .await;
        let committed = match copied {
            Ok(chunks) => self
                .master_call(Request::Master(ClientToMaster::CommitPut {
                    upload,
                    chunks: chunks.clone(),
                }))
                .await
                .and_then(|r| match r {
                    Response::Ok => Ok(chunks),
                    other => Err(self.unexpected(&other)),
                }),
            Err(e) => Err(e),
        };
        match committed {
            Ok(chunks) => Ok(chunks.iter().map(|c| c.size).sum()),
            Err(e) => {
                self.abort_put(upload).await;
                Err(e)
            }
        }
    }

    /// One chunk of a copy: a new chunk, whose replicas each pull the source; a
    /// replica that fails is replaced by the master, at a new version, and the whole
    /// chain pulls again.
    async fn copy_chunk(
        &self,
        upload: UploadId,
        source: &ChunkInfo,
    ) -> Result<CommittedChunk, ClientError> {
        if source.replicas.is_empty() {
            return Err(ClientError::NoReplica {
                handle: source.handle,
                last: "no live replica is known to the master".into(),
            });
        }
        let mut alloc = match self
            .master_call(Request::Master(ClientToMaster::AllocateChunk { upload }))
            .await?
        {
            Response::ChunkAllocated(a) => a,
            other => return Err(self.unexpected(&other)),
        };
        let mut attempts = 1;
        loop {
            let pulls = alloc
                .replicas
                .iter()
                .enumerate()
                .map(|(i, addr)| self.pull_replica(addr, i, &alloc, source));
            let results = futures::future::join_all(pulls).await;
            let mut failed = Vec::new();
            let mut cause = None;
            for (addr, result) in alloc.replicas.iter().zip(results) {
                if let Err(e) = result {
                    tracing::info!(%addr, handle = %alloc.handle, error = %e, "replica copy failed");
                    failed.push(addr.clone());
                    cause = Some(e);
                }
            }
            let Some(cause) = cause else {
                return Ok(CommittedChunk {
                    handle: alloc.handle,
                    size: source.size,
                });
            };
            if attempts >= MAX_COPY_ATTEMPTS {
                return Err(cause);
            }
            attempts += 1;
            let retry = Request::Master(ClientToMaster::RetryChunk {
                upload,
                handle: alloc.handle,
                failed,
            });
            alloc = match self.master_call(retry).await {
                Ok(Response::ChunkAllocated(a)) => a,
                // No chain left: the copy's failure is the one worth reporting.
                Ok(_) | Err(_) => return Err(cause),
            };
        }
    }

    /// Has the new replica at `addr` pull `source`: from itself when it holds a
    /// replica of the source (no network), else from the source replicas in turn,
    /// starting at a different one per new replica to spread the reads.
    async fn pull_replica(
        &self,
        addr: &str,
        index: usize,
        alloc: &ChunkAllocation,
        source: &ChunkInfo,
    ) -> Result<(), ClientError> {
        let n = source.replicas.len();
        let first = source
            .replicas
            .iter()
            .position(|r| r == addr)
            .unwrap_or(index % n);
        let mut last = None;
        for k in 0..n {
            let from = &source.replicas[(first + k) % n];
            let request = Request::Chunk(ChunkRequest::CopyFrom {
                handle: alloc.handle,
                version: alloc.version,
                token: alloc.token,
                source: ReplicateOrder {
                    handle: source.handle,
                    version: source.version,
                    size: source.size,
                    source: from.clone(),
                    token: source.token,
                },
            });
            match self.server_call(addr, request).await {
                Ok(Response::ChunkWritten { handle, size })
                    if handle == alloc.handle && size == source.size =>
                {
                    return Ok(())
                }
                Ok(other) => {
                    return Err(ClientError::Unexpected {
                        addr: addr.to_string(),
                        got: other.name(),
                    })
                }
                // The new replica itself is unreachable: another source will not help.
                Err(e @ (ClientError::Peer { .. } | ClientError::Timeout { .. })) => return Err(e),
                Err(e) => {
                    tracing::info!(%addr, %from, error = %e, "copy from this source failed");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(ClientError::NoReplica {
            handle: source.handle,
            last: "no source replica".into(),
        }))
    }

    /// The checksum of the file at `path` composed from its chunks' blake3, each
    /// computed by one of the chunk's replicas (the next one if that fails).
    pub async fn checksum(&self, path: &str) -> Result<FileChecksum, ClientError> {
        let stat = self.stat(path).await?;
        if stat.kind == FileKind::Dir {
            return Err(ErrorCode::IsADirectory { path: stat.path }.into());
        }
        let chunk_size = self.chunk_size().await?;
        let digests = futures::stream::iter(stat.chunks.iter().map(|c| self.chunk_digest(c)))
            .buffered(CHUNKS_AT_ONCE)
            .try_collect::<Vec<_>>()
            .await?;
        let mut file = FileDigest::new(chunk_size);
        let mut size = 0u64;
        for (len, digest) in &digests {
            file.chunk(*len, digest);
            size = size.saturating_add(*len);
        }
        Ok(FileChecksum {
            size,
            chunk_size,
            chunks: digests.len() as u64,
            digest: file.finish(),
        })
    }

    /// The size the cluster cuts files into chunks at.
    pub async fn chunk_size(&self) -> Result<u64, ClientError> {
        match self
            .master_call(Request::Master(ClientToMaster::StatusPage {
                after: None,
                limit: 1,
            }))
            .await?
        {
            Response::StatusPage { status, .. } => Ok(status.chunk_size),
            other => Err(self.unexpected(&other)),
        }
    }

    /// A chunk's length and blake3 from one of its replicas. A replica whose length
    /// differs from the settled one (an open chunk appended to since) does not
    /// answer for the file as stat saw it, so the next replica is tried.
    async fn chunk_digest(&self, chunk: &ChunkInfo) -> Result<(u64, [u8; 32]), ClientError> {
        let mut last = String::from("no live replica is known to the master");
        for addr in &chunk.replicas {
            let request = Request::Chunk(ChunkRequest::Digest {
                handle: chunk.handle,
                version: chunk.version,
                token: chunk.token,
            });
            match self.server_call(addr, request).await {
                Ok(Response::ChunkDigest { size, digest }) if size == chunk.size => {
                    return Ok((size, digest))
                }
                Ok(Response::ChunkDigest { size, .. }) => {
                    last = format!("{addr}: holds {size} bytes, the file {}", chunk.size)
                }
                Ok(other) => last = format!("{addr}: unexpected reply {}", other.name()),
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        Err(ClientError::NoReplica {
            handle: chunk.handle,
            last,
        })
    }
}
