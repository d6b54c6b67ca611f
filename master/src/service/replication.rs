//! Keeping chunks at their replication: repair copies for chunks below it (fewest
//! replicas first), trims for chunks above it, balancing moves between the fullest
//! and the emptiest servers, and the balance report.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use dfs_protocol::auth::ops;
use dfs_protocol::{BalanceReport, ChunkHandle, ChunkVersion, ReplicateOrder, ServerId};
use rand::seq::IndexedRandom;

use super::{Minter, State};
use crate::namespace::ChunkMeta;

/// Copies one chunkserver receives at once.
const MAX_COPIES_PER_TARGET: usize = 4;
/// Copies scheduled per upkeep round.
const MAX_COPIES_PER_ROUND: usize = 256;
/// A copy not reported done by then is forgotten and scheduled again.
const COPY_TIMEOUT: Duration = Duration::from_secs(60);
/// Balancing moves under way at once onto one server, and in all: balancing is
/// gradual, but servers that come back empty fill in parallel.
const MOVES_PER_TARGET: usize = 2;
const MOVES_PER_SOURCE: usize = 4;
const MAX_MOVES: usize = 64;

/// A copy ordered to `target` of a chunk at `version`: done only when the target
/// reports exactly that version (a replica at any other is not the copy ordered).
#[derive(Debug, Clone, Copy)]
pub(super) struct Copying {
    pub(super) target: ServerId,
    /// The replica copied from: a copy from a server that died since fails, and the
    /// target does not say so (it only reports what it holds).
    pub(super) source: ServerId,
    pub(super) version: ChunkVersion,
    pub(super) at: Instant,
}

/// Orders copies for chunks below their replication (from the index
/// [`refresh`](super::attention::refresh) keeps), those with fewest live replicas
/// first, at most a few per target, from a random live replica.
pub(super) fn schedule_repairs(st: &mut State, tokens: &Minter, now: Instant) {
    // A copy is given up after a while, or at once when its target or its source
    // died. Servers killed together are declared dead over a second or so, so a
    // repair ordered for the first may copy from the next: waiting out the timeout
    // for such a copy held repairs back by a minute after many deaths at once.
    let State { copying, map, .. } = st;
    copying.retain(|_, c| {
        now.saturating_duration_since(c.at) < COPY_TIMEOUT
            && map.is_alive(&c.target, now)
            && map.is_alive(&c.source, now)
    });
    let State { copying, moves, .. } = st;
    moves.retain(|h, _| copying.contains_key(h));
    let mut per_target: HashMap<ServerId, usize> = HashMap::new();
    for c in st.copying.values() {
        *per_target.entry(c.target).or_default() += 1;
    }
    // Candidates for this round: a few more than can be scheduled, since some find
    // no target; chunks already being copied wait for their copy.
    let needy: Vec<ChunkHandle> = st
        .attention
        .short()
        .filter(|h| !st.copying.contains_key(h))
        .take(MAX_COPIES_PER_ROUND * 4)
        .collect();
    let mut scheduled = 0;
    for h in needy {
        if scheduled >= MAX_COPIES_PER_ROUND {
            break;
        }
        if !super::attention::still_short(st, h, now) {
            continue;
        }
        let Some(meta) = st.ns.chunk(&h) else {
            continue;
        };
        let sources = st.map.replicas(&h, meta.version, now);
        let Some(source) = sources.choose(&mut rand::rng()).cloned() else {
            continue;
        };
        let mut exclude: HashSet<ServerId> =
            st.map.holders(&h).into_iter().map(|(s, _)| s).collect();
        exclude.extend(
            per_target
                .iter()
                .filter(|(_, n)| **n >= MAX_COPIES_PER_TARGET)
                .map(|(s, _)| *s),
        );
        let Ok(chosen) = st.map.place(1, meta.size, now, &exclude) else {
            continue;
        };
        let Some((target, _)) = chosen.into_iter().next() else {
            continue;
        };
        tracing::info!(chunk = %h, source = %source.1, target = ?st.map.addr(&target), "re-replicating");
        order_copy(st, tokens, h, meta, source, target, now);
        *per_target.entry(target).or_default() += 1;
        scheduled += 1;
    }
}

