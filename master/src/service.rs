//! Request handling: what the master answers to each request, and its periodic upkeep.
//!
//! All state sits behind one mutex that is never held across an await. A mutation is
//! planned, appended to the operation log and applied under the lock (so log order is
//! apply order); the lock is released and the reply waits for the log's group commit
//! to cover it. Reads also wait until what they saw is durable, so nobody is shown a
//! state that a crash could take back.
//!
//! Files: this one holds the state, the client requests and upkeep; `chunkservers`
//! registrations, heartbeats and what reports mean; `replication` repair, trims,
//! balancing; `report` fsck and stat; `append` leases and record append; `keys`
//! client keys; `pages` paged listings.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use dfs_protocol::auth::{ops, ChunkToken, TokenKey};
use dfs_protocol::{
    Accepted, ChunkAllocation, ChunkHandle, ChunkVersion, ClientToMaster, ClusterSecret,
    ClusterStatus, ErrorCode, Peer, ReplicateOrder, Request, Response, ServerId, TrashInfo,
    UploadId,
};
use tokio_util::sync::CancellationToken;

use crate::chunkmap::ChunkMap;
use crate::clock::Clock;
use crate::config::MasterConfig;
use crate::error::OpError;
use crate::mutation::Mutation;
use crate::namespace::summary::{Summary, SummaryWalk};
use crate::namespace::Namespace;
use crate::oplog::OpLog;
use crate::store::Store;

mod append;
mod attention;
mod chunkservers;
mod keys;
mod pages;
mod replication;
mod report;
mod safe_mode;
#[cfg(test)]
mod tests;
use append::MasterLease;
use replication::{balance_report, schedule_moves, schedule_repairs, schedule_trims, Copying};
use report::{stat, Fsck, FSCK_SLICE, MAX_FSCK_PROBLEMS};

/// Deletions sent to one chunkserver per heartbeat, so a mass delete drains gradually.
const MAX_DELETES_PER_HEARTBEAT: usize = 1000;
/// The longest a request waits for the operation log to be durable.
const DURABLE_WAIT: Duration = Duration::from_secs(30);
/// Cluster seconds between two clock floors in the log.
const CLOCK_FLOOR_EVERY: u64 = 60;
/// Pieces of removed trees (`namespace::REAP_PIECE` entries each) reclaimed per
/// upkeep round.
const REAP_PIECES_PER_ROUND: usize = 8;
/// Entries a subtree summary counts per hold of the state lock: a few milliseconds.
const SUMMARY_SLICE: usize = 50_000;

#[derive(Debug)]
struct State {
    ns: Namespace,
    map: ChunkMap,
    /// Chunks no file or upload references that some chunkserver may still hold.
    garbage: HashSet<ChunkHandle>,
    /// The same garbage by the server holding it, so a heartbeat finds its own
    /// deletions without scanning all garbage.
    garbage_at: BTreeSet<(ServerId, ChunkHandle)>,
    /// Chunks freed by logged mutations that are not durable yet, by the sequence
    /// number of the record that frees them: they become garbage only once it is, so
    /// a crash that takes the record back finds its file's chunks still there.
    freeing: std::collections::VecDeque<(u64, Vec<ChunkHandle>)>,
    freeing_set: HashSet<ChunkHandle>,
    /// Safe mode after the master's start, until every chunk has a live replica or
    /// its deadline.
    safe: Option<safe_mode::SafeMode>,
    /// Chunks with a replica reported damaged, until they are fully replicated again.
    corrupt: HashMap<ChunkHandle, u32>,
    /// Replicas at an older version than the file's: never served, to be deleted.
    stale: BTreeSet<(ServerId, ChunkHandle)>,
    /// Copy orders waiting for their target's next heartbeat.
    orders: HashMap<ServerId, Vec<ReplicateOrder>>,
    /// Copies under way: chunk -> the copy ordered.
    copying: HashMap<ChunkHandle, Copying>,
    /// Extra replicas to delete (over-replication, the old side of a balancing move).
    trims: BTreeSet<(ServerId, ChunkHandle)>,
    /// Balancing moves under way: chunk -> the server it moves off.
    moves: HashMap<ChunkHandle, ServerId>,
    balance_threshold: f64,
    /// Append leases granted or adopted, by chunk.
    leases: HashMap<ChunkHandle, MasterLease>,
    /// Chunks being granted a lease or created for appends: not garbage, not adopted.
    pending: HashSet<ChunkHandle>,
    /// Versions adopted from replicas newer than the log (a grant the master did not
    /// live to log): every holder that reports such a version was moved by that grant,
    /// and joins the chain instead of being called stale. Dropped once the chunk moves on.
    adopted: HashMap<ChunkHandle, ChunkVersion>,
    /// The master's clock (see [`Clock`]), here so state methods read the same time.
    clock: Clock,
    /// Cluster seconds of the last clock floor logged.
    floor_logged: u64,
    /// Open chunks a refill grant was last tried on, and when (one try per lease period).
    refilled: HashMap<ChunkHandle, Instant>,
    /// The key table epoch each chunkserver last said it holds.
    key_epochs: HashMap<ServerId, u64>,
    /// Chunks below or above their replication, kept from what changes.
    attention: attention::Attention,
}

