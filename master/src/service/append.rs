//! Record append at the master: where to append, lease grants, and settling chunks
//! whose leases ended.
//!
//! A file's last chunk takes appends under a lease held by one of its replicas, the
//! primary. Every grant moves the replicas to a new version (so a former primary can
//! no longer reach them), and is logged after the replicas moved: a crash in between
//! leaves replicas newer than the log, which the master adopts when they report.
//! While a chunk is *open* (appended to since its size was last settled) the log
//! keeps the chain of its lease: only those replicas are current, whatever version
//! others report. When its lease ends, the master settles it: one more version, the
//! replicas cut to the same length, the size logged; then it is repaired and
//! balanced like any chunk.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dfs_protocol::auth::ops;
use dfs_protocol::{
    AppendLease, AppendReport, ChunkHandle, ChunkVersion, ErrorCode, PeerKind, Request, Response,
    ServerId,
};
use dfs_protocol::{ChunkRequest, LeaseGrant, MasterOrder};

use super::{Master, State};
use crate::error::OpError;
use crate::mutation::Mutation;

/// Chains tried for one grant before the append fails.
const GRANT_ATTEMPTS: u64 = 3;
/// Chunks settled per upkeep round.
const SETTLE_PER_ROUND: usize = 16;

/// Marks a chunk as being granted or created for as long as it lives, so that an
/// abandoned request (a client gone, a deadline passed) never leaves it marked.
struct Pending<'a> {
    master: &'a Master,
    handle: ChunkHandle,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.master.lock().pending.remove(&self.handle);
    }
}

/// A lease as the master granted (or adopted) it.
#[derive(Debug, Clone)]
pub(super) struct MasterLease {
    pub version: ChunkVersion,
    pub primary: ServerId,
    pub addr: String,
    pub expires: Instant,
}

/// What an append target request needs.
enum Plan {
    Have(AppendLease),
    /// A new last chunk, closing the current one at `seal`.
    New {
        seal: Option<(ChunkHandle, u64)>,
        last: Option<ChunkHandle>,
        replication: u32,
        file_offset: u64,
    },
    /// A new lease on the last chunk, without the `exclude`d replicas.
    Grant {
        handle: ChunkHandle,
        version: ChunkVersion,
        exclude: HashSet<ServerId>,
        file_offset: u64,
        /// A client's lease failed: another replica becomes primary if it can.
        failed: bool,
    },
}

/// Who takes the lease at a grant, among the replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Primary {
    /// The current primary, if it is among them.
    Keep,
    /// Any other one first (the current primary last).
    Move,
}

fn unavailable(reason: String) -> OpError {
    ErrorCode::Unavailable { reason }.into()
}

impl State {
    /// The replicas of `h` at `version` that readers and leases may use: live, not
    /// known stale, and on the lease's chain while the chunk is open.
    pub(super) fn current(
        &self,
        h: &ChunkHandle,
        version: ChunkVersion,
        now: Instant,
    ) -> Vec<(ServerId, String)> {
        let chain = self.ns.open_chain(h);
        self.map
            .replicas(h, version, now)
            .into_iter()
            .filter(|(id, _)| self.usable(id, h, chain))
            .collect()
    }

    /// Whether `server`'s live replica of `h` at its current version may be used:
    /// not known stale, and on the lease's `chain` while the chunk is open.
    pub(super) fn usable(
        &self,
        server: &ServerId,
        h: &ChunkHandle,
        chain: Option<&[ServerId]>,
    ) -> bool {
        !self.stale.contains(&(*server, *h)) && chain.is_none_or(|c| c.contains(server))
    }

    /// The valid lease on `h` at `version`, if any.
    pub(super) fn lease(&self, h: &ChunkHandle, version: ChunkVersion) -> Option<&MasterLease> {
        self.leases
            .get(h)
            .filter(|l| l.version == version && l.expires > self.clock.now())
    }