/// Marks extra replicas of over-replicated chunks (from the index) for deletion: on
/// the fullest servers.
pub(super) fn schedule_trims(st: &mut State, now: Instant) {
    let candidates: Vec<ChunkHandle> = st.attention.over().collect();
    if candidates.is_empty() {
        return;
    }
    let pending: HashSet<ChunkHandle> = st.trims.iter().map(|(_, h)| *h).collect();
    let usage: HashMap<ServerId, f64> = st.map.usage(now).into_iter().collect();
    let mut new = Vec::new();
    for h in candidates {
        let Some(meta) = st.ns.chunk(&h) else {
            continue;
        };
        if pending.contains(&h)
            || st.copying.contains_key(&h)
            || st.moves.contains_key(&h)
            || st.ns.open_chain(&h).is_some()
        {
            continue;
        }
        let mut eff = st.effective(&h, meta.version, now);
        let want = usize::try_from(meta.replication).unwrap_or(usize::MAX);
        if eff.len() <= want {
            continue;
        }
        eff.sort_by(|a, b| {
            let ua = usage.get(&a.0).copied().unwrap_or(0.0);
            let ub = usage.get(&b.0).copied().unwrap_or(0.0);
            ub.total_cmp(&ua)
        });
        for (id, _) in eff.iter().take(eff.len() - want) {
            new.push((*id, h));
        }
    }
    for t in new {
        tracing::info!(chunk = %t.1, server = ?st.map.addr(&t.0), "trimming an extra replica");
        st.trims.insert(t);
    }
}

/// Balancing moves while the spread of disk use is above the threshold: chunks are
/// copied from servers above the mean use (fullest first, in turn) onto servers
/// more than half the threshold below it, and always onto the emptiest (emptiest
/// first), then trimmed from the server they left. Neither side is taken past the
/// mean. Use is projected: as last reported, plus the copies under way
/// onto a server and less those leaving it and its trims still pending, so that a
/// server is not drained (or filled) again before its reports catch up. At most
/// [`MOVES_PER_TARGET`] moves onto a server, [`MOVES_PER_SOURCE`] off one, and
/// [`MAX_MOVES`] in all.
pub(super) fn schedule_moves(st: &mut State, tokens: &Minter, now: Instant) {
    if st.moves.len() >= MAX_MOVES {
        return;
    }
    let gone = st.ns.decommissioned();
    let mut used: HashMap<ServerId, (f64, f64)> = st
        .map
        .usage_bytes(now)
        .into_iter()
        .filter(|(id, _, _)| !gone.contains(id))
        .map(|(id, u, cap)| (id, (u as f64, cap.max(1) as f64)))
        .collect();
    if used.len() < 2 {
        return;
    }
    let size_of = |st: &State, h: &ChunkHandle| st.ns.chunk(h).map_or(0.0, |m| m.size as f64);
    let mut onto: HashMap<ServerId, usize> = HashMap::new();
    let mut off: HashMap<ServerId, usize> = HashMap::new();
    for (h, from) in &st.moves {
        let size = size_of(st, h);
        if let Some(c) = st.copying.get(h) {
            *onto.entry(c.target).or_default() += 1;
            if let Some(u) = used.get_mut(&c.target) {
                u.0 += size;
            }
        }
        *off.entry(*from).or_default() += 1;
        if let Some(u) = used.get_mut(from) {
            u.0 -= size;
        }
    }
    for (server, h) in &st.trims {
        if let Some(u) = used.get_mut(server) {
            u.0 -= size_of(st, h);
        }
    }
    let frac = |used: &HashMap<ServerId, (f64, f64)>, id: &ServerId| {
        used.get(id).map_or(0.0, |(u, cap)| u / cap)
    };
    let mut order: Vec<ServerId> = used.keys().copied().collect();
    order.sort_by(|a, b| frac(&used, a).total_cmp(&frac(&used, b)));
    let (Some(emptiest), Some(fullest)) = (order.first().copied(), order.last().copied()) else {
        return;
    };
    if frac(&used, &fullest) - frac(&used, &emptiest) <= st.balance_threshold {
        return;
    }
    let mean = order.iter().map(|id| frac(&used, id)).sum::<f64>() / order.len() as f64;
    let margin = st.balance_threshold / 2.0;
    let targets: Vec<ServerId> = order
        .iter()
        .take_while(|id| **id == emptiest || frac(&used, id) < mean - margin)
        .copied()
        .collect();
    // Any server above the mean gives to those well below it (as HDFS's balancer
    // pairs under-used servers with above-average ones): with only the servers far
    // above it giving, sixteen empty servers among 300 filled one or two chunks at
    // a time.
    let sources: Vec<ServerId> = order
        .iter()
        .rev()
        .take_while(|id| frac(&used, id) > mean)
        .copied()
        .collect();
    let pending: HashSet<ChunkHandle> = st.trims.iter().map(|(_, h)| *h).collect();
    let mut next_source = 0;
    for to in targets {
        // Filled up to the mean at most, however empty it was.
        while onto.get(&to).copied().unwrap_or(0) < MOVES_PER_TARGET
            && st.moves.len() < MAX_MOVES
            && frac(&used, &to) < mean
        {
            let mut found = None;
            for k in 0..sources.len() {
                let from = sources[(next_source + k) % sources.len()];
                if from == to
                    || off.get(&from).copied().unwrap_or(0) >= MOVES_PER_SOURCE
                    || frac(&used, &from) <= mean
                {
                    continue;
                }
                if let Some(pick) = movable(st, &pending, from, to) {
                    found = Some((from, pick));
                    next_source = (next_source + k + 1) % sources.len();
                    break;
                }
            }
            let Some((from, (h, meta))) = found else {
                break;
            };
            let Some(source) = st.map.addr(&from).map(str::to_string) else {
                break;
            };
            tracing::info!(chunk = %h, from = %source, to = ?st.map.addr(&to), "balancing");
            order_copy(st, tokens, h, meta, (from, source), to, now);
            st.moves.insert(h, from);
            *onto.entry(to).or_default() += 1;
            *off.entry(from).or_default() += 1;
            let size = meta.size as f64;
            if let Some(u) = used.get_mut(&to) {
                u.0 += size;
            }
            if let Some(u) = used.get_mut(&from) {
                u.0 -= size;
            }
        }
    }
}

