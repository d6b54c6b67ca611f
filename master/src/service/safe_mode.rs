//! Leaving safe mode: once every chunk a file references has a live replica, or at
//! the deadline once chunkservers have stopped registering.
//!
//! The deadline (`--safe-start`) waits for registrations to go quiet: it passes
//! only when no chunkserver has registered for [`QUIET`] (or the whole
//! `--safe-start`, if shorter), and in any case at ten times `--safe-start`. At
//! 10 million chunks on 300 servers, registrations take about a minute; with a
//! fixed deadline of 30 s, safe mode ended while half the servers had yet to
//! report, and upkeep ordered copies of chunks whose holders were still on their
//! way. (HDFS's safe-mode extension does the like after its threshold is reached.)
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

use std::time::{Duration, Instant};

use dfs_protocol::ChunkHandle;

use crate::chunkmap::ChunkMap;
use crate::namespace::Namespace;

/// How long registrations must have stopped for the deadline to pass.
pub(super) const QUIET: Duration = Duration::from_secs(10);
/// The deadline waits for quiet at most this many times `--safe-start`.
const MAX_WAIT: u32 = 10;

/// Chunks looked at per round at most.
const SLICE: usize = 100_000;
/// Chunks `dfs status` assesses in safe mode at most.
pub(super) const STATUS_WALK: usize = 100_000;

#[derive(Debug)]
pub(super) struct SafeMode {
    until: Instant,
    /// Registrations must have been quiet for this long for `until` to pass.
    quiet: Duration,
    /// When safe mode ends whatever registers.
    at_most: Instant,
    /// The latest chunkserver registration.
    registered: Option<Instant>,
    /// Chunks up to and including this one had a live replica when looked at.
    after: Option<ChunkHandle>,
    /// How many chunks that is.
    confirmed: u64,
}

impl SafeMode {
    /// Safe mode from `start` for `wait` (`--safe-start`), longer while
    /// chunkservers are still registering.
    pub(super) fn new(start: Instant, wait: Duration) -> SafeMode {
        SafeMode {
            until: start + wait,
            quiet: QUIET.min(wait),
            at_most: start + wait.saturating_mul(MAX_WAIT),
            registered: None,
            after: None,
            confirmed: 0,
        }
    }

    /// A chunkserver registered: the deadline waits until registrations go quiet.
    pub(super) fn registered(&mut self, now: Instant) {
        self.registered = Some(now);
    }

    /// Whether the deadline has passed: `--safe-start`, with registrations quiet.
    fn timed_out(&self, now: Instant) -> bool {
        let quiet = self
            .registered
            .is_none_or(|t| now.saturating_duration_since(t) >= self.quiet);
        now >= self.at_most || (now >= self.until && quiet)
    }

    /// Carries the check on; whether safe mode ends now, and whether by the deadline.
    pub(super) fn check(&mut self, ns: &Namespace, map: &ChunkMap, now: Instant) -> Option<bool> {
        if self.timed_out(now) {
            return Some(true);
        }
        for (looked, (h, meta)) in ns.chunks_after(self.after).enumerate() {
            if looked >= SLICE || !map.has_replica(&h, meta.version, now) {
                return None;
            }
            self.after = Some(h);
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
