//! The chunkserver's accept loop and request handlers: pipelined writes and
//! verified, streamed reads.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dfs_protocol::{
    Body, ChunkHandle, ChunkVersion, ErrorCode, Frame, ProtocolError, ReplicateOrder, Request,
    RequestId, Response, CHECKSUM_BLOCK, PACKET_SIZE,
};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::ChunkserverConfig;
use crate::error::StoreError;
use crate::net::{dial, framed, Conn};
use crate::store::{Blocks, ChunkStore};

/// Packets buffered between the network and the disk writer of one chunk write.
const WRITE_QUEUE: usize = 4;
/// Pieces buffered between the disk reader and the network for one read.
const READ_QUEUE: usize = 2;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every connection handler shares.
#[derive(Debug)]
pub struct Ctx {
    pub store: ChunkStore,
    pub config: ChunkserverConfig,
    /// Copy orders from the master, for the replicator.
    pub replicate: mpsc::Sender<ReplicateOrder>,
    /// Requests being served, reported as load in heartbeats.
    pub busy: std::sync::atomic::AtomicU32,
    /// Paces chunk copies to the configured bandwidth.
    pub copy_pace: crate::repair::Pace,
    /// Append leases held as primary.
    pub leases: crate::append::Leases,
    /// Bytes of records held in memory by appends, in any role.
    pub append_budget: Arc<Semaphore>,
}

/// Counts a request as load while it is alive.
struct Busy<'a>(&'a std::sync::atomic::AtomicU32);

impl<'a> Busy<'a> {
    fn new(counter: &'a std::sync::atomic::AtomicU32) -> Busy<'a> {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Busy(counter)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Serves connections on `listener` until `shutdown`; in-flight requests run to completion.
pub async fn accept_loop(
    ctx: Arc<Ctx>,
    listener: TcpListener,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let permits = Arc::new(Semaphore::new(ctx.config.max_connections));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let ctx = ctx.clone();
        let token = shutdown.child_token();
        tracker.spawn(
            async move {
                let _permit = permit;
                serve(ctx, framed(stream), token).await;
            }
            .instrument(tracing::info_span!("conn", %peer)),
        );
    }
}

async fn serve(ctx: Arc<Ctx>, mut conn: Conn, shutdown: CancellationToken) {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, conn.accept_handshake()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return tracing::info!(error = %e, "handshake refused"),
        Err(_) => return tracing::info!("handshake timed out"),
    }
    loop {
        let frame = tokio::select! {
            _ = shutdown.cancelled() => return,
            f = conn.recv() => f,
        };
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(e) => return tracing::info!(error = %e, "dropping connection"),
        };
        let id = frame.request_id;
        let _busy = Busy::new(&ctx.busy);
        let outcome = match frame.body {
            Body::Request(Request::WriteChunk {
                handle,
                version,
                downstream,
            }) => {
                let span = tracing::info_span!("write", %handle, %version);
                write_chunk(&ctx, &mut conn, id, handle, version, downstream)
                    .instrument(span)
                    .await
            }
            Body::Request(Request::ReadChunk {
                handle,
                version,
                offset,
                len,
            }) => {
                let span = tracing::debug_span!("read", %handle, %version, offset, len);
                read_chunk(&ctx, &mut conn, id, handle, version, offset, len)
                    .instrument(span)
                    .await
            }
            Body::Request(Request::GrantLease {
                handle,
                from,
                version,
                secondaries,
                lease_ms,
                chunk_size,
                max_append,
            }) => {
                let span = tracing::info_span!("grant", %handle, %version);
                let response = crate::append::grant(
                    &ctx,
                    handle,
                    from,
                    version,
                    secondaries,
                    lease_ms,
                    chunk_size,
                    max_append,
                )
                .instrument(span)
                .await
                .unwrap_or_else(Response::Error);
                conn.reply(id, response).await.map_err(Into::into)
            }
            Body::Request(
                r @ (Request::BumpVersion { .. }
                | Request::TruncateChunk { .. }
                | Request::ChunkLength { .. }),
            ) => {
                let response = crate::append::chunk_request(&ctx, r).await;
                conn.reply(id, response).await.map_err(Into::into)
            }
            Body::Request(Request::Append {
                handle,
                version,
                len,
            }) => {
                let span = tracing::debug_span!("append", %handle, %version, len);
                crate::append::append(&ctx, &mut conn, id, handle, version, len)
                    .instrument(span)
                    .await
            }
            Body::Request(Request::AppendForward {
                handle,
                version,
                offset,
                len,
            }) => {
                let span = tracing::debug_span!("append-forward", %handle, %version, offset, len);
                crate::append::forwarded(&ctx, &mut conn, id, handle, version, offset, len)
                    .instrument(span)
                    .await
            }
            Body::Request(other) => {
                let code = ErrorCode::BadRequest {
                    reason: format!("{} is not a chunkserver request", other.name()),
                };
                conn.reply(id, Response::Error(code))
                    .await
                    .map_err(Into::into)
            }
            Body::Response(other) => Err(ProtocolError::Unexpected {
                got: other.name(),
                to: "nothing",
            }),
        };
        if let Err(e) = outcome {
            return tracing::info!(error = %e, "closing connection");
        }
    }
}

