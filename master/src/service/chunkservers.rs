//! The chunkserver link: registrations and heartbeats. A chunkserver reports only
//! about itself (its proven id), and heartbeats only on the connection where it
//! registered; the answers carry its deletions, copy orders, lease extensions and
//! the client key table.

use dfs_protocol::{Accepted, ChunkHandle, ChunkserverToMaster, ErrorCode, Response};

use super::{keys, note_reports, of_server, Master, MAX_DELETES_PER_HEARTBEAT};
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
                let (delete, replicate) = if known && st.safe_until.is_none() {
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
