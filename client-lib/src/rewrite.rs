//! Changing a file in place by copy-on-write chunks: a write at any offset, a
//! truncate, and (for the mount) any set of changed ranges at once. Only the chunks
//! a change touches are written again, as new chunks (fully replicated and
//! confirmed like a put's); the file's chunk list is then swapped in one logged
//! mutation (`CommitRewrite`), so readers see the old file or the new one, never a
//! mix. The chunks it no longer uses become garbage once the swap is durable.
//! Editing one byte of a 10 GiB file rewrites one chunk.
//!
//! Two writers racing on one file: the second commit finds a chunk it meant to keep
//! gone and fails (`BadRequest`), and nothing of it is visible; the last commit that
//! succeeds wins, as NFS's close-to-open model has it.

use std::future::Future;
use std::ops::Range;

use bytes::Bytes;
use dfs_protocol::ClientToMaster;
use dfs_protocol::{ChunkInfo, CommittedChunk, ErrorCode, FileKind, FileStat, Request, Response};

use crate::client::Client;
use crate::error::ClientError;

/// Where the bytes of a rewritten file come from: asked for each new chunk, in
/// order, so that one chunk's worth is in memory at a time.
pub trait NewBytes {
    /// The new file's bytes in `[at, at + len)`, exactly `len` of them.
    fn bytes(
        &mut self,
        at: u64,
        len: u64,
    ) -> impl Future<Output = Result<Bytes, ClientError>> + Send;
}

/// One write (`data` at `offset`) over the old file `base`, whose bytes count only
/// below `old_valid` (zeros beyond).
struct Overlay<'a> {
    client: &'a Client,
    base: &'a FileStat,
    old_valid: u64,
    data: Option<(u64, &'a [u8])>,
}

impl NewBytes for Overlay<'_> {
    async fn bytes(&mut self, at: u64, len: u64) -> Result<Bytes, ClientError> {
        let mut buf = self
            .client
            .old_bytes(self.base, self.old_valid, at, len)
            .await?;
        if let Some((offset, data)) = self.data {
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
        let mut source = Overlay {
            client: self,
            base: &stat,
            old_valid: stat.size,
            data: Some((offset, data)),
        };
        let touched = offset.min(stat.size)..end;
        self.rewrite_file(path, &stat, stat.size.max(end), &[touched], &mut source)
            .await
    }

    /// Cuts the file at `path` to `len` bytes, or grows it with zeros to `len`.
    pub async fn truncate(&self, path: &str, len: u64) -> Result<u64, ClientError> {
        let stat = self.stat(path).await?;
        let mut source = Overlay {
            client: self,
            base: &stat,
            old_valid: stat.size.min(len),
            data: None,
        };
        let touched = len.min(stat.size)..u64::MAX;
        self.rewrite_file(path, &stat, len, &[touched], &mut source)
            .await
    }

    /// Rewrites the file at `path`, which was `base`, to `new_size` bytes from
    /// `source`: every chunk of `base` that meets a `touched` range, or reaches past
    /// `new_size`, is written again, and so is anything past `base`'s end; the
    /// others are kept. One `CommitRewrite` makes it visible. Returns the new size.
    pub async fn rewrite_file<S: NewBytes>(
        &self,
        path: &str,
        base: &FileStat,
        new_size: u64,
        touched: &[Range<u64>],
        source: &mut S,
    ) -> Result<u64, ClientError> {
        if base.kind != FileKind::File {
            return Err(ErrorCode::IsADirectory {
                path: path.to_string(),
            }
            .into());
        }
        let (upload, chunk_size) = self.begin_put(path, Some(base.replication), true).await?;
        let result = self
            .write_changed(upload, chunk_size, base, new_size, touched, source)
            .await;
        match result {
            Ok(list) => {
                let commit = Request::Master(ClientToMaster::CommitRewrite {
                    upload,
                    chunks: list,
                });
                match self.master_call(commit).await {
                    Ok(Response::Ok) => Ok(new_size),
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

    /// The new chunk list: untouched chunks within the new size as they are, and
    /// every run between them written again as new chunks, one chunk at a time.
    async fn write_changed<S: NewBytes>(
        &self,
        upload: dfs_protocol::UploadId,
        chunk_size: u64,
        base: &FileStat,
        new_size: u64,
        touched: &[Range<u64>],
        source: &mut S,
    ) -> Result<Vec<CommittedChunk>, ClientError> {
        let keep = |c: &ChunkInfo, start: u64| {
            let end = start + c.size;
            end <= new_size
                && !touched
                    .iter()
                    .any(|t| t.start < end && start < t.end && t.start < t.end)
        };
        let mut list = Vec::new();
        // Start of the run being rewritten, if one is open.
        let mut run: Option<u64> = None;
        let mut at = 0u64;
        for c in &base.chunks {
            if at >= new_size {
                break;
            }
            if keep(c, at) {
                if let Some(from) = run.take() {
                    self.write_run(upload, chunk_size, from, at, source, &mut list)
                        .await?;
                }
                list.push(CommittedChunk {
                    handle: c.handle,
                    size: c.size,
                });
            } else if run.is_none() {
                run = Some(at);
            }
            at += c.size;
        }
        let from = match run {
            Some(from) => from,
            // Growing past a short last chunk: write it again with what follows
            // rather than leave a small chunk in the middle of the file.
            None if new_size > at => match (list.last(), base.chunks.last()) {
                (Some(kept), Some(last))
                    if kept.handle == last.handle && kept.size < chunk_size =>
                {
                    list.pop();
                    at - last.size
                }
                _ => at,
            },
            None => at.min(new_size),
        };
        self.write_run(upload, chunk_size, from, new_size, source, &mut list)
            .await?;
        Ok(list)
    }

    async fn write_run<S: NewBytes>(
        &self,
        upload: dfs_protocol::UploadId,
        chunk_size: u64,
        from: u64,
        to: u64,
        source: &mut S,
        list: &mut Vec<CommittedChunk>,
    ) -> Result<(), ClientError> {
        let mut at = from;
        while at < to {
            let len = (to - at).min(chunk_size);
            let piece = source.bytes(at, len).await?;
            if piece.len() as u64 != len {
                return Err(ErrorCode::InvalidArgument {
                    reason: format!("{} new bytes at {at} instead of {len}", piece.len()),
                }
                .into());
            }
            list.push(self.write_chunk(upload, piece).await?);
            at += len;
        }
        Ok(())
    }

    /// `len` bytes from `at` of the old file `base`: its bytes below `old_valid`,
    /// zeros beyond; read straight into the buffer that is returned.
    pub async fn old_bytes(
        &self,
        base: &FileStat,
        old_valid: u64,
        at: u64,
        len: u64,
    ) -> Result<Vec<u8>, ClientError> {
        let cap = usize::try_from(len).map_err(|_| ErrorCode::InvalidArgument {
            reason: "a chunk larger than memory".into(),
        })?;
        let mut buf = Vec::with_capacity(cap);
        let old_end = old_valid.min(base.size).min(at.saturating_add(len));
        if old_end > at {
            let got = self.read_into(base, at, old_end - at, &mut buf).await?;
            if got != old_end - at {
                return Err(ClientError::BadReply {
                    addr: self.master().to_string(),
                    reason: format!("{} changed while it was being rewritten", base.path),
                });
            }
        }
        buf.resize(cap, 0);
        Ok(buf)
    }
}