/// Signs chunk tokens that expire `ttl` seconds after they are made.
#[derive(Debug, Clone)]
pub(crate) struct Minter {
    key: TokenKey,
    ttl: u64,
}

impl Minter {
    pub(crate) fn token(&self, handle: ChunkHandle, version: ChunkVersion, ops: u8) -> ChunkToken {
        let expires = dfs_protocol::auth::unix_now().saturating_add(self.ttl);
        ChunkToken::sign(&self.key, handle, version, ops, expires)
    }
}

impl State {
    /// Live replicas at `version` that count toward the chunk's replication.
    fn effective(
        &self,
        h: &ChunkHandle,
        version: ChunkVersion,
        now: Instant,
    ) -> Vec<(ServerId, String)> {
        let chain = self.ns.open_chain(h);
        self.map
            .replicas(h, version, now)
            .into_iter()
            .filter(|(id, _)| self.counts(id, h, chain))
            .collect()
    }

    /// Whether `server`'s live replica of `h` at its current version counts toward
    /// the chunk's replication: usable (see [`State::usable`]), and on a server in
    /// service, not one being decommissioned. The one rule by which `dfs fsck`,
    /// upkeep (and so `dfs status`) and re-replication count replicas.
    pub(super) fn counts(
        &self,
        server: &ServerId,
        h: &ChunkHandle,
        chain: Option<&[ServerId]>,
    ) -> bool {
        self.usable(server, h, chain) && !self.ns.decommissioned().contains(server)
    }
}

/// The master's state and its request handler.
#[derive(Debug)]
pub struct Master {
    config: MasterConfig,
    store: Store,
    log: OpLog,
    secret: ClusterSecret,
    /// Signs the chunk tokens handed out with locations and orders (immutable, so
    /// outside the state lock).
    tokens: Minter,
    state: Mutex<State>,
    /// Cancelled when the store fails under a mutation: the master must stop.
    fatal: CancellationToken,
    /// One lock per file with an append lease being granted.
    grants: Mutex<HashMap<u64, std::sync::Arc<tokio::sync::Mutex<()>>>>,
    started: Instant,
    /// Monotonic time and cluster seconds (the same clock as the state's).
    clock: Clock,
    metrics: std::sync::Arc<crate::metrics::MasterMetrics>,
    recent: crate::recent::RecentOps,
}

impl Master {
    pub fn new(
        config: MasterConfig,
        secret: ClusterSecret,
        ns: Namespace,
        log: OpLog,
        fatal: CancellationToken,
    ) -> Master {
        if let Some(gate) = &config.sync_gate {
            log.set_gate(gate.clone());
        }
        let metrics = std::sync::Arc::new(crate::metrics::MasterMetrics::new());
        log.set_observer({
            let metrics = metrics.clone();
            std::sync::Arc::new(move |took, records, bytes| metrics.commit(took, records, bytes))
        });
        let map = ChunkMap::new(config.dead_after);
        let clock = config.clock.restarted();
        clock.raise_floor(ns.clock_floor());
        let safe = Some(safe_mode::SafeMode::new(clock.now(), config.safe_start));
        let balance_threshold = config.balance_threshold;
        let tokens = Minter {
            key: secret.token_key(),
            ttl: config.token_ttl.as_secs().max(1),
        };
        Master {
            store: ns.store().clone(),
            config,
            log,
            secret,
            tokens,
            state: Mutex::new(State {
                clock: clock.clone(),
                floor_logged: 0,
                key_epochs: HashMap::new(),
                attention: attention::Attention::new(),
                ns,
                map,
                garbage: HashSet::new(),
                safe,
                corrupt: HashMap::new(),
                stale: BTreeSet::new(),
                orders: HashMap::new(),
                copying: HashMap::new(),
                trims: BTreeSet::new(),
                garbage_at: BTreeSet::new(),
                freeing: Default::default(),
                freeing_set: HashSet::new(),
                moves: HashMap::new(),
                balance_threshold,
                leases: HashMap::new(),
                pending: HashSet::new(),
                adopted: HashMap::new(),
                refilled: HashMap::new(),
            }),
            fatal,
            grants: Mutex::new(HashMap::new()),
            started: clock.now(),
            clock,
            metrics,
            recent: Default::default(),
        }
    }

    /// The master's Prometheus metrics.
    pub fn metrics(&self) -> &crate::metrics::MasterMetrics {
        &self.metrics
    }

    /// The recent operations the status page shows.
    pub fn recent(&self) -> &crate::recent::RecentOps {
        &self.recent
    }

