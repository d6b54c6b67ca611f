//! Which chunks upkeep has to look at, and how the cluster's chunks stand: an index
//! of the chunks below their replication (fewest replicas in service first) and of
//! those above it, and the tallies `dfs status` and `/metrics` count from. It is
//! kept up to date from what changed since the last round, never by walking every
//! chunk under the lock.
//!
//! What changes a chunk's standing, and how it gets here:
//! - its replicas (reports, registrations, forgotten servers) and the liveness of
//!   the servers holding them: [`ChunkMap::take_changes`](crate::chunkmap::ChunkMap::take_changes);
//! - the namespace (commits, appends' chunks opened and settled, replication
//!   settings, removals) and decommissioning: [`Attention::note`] from every logged
//!   mutation.
//!
//! Each round assesses at most [`ROUND_BUDGET`] chunks: first those noted, then a
//! slice of a rolling sweep over the chunk table in handle order. The sweep is the
//! safety net for a change that reached no index; it covers the table about every
//! [`SWEEP_ROUNDS`] rounds on a small master and more slowly on a large one, so a
//! round holds the state lock for milliseconds at 10 million chunks, where a whole
//! pass held it for 10–28 s.
//!
//! When more changed than can be remembered one by one (the master's start, a
//! `setrep -r /`, many large servers dying at once), the noted chunks are dropped
//! and a sweep catches up from the start at the full budget. Until it ends, the
//! counts cover only what it has reached ([`Attention::complete`]).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Instant;

use dfs_protocol::{ChunkHandle, ServerId};

use super::State;
use crate::mutation::Mutation;
use crate::namespace::{ChunkMeta, Namespace};

/// Chunks assessed per round at most: noted ones first, then the sweep's slice.
/// An assessment is a dozen lookups in tables of millions, some 5 µs at 10 million
/// chunks, so this keeps a round under about 80 ms of lock.
pub(super) const ROUND_BUDGET: usize = 16_384;
/// Rounds a sweep over a small table takes (upkeep runs once a second).
pub(super) const SWEEP_ROUNDS: usize = 60;
/// A background sweep's slice at most: at 10 million chunks a pass takes about 40
/// minutes, and a round's lock is held some 20 ms for it.
const SWEEP_SLICE_MAX: usize = 4_096;
/// Chunks remembered one by one; past this, a sweep catches up instead (some 20 MB
/// at most, and noting costs a round some 0.1 µs a chunk).
const MAX_NOTED: usize = 1_000_000;

/// How a chunk stood when last assessed: its live replicas at its version, those
/// of them on servers in service, and its replication (each at most `u16::MAX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tally {
    live: u16,
    effective: u16,
    want: u16,
    /// Open for appends: its length moves, so upkeep leaves it to the appenders.
    open: bool,
}

impl Counts {
    /// Counts `t` in (`true`) or out.
    fn add(&mut self, t: &Tally, add: bool) {
        let f = |n: &mut u64, hit: bool| {
            if hit {
                *n = if add {
                    n.saturating_add(1)
                } else {
                    n.saturating_sub(1)
                };
            }
        };
        // fsck's rule: replicas to count on (usable, in service) short of the file's
        // replication, so a drain or a fenced replica shows in both alike.
        f(&mut self.under_replicated, t.effective < t.want);
        f(&mut self.missing, t.live == 0);
        f(&mut self.over_replicated, t.effective > t.want);
    }
}

impl Tally {
    fn settled(&self) -> bool {
        self.live == self.want && self.effective == self.want
    }

    /// Below its replication with a replica to copy from: repair it.
    fn needs_copies(&self) -> bool {
        !self.open && self.live > 0 && self.effective < self.want
    }

    fn needs_trim(&self) -> bool {
        !self.open && self.effective > self.want
    }
}

/// Counts of chunks by standing, as last assessed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Counts {
    /// Fewer replicas to count on than their replication.
    pub(super) under_replicated: u64,
    /// No live replica at all.
    pub(super) missing: u64,
    /// More replicas in service than their replication.
    pub(super) over_replicated: u64,
}

/// Where the rolling sweep stands.
#[derive(Debug, Default)]
struct Sweep {
    /// The pass carries on after this chunk; `None`: from the start.
    after: Option<ChunkHandle>,
    /// A pass that must reach every chunk before the index is whole: it takes the
    /// whole budget each round.
    catching_up: bool,
    /// Passes finished (for tests).
    passes: u64,
}

