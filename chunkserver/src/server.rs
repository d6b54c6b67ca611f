//! The chunkserver's accept loop and dispatch: every connection is authenticated,
//! every request checked against the peer's role and its chunk token, and handed to
//! the module that serves it (`write`, `read`, `append`).

use std::sync::Arc;
use std::time::Duration;

use dfs_protocol::auth::Peer;
use dfs_protocol::{Body, ErrorCode, ProtocolError, Request, RequestId, Response};
use dfs_protocol::{ChunkRequest, MasterOrder, PeerOrder};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::access;
use crate::ctx::{Busy, Ctx};
use crate::net::Conn;
use crate::read::{Check, Range};
use crate::stream::read_packets;

/// A peer that has not proven itself by then is dropped: unauthenticated
/// connections cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves connections on `listener` until `shutdown`; a request in flight then has
/// `SHUTDOWN_GRACE` to finish before its connection is dropped.
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
                let stop = token.clone();
                let served = dfs_protocol::grace::until_stopped(
                    serve(ctx, stream, token),
                    &stop,
                    dfs_protocol::grace::SHUTDOWN_GRACE,
                );
                if served.await.is_none() {
                    tracing::info!("connection cut at shutdown");
                }
            }
            .instrument(tracing::info_span!("conn", %peer)),
        );
    }
}

async fn serve(ctx: Arc<Ctx>, stream: tokio::net::TcpStream, shutdown: CancellationToken) {
    let handshake = async {
        let mut conn = dfs_protocol::net::accept(stream, ctx.config.tls.as_ref())
            .await
            .map_err(|e| ProtocolError::Codec(e.into()))?;
        let accepted = conn.accept_handshake(|c| access::lookup(&ctx, c)).await?;
        Ok::<_, ProtocolError>((conn, accepted))
    };
    let (mut conn, peer) = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok((conn, accepted))) => (conn, accepted.peer),
        Ok(Err(e)) => return tracing::warn!(error = %e, "handshake refused"),
        Err(_) => return tracing::info!("handshake timed out"),
    };
    tracing::debug!(%peer, "authenticated");
    // Chunk packets arrive here: placed so that they go to disk without a copy.
    conn.align_payloads();
    let idle = ctx.config.idle_timeout;
    loop {
        let frame = tokio::select! {
            _ = shutdown.cancelled() => return,
            f = tokio::time::timeout(idle, conn.recv()) => match f {
                Ok(f) => f,
                Err(_) => return tracing::debug!("idle connection closed"),
            },
        };
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(e) => return tracing::info!(error = %e, "dropping connection"),
        };
        let id = frame.request_id;
        let request = match frame.body {
            Body::Request(r) => r,
            Body::Response(other) => {
                return tracing::info!(
                    got = other.name(),
                    "a reply where a request belongs; closing"
                )
            }
        };
        let _busy = Busy::new(&ctx.busy);
        let name = request.name();
        let started = std::time::Instant::now();
        let (in_before, out_before) = conn.payload_bytes();
        let outcome = match access::admit(&ctx, &peer, &request) {
            Ok(()) => {
                // A request's whole exchange has a deadline, so no peer holds a
                // stream (and the blocking thread behind it) for ever.
                let deadline = ctx.config.request_deadline;
                match tokio::time::timeout(deadline, dispatch(&ctx, &mut conn, id, request)).await {
                    Ok(r) => r,
                    Err(_) => Err(crate::stream::timed_out("the end of the request")),
                }
            }
            Err(code) => refuse(&ctx, &mut conn, &peer, id, request, code).await,
        };
        let (in_after, out_after) = conn.payload_bytes();
        ctx.metrics.request(
            name,
            started.elapsed(),
            in_after.saturating_sub(in_before),
            out_after.saturating_sub(out_before),
        );
        if let Err(e) = outcome {
            return tracing::info!(error = %e, "closing connection");
        }
    }
}

/// Answers a refused request. Data that follows a streamed request is read and
/// dropped first, so the peer gets the reason rather than a reset; a key that was
/// removed ends the connection.
async fn refuse(
    ctx: &Ctx,
    conn: &mut Conn,
    peer: &Peer,
    id: RequestId,
    request: Request,
    code: ErrorCode,
) -> Result<(), ProtocolError> {
    tracing::warn!(%peer, request = request.name(), error = %code, "request refused");
    if matches!(
        request,
        Request::Chunk(ChunkRequest::WriteChunk { .. })
            | Request::Chunk(ChunkRequest::Append { .. })
            | Request::Peer(PeerOrder::AppendForward { .. })
    ) {
        let _ = read_packets(conn, id, u64::MAX, ctx.config.io_timeout, false).await?;
    }
    let closing = matches!(code, ErrorCode::AuthFailed { .. });
    conn.reply(id, Response::Error(code)).await?;
    if closing {
        return Err(ProtocolError::Closed);
    }
    Ok(())
}

/// A place among the streams served at once, or `Unavailable` after a short wait.
pub(crate) async fn stream_slot(ctx: &Ctx) -> Result<OwnedSemaphorePermit, ErrorCode> {
    let busy = || ErrorCode::Unavailable {
        reason: "chunkserver busy: too many transfers at once".into(),
    };
    match tokio::time::timeout(STREAM_WAIT, ctx.streams.clone().acquire_owned()).await {
        Ok(Ok(p)) => Ok(p),
        _ => Err(busy()),
    }
}

/// How long a request waits for a stream place before it is refused as busy.
const STREAM_WAIT: Duration = Duration::from_secs(5);

