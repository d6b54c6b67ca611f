//! Which file holds each chunk, and where in its list: the chunk table.
//!
//! Chunk reports, upkeep and every chunk mutation look a chunk up by its handle.
//! A `BTreeMap` of the 16-byte handle to a 12-byte place cost 29.8 bytes a chunk at
//! 10 million (heaptrack). Handles are random (v4), so their first eight bytes
//! already tell chunks apart, and the file's own list holds the whole handle. Most
//! chunks are kept here as the handle's first eight bytes and the place packed into
//! eight more (the inode number in 48 bits, the index in the list in 16): 16 bytes
//! an entry, about 17 a chunk in a B-tree.
//!
//! A lookup compares the whole handle with the one in the file's list, so it never
//! answers for another chunk. What needs care is keeping the table right as files
//! change: two live chunks whose handles begin alike (at 10 million chunks, about
//! one chance in 300,000) cannot share an entry. Every chunk whose prefix another
//! chunk holds, and every chunk whose place does not fit in eight bytes (an inode
//! number past 2^48, an index past 65,534), is kept whole in a second map. Which
//! chunk owns a prefix entry is always read from the files' lists, so the table is
//! changed only after the inode it describes (see the parent module's `apply`).

use std::collections::BTreeMap;
use std::ops::Bound;

use dfs_protocol::ChunkHandle;

use super::inode_table::InodeTable;
use crate::store::StoredChunk;

/// Where a chunk is: its file and its index in the file's list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkAt {
    pub ino: u64,
    pub index: usize,
}

/// Bits of a packed place that hold the index.
const INDEX_BITS: u32 = 16;
/// The largest index a packed place holds.
const MAX_INDEX: u64 = (1 << INDEX_BITS) - 2;
/// The largest inode number a packed place holds.
const MAX_INO: u64 = (1 << (64 - INDEX_BITS)) - 1;

fn prefix(handle: &ChunkHandle) -> u64 {
    let b = handle.0.as_bytes();
    u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

fn pack(at: ChunkAt) -> Option<u64> {
    let index = u64::try_from(at.index).ok().filter(|i| *i <= MAX_INDEX)?;
    (at.ino <= MAX_INO).then_some(at.ino << INDEX_BITS | index)
}

fn unpack(packed: u64) -> ChunkAt {
    ChunkAt {
        ino: packed >> INDEX_BITS,
        // At most 2^16 - 2, which fits any usize.
        index: (packed & ((1 << INDEX_BITS) - 1)) as usize,
    }
}

/// A chunk found in its file: where, its entry, and the file's replication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    pub at: ChunkAt,
    pub chunk: StoredChunk,
    pub replication: u32,
}

/// The chunk of file `ino` whose handle satisfies `is`: looked for at `index`
/// first, where the table last saw it, then in the whole list (every change to a
/// list puts its chunks' places again, so the scan is a safety net).
fn chunk_in(
    inodes: &InodeTable,
    ino: u64,
    index: usize,
    is: impl Fn(&ChunkHandle) -> bool,
) -> Option<Found> {
    let inode = inodes.get(&ino)?;
    let index = match inode.chunks.get(index) {
        Some(c) if is(&c.handle) => index,
        _ => inode.chunks.iter().position(|c| is(&c.handle))?,
    };
    Some(Found {
        at: ChunkAt { ino, index },
        chunk: *inode.chunks.get(index)?,
        replication: inode.replication,
    })
}

/// Whether file `ino` has a chunk whose handle begins with `p`.
fn has_prefix(inodes: &InodeTable, ino: u64, p: u64) -> bool {
    inodes
        .get(&ino)
        .is_some_and(|inode| inode.chunks.iter().any(|c| prefix(&c.handle) == p))
}

#[derive(Debug, Default)]
pub struct ChunkTable {
    /// Most chunks: the handle's first eight bytes to the packed place.
    narrow: BTreeMap<u64, u64>,
    /// Chunks whose prefix another live chunk holds, or whose place does not pack.
    wide: BTreeMap<ChunkHandle, ChunkAt>,
}