    /// Seconds since the Unix epoch on the master's clock.
    pub fn now_secs(&self) -> u64 {
        self.clock.secs()
    }

    /// How long ago each chunkserver was heard from, by address.
    /// Estimated bytes per in-memory structure: the namespace's and the chunk map's.
    pub fn footprint(&self) -> Vec<crate::footprint::Part> {
        let st = self.lock();
        let mut parts = st.ns.footprint();
        parts.extend(st.map.footprint());
        parts
    }

    /// Removed trees still being reclaimed in the background.
    pub fn reclaiming(&self) -> usize {
        self.lock().ns.reaping()
    }

    pub fn heartbeat_ages(&self) -> Vec<(String, std::time::Duration)> {
        let now = self.clock.now();
        self.lock().map.heartbeat_ages(now)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic under the lock is a bug; the state it guards is still the best we have.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn log(&self) -> &OpLog {
        &self.log
    }

    pub fn max_connections(&self) -> usize {
        self.config.max_connections
    }

    pub fn idle_timeout(&self) -> Duration {
        self.config.idle_timeout
    }

    /// The TLS settings this master serves with, if any.
    pub fn tls(&self) -> Option<&dfs_protocol::net::Tls> {
        self.config.tls.as_ref()
    }

    /// Who the master is when it dials a chunkserver.
    pub(crate) fn identity(&self) -> dfs_protocol::Identity {
        let id = dfs_protocol::Identity::master(&self.secret);
        match &self.config.tls {
            Some(tls) => id.with_tls(tls.clone()),
            None => id,
        }
    }

    /// Appends `m` to the log and applies it; returns its sequence number.
    fn log_apply(&self, st: &mut State, m: Mutation) -> Result<u64, OpError> {
        let seq = st.ns.applied() + 1;
        if let Err(e) = self.log.append(seq, &m.encode()?) {
            self.log_failed(&e);
            return Err(e.into());
        }
        match st.ns.apply(seq, &m) {
            Ok(applied) => {
                st.attention.note(&m, &st.ns, &applied.freed);
                if let Mutation::Decommission { server, .. } = &m {
                    st.attention.note_server(&st.map, server);
                }
                for h in &applied.freed {
                    st.leases.remove(h);
                }
                if !applied.freed.is_empty() {
                    st.freeing_set.extend(applied.freed.iter().copied());
                    st.freeing.push_back((seq, applied.freed));
                }
                tracing::debug!(seq, mutation = m.name(), "applied");
                Ok(seq)
            }
            Err(e) => {
                // Memory and store may now disagree: stop rather than serve from either.
                tracing::error!(seq, error = %e, "applying a logged mutation failed; stopping the master");
                self.fatal.cancel();
                Err(e.into())
            }
        }
    }

    /// The operation log cannot take records any more: nothing can be acknowledged,
    /// and the state in memory may hold mutations that will never be durable. The
    /// master stops (fail-stop) rather than limp on; a restart replays what is durable.
    fn log_failed(&self, e: &crate::oplog::LogError) {
        // A record too large is this request's problem, not the log's.
        if matches!(e, crate::oplog::LogError::TooLarge(_)) {
            return;
        }
        if !self.fatal.is_cancelled() {
            tracing::error!(error = %e, "the operation log failed; stopping the master");
            self.fatal.cancel();
        }
    }

    /// Chunks whose freeing record is now durable become garbage (deletable).
    fn release_freed(&self, st: &mut State) {
        let durable = self.log.durable_seq();
        while st.freeing.front().is_some_and(|(seq, _)| *seq <= durable) {
            let Some((_, freed)) = st.freeing.pop_front() else {
                break;
            };
            for h in freed {
                st.freeing_set.remove(&h);
                if st.ns.is_referenced(&h) {
                    continue;
                }
                for (server, _) in st.map.holders(&h) {
                    st.garbage_at.insert((server, h));
                }
                st.garbage.insert(h);
            }
        }
    }

    /// Waits until the log holds `seq` durably. A log that cannot confirm within
    /// `DURABLE_WAIT` (a hung disk) answers `Unavailable`: the outcome is unknown to
    /// the client, as after any timeout, and no request waits for ever.
    async fn durable(&self, seq: u64) -> Result<(), OpError> {
        match tokio::time::timeout(DURABLE_WAIT, self.log.wait_durable(seq)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                self.log_failed(&e);
                Err(e.into())
            }
            Err(_) => Err(ErrorCode::Unavailable {
                reason: format!(
                    "the operation log did not confirm within {}s",
                    DURABLE_WAIT.as_secs()
                ),
            }
            .into()),
        }
    }

