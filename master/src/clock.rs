//! The master's clock, one per master, that tests can drive.
//!
//! Two readings:
//! - [`Clock::now`]: monotonic, for liveness, leases, safe mode and timeouts.
//! - [`Clock::secs`]: cluster seconds, for trash and upload expiry and file times.
//!   They start at the wall clock (or at the last floor logged, if that is later) and
//!   then advance only with monotonic time. A wall clock stepped forward while the
//!   master runs therefore purges no trash and aborts no upload, and one stepped back
//!   across a restart never takes file times back. The master logs a floor every
//!   minute, and on restart starts no lower than the last one.
//!
//! A manual clock (`Clock::manual`) moves only when a test says so: `advance` moves
//! both readings, `step_wall` moves only the wall clock it reads at start.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug)]
enum Source {
    System,
    /// Shared by every master started on this clock, so a test drives them all.
    Manual(Arc<Mutex<Manual>>),
}

#[derive(Debug, Clone, Copy)]
struct Manual {
    elapsed: Duration,
    wall: u64,
}

#[derive(Debug)]
struct Inner {
    source: Source,
    /// `now()` at zero elapsed time.
    base: Instant,
    /// Cluster seconds at zero elapsed time: raised by floors, never lowered.
    origin: AtomicU64,
}

/// A shared handle on one clock; clones read the same time.
#[derive(Debug, Clone)]
pub struct Clock {
    inner: Arc<Inner>,
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

fn wall_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Clock {
    /// The machine's clocks.
    pub fn system() -> Clock {
        Clock {
            inner: Arc::new(Inner {
                source: Source::System,
                base: Instant::now(),
                origin: AtomicU64::new(wall_secs()),
            }),
        }
    }

    /// A clock that stands still until `advance`d, starting at `wall` Unix seconds.
    pub fn manual(wall: u64) -> Clock {
        Clock {
            inner: Arc::new(Inner {
                source: Source::Manual(Arc::new(Mutex::new(Manual {
                    elapsed: Duration::ZERO,
                    wall,
                }))),
                base: Instant::now(),
                origin: AtomicU64::new(wall),
            }),
        }
    }

    fn manual_state(&self) -> Option<std::sync::MutexGuard<'_, Manual>> {
        match &self.inner.source {
            Source::System => None,
            Source::Manual(m) => Some(m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)),
        }
    }

    fn elapsed(&self) -> Duration {
        match self.manual_state() {
            Some(m) => m.elapsed,
            None => self.inner.base.elapsed(),
        }
    }

    /// Monotonic time.
    pub fn now(&self) -> Instant {
        self.inner.base + self.elapsed()
    }

    /// Cluster seconds (see the module docs).
    pub fn secs(&self) -> u64 {
        self.inner
            .origin
            .load(Ordering::Relaxed)
            .saturating_add(self.elapsed().as_secs())
    }

    /// What the wall clock reads now (a manual clock's own wall clock).
    pub fn wall(&self) -> u64 {
        match self.manual_state() {
            Some(m) => m.wall,
            None => wall_secs(),
        }
    }

    /// Makes cluster seconds no lower than `floor` (a floor logged before a restart).
    pub fn raise_floor(&self, floor: u64) {
        let elapsed = self.elapsed().as_secs();
        self.inner
            .origin
            .fetch_max(floor.saturating_sub(elapsed), Ordering::Relaxed);
    }

    /// A manual clock: `d` passes for both readings. Does nothing to a system clock.
    pub fn advance(&self, d: Duration) {
        if let Some(mut m) = self.manual_state() {
            m.elapsed += d;
            m.wall = m.wall.saturating_add(d.as_secs());
        }
    }

    /// A manual clock: the wall clock is stepped by `secs` (an NTP step, a wrong
    /// clock set by hand); monotonic time does not move. Does nothing to a system clock.
    pub fn step_wall(&self, secs: i64) {
        if let Some(mut m) = self.manual_state() {
            m.wall = m.wall.saturating_add_signed(secs);
        }
    }

    /// The clock a (re)started master reads: cluster seconds start again from the
    /// wall clock, as after a real restart. A manual clock stays driven by the same
    /// test; a system clock starts afresh.
    pub fn restarted(&self) -> Clock {
        match &self.inner.source {
            Source::System => Clock::system(),
            Source::Manual(shared) => {
                let m = *shared
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                Clock {
                    inner: Arc::new(Inner {
                        source: Source::Manual(shared.clone()),
                        base: self.inner.base,
                        origin: AtomicU64::new(m.wall.saturating_sub(m.elapsed.as_secs())),
                    }),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wall_step_moves_no_cluster_second() {
        let c = Clock::manual(1_000_000);
        let t0 = c.now();
        c.step_wall(10 * 86_400);
        assert_eq!(c.secs(), 1_000_000);
        assert_eq!(c.now(), t0);
        c.advance(Duration::from_secs(5));
        assert_eq!(c.secs(), 1_000_005);
        assert_eq!(c.now(), t0 + Duration::from_secs(5));
    }

    #[test]
    fn a_floor_keeps_time_from_going_back() {
        let c = Clock::manual(500);
        c.raise_floor(2_000);
        assert_eq!(c.secs(), 2_000);
        c.raise_floor(10);
        assert_eq!(c.secs(), 2_000);
        c.advance(Duration::from_secs(3));
        assert_eq!(c.secs(), 2_003);
    }

    #[test]
    fn a_restart_reads_the_wall_clock_and_stays_driven() {
        let c = Clock::manual(1_000);
        c.step_wall(50);
        let r = c.restarted();
        assert_eq!(r.secs(), 1_050);
        c.advance(Duration::from_secs(2));
        assert_eq!(r.secs(), 1_052);
        assert_eq!(r.now(), c.now());
    }
}