impl ChunkTable {
    /// The table of `entries`: every chunk of every file, with its place.
    pub fn build(mut entries: Vec<(ChunkHandle, ChunkAt)>) -> ChunkTable {
        // Sorted, a B-tree is built in one linear pass into full nodes: inserting
        // 10 million random handles one by one took some 30 s of a restart.
        entries.sort_unstable_by_key(|(h, _)| *h);
        let mut wide = BTreeMap::new();
        let mut narrow = Vec::with_capacity(entries.len());
        let mut i = 0;
        while let Some((first, _)) = entries.get(i) {
            let p = prefix(first);
            let run = entries[i..]
                .iter()
                .take_while(|(h, _)| prefix(h) == p)
                .count();
            let alike = &entries[i..i + run];
            match alike {
                [(_, at)] if let Some(packed) = pack(*at) => narrow.push((p, packed)),
                _ => wide.extend(alike.iter().copied()),
            }
            i += run;
        }
        ChunkTable {
            narrow: narrow.into_iter().collect(),
            wide,
        }
    }

    pub fn len(&self) -> usize {
        self.narrow.len() + self.wide.len()
    }

    /// Where chunk `handle` is, if a file holds it.
    pub fn get(&self, inodes: &InodeTable, handle: &ChunkHandle) -> Option<Found> {
        if let Some(at) = self.narrow.get(&prefix(handle)).map(|p| unpack(*p)) {
            if let Some(found) = chunk_in(inodes, at.ino, at.index, |h| h == handle) {
                return Some(found);
            }
        }
        let at = self.wide.get(handle)?;
        chunk_in(inodes, at.ino, at.index, |h| h == handle)
    }

    /// Puts every chunk of file `ino` at its place in the file's list, as `inodes`
    /// holds it now (after the change).
    pub fn put_file(&mut self, inodes: &InodeTable, ino: u64) {
        let Some(inode) = inodes.get(&ino) else {
            return;
        };
        // Prefixes two chunks of this file share: neither can own the entry.
        let mut shared = Vec::new();
        if inode.chunks.len() > 1 {
            let mut all: Vec<u64> = inode.chunks.iter().map(|c| prefix(&c.handle)).collect();
            all.sort_unstable();
            shared = all
                .windows(2)
                .filter(|w| w[0] == w[1])
                .map(|w| w[0])
                .collect();
            shared.dedup();
        }
        for (index, c) in inode.chunks.iter().enumerate() {
            let at = ChunkAt { ino, index };
            let p = prefix(&c.handle);
            if shared.binary_search(&p).is_ok() {
                if self.narrow.get(&p).is_some_and(|v| unpack(*v).ino == ino) {
                    self.narrow.remove(&p);
                }
                self.wide.insert(c.handle, at);
            } else {
                self.put(inodes, c.handle, at);
            }
        }
    }

    /// Puts chunk `handle` at `at`, the one chunk of its file with its prefix.
    fn put(&mut self, inodes: &InodeTable, handle: ChunkHandle, at: ChunkAt) {
        if let Some(place) = self.wide.get_mut(&handle) {
            *place = at;
            return;
        }
        let p = prefix(&handle);
        let Some(packed) = pack(at) else {
            self.wide.insert(handle, at);
            return;
        };
        match self.narrow.get(&p).map(|v| unpack(*v)) {
            // Another file's entry: kept if that file still has a chunk with this
            // prefix (a collision), replaced if it is stale.
            Some(owner) if owner.ino != at.ino && has_prefix(inodes, owner.ino, p) => {
                self.wide.insert(handle, at);
            }
            _ => {
                self.narrow.insert(p, packed);
            }
        }
    }

    /// Forgets `handles`, chunks that file `ino` (as `inodes` holds it now, if at
    /// all) no longer has.
    pub fn remove_from_file(&mut self, inodes: &InodeTable, ino: u64, handles: &[ChunkHandle]) {
        // The prefixes of the chunks the file keeps: an entry one of them may own
        // stays.
        let mut kept: Vec<u64> = inodes.get(&ino).map_or_else(Vec::new, |inode| {
            inode.chunks.iter().map(|c| prefix(&c.handle)).collect()
        });
        kept.sort_unstable();
        for handle in handles {
            if self.wide.remove(handle).is_some() {
                continue;
            }
            let p = prefix(handle);
            let owned_by_file = self.narrow.get(&p).is_some_and(|v| unpack(*v).ino == ino);
            if owned_by_file && kept.binary_search(&p).is_err() {
                self.narrow.remove(&p);
            }
        }
    }

