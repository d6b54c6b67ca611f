//! The chunkserver link: registrations and heartbeats. A chunkserver reports only
//! about itself (its proven id), and heartbeats only on the connection where it
//! registered; the answers carry its deletions, copy orders, lease extensions and
//! the client key table.

use dfs_protocol::{
    Accepted, ChunkHandle, ChunkReport, ChunkserverToMaster, ErrorCode, Response, ServerId,
};

use super::{keys, of_server, Master, State, MAX_DELETES_PER_HEARTBEAT};
use crate::error::OpError;
use crate::mutation::Mutation;

impl Master {
    /// A chunkserver's report about itself.
    pub(super) async fn report(
        &self,
        from: &Accepted,
        request: ChunkserverToMaster,
    ) -> Result<Response, OpError> {
        match request {
            ChunkserverToMaster::Register {
                server,
                addr,
                capacity,
                used,
                chunks,
                id_key,
            } => {
                let key = dfs_protocol::auth::unseal(&from.session, 0, "server key", &id_key);
                let fingerprint = dfs_protocol::auth::fingerprint(&key);
                let enrolled = self
                    .read(|st| Ok(st.ns.server_key(&server).copied()))
                    .await?;
                match enrolled {
                    Some(fp) if fp == fingerprint => {}
                    Some(_) => {
                        return Err(ErrorCode::AuthFailed {
                            reason: format!(
                                "chunkserver id {server} is enrolled with another server key: \
                                 another server is using this id"
                            ),
                        }
                        .into())
                    }
                    None => {
                        self.mutate(|st| {
                            // Two first registrations racing: the first one wins.
                            if st.ns.server_key(&server).is_some() {
                                return Ok((None, ()));
                            }
                            Ok((
                                Some(Mutation::EnrollServer {
                                    server,
                                    fingerprint,
                                }),
                                (),
                            ))
                        })
                        .await?;
                        let won = self
                            .read(|st| Ok(st.ns.server_key(&server).copied()))
                            .await?;
                        if won != Some(fingerprint) {
                            return Err(ErrorCode::AuthFailed {
                                reason: format!(
                                    "chunkserver id {server} was just enrolled by another server"
                                ),
                            }
                            .into());
                        }
                        tracing::info!(%server, %addr, "chunkserver enrolled");
                    }
                }
                tracing::info!(%server, %addr, chunks = chunks.len(), "chunkserver registered");
                let mut st = self.lock();
                let now = self.clock.now();
                let keys = keys::table(&st.ns, &from.session);
                st.key_epochs.insert(server, keys.epoch);
                let mine = of_server(server);
                let old: Vec<_> = st.stale.range(mine.clone()).copied().collect();
                for k in old {
                    st.stale.remove(&k);
                }
                let old: Vec<_> = st.garbage_at.range(mine).copied().collect();
                for k in old {
                    st.garbage_at.remove(&k);
                }
                st.orders.remove(&server);
                for m in note_reports(&mut st, server, &chunks) {
                    self.log_apply(&mut st, m)?;
                }
                st.map.register(server, addr, capacity, used, chunks, now);
                if let Some(safe) = st.safe.as_mut() {
                    safe.registered(now);
                }
                Ok(Response::Registered { keys })
            }
            ChunkserverToMaster::Heartbeat {
                server,
                capacity,
                used,
                added,
                removed,
                corrupt,
                load,
                leases,
                keys_epoch,
            } => {
                let mut guard = self.lock();
                let st = &mut *guard;
                let now = self.clock.now();
                if !st.map.is_registered(&server) {
                    // Reports from a server this master does not know are ignored
                    // until it registers with its full list.
                    return Ok(Response::HeartbeatAck {
                        reregister: true,
                        delete: Vec::new(),
                        replicate: Vec::new(),
                        extended: Vec::new(),
                        keys: None,
                    });
                }
                for m in note_reports(st, server, &added) {
                    self.log_apply(st, m)?;
                }
                let (extended, sizes) = st.renew_leases(server, &leases, self.config.lease);
                for m in sizes {
                    self.log_apply(st, m)?;
                }
                for h in &corrupt {
                    // Only chunks a file references count; anything else is noise
                    // that must not grow the set.
                    if st.ns.chunk(h).is_none() {
                        continue;
                    }
                    tracing::warn!(chunk = %h, %server, "replica reported damaged");
                    let n = st.corrupt.entry(*h).or_default();
                    *n = n.saturating_add(1);
                }
                let known =
                    st.map
                        .heartbeat(server, capacity, used, load, added, removed.clone(), now);
                for h in &removed {
                    st.stale.remove(&(server, *h));
                    st.trims.remove(&(server, *h));
                    st.garbage_at.remove(&(server, *h));
                    if !st.map.is_held(h) {
                        st.garbage.remove(h);
                    }
                }
                self.release_freed(st);
                // Everything below looks only at this server's own entries.
                let (delete, replicate) = if known && st.safe.is_none() {
                    let mut delete: Vec<ChunkHandle> = st
                        .garbage_at
                        .range(of_server(server))
                        .map(|(_, h)| h)
                        .filter(|h| {
                            st.garbage.contains(h)
                                && st.map.holds(&server, h)
                                && !st.ns.is_referenced(h)
                                && !st.pending.contains(h)
                        })
                        .take(MAX_DELETES_PER_HEARTBEAT)
                        .copied()
                        .collect();
                    delete.extend(
                        st.stale
                            .range(of_server(server))
                            .map(|(_, h)| *h)
                            .take(MAX_DELETES_PER_HEARTBEAT),
                    );
                    // A trim goes out only while the chunk keeps enough replicas without it.
                    let trims: Vec<ChunkHandle> =
                        st.trims.range(of_server(server)).map(|(_, h)| *h).collect();
                    for h in trims {
                        let keeps = st.ns.chunk(&h).is_some_and(|meta| {
                            let others = st
                                .effective(&h, meta.version, now)
                                .iter()
                                .filter(|(id, _)| *id != server)
                                .count();
                            others >= usize::try_from(meta.replication).unwrap_or(usize::MAX)
                        });
                        if keeps {
                            delete.push(h);
                        } else {
                            st.trims.remove(&(server, h));
                        }
                    }
                    (delete, st.orders.remove(&server).unwrap_or_default())
                } else {
                    (Vec::new(), Vec::new())
                };
                st.key_epochs.insert(server, keys_epoch);
                let keys =
                    (keys_epoch != st.ns.keys_epoch()).then(|| keys::table(&st.ns, &from.session));
                Ok(Response::HeartbeatAck {
                    reregister: !known,
                    delete,
                    replicate,
                    extended,
                    keys,
                })
            }
        }
    }
}

