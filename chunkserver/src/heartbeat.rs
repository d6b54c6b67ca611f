//! Talking to the master: registration with the full chunk list on every
//! (re)connection, then periodic heartbeats with what changed in between. About
//! once an hour (`--full-report-every`) the server registers again, so the master
//! gets the full list as a safety net for any change a heartbeat failed to carry.

use std::sync::Arc;
use std::time::Duration;

use dfs_protocol::ChunkserverToMaster;
use dfs_protocol::{ErrorCode, ProtocolError, Request, Response, ServerId};
use tokio_util::sync::CancellationToken;

use crate::ctx::Ctx;
use crate::error::ChunkserverError;
use crate::net::{dial_session, Conn};

const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// The name the server key is sealed under in `Register`.
pub const SERVER_KEY: &str = "server key";

/// Keeps this server registered with the master until `shutdown`. If the master
/// refuses our credentials (a wrong cluster secret), cancels `shutdown` and fails:
/// retrying cannot help.
pub async fn heartbeat_loop(
    ctx: Arc<Ctx>,
    id: ServerId,
    advertise: String,
    shutdown: CancellationToken,
) -> Result<(), ChunkserverError> {
    let mut backoff = Duration::from_millis(50);
    loop {
        match session(&ctx, id, &advertise, &shutdown, &mut backoff).await {
            Ok(Ended::Shutdown) => return Ok(()),
            Ok(Ended::Reregister) => tracing::info!("master asked us to register again"),
            Ok(Ended::FullReport) => {
                tracing::debug!("registering again to send a full chunk report")
            }
            Err(ProtocolError::Remote(ErrorCode::AuthFailed { reason })) => {
                tracing::error!(master = %ctx.config.master, %reason, "the master refused this chunkserver: check the cluster secret");
                shutdown.cancel();
                return Err(ChunkserverError::Refused(reason));
            }
            Err(e) => {
                tracing::info!(error = %e, master = %ctx.config.master, "master unreachable; retrying")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
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

/// Why a session ended without an error.
enum Ended {
    Shutdown,
    /// The master asked for a new registration.
    Reregister,
    /// Time for the periodic full chunk report, which a registration carries.
    FullReport,
}

/// One connection's life: register, then heartbeat until it breaks, the master asks
/// for a new registration, a full report is due, or we shut down.
async fn session(
    ctx: &Ctx,
    id: ServerId,
    advertise: &str,
    shutdown: &CancellationToken,
    backoff: &mut Duration,
) -> Result<Ended, ProtocolError> {
    let limit = ctx.config.io_timeout;
    let (mut conn, link) = dial_session(
        &ctx.identity,
        &ctx.config.master,
        ctx.config.connect_timeout,
    )
    .await?;
    let store = &ctx.store;
    let mut chunks = store.full_report();
    // What one message cannot hold follows in heartbeats sent at once (below).
    let mut rest = chunks.split_off(chunks.len().min(ctx.config.report_piece));
    let register = Request::Report(ChunkserverToMaster::Register {
        server: id,
        addr: advertise.to_string(),
        capacity: store.capacity(),
        used: store.used(),
        chunks,
        id_key: dfs_protocol::auth::seal(&link.key, 0, SERVER_KEY, &ctx.id_key),
    });
    match call(&mut conn, register, limit).await? {
        Response::Registered { keys } => ctx.keys.load(&keys, &link.key),
        other => {
            return Err(ProtocolError::Unexpected {
                got: other.name(),
                to: "Register",
            })
        }
    }
    tracing::info!(master = %ctx.config.master, chunks = store.len(), "registered with the master");
    *backoff = Duration::from_millis(50);
    let full_report_at = tokio::time::Instant::now() + jittered(ctx.config.full_report_every);
    let mut ticker = tokio::time::interval(ctx.config.heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        if rest.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(Ended::Shutdown),
                _ = ticker.tick() => {}
            }
        } else if shutdown.is_cancelled() {
            return Ok(Ended::Shutdown);
        }
        if tokio::time::Instant::now() >= full_report_at {
            return Ok(Ended::FullReport);
        }
        let mut changes = store.take_changes();
        if !rest.is_empty() {
            // The rest of the full report, a piece a heartbeat, minus what changed
            // since it was taken: those changes are newer, and a piece sent after
            // them would undo them (a removed chunk back, an old version).
            let changed: std::collections::HashSet<_> = changes
                .added
                .iter()
                .map(|c| c.handle)
                .chain(changes.removed.iter().copied())
                .collect();
            if !changed.is_empty() {
                rest.retain(|c| !changed.contains(&c.handle));
            }
            let mut piece = rest.split_off(rest.len().saturating_sub(ctx.config.report_piece));
            piece.append(&mut changes.added);
            changes.added = piece;
        }
        let leases = ctx.leases.report();
        let sent = std::time::Instant::now();
        let beat = Request::Report(ChunkserverToMaster::Heartbeat {
            server: id,
            capacity: store.capacity(),
            used: store.used(),
            added: changes.added,
            removed: changes.removed,
            corrupt: changes.corrupt,
            load: ctx.busy.load(std::sync::atomic::Ordering::Relaxed),
            leases: leases.clone(),
            keys_epoch: ctx.keys.epoch(),
        });
        match call(&mut conn, beat, limit).await? {
            Response::HeartbeatAck {
                reregister: true, ..
            } => return Ok(Ended::Reregister),
            Response::HeartbeatAck {
                delete,
                replicate,
                extended,
                keys,
                ..
            } => {
                if let Some(keys) = keys {
                    tracing::debug!(
                        epoch = keys.epoch,
                        keys = keys.keys.len(),
                        "client keys updated"
                    );
                    ctx.keys.load(&keys, &link.key);
                }
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

/// `every`, give or take a tenth at random.
fn jittered(every: Duration) -> Duration {
    every.mul_f64(rand::random_range(0.9..1.1))
}
