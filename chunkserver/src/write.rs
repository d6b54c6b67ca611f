//! Pipelined chunk writes: each packet goes to the local disk writer and to the next
//! replica of the chain as it arrives.

use dfs_protocol::auth::ChunkToken;
use dfs_protocol::ChunkRequest;
use dfs_protocol::{
    ChunkHandle, ChunkVersion, ErrorCode, Frame, ProtocolError, Request, RequestId, Response,
};
use tokio::sync::mpsc;

use crate::ctx::Ctx;
use crate::net::Conn;
use crate::stream::{disk_writer, next_packet, Piece};

/// Packets buffered between the network and the disk writer of one chunk write:
/// enough to ride out one replica's slower write without stalling the chain (4 gave
/// 2–10% less put throughput with three replicas on one disk).
const WRITE_QUEUE: usize = 8;
/// Replicas after this one a write may name (the master's replication is at most 16).
const MAX_CHAIN: usize = 15;

/// The downstream half of a pipeline: the next replica and the id we write under.
struct Downstream {
    conn: Conn,
    id: RequestId,
    addr: String,
}

/// One chunk write: every packet is handed to the local disk writer and forwarded
/// downstream as it arrives; the upstream peer is answered `ChunkWritten` only when
/// the local copy is durable and the downstream replicas said the same.
///
/// On failure the rest of the chunk's packets are read and dropped so the writer gets
/// a clear error reply instead of a reset connection. `Err` means the connection is
/// unusable and must close.
pub(crate) async fn write_chunk(
    ctx: &Ctx,
    conn: &mut Conn,
    id: RequestId,
    handle: ChunkHandle,
    version: ChunkVersion,
    downstream: Vec<String>,
    token: ChunkToken,
) -> Result<(), ProtocolError> {
    let io_timeout = ctx.config.io_timeout;
    let mut failure: Option<ErrorCode> = None;
    // Set when the disk writer stopped on its own: then its error is the cause.
    let mut local_died = false;

    let slot = match crate::server::stream_slot(ctx).await {
        Ok(slot) => Some(slot),
        Err(busy) => {
            failure = Some(busy);
            None
        }
    };
    if downstream.len() > MAX_CHAIN {
        failure = Some(ErrorCode::BadRequest {
            reason: format!("a chain of {} replicas is too long", downstream.len() + 1),
        });
    }
    // Open the rest of the pipeline first: a broken chain fails before any byte lands.
    let mut down = None;
    if let (None, Some((next, rest))) = (&failure, downstream.split_first()) {
        match open_downstream(ctx, next, rest, token).await {
            Ok(d) => down = Some(d),
            Err(e) => failure = Some(e),
        }
    }

    let (tx, rx) = mpsc::channel::<Piece>(WRITE_QUEUE);
    let mut local = None;
    if failure.is_none() {
        let store = ctx.store.clone();
        local = Some(tokio::task::spawn_blocking(move || {
            disk_writer(store, handle, version, rx)
        }));
    }

    loop {
        let (last, payload) = next_packet(conn, id, io_timeout, "WriteChunk").await?;
        if failure.is_none() {
            if tx.send(Piece::Data(payload.clone())).await.is_err() {
                // The disk writer stopped; its error is collected below.
                local_died = true;
                failure = Some(ErrorCode::Io {
                    reason: "local write stopped".into(),
                });
            } else if let Some(d) = down.as_mut() {
                let packet =
                    Frame::request(d.id, Request::Chunk(ChunkRequest::WritePacket { last }))
                        .with_payload(payload);
                let sent = tokio::time::timeout(io_timeout, d.conn.send(&packet)).await;
                if !matches!(sent, Ok(Ok(()))) {
                    failure = Some(ErrorCode::ReplicaFailed {
                        addr: d.addr.clone(),
                        reason: "stopped accepting data".into(),
                    });
                }
            }
        }
        if last {
            break;
        }
    }

    let local_result = match local {
        Some(task) => {
            if failure.is_none() {
                let _ = tx.send(Piece::Commit).await;
            }
            drop(tx);
            match task.await {
                Ok(r) => r.map_err(|e| e.to_code()),
                Err(e) => Err(ErrorCode::Io {
                    reason: format!("disk writer failed: {e}"),
                }),
            }
        }
        None => Err(ErrorCode::Io {
            reason: "not written".into(),
        }),
    };
    let outcome = match (local_result, failure) {
        (Err(local), Some(_)) if local_died => Err(local),
        (_, Some(f)) => Err(f),
        (Err(local), None) => Err(local),
        (Ok(size), None) => match down.as_mut() {
            None => Ok(size),
            Some(d) => {
                match tokio::time::timeout(io_timeout, d.conn.recv_response(d.id, "WriteChunk"))
                    .await
                {
                    Ok(Ok((Response::ChunkWritten { size: theirs, .. }, _))) if theirs == size => {
                        Ok(size)
                    }
                    Ok(Ok((other, _))) => Err(ErrorCode::Io {
                        reason: format!(
                            "replica {} answered {} instead of the chunk",
                            d.addr,
                            other.name()
                        ),
                    }),
                    Ok(Err(ProtocolError::Remote(code))) => Err(code),
                    Ok(Err(e)) => Err(ErrorCode::Unavailable {
                        reason: format!("replica {}: {e}", d.addr),
                    }),
                    Err(_) => Err(ErrorCode::Unavailable {
                        reason: format!("replica {} did not confirm in time", d.addr),
                    }),
                }
            }
        },
    };
    if outcome.is_ok() {
        if let Some(d) = down {
            // The replica answered for every packet: the link is clean for the next chunk.
            ctx.peers.put(&d.addr, d.conn);
        }
    }
    let response = match outcome {
        Ok(size) => {
            tracing::debug!(size, "chunk written");
            Response::ChunkWritten { handle, size }
        }
        Err(code) => {
            tracing::info!(error = %code, "chunk write failed");
            Response::Error(code)
        }
    };
    drop(slot);
    conn.reply(id, response).await?;
    Ok(())
}

async fn open_downstream(
    ctx: &Ctx,
    next: &str,
    rest: &[String],
    token: ChunkToken,
) -> Result<Downstream, ErrorCode> {
    let unavailable = |e: ProtocolError| ErrorCode::ReplicaFailed {
        addr: next.to_string(),
        reason: e.to_string(),
    };
    let mut conn = ctx
        .peers
        .get(&ctx.identity, next, ctx.config.connect_timeout)
        .await
        .map_err(unavailable)?;
    let id = conn.next_request_id();
    let open = Frame::request(
        id,
        Request::Chunk(ChunkRequest::WriteChunk {
            handle: token.handle,
            version: token.version,
            downstream: rest.to_vec(),
            token,
        }),
    );
    conn.send(&open).await.map_err(|e| unavailable(e.into()))?;
    Ok(Downstream {
        conn,
        id,
        addr: next.to_string(),
    })
}
