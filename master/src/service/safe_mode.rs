//! Leaving safe mode: once every chunk a file references has a live replica, or at
//! the deadline.
//!
//! The check rolls over the chunk table in handle order, a slice a round, and stops
//! at the first chunk still without a live replica; the next round starts there. So
//! a round costs at most [`SLICE`] lookups however large the table, where a whole
//! pass at 10 million chunks held the state lock for seconds every round near the
//! end of a restart.
//!
//! `dfs status` in safe mode counts the chunks the check has not yet passed, at
//! most [`STATUS_WALK`] of them one by one, and the rest as under-replicated but
//! not missing (nothing says they lack a replica, and a false "missing" alarms
//! operators): the chunks it passed have a replica, and how many more they lack
//! shows once upkeep's index takes over at the end of safe mode.
//!
//! A server that dies while the check is under way may take the only replica of a
//! chunk already passed. Safe mode then ends with that chunk missing, as it would
//! had the server died just after: upkeep's index finds it, and `dfs status` and
//! fsck say so.

use std::time::Instant;

use dfs_protocol::ChunkHandle;

use crate::chunkmap::ChunkMap;
use crate::namespace::Namespace;

/// Chunks looked at per round at most.
const SLICE: usize = 100_000;
/// Chunks `dfs status` assesses in safe mode at most.
pub(super) const STATUS_WALK: usize = 100_000;

#[derive(Debug)]
pub(super) struct SafeMode {
    until: Instant,
    /// Chunks up to and including this one had a live replica when looked at.
    after: Option<ChunkHandle>,
    /// How many chunks that is.
    confirmed: u64,
}

impl SafeMode {
    pub(super) fn until(until: Instant) -> SafeMode {
        SafeMode {
            until,
            after: None,
            confirmed: 0,
        }
    }

    /// Carries the check on; whether safe mode ends now, and whether by the deadline.
    pub(super) fn check(&mut self, ns: &Namespace, map: &ChunkMap, now: Instant) -> Option<bool> {
        if now >= self.until {
            return Some(true);
        }
        for (looked, (h, meta)) in ns.chunks_after(self.after).enumerate() {
            if looked >= SLICE || !map.has_replica(h, meta.version, now) {
                return None;
            }
            self.after = Some(*h);
            self.confirmed += 1;
        }
        Some(false)
    }

    /// Where the check carries on: the chunks after this one are not yet confirmed.
    pub(super) fn position(&self) -> Option<ChunkHandle> {
        self.after
    }

    /// Chunks not yet seen with a live replica.
    pub(super) fn unconfirmed(&self, ns: &Namespace) -> u64 {
        (ns.chunk_count() as u64).saturating_sub(self.confirmed)
    }
}