    /// Plans and applies a mutation under the lock, then waits for it to be durable.
    async fn mutate<T>(
        &self,
        plan: impl FnOnce(&mut State) -> Result<(Option<Mutation>, T), OpError>,
    ) -> Result<T, OpError> {
        let (seq, out) = {
            let mut st = self.lock();
            let (m, out) = plan(&mut st)?;
            let seq = match m {
                Some(m) => self.log_apply(&mut st, m)?,
                None => st.ns.applied(),
            };
            (seq, out)
        };
        self.durable(seq).await?;
        Ok(out)
    }

    /// Computes an answer from the state, then waits until what it saw is durable.
    async fn read<T>(&self, f: impl FnOnce(&State) -> Result<T, OpError>) -> Result<T, OpError> {
        let (seq, out) = {
            let st = self.lock();
            (st.ns.applied(), f(&st)?)
        };
        self.durable(seq).await?;
        Ok(out)
    }

    /// What is at or below `path`, counted a slice at a time with the lock free in
    /// between (see [`crate::namespace::summary`]).
    async fn summary(&self, path: &str) -> Result<Summary, OpError> {
        let (seq, mut walk) = {
            let st = self.lock();
            (st.ns.applied(), SummaryWalk::start(&st.ns, path)?)
        };
        let sum = loop {
            if let Some(sum) = walk.step(&self.lock().ns, SUMMARY_SLICE) {
                break sum;
            }
            tokio::task::yield_now().await;
        };
        self.durable(seq).await?;
        Ok(sum)
    }

    /// Runs an fsck page a slice at a time, with the state lock let go in between
    /// (see [`report::Fsck`]).
    async fn run_fsck(
        &self,
        start: impl FnOnce(&State) -> Result<Fsck, OpError>,
    ) -> Result<(dfs_protocol::FsckReport, Option<String>), OpError> {
        let (seq, mut walk) = {
            let st = self.lock();
            (st.ns.applied(), start(&st)?)
        };
        while !walk.step(&self.lock(), FSCK_SLICE) {
            tokio::task::yield_now().await;
        }
        self.durable(seq).await?;
        Ok(walk.finish())
    }

    /// The key behind a connecting peer's credential (the handshake's lookup).
    pub fn lookup(
        &self,
        credential: &dfs_protocol::Credential,
    ) -> Result<([u8; 32], Peer), ErrorCode> {
        crate::access::lookup(&self.lock().ns, &self.secret, credential)
    }

    /// Whether `peer`, authenticated earlier on its connection, may send `request`
    /// now: its key must still exist and its role allow the request.
    pub fn admit(&self, peer: &Peer, request: &Request) -> Result<(), ErrorCode> {
        crate::access::still_valid(&self.lock().ns, peer)?;
        crate::access::authorize(peer, request)
    }

    /// Answers one request from the peer authenticated on the connection: each link
    /// has its own handler, which cannot be handed another link's requests.
    pub async fn handle(&self, from: &Accepted, request: Request) -> Result<Response, OpError> {
        match request {
            Request::Master(r) => self.client_request(from, r).await,
            Request::Report(r) => self.report(from, r).await,
            other => Err(ErrorCode::BadRequest {
                reason: format!("{} is not a master request", other.name()),
            }
            .into()),
        }
    }