pub(crate) enum Piece {
    Data(Bytes),
    Commit,
}

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
async fn write_chunk(
    ctx: &Ctx,
    conn: &mut Conn,
    id: RequestId,
    handle: ChunkHandle,
    version: ChunkVersion,
    downstream: Vec<String>,
) -> Result<(), ProtocolError> {
    let io_timeout = ctx.config.io_timeout;
    let mut failure: Option<ErrorCode> = None;
    // Set when the disk writer stopped on its own: then its error is the cause.
    let mut local_died = false;

    // Open the rest of the pipeline first: a broken chain fails before any byte lands.
    let mut down = None;
    if let Some((next, rest)) = downstream.split_first() {
        match open_downstream(ctx, next, rest, handle, version).await {
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
                    Frame::request(d.id, Request::WritePacket { last }).with_payload(payload);
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
    conn.reply(id, response).await?;
    Ok(())
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
        Body::Request(Request::WritePacket { last }) if frame.request_id == id => {
            Ok((last, frame.payload))
        }
        _ => Err(ProtocolError::Unexpected {
            got: "a frame other than WritePacket",
            to: what,
        }),
    }
}

async fn open_downstream(
    ctx: &Ctx,
    next: &str,
    rest: &[String],
    handle: ChunkHandle,
    version: ChunkVersion,
) -> Result<Downstream, ErrorCode> {
    let unavailable = |e: ProtocolError| ErrorCode::ReplicaFailed {
        addr: next.to_string(),
        reason: e.to_string(),
    };
    let mut conn = dial(next, ctx.config.connect_timeout)
        .await
        .map_err(unavailable)?;
    let id = conn.next_request_id();
    let open = Frame::request(
        id,
        Request::WriteChunk {
            handle,
            version,
            downstream: rest.to_vec(),
        },
    );
    conn.send(&open).await.map_err(|e| unavailable(e.into()))?;
    Ok(Downstream {
        conn,
        id,
        addr: next.to_string(),
    })
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
            Piece::Data(bytes) => writer.write(&bytes)?,
            Piece::Commit => return writer.commit(),
        }
    }
    // The network side gave up: dropping the writer removes the temp file.
    Err(ErrorCode::Io {
        reason: "write abandoned".into(),
    }
    .into())
}

/// Streams a verified byte range as `ReadData` frames of at most one packet each,
/// widened to whole checksum blocks and carrying their checksums. A damaged replica
/// is quarantined and the read answered with the checksum error.
#[allow(clippy::too_many_arguments)]
async fn read_chunk(
    ctx: &Ctx,
    conn: &mut Conn,
    id: RequestId,
    handle: ChunkHandle,
    version: ChunkVersion,
    offset: u64,
    len: u64,
) -> Result<(), ProtocolError> {
    let (tx, mut rx) = mpsc::channel::<Result<(Blocks, bool), StoreError>>(READ_QUEUE);
    let store = ctx.store.clone();
    let producer = tokio::task::spawn_blocking(move || {
        let mut seen = None;
        let mut result = (|| {
            let mut reader = store.open_reader(handle, version)?;
            seen = Some(reader.len());
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
        if let (Err(StoreError::Refused(ErrorCode::ChecksumMismatch { .. })), Some(len)) =
            (&result, seen)
        {
            if !store.unchanged(&handle, version, len) {
                // Appended to or cut back under us: a race, not damage.
                result = Err(ErrorCode::Unavailable {
                    reason: format!("chunk {handle} changed during the read; read it again"),
                }
                .into());
            }
        }
        if let Err(e) = result {
            if let StoreError::Refused(ErrorCode::ChecksumMismatch { .. }) = e {
                if let Err(q) = store.quarantine(handle) {
                    tracing::error!(%handle, error = %q, "could not quarantine a damaged replica");
                }
            }
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
