//! The master's accept loop and connection tasks.

use std::sync::Arc;
use std::time::Duration;

use dfs_protocol::ChunkserverToMaster;
use dfs_protocol::{Body, ErrorCode, Frame, Request, Response};
use futures::stream::{FuturesOrdered, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::MasterConfig;
use crate::error::{MasterError, OpError};
use crate::recovery;
use crate::service::Master;

/// How long a new connection has to prove itself; unauthenticated connections cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest one request may take, whatever it waits for.
const REQUEST_DEADLINE: Duration = Duration::from_secs(300);
/// How often trash expiry, upload expiry and garbage bookkeeping run.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Runs a master on `listener` until `shutdown` is cancelled, then flushes its store.
pub async fn run(
    config: MasterConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), MasterError> {
    run_with_http(config, listener, None, shutdown).await
}

/// `run`, also serving the status page and `/metrics` on `http` when given.
pub async fn run_with_http(
    config: MasterConfig,
    listener: TcpListener,
    http: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), MasterError> {
    config.validate()?;
    // Cancelled by the caller, or by `fatal` (a store or log failure): everything
    // below stops the same way, and `fatal` tells which it was.
    let stop = shutdown.child_token();
    let fatal = CancellationToken::new();
    let master = {
        let fatal = fatal.clone();
        tokio::task::spawn_blocking(move || -> Result<Master, MasterError> {
            let secret = match config.secret.clone() {
                Some(s) => s,
                None => {
                    let (s, created) = crate::secret::load_or_create(&config.data_dir)?;
                    let path = crate::secret::secret_path(&config.data_dir);
                    if created {
                        tracing::warn!(path = %path.display(), "generated a new cluster secret: give it to chunkservers (--secret-file or $DFS_SECRET)");
                    } else {
                        tracing::info!(path = %path.display(), "cluster secret loaded");
                    }
                    s
                }
            };
            let (ns, log) = recovery::recover(&config.data_dir)?;
            Ok(Master::new(config, secret, ns, log, fatal))
        })
        .await
        .map_err(|e| MasterError::Task(e.to_string()))??
    };
    let master = Arc::new(master);
    // Before anything is served: times shown from now on never fall below it.
    master
        .log_clock_floor()
        .await
        .map_err(|e| MasterError::Task(format!("clock floor: {e}")))?;
    tracing::info!(addr = ?listener.local_addr().ok(), "master listening");

    let tracker = TaskTracker::new();
    tracker.spawn({
        let (fatal, stop) = (fatal.clone(), stop.clone());
        async move {
            tokio::select! {
                _ = fatal.cancelled() => stop.cancel(),
                _ = stop.cancelled() => {}
            }
        }
    });
    tracker.spawn(upkeep(master.clone(), stop.clone()));
    if let Some(http) = http {
        tracker.spawn(crate::http::serve(master.clone(), http, stop.clone()));
    }
    tracker.spawn(checkpoints(master.clone(), stop.clone()));
    let permits = Arc::new(Semaphore::new(master.max_connections()));
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
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
        let token = stop.child_token();
        tracker.spawn(
            async move {
                let _permit = permit;
                let stop = token.clone();
                let served = dfs_protocol::grace::until_stopped(
                    serve(master, stream, token),
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
    drop(listener);
    tracker.close();
    tracker.wait().await;
    master
        .checkpoint()
        .await
        .map_err(|e| MasterError::Task(format!("final checkpoint: {e}")))?;
    let failed = fatal.is_cancelled();
    drop(master);
    if failed {
        return Err(MasterError::Task(
            "stopped after an operation log or metadata store failure".into(),
        ));
    }
    tracing::info!("master stopped");
    Ok(())
}

/// Trash expiry, idle uploads, garbage bookkeeping, safe-mode deadline, settling
/// appended chunks whose lease ended, refilling open chunks that lost replicas.
async fn upkeep(master: Arc<Master>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = master.maintain().await {
            tracing::error!(error = %e, "upkeep failed");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = master.settle_open_chunks() => {}
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = master.refill_open_chunks() => {}
        }
    }
}

/// Flushes the store and compacts the log at the configured interval.
async fn checkpoints(master: Arc<Master>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(master.checkpoint_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match master.checkpoint().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(segments = n, "log compacted"),
            Err(e) => tracing::error!(error = %e, "checkpoint failed"),
        }
    }
}

async fn serve(master: Arc<Master>, stream: TcpStream, shutdown: CancellationToken) {
    let handshake = async {
        let mut conn = dfs_protocol::net::accept(stream, master.tls())
            .await
            .map_err(|e| dfs_protocol::ProtocolError::Codec(e.into()))?;
        let accepted = conn.accept_handshake(|c| master.lookup(c)).await?;
        Ok::<_, dfs_protocol::ProtocolError>((conn, accepted))
    };
    let (mut conn, accepted) = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "handshake refused");
            return;
        }
        Err(_) => {
            tracing::info!("handshake timed out");
            return;
        }
    };
    tracing::debug!(peer = %accepted.peer, "authenticated");
    let idle = master.idle_timeout();
    let accepted = Arc::new(accepted);
    // Heartbeats are taken only on a connection whose Register succeeded: that is
    // where the server proved its own key.
    let mut registered = false;
    // Requests are started in the order they arrive and answered in that order, but
    // a client need not wait for one answer before sending the next: while one
    // mutation waits for the operation log's fsync, the next is planned and joins
    // the same group commit.
    let mut pending: FuturesOrdered<Answer> = FuturesOrdered::new();
    loop {
        let idle_now = pending.is_empty();
        let room = pending.len() < PIPELINE;
        // `recv` is cancel-safe: a partly read frame stays in the reader's buffer.
        let frame = tokio::select! {
            _ = shutdown.cancelled() => return,
            Some((request_id, response, close)) = pending.next(), if !pending.is_empty() => {
                if matches!(response, Response::Registered { .. }) {
                    registered = true;
                }
                if let Err(e) = conn.reply(request_id, response).await {
                    tracing::info!(error = %e, "peer went away");
                    return;
                }
                if close {
                    return;
                }
                continue;
            }
            f = async {
                if idle_now {
                    tokio::time::timeout(idle, conn.recv()).await
                } else {
                    Ok(conn.recv().await)
                }
            }, if room => match f {
                Ok(f) => f,
                Err(_) => {
                    tracing::debug!("idle connection closed");
                    return;
                }
            },
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
        let request = match body {
            Body::Request(request) => request,
            Body::Response(r) => {
                let code = ErrorCode::BadRequest {
                    reason: format!("unexpected {} on a request connection", r.name()),
                };
                pending.push_back(Box::pin(std::future::ready((
                    request_id,
                    Response::Error(code),
                    false,
                ))));
                continue;
            }
        };
        let name = request.name();
        let admitted = master
            .admit(&accepted.peer, &request)
            .and_then(|()| match request {
                Request::Report(ChunkserverToMaster::Heartbeat { .. }) if !registered => {
                    Err(ErrorCode::Forbidden {
                        reason: "heartbeat before a registration on this connection".into(),
                    })
                }
                _ => Ok(()),
            });
        if let Err(code) = admitted {
            tracing::warn!(peer = %accepted.peer, request = name, error = %code, "request refused");
            let closing = matches!(code, ErrorCode::AuthFailed { .. });
            pending.push_back(Box::pin(std::future::ready((
                request_id,
                Response::Error(code),
                closing,
            ))));
            continue;
        }
        let mut answer: Answer = Box::pin(answer(
            master.clone(),
            accepted.clone(),
            request_id,
            request,
        ));
        // Polled once here, so that this request's plan (which runs on the first
        // poll) is applied before any later request on the connection is read.
        let done = futures::poll!(answer.as_mut());
        pending.push_back(match done {
            std::task::Poll::Ready(out) => Box::pin(std::future::ready(out)),
            std::task::Poll::Pending => answer,
        });
    }
}

