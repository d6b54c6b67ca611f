//! `dfs bench holders`: chunkservers in name only, for measuring a large master.
//!
//! Each registers with the master over the real protocol, proving the cluster
//! secret and enrolling a key of its own as a chunkserver does, and reports its
//! share of the chunks `dfs bench load` wrote: file `i`'s chunk on holders `i`,
//! `i + 1`, ... (modulo their number), as many as the replication. Then each
//! heartbeats, with nothing changed, until stopped. They store and serve nothing,
//! and ignore the master's orders; they listen on no port, so nothing may read
//! from them. The master's chunk map, upkeep and heartbeat handling see what they
//! would see with that many real servers holding those chunks.
//!
//! Their ids and keys derive from their number, so a second run is the same
//! servers coming back, which the master accepts.

use std::time::Duration;

use dfs_protocol::{
    auth, ChunkHandle, ChunkReport, ChunkVersion, ChunkserverToMaster, ClusterSecret, Identity,
    PeerKind, ProtocolError, Request, Response, ServerId,
};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What holders report as their capacity.
const CAPACITY: u64 = 1 << 40;
/// Limit on dialing and on each exchange with the master.
const LIMIT: Duration = Duration::from_secs(60);

/// The chunk of file `i` of a `dfs bench load`: derived from `i`, so the holders
/// know it without asking.
pub fn load_handle(i: u64) -> ChunkHandle {
    ChunkHandle(uuid_from(b"dfs bench load chunk", i))
}

