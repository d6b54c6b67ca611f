//! Pieces every streamed request uses: reading the `WritePacket` frames that carry
//! data after a request, and the disk writer that turns them into a committed chunk.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dfs_protocol::ChunkRequest;
use dfs_protocol::{Body, ChunkHandle, ChunkVersion, ErrorCode, ProtocolError, Request, RequestId};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::error::StoreError;
use crate::net::Conn;
use crate::store::ChunkStore;

/// What the network side hands the disk writer.
pub(crate) enum Piece {
    Data(Bytes),
    Commit,
}

/// A peer silent for too long, waiting for `what`.
pub(crate) fn timed_out(what: &str) -> ProtocolError {
    ProtocolError::Codec(
        std::io::Error::new(std::io::ErrorKind::TimedOut, format!("waiting for {what}")).into(),
    )
}

/// The next `WritePacket` of the stream `id` (for `what`): whether it is the last,
/// and its data. `Err` means the connection is unusable: closed, silent for `limit`,
/// or sending something else.
pub(crate) async fn next_packet(
    conn: &mut Conn,
    id: RequestId,
    limit: Duration,
    what: &'static str,
) -> Result<(bool, Bytes), ProtocolError> {
    let frame = match tokio::time::timeout(limit, conn.recv()).await {
        Ok(Ok(Some(f))) => f,
        Ok(Ok(None)) => return Err(ProtocolError::Closed),
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => return Err(timed_out("a packet")),
    };
    match frame.body {
        Body::Request(Request::Chunk(ChunkRequest::WritePacket { last }))
            if frame.request_id == id =>
        {
            Ok((last, frame.payload))
        }
        _ => Err(ProtocolError::Unexpected {
            got: "a frame other than WritePacket",
            to: what,
        }),
    }
}

/// Runs on the blocking pool for the life of one chunk write.
pub(crate) fn disk_writer(
    store: ChunkStore,
    handle: ChunkHandle,
    version: ChunkVersion,
    mut rx: mpsc::Receiver<Piece>,
) -> Result<u64, StoreError> {
    let mut writer = store.create(handle, version)?;
    while let Some(piece) = rx.blocking_recv() {
        match piece {
            Piece::Data(bytes) => writer.write_bytes(bytes)?,
            Piece::Commit => return writer.commit(),
        }
    }
    // The network side gave up: dropping the writer removes the temp file.
    Err(ErrorCode::Io {
        reason: "write abandoned".into(),
    }
    .into())
}

/// Reads the data of request `id` like [`read_packets`], admitting each packet's
/// bytes from `budget` as it arrives, so a slow sender holds only what it sent.
/// When the budget is spent the record is refused (`Unavailable`, retried by the
/// client) and the rest drained, instead of waiting: senders holding parts of the
/// budget never wait on each other. `Err` means the connection is unusable.
pub async fn read_budgeted(
    conn: &mut Conn,
    id: RequestId,
    len: u64,
    limit: Duration,
    budget: &Arc<Semaphore>,
) -> Result<Result<(Vec<Bytes>, OwnedSemaphorePermit), ErrorCode>, ProtocolError> {
    let mut pieces = Vec::new();
    let mut held: Option<OwnedSemaphorePermit> = None;
    let mut refused = None;
    let mut got = 0u64;
    loop {
        let (last, payload) = next_packet(conn, id, limit, "an append").await?;
        got = got.saturating_add(payload.len() as u64);
        if got > len {
            return Err(ProtocolError::Unexpected {
                got: "more data than announced",
                to: "an append",
            });
        }
        if refused.is_none() && !payload.is_empty() {
            let n = u32::try_from(payload.len()).unwrap_or(u32::MAX);
            match budget.clone().try_acquire_many_owned(n) {
                Ok(p) => {
                    match held.as_mut() {
                        Some(h) => h.merge(p),
                        None => held = Some(p),
                    }
                    pieces.push(payload);
                }
                Err(_) => {
                    refused = Some(ErrorCode::Unavailable {
                        reason: "append memory budget spent: try again".into(),
                    });
                    pieces.clear();
                    held = None;
                }
            }
        }
        if last {
            break;
        }
    }
    if let Some(code) = refused {
        return Ok(Err(code));
    }
    if got != len {
        return Ok(Err(ErrorCode::BadRequest {
            reason: format!("{got} bytes sent, {len} announced"),
        }));
    }
    match held {
        Some(permit) => Ok(Ok((pieces, permit))),
        None => Ok(Err(ErrorCode::BadRequest {
            reason: "an empty record".into(),
        })),
    }
}

/// Reads the `WritePacket` frames of request `id` up to `last`: at most `len` bytes
/// in all, which must be exactly `len`; `keep` false drops them as they come (a
/// refused request). `Err` means the connection is unusable.
pub async fn read_packets(
    conn: &mut Conn,
    id: RequestId,
    len: u64,
    limit: Duration,
    keep: bool,
) -> Result<Result<Vec<Bytes>, ErrorCode>, ProtocolError> {
    let mut pieces = Vec::new();
    let mut got = 0u64;
    loop {
        let (last, payload) = next_packet(conn, id, limit, "an append").await?;
        got += payload.len() as u64;
        if got > len {
            return Err(ProtocolError::Unexpected {
                got: "more data than announced",
                to: "an append",
            });
        }
        if keep && !payload.is_empty() {
            pieces.push(payload);
        }
        if last {
            break;
        }
    }
    if got != len {
        return Ok(Err(ErrorCode::BadRequest {
            reason: format!("{got} bytes sent, {len} announced"),
        }));
    }
    Ok(Ok(pieces))
}