/// Sends a one-frame answer.
async fn answer(conn: &mut Conn, id: RequestId, response: Response) -> Result<(), ProtocolError> {
    conn.reply(id, response).await.map_err(Into::into)
}

/// Serves one admitted request, by link: each link's handler takes only that
/// link's requests. `Err` means the connection is unusable.
async fn dispatch(
    ctx: &Arc<Ctx>,
    conn: &mut Conn,
    id: RequestId,
    request: Request,
) -> Result<(), ProtocolError> {
    match request {
        Request::Chunk(r) => chunk_link(ctx, conn, id, r).await,
        Request::Order(o) => master_link(ctx, conn, id, o).await,
        Request::Peer(o) => peer_link(ctx, conn, id, o).await,
        other => {
            let reason = format!("{} is not a chunkserver request", other.name());
            answer(conn, id, Response::Error(ErrorCode::BadRequest { reason })).await
        }
    }
}

/// Requests on chunk data: from clients, from peers (a pipeline's next hop, a
/// copy) and from the master.
async fn chunk_link(
    ctx: &Arc<Ctx>,
    conn: &mut Conn,
    id: RequestId,
    request: ChunkRequest,
) -> Result<(), ProtocolError> {
    // Clients' reads come as stored; peers' are verified here (see `read.rs`).
    let check = match request {
        ChunkRequest::ReadStored { .. } => Check::ByReader,
        _ => Check::Here,
    };
    match request {
        ChunkRequest::WriteChunk {
            handle,
            version,
            downstream,
            token,
        } => {
            let span = tracing::info_span!("write", %handle, %version);
            crate::write::write_chunk(ctx, conn, id, handle, version, downstream, token)
                .instrument(span)
                .await
        }
        ChunkRequest::ReadChunk {
            handle,
            version,
            offset,
            len,
            ..
        }
        | ChunkRequest::ReadStored {
            handle,
            version,
            offset,
            len,
            ..
        } => {
            let span = tracing::debug_span!("read", %handle, %version, offset, len, ?check);
            let range = Range {
                handle,
                version,
                offset,
                len,
            };
            crate::read::read_chunk(ctx, conn, id, range, check)
                .instrument(span)
                .await
        }
        ChunkRequest::Append {
            handle,
            version,
            len,
            ..
        } => {
            let span = tracing::debug_span!("append", %handle, %version, len);
            crate::append::append(ctx, conn, id, handle, version, len)
                .instrument(span)
                .await
        }
        ChunkRequest::ChunkLength {
            handle, version, ..
        } => {
            let response = crate::append::chunk_length(ctx, handle, version).await;
            answer(conn, id, response).await
        }
        ChunkRequest::CopyFrom {
            handle,
            version,
            source,
            ..
        } => {
            let span = tracing::info_span!("copy-from", %handle, %version, from = %source.handle, source = %source.source);
            let response = match stream_slot(ctx).await {
                Ok(_slot) => crate::repair::copy_into(ctx, &source, handle, version, None)
                    .instrument(span)
                    .await
                    .map(|size| Response::ChunkWritten { handle, size })
                    .unwrap_or_else(Response::Error),
                Err(busy) => Response::Error(busy),
            };
            answer(conn, id, response).await
        }
        ChunkRequest::Digest {
            handle, version, ..
        } => {
            let span = tracing::debug_span!("digest", %handle, %version);
            let response = match stream_slot(ctx).await {
                Ok(_slot) => crate::read::digest(ctx, handle, version)
                    .instrument(span)
                    .await
                    .map(|(size, digest)| Response::ChunkDigest { size, digest })
                    .unwrap_or_else(Response::Error),
                Err(busy) => Response::Error(busy),
            };
            answer(conn, id, response).await
        }
        ChunkRequest::WritePacket { .. } => {
            let reason = "WritePacket outside a write or an append".into();
            answer(conn, id, Response::Error(ErrorCode::BadRequest { reason })).await
        }
    }
}

/// The master's orders.
async fn master_link(
    ctx: &Arc<Ctx>,
    conn: &mut Conn,
    id: RequestId,
    order: MasterOrder,
) -> Result<(), ProtocolError> {
    match order {
        MasterOrder::GrantLease(grant) => {
            let span =
                tracing::info_span!("grant", handle = %grant.handle, version = %grant.version);
            let response = crate::append::grant(ctx, grant)
                .instrument(span)
                .await
                .unwrap_or_else(Response::Error);
            answer(conn, id, response).await
        }
    }
}

/// A primary's orders to this server as its secondary.
async fn peer_link(
    ctx: &Arc<Ctx>,
    conn: &mut Conn,
    id: RequestId,
    order: PeerOrder,
) -> Result<(), ProtocolError> {
    match order {
        PeerOrder::BumpVersion {
            handle,
            from,
            version,
            ..
        } => {
            let response = crate::append::bump(ctx, handle, from, version).await;
            answer(conn, id, response).await
        }
        PeerOrder::TruncateChunk {
            handle,
            version,
            size,
            ..
        } => {
            let response = crate::append::truncate(ctx, handle, version, size).await;
            answer(conn, id, response).await
        }
        PeerOrder::AppendForward {
            handle,
            version,
            offset,
            len,
            ..
        } => {
            let span = tracing::debug_span!("append-forward", %handle, %version, offset, len);
            crate::append::forwarded(ctx, conn, id, handle, version, offset, len)
                .instrument(span)
                .await
        }
    }
}