/// Unreferenced chunks tracked for deletion at once (reports beyond are learned
/// again later): what peer input may grow the garbage set to.
const MAX_GARBAGE: usize = 1_000_000;

/// Sorts reported chunks: nothing references it -> garbage candidate (whether it is
/// deleted is decided later, outside safe mode, against the chunk table again); an
/// older version than the file's, or off the chain of an open chunk -> stale; a copy
/// we ordered -> done. Returns the adoptions of versions newer than the log to apply.
pub(super) fn note_reports(
    st: &mut State,
    server: ServerId,
    reports: &[ChunkReport],
) -> Vec<Mutation> {
    let mut adopt = Vec::new();
    let mut untracked = 0u64;
    for r in reports {
        match st.ns.chunk(&r.handle) {
            Some(meta) if r.version < meta.version => {
                tracing::info!(chunk = %r.handle, %server, have = %r.version, want = %meta.version, "stale replica");
                st.stale.insert((server, r.handle));
            }
            Some(meta) if r.version > meta.version => {
                if let Some(m) = st.adoption(server, r) {
                    st.adopted.insert(r.handle, r.version);
                    adopt.push(m);
                }
            }
            Some(meta)
                if st
                    .ns
                    .open_chain(&r.handle)
                    .is_some_and(|c| !c.contains(&server)) =>
            {
                if st.adopted.get(&r.handle) == Some(&r.version) && !st.pending.contains(&r.handle)
                {
                    // Moved by the same lost grant as the replica adopted first.
                    let mut chain = st
                        .ns
                        .open_chain(&r.handle)
                        .map(<[_]>::to_vec)
                        .unwrap_or_default();
                    chain.push(server);
                    tracing::info!(chunk = %r.handle, %server, version = %r.version, "another replica of an adopted version joins the chain");
                    adopt.push(Mutation::SetChunk {
                        handle: r.handle,
                        version: r.version,
                        size: meta.size,
                        open: Some(chain),
                        mtime: st.clock.secs(),
                    });
                } else if !st.pending.contains(&r.handle) {
                    tracing::info!(chunk = %r.handle, %server, "replica off its open chunk's chain");
                    st.stale.insert((server, r.handle));
                }
            }
            Some(_) => {}
            None if st.ns.is_referenced(&r.handle) => {}
            // Freed by a record not yet durable: garbage once it is.
            None if st.freeing_set.contains(&r.handle) => {}
            None if st.garbage.len() >= MAX_GARBAGE && !st.garbage.contains(&r.handle) => {
                // Reports cannot grow the set without bound; the chunk is learned
                // again at a later registration, once collection has made room.
                untracked += 1;
            }
            None => {
                st.garbage.insert(r.handle);
                st.garbage_at.insert((server, r.handle));
            }
        }
        if let Some(copy) = st.copying.get(&r.handle).copied() {
            if copy.target == server {
                st.copying.remove(&r.handle);
                let from = st.moves.remove(&r.handle);
                if r.version == copy.version {
                    // A balancing move: the copy landed, the old side goes.
                    if let Some(from) = from {
                        st.trims.insert((from, r.handle));
                    }
                } else {
                    // Another version than ordered (the chunk moved on, or the target
                    // held an old one): not the copy; repair looks at it afresh.
                    tracing::info!(chunk = %r.handle, %server, have = %r.version, ordered = %copy.version, "a copy target reported another version than ordered");
                }
            }
        }
    }
    if untracked > 0 {
        tracing::warn!(%server, untracked, "garbage set full: reported chunks left for a later registration");
    }
    adopt
}
