//! The master's accept loop and connection tasks.

use std::sync::Arc;
use std::time::Duration;

use dfs_protocol::{Body, Connection, ErrorCode, Frame, Limits, Response};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::MasterConfig;
use crate::error::{MasterError, OpError};
use crate::namespace::Namespace;
use crate::service::Master;
use crate::store::Store;

/// How long a new connection has to complete the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs a master on `listener` until `shutdown` is cancelled, then flushes its store.
pub async fn run(
    config: MasterConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), MasterError> {
    config.validate()?;
    let dir = config.data_dir.join("meta");
    let master = tokio::task::spawn_blocking(move || -> Result<Master, MasterError> {
        std::fs::create_dir_all(&dir).map_err(|source| MasterError::Io {
            context: format!("create {}", dir.display()),
            source,
        })?;
        let store = Store::open(&dir)?;
        let ns = Namespace::open(store.clone())?;
        Ok(Master::new(config, store, ns))
    })
    .await
    .map_err(|e| MasterError::Task(e.to_string()))??;
    let master = Arc::new(master);
    tracing::info!(addr = ?listener.local_addr().ok(), "master listening");

    let tracker = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(master.max_connections()));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let master = master.clone();
        let token = shutdown.child_token();
        tracker.spawn(
            async move {
                let _permit = permit;
                serve(master, stream, token).await;
            }
            .instrument(tracing::info_span!("conn", %peer)),
        );
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
    master.store().flush().await?;
    tracing::info!("master stopped");
    Ok(())
}

async fn serve(master: Arc<Master>, stream: TcpStream, shutdown: CancellationToken) {
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    let mut conn = Connection::new(r, w, Limits::default());
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, conn.accept_handshake()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::info!(error = %e, "handshake refused");
            return;
        }
        Err(_) => {
            tracing::info!("handshake timed out");
            return;
        }
    }
    loop {
        // `recv` is cancel-safe: a partly read frame stays in the reader's buffer.
        let frame = tokio::select! {
            _ = shutdown.cancelled() => return,
            f = conn.recv() => f,
        };
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(e) => {
                tracing::info!(error = %e, "dropping connection");
                return;
            }
        };
        let Frame {
            request_id, body, ..
        } = frame;
        let response = match body {
            Body::Request(request) => {
                let name = request.name();
                let span = tracing::debug_span!("request", id = %request_id, name);
                match master.handle(request).instrument(span).await {
                    Ok(r) => r,
                    Err(OpError::Client(code)) => Response::Error(code),
                    Err(OpError::Store(e)) => {
                        tracing::error!(error = %e, request = name, "metadata store failure");
                        Response::Error(ErrorCode::Io {
                            reason: e.to_string(),
                        })
                    }
                }
            }
            Body::Response(r) => Response::Error(ErrorCode::BadRequest {
                reason: format!("unexpected {} on a request connection", r.name()),
            }),
        };
        if let Err(e) = conn.reply(request_id, response).await {
            tracing::info!(error = %e, "peer went away");
            return;
        }
    }
}
