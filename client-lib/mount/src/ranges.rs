//! A set of byte ranges kept merged: the dirty ranges of a file being written.

use std::collections::BTreeMap;
use std::ops::Range;

/// Disjoint, non-adjacent ranges, by start.
#[derive(Debug, Default, Clone)]
pub struct RangeSet {
    by_start: BTreeMap<u64, u64>,
}

impl RangeSet {
    pub fn is_empty(&self) -> bool {
        self.by_start.is_empty()
    }

    pub fn clear(&mut self) {
        self.by_start.clear();
    }

    /// Adds `r`, merging it with every range it overlaps or touches.
    pub fn insert(&mut self, r: Range<u64>) {
        if r.start >= r.end {
            return;
        }
        let (mut start, mut end) = (r.start, r.end);
        // The range starting at or before `start` may reach it.
        if let Some((&s, &e)) = self.by_start.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
            }
        }
        let swallowed: Vec<u64> = self.by_start.range(start..=end).map(|(&s, _)| s).collect();
        for s in swallowed {
            if let Some(e) = self.by_start.remove(&s) {
                end = end.max(e);
            }
        }
        self.by_start.insert(start, end);
    }

    /// Drops everything at or past `at`.
    pub fn cut(&mut self, at: u64) {
        let beyond: Vec<u64> = self.by_start.range(at..).map(|(&s, _)| s).collect();
        for s in beyond {
            self.by_start.remove(&s);
        }
        if let Some((_, e)) = self.by_start.range_mut(..at).next_back() {
            *e = (*e).min(at);
        }
    }

    /// The parts of the set inside `window`, in order.
    pub fn within(&self, window: Range<u64>) -> Vec<Range<u64>> {
        let mut out = Vec::new();
        let first = self
            .by_start
            .range(..=window.start)
            .next_back()
            .map_or(window.start, |(&s, _)| s);
        for (&s, &e) in self.by_start.range(first..window.end) {
            let (lo, hi) = (s.max(window.start), e.min(window.end));
            if lo < hi {
                out.push(lo..hi);
            }
        }
        out
    }

    pub fn to_vec(&self) -> Vec<Range<u64>> {
        self.by_start.iter().map(|(&s, &e)| s..e).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_overlapping_and_touching_ranges() {
        let mut r = RangeSet::default();
        r.insert(10..20);
        r.insert(30..40);
        r.insert(20..25);
        assert_eq!(r.to_vec(), vec![10..25, 30..40]);
        r.insert(5..35);
        assert_eq!(r.to_vec(), vec![5..40]);
        r.insert(50..50);
        assert_eq!(r.to_vec(), vec![5..40]);
    }

    #[test]
    fn cut_and_within() {
        let mut r = RangeSet::default();
        r.insert(0..10);
        r.insert(20..30);
        r.insert(40..50);
        assert_eq!(r.within(5..25), vec![5..10, 20..25]);
        assert_eq!(r.within(10..20), Vec::<Range<u64>>::new());
        r.cut(25);
        assert_eq!(r.to_vec(), vec![0..10, 20..25]);
        r.cut(0);
        assert!(r.is_empty());
    }
}
