//! The namespace's inodes by number, in pages of 64 consecutive numbers.
//!
//! Inode numbers are handed out in order, so live inodes sit close together. A hash
//! table keyed by number paid for the key, a control byte and, at 10 million
//! inodes, 40% empty buckets: 95 bytes for a 56-byte inode. A page here is a bitmap
//! of which of its 64 numbers are live and a vector of just those inodes, in number
//! order, so a full page costs the inodes and about a byte each besides. A page
//! that empties is dropped, and one mostly emptied gives its spare room back, so a
//! file that outlives its neighbours costs at most about a page header more.

use std::collections::HashMap;

use crate::store::Inode;

/// Numbers per page: one bit each in the page's bitmap.
const PAGE: u64 = 64;

#[derive(Debug, Default)]
struct Page {
    /// Bit `n` is set when number `page * 64 + n` is live.
    present: u64,
    /// The live inodes, in number order.
    inodes: Vec<Inode>,
}

impl Page {
    /// Where slot `slot`'s inode is (or would go) in `inodes`.
    fn rank(&self, slot: u32) -> usize {
        let below = (1u64 << slot) - 1;
        (self.present & below).count_ones() as usize
    }

    fn has(&self, slot: u32) -> bool {
        self.present >> slot & 1 == 1
    }
}

fn split(ino: u64) -> (u64, u32) {
    // The remainder of a division by 64 always fits.
    (ino / PAGE, (ino % PAGE) as u32)
}

#[derive(Debug, Default)]
pub struct InodeTable {
    pages: HashMap<u64, Page>,
}

impl InodeTable {
    pub fn get(&self, ino: &u64) -> Option<&Inode> {
        let (page, slot) = split(*ino);
        let p = self.pages.get(&page)?;
        if !p.has(slot) {
            return None;
        }
        p.inodes.get(p.rank(slot))
    }

    pub fn get_mut(&mut self, ino: &u64) -> Option<&mut Inode> {
        let (page, slot) = split(*ino);
        let p = self.pages.get_mut(&page)?;
        if !p.has(slot) {
            return None;
        }
        let at = p.rank(slot);
        p.inodes.get_mut(at)
    }

    /// Sets `ino`'s inode; returns the one it replaced.
    pub fn insert(&mut self, ino: u64, inode: Inode) -> Option<Inode> {
        let (page, slot) = split(ino);
        let p = self.pages.entry(page).or_default();
        let at = p.rank(slot);
        if p.has(slot) {
            return p
                .inodes
                .get_mut(at)
                .map(|old| std::mem::replace(old, inode));
        }
        p.present |= 1 << slot;
        p.inodes.insert(at, inode);
        None
    }

    pub fn remove(&mut self, ino: &u64) -> Option<Inode> {
        let (page, slot) = split(*ino);
        let p = self.pages.get_mut(&page)?;
        if !p.has(slot) {
            return None;
        }
        let at = p.rank(slot);
        let inode = p.inodes.remove(at);
        p.present &= !(1 << slot);
        if p.present == 0 {
            self.pages.remove(&page);
        } else if p.inodes.capacity() >= 16 && p.inodes.len() * 4 <= p.inodes.capacity() {
            let keep = p.inodes.len() * 2;
            p.inodes.shrink_to(keep);
        }
        Some(inode)
    }

    /// Every inode with its number, pages in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Inode)> + '_ {
        self.pages.iter().flat_map(|(page, p)| {
            (0..PAGE as u32)
                .filter(|slot| p.has(*slot))
                .zip(p.inodes.iter())
                .map(move |(slot, inode)| (page * PAGE + u64::from(slot), inode))
        })
    }

    /// Estimated bytes held, for `/metrics`: the page table and every page's room.
    pub fn footprint(&self) -> u64 {
        let rooms: usize = self.pages.values().map(|p| p.inodes.capacity()).sum();
        crate::footprint::hash_table::<u64, Page>(self.pages.capacity())
            + crate::footprint::vec_heap::<Inode>(rooms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ChunkList;
    use dfs_protocol::FileKind;
    use std::collections::BTreeMap;

    fn inode(size: u64) -> Inode {
        Inode {
            kind: FileKind::File,
            size,
            replication: 3,
            mtime: 0,
            chunks: ChunkList::default(),
        }
    }

    /// A pseudo-random walk of inserts and removals over a few pages, checked
    /// against a map after every step.
    #[test]
    fn agrees_with_a_map() {
        let mut table = InodeTable::default();
        let mut model: BTreeMap<u64, Inode> = BTreeMap::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for step in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let ino = x % 300;
            if x.is_multiple_of(3) {
                assert_eq!(table.remove(&ino), model.remove(&ino), "step {step}");
            } else {
                assert_eq!(
                    table.insert(ino, inode(step)),
                    model.insert(ino, inode(step)),
                    "step {step}"
                );
            }
            assert_eq!(table.get(&ino), model.get(&ino));
        }
        let mut all: Vec<(u64, Inode)> = table.iter().map(|(i, n)| (i, n.clone())).collect();
        all.sort_by_key(|(i, _)| *i);
        let want: Vec<(u64, Inode)> = model.into_iter().collect();
        assert_eq!(all, want);
    }

    #[test]
    fn an_emptied_page_is_dropped_and_a_thinned_one_shrinks() {
        let mut table = InodeTable::default();
        for ino in 0..128 {
            table.insert(ino, inode(ino));
        }
        assert_eq!(table.pages.len(), 2);
        for ino in 0..64 {
            table.remove(&ino);
        }
        assert_eq!(table.pages.len(), 1, "the empty page is gone");
        for ino in 64..124 {
            table.remove(&ino);
        }
        let p = table.pages.get(&1).expect("the second page");
        assert_eq!(p.inodes.len(), 4);
        assert!(p.inodes.capacity() <= 16, "{}", p.inodes.capacity());
        if let Some(i) = table.get_mut(&127) {
            i.size = 7;
        }
        assert_eq!(table.get(&127).map(|i| i.size), Some(7));
        assert!(table.get(&63).is_none() && table.get(&(1 << 40)).is_none());
    }

    #[test]
    fn numbers_far_apart_cost_a_page_each() {
        let mut table = InodeTable::default();
        for ino in [0, u64::MAX, 1 << 63, 12345] {
            table.insert(ino, inode(ino));
        }
        assert_eq!(table.iter().count(), 4);
        assert_eq!(table.get(&u64::MAX).map(|i| i.size), Some(u64::MAX));
        assert_eq!(table.pages.len(), 4);
    }
}