    /// A client's request (the client link).
    async fn client_request(
        &self,
        from: &Accepted,
        request: ClientToMaster,
    ) -> Result<Response, OpError> {
        let now = self.clock.secs();
        let rewrite = matches!(request, ClientToMaster::CommitRewrite { .. });
        match request {
            ClientToMaster::Mkdir { path, parents } => {
                self.mutate(|st| Ok((st.ns.plan_mkdir(&path, parents, now)?, ())))
                    .await?;
                Ok(Response::Ok)
            }
            ClientToMaster::List { path } => {
                let entries = self
                    .read(|st| {
                        // One frame per answer: larger directories are listed in pages.
                        let n = st.ns.entries(&path)?;
                        if n > pages::MAX_PAGE {
                            return Err(ErrorCode::InvalidArgument {
                                reason: format!(
                                    "{path} has {n} entries: list it in pages (ListPage)"
                                ),
                            }
                            .into());
                        }
                        st.ns.list(&path)
                    })
                    .await?;
                Ok(Response::Listing { entries })
            }
            ClientToMaster::Stat { path } => Ok(Response::Stat(
                self.read(|st| stat(st, &self.tokens, &path)).await?,
            )),
            ClientToMaster::Delete {
                path,
                recursive,
                skip_trash,
            } => {
                let to_trash = !skip_trash && !self.config.trash_retention.is_zero();
                self.mutate(|st| {
                    Ok((
                        Some(st.ns.plan_remove(&path, recursive, to_trash, now)?),
                        (),
                    ))
                })
                .await?;
                Ok(Response::Ok)
            }
            ClientToMaster::Rename { src, dst } => {
                self.mutate(|st| Ok((Some(st.ns.plan_rename(&src, &dst)?), ())))
                    .await?;
                Ok(Response::Ok)
            }
            ClientToMaster::RenameOver { src, dst, replace } => {
                self.mutate(|st| Ok((Some(st.ns.plan_rename_over(&src, &dst, replace)?), ())))
                    .await?;
                Ok(Response::Ok)
            }
            ClientToMaster::Symlink { path, target } => {
                self.mutate(|st| Ok((Some(st.ns.plan_symlink(&path, &target, now)?), ())))
                    .await?;
                Ok(Response::Ok)
            }
            ClientToMaster::ReadLink { path } => Ok(Response::Link {
                target: self.read(|st| st.ns.read_link(&path)).await?,
            }),
            ClientToMaster::TrashList => {
                let retention = self.config.trash_retention.as_secs();
                let entries = self
                    .read(|st| {
                        Ok(st
                            .ns
                            .trash()
                            .map(|(_, t)| TrashInfo {
                                path: t.original_path.clone(),
                                kind: t.kind,
                                size: t.size,
                                deleted_at: t.deleted_at,
                                expires_at: t.deleted_at.saturating_add(retention),
                            })
                            .collect())
                    })
                    .await?;
                Ok(Response::TrashListing { entries })
            }
            ClientToMaster::SetAttr {
                path,
                mode,
                uid,
                gid,
                atime,
                mtime,
            } => {
                let change = crate::namespace::AttrChange {
                    mode,
                    uid,
                    gid,
                    atime,
                    mtime,
                };
                self.mutate(|st| Ok((Some(st.ns.plan_set_attr(&path, &change)?), ())))
                    .await?;
                Ok(Response::Ok)
            }
            ClientToMaster::TrashEmpty => {
                // Every entry now, each purge logged as when it expires; one durability
                // wait for all of them.
                let (seq, entries, bytes) = {
                    let mut guard = self.lock();
                    let st = &mut *guard;
                    let bytes = st.ns.trash().map(|(_, t)| t.size).sum::<u64>();
                    let due = st.ns.expired_trash(u64::MAX, 0);
                    let entries = due.len() as u64;
                    let mut seq = st.ns.applied();
                    for m in due {
                        seq = self.log_apply(st, m)?;
                    }
                    (seq, entries, bytes)
                };
                self.durable(seq).await?;
                tracing::info!(entries, bytes, "trash emptied");
                Ok(Response::Purged { entries, bytes })
            }
            ClientToMaster::TrashRestore { path } => {
                self.mutate(|st| Ok((Some(st.ns.plan_restore(&path)?), ())))
                    .await?;
                Ok(Response::Ok)
            }
            ClientToMaster::BeginPut {
                path,
                replication,
                overwrite,
            } => {
                let replication = replication.unwrap_or(self.config.replication);
                let max = crate::config::MAX_REPLICATION;
                if !(1..=max).contains(&replication) {
                    return Err(ErrorCode::InvalidArgument {
                        reason: format!("replication must be 1..={max}, not {replication}"),
                    }
                    .into());
                }
                let upload = self
                    .mutate(|st| {
                        let (upload, m) =
                            st.ns
                                .plan_begin_upload(&path, replication, overwrite, now)?;
                        Ok((Some(m), upload))
                    })
                    .await?;
                Ok(Response::PutStarted {
                    upload,
                    chunk_size: self.config.chunk_size,
                    replication,
                })
            }
            ClientToMaster::AllocateChunk { upload } => {
                let alloc = self
                    .mutate(|st| {
                        let exclude = st.ns.decommissioned().clone();
                        let (m, alloc) =
                            self.allocate(st, upload, ChunkHandle::random(), exclude, now)?;
                        Ok((Some(m), alloc))
                    })
                    .await?;
                tracing::debug!(handle = %alloc.handle, replicas = ?alloc.replicas, "chunk allocated");
                Ok(Response::ChunkAllocated(alloc))
            }
            ClientToMaster::CommitPut { upload, chunks }
            | ClientToMaster::CommitRewrite { upload, chunks } => {
                self.mutate(|st| {
                    let size = self.config.chunk_size;
                    let m = if rewrite {
                        st.ns.plan_rewrite(upload, &chunks, size, now)?
                    } else {
                        st.ns.plan_commit(upload, &chunks, size, now)?
                    };
                    // The chains are in the upload record, which the commit removes.
                    let chains = st
                        .ns
                        .upload(&upload)
                        .map(|u| u.chunks.clone())
                        .unwrap_or_default();
                    let seq = self.log_apply(st, m)?;
                    for c in chains {
                        let committed = chunks.iter().find(|k| k.handle == c.handle);
                        if let Some(k) = committed {
                            // A chain the write failed over from may have left a whole
                            // replica at an older version: stale now, as after a grant,
                            // not only once its server registers again.
                            st.fence(c.handle, c.version, &c.chain);
                            for server in &c.chain {
                                st.map.settle_estimate(server, size, k.size);
                            }
                        }
                    }
                    tracing::debug!(seq, %upload, chunks = chunks.len(), "file committed");
                    Ok((None, ()))
                })
                .await?;
                Ok(Response::Ok)
            }
            ClientToMaster::AbortPut { upload } => {
                self.mutate(|st| {
                    let m = st
                        .ns
                        .upload(&upload)
                        .map(|_| Mutation::EndUpload { upload });
                    Ok((m, ()))
                })
                .await?;
                Ok(Response::Ok)
            }
            ClientToMaster::Status => {
                Ok(Response::Status(self.read(|st| Ok(self.status(st))).await?))
            }
            ClientToMaster::Fsck { path } => Ok(Response::Fsck(
                self.run_fsck(|st| Fsck::start(st, &path, None, MAX_FSCK_PROBLEMS))
                    .await?
                    .0,
            )),
            ClientToMaster::FsckPage { path, after, limit } => {
                let limit = pages::limit(limit);
                let (report, next) = self
                    .run_fsck(|st| Fsck::start(st, &path, after.as_deref(), limit))
                    .await?;
                Ok(Response::FsckPage { report, next })
            }
            ClientToMaster::FsckFrom { path, after, limit } => {
                let limit = pages::limit(limit);
                let (report, next) = self
                    .run_fsck(|st| Fsck::start_after(st, &path, &after, limit))
                    .await?;
                Ok(Response::FsckProblems {
                    problems: report.problems,
                    next,
                })
            }
            ClientToMaster::Summary { path } => {
                let s = self.summary(&path).await?;
                Ok(Response::Summary {
                    dirs: s.dirs,
                    files: s.files,
                    bytes: s.bytes,
                })
            }
            ClientToMaster::ListPage { path, after, limit } => {
                let limit = pages::limit(limit);
                let (entries, next) = self
                    .read(|st| st.ns.list_page(&path, after.as_deref(), limit))
                    .await?;
                Ok(Response::ListingPage { entries, next })
            }
            ClientToMaster::TrashPage { after, limit } => {
                let retention = self.config.trash_retention.as_secs();
                let (entries, next) = self
                    .read(|st| Ok(pages::trash(st, after, pages::limit(limit), retention)))
                    .await?;
                Ok(Response::TrashPage { entries, next })
            }
            ClientToMaster::StatusPage { after, limit } => {
                let limit = pages::limit(limit);
                let (status, next) = self
                    .read(|st| Ok(pages::status(self.status(st), after.as_deref(), limit)))
                    .await?;
                Ok(Response::StatusPage { status, next })
            }
            ClientToMaster::RetryChunk {
                upload,
                handle,
                failed,
            } => {
                let alloc = self
                    .mutate(|st| {
                        let known = st
                            .ns
                            .upload(&upload)
                            .ok_or(ErrorCode::UnknownUpload)?
                            .chunks
                            .iter()
                            .any(|c| c.handle == handle);
                        if !known {
                            return Err(ErrorCode::BadRequest {
                                reason: format!("chunk {handle} was not allocated to this upload"),
                            }
                            .into());
                        }
                        let mut exclude = st.ns.decommissioned().clone();
                        exclude.extend(failed.iter().filter_map(|a| st.map.by_addr(a)));
                        let (m, alloc) = self.allocate(st, upload, handle, exclude, now)?;
                        tracing::info!(%handle, version = %alloc.version, ?failed, replicas = ?alloc.replicas, "chunk rerouted after a pipeline failure");
                        Ok((Some(m), alloc))
                    })
                    .await?;
                Ok(Response::ChunkAllocated(alloc))
            }
            ClientToMaster::SetReplication { path, replication } => {
                let max = crate::config::MAX_REPLICATION;
                if !(1..=max).contains(&replication) {
                    return Err(ErrorCode::InvalidArgument {
                        reason: format!("replication must be 1..={max}, not {replication}"),
                    }
                    .into());
                }
                self.mutate(|st| Ok((Some(st.ns.plan_set_replication(&path, replication)?), ())))
                    .await?;
                Ok(Response::Ok)
            }
            ClientToMaster::Decommission { addr, on } => {
                self.mutate(|st| {
                    let server =
                        st.map
                            .by_addr(&addr)
                            .ok_or_else(|| ErrorCode::InvalidArgument {
                                reason: format!("no chunkserver has registered as {addr}"),
                            })?;
                    let m = (st.ns.decommissioned().contains(&server) != on)
                        .then_some(Mutation::Decommission { server, on });
                    Ok((m, ()))
                })
                .await?;
                tracing::info!(%addr, on, "decommission");
                Ok(Response::Ok)
            }
            ClientToMaster::Balance { threshold_percent } => {
                let mut st = self.lock();
                if let Some(p) = threshold_percent {
                    if p > 100 {
                        return Err(ErrorCode::InvalidArgument {
                            reason: "the balance threshold is a percentage, 0 to 100".into(),
                        }
                        .into());
                    }
                    st.balance_threshold = f64::from(p) / 100.0;
                }
                Ok(Response::Balance(balance_report(&st, self.clock.now())))
            }
            ClientToMaster::AppendTarget {
                path,
                create,
                replication,
                report,
            } => Ok(Response::AppendLease(
                self.append_target(&path, create, replication, report)
                    .await?,
            )),
            ClientToMaster::CreateKey { name, role } => self.create_key(from, name, role).await,
            ClientToMaster::ListKeys => Ok(Response::Keys {
                keys: self.read(|st| Ok(keys::list(&st.ns))).await?,
            }),
            ClientToMaster::Touch { path } => {
                let replication = self.config.replication;
                self.mutate(|st| Ok((Some(st.ns.plan_touch(&path, replication, now)?), ())))
                    .await?;
                Ok(Response::Ok)
            }
            ClientToMaster::RemoveKey { name } => {
                self.mutate(|st| Ok((Some(keys::plan_remove(&st.ns, &name)?), ())))
                    .await?;
                tracing::info!(key = %name, "client key removed");
                self.keys_everywhere().await;
                Ok(Response::Ok)
            }
        }
    }

