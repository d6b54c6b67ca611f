//! Which chunks upkeep has to look at: an index of the chunks below their replication
//! (fewest live replicas first) and of those above it, kept up to date from what
//! changed since the last round instead of by walking every chunk every second.
//!
//! What changes a chunk's standing, and how it gets here:
//! - its replicas (reports, registrations, forgotten servers) and the liveness of
//!   the servers holding them: [`ChunkMap::take_changes`](crate::chunkmap::ChunkMap::take_changes);
//! - the namespace (commits, appends' chunks opened and settled): [`Attention::note`]
//!   from every logged mutation;
//! - replication settings and decommissioning, which touch many chunks at once:
//!   a full review at the next round.
//!
//! A full review also runs every [`REVIEW_EVERY`] rounds, as a safety net for a
//! change that reached no index, and after safe mode.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Instant;

use dfs_protocol::ChunkHandle;

use super::State;
use crate::mutation::Mutation;
use crate::namespace::ChunkMeta;

/// Rounds between two full reviews (upkeep runs once a second).
pub(super) const REVIEW_EVERY: u32 = 60;
/// Chunks noted one by one before a full review is cheaper to ask for.
const MAX_NOTED: usize = 100_000;

/// Where a chunk stands against its replication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    /// Exactly at its replication.
    Even,
    /// Below it, with this many live replicas in service (at least one).
    Short(usize),
    /// Above it.
    Over,
    /// Nothing to do now: open for appends (its length moves), no live replica to
    /// copy from, or no longer in the namespace.
    Aside,
}

#[derive(Debug, Default)]
pub(super) struct Attention {
    /// Chunks below their replication, by (live replicas, chunk): repair order.
    short: BTreeSet<(usize, ChunkHandle)>,
    short_live: HashMap<ChunkHandle, usize>,
    /// Chunks above their replication.
    over: BTreeSet<ChunkHandle>,
    /// Chunks the namespace changed since the last round.
    noted: HashSet<ChunkHandle>,
    review_due: bool,
    rounds: u32,
    /// Chunks assessed in the last round (for tests and the metrics).
    pub(super) last_assessed: usize,
}

impl Attention {
    /// Starts with a full review: nothing is indexed yet.
    pub(super) fn new() -> Attention {
        Attention {
            review_due: true,
            ..Default::default()
        }
    }

    /// Notes the chunks a logged mutation changed.
    pub(super) fn note(&mut self, m: &Mutation) {
        if self.review_due {
            return;
        }
        if self.noted.len() >= MAX_NOTED {
            // A burst while upkeep waits (safe mode): bounded, at the price of one
            // full review.
            self.noted = HashSet::new();
            self.review_due = true;
            return;
        }
        match m {
            Mutation::CommitFile { inode, .. } => {
                self.noted.extend(inode.chunks.iter().map(|c| c.handle));
            }
            Mutation::AllocateChunk { handle, .. } | Mutation::SetChunk { handle, .. } => {
                self.noted.insert(*handle);
            }
            Mutation::AppendChunk { seal, handle, .. } => {
                self.noted.insert(*handle);
                self.noted.extend(seal.map(|(h, _)| h));
            }
            // Many chunks at once, and rare.
            Mutation::SetReplication { .. }
            | Mutation::Decommission { .. }
            | Mutation::Restore { .. } => self.review_due = true,
            _ => {}
        }
    }

    /// Chunks below their replication, fewest live replicas first.
    pub(super) fn short(&self) -> impl Iterator<Item = ChunkHandle> + '_ {
        self.short.iter().map(|(_, h)| *h)
    }

    /// Chunks above their replication.
    pub(super) fn over(&self) -> impl Iterator<Item = ChunkHandle> + '_ {
        self.over.iter().copied()
    }

    fn set(&mut self, h: ChunkHandle, standing: Standing) {
        if let Some(live) = self.short_live.remove(&h) {
            self.short.remove(&(live, h));
        }
        self.over.remove(&h);
        match standing {
            Standing::Short(live) => {
                self.short.insert((live, h));
                self.short_live.insert(h, live);
            }
            Standing::Over => {
                self.over.insert(h);
            }
            Standing::Even | Standing::Aside => {}
        }
    }

    fn clear(&mut self) {
        self.short.clear();
        self.short_live.clear();
        self.over.clear();
        self.noted.clear();
    }
}

