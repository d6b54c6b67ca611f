//! Verified, streamed chunk reads.

use dfs_protocol::{
    ChunkHandle, ChunkVersion, ErrorCode, Frame, ProtocolError, RequestId, Response,
    CHECKSUM_BLOCK, PACKET_SIZE,
};
use tokio::sync::mpsc;

use crate::ctx::Ctx;
use crate::error::StoreError;
use crate::net::Conn;
use crate::store::Blocks;

/// Pieces buffered between the disk reader and the network for one read.
const READ_QUEUE: usize = 2;

/// Streams a verified byte range as `ReadData` frames of at most one packet each,
/// widened to whole checksum blocks and carrying their checksums. A damaged replica
/// is quarantined and the read answered with the checksum error.
pub(crate) async fn read_chunk(
    ctx: &Ctx,
    conn: &mut Conn,
    id: RequestId,
    handle: ChunkHandle,
    version: ChunkVersion,
    offset: u64,
    len: u64,
) -> Result<(), ProtocolError> {
    let _slot = match crate::server::stream_slot(ctx).await {
        Ok(slot) => slot,
        Err(busy) => {
            conn.reply(id, Response::Error(busy)).await?;
            return Ok(());
        }
    };
    let (tx, mut rx) = mpsc::channel::<Result<(Blocks, bool), StoreError>>(READ_QUEUE);
    let store = ctx.store.clone();
    let producer = tokio::task::spawn_blocking(move || {
        let mut seen = None;
        let mut result = (|| {
            let mut reader = store.open_reader(handle, version)?;
            seen = Some(reader.len());
            reader.will_need(offset, len);
            let end = offset.saturating_add(len);
            let mut pos = offset;
            loop {
                // Keep each frame within one packet even when `pos` is not block-aligned.
                let lead = pos % CHECKSUM_BLOCK;
                let n = (end - pos).min(PACKET_SIZE as u64 - lead);
                let blocks = reader.read_blocks(pos, n)?;
                pos += n;
                let last = pos >= end;
                if tx.blocking_send(Ok((blocks, last))).is_err() || last {
                    return Ok(());
                }
            }
        })();
        if let Err(StoreError::Refused(ErrorCode::ChecksumMismatch { .. })) = &result {
            match store.quarantine_damaged(handle, version, seen) {
                Ok(true) => {}
                // Bumped, appended to or cut back under us: a race, not damage.
                Ok(false) => {
                    result = Err(ErrorCode::Unavailable {
                        reason: format!("chunk {handle} changed during the read; read it again"),
                    }
                    .into());
                }
                Err(q) => {
                    tracing::error!(%handle, error = %q, "could not quarantine a damaged replica");
                }
            }
        }
        if let Err(e) = result {
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
                if let StoreError::Refused(ErrorCode::ChecksumMismatch { .. }) = e {
                    ctx.metrics.damaged();
                }
                if let StoreError::Io { .. } = e {
                    tracing::error!(error = %e, "disk read failed");
                } else {
                    tracing::info!(error = %e, "read refused");
                }
                conn.reply(id, Response::Error(e.to_code())).await?;
                break;
            }
        }
    }
    drop(rx);
    let _ = producer.await;
    Ok(())
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