    /// Live servers to add to a chunk held by `have` current replicas so that it
    /// reaches its file's replication at its next grant: none of them holds the chunk
    /// at any version, is excluded or is being decommissioned. As many as can be found.
    fn fresh_replicas(
        &mut self,
        h: &ChunkHandle,
        have: usize,
        exclude: &HashSet<ServerId>,
        now: Instant,
    ) -> Vec<(ServerId, String)> {
        let Some(meta) = self.ns.chunk(h) else {
            return Vec::new();
        };
        let want = usize::try_from(meta.replication).unwrap_or(usize::MAX);
        let mut out: HashSet<ServerId> = exclude.clone();
        out.extend(self.ns.decommissioned().iter().copied());
        out.extend(self.map.holders(h).into_iter().map(|(s, _)| s));
        let mut n = want.saturating_sub(have);
        while n > 0 {
            let chunk_size = meta.size.max(1);
            if let Ok(chosen) =
                self.map
                    .place(u32::try_from(n).unwrap_or(u32::MAX), chunk_size, now, &out)
            {
                return chosen;
            }
            n -= 1;
        }
        Vec::new()
    }

    /// Open chunks with a lease whose chain is shorter than their replication while
    /// more servers live: a new grant (keeping the primary) adds fresh replicas now,
    /// instead of when the lease of a busy file finally lapses.
    fn short_open_chunks(&self, now: Instant) -> Vec<(u64, ChunkHandle, ChunkVersion)> {
        let alive = self.map.alive_count(now);
        let gone = self.ns.decommissioned();
        self.ns
            .open_chunks()
            .filter(|(h, _)| !self.pending.contains(*h) && !self.refilled.contains_key(*h))
            .filter_map(|(h, _)| {
                let meta = self.ns.chunk(h)?;
                let want = usize::try_from(meta.replication).unwrap_or(usize::MAX);
                let have = self.current(h, meta.version, now).len();
                let spare = alive.saturating_sub(gone.len());
                (have > 0 && have < want && spare > have).then_some((meta.ino, *h, meta.version))
            })
            .take(SETTLE_PER_ROUND)
            .collect()
    }

    /// After a grant or a put's commit on `chain`, every other holder of `h` is stale.
    pub(super) fn fence(&mut self, h: ChunkHandle, version: ChunkVersion, chain: &[ServerId]) {
        self.map.record_chain(h, version, chain);
        for (server, _) in self.map.holders(&h) {
            if !chain.contains(&server) {
                self.stale.insert((server, h));
            }
        }
    }

    /// Lease reports from `server`'s heartbeat: extends (or, after a master restart,
    /// adopts) the leases it holds on a chain it belongs to; returns those extended
    /// and the size updates to log.
    pub(super) fn renew_leases(
        &mut self,
        server: ServerId,
        reports: &[dfs_protocol::LeaseReport],
        duration: Duration,
    ) -> (Vec<ChunkHandle>, Vec<Mutation>) {
        let now = self.clock.now();
        let mut extended = Vec::new();
        let mut sizes = Vec::new();
        for r in reports {
            if self.pending.contains(&r.handle) {
                // Granted a moment ago and not logged yet: the grant decides.
                extended.push(r.handle);
                continue;
            }
            let Some(meta) = self.ns.chunk(&r.handle) else {
                continue;
            };
            let Some(chain) = self.ns.open_chain(&r.handle) else {
                continue;
            };
            if meta.version != r.version || !chain.contains(&server) {
                continue;
            }
            let chain = chain.to_vec();
            match self.leases.get_mut(&r.handle) {
                Some(l) if l.version == r.version && l.primary == server => {
                    l.expires = now + duration;
                }
                Some(_) => continue,
                None => {
                    let Some(addr) = self.map.addr(&server).map(str::to_string) else {
                        continue;
                    };
                    tracing::info!(chunk = %r.handle, %addr, "append lease adopted from its primary");
                    self.leases.insert(
                        r.handle,
                        MasterLease {
                            version: r.version,
                            primary: server,
                            addr,
                            expires: now + duration,
                        },
                    );
                }
            }
            extended.push(r.handle);
            if r.size > meta.size {
                sizes.push(Mutation::SetChunk {
                    handle: r.handle,
                    version: r.version,
                    size: r.size,
                    open: Some(chain),
                    mtime: self.clock.secs(),
                });
            }
        }
        (extended, sizes)
    }