fn assess(st: &State, h: &ChunkHandle, meta: &ChunkMeta, now: Instant) -> Standing {
    if st.ns.open_chain(h).is_some() {
        return Standing::Aside;
    }
    let live = st.effective(h, meta.version, now).len();
    let want = usize::try_from(meta.replication).unwrap_or(usize::MAX);
    match live.cmp(&want) {
        std::cmp::Ordering::Equal => Standing::Even,
        std::cmp::Ordering::Greater => Standing::Over,
        std::cmp::Ordering::Less if live == 0 => Standing::Aside,
        std::cmp::Ordering::Less => Standing::Short(live),
    }
}

/// Brings the index up to date: the chunks that changed since the last round, or
/// every chunk when a full review is due.
pub(super) fn refresh(st: &mut State, now: Instant) {
    let changes = st.map.take_changes(now);
    let a = &mut st.attention;
    a.rounds = a.rounds.saturating_add(1);
    let full = a.review_due || changes.all || a.rounds >= REVIEW_EVERY;
    let verdicts: Vec<(ChunkHandle, Standing)> = if full {
        a.review_due = false;
        a.rounds = 0;
        a.clear();
        let started = std::time::Instant::now();
        let all = st.ns.chunks().count();
        st.attention.last_assessed = all;
        let verdicts = st
            .ns
            .chunks()
            .filter_map(|(h, meta)| {
                let standing = assess(st, h, meta, now);
                (standing != Standing::Aside).then_some((*h, standing))
            })
            .collect();
        // The whole pass holds the state lock: its length is what a large master
        // pauses for once a minute.
        tracing::info!(
            chunks = all,
            took_ms = started.elapsed().as_millis() as u64,
            "upkeep: full review"
        );
        verdicts
    } else {
        let mut handles = std::mem::take(&mut a.noted);
        handles.extend(changes.handles);
        for server in &changes.servers {
            handles.extend(st.map.chunks_of(server).map(|(h, _)| *h));
        }
        a.last_assessed = handles.len();
        handles
            .into_iter()
            .map(|h| {
                let standing = match st.ns.chunk(&h) {
                    Some(meta) => assess(st, &h, meta, now),
                    None => Standing::Aside,
                };
                (h, standing)
            })
            .collect()
    };
    for (h, standing) in verdicts {
        if matches!(standing, Standing::Even | Standing::Over) {
            // Fully replicated again: a damaged replica it had is history.
            st.corrupt.remove(&h);
        }
        st.attention.set(h, standing);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u128) -> ChunkHandle {
        ChunkHandle(uuid::Uuid::from_u128(n))
    }

    #[test]
    fn the_index_orders_by_fewest_live_replicas_and_forgets_what_recovered() {
        let mut a = Attention::new();
        a.set(h(1), Standing::Short(2));
        a.set(h(2), Standing::Short(1));
        a.set(h(3), Standing::Over);
        assert_eq!(a.short().collect::<Vec<_>>(), [h(2), h(1)]);
        a.set(h(2), Standing::Short(2));
        assert_eq!(a.short().collect::<Vec<_>>(), [h(1), h(2)]);
        a.set(h(1), Standing::Even);
        a.set(h(3), Standing::Aside);
        assert_eq!(a.short().collect::<Vec<_>>(), [h(2)]);
        assert_eq!(a.over().count(), 0);
        assert_eq!(a.short_live.len(), 1);
    }

    #[test]
    fn mutations_note_their_chunks_or_ask_for_a_full_review() {
        let mut a = Attention::default();
        a.note(&Mutation::SetChunk {
            handle: h(7),
            version: dfs_protocol::ChunkVersion::FIRST,
            size: 0,
            open: None,
            mtime: 0,
        });
        assert!(a.noted.contains(&h(7)) && !a.review_due);
        a.note(&Mutation::SetReplication {
            inodes: vec![2],
            replication: 2,
        });
        assert!(a.review_due);
    }
}
