//! Chunkservers this client failed to reach lately.
//!
//! A partitioned server answers nothing, so each exchange with it costs a whole
//! timeout. Without a memory of it, a put would pay that again for every chunk
//! whose chain the master happens to head with that server, and a get for every
//! range it asks of it first. A suspect is moved to the end instead: last in a
//! write chain (the head forwards to it, which may still work, since a partition
//! can cut the client off and leave the servers connected) and tried last for
//! reads. Suspicion lapses after a while, or when the server answers again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a failure keeps a server at the back.
const SUSPECT_FOR: Duration = Duration::from_secs(30);

/// Servers remembered at most; the oldest is forgotten first.
const MAX_SUSPECTS: usize = 1024;

#[derive(Debug, Default)]
pub(crate) struct Suspects(Mutex<HashMap<String, Instant>>);

impl Suspects {
    /// `addr` did not answer, or broke the exchange.
    pub(crate) fn note(&self, addr: &str) {
        let mut map = self.lock();
        let now = Instant::now();
        map.retain(|_, at| now.duration_since(*at) < SUSPECT_FOR);
        if map.len() >= MAX_SUSPECTS && !map.contains_key(addr) {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(a, _)| a.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(addr.to_string(), now);
    }

    /// `addr` answered.
    pub(crate) fn clear(&self, addr: &str) {
        let mut map = self.lock();
        if !map.is_empty() {
            map.remove(addr);
        }
    }

    /// Moves the suspects among `addrs` to the end, keeping the order otherwise.
    pub(crate) fn last(&self, addrs: &mut [String]) {
        let map = self.lock();
        if map.is_empty() {
            return;
        }
        let now = Instant::now();
        let suspect = |a: &String| {
            map.get(a)
                .is_some_and(|at| now.duration_since(*at) < SUSPECT_FOR)
        };
        // A stable sort on one bit: the trusted keep their order, then the suspects.
        addrs.sort_by_key(suspect);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        // The map holds no invariant a panic could break halfway.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn suspects_go_last_in_their_order_and_answering_clears_them() {
        let s = Suspects::default();
        let mut chain = addrs(&["a", "b", "c", "d"]);
        s.last(&mut chain);
        assert_eq!(chain, addrs(&["a", "b", "c", "d"]));
        s.note("a");
        s.note("c");
        s.last(&mut chain);
        assert_eq!(chain, addrs(&["b", "d", "a", "c"]));
        s.clear("a");
        let mut chain = addrs(&["a", "b", "c"]);
        s.last(&mut chain);
        assert_eq!(chain, addrs(&["a", "b", "c"]));
        let mut chain = addrs(&["c", "a", "b"]);
        s.last(&mut chain);
        assert_eq!(chain, addrs(&["a", "b", "c"]));
    }

    #[test]
    fn memory_is_bounded() {
        let s = Suspects::default();
        for i in 0..MAX_SUSPECTS + 10 {
            s.note(&format!("10.0.0.{i}:7071"));
        }
        assert_eq!(s.lock().len(), MAX_SUSPECTS);
    }
}
