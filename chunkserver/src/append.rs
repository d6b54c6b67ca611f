//! Record append: the primary's side of a lease, and the secondaries' side.
//!
//! The master grants a lease by asking the primary (`GrantLease`) to move every
//! replica to a new version and to the shortest replica's length: bytes past it were
//! never acknowledged. The primary then runs one task per leased chunk that takes
//! records in arrival order, picks their offsets, writes each batch locally and on
//! every secondary at the same offset, and answers the appenders only when all of
//! them hold it durably. Records queued while a batch is written form the next batch,
//! so concurrent appenders share the fsyncs (group commit). A batch is not closed
//! (for up to [`LINGER`]) while a record for it is still arriving, or while it holds
//! fewer records than the one before: appenders with records in flight send their
//! next records as soon as a batch is answered, one after another, and without the
//! wait the first of them would be written alone and the rest in a batch behind it.
//!
//! A record that does not fit closes the chunk at its current length (`ChunkFull`):
//! nothing is padded. A failed batch ends the lease for good (every later record is
//! refused with the same error); the client reports it and the master grants a new
//! lease on the surviving replicas, at a new version, which cuts unacknowledged
//! bytes off. A restarted primary holds no lease: it never appends to a chunk the
//! master may have closed meanwhile.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dfs_protocol::{
    ChunkHandle, ChunkToken, ChunkVersion, ErrorCode, Frame, LeaseGrant, LeaseReport,
    ProtocolError, Request, RequestId, Response,
};
use dfs_protocol::{ChunkRequest, PeerOrder};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;

use crate::ctx::Ctx;
use crate::net::{dial, Conn};
use crate::store::ChunkStore;
use crate::stream::{next_packet, read_budgeted, read_packets, timed_out};

/// Records waiting for a chunk's append task.
const QUEUE: usize = 256;
/// A batch stops growing at this many bytes (and always holds at least one record).
/// Public for the ceiling probe, which writes the same pattern (`dfs bench ceiling`).
pub const BATCH_BYTES: u64 = 8 << 20;
/// Record bytes held in memory at once by all appends to this server.
pub const APPEND_BUDGET: u32 = 256 << 20;
/// Largest record taken whatever the lease says, so that a batch (up to
/// `BATCH_BYTES` plus one record) always fits the budget.
const MAX_RECORD: u64 = 128 << 20;

/// Packets of a forwarded batch buffered between the network and the disk.
const FORWARD_QUEUE: usize = 4;
/// Longest a batch waits for records already arriving before it is closed.
const LINGER: Duration = Duration::from_millis(4);

/// One record waiting for its offset.
struct Job {
    pieces: Vec<Bytes>,
    len: u64,
    reply: oneshot::Sender<Result<u64, ErrorCode>>,
    _permit: OwnedSemaphorePermit,
}

/// A lease held as primary.
#[derive(Debug)]
pub struct Lease {
    pub handle: ChunkHandle,
    pub version: ChunkVersion,
    max_append: u64,
    duration: Duration,
    /// Length acknowledged to appenders.
    acked: AtomicU64,
    /// Records whose request arrived and whose bytes are still being read.
    arriving: AtomicUsize,
    times: Mutex<Times>,
    tx: mpsc::Sender<Job>,
}

/// Counts one record as arriving on its lease until dropped.
struct Arriving<'a>(&'a Lease);

impl<'a> Arriving<'a> {
    fn new(lease: &'a Lease) -> Arriving<'a> {
        lease.arriving.fetch_add(1, Ordering::AcqRel);
        Arriving(lease)
    }
}

impl Drop for Arriving<'_> {
    fn drop(&mut self) {
        self.0.arriving.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug, Clone, Copy)]
struct Times {
    expires: Instant,
    used: Instant,
    ended: bool,
}

impl Lease {
    fn times(&self) -> std::sync::MutexGuard<'_, Times> {
        self.times
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn valid(&self, now: Instant) -> bool {
        let t = self.times();
        !t.ended && now < t.expires
    }

    fn end(&self) {
        self.times().ended = true;
    }
}

