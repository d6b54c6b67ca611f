//! Copying chunks from other replicas: at the master's order (repair and
//! re-replication), and into a new chunk at a client's request (a server-side
//! `dfs cp`). The copy is pulled with an ordinary verified read, checked again block
//! by block here, and committed like any other chunk write.

use std::sync::Arc;

use dfs_protocol::ChunkRequest;
use dfs_protocol::{checksum, Body, ErrorCode, Frame, ReplicateOrder, Request, Response};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::ctx::Ctx;
use crate::net::dial;
use crate::stream::{disk_writer, Piece};

/// Packets buffered between the network and the disk writer of one copy.
const COPY_QUEUE: usize = 4;

/// Paces all copies of a server together to a byte rate, so repairs and balancing do
/// not crowd out client traffic.
#[derive(Debug)]
pub struct Pace {
    /// Bytes per second; 0 = unlimited.
    rate: u64,
    next: std::sync::Mutex<tokio::time::Instant>,
}

impl Pace {
    pub fn new(rate: u64) -> Pace {
        Pace {
            rate,
            next: std::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// Waits for the turn of `bytes` more.
    pub async fn take(&self, bytes: u64) {
        if self.rate == 0 {
            return;
        }
        let cost = std::time::Duration::from_secs_f64(bytes as f64 / self.rate as f64);
        let start = {
            let mut next = self
                .next
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let start = (*next).max(tokio::time::Instant::now());
            *next = start + cost;
            start
        };
        tokio::time::sleep_until(start).await;
    }
}

/// Runs copy orders, a few at a time, until `shutdown`.
pub async fn replicator(
    ctx: Arc<Ctx>,
    mut orders: mpsc::Receiver<ReplicateOrder>,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(
        ctx.config.replication_concurrency.max(1),
    ));
    let tracker = TaskTracker::new();
    loop {
        let order = tokio::select! {
            _ = shutdown.cancelled() => break,
            o = orders.recv() => match o { Some(o) => o, None => break },
        };
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let ctx = ctx.clone();
        let stop = shutdown.clone();
        let span = tracing::info_span!("copy", handle = %order.handle, version = %order.version, source = %order.source);
        tracker.spawn(
            async move {
                let _permit = permit;
                let copied = dfs_protocol::grace::until_stopped(
                    copy(&ctx, &order),
                    &stop,
                    dfs_protocol::grace::SHUTDOWN_GRACE,
                );
                match copied.await {
                    Some(Ok(size)) => tracing::info!(size, "replica copied"),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "replica copy failed; the master will retry")
                    }
                    None => tracing::info!("replica copy cut at shutdown"),
                }
            }
            .instrument(span),
        );
    }
    tracker.close();
    tracker.wait().await;
}

/// Pulls one chunk from `order.source`, paced with the other repairs.
pub async fn copy(ctx: &Ctx, order: &ReplicateOrder) -> Result<u64, ErrorCode> {
    if ctx.store.get(&order.handle).is_some() {
        return Ok(order.size);
    }
    copy_into(
        ctx,
        order,
        order.handle,
        order.version,
        Some(&ctx.copy_pace),
    )
    .await
}

/// Pulls the chunk `order` names and stores its bytes as the replica `handle` at
/// `version` (the same chunk for a repair, a new one for a client's copy).
pub async fn copy_into(
    ctx: &Ctx,
    order: &ReplicateOrder,
    handle: dfs_protocol::ChunkHandle,
    version: dfs_protocol::ChunkVersion,
    pace: Option<&Pace>,
) -> Result<u64, ErrorCode> {
    if handle != order.handle {
        match ctx.store.get(&handle) {
            // A retried request whose first try got through.
            Some((v, size)) if v == version && size == order.size => return Ok(size),
            Some(_) => {
                return Err(ErrorCode::BadRequest {
                    reason: format!("chunk {handle} already exists here"),
                })
            }
            None => {}
        }
    }
    let unavailable = |what: String| ErrorCode::Unavailable { reason: what };
    let mut conn = dial(&ctx.identity, &order.source, ctx.config.connect_timeout)
        .await
        .map_err(|e| unavailable(format!("{}: {e}", order.source)))?;
    let id = conn.next_request_id();
    let request = Frame::request(
        id,
        Request::Chunk(ChunkRequest::ReadChunk {
            handle: order.handle,
            version: order.version,
            offset: 0,
            len: order.size,
            token: order.token,
        }),
    );
    conn.send(&request)
        .await
        .map_err(|e| unavailable(format!("{}: {e}", order.source)))?;

    let (tx, rx) = mpsc::channel::<Piece>(COPY_QUEUE);
    let store = ctx.store.clone();
    let source = order.handle;
    let writer = tokio::task::spawn_blocking(move || disk_writer(store, handle, version, rx));
    let mut expect = 0u64;
    let streamed = async {
        loop {
            let frame = tokio::time::timeout(ctx.config.io_timeout, conn.recv())
                .await
                .map_err(|_| unavailable("source went silent".into()))?
                .map_err(|e| unavailable(e.to_string()))?
                .ok_or_else(|| unavailable("source closed the connection".into()))?;
            if frame.request_id != id {
                return Err(unavailable("reply for another request".into()));
            }
            let (last, offset, checksums) = match frame.body {
                Body::Response(Response::ReadData {
                    last,
                    offset,
                    checksums,
                }) => (last, offset, checksums),
                Body::Response(Response::Error(code)) => return Err(code),
                _ => return Err(unavailable("unexpected reply".into())),
            };
            if offset != expect {
                return Err(unavailable(format!("data at {offset}, expected {expect}")));
            }
            // The source verified before sending; verify again for what the wire did.
            checksum::verify_blocks(&frame.payload, &checksums).map_err(|b| {
                ErrorCode::ChecksumMismatch {
                    handle: source,
                    offset: offset + b as u64 * dfs_protocol::CHECKSUM_BLOCK,
                }
            })?;
            expect += frame.payload.len() as u64;
            ctx.metrics.copied(frame.payload.len() as u64);
            if let Some(pace) = pace {
                pace.take(frame.payload.len() as u64).await;
            }
            tx.send(Piece::Data(frame.payload))
                .await
                .map_err(|_| unavailable("local write stopped".into()))?;
            if last {
                return Ok(());
            }
        }
    }
    .await;
    if streamed.is_ok() && expect == order.size {
        let _ = tx.send(Piece::Commit).await;
    }
    drop(tx);
    let written = writer
        .await
        .map_err(|e| unavailable(format!("disk writer: {e}")))?
        .map_err(|e| e.to_code());
    streamed?;
    let size = written?;
    if size != order.size {
        return Err(unavailable(format!(
            "copied {size} bytes, expected {}",
            order.size
        )));
    }
    Ok(size)
}
