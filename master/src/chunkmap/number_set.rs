//! A set of record numbers: the chunks one server holds.
//!
//! A `HashSet<u32>` costs 5 bytes a bucket and keeps up to half its buckets empty:
//! about 6.5 bytes a chunk on each of its servers, 20 a file at replication 3. Here
//! numbers are split into pages of 65,536 by their high half. A page keeps the low
//! halves of its numbers in a sorted array (2 bytes each) while it holds at most
//! 4,096 of them, and a bitmap of 8 KiB beyond that, which is smaller then. A
//! server of a large cluster holds a few hundred numbers of each page; a server of
//! a small one nearly all of them, at a bit each.
//!
//! An insertion into an array moves at most 8 KiB; numbers added in order (a
//! registration sorts them first) are only appended.

/// Numbers per page: one per value of the low half.
const SPAN: usize = 1 << 16;
/// An array page that grows past this many numbers becomes a bitmap, which costs
/// the same 8 KiB; a bitmap that falls to half of it becomes an array again.
const ARRAY_MAX: usize = 4096;
const WORDS: usize = SPAN / 64;

#[derive(Debug)]
enum Page {
    /// The low halves, sorted.
    Array(Vec<u16>),
    /// One bit per low half, and how many are set.
    Bits(Box<[u64; WORDS]>, u32),
}

impl Default for Page {
    fn default() -> Self {
        Page::Array(Vec::new())
    }
}

fn split(n: u32) -> (usize, u16) {
    ((n >> 16) as usize, n as u16)
}

fn bit(low: u16) -> (usize, u64) {
    (usize::from(low) / 64, 1u64 << (low % 64))
}

impl Page {
    fn len(&self) -> usize {
        match self {
            Page::Array(v) => v.len(),
            Page::Bits(_, count) => *count as usize,
        }
    }

    fn contains(&self, low: u16) -> bool {
        match self {
            Page::Array(v) => v.binary_search(&low).is_ok(),
            Page::Bits(bits, _) => {
                let (w, b) = bit(low);
                bits.get(w).is_some_and(|x| x & b != 0)
            }
        }
    }

    fn insert(&mut self, low: u16) -> bool {
        match self {
            Page::Array(v) => {
                let Err(at) = v.binary_search(&low) else {
                    return false;
                };
                v.insert(at, low);
                if v.len() > ARRAY_MAX {
                    *self = Page::Bits(to_bits(v), v.len() as u32);
                }
                true
            }
            Page::Bits(bits, count) => {
                let (w, b) = bit(low);
                match bits.get_mut(w) {
                    Some(x) if *x & b == 0 => {
                        *x |= b;
                        *count += 1;
                        true
                    }
                    _ => false,
                }
            }
        }
    }

    fn remove(&mut self, low: u16) -> bool {
        match self {
            Page::Array(v) => {
                let Ok(at) = v.binary_search(&low) else {
                    return false;
                };
                v.remove(at);
                // Give back what a page that emptied (or mostly) holds.
                if v.capacity() > 2 * v.len() + 16 {
                    v.shrink_to(v.len() + v.len() / 4);
                }
                true
            }
            Page::Bits(bits, count) => {
                let (w, b) = bit(low);
                match bits.get_mut(w) {
                    Some(x) if *x & b != 0 => {
                        *x &= !b;
                        *count -= 1;
                        if (*count as usize) <= ARRAY_MAX / 2 {
                            let lows: Vec<u16> = set_bits(bits).collect();
                            *self = Page::Array(lows);
                        }
                        true
                    }
                    _ => false,
                }
            }
        }
    }

    /// The low halves, in order.
    fn lows(&self) -> Box<dyn Iterator<Item = u16> + '_> {
        match self {
            Page::Array(v) => Box::new(v.iter().copied()),
            Page::Bits(bits, _) => Box::new(set_bits(bits)),
        }
    }

    /// Heap bytes, with a malloc header each.
    fn heap(&self) -> usize {
        match self {
            Page::Array(v) if v.capacity() == 0 => 0,
            Page::Array(v) => v.capacity() * 2 + 16,
            Page::Bits(..) => WORDS * 8 + 16,
        }
    }
}