    /// Places a chain for `handle` of `upload` (a new chunk, or one whose pipeline
    /// broke) and plans the logged allocation, at the chunk's next version.
    fn allocate(
        &self,
        st: &mut State,
        upload: UploadId,
        handle: ChunkHandle,
        exclude: HashSet<ServerId>,
        now: u64,
    ) -> Result<(Mutation, ChunkAllocation), OpError> {
        let replication = st
            .ns
            .upload(&upload)
            .ok_or(ErrorCode::UnknownUpload)?
            .replication;
        let chosen = st.map.place(
            replication,
            self.config.chunk_size,
            self.clock.now(),
            &exclude,
        )?;
        let (ids, replicas): (Vec<ServerId>, Vec<String>) = chosen.into_iter().unzip();
        let m = st.ns.plan_allocate(upload, handle, ids, now)?;
        let version = match &m {
            Mutation::AllocateChunk { version, .. } => *version,
            _ => ChunkVersion::FIRST,
        };
        Ok((
            m,
            ChunkAllocation {
                handle,
                version,
                replicas,
                token: self.tokens.token(handle, version, ops::WRITE),
            },
        ))
    }

    /// Leaves safe mode once every referenced chunk has a live replica, or at the deadline.
    fn update_safe_mode(&self, st: &mut State, now: Instant) {
        let State { safe, ns, map, .. } = st;
        let Some(check) = safe else { return };
        if let Some(timed_out) = check.check(ns, map, now) {
            st.safe = None;
            tracing::info!(timed_out, "leaving safe mode: garbage collection enabled");
        }
    }