/// Requests one connection may have in flight at once.
const PIPELINE: usize = 64;

/// A request being answered: its id, the answer, and whether to close after it.
type Answer = std::pin::Pin<
    Box<dyn std::future::Future<Output = (dfs_protocol::RequestId, Response, bool)> + Send>,
>;

/// Runs one admitted request to its answer, with its deadline, metrics and the
/// recent-operations record.
async fn answer(
    master: Arc<Master>,
    accepted: Arc<dfs_protocol::Accepted>,
    request_id: dfs_protocol::RequestId,
    request: Request,
) -> (dfs_protocol::RequestId, Response, bool) {
    let name = request.name();
    let shown = match &request {
        Request::Master(r) => crate::recent::describe(r),
        _ => None,
    };
    let started = std::time::Instant::now();
    let span = tracing::debug_span!("request", id = %request_id, name);
    // Every wait inside is bounded too (the log, chunkserver calls); this
    // bounds their sum. Handlers are cancel-safe: state marks are guards.
    let handled = tokio::time::timeout(
        REQUEST_DEADLINE,
        master.handle(&accepted, request).instrument(span),
    )
    .await
    .unwrap_or_else(|_| {
        Err(ErrorCode::Unavailable {
            reason: format!("{name} took longer than {}s", REQUEST_DEADLINE.as_secs()),
        }
        .into())
    });
    let took = started.elapsed();
    master.metrics().request(name, took, handled.is_err());
    if let Some(target) = shown {
        master.recent().record(crate::recent::RecentOp {
            at: master.now_secs(),
            op: name,
            target,
            by: match &accepted.peer {
                dfs_protocol::Peer::Client { key: Some(k), .. } => k.clone(),
                dfs_protocol::Peer::Client { key: None, .. } => "cluster secret".into(),
                other => other.to_string(),
            },
            micros: u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            error: handled.as_ref().err().map(|e| e.to_string()),
        });
    }
    let response = match handled {
        Ok(r) => r,
        Err(OpError::Client(code)) => Response::Error(code),
        Err(OpError::Store(e)) => {
            tracing::error!(error = %e, request = name, "metadata store failure");
            Response::Error(ErrorCode::Io {
                reason: e.to_string(),
            })
        }
        Err(OpError::Log(e)) => {
            tracing::error!(error = %e, request = name, "operation log failure");
            Response::Error(ErrorCode::Unavailable {
                reason: e.to_string(),
            })
        }
    };
    (request_id, response, false)
}