/// The low halves whose bits are set, in order.
fn set_bits(bits: &[u64; WORDS]) -> impl Iterator<Item = u16> + '_ {
    bits.iter().enumerate().flat_map(|(w, &x)| {
        (0..64u16)
            .filter(move |i| x >> i & 1 == 1)
            .map(move |i| (w as u16) * 64 + i)
    })
}

fn to_bits(lows: &[u16]) -> Box<[u64; WORDS]> {
    let mut bits = Box::new([0u64; WORDS]);
    for &low in lows {
        let (w, b) = bit(low);
        if let Some(x) = bits.get_mut(w) {
            *x |= b;
        }
    }
    bits
}

#[derive(Debug, Default)]
pub(super) struct NumberSet {
    /// By the numbers' high halves.
    pages: Vec<Page>,
    len: usize,
}

impl NumberSet {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn contains(&self, n: u32) -> bool {
        let (high, low) = split(n);
        self.pages.get(high).is_some_and(|p| p.contains(low))
    }

    /// Adds `n`; whether it was new.
    pub(super) fn insert(&mut self, n: u32) -> bool {
        let (high, low) = split(n);
        if high >= self.pages.len() {
            self.pages.resize_with(high + 1, Page::default);
        }
        let added = self.pages.get_mut(high).is_some_and(|p| p.insert(low));
        if added {
            self.len += 1;
        }
        added
    }

    /// Takes `n` out; whether it was there.
    pub(super) fn remove(&mut self, n: u32) -> bool {
        let (high, low) = split(n);
        let removed = self.pages.get_mut(high).is_some_and(|p| p.remove(low));
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Every number, in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.pages
            .iter()
            .enumerate()
            .filter(|(_, p)| p.len() > 0)
            .flat_map(|(high, p)| {
                p.lows()
                    .map(move |low| (high as u32) << 16 | u32::from(low))
            })
    }

    /// Estimated bytes (see [`crate::footprint`]).
    pub(super) fn footprint(&self) -> u64 {
        let pages = self.pages.capacity() * std::mem::size_of::<Page>();
        (pages + self.pages.iter().map(Page::heap).sum::<usize>()) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Against a `BTreeSet`, through pages that become bitmaps and arrays again.
    #[test]
    fn matches_a_btreeset_through_arrays_and_bitmaps() {
        let mut set = NumberSet::default();
        let mut model = BTreeSet::new();
        // A pseudo-random walk over three pages, dense enough in one of them to
        // turn it into a bitmap, then thinned out to turn it back.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..40_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let page = (x % 3) as u32;
            let span = if page == 1 { 9000 } else { 65536 };
            let low = ((x >> 8) % span) as u32;
            let n = page << 16 | low;
            let remove = round >= 30_000 || (x >> 40).is_multiple_of(5);
            if remove {
                assert_eq!(set.remove(n), model.remove(&n), "remove {n}");
            } else {
                assert_eq!(set.insert(n), model.insert(n), "insert {n}");
            }
            assert_eq!(set.contains(n), model.contains(&n));
            assert_eq!(set.len(), model.len());
        }
        assert!(set.iter().eq(model.iter().copied()));
        // The page that went past ARRAY_MAX was a bitmap; removals took most of its
        // numbers away again.
        for n in model.clone() {
            assert!(set.remove(n));
        }
        assert_eq!(set.len(), 0);
        assert_eq!(set.iter().count(), 0);
        assert!(!set.remove(5));
    }

    #[test]
    fn a_dense_page_is_a_bitmap_and_costs_a_bit_a_number() {
        let mut set = NumberSet::default();
        for n in 0..SPAN as u32 {
            assert!(set.insert(n));
        }
        assert!(matches!(set.pages.first(), Some(Page::Bits(_, c)) if *c as usize == SPAN));
        assert!(set.footprint() < 9 * 1024);
        assert!(set.iter().eq(0..SPAN as u32));
        for n in 0..(SPAN as u32 - 100) {
            assert!(set.remove(n));
        }
        assert!(matches!(set.pages.first(), Some(Page::Array(v)) if v.len() == 100));
        assert!(set.iter().eq(SPAN as u32 - 100..SPAN as u32));
        assert!(set.footprint() < 1024);
    }
}