    /// Cluster status. Chunk counts are upkeep's, kept as chunks are assessed (see
    /// [`attention`]), so this costs time in proportion to servers, not chunks: at
    /// 10 million chunks a count by walking took seconds under the lock, for every
    /// `dfs status`, status page refresh and metrics scrape. (While a server is being
    /// decommissioned, the chunks it still has to give cost a pass over those not
    /// settled and those it holds.) In safe mode, before upkeep keeps that index,
    /// they count the chunks the safe-mode check has not passed yet (see
    /// [`safe_mode`]).
    fn status(&self, st: &State) -> ClusterStatus {
        let now = self.clock.now();
        let gone = st.ns.decommissioned();
        let chunks = st.ns.chunk_count() as u64;
        let (under_replicated, missing, over_replicated) = match &st.safe {
            Some(check) => {
                let (c, assessed) =
                    attention::counts_after(st, check.position(), safe_mode::STATUS_WALK, now);
                // Chunks past the window are not known to lack a replica: counted
                // as short of their replication, not as missing.
                let beyond = check.unconfirmed(&st.ns).saturating_sub(assessed);
                (c.under_replicated + beyond, c.missing, c.over_replicated)
            }
            None => {
                // Missing afresh (few, and alerted on); the rest as last assessed.
                let c = st.attention.counts();
                let missing = attention::missing_now(st, now);
                (c.under_replicated.max(missing), missing, c.over_replicated)
            }
        };
        let mut draining: HashMap<ServerId, u64> = HashMap::new();
        let candidates = (!gone.is_empty()).then(|| attention::draining(st, now));
        for h in candidates.into_iter().flatten() {
            let Some(meta) = st.ns.chunk(&h) else {
                continue;
            };
            for id in st.map.live_holders(&h, meta.version, now) {
                if gone.contains(&id) {
                    *draining.entry(id).or_default() += 1;
                }
            }
        }
        let mut chunkservers = st.map.status(now);
        for s in &mut chunkservers {
            s.decommissioning = gone.contains(&s.id);
            s.draining = if st.safe.is_some() && s.decommissioning {
                // Nothing is copied in safe mode, and upkeep's index is not kept
                // yet: everything the server holds is still to give.
                st.map.chunks_held(&s.id) as u64
            } else {
                draining.get(&s.id).copied().unwrap_or(0)
            };
        }
        ClusterStatus {
            chunkservers,
            files: st.ns.visible_files(),
            chunks,
            under_replicated,
            chunk_size: self.config.chunk_size,
            replication: self.config.replication,
            safe_mode: st.safe.is_some(),
            trash: st.ns.trash().count() as u64,
            garbage: st.garbage.len() as u64,
            missing,
            over_replicated,
            copying: st.copying.len() as u64,
        }
    }