/// The leases this server holds as primary.
#[derive(Debug, Default)]
pub struct Leases {
    map: Mutex<HashMap<ChunkHandle, Arc<Lease>>>,
}

impl Leases {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ChunkHandle, Arc<Lease>>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, handle: &ChunkHandle) -> Option<Arc<Lease>> {
        self.lock().get(handle).cloned()
    }

    fn replace(&self, handle: ChunkHandle, lease: Option<Arc<Lease>>) {
        let old = match lease {
            Some(l) => self.lock().insert(handle, l),
            None => self.lock().remove(&handle),
        };
        if let Some(old) = old {
            old.end();
        }
    }

    /// Leases to report in a heartbeat: those used within their duration. Expired
    /// ones are dropped here.
    pub fn report(&self) -> Vec<LeaseReport> {
        let now = Instant::now();
        let mut map = self.lock();
        map.retain(|_, l| {
            let keep = l.valid(now);
            if !keep {
                l.end();
            }
            keep
        });
        map.values()
            .filter(|l| now.saturating_duration_since(l.times().used) < l.duration)
            .map(|l| LeaseReport {
                handle: l.handle,
                version: l.version,
                size: l.acked.load(Ordering::Acquire),
            })
            .collect()
    }

    /// The master's answer to reported leases: `extended` ones run on from `sent`
    /// (when the heartbeat left, so we never outlive the master's view); the others
    /// are revoked.
    pub fn renew(&self, reported: &[LeaseReport], extended: &[ChunkHandle], sent: Instant) {
        let mut map = self.lock();
        for r in reported {
            let Some(l) = map
                .get(&r.handle)
                .filter(|l| l.version == r.version)
                .cloned()
            else {
                continue;
            };
            if extended.contains(&r.handle) {
                let mut t = l.times();
                t.expires = t.expires.max(sent + l.duration);
            } else {
                tracing::debug!(handle = %r.handle, "append lease revoked by the master");
                l.end();
                map.remove(&r.handle);
            }
        }
    }

    /// What this server acknowledged of `handle` at `version`, if it is its primary.
    fn acked(&self, handle: &ChunkHandle, version: ChunkVersion) -> Option<u64> {
        self.get(handle)
            .filter(|l| l.version == version && l.valid(Instant::now()))
            .map(|l| l.acked.load(Ordering::Acquire))
    }
}

/// A secondary as the primary sees it.
struct Secondary {
    addr: String,
    conn: Conn,
}

fn blocking_failed(e: tokio::task::JoinError) -> ErrorCode {
    ErrorCode::Io {
        reason: format!("disk task failed: {e}"),
    }
}

/// Sends one request and waits for its answer within `limit`.
async fn call(
    conn: &mut Conn,
    request: Request,
    limit: Duration,
) -> Result<Response, ProtocolError> {
    match tokio::time::timeout(limit, conn.call(request)).await {
        Ok(r) => r,
        Err(_) => Err(timed_out("an answer")),
    }
}

/// Longest lease a grant may ask for.
const MAX_LEASE: Duration = Duration::from_secs(3600);
/// Largest chunk size a grant may name.
const MAX_CHUNK_SIZE: u64 = 4 << 30;

