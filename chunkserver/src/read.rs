//! Streamed chunk reads, verified here or by the reader.

use dfs_protocol::{
    ChunkHandle, ChunkVersion, ErrorCode, Frame, ProtocolError, RequestId, Response,
    CHECKSUM_BLOCK, PACKET_SIZE,
};
use tokio::sync::mpsc;

use crate::ctx::Ctx;
use crate::error::StoreError;
use crate::net::Conn;
use crate::store::{Blocks, ChunkStore};

mod sendfile;

/// Pieces buffered between the disk reader and the network for one read.
const READ_QUEUE: usize = 2;

/// The part of one chunk a read asks for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Range {
    pub handle: ChunkHandle,
    pub version: ChunkVersion,
    pub offset: u64,
    pub len: u64,
}

impl Range {
    /// The pieces a read of the range is sent in, as (offset, length, last): at most
    /// one packet each, also when the range does not start on a block boundary (a
    /// piece is widened to whole blocks when read). An empty range is one empty piece.
    fn pieces(&self) -> impl Iterator<Item = (u64, u64, bool)> {
        let end = self.offset.saturating_add(self.len);
        let mut pos = self.offset;
        let mut done = false;
        std::iter::from_fn(move || {
            if done {
                return None;
            }
            let n = (end - pos).min(PACKET_SIZE as u64 - pos % CHECKSUM_BLOCK);
            let at = pos;
            pos += n;
            done = pos >= end;
            Some((at, n, done))
        })
    }
}

/// Who hashes the blocks of a read against their stored checksums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// This chunkserver, before sending (`ReadChunk`: peers copying a replica).
    Here,
    /// The reader, which gets the stored checksums with the blocks and verifies them
    /// anyway (`ReadStored`: clients). Hashing here too cost a get a fifth of the
    /// chunkserver's CPU for nothing the reader's check does not already catch; a
    /// reader that finds damage asks for `Digest`, and the scrubber covers the rest.
    ByReader,
}