    /// Every chunk with its handle, from the one after `after` on, in handle order.
    pub fn after<'a>(
        &'a self,
        inodes: &'a InodeTable,
        after: Option<ChunkHandle>,
    ) -> impl Iterator<Item = (ChunkHandle, Found)> + 'a {
        let (narrow_from, wide_from) = match after {
            Some(h) => (Bound::Included(prefix(&h)), Bound::Excluded(h)),
            None => (Bound::Unbounded, Bound::Unbounded),
        };
        let narrow = self
            .narrow
            .range((narrow_from, Bound::Unbounded))
            .filter_map(move |(p, v)| {
                let at = unpack(*v);
                let found = chunk_in(inodes, at.ino, at.index, |h| prefix(h) == *p)?;
                Some((found.chunk.handle, found))
            })
            .filter(move |(h, _)| after.is_none_or(|a| *h > a));
        let wide = self
            .wide
            .range((wide_from, Bound::Unbounded))
            .filter_map(move |(h, at)| Some((*h, chunk_in(inodes, at.ino, at.index, |x| x == h)?)));
        Merged {
            a: narrow.peekable(),
            b: wide.peekable(),
        }
    }

    /// Estimated bytes held, for `/metrics`.
    pub fn footprint(&self) -> u64 {
        crate::footprint::btree::<u64, u64>(self.narrow.len())
            + crate::footprint::btree::<ChunkHandle, ChunkAt>(self.wide.len())
    }
}

/// Two iterators in handle order, merged.
struct Merged<A: Iterator, B: Iterator> {
    a: std::iter::Peekable<A>,
    b: std::iter::Peekable<B>,
}