    /// Periodic upkeep: purge expired trash, reclaim pieces of removed trees, abandon idle uploads, forget garbage no
    /// server holds, end safe mode at its deadline.
    pub async fn maintain(&self) -> Result<(), OpError> {
        let now = self.clock.secs();
        let seq = {
            let mut guard = self.lock();
            let held = Instant::now();
            let st = &mut *guard;
            let mut due = st
                .ns
                .expired_trash(now, self.config.trash_retention.as_secs());
            due.extend(st.ns.idle_uploads(now, self.config.upload_idle.as_secs()));
            let mut seq = st.ns.applied();
            for m in due {
                tracing::info!(mutation = m.name(), "upkeep");
                seq = self.log_apply(st, m)?;
            }
            // Removed trees too large for one record, a few pieces a round: a million
            // entries go in about half a minute, with the lock held in short spells.
            for _ in 0..REAP_PIECES_PER_ROUND {
                let Some(piece) = st.ns.reap_piece() else {
                    break;
                };
                seq = self.log_apply(st, piece)?;
            }
            if now >= st.floor_logged.saturating_add(CLOCK_FLOOR_EVERY) {
                seq = self.log_apply(st, Mutation::ClockFloor { secs: now })?;
                st.floor_logged = now;
            }
            let instant = self.clock.now();
            let State { adopted, ns, .. } = &mut *st;
            adopted.retain(|h, v| {
                ns.open_chain(h).is_some() && ns.chunk(h).is_some_and(|m| m.version == *v)
            });
            self.release_freed(st);
            self.update_safe_mode(st, instant);
            if st.safe.is_none() {
                let State {
                    garbage,
                    garbage_at,
                    map,
                    ..
                } = st;
                garbage.retain(|h| map.is_held(h));
                garbage_at.retain(|(_, h)| garbage.contains(h));
                for gone in map.forget_dead(instant, self.config.forget_dead_after) {
                    tracing::info!(server = %gone, "forgot a chunkserver dead for too long");
                    st.key_epochs.remove(&gone);
                    st.orders.remove(&gone);
                    let range = of_server(gone);
                    for set in [&mut st.stale, &mut st.trims, &mut st.garbage_at] {
                        let old: Vec<_> = set.range(range.clone()).copied().collect();
                        for k in old {
                            set.remove(&k);
                        }
                    }
                }
                attention::refresh(st, instant);
                self.metrics.upkeep(st.attention.last_assessed);
                schedule_repairs(st, &self.tokens, instant);
                schedule_trims(st, instant);
                schedule_moves(st, &self.tokens, instant);
            }
            self.metrics.upkeep_lock(held.elapsed());
            seq
        };
        self.durable(seq).await
    }

    /// Logs the cluster seconds reached now as a floor (see [`Clock`]) and waits
    /// until it is durable.
    pub async fn log_clock_floor(&self) -> Result<(), OpError> {
        let secs = self.clock.secs();
        self.mutate(|st| {
            st.floor_logged = secs;
            Ok((Some(Mutation::ClockFloor { secs }), ()))
        })
        .await
    }

    /// Makes the store durable up to the current log position and drops the log
    /// segments it covers. Requests go on meanwhile.
    pub async fn checkpoint(&self) -> Result<usize, OpError> {
        let (upto, writer) = {
            let st = self.lock();
            (st.ns.applied(), st.ns.writer())
        };
        tokio::task::spawn_blocking(move || writer.wait_applied(upto))
            .await
            .map_err(|e| {
                OpError::Client(ErrorCode::Io {
                    reason: format!("store writer wait: {e}"),
                })
            })??;
        self.store.flush().await?;
        Ok(self.log.compact(upto)?)
    }

    pub fn checkpoint_interval(&self) -> Duration {
        self.config.checkpoint_interval
    }
}

/// The key range of `server`'s entries in a set keyed by (server, chunk).
fn of_server(server: ServerId) -> std::ops::RangeInclusive<(ServerId, ChunkHandle)> {
    (server, ChunkHandle(uuid::Uuid::nil()))..=(server, ChunkHandle(uuid::Uuid::max()))
}