    /// A replica newer than the log: a grant moved it, then the master stopped before
    /// logging the grant. No append used that version yet, so it holds everything.
    pub(super) fn adoption(
        &self,
        server: ServerId,
        r: &dfs_protocol::ChunkReport,
    ) -> Option<Mutation> {
        let meta = self.ns.chunk(&r.handle)?;
        if r.version <= meta.version || self.pending.contains(&r.handle) {
            return None;
        }
        let mut chain: Vec<ServerId> = match self.ns.open_chain(&r.handle) {
            Some(c) => c.to_vec(),
            None => self
                .map
                .holders(&r.handle)
                .into_iter()
                .map(|(s, _)| s)
                .collect(),
        };
        if !chain.contains(&server) {
            chain.push(server);
        }
        tracing::info!(chunk = %r.handle, version = %r.version, "adopting a version granted before a restart");
        Some(Mutation::SetChunk {
            handle: r.handle,
            version: r.version,
            size: meta.size,
            open: Some(chain),
            mtime: self.clock.secs(),
        })
    }
}

impl Master {
    fn grant_lock(&self, ino: u64) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .grants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Forget locks nobody holds, so the map stays as small as the work under way.
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(ino).or_default().clone()
    }

    /// `AppendTarget`: the chunk to append to at `path` and its primary, granting a
    /// lease or starting a new chunk when needed.
    pub(super) async fn append_target(
        &self,
        path: &str,
        create: bool,
        replication: Option<u32>,
        report: Option<AppendReport>,
    ) -> Result<AppendLease, OpError> {
        let replication = replication.unwrap_or(self.config.replication);
        let max = crate::config::MAX_REPLICATION;
        if !(1..=max).contains(&replication) {
            return Err(ErrorCode::InvalidArgument {
                reason: format!("replication must be 1..={max}, not {replication}"),
            }
            .into());
        }
        let now = self.clock.secs();
        let ino = self
            .mutate(|st| {
                let (ino, m) = st.ns.plan_append_file(path, create, replication, now)?;
                Ok((m, ino))
            })
            .await?;
        let lock = self.grant_lock(ino);
        let _held = lock.lock().await;
        let report = match report {
            Some(AppendReport::Full {
                handle, version, ..
            }) => self.confirm_full(handle, version).await,
            other => other,
        };
        let plan = self.plan_append(ino, path, report.as_ref())?;
        match plan {
            Plan::Have(lease) => Ok(lease),
            Plan::New {
                seal,
                last,
                replication,
                file_offset,
            } => {
                self.new_chunk(ino, seal, last, replication, file_offset)
                    .await
            }
            Plan::Grant {
                handle,
                version,
                exclude,
                file_offset,
                failed,
            } => {
                let primary = if failed { Primary::Move } else { Primary::Keep };
                let (version, primary) =
                    self.grant(handle, version, exclude, true, primary).await?;
                Ok(self.lease_answer(handle, version, primary, file_offset))
            }
        }
    }

    fn lease_answer(
        &self,
        handle: ChunkHandle,
        version: ChunkVersion,
        primary: String,
        file_offset: u64,
    ) -> AppendLease {
        AppendLease {
            handle,
            version,
            primary,
            file_offset,
            chunk_size: self.config.chunk_size,
            max_append: self.config.max_append(),
            token: self.tokens.token(
                handle,
                version,
                dfs_protocol::auth::ops::APPEND | dfs_protocol::auth::ops::READ,
            ),
        }
    }

    fn plan_append(
        &self,
        ino: u64,
        path: &str,
        report: Option<&AppendReport>,
    ) -> Result<Plan, OpError> {
        let st = self.lock();
        let inode = st.ns.file(ino).ok_or_else(|| ErrorCode::NotFound {
            path: path.to_string(),
        })?;
        let Some((last, before)) = inode.chunks.split_last() else {
            return Ok(Plan::New {
                seal: None,
                last: None,
                replication: inode.replication,
                file_offset: 0,
            });
        };
        let before: u64 = before.iter().map(|c| c.size).sum();
        let mut exclude = HashSet::new();
        let mut failed = false;
        match report {
            Some(AppendReport::Full {
                handle,
                version,
                size,
            }) if *handle == last.handle && *version == last.version => {
                if *size > self.config.chunk_size || *size < last.size {
                    return Err(ErrorCode::BadRequest {
                        reason: format!("chunk {handle} cannot be full at {size} bytes"),
                    }
                    .into());
                }
                return Ok(Plan::New {
                    seal: Some((*handle, *size)),
                    last: Some(*handle),
                    replication: inode.replication,
                    file_offset: before + size,
                });
            }
            Some(AppendReport::Failed {
                handle,
                version,
                addr,
            }) if *handle == last.handle && *version == last.version => {
                tracing::info!(chunk = %handle, failed = ?addr, "append failed; new lease");
                // Without an address the client could not finish with the primary (it
                // restarted, its lease lapsed, or it is unreachable from that client):
                // still a good replica, but another one takes the lease if it can.
                exclude.extend(addr.as_deref().and_then(|a| st.map.by_addr(a)));
                failed = true;
            }
            _ => {
                if let Some(l) = st.lease(&last.handle, last.version) {
                    return Ok(Plan::Have(self.lease_answer(
                        last.handle,
                        last.version,
                        l.addr.clone(),
                        before,
                    )));
                }
            }
        }
        if st.ns.open_chain(&last.handle).is_none() && last.size >= self.config.chunk_size {
            return Ok(Plan::New {
                seal: None,
                last: Some(last.handle),
                replication: inode.replication,
                file_offset: before + last.size,
            });
        }
        Ok(Plan::Grant {
            handle: last.handle,
            version: last.version,
            exclude,
            file_offset: before,
            failed,
        })
    }

    /// A client says the chunk is full: the size comes from its primary, never from
    /// the client, so nobody can seal a chunk below what appenders were told. Without
    /// an answer the report is dropped: the chunk is then settled by a new grant,
    /// which keeps every acknowledged byte.
    async fn confirm_full(
        &self,
        handle: ChunkHandle,
        version: ChunkVersion,
    ) -> Option<AppendReport> {
        let (addr, token) = {
            let st = self.lock();
            let addr = st.lease(&handle, version)?.addr.clone();
            (
                addr,
                self.tokens.token(handle, version, ops::READ | ops::ORDER),
            )
        };
        let limit = Duration::from_secs(10);
        let identity = self.identity();
        let exchange = async {
            let mut conn =
                dfs_protocol::net::dial(&addr, PeerKind::Client, &identity, limit).await?;
            conn.call(Request::Chunk(ChunkRequest::ChunkLength {
                handle,
                version,
                token,
            }))
            .await
        };
        match tokio::time::timeout(limit, exchange).await {
            Ok(Ok(Response::ChunkSize { size })) => Some(AppendReport::Full {
                handle,
                version,
                size,
            }),
            other => {
                tracing::info!(%handle, answer = ?other.ok(), "primary did not confirm a full chunk");
                None
            }
        }
    }

    /// Asks `addr` to take the lease (or, with `lease_ms == 0`, only to even out the
    /// replicas); returns the synced size and the secondaries that made it.
    async fn call_grant(
        &self,
        addr: &str,
        request: Request,
    ) -> Result<(u64, Vec<String>), OpError> {
        let limit = Duration::from_secs(30);
        let exchange = async {
            let identity = self.identity();
            let mut conn =
                dfs_protocol::net::dial(addr, PeerKind::Client, &identity, limit).await?;
            conn.call(request).await
        };
        match tokio::time::timeout(limit, exchange).await {
            Ok(Ok(Response::LeaseGranted { size, secondaries })) => Ok((size, secondaries)),
            Ok(Ok(other)) => Err(unavailable(format!(
                "chunkserver {addr} answered {} to a lease grant",
                other.name()
            ))),
            Ok(Err(e)) => Err(unavailable(format!("chunkserver {addr}: {e}"))),
            Err(_) => Err(unavailable(format!(
                "chunkserver {addr} did not answer a lease grant"
            ))),
        }
    }

    /// Starts a new last chunk for file `ino` (after `last`, sealed at `seal`).
    async fn new_chunk(
        &self,
        ino: u64,
        seal: Option<(ChunkHandle, u64)>,
        last: Option<ChunkHandle>,
        replication: u32,
        file_offset: u64,
    ) -> Result<AppendLease, OpError> {
        let mut exclude: HashSet<ServerId> = HashSet::new();
        let mut failure = unavailable("no chunkserver took the new chunk".into());
        for _ in 0..GRANT_ATTEMPTS {
            let handle = ChunkHandle::random();
            let chain = {
                let mut st = self.lock();
                let mut out = exclude.clone();
                out.extend(st.ns.decommissioned().iter().copied());
                let placed =
                    st.map
                        .place(replication, self.config.chunk_size, self.clock.now(), &out);
                let chain = match placed {
                    // Just started: the chunkservers have not all registered yet.
                    Err(ErrorCode::NotEnoughServers { wanted, alive }) if st.safe.is_some() => {
                        return Err(unavailable(format!(
                            "the master is starting: {alive} of {wanted} chunkservers reported so far"
                        )));
                    }
                    other => other?,
                };
                st.pending.insert(handle);
                chain
            };
            let _pending = Pending {
                master: self,
                handle,
            };
            let (primary_id, primary) = chain[0].clone();
            let request = Request::Order(MasterOrder::GrantLease(LeaseGrant {
                handle,
                from: None,
                version: ChunkVersion::FIRST,
                secondaries: chain[1..].iter().map(|(_, a)| a.clone()).collect(),
                lease_ms: self.config.lease.as_millis() as u64,
                chunk_size: self.config.chunk_size,
                max_append: self.config.max_append(),
                token: self.tokens.token(handle, ChunkVersion::FIRST, ops::ORDER),
            }));
            let granted = self.call_grant(&primary, request).await;
            let granted_at = self.clock.now();
            let result = match granted {
                Ok((_, secondaries)) => {
                    let mut ids = vec![primary_id];
                    ids.extend(
                        chain[1..]
                            .iter()
                            .filter(|(_, a)| secondaries.contains(a))
                            .map(|(id, _)| *id),
                    );
                    self.mutate(|st| {
                        st.pending.remove(&handle);
                        let inode = st.ns.file(ino).ok_or_else(|| {
                            unavailable("the file was removed during the append".into())
                        })?;
                        if inode.chunks.last().map(|c| c.handle) != last {
                            return Err(unavailable("the file changed during the append".into()));
                        }
                        let m = Mutation::AppendChunk {
                            ino,
                            seal,
                            handle,
                            chain: ids.clone(),
                            mtime: self.clock.secs(),
                        };
                        self.log_apply(st, m)?;
                        st.fence(handle, ChunkVersion::FIRST, &ids);
                        if let Some((sealed, _)) = seal {
                            st.leases.remove(&sealed);
                        }
                        st.leases.insert(
                            handle,
                            MasterLease {
                                version: ChunkVersion::FIRST,
                                primary: primary_id,
                                addr: primary.clone(),
                                expires: granted_at + self.config.lease,
                            },
                        );
                        Ok((None, ()))
                    })
                    .await
                }
                Err(e) => Err(e),
            };
            self.lock().pending.remove(&handle);
            match result {
                Ok(()) => {
                    tracing::debug!(%handle, %primary, "new append chunk");
                    return Ok(self.lease_answer(
                        handle,
                        ChunkVersion::FIRST,
                        primary,
                        file_offset,
                    ));
                }
                Err(e) => {
                    tracing::warn!(%handle, %primary, error = %e, "new append chunk failed");
                    exclude.insert(primary_id);
                    failure = e;
                }
            }
        }
        Err(failure)
    }

    /// Moves chunk `handle` (at `version`) to a new version on its current replicas
    /// without `exclude`: with a lease (`lease`), or to settle its size. Returns the
    /// new version and the primary's address.
    async fn grant(
        &self,
        handle: ChunkHandle,
        version: ChunkVersion,
        mut exclude: HashSet<ServerId>,
        lease: bool,
        primary_role: Primary,
    ) -> Result<(ChunkVersion, String), OpError> {
        let mut failure = unavailable(format!("no live replica of chunk {handle}"));
        self.lock().pending.insert(handle);
        let _pending = Pending {
            master: self,
            handle,
        };
        for attempt in 0..GRANT_ATTEMPTS {
            let (replicas, fresh) = {
                let mut st = self.lock();
                let now = self.clock.now();
                let mut replicas: Vec<(ServerId, String)> = st
                    .current(&handle, version, now)
                    .into_iter()
                    .filter(|(id, _)| !exclude.contains(id))
                    .collect();
                // The primary keeps its role when it can (its appenders carry on), or
                // hands it on after a client's lease failed (that client may not reach it).
                if let Some(held) = st.leases.get(&handle).map(|l| l.primary) {
                    if let Some(i) = replicas.iter().position(|(id, _)| *id == held) {
                        match primary_role {
                            Primary::Keep => replicas[..=i].rotate_right(1),
                            Primary::Move => replicas[i..].rotate_left(1),
                        }
                    }
                }
                let fresh = if replicas.is_empty() {
                    Vec::new()
                } else {
                    st.fresh_replicas(&handle, replicas.len(), &exclude, now)
                };
                (replicas, fresh)
            };
            let Some(((primary_id, primary), rest)) = replicas.split_first() else {
                break;
            };
            if !fresh.is_empty() {
                tracing::info!(%handle, fresh = ?fresh.iter().map(|(_, a)| a).collect::<Vec<_>>(), "adding replicas to an under-replicated chunk at its grant");
            }
            let rest: Vec<(ServerId, String)> = rest.iter().chain(&fresh).cloned().collect();
            let rest = &rest[..];
            // A fresh version per attempt: an attempt that failed half-way may have
            // moved some replicas, and must never share a version with this one.
            let next = ChunkVersion(version.0 + 1 + attempt);
            let request = Request::Order(MasterOrder::GrantLease(LeaseGrant {
                handle,
                from: Some(version),
                version: next,
                secondaries: rest.iter().map(|(_, a)| a.clone()).collect(),
                lease_ms: if lease {
                    self.config.lease.as_millis() as u64
                } else {
                    0
                },
                chunk_size: self.config.chunk_size,
                max_append: self.config.max_append(),
                token: self.tokens.token(handle, next, ops::ORDER),
            }));
            let granted = self.call_grant(primary, request).await;
            let granted_at = self.clock.now();
            let result = match granted {
                Ok((size, secondaries)) => {
                    let mut ids = vec![*primary_id];
                    ids.extend(
                        rest.iter()
                            .filter(|(_, a)| secondaries.contains(a))
                            .map(|(id, _)| *id),
                    );
                    self.mutate(|st| {
                        let meta = st.ns.chunk(&handle).ok_or_else(|| {
                            unavailable("the file was removed during the append".into())
                        })?;
                        if meta.version != version {
                            return Err(unavailable(format!("chunk {handle} changed meanwhile")));
                        }
                        let m = Mutation::SetChunk {
                            handle,
                            version: next,
                            size,
                            open: lease.then(|| ids.clone()),
                            mtime: self.clock.secs(),
                        };
                        self.log_apply(st, m)?;
                        st.fence(handle, next, &ids);
                        st.leases.remove(&handle);
                        if lease {
                            st.leases.insert(
                                handle,
                                MasterLease {
                                    version: next,
                                    primary: *primary_id,
                                    addr: primary.clone(),
                                    expires: granted_at + self.config.lease,
                                },
                            );
                        }
                        Ok((None, ()))
                    })
                    .await
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => {
                    self.lock().pending.remove(&handle);
                    tracing::info!(%handle, version = %next, %primary, lease, "chunk moved to a new version");
                    return Ok((next, primary.clone()));
                }
                Err(e) => {
                    tracing::warn!(%handle, %primary, error = %e, "lease grant failed");
                    exclude.insert(*primary_id);
                    failure = e;
                }
            }
        }
        self.lock().pending.remove(&handle);
        Err(failure)
    }

    /// Brings open chunks back to their replication while their lease runs: a new
    /// grant that keeps the primary and fills fresh replicas from it.
    pub async fn refill_open_chunks(&self) {
        let short = {
            let mut st = self.lock();
            let now = self.clock.now();
            if st.safe.is_some() || now < self.started + self.config.lease {
                return;
            }
            // One try per chunk per lease period: a fresh server that keeps failing
            // must not turn every upkeep round into a new grant.
            let pause = self.config.lease.max(Duration::from_secs(1));
            st.refilled
                .retain(|_, at| now.saturating_duration_since(*at) < pause);
            st.short_open_chunks(now)
        };
        for (ino, handle, version) in short {
            let lock = self.grant_lock(ino);
            let _held = lock.lock().await;
            let still = {
                let mut st = self.lock();
                let still = st.ns.chunk(&handle).is_some_and(|m| m.version == version)
                    && st.ns.open_chain(&handle).is_some()
                    // Without a lease the chunk is settled instead, which refills too.
                    && st.lease(&handle, version).is_some();
                if still {
                    st.refilled.insert(handle, self.clock.now());
                }
                still
            };
            if !still {
                continue;
            }
            match self
                .grant(handle, version, HashSet::new(), true, Primary::Keep)
                .await
            {
                Ok((v, _)) => {
                    tracing::info!(%handle, version = %v, "under-replicated open chunk refilled")
                }
                Err(e) => tracing::info!(%handle, error = %e, "open chunk not refilled yet"),
            }
        }
    }

    /// Settles open chunks whose lease is over: their replicas are cut to one length
    /// and the size logged, so they can be repaired and balanced again.
    pub async fn settle_open_chunks(&self) {
        let due: Vec<(u64, ChunkHandle, ChunkVersion)> = {
            let st = self.lock();
            let now = self.clock.now();
            // After a start, primaries get a lease duration to report the leases they hold.
            if st.safe.is_some() || now < self.started + self.config.lease {
                return;
            }
            st.ns
                .open_chunks()
                .filter(|(h, _)| !st.pending.contains(*h))
                .filter(|(h, _)| st.leases.get(*h).is_none_or(|l| l.expires <= now))
                .filter_map(|(h, _)| st.ns.chunk(h).map(|m| (m.ino, *h, m.version)))
                .take(SETTLE_PER_ROUND)
                .collect()
        };
        for (ino, handle, version) in due {
            let lock = self.grant_lock(ino);
            let _held = lock.lock().await;
            let still = {
                let st = self.lock();
                let now = self.clock.now();
                st.ns.open_chain(&handle).is_some()
                    && st.ns.chunk(&handle).is_some_and(|m| m.version == version)
                    && st.leases.get(&handle).is_none_or(|l| l.expires <= now)
            };
            if !still {
                continue;
            }
            match self
                .grant(handle, version, HashSet::new(), false, Primary::Keep)
                .await
            {
                Ok((v, _)) => tracing::info!(%handle, version = %v, "open chunk settled"),
                Err(e) => tracing::info!(%handle, error = %e, "open chunk not settled yet"),
            }
        }
    }
}