impl<A, B, T> Iterator for Merged<A, B>
where
    A: Iterator<Item = (ChunkHandle, T)>,
    B: Iterator<Item = (ChunkHandle, T)>,
{
    type Item = (ChunkHandle, T);

    fn next(&mut self) -> Option<Self::Item> {
        match (self.a.peek(), self.b.peek()) {
            (Some(x), Some(y)) if y.0 < x.0 => self.b.next(),
            (Some(_), _) => self.a.next(),
            (None, _) => self.b.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ChunkList, Inode};
    use dfs_protocol::{ChunkVersion, FileKind};
    use std::collections::BTreeMap;

    /// Handles drawn from a few prefixes, so that they collide often.
    fn handle(prefix: u64, n: u64) -> ChunkHandle {
        ChunkHandle(uuid::Uuid::from_u64_pair(prefix, n))
    }

    fn file(handles: &[ChunkHandle]) -> Inode {
        Inode {
            kind: FileKind::File,
            size: handles.len() as u64,
            replication: 3,
            mtime: 0,
            chunks: handles
                .iter()
                .map(|h| StoredChunk {
                    handle: *h,
                    version: ChunkVersion(1),
                    size: 1,
                })
                .collect::<ChunkList>(),
        }
    }

    /// The table answers exactly what the files hold: every chunk at its place,
    /// nothing for a chunk no file holds, and all of them in handle order.
    fn check(
        table: &ChunkTable,
        inodes: &InodeTable,
        files: &BTreeMap<u64, Vec<ChunkHandle>>,
        gone: &[ChunkHandle],
        step: u64,
    ) {
        let mut want: Vec<(ChunkHandle, ChunkAt)> = files
            .iter()
            .flat_map(|(ino, hs)| {
                hs.iter()
                    .enumerate()
                    .map(|(index, h)| (*h, ChunkAt { ino: *ino, index }))
            })
            .collect();
        want.sort_by_key(|(h, _)| *h);
        for (h, at) in &want {
            assert_eq!(
                table.get(inodes, h).map(|f| f.at),
                Some(*at),
                "step {step}: {h}"
            );
        }
        for h in gone {
            if !want.iter().any(|(w, _)| w == h) {
                assert_eq!(table.get(inodes, h), None, "step {step}: {h} is gone");
            }
        }
        assert_eq!(table.len(), want.len(), "step {step}");
        let all: Vec<_> = table.after(inodes, None).map(|(h, f)| (h, f.at)).collect();
        assert_eq!(all, want, "step {step}");
        if let Some((mid, _)) = want.get(want.len() / 2) {
            let rest: Vec<_> = table
                .after(inodes, Some(*mid))
                .map(|(h, f)| (h, f.at))
                .collect();
            let want_rest: Vec<_> = want.iter().filter(|(h, _)| h > mid).copied().collect();
            assert_eq!(rest, want_rest, "step {step}");
        }
    }

    /// A pseudo-random walk of files made, rewritten (chunks dropped, added and
    /// moved) and removed, with handles from four prefixes, in the order the
    /// namespace changes things: the inode first, the table after.
    #[test]
    fn agrees_with_the_files_through_collisions() {
        let mut inodes = InodeTable::default();
        let mut table = ChunkTable::default();
        let mut files: BTreeMap<u64, Vec<ChunkHandle>> = BTreeMap::new();
        let mut gone = Vec::new();
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = 0u64;
        let mut rand = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for step in 0..3_000u64 {
            let r = rand();
            let ino = r % 12 + 2;
            let mut fresh = |rand: &mut dyn FnMut() -> u64| {
                next += 1;
                handle(rand() % 4, next)
            };
            match (files.contains_key(&ino), r / 12 % 3) {
                (false, _) => {
                    let n = (rand() % 4) as usize;
                    let hs: Vec<ChunkHandle> = (0..n).map(|_| fresh(&mut rand)).collect();
                    inodes.insert(ino, file(&hs));
                    table.put_file(&inodes, ino);
                    files.insert(ino, hs);
                }
                (true, 0) => {
                    inodes.remove(&ino);
                    let hs = files.remove(&ino).unwrap_or_default();
                    table.remove_from_file(&inodes, ino, &hs);
                    gone.extend(hs);
                }
                (true, _) => {
                    let old = files.get(&ino).cloned().unwrap_or_default();
                    let mut hs: Vec<ChunkHandle> =
                        old.iter().filter(|_| rand() % 3 != 0).copied().collect();
                    let turn = usize::from(!hs.is_empty());
                    hs.rotate_left(turn);
                    for _ in 0..rand() % 3 {
                        hs.push(fresh(&mut rand));
                    }
                    let dropped: Vec<ChunkHandle> =
                        old.iter().filter(|h| !hs.contains(h)).copied().collect();
                    inodes.insert(ino, file(&hs));
                    table.put_file(&inodes, ino);
                    table.remove_from_file(&inodes, ino, &dropped);
                    gone.extend(dropped);
                    files.insert(ino, hs);
                }
            }
            check(&table, &inodes, &files, &gone, step);
            let entries: Vec<(ChunkHandle, ChunkAt)> =
                table.after(&inodes, None).map(|(h, f)| (h, f.at)).collect();
            let built = ChunkTable::build(entries);
            check(&built, &inodes, &files, &gone, step);
        }
        assert!(!table.wide.is_empty() && !table.narrow.is_empty());
    }

    #[test]
    fn places_that_do_not_pack_are_kept_whole() {
        let mut inodes = InodeTable::default();
        let mut table = ChunkTable::default();
        let far = MAX_INO + 1;
        let h = handle(7, 7);
        inodes.insert(far, file(&[h]));
        table.put_file(&inodes, far);
        let long: Vec<ChunkHandle> = (0..=MAX_INDEX + 1).map(|n| handle(n, n + 1)).collect();
        inodes.insert(3, file(&long));
        table.put_file(&inodes, 3);
        assert_eq!(
            table.get(&inodes, &h).map(|f| f.at),
            Some(ChunkAt { ino: far, index: 0 })
        );
        let last = MAX_INDEX as usize + 1;
        assert_eq!(
            table.get(&inodes, &long[last]).map(|f| f.at),
            Some(ChunkAt {
                ino: 3,
                index: last
            })
        );
        assert_eq!(table.wide.len(), 2);
        assert_eq!(table.len(), long.len() + 1);
    }

    #[test]
    fn an_entry_is_sixteen_bytes() {
        assert_eq!(std::mem::size_of::<(u64, u64)>(), 16);
        let at = ChunkAt {
            ino: MAX_INO,
            index: MAX_INDEX as usize,
        };
        assert_eq!(pack(at).map(unpack), Some(at));
        assert_eq!(
            pack(ChunkAt {
                ino: MAX_INO + 1,
                index: 0
            }),
            None
        );
        assert_eq!(
            pack(ChunkAt {
                ino: 0,
                index: MAX_INDEX as usize + 1
            }),
            None
        );
    }
}
