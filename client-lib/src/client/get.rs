//! The get path: a file's byte range cut into ranged reads of its chunks, several in
//! flight at once, each verified against the checksums its replica sent and written
//! out in order.

use std::sync::Arc;

use bytes::Bytes;
use dfs_protocol::checksum;
use dfs_protocol::{
    ChunkInfo, ChunkRequest, ErrorCode, FileKind, FileStat, Frame, Request, Response,
    CHECKSUM_BLOCK,
};
use futures::{StreamExt, TryStreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::Client;
use crate::error::ClientError;

/// Times a get reads on with fresh metadata after its chunks moved to a new version.
const MAX_VERSION_MOVES: u32 = 3;

/// One ranged read of a get.
#[derive(Clone, Debug)]
struct Unit {
    chunk: Arc<ChunkInfo>,
    offset: u64,
    len: u64,
}

/// Where in `chunk.replicas` its reads start: the same replica for every range of
/// the chunk, so that its server reads the chunk front to back and the kernel's
/// read-ahead runs on from one range into the next (with the ranges spread over the
/// replicas, each server read ahead into ranges another one served: a cold get was
/// 20% slower; docs/benchmarks.md, step 27). Picked by the handle, which is random,
/// so that a file's chunks spread over their replicas, and every reader of a chunk
/// finds it in the same server's page cache.
fn first_replica(chunk: &ChunkInfo) -> usize {
    let n = chunk.replicas.len() as u128;
    if n == 0 {
        return 0;
    }
    // Below `n`, which came from a `usize`.
    (chunk.handle.0.as_u128() % n) as usize
}

/// The replicas of `chunk` in the order a read tries them: from its
/// `first_replica` on, wrapping around (before suspects are moved last).
pub fn read_order(chunk: &ChunkInfo) -> Vec<String> {
    let first = first_replica(chunk);
    let n = chunk.replicas.len();
    (0..n)
        .map(|i| chunk.replicas[(first + i) % n].clone())
        .collect()
}

impl Client {
    /// Writes the file at `path` to `writer`, reading several ranges at once from the
    /// replicas. Returns the number of bytes written.
    pub async fn get<W>(&self, path: &str, writer: W) -> Result<u64, ClientError>
    where
        W: AsyncWrite + Unpin,
    {
        self.get_from(path, 0, writer).await
    }

    /// Writes the file at `path` from byte `start` on to `writer`; returns the number
    /// of bytes written (none when `start` is at or past the end).
    pub async fn get_from<W>(&self, path: &str, start: u64, writer: W) -> Result<u64, ClientError>
    where
        W: AsyncWrite + Unpin,
    {
        self.get_range(path, start, u64::MAX, writer).await
    }

    /// Writes at most `len` bytes of the file at `path`, from byte `start`, to
    /// `writer`; returns the number written. Only those bytes are read.
    pub async fn get_range<W>(
        &self,
        path: &str,
        start: u64,
        len: u64,
        mut writer: W,
    ) -> Result<u64, ClientError>
    where
        W: AsyncWrite + Unpin,
    {
        let mut done = 0u64;
        let mut moved_on = 0;
        loop {
            let stat = self.stat(path).await?;
            if stat.kind == FileKind::Dir {
                return Err(ErrorCode::IsADirectory { path: stat.path }.into());
            }
            let from = start.saturating_add(done);
            let left = len.saturating_sub(done);
            match self
                .read_stat_range(&stat, from, left, &mut writer, &mut done)
                .await
            {
                // Every replica refused the version we asked for: if the chunk moved
                // to a new version meanwhile (a lease grant, a settle), read on from
                // where we are with fresh metadata; anything else is the answer.
                Err(e @ ClientError::NoReplica { .. }) if moved_on < MAX_VERSION_MOVES => {
                    let now = self.stat(path).await?;
                    let moved = now
                        .chunks
                        .iter()
                        .zip(&stat.chunks)
                        .any(|(a, b)| a.handle == b.handle && a.version != b.version);
                    if !moved {
                        return Err(e);
                    }
                    moved_on += 1;
                }
                Err(e) => return Err(e),
                Ok(()) => {
                    writer.flush().await.map_err(ClientError::Output)?;
                    return Ok(done);
                }
            }
        }
    }

    /// Reads at most `len` bytes from `start` of the file as `stat` described it (no
    /// master call: a reader that already holds the chunk list, as an open file of
    /// the mount does), several ranges at once. A replica that moved to a newer
    /// version answers `NoReplica`; stat again and retry then.
    pub async fn read_at(
        &self,
        stat: &FileStat,
        start: u64,
        len: u64,
    ) -> Result<Bytes, ClientError> {
        let end = start.saturating_add(len).min(stat.size);
        let want =
            usize::try_from(end.saturating_sub(start)).map_err(|_| ErrorCode::InvalidArgument {
                reason: "a read larger than memory".into(),
            })?;
        let mut out = Vec::with_capacity(want);
        self.read_into(stat, start, want as u64, &mut out).await?;
        Ok(Bytes::from(out))
    }

    /// Appends `len` bytes from `start` of the file `stat` describes to `out`;
    /// returns how many were read (fewer only past the end).
    pub(crate) async fn read_into(
        &self,
        stat: &FileStat,
        start: u64,
        len: u64,
        out: &mut Vec<u8>,
    ) -> Result<u64, ClientError> {
        let mut done = 0;
        if len > 0 {
            self.read_stat_range(stat, start, len, out, &mut done)
                .await?;
        }
        Ok(done)
    }

    /// Writes `len` bytes from `start` of the file `stat` describes to `writer`,
    /// counting what was written in `done` (also when it fails part-way).
    async fn read_stat_range<W>(
        &self,
        stat: &FileStat,
        start: u64,
        len: u64,
        writer: &mut W,
        done: &mut u64,
    ) -> Result<(), ClientError>
    where
        W: AsyncWrite + Unpin,
    {
        let end = start.saturating_add(len);
        let unit_len = self.inner.options.read_unit.max(1);
        let mut units = Vec::new();
        let mut chunk_start = 0u64;
        for chunk in &stat.chunks {
            let chunk = Arc::new(chunk.clone());
            let mut offset = start.saturating_sub(chunk_start);
            let stop = end.saturating_sub(chunk_start).min(chunk.size);
            chunk_start += chunk.size;
            while offset < stop {
                let len = unit_len.min(stop - offset);
                units.push(Unit {
                    chunk: chunk.clone(),
                    offset,
                    len,
                });
                offset += len;
            }
        }
        // Each range on a task of its own: polled inside this one future, the ranges
        // took turns on one core to receive and hash their bytes (docs/benchmarks.md).
        let mut pieces = futures::stream::iter(units.into_iter().map(|u| {
            let client = self.clone();
            crate::task::spawn(async move { client.read_unit(u).await })
        }))
        .buffered(self.inner.options.read_parallelism.max(1));
        while let Some(parts) = pieces.try_next().await? {
            for part in parts {
                writer.write_all(&part).await.map_err(ClientError::Output)?;
                *done += part.len() as u64;
            }
        }
        Ok(())
    }

    /// Reads one range, trying each replica in turn ([`read_order`]).
    async fn read_unit(&self, unit: Unit) -> Result<Vec<Bytes>, ClientError> {
        let replicas = &unit.chunk.replicas;
        if replicas.is_empty() {
            return Err(ClientError::NoReplica {
                handle: unit.chunk.handle,
                last: "no live replica is known to the master".into(),
            });
        }
        let mut order = read_order(&unit.chunk);
        self.inner.suspects.last(&mut order);
        let mut last = String::new();
        for addr in &order {
            match self.read_range(addr, &unit).await {
                Ok(parts) => {
                    self.inner.suspects.clear(addr);
                    return Ok(parts);
                }
                Err(e) => {
                    if let Some(addr) = e.unreachable() {
                        self.inner.suspects.note(addr);
                    }
                    tracing::info!(%addr, handle = %unit.chunk.handle, error = %e, "replica read failed; trying the next");
                    last = format!("{addr}: {e}");
                }
            }
        }
        Err(ClientError::NoReplica {
            handle: unit.chunk.handle,
            last,
        })
    }

    /// Bytes from `addr` failed their checksums: asks it to verify the replica
    /// itself, which quarantines it there if the damage is on its disk (and changes
    /// nothing if the bytes were damaged on the way). Best effort: the read moves on
    /// to another replica whatever the answer, and the scrubber would find the
    /// damage in time.
    async fn report_damage(&self, addr: &str, unit: &Unit) {
        let digest = Request::Chunk(ChunkRequest::Digest {
            handle: unit.chunk.handle,
            version: unit.chunk.version,
            token: unit.chunk.token,
        });
        match self.server_call(addr, digest).await {
            Ok(_) => {
                tracing::info!(%addr, handle = %unit.chunk.handle, "bytes damaged on the way; the replica checks out");
            }
            Err(e) => {
                tracing::info!(%addr, handle = %unit.chunk.handle, error = %e, "damaged replica reported");
            }
        }
    }

    async fn read_range(&self, addr: &str, unit: &Unit) -> Result<Vec<Bytes>, ClientError> {
        let mut conn = self
            .inner
            .pool
            .get(addr, self.inner.options.connect_timeout)
            .await?;
        let id = conn.next_request_id();
        let request = Frame::request(
            id,
            Request::Chunk(ChunkRequest::ReadStored {
                handle: unit.chunk.handle,
                version: unit.chunk.version,
                offset: unit.offset,
                len: unit.len,
                token: unit.chunk.token,
            }),
        );
        self.exchange(addr, async {
            conn.send(&request).await.map_err(Into::into)
        })
        .await?;
        let mut parts = Vec::new();
        let mut got = 0u64;
        let want_end = unit.offset + unit.len;
        // Frames carry whole checksum blocks from the block holding `unit.offset` on.
        let mut expect = unit.offset - unit.offset % CHECKSUM_BLOCK;
        let bad_reply = |reason: String| ClientError::BadReply {
            addr: addr.to_string(),
            reason,
        };
        loop {
            let (response, payload) = self
                .exchange(addr, conn.recv_response(id, "ReadChunk"))
                .await?;
            let (last, offset, checksums) = match response {
                Response::ReadData {
                    last,
                    offset,
                    checksums,
                } => (last, offset, checksums),
                other => {
                    return Err(ClientError::Unexpected {
                        addr: addr.to_string(),
                        got: other.name(),
                    })
                }
            };
            if offset != expect {
                return Err(bad_reply(format!("data at {offset}, expected {expect}")));
            }
            // The only check these bytes get: the chunkserver sends them as stored.
            if let Err(b) = checksum::verify_blocks(&payload, &checksums) {
                drop(conn);
                self.report_damage(addr, unit).await;
                return Err(ClientError::Remote(ErrorCode::ChecksumMismatch {
                    handle: unit.chunk.handle,
                    offset: offset + b as u64 * CHECKSUM_BLOCK,
                }));
            }
            let frame_end = offset + payload.len() as u64;
            expect = frame_end;
            let from = unit.offset.max(offset);
            let to = want_end.min(frame_end);
            if to > from {
                parts.push(payload.slice((from - offset) as usize..(to - offset) as usize));
                got += to - from;
            }
            if last {
                break;
            }
        }
        if got != unit.len {
            return Err(bad_reply(format!("{got} bytes instead of {}", unit.len)));
        }
        self.inner.pool.put(addr, conn);
        Ok(parts)
    }
}

#[cfg(test)]
mod tests {
    use dfs_protocol::auth::KEY_LEN;
    use dfs_protocol::{ChunkHandle, ChunkInfo, ChunkToken, ChunkVersion};

    use super::first_replica;

    fn chunk(handle: ChunkHandle, replicas: usize) -> ChunkInfo {
        ChunkInfo {
            handle,
            version: ChunkVersion(1),
            size: 64 << 20,
            replicas: (0..replicas)
                .map(|i| format!("127.0.0.1:{}", 7400 + i))
                .collect(),
            open: false,
            primary: None,
            token: ChunkToken {
                handle,
                version: ChunkVersion(1),
                ops: 0,
                expires: 0,
                mac: [0; KEY_LEN],
            },
        }
    }

    #[test]
    fn a_chunk_is_read_from_one_replica_and_chunks_spread_over_all() {
        let mut picked = [0usize; 3];
        for _ in 0..300 {
            let c = chunk(ChunkHandle::random(), 3);
            let first = first_replica(&c);
            assert!(first < 3);
            assert_eq!(first_replica(&c), first, "the same replica every time");
            picked[first] += 1;
        }
        // 300 random handles: each replica is picked about 100 times.
        assert!(picked.iter().all(|&n| n >= 50), "{picked:?}");
        assert_eq!(first_replica(&chunk(ChunkHandle::random(), 0)), 0);
        assert_eq!(first_replica(&chunk(ChunkHandle::random(), 1)), 0);
    }
}
