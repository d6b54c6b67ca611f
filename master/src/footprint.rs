//! Estimated bytes held by the master's in-memory structures, by structure: for
//! `/metrics` (`dfs_master_memory_bytes{structure}`), `dfs bench load`, and the
//! per-file figures in docs/scale.md.
//!
//! Estimates come from the types' sizes and the tables' capacities, so they cost
//! time in proportion to directories and servers, never to files or chunks. They
//! leave out the allocator's own overhead (a few bytes per allocation) and sled's
//! cache; the process's RSS less their sum is that, plus the runtime.

use std::mem::size_of;

/// One structure's estimate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    pub structure: &'static str,
    pub bytes: u64,
}

/// A swiss table's buckets for a given capacity (`HashMap::capacity`, which is 7/8
/// of the buckets from 8 up).
fn buckets(capacity: usize) -> usize {
    if capacity == 0 {
        0
    } else if capacity < 8 {
        (capacity + 1).next_power_of_two()
    } else {
        (capacity.saturating_mul(8) / 7).next_power_of_two()
    }
}

/// A `HashMap<K, V>` or `HashSet<K>` (`V = ()`) of this capacity: each bucket holds
/// one entry and one control byte, plus a control group of 16.
pub fn hash_table<K, V>(capacity: usize) -> u64 {
    let b = buckets(capacity);
    if b == 0 {
        return 0;
    }
    (b * (size_of::<(K, V)>() + 1) + 16) as u64
}

/// A `BTreeMap<K, V>` of `len` entries: nodes of 11, about two-thirds full once
/// filled in random order, and a header per node.
pub fn btree<K, V>(len: usize) -> u64 {
    let per_entry = size_of::<(K, V)>() as u64;
    (len as u64).saturating_mul(per_entry).saturating_mul(3) / 2
}

/// The heap of `Vec<T>`s holding `len` elements in all (built at their size).
pub fn vec_heap<T>(len: usize) -> u64 {
    (len as u64).saturating_mul(size_of::<T>() as u64)
}

/// The total of `parts`.
pub fn total(parts: &[Part]) -> u64 {
    parts.iter().map(|p| p.bytes).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn bucket_counts_follow_the_table() {
        for n in [0usize, 1, 3, 7, 8, 100, 1000, 100_000] {
            let mut m: HashMap<u64, u64> = HashMap::with_capacity(n);
            for i in 0..n as u64 {
                m.insert(i, i);
            }
            let b = buckets(m.capacity());
            // The table's own capacity is 7/8 of its buckets (all but one below 8).
            assert!(b == 0 || m.capacity() <= b, "{n}: {} in {b}", m.capacity());
            assert!(
                b == 0 || m.capacity() >= b * 7 / 8 - 1,
                "{n}: {} in {b}",
                m.capacity()
            );
        }
        assert_eq!(hash_table::<u64, u64>(0), 0);
        assert_eq!(hash_table::<u64, u64>(3), 4 * 17 + 16);
    }
}