fn uuid_from(what: &[u8], i: u64) -> uuid::Uuid {
    let mut h = blake3::Hasher::new();
    h.update(what);
    h.update(&i.to_le_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&h.finalize().as_bytes()[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// Holder `n`'s id and enrolled key.
fn holder(n: u64) -> (ServerId, [u8; 32]) {
    let key =
        *blake3::hash(&[b"dfs bench holder key".as_slice(), &n.to_le_bytes()].concat()).as_bytes();
    (ServerId(uuid_from(b"dfs bench holder", n)), key)
}

/// The chunks holder `n` of `servers` holds, of `files` files at `replication`
/// (at most `servers`): file `i` where `i + r = n` modulo `servers` for some replica
/// `r`, in file order.
fn share_of(n: u64, servers: u64, files: u64, replication: u64, size: u64) -> Vec<ChunkReport> {
    let mut ids: Vec<u64> = (0..replication.min(servers))
        .flat_map(|r| {
            let first = (n + servers - r % servers) % servers;
            (first..files).step_by(usize::try_from(servers).unwrap_or(usize::MAX))
        })
        .collect();
    ids.sort_unstable();
    ids.into_iter()
        .map(|i| ChunkReport {
            handle: load_handle(i),
            version: ChunkVersion(1),
            size,
        })
        .collect()
}

/// What the holders share out among themselves: the chunks of `files` files of
/// `file_size` bytes, each on `replication` of `servers` holders.
#[derive(Debug, Clone, Copy)]
pub struct Share {
    pub servers: u64,
    pub files: u64,
    pub replication: u64,
    pub file_size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum HoldersError {
    #[error("holder {n}: {source}")]
    Protocol {
        n: u64,
        #[source]
        source: ProtocolError,
    },
    #[error("holder {n}: the master answered {got}")]
    Unexpected { n: u64, got: &'static str },
}

/// The bytes holder `n`'s frames take on the wire (frame header and body, before
/// TLS): its registration, which is a full report of every chunk it holds, and an
/// idle heartbeat, which reports only what changed (nothing). For the heartbeat
/// figures of docs/scale.md: a full report every heartbeat against incremental
/// ones.
pub fn wire_bytes(n: u64, share: Share) -> Result<(usize, usize), dfs_protocol::CodecError> {
    let (id, _) = holder(n);
    let (register, used) = registration(n, share, [0; 32]);
    let size = |r: Request| {
        dfs_protocol::frame::encode_head(
            &dfs_protocol::Frame::request(dfs_protocol::RequestId(1), r),
            dfs_protocol::Limits::default(),
        )
        .map(|b| b.len())
    };
    Ok((size(register)?, size(idle_heartbeat(id, used, 0))?))
}

/// Holder `n`'s registration, with its sealed key, and the bytes it uses. Built for
/// each registration rather than kept: at 10 million files the holders' reports
/// together are a gigabyte.
fn registration(n: u64, share: Share, id_key: [u8; 32]) -> (Request, u64) {
    let (id, _) = holder(n);
    let chunks = share_of(
        n,
        share.servers,
        share.files,
        share.replication,
        share.file_size,
    );
    let used = chunks.iter().map(|c| c.size).sum();
    let register = Request::Report(ChunkserverToMaster::Register {
        server: id,
        // Nothing listens there: the holders serve nothing.
        addr: format!("127.0.0.1:{}", 20_000 + n % 40_000),
        capacity: CAPACITY,
        used,
        chunks,
        id_key,
    });
    (register, used)
}

/// A heartbeat that reports nothing changed.
fn idle_heartbeat(server: ServerId, used: u64, keys_epoch: u64) -> Request {
    Request::Report(ChunkserverToMaster::Heartbeat {
        server,
        capacity: CAPACITY,
        used,
        added: Vec::new(),
        removed: Vec::new(),
        corrupt: Vec::new(),
        load: 0,
        leases: Vec::new(),
        keys_epoch,
    })
}

/// Runs `servers` holders against `master` until `stop` is cancelled; `registered`
/// is called once all have registered. The first holder to fail stops the rest.
pub async fn run(
    master: &str,
    secret: &ClusterSecret,
    share: Share,
    heartbeat: Duration,
    stop: CancellationToken,
    registered: impl FnOnce(),
) -> Result<(), HoldersError> {
    let servers = share.servers;
    let tracker = TaskTracker::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(servers.max(1) as usize);
    let (fail_tx, mut fail_rx) = tokio::sync::mpsc::channel::<HoldersError>(1);
    // A few registrations at a time: each builds its whole report in memory.
    let registering = std::sync::Arc::new(tokio::sync::Semaphore::new(4));
    for n in 0..servers {
        let (master, secret, stop) = (master.to_string(), secret.clone(), stop.clone());
        let (ready_tx, fail_tx) = (ready_tx.clone(), fail_tx.clone());
        let registering = registering.clone();
        tracker.spawn(async move {
            let held = async {
                let permit = registering.acquire_owned().await.ok();
                one(
                    &master, &secret, n, share, heartbeat, &stop, ready_tx, permit,
                )
                .await
            };
            if let Err(e) = held.await {
                let _ = fail_tx.try_send(e);
                stop.cancel();
            }
        });
    }
    tracker.close();
    drop((ready_tx, fail_tx));
    let mut ready = 0;
    let mut registered = Some(registered);
    // Each holder lets go of its sender once it has registered, so the channel
    // closes when all have: they go on heartbeating until `stop` (Ctrl-C, --for,
    // or the first to fail). Ending when it closed stopped every holder right
    // after the registrations, and the master declared all of them dead.
    let mut registering = true;
    loop {
        tokio::select! {
            r = ready_rx.recv(), if registering => match r {
                Some(()) => {
                    ready += 1;
                    if ready == servers {
                        if let Some(f) = registered.take() { f() }
                    }
                }
                None => registering = false,
            },
            _ = stop.cancelled() => break,
        }
    }
    stop.cancel();
    tracker.wait().await;
    match fail_rx.try_recv() {
        Ok(e) => Err(e),
        Err(_) => Ok(()),
    }
}

/// One holder: registers with `chunks`, then heartbeats until `stop`. Like a real
/// chunkserver it dials and registers again when the connection fails (a busy
/// master may time out a handshake); only a refusal of its credentials ends it.
#[allow(clippy::too_many_arguments)]
async fn one(
    master: &str,
    secret: &ClusterSecret,
    n: u64,
    share: Share,
    heartbeat: Duration,
    stop: &CancellationToken,
    ready: tokio::sync::mpsc::Sender<()>,
    registering: Option<tokio::sync::OwnedSemaphorePermit>,
) -> Result<(), HoldersError> {
    let mut ready = Some((ready, registering));
    loop {
        match session(master, secret, n, share, heartbeat, stop, &mut ready).await {
            Ok(()) => return Ok(()),
            Err(HoldersError::Protocol {
                source: ProtocolError::Remote(dfs_protocol::ErrorCode::AuthFailed { reason }),
                ..
            }) => {
                return Err(HoldersError::Protocol {
                    n,
                    source: ProtocolError::Remote(dfs_protocol::ErrorCode::AuthFailed { reason }),
                })
            }
            Err(e) => tracing::info!(error = %e, "holder session ended; registering again"),
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// One connection of a holder: register, then heartbeat until `stop` or an error;
/// `ready` is signalled (and the registration permit released) after the first
/// registration.
async fn session(
    master: &str,
    secret: &ClusterSecret,
    n: u64,
    share: Share,
    heartbeat: Duration,
    stop: &CancellationToken,
    ready: &mut Option<(
        tokio::sync::mpsc::Sender<()>,
        Option<tokio::sync::OwnedSemaphorePermit>,
    )>,
) -> Result<(), HoldersError> {
    let err = |source| HoldersError::Protocol { n, source };
    let unexpected = |r: &Response| HoldersError::Unexpected { n, got: r.name() };
    let (id, id_key) = holder(n);
    let identity = Identity::chunkserver(id, secret);
    let (mut conn, session) =
        dfs_protocol::net::dial_session(master, PeerKind::Chunkserver, &identity, LIMIT)
            .await
            .map_err(err)?;
    let (register, used) =
        registration(n, share, auth::seal(&session.key, 0, "server key", &id_key));
    let mut epoch = match call(&mut conn, register).await.map_err(err)? {
        Response::Registered { keys } => keys.epoch,
        other => return Err(unexpected(&other)),
    };
    if let Some((ready, registering)) = ready.take() {
        drop(registering);
        let _ = ready.send(()).await;
    }
    let mut ticker = tokio::time::interval(heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = ticker.tick() => {}
        }
        match call(&mut conn, idle_heartbeat(id, used, epoch))
            .await
            .map_err(err)?
        {
            Response::HeartbeatAck { keys, .. } => {
                if let Some(k) = keys {
                    epoch = k.epoch;
                }
            }
            other => return Err(unexpected(&other)),
        }
    }
}

async fn call(
    conn: &mut dfs_protocol::net::TcpConn,
    request: Request,
) -> Result<Response, ProtocolError> {
    tokio::time::timeout(LIMIT, conn.call(request))
        .await
        .unwrap_or_else(|_| {
            Err(ProtocolError::Codec(
                std::io::Error::new(std::io::ErrorKind::TimedOut, "the master did not answer")
                    .into(),
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_chunk_has_its_replicas_among_the_holders() {
        let (servers, files, r) = (7, 100, 3);
        let mut count = std::collections::HashMap::new();
        for n in 0..servers {
            for c in share_of(n, servers, files, r, 1) {
                *count.entry(c.handle).or_insert(0) += 1;
            }
        }
        assert_eq!(count.len(), files as usize);
        assert!(count.values().all(|&k| k == r));
        assert_eq!(load_handle(5), load_handle(5));
        assert_ne!(load_handle(5), load_handle(6));
        assert_eq!(holder(3), holder(3));
    }
}
