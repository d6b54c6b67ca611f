//! The master's HTTP side (`dfs master --http ADDR`): a one-page status view with
//! its JSON API, and `/metrics` for Prometheus.
//!
//! Everything here reads through the same request handler as a read-only client,
//! so the page shows exactly what `dfs status`, `ls`, `stat` and `fsck` would, and
//! can change nothing. Chunk tokens never leave the master this way. It has no
//! authentication: bind it to loopback (the default in `dfs up`) or to a network
//! you trust with the namespace's names and sizes.
//!
//! - `/`: the page (one file, no external assets, refreshes itself);
//! - `/api/status`: chunkservers with heartbeat ages, health counts, queues;
//! - `/api/health`: fsck's totals and up to 100 unhealthy files;
//! - `/api/ls?path=P&after=NAME`: one page of a directory;
//! - `/api/stat?path=P`: a file's chunks, versions and replicas;
//! - `/api/ops`: recent operations, newest first;
//! - `/metrics`: OpenMetrics text.

use std::sync::Arc;

use dfs_protocol::auth::{Peer, Role};
use dfs_protocol::{Accepted, ClientToMaster, ErrorCode, Request as Wire, Response};
use dfs_web::{Reply, Request};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::error::OpError;
use crate::service::Master;

const PAGE: &str = include_str!("status_page.html");

/// Entries of a directory per `/api/ls` page.
const LS_PAGE: u32 = 500;
/// Unhealthy files `/api/health` names.
const HEALTH_PROBLEMS: u32 = 100;

/// Serves the page, the API and `/metrics` on `listener` until `stop`.
pub async fn serve(master: Arc<Master>, listener: TcpListener, stop: CancellationToken) {
    tracing::info!(addr = ?listener.local_addr().ok(), "status page and /metrics listening");
    let handler: dfs_web::Handler = Arc::new(move |request| {
        let master = master.clone();
        Box::pin(async move { route(&master, request).await })
    });
    dfs_web::serve(listener, handler, stop).await;
}

async fn route(master: &Master, request: Request) -> Reply {
    match request.path.as_str() {
        "/" | "/index.html" => Reply::html(PAGE),
        "/metrics" => metrics(master).await,
        "/api/status" => answer(status(master).await),
        "/api/health" => answer(health(master).await),
        "/api/ls" => {
            let path = request.param("path").unwrap_or("/").to_string();
            let after = request.param("after").map(str::to_string);
            answer(list(master, path, after).await)
        }
        "/api/stat" => match request.param("path") {
            Some(path) => answer(stat(master, path.to_string()).await),
            None => Reply::error(400, "give ?path="),
        },
        "/api/ops" => answer(Ok(ops(master))),
        _ => Reply::not_found(),
    }
}

fn answer(result: Result<Value, ErrorCode>) -> Reply {
    match result {
        Ok(v) => Reply::json(v.to_string()),
        Err(e @ ErrorCode::NotFound { .. }) => Reply::error(404, &e.to_string()),
        Err(e) => Reply::error(400, &e.to_string()),
    }
}

/// Who the page is to the request handler: a read-only client.
fn observer() -> Accepted {
    Accepted {
        peer: Peer::Client {
            key: Some("status page".into()),
            role: Role::ReadOnly,
            fingerprint: [0; 32],
        },
        session: [0; 32],
    }
}

async fn ask(master: &Master, request: ClientToMaster) -> Result<Response, ErrorCode> {
    master
        .handle(&observer(), Wire::Master(request))
        .await
        .map_err(|e| match e {
            OpError::Client(code) => code,
            other => ErrorCode::Unavailable {
                reason: other.to_string(),
            },
        })
}

fn unexpected(r: &Response) -> ErrorCode {
    ErrorCode::Unavailable {
        reason: format!("unexpected answer {}", r.name()),
    }
}

async fn cluster_status(master: &Master) -> Result<dfs_protocol::ClusterStatus, ErrorCode> {
    match ask(master, ClientToMaster::Status).await? {
        Response::Status(s) => Ok(s),
        other => Err(unexpected(&other)),
    }
}

async fn metrics(master: &Master) -> Reply {
    match cluster_status(master).await {
        Ok(status) => {
            master.metrics().refresh(&status, &master.heartbeat_ages());
            master.metrics().set_reclaiming(master.reclaiming());
            master.metrics().set_footprint(&master.footprint());
        }
        Err(e) => tracing::warn!(error = %e, "metrics: cluster status unavailable"),
    }
    dfs_web::metrics::scrape(master.metrics().registry())
}

