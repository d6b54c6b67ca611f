//! Changing a file in place by copy-on-write chunks: a write at any offset, and a
//! truncate. Only the chunks a change touches are written again, as new chunks
//! (fully replicated and confirmed like a put's); the file's chunk list is then
//! swapped in one logged mutation (`CommitRewrite`), so readers see the old file or
//! the new one, never a mix. The chunks it no longer uses become garbage once the
//! swap is durable. Editing one byte of a 10 GiB file rewrites one chunk.
//!
//! Two writers racing on one file: the second commit finds a chunk it meant to keep
//! gone and fails (`BadRequest`), and nothing of it is visible; the last commit that
//! succeeds wins, as NFS's close-to-open model has it.

use bytes::Bytes;
use dfs_protocol::ClientToMaster;
use dfs_protocol::{ChunkInfo, CommittedChunk, ErrorCode, FileKind, Request, Response, UploadId};

use crate::client::Client;
use crate::error::ClientError;

/// A change to a file: its new size and the bytes that differ.
struct Change<'a> {
    new_size: u64,
    /// The range whose bytes change (new data, a hole filled with zeros, a cut).
    touched: std::ops::Range<u64>,
    /// New bytes at an offset, laid over the old ones.
    data: Option<(u64, &'a [u8])>,
}

impl Client {
    /// Writes `data` at `offset` in the file at `path`, growing it (with zeros over
    /// any gap) when the write ends past its end. Returns the file's new size.
    pub async fn write_at(&self, path: &str, offset: u64, data: &[u8]) -> Result<u64, ClientError> {
        let stat = self.stat(path).await?;
        if data.is_empty() && offset <= stat.size {
            return Ok(stat.size);
        }
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or(ErrorCode::InvalidArgument {
                reason: "the write ends past the largest file size".into(),
            })?;
        let change = Change {
            new_size: stat.size.max(end),
            touched: offset.min(stat.size)..end,
            data: Some((offset, data)),
        };
        self.rewrite(
            path,
            &stat.chunks,
            stat.size,
            stat.replication,
            stat.kind,
            change,
        )
        .await
    }

    /// Cuts the file at `path` to `len` bytes, or grows it with zeros to `len`.
    pub async fn truncate(&self, path: &str, len: u64) -> Result<u64, ClientError> {
        let stat = self.stat(path).await?;
        let touched = if len <= stat.size {
            len..len
        } else {
            stat.size..len
        };
        let change = Change {
            new_size: len,
            touched,
            data: None,
        };
        self.rewrite(
            path,
            &stat.chunks,
            stat.size,
            stat.replication,
            stat.kind,
            change,
        )
        .await
    }

    async fn rewrite(
        &self,
        path: &str,
        chunks: &[ChunkInfo],
        old_size: u64,
        replication: u32,
        kind: FileKind,
        change: Change<'_>,
    ) -> Result<u64, ClientError> {
        if kind == FileKind::Dir {
            return Err(ErrorCode::IsADirectory {
                path: path.to_string(),
            }
            .into());
        }
        let (upload, chunk_size) = self.begin_put(path, Some(replication), true).await?;
        let result = self
            .write_changed(path, upload, chunk_size, chunks, old_size, &change)
            .await;
        match result {
            Ok(list) => {
                let commit = Request::Master(ClientToMaster::CommitRewrite {
                    upload,
                    chunks: list,
                });
                match self.master_call(commit).await {
                    Ok(Response::Ok) => Ok(change.new_size),
                    Ok(other) => Err(self.unexpected(&other)),
                    Err(e) => {
                        self.abort_put(upload).await;
                        Err(e)
                    }
                }
            }
            Err(e) => {
                self.abort_put(upload).await;
                Err(e)
            }
        }
    }

    /// The new chunk list: the chunks before and after the touched range as they
    /// are, and the range in between written again as new chunks, one chunk's worth
    /// of memory at a time.
    async fn write_changed(
        &self,
        path: &str,
        upload: UploadId,
        chunk_size: u64,
        chunks: &[ChunkInfo],
        old_size: u64,
        change: &Change<'_>,
    ) -> Result<Vec<CommittedChunk>, ClientError> {
        let mut starts = Vec::with_capacity(chunks.len());
        let mut at = 0u64;
        for c in chunks {
            starts.push(at);
            at += c.size;
        }
        let keep = |c: &ChunkInfo| CommittedChunk {
            handle: c.handle,
            size: c.size,
        };
        let mut list = Vec::new();
        // Kept in front: chunks that end before the change starts (and lie within
        // the new size).
        let mut first = 0;
        while first < chunks.len()
            && starts[first] + chunks[first].size <= change.touched.start
            && starts[first] + chunks[first].size <= change.new_size
        {
            list.push(keep(&chunks[first]));
            first += 1;
        }
        let from = starts
            .get(first)
            .copied()
            .unwrap_or(old_size)
            .min(change.new_size);
        // Kept behind: chunks that start at or after the change's end and end
        // within the new size.
        let mut last = chunks.len();
        while last > first
            && starts[last - 1] >= change.touched.end.max(from)
            && starts[last - 1] + chunks[last - 1].size <= change.new_size
            && change.touched.end > change.touched.start
        {
            last -= 1;
        }
        let to = if last < chunks.len() {
            starts[last]
        } else {
            change.new_size
        };
        let mut at = from;
        while at < to {
            let len = (to - at).min(chunk_size);
            let piece = self.piece(path, at, len, old_size, change).await?;
            list.push(self.write_chunk(upload, piece).await?);
            at += len;
        }
        list.extend(chunks[last..].iter().map(keep));
        Ok(list)
    }

    /// The new bytes of `[at, at + len)`: the change's data where it has some, the
    /// old file's bytes below its old size, zeros beyond.
    async fn piece(
        &self,
        path: &str,
        at: u64,
        len: u64,
        old_size: u64,
        change: &Change<'_>,
    ) -> Result<Bytes, ClientError> {
        let cap = usize::try_from(len).map_err(|_| ErrorCode::InvalidArgument {
            reason: "a chunk larger than memory".into(),
        })?;
        // Read straight into the piece's own buffer: one copy of the old bytes.
        let mut buf = Vec::with_capacity(cap);
        let old_end = old_size.min(at + len);
        if old_end > at {
            let got = self.get_range(path, at, old_end - at, &mut buf).await?;
            if got != old_end - at {
                return Err(ClientError::BadReply {
                    addr: self.master().to_string(),
                    reason: format!("{path} changed while it was being rewritten"),
                });
            }
        }
        buf.resize(cap, 0);
        if let Some((offset, data)) = change.data {
            let lo = offset.max(at);
            let hi = (offset + data.len() as u64).min(at + len);
            if lo < hi {
                let dst = usize::try_from(lo - at).unwrap_or(0);
                let src = usize::try_from(lo - offset).unwrap_or(0);
                let n = usize::try_from(hi - lo).unwrap_or(0);
                buf[dst..dst + n].copy_from_slice(&data[src..src + n]);
            }
        }
        Ok(Bytes::from(buf))
    }
}