#[derive(Debug, Default)]
pub(super) struct Attention {
    /// Chunks to copy, by (replicas in service, chunk): repair order.
    short: BTreeSet<(u16, ChunkHandle)>,
    /// Chunks to trim.
    over: BTreeSet<ChunkHandle>,
    /// Every chunk not exactly at its replication, as last assessed. A healthy
    /// cluster keeps it empty.
    unsettled: HashMap<ChunkHandle, Tally>,
    /// `unsettled` counted by standing, kept as it changes.
    counts: Counts,
    /// The chunks of `unsettled` with no live replica: few, and what operators
    /// alert on, so `dfs status` checks each afresh.
    missing: HashSet<ChunkHandle>,
    /// Chunks changed since they were last assessed.
    noted: HashSet<ChunkHandle>,
    sweep: Sweep,
    /// Chunks assessed in the last round (for tests and the metrics).
    pub(super) last_assessed: usize,
}

impl Attention {
    /// Starts with a sweep catching up: nothing is indexed yet.
    pub(super) fn new() -> Attention {
        Attention {
            sweep: Sweep {
                catching_up: true,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Whether every chunk has been assessed since the index was last rebuilt: when
    /// not, the counts cover only the chunks a catching-up sweep has reached.
    #[cfg(test)]
    pub(super) fn complete(&self) -> bool {
        !self.sweep.catching_up
    }

    /// Sweeps finished.
    #[cfg(test)]
    pub(super) fn passes(&self) -> u64 {
        self.sweep.passes
    }

    /// Notes the chunks mutation `m` changed; `ns` is the namespace after it, and
    /// `freed` the chunks it released.
    pub(super) fn note(&mut self, m: &Mutation, ns: &Namespace, freed: &[ChunkHandle]) {
        // A freed chunk leaves the index at its next assessment (it is no longer in
        // the namespace), which the sweep, walking the namespace, never does.
        self.note_all(freed.iter().copied());
        match m {
            Mutation::CommitFile { inode, .. } => {
                self.note_all(inode.chunks.iter().map(|c| c.handle));
            }
            Mutation::AllocateChunk { handle, .. } | Mutation::SetChunk { handle, .. } => {
                self.note_all([*handle]);
            }
            Mutation::AppendChunk { seal, handle, .. } => {
                self.note_all(std::iter::once(*handle).chain(seal.map(|(h, _)| h)));
            }
            Mutation::SetReplication { inodes, .. } => {
                for ino in inodes {
                    if let Some(file) = ns.file(*ino) {
                        self.note_all(file.chunks.iter().map(|c| c.handle));
                    }
                }
            }
            _ => {}
        }
    }

    /// Notes every chunk `server` holds: it registered, died, came back, or went in
    /// or out of service.
    pub(super) fn note_server(&mut self, st_map: &crate::chunkmap::ChunkMap, server: &ServerId) {
        if self.noted.len().saturating_add(st_map.chunks_held(server)) > MAX_NOTED {
            self.catch_up();
            return;
        }
        self.note_all(st_map.chunks_of(server).map(|(h, _)| *h));
    }

    fn note_all(&mut self, handles: impl IntoIterator<Item = ChunkHandle>) {
        if self.sweep.catching_up && self.sweep.after.is_none() {
            // A sweep from the very start reaches every chunk anyway.
            return;
        }
        for h in handles {
            if self.noted.len() >= MAX_NOTED {
                self.catch_up();
                return;
            }
            self.noted.insert(h);
        }
    }

    /// Forgets what was noted and sweeps every chunk again from the start.
    fn catch_up(&mut self) {
        self.noted = HashSet::new();
        self.sweep.after = None;
        self.sweep.catching_up = true;
    }

    /// Chunks below their replication, fewest replicas in service first.
    pub(super) fn short(&self) -> impl Iterator<Item = ChunkHandle> + '_ {
        self.short.iter().map(|(_, h)| *h)
    }

    /// Chunks above their replication.
    pub(super) fn over(&self) -> impl Iterator<Item = ChunkHandle> + '_ {
        self.over.iter().copied()
    }

    /// The counts by standing, as last assessed: a chunk repaired or fallen short
    /// since shows from the next round.
    pub(super) fn counts(&self) -> Counts {
        self.counts
    }

    /// Records `h`'s standing (`None`: no longer in the namespace).
    fn set(&mut self, h: ChunkHandle, tally: Option<Tally>) {
        if let Some(old) = self.unsettled.remove(&h) {
            self.short.remove(&(old.effective, h));
            self.over.remove(&h);
            self.counts.add(&old, false);
            if old.live == 0 {
                self.missing.remove(&h);
            }
        }
        let Some(t) = tally else { return };
        if t.settled() {
            return;
        }
        self.counts.add(&t, true);
        if t.live == 0 {
            self.missing.insert(h);
        }
        if t.needs_copies() {
            self.short.insert((t.effective, h));
        }
        if t.needs_trim() {
            self.over.insert(h);
        }
        self.unsettled.insert(h, t);
    }
}

/// The chunks the index holds as missing that still have no live replica now: after
/// a mass registration the index may take minutes to reassess every chunk, and a
/// chunk whose servers came back must not be reported missing meanwhile. Time in
/// proportion to the chunks held as missing.
pub(super) fn missing_now(st: &State, now: Instant) -> u64 {
    st.attention
        .missing
        .iter()
        .filter(|h| assess(st, h, now).is_some_and(|t| t.live == 0))
        .count() as u64
}

/// `h` assessed now, and recorded: whether it still needs copies. Repairs ask this
/// before ordering one, since the index may be a while behind after many changes.
pub(super) fn still_short(st: &mut State, h: ChunkHandle, now: Instant) -> bool {
    let tally = assess(st, &h, now);
    st.attention.set(h, tally);
    tally.is_some_and(|t| t.needs_copies())
}

/// How `h` stands now (`None`: no file references it).
fn assess(st: &State, h: &ChunkHandle, now: Instant) -> Option<Tally> {
    Some(assess_known(st, h, st.ns.chunk(h)?, now))
}

/// How `h`, which a file references as `meta` says, stands now: for passes over
/// the chunk table, which have `meta` at hand (looking it up again is a second
/// walk of the table and the file's inode, each likely a cache miss).
fn assess_known(st: &State, h: &ChunkHandle, meta: ChunkMeta, now: Instant) -> Tally {
    let chain = st.ns.open_chain(h);
    let (mut live, mut effective) = (0u16, 0u16);
    for id in st.map.live_holders(h, meta.version, now) {
        live = live.saturating_add(1);
        if st.counts(&id, h, chain) {
            effective = effective.saturating_add(1);
        }
    }
    Tally {
        live,
        effective,
        want: u16::try_from(meta.replication).unwrap_or(u16::MAX),
        open: chain.is_some(),
    }
}

/// The counts over the chunks after `after` in handle order, assessing at most
/// `limit` of them; and how many were assessed. For safe mode, before the index is
/// kept: see [`super::safe_mode`].
pub(super) fn counts_after(
    st: &State,
    after: Option<ChunkHandle>,
    limit: usize,
    now: Instant,
) -> (Counts, u64) {
    let mut c = Counts::default();
    let mut n = 0;
    for (h, meta) in st.ns.chunks_after(after).take(limit) {
        n += 1;
        c.add(&assess_known(st, &h, meta, now), true);
    }
    (c, n)
}

/// Chunks that still need a replica on a server being decommissioned (fewer
/// replicas in service than their replication, and more live ones): those the
/// index holds so, and those of the decommissioned servers it has yet to assess
/// (noted since the last round, or not reached yet by a catching-up sweep) that
/// need one now. Without the second part, `dfs status` right after `dfs
/// decommission` said `draining 0` until the next upkeep round, and an operator (or
/// a script) could take the server away before anything was copied. Time in
/// proportion to the chunks not settled and those the decommissioned servers hold:
/// callers ask only while a server is being decommissioned.
pub(super) fn draining(st: &State, now: Instant) -> HashSet<ChunkHandle> {
    let drains = |t: &Tally| t.effective < t.want && t.live > t.effective;
    let mut out: HashSet<ChunkHandle> = st
        .attention
        .unsettled
        .iter()
        .filter(|(_, t)| drains(t))
        .map(|(h, _)| *h)
        .collect();
    let sweep = &st.attention.sweep;
    let unassessed = |h: &ChunkHandle| {
        st.attention.noted.contains(h) || (sweep.catching_up && sweep.after.is_none_or(|a| *h > a))
    };
    for server in st.ns.decommissioned() {
        out.extend(
            st.map
                .chunks_of(server)
                .map(|(h, _)| *h)
                .filter(|h| unassessed(h) && assess(st, h, now).is_some_and(|t| drains(&t))),
        );
    }
    out
}

/// Brings the index up to date: the chunks that changed since the last round, then
/// a slice of the sweep, within [`ROUND_BUDGET`].
pub(super) fn refresh(st: &mut State, now: Instant) {
    let changes = st.map.take_changes(now);
    if changes.all {
        st.attention.catch_up();
    }
    // Servers that changed all at once (the first round after safe mode, many
    // registrations): too many chunks to note is known before noting any.
    let named: usize = changes
        .servers
        .iter()
        .map(|s| st.map.chunks_held(s))
        .fold(0, usize::saturating_add);
    if st.attention.noted.len().saturating_add(named) > MAX_NOTED {
        st.attention.catch_up();
    }
    for server in &changes.servers {
        st.attention.note_server(&st.map, server);
    }
    st.attention.note_all(changes.handles);

    // Noted chunks first: they are what changed.
    let batch: Vec<ChunkHandle> = st
        .attention
        .noted
        .iter()
        .take(ROUND_BUDGET)
        .copied()
        .collect();
    for h in &batch {
        st.attention.noted.remove(h);
    }
    if st.attention.noted.is_empty() && st.attention.noted.capacity() > 4096 {
        // A burst's table is not kept for ever.
        st.attention.noted = HashSet::new();
    }
    let mut verdicts: Vec<(ChunkHandle, Option<Tally>)> = batch
        .into_iter()
        .map(|h| (h, assess(st, &h, now)))
        .collect();

    // Then a slice of the sweep.
    let total = st.ns.chunk_count();
    let slice = if st.attention.sweep.catching_up {
        ROUND_BUDGET
            .saturating_sub(verdicts.len())
            .max(SWEEP_SLICE_MAX)
    } else {
        total.div_ceil(SWEEP_ROUNDS).clamp(1, SWEEP_SLICE_MAX)
    };
    let noted = verdicts.len();
    verdicts.extend(
        st.ns
            .chunks_after(st.attention.sweep.after)
            .take(slice)
            .map(|(h, meta)| (h, Some(assess_known(st, &h, meta, now)))),
    );
    let swept = verdicts.len() - noted;
    let sweep = &mut st.attention.sweep;
    if swept < slice {
        if sweep.catching_up {
            tracing::info!(chunks = total, "upkeep: every chunk assessed");
        }
        sweep.after = None;
        sweep.catching_up = false;
        sweep.passes += 1;
    } else {
        sweep.after = verdicts.last().map(|(h, _)| *h);
    }

    st.attention.last_assessed = verdicts.len();
    for (h, tally) in verdicts {
        if tally.is_some_and(|t| !t.open && t.effective >= t.want) {
            // Fully replicated again: a damaged replica it had is history.
            st.corrupt.remove(&h);
        }
        st.attention.set(h, tally);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u128) -> ChunkHandle {
        ChunkHandle(uuid::Uuid::from_u128(n))
    }

    fn tally(live: u16, effective: u16, want: u16) -> Option<Tally> {
        Some(Tally {
            live,
            effective,
            want,
            open: false,
        })
    }

    #[test]
    fn the_index_orders_by_fewest_replicas_and_forgets_what_recovered() {
        let mut a = Attention::default();
        a.set(h(1), tally(2, 2, 3));
        a.set(h(2), tally(1, 1, 3));
        a.set(h(3), tally(4, 4, 3));
        assert_eq!(a.short().collect::<Vec<_>>(), [h(2), h(1)]);
        assert_eq!(a.over().collect::<Vec<_>>(), [h(3)]);
        a.set(h(2), tally(2, 2, 3));
        assert_eq!(a.short().collect::<Vec<_>>(), [h(1), h(2)]);
        a.set(h(1), tally(3, 3, 3));
        a.set(h(3), None);
        assert_eq!(a.short().collect::<Vec<_>>(), [h(2)]);
        assert_eq!(a.over().count(), 0);
        assert_eq!(
            a.unsettled.len(),
            1,
            "settled and removed chunks are not kept"
        );
    }

    #[test]
    fn every_chunk_off_its_replication_is_kept_and_only_copyable_ones_are_repaired() {
        let mut a = Attention::default();
        a.set(h(1), tally(0, 0, 3)); // missing
        a.set(h(2), tally(1, 1, 3)); // under
        a.set(h(3), tally(3, 2, 3)); // one replica on a draining server
        a.set(h(4), tally(4, 4, 3)); // over
        a.set(h(5), tally(3, 3, 3)); // settled
        let open = Tally {
            live: 2,
            effective: 2,
            want: 3,
            open: true,
        };
        a.set(h(6), Some(open)); // counted, but left to its appenders
        assert_eq!(a.unsettled.len(), 5, "every chunk but the settled one");
        // A chunk with replicas only on draining servers is copied first; one with
        // none at all cannot be; an open one is not upkeep's.
        a.set(h(7), tally(2, 0, 3));
        assert_eq!(a.short().collect::<Vec<_>>(), [h(7), h(2), h(3)]);
        assert_eq!(a.over().collect::<Vec<_>>(), [h(4)]);
    }

    #[test]
    fn too_much_noted_turns_into_a_sweep_from_the_start() {
        let mut a = Attention::default();
        a.sweep.after = Some(h(5));
        a.note_all((0..10).map(h));
        assert_eq!(a.noted.len(), 10);
        a.noted.extend((100..100 + MAX_NOTED as u128).map(h));
        a.note_all([h(11)]);
        assert!(a.noted.is_empty());
        assert!(a.sweep.catching_up && a.sweep.after.is_none());
        assert!(!a.complete());
        // Nothing more is noted until the sweep moves: it reaches every chunk.
        a.note_all([h(12)]);
        assert!(a.noted.is_empty());
    }
}