/// `GrantLease`: moves the replicas to `version`, evens their lengths out and, with
/// a lease duration, starts taking appends. Answers the secondaries that made it.
pub async fn grant(ctx: &Arc<Ctx>, g: LeaseGrant) -> Result<Response, ErrorCode> {
    let LeaseGrant {
        handle,
        from,
        version,
        secondaries,
        lease_ms,
        chunk_size,
        max_append,
        token,
    } = g;
    if Duration::from_millis(lease_ms) > MAX_LEASE
        || chunk_size == 0
        || chunk_size > MAX_CHUNK_SIZE
        || from.is_some_and(|f| f >= version)
        || secondaries.len() > 64
    {
        return Err(ErrorCode::BadRequest {
            reason: format!(
                "grant out of bounds: lease {lease_ms} ms, chunk size {chunk_size}, {} secondaries, version {:?} -> {version}",
                secondaries.len(),
                from
            ),
        });
    }
    let received = Instant::now();
    // An older lease on this chunk is over, whatever happens next.
    ctx.leases.replace(handle, None);
    let store = ctx.store.clone();
    let own = tokio::task::spawn_blocking(move || store.bump(handle, from, version))
        .await
        .map_err(blocking_failed)?
        .map_err(|e| e.to_code())?;

    let limit = ctx.config.io_timeout;
    let connect = ctx.config.connect_timeout;
    let identity = &ctx.identity;
    let bump = |from| {
        Request::Peer(PeerOrder::BumpVersion {
            handle,
            from,
            version,
            token,
        })
    };
    let bumps = secondaries.iter().map(|addr| async move {
        let mut conn = dial(identity, addr, connect).await?;
        let (answer, fresh) = match call(&mut conn, bump(from), limit).await {
            // Not held there: a fresh replica the master added to bring the chunk back
            // to its replication. It starts empty and is filled below.
            Err(ProtocolError::Remote(ErrorCode::UnknownChunk { .. })) if from.is_some() => {
                (call(&mut conn, bump(None), limit).await?, true)
            }
            other => (other?, false),
        };
        match answer {
            Response::ChunkSize { size } => Ok((
                Secondary {
                    addr: addr.clone(),
                    conn,
                },
                size,
                fresh,
            )),
            other => Err(ProtocolError::Unexpected {
                got: other.name(),
                to: "BumpVersion",
            }),
        }
    });
    let mut joined = Vec::new();
    let mut fresh = Vec::new();
    for (addr, r) in secondaries
        .iter()
        .zip(futures::future::join_all(bumps).await)
    {
        match r {
            Ok((s, _, true)) => fresh.push(s),
            Ok((s, len, false)) => joined.push((s, len)),
            Err(e) => tracing::warn!(%handle, %addr, error = %e, "secondary left out of the lease"),
        }
    }
    // Every acknowledged byte is on every replica that held the chunk: the shortest
    // of those is the length to keep. Fresh replicas are filled to it, never cut to 0.
    let size = joined.iter().map(|(_, s)| *s).fold(own, u64::min);
    if own > size {
        let store = ctx.store.clone();
        tokio::task::spawn_blocking(move || store.truncate(handle, version, size))
            .await
            .map_err(blocking_failed)?
            .map_err(|e| e.to_code())?;
    }
    let mut kept = Vec::new();
    for (mut s, len) in joined {
        if len > size {
            let cut = Request::Peer(PeerOrder::TruncateChunk {
                handle,
                version,
                size,
                token,
            });
            if let Err(e) = call(&mut s.conn, cut, limit).await {
                tracing::warn!(%handle, addr = %s.addr, error = %e, "secondary could not be cut back; left out");
                continue;
            }
        }
        kept.push(s);
    }
    for mut s in fresh {
        match fill(&ctx.store, &mut s.conn, token, size, limit).await {
            Ok(()) => {
                tracing::info!(%handle, %version, size, addr = %s.addr, "fresh replica filled");
                kept.push(s);
            }
            Err(e) => {
                tracing::warn!(%handle, addr = %s.addr, error = %e, "fresh replica could not be filled; left out")
            }
        }
    }
    let addrs: Vec<String> = kept.iter().map(|s| s.addr.clone()).collect();
    tracing::info!(%handle, %version, size, secondaries = ?addrs, lease_ms, "lease granted");
    if lease_ms > 0 {
        if max_append == 0 || max_append > chunk_size {
            return Err(ErrorCode::BadRequest {
                reason: format!("max append {max_append} does not suit chunk size {chunk_size}"),
            });
        }
        let duration = Duration::from_millis(lease_ms);
        let (tx, rx) = mpsc::channel(QUEUE);
        let lease = Arc::new(Lease {
            handle,
            version,
            max_append,
            duration,
            acked: AtomicU64::new(size),
            arriving: AtomicUsize::new(0),
            times: Mutex::new(Times {
                expires: received + duration,
                used: received,
                ended: false,
            }),
            tx,
        });
        let task = Appender {
            lease: Arc::downgrade(&lease),
            store: ctx.store.clone(),
            secondaries: kept,
            len: size,
            chunk_size,
            limit,
            failed: None,
            sealed: false,
            token,
            expect: 0,
            batches: ctx.metrics.append_batches(),
        };
        ctx.tasks.spawn(task.run(rx, ctx.stop.clone()));
        ctx.leases.replace(handle, Some(lease));
    }
    Ok(Response::LeaseGranted {
        size,
        secondaries: addrs,
    })
}