/// A chunk on `from` that can move to `to`: at its current version, settled, not
/// on `to` at any version, and not already being copied or trimmed.
fn movable(
    st: &State,
    pending: &HashSet<ChunkHandle>,
    from: ServerId,
    to: ServerId,
) -> Option<(ChunkHandle, ChunkMeta)> {
    st.map.chunks_of(&from).find_map(|(h, v)| {
        let meta = st.ns.chunk(h)?;
        let movable = meta.version == v
            && st.ns.open_chain(h).is_none()
            && !st.map.holds(&to, h)
            && !st.copying.contains_key(h)
            && !pending.contains(h);
        movable.then_some((*h, meta))
    })
}

/// Queues a copy of `h` from `source` for `target`'s next heartbeat.
pub(super) fn order_copy(
    st: &mut State,
    tokens: &Minter,
    h: ChunkHandle,
    meta: ChunkMeta,
    (source, source_addr): (ServerId, String),
    target: ServerId,
    now: Instant,
) {
    let token = tokens.token(h, meta.version, ops::READ);
    st.orders.entry(target).or_default().push(ReplicateOrder {
        handle: h,
        version: meta.version,
        size: meta.size,
        source: source_addr,
        token,
    });
    st.copying.insert(
        h,
        Copying {
            target,
            source,
            version: meta.version,
            at: now,
        },
    );
}

pub(super) fn balance_report(st: &State, now: Instant) -> BalanceReport {
    let gone = st.ns.decommissioned();
    let mut servers: Vec<(String, f64)> = st
        .map
        .usage(now)
        .into_iter()
        .filter(|(id, _)| !gone.contains(id))
        .filter_map(|(id, u)| Some((st.map.addr(&id)?.to_string(), u)))
        .collect();
    servers.sort_by(|a, b| a.0.cmp(&b.0));
    let max = servers.iter().map(|s| s.1).fold(f64::MIN, f64::max);
    let min = servers.iter().map(|s| s.1).fold(f64::MAX, f64::min);
    BalanceReport {
        spread: if servers.is_empty() { 0.0 } else { max - min },
        servers,
        threshold: st.balance_threshold,
        moving: st.moves.len() as u64,
    }
}