async fn status(master: &Master) -> Result<Value, ErrorCode> {
    let s = cluster_status(master).await?;
    let balance = match ask(
        master,
        ClientToMaster::Balance {
            threshold_percent: None,
        },
    )
    .await?
    {
        Response::Balance(b) => b,
        other => return Err(unexpected(&other)),
    };
    let ages = master.heartbeat_ages();
    let servers: Vec<Value> = s
        .chunkservers
        .iter()
        .map(|c| {
            let age = ages
                .iter()
                .find(|(a, _)| *a == c.addr)
                .map(|(_, d)| d.as_secs_f64());
            json!({
                "id": c.id.to_string(),
                "addr": c.addr,
                "alive": c.alive,
                "capacity": c.capacity,
                "used": c.used,
                "chunks": c.chunks,
                "load": c.load,
                "decommissioning": c.decommissioning,
                "draining": c.draining,
                "heartbeat_age": age,
            })
        })
        .collect();
    Ok(json!({
        "now": master.now_secs(),
        "chunkservers": servers,
        "files": s.files,
        "chunks": s.chunks,
        "under_replicated": s.under_replicated,
        "missing": s.missing,
        "over_replicated": s.over_replicated,
        "garbage": s.garbage,
        "trash": s.trash,
        "copying": s.copying,
        "safe_mode": s.safe_mode,
        "chunk_size": s.chunk_size,
        "replication": s.replication,
        "balance": {
            "spread": balance.spread,
            "threshold": balance.threshold,
            "moving": balance.moving,
        },
    }))
}

async fn health(master: &Master) -> Result<Value, ErrorCode> {
    let request = ClientToMaster::FsckPage {
        path: "/".into(),
        after: None,
        limit: HEALTH_PROBLEMS,
    };
    let (r, next) = match ask(master, request).await? {
        Response::FsckPage { report, next } => (report, next),
        other => return Err(unexpected(&other)),
    };
    let problems: Vec<Value> = r
        .problems
        .iter()
        .map(|p| {
            json!({
                "path": p.path, "chunks": p.chunks, "missing": p.missing,
                "under_replicated": p.under_replicated, "corrupt": p.corrupt, "stale": p.stale,
            })
        })
        .collect();
    Ok(json!({
        "healthy": r.healthy(),
        "files": r.files,
        "chunks": r.chunks,
        "missing": r.missing,
        "under_replicated": r.under_replicated,
        "corrupt": r.corrupt,
        "stale": r.stale,
        "over_replicated": r.over_replicated,
        "safe_mode": r.safe_mode,
        "problems": problems,
        "more_problems": next.is_some(),
    }))
}

async fn list(master: &Master, path: String, after: Option<String>) -> Result<Value, ErrorCode> {
    let request = ClientToMaster::ListPage {
        path: path.clone(),
        after,
        limit: LS_PAGE,
    };
    let (entries, next) = match ask(master, request).await? {
        Response::ListingPage { entries, next } => (entries, next),
        other => return Err(unexpected(&other)),
    };
    let entries: Vec<Value> = entries
        .iter()
        .map(|e| json!({"name": e.name, "kind": e.kind.as_str(), "size": e.size, "mtime": e.mtime, "replication": e.replication}))
        .collect();
    Ok(json!({"path": path, "entries": entries, "next": next}))
}

async fn stat(master: &Master, path: String) -> Result<Value, ErrorCode> {
    let s = match ask(master, ClientToMaster::Stat { path }).await? {
        Response::Stat(s) => s,
        other => return Err(unexpected(&other)),
    };
    let chunks: Vec<Value> = s
        .chunks
        .iter()
        .map(|c| {
            json!({
                "handle": c.handle.to_string(),
                "version": c.version.0,
                "size": c.size,
                "replicas": c.replicas,
                "open": c.open,
                "primary": c.primary,
            })
        })
        .collect();
    Ok(json!({
        "path": s.path,
        "kind": s.kind.as_str(),
        "size": s.size,
        "replication": s.replication,
        "mtime": s.mtime,
        "mode": s.mode,
        "uid": s.uid,
        "gid": s.gid,
        "atime": s.atime,
        "chunks": chunks,
    }))
}

fn ops(master: &Master) -> Value {
    Value::Array(
        master
            .recent()
            .newest()
            .into_iter()
            .map(|o| {
                json!({
                    "at": o.at, "op": o.op, "target": o.target, "by": o.by,
                    "micros": o.micros, "error": o.error,
                })
            })
            .collect(),
    )
}