/// Orders one leased chunk's appends.
struct Appender {
    lease: std::sync::Weak<Lease>,
    store: ChunkStore,
    secondaries: Vec<Secondary>,
    len: u64,
    chunk_size: u64,
    limit: Duration,
    /// Set by the first failed batch: the lease is over and this is every answer.
    failed: Option<ErrorCode>,
    /// A record did not fit: the chunk is closed at `len` for good, since the master
    /// seals it at the length its appenders were told.
    sealed: bool,
    /// The master's order, shown to the secondaries with every batch.
    token: ChunkToken,
    /// Records the last batch held: as many are likely on their way for the next.
    expect: usize,
    /// Records per batch written, for `/metrics`.
    batches: prometheus_client::metrics::histogram::Histogram,
}

impl Appender {
    /// Takes batches until the lease ends or the server stops; records still queued
    /// then are answered with an error when `rx` drops.
    async fn run(mut self, mut rx: mpsc::Receiver<Job>, stop: CancellationToken) {
        loop {
            let first = tokio::select! {
                _ = stop.cancelled() => return,
                job = rx.recv() => match job {
                    Some(job) => job,
                    None => return,
                },
            };
            let mut bytes = first.len;
            let mut batch = vec![first];
            while bytes < BATCH_BYTES {
                match rx.try_recv() {
                    Ok(job) => {
                        bytes += job.len;
                        batch.push(job);
                    }
                    Err(_) => break,
                }
            }
            let linger = tokio::time::Instant::now() + LINGER;
            while bytes < BATCH_BYTES && (batch.len() < self.expect || self.arriving()) {
                match tokio::time::timeout_at(linger, rx.recv()).await {
                    Ok(Some(job)) => {
                        bytes += job.len;
                        batch.push(job);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            self.expect = batch.len();
            // A secondary that stops reading cannot hold shutdown past the grace.
            let grace = dfs_protocol::grace::SHUTDOWN_GRACE;
            let done = dfs_protocol::grace::until_stopped(self.batch(batch), &stop, grace);
            if done.await.is_none() {
                return;
            }
        }
    }

    /// Whether a record for this lease is being read right now.
    fn arriving(&self) -> bool {
        self.lease
            .upgrade()
            .is_some_and(|l| l.arriving.load(Ordering::Acquire) > 0)
    }

    async fn batch(&mut self, batch: Vec<Job>) {
        let lease = self.lease.upgrade();
        let Some(lease) = lease.filter(|l| l.valid(Instant::now())) else {
            let handle = self.lease.upgrade().map(|l| l.handle);
            for job in batch {
                let code = match handle {
                    Some(handle) => ErrorCode::NotPrimary { handle },
                    None => ErrorCode::Unavailable {
                        reason: "append lease ended".into(),
                    },
                };
                let _ = job.reply.send(Err(code));
            }
            return;
        };
        if let Some(code) = &self.failed {
            for job in batch {
                let _ = job.reply.send(Err(code.clone()));
            }
            return;
        }
        let (handle, version) = (lease.handle, lease.version);
        let mut cursor = self.len;
        let mut taken = Vec::new();
        let mut full = Vec::new();
        for job in batch {
            // Once a record does not fit the chunk is closed, also for smaller ones.
            if self.sealed || cursor + job.len > self.chunk_size {
                self.sealed = true;
                full.push(job);
            } else {
                taken.push((cursor, job));
                cursor += taken.last().map_or(0, |(_, j)| j.len);
            }
        }
        if !taken.is_empty() {
            let pieces: Vec<Bytes> = taken
                .iter()
                .flat_map(|(_, j)| j.pieces.iter().cloned())
                .collect();
            let started = Instant::now();
            let result = self.write(handle, version, cursor, pieces).await;
            tracing::debug!(
                %handle,
                records = taken.len(),
                bytes = cursor - self.len,
                ms = started.elapsed().as_secs_f64() * 1e3,
                "append batch"
            );
            match result {
                Ok(()) => {
                    self.batches.observe(taken.len() as f64);
                    self.len = cursor;
                    lease.acked.store(cursor, Ordering::Release);
                    for (offset, job) in taken {
                        let _ = job.reply.send(Ok(offset));
                    }
                }
                Err(code) => {
                    tracing::warn!(%handle, error = %code, "append batch failed; lease over");
                    self.failed = Some(code.clone());
                    for (_, job) in taken.into_iter().chain(full.drain(..).map(|j| (0, j))) {
                        let _ = job.reply.send(Err(code.clone()));
                    }
                }
            }
        }
        for job in full {
            let _ = job.reply.send(Err(ErrorCode::ChunkFull {
                handle,
                size: self.len,
            }));
        }
    }

    /// Writes one batch at `self.len` here and on every secondary at once.
    async fn write(
        &mut self,
        handle: ChunkHandle,
        version: ChunkVersion,
        end: u64,
        pieces: Vec<Bytes>,
    ) -> Result<(), ErrorCode> {
        let offset = self.len;
        let store = self.store.clone();
        let local_pieces = pieces.clone();
        let local = tokio::task::spawn_blocking(move || {
            store.append(handle, version, offset, &local_pieces)
        });
        let limit = self.limit;
        let pieces = &pieces;
        let token = self.token;
        let remote = self.secondaries.iter_mut().map(|s| async move {
            let r = forward(&mut s.conn, token, offset, end, pieces, limit).await;
            r.map_err(|e| ErrorCode::ReplicaFailed {
                addr: s.addr.clone(),
                reason: e.to_string(),
            })
        });
        let (local, remote) = tokio::join!(local, futures::future::join_all(remote));
        match local.map_err(blocking_failed)? {
            Ok(len) if len == end => {}
            Ok(len) => {
                return Err(ErrorCode::Io {
                    reason: format!("local replica at {len} bytes, expected {end}"),
                })
            }
            Err(e) => return Err(e.to_code()),
        }
        remote.into_iter().collect::<Result<Vec<()>, ErrorCode>>()?;
        Ok(())
    }
}

/// Bytes of a fresh replica's fill sent per forwarded batch: within every budget.
const FILL_BATCH: u64 = 8 << 20;

/// Copies this replica's first `size` bytes (verified as read) to an empty secondary,
/// batch by batch, each durable there before the next is read.
async fn fill(
    store: &ChunkStore,
    conn: &mut Conn,
    token: ChunkToken,
    size: u64,
    limit: Duration,
) -> Result<(), ProtocolError> {
    let blocking = |e| ProtocolError::Remote(blocking_failed(e));
    let refused = |e: crate::error::StoreError| ProtocolError::Remote(e.to_code());
    // One reader for the whole fill: the replica does not change before the lease.
    let store = store.clone();
    let mut reader =
        tokio::task::spawn_blocking(move || store.open_reader(token.handle, token.version))
            .await
            .map_err(blocking)?
            .map_err(refused)?;
    let mut at = 0;
    while at < size {
        let n = (size - at).min(FILL_BATCH);
        let (back, data) = tokio::task::spawn_blocking(move || {
            let data = reader.read(at, n);
            (reader, data)
        })
        .await
        .map_err(blocking)?;
        reader = back;
        let data = data.map_err(refused)?;
        let pieces: Vec<Bytes> = (0..data.len())
            .step_by(dfs_protocol::PACKET_SIZE)
            .map(|i| data.slice(i..(i + dfs_protocol::PACKET_SIZE).min(data.len())))
            .collect();
        forward(conn, token, at, at + n, &pieces, limit).await?;
        at += n;
    }
    Ok(())
}

/// Sends a batch to one secondary and waits until it is durable there.
async fn forward(
    conn: &mut Conn,
    token: ChunkToken,
    offset: u64,
    end: u64,
    pieces: &[Bytes],
    limit: Duration,
) -> Result<(), ProtocolError> {
    let id = conn.next_request_id();
    let send = async {
        let head = Request::Peer(PeerOrder::AppendForward {
            handle: token.handle,
            version: token.version,
            offset,
            len: end - offset,
            token,
        });
        conn.send(&Frame::request(id, head)).await?;
        for (i, p) in pieces.iter().enumerate() {
            let last = i + 1 == pieces.len();
            let frame = Frame::request(id, Request::Chunk(ChunkRequest::WritePacket { last }))
                .with_payload(p.clone());
            conn.send(&frame).await?;
        }
        conn.recv_response(id, "AppendForward").await
    };
    match tokio::time::timeout(limit, send).await {
        Ok(Ok((Response::ChunkSize { size }, _))) if size == end => Ok(()),
        Ok(Ok((Response::ChunkSize { size }, _))) => Err(ProtocolError::Remote(ErrorCode::Io {
            reason: format!("replica at {size} bytes after the append, expected {end}"),
        })),
        Ok(Ok((other, _))) => Err(ProtocolError::Unexpected {
            got: other.name(),
            to: "AppendForward",
        }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(timed_out("the secondary")),
    }
}

/// `Append` from a client: queues the record on the chunk's lease and answers its
/// offset once every replica holds it.
pub async fn append(
    ctx: &Arc<Ctx>,
    conn: &mut Conn,
    id: RequestId,
    handle: ChunkHandle,
    version: ChunkVersion,
    len: u64,
) -> Result<(), ProtocolError> {
    let limit = ctx.config.io_timeout;
    let lease = ctx.leases.get(&handle);
    let refusal = match &lease {
        None => Some(ErrorCode::NotPrimary { handle }),
        Some(l) if l.version != version => Some(ErrorCode::StaleVersion {
            handle,
            have: l.version,
            want: version,
        }),
        Some(l) if len == 0 || len > l.max_append.min(MAX_RECORD) => Some(ErrorCode::BadRequest {
            reason: format!(
                "a record must have 1 to {} bytes, not {len}",
                l.max_append.min(MAX_RECORD)
            ),
        }),
        Some(_) => None,
    };
    let outcome = match (lease, refusal) {
        (Some(lease), None) => {
            let arriving = Arriving::new(&lease);
            match read_budgeted(conn, id, len, limit, &ctx.append_budget).await? {
                Ok((pieces, permit)) => submit(&lease, pieces, len, permit, arriving).await,
                Err(e) => Err(e),
            }
        }
        (_, refusal) => {
            // Drain the record so the client reads a clear answer, not a reset.
            let _ = read_packets(conn, id, u64::MAX, limit, false).await?;
            Err(refusal.unwrap_or(ErrorCode::NotPrimary { handle }))
        }
    };
    let response = match outcome {
        Ok(offset) => Response::Appended { offset },
        Err(code) => Response::Error(code),
    };
    conn.reply(id, response).await?;
    Ok(())
}

async fn submit(
    lease: &Lease,
    pieces: Vec<Bytes>,
    len: u64,
    permit: OwnedSemaphorePermit,
    arriving: Arriving<'_>,
) -> Result<u64, ErrorCode> {
    lease.times().used = Instant::now();
    let (reply, answer) = oneshot::channel();
    let job = Job {
        pieces,
        len,
        reply,
        _permit: permit,
    };
    let ended = || ErrorCode::NotPrimary {
        handle: lease.handle,
    };
    lease.tx.send(job).await.map_err(|_| ended())?;
    // Queued: the batch it joins need not wait for it any more.
    drop(arriving);
    answer.await.map_err(|_| ended())?
}

/// `AppendForward` from a primary: writes the batch at its offset.
#[allow(clippy::too_many_arguments)]
pub async fn forwarded(
    ctx: &Arc<Ctx>,
    conn: &mut Conn,
    id: RequestId,
    handle: ChunkHandle,
    version: ChunkVersion,
    offset: u64,
    len: u64,
) -> Result<(), ProtocolError> {
    let limit = ctx.config.io_timeout;
    if len > u64::from(APPEND_BUDGET) {
        // No primary sends batches this large: refuse without holding the bytes.
        let _ = read_packets(conn, id, u64::MAX, limit, false).await?;
        let code = ErrorCode::BadRequest {
            reason: format!("a forwarded batch of {len} bytes is over {APPEND_BUDGET}"),
        };
        conn.reply(id, Response::Error(code)).await?;
        return Ok(());
    }
    // The batch is written while it arrives, a few packets ahead of the disk.
    let (tx, mut rx) = mpsc::channel::<Bytes>(FORWARD_QUEUE);
    let store = ctx.store.clone();
    let local = tokio::task::spawn_blocking(move || {
        store.append_from(handle, version, offset, len, || rx.blocking_recv())
    });
    let mut got = 0u64;
    let mut tx = Some(tx);
    let broken = loop {
        let (last, payload) = match next_packet(conn, id, limit, "AppendForward").await {
            Ok(p) => p,
            Err(e) => break Some(e),
        };
        got = got.saturating_add(payload.len() as u64);
        if got > len {
            break Some(ProtocolError::Unexpected {
                got: "more data than announced",
                to: "AppendForward",
            });
        }
        if let Some(sender) = &tx {
            if !payload.is_empty() {
                // A writer that stopped (or is stuck past the limit) fails the
                // append; the rest of the batch is still read, for a clear answer.
                let sent = tokio::time::timeout(limit, sender.send(payload)).await;
                if !matches!(sent, Ok(Ok(()))) {
                    tx = None;
                }
            }
        }
        if last {
            break None;
        }
    };
    // The writer sees the end of the stream (short, if the connection broke) and
    // stops without committing anything it did not get whole.
    drop(tx);
    let outcome = local
        .await
        .map_err(blocking_failed)
        .and_then(|r| r.map_err(|e| e.to_code()));
    if let Some(e) = broken {
        return Err(e);
    }
    let response = match outcome {
        Ok(size) => Response::ChunkSize { size },
        Err(code) => Response::Error(code),
    };
    conn.reply(id, response).await?;
    Ok(())
}

/// Runs a store change that answers a chunk's length on the blocking pool.
async fn sized(
    work: impl FnOnce() -> Result<u64, crate::error::StoreError> + Send + 'static,
) -> Response {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(size)) => Response::ChunkSize { size },
        Ok(Err(e)) => Response::Error(e.to_code()),
        Err(e) => Response::Error(blocking_failed(e)),
    }
}

/// `BumpVersion` from a new primary: moves (or creates) the replica at `version`.
pub async fn bump(
    ctx: &Arc<Ctx>,
    handle: ChunkHandle,
    from: Option<ChunkVersion>,
    version: ChunkVersion,
) -> Response {
    // A new primary takes over: any lease this server held on it is over.
    ctx.leases.replace(handle, None);
    let store = ctx.store.clone();
    sized(move || store.bump(handle, from, version)).await
}

/// `TruncateChunk` from a primary: cuts the replica back to `size`.
pub async fn truncate(
    ctx: &Arc<Ctx>,
    handle: ChunkHandle,
    version: ChunkVersion,
    size: u64,
) -> Response {
    let store = ctx.store.clone();
    sized(move || store.truncate(handle, version, size)).await
}

/// `ChunkLength`: what this server acknowledged as primary, else its replica's length.
pub async fn chunk_length(ctx: &Arc<Ctx>, handle: ChunkHandle, version: ChunkVersion) -> Response {
    if let Some(size) = ctx.leases.acked(&handle, version) {
        return Response::ChunkSize { size };
    }
    let store = ctx.store.clone();
    sized(move || match store.get(&handle) {
        Some((v, size)) if v == version => Ok(size),
        Some((have, _)) => Err(ErrorCode::StaleVersion {
            handle,
            have,
            want: version,
        }
        .into()),
        None => Err(ErrorCode::UnknownChunk { handle }.into()),
    })
    .await
}
