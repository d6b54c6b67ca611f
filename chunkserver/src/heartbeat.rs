//! Talking to the master: registration with the full chunk list on every
//! (re)connection, then periodic heartbeats with what changed in between.

use std::sync::Arc;
use std::time::Duration;

use dfs_protocol::{ProtocolError, Request, Response, ServerId};
use tokio_util::sync::CancellationToken;

use crate::net::{dial, Conn};
use crate::server::Ctx;

const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Keeps this server registered with the master until `shutdown`.
pub async fn heartbeat_loop(
    ctx: Arc<Ctx>,
    id: ServerId,
    advertise: String,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        match session(&ctx, id, &advertise, &shutdown, &mut backoff).await {
            Ok(()) if shutdown.is_cancelled() => return,
            Ok(()) => tracing::info!("master asked us to register again"),
            Err(e) => {
                tracing::info!(error = %e, master = %ctx.config.master, "master unreachable; retrying")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn call(
    conn: &mut Conn,
    request: Request,
    limit: Duration,
) -> Result<Response, ProtocolError> {
    tokio::time::timeout(limit, conn.call(request))
        .await
        .map_err(|_| {
            ProtocolError::Codec(
                std::io::Error::new(std::io::ErrorKind::TimedOut, "master did not answer").into(),
            )
        })?
}

/// One connection's life: register, then heartbeat until it breaks, the master asks
/// for a new registration, or we shut down.
async fn session(
    ctx: &Ctx,
    id: ServerId,
    advertise: &str,
    shutdown: &CancellationToken,
    backoff: &mut Duration,
) -> Result<(), ProtocolError> {
    let limit = ctx.config.io_timeout;
    let mut conn = dial(&ctx.config.master, ctx.config.connect_timeout).await?;
    let store = &ctx.store;
    let register = Request::Register {
        server: id,
        addr: advertise.to_string(),
        capacity: store.capacity(),
        used: store.used(),
        chunks: store.full_report(),
    };
    match call(&mut conn, register, limit).await? {
        Response::Registered => {}
        other => {
            return Err(ProtocolError::Unexpected {
                got: other.name(),
                to: "Register",
            })
        }
    }
    tracing::info!(master = %ctx.config.master, chunks = store.len(), "registered with the master");
    *backoff = Duration::from_millis(50);
    let mut ticker = tokio::time::interval(ctx.config.heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = ticker.tick() => {}
        }
        let changes = store.take_changes();
        let leases = ctx.leases.report();
        let sent = std::time::Instant::now();
        let beat = Request::Heartbeat {
            server: id,
            capacity: store.capacity(),
            used: store.used(),
            added: changes.added,
            removed: changes.removed,
            corrupt: changes.corrupt,
            load: ctx.busy.load(std::sync::atomic::Ordering::Relaxed),
            leases: leases.clone(),
        };
        match call(&mut conn, beat, limit).await? {
            Response::HeartbeatAck {
                reregister: true, ..
            } => return Ok(()),
            Response::HeartbeatAck {
                delete,
                replicate,
                extended,
                ..
            } => {
                ctx.leases.renew(&leases, &extended, sent);
                for order in replicate {
                    // A full queue drops the order; the master reissues it after a while.
                    if ctx.replicate.try_send(order).is_err() {
                        tracing::debug!("replication queue full; order dropped");
                    }
                }
                if !delete.is_empty() {
                    let store = store.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        for handle in delete {
                            match store.delete(handle) {
                                Ok(_) => {
                                    tracing::info!(%handle, "chunk deleted at the master's request")
                                }
                                Err(e) => {
                                    tracing::warn!(%handle, error = %e, "chunk delete failed")
                                }
                            }
                        }
                    })
                    .await;
                }
            }
            other => {
                return Err(ProtocolError::Unexpected {
                    got: other.name(),
                    to: "Heartbeat",
                })
            }
        }
    }
}