/// Streams a byte range as `ReadData` frames of at most one packet each, widened to
/// whole checksum blocks and carrying their checksums. Damage found here quarantines
/// the replica, and the read is answered with the checksum error.
///
/// The disk is left to the kernel's own read-ahead, which fills the page cache in
/// large folios and grows its window as a chunk is read on; clients send all the
/// ranges of a chunk to one replica, so that window runs on from range to range. The
/// range used to be asked for up front (`fadvise(WILLNEED)`), which fills the cache
/// a page at a time in smaller disk requests: a cold get cost the chunkservers half
/// as much CPU again, and ran 20% slower (docs/benchmarks.md, step 27).
pub(crate) async fn read_chunk(
    ctx: &Ctx,
    conn: &mut Conn,
    id: RequestId,
    range: Range,
    check: Check,
) -> Result<(), ProtocolError> {
    let Range {
        handle, version, ..
    } = range;
    let _slot = match crate::server::stream_slot(ctx).await {
        Ok(slot) => slot,
        Err(busy) => {
            conn.reply(id, Response::Error(busy)).await?;
            return Ok(());
        }
    };
    if check == Check::ByReader {
        // A second handle on the socket fails only when out of descriptors: the
        // buffered path below still works then.
        if let Some(Ok(sock)) = conn.plain_socket() {
            return sendfile::stream(ctx, conn, id, range, sock).await;
        }
    }
    let (tx, mut rx) = mpsc::channel::<Result<(Blocks, bool), StoreError>>(READ_QUEUE);
    let store = ctx.store.clone();
    let producer = tokio::task::spawn_blocking(move || {
        let mut seen = None;
        let result = (|| {
            let mut reader = store.open_reader(handle, version)?;
            seen = Some(reader.len());
            for (pos, n, last) in range.pieces() {
                let blocks = match check {
                    Check::Here => reader.read_blocks(pos, n)?,
                    Check::ByReader => reader.read_stored(pos, n)?,
                };
                if tx.blocking_send(Ok((blocks, last))).is_err() {
                    break;
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            let e = settle_damage(&store, handle, version, seen, e);
            let _ = tx.blocking_send(Err(e));
        }
    });
    while let Some(piece) = rx.recv().await {
        match piece {
            Ok((blocks, last)) => {
                let frame = Frame::response(
                    id,
                    Response::ReadData {
                        last,
                        offset: blocks.offset,
                        checksums: blocks.checksums,
                    },
                )
                .with_payload(blocks.data);
                conn.send(&frame).await?;
            }
            Err(e) => {
                log_refusal(ctx, &e);
                conn.reply(id, Response::Error(e.to_code())).await?;
                break;
            }
        }
    }
    drop(rx);
    let _ = producer.await;
    Ok(())
}

/// A read that failed with a checksum error found damage here: the replica is
/// quarantined, unless it changed under the read, which is a race to retry, not
/// damage. Returns the error to answer with.
fn settle_damage(
    store: &ChunkStore,
    handle: ChunkHandle,
    version: ChunkVersion,
    seen: Option<u64>,
    e: StoreError,
) -> StoreError {
    if !matches!(e, StoreError::Refused(ErrorCode::ChecksumMismatch { .. })) {
        return e;
    }
    match store.quarantine_damaged(handle, version, seen) {
        Ok(true) => e,
        // Bumped, appended to or cut back under us: a race, not damage.
        Ok(false) => ErrorCode::Unavailable {
            reason: format!("chunk {handle} changed during the read; read it again"),
        }
        .into(),
        Err(q) => {
            tracing::error!(%handle, error = %q, "could not quarantine a damaged replica");
            e
        }
    }
}

/// Counts and logs a read refused with `e`.
fn log_refusal(ctx: &Ctx, e: &StoreError) {
    if let StoreError::Refused(ErrorCode::ChecksumMismatch { .. }) = e {
        ctx.metrics.damaged();
    }
    if let StoreError::Io { .. } = e {
        tracing::error!(error = %e, "disk read failed");
    } else {
        tracing::info!(error = %e, "read refused");
    }
}

/// The length of the replica `handle` at `version` and the blake3 of its content,
/// every block verified on the way (a damaged replica is quarantined, as on a read).
pub(crate) async fn digest(
    ctx: &Ctx,
    handle: ChunkHandle,
    version: ChunkVersion,
) -> Result<(u64, [u8; 32]), ErrorCode> {
    let store = ctx.store.clone();
    let hashed = tokio::task::spawn_blocking(move || {
        let mut seen = None;
        let result = (|| {
            let mut reader = store.open_reader(handle, version)?;
            let len = reader.len();
            seen = Some(len);
            let mut hasher = blake3::Hasher::new();
            let mut pos = 0;
            while pos < len {
                let n = (len - pos).min(PACKET_SIZE as u64);
                let blocks = reader.read_blocks(pos, n)?;
                hasher.update(&blocks.data);
                pos += n;
            }
            Ok::<_, StoreError>((len, *hasher.finalize().as_bytes()))
        })();
        if let Err(StoreError::Refused(ErrorCode::ChecksumMismatch { .. })) = &result {
            if let Err(q) = store.quarantine_damaged(handle, version, seen) {
                tracing::error!(%handle, error = %q, "could not quarantine a damaged replica");
            }
        }
        result
    })
    .await
    .map_err(|e| ErrorCode::Unavailable {
        reason: format!("digest task: {e}"),
    })?;
    if let Err(StoreError::Refused(ErrorCode::ChecksumMismatch { .. })) = &hashed {
        ctx.metrics.damaged();
    }
    hashed.map_err(|e| e.to_code())
}

#[cfg(test)]
mod tests {
    use dfs_protocol::{ChunkHandle, ChunkVersion, CHECKSUM_BLOCK, PACKET_SIZE};

    use super::Range;

    fn pieces(offset: u64, len: u64) -> Vec<(u64, u64, bool)> {
        Range {
            handle: ChunkHandle::random(),
            version: ChunkVersion(1),
            offset,
            len,
        }
        .pieces()
        .collect()
    }

    #[test]
    fn pieces_cover_the_range_each_within_a_packet_once_widened() {
        let packet = PACKET_SIZE as u64;
        for (offset, len) in [
            (0, 3 * packet),
            (100, 2 * packet),
            (CHECKSUM_BLOCK - 1, packet + 5),
        ] {
            let got = pieces(offset, len);
            let mut pos = offset;
            for (i, &(at, n, last)) in got.iter().enumerate() {
                assert_eq!(at, pos, "contiguous");
                assert!(
                    at % CHECKSUM_BLOCK + n <= packet,
                    "{at}+{n} widens past a packet"
                );
                assert_eq!(last, i + 1 == got.len());
                pos += n;
            }
            assert_eq!(pos, offset + len, "the whole range");
        }
        assert_eq!(
            pieces(5, 0),
            vec![(5, 0, true)],
            "an empty read still answers"
        );
    }
}
