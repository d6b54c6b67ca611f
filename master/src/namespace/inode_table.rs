//! The namespace's inodes by number, in pages of 64 consecutive numbers, each
//! packed into 40 bytes.
//!
//! Inode numbers are handed out in order, so live inodes sit close together. A hash
//! table keyed by number paid for the key, a control byte and, at 10 million
//! inodes, 40% empty buckets: 95 bytes for a 56-byte inode. A page here is a bitmap
//! of which of its 64 numbers are live and a vector of just those inodes, in number
//! order, so a full page costs the inodes and about a byte each besides. A page
//! that empties is dropped, and one mostly emptied gives its spare room back, so a
//! file that outlives its neighbours costs at most about a page header more.
//!
//! An [`Inode`] is 64 bytes: its chunk list holds one chunk inline, and the list's
//! tag cannot share the inode's spare bytes. Most files are one chunk as long as the
//! file, so the table keeps such a file without the chunk's size (it is the file's),
//! with the tag, kind and replication side by side, and its mtime and chunk version
//! in four bytes each when they fit (seconds until 2106; versions, which count a
//! chunk's changes, under four billion): 40 bytes ([`Packed`]). Any other inode
//! keeps its chunks in a boxed slice, also within 40. Readers get an
//! [`InodeRef`], a view with the inode's fields; writers put whole inodes.

use std::collections::HashMap;

use hashbrown::DefaultHashBuilder;
use std::ops::Deref;

use dfs_protocol::{ChunkHandle, ChunkVersion, FileKind};

use crate::store::{slot, ChunkList, Inode, InodeOut, StoredChunk, INODE_GROUP};

/// Numbers per page: one bit each in the page's bitmap.
const PAGE: u64 = 64;

/// An inode as the table keeps it.
#[derive(Debug)]
enum Packed {
    /// A file of one chunk whose size is the file's, with a replication under 256
    /// and an mtime and a version that fit in 32 bits.
    One {
        size: u64,
        mtime: u32,
        version: u32,
        handle: ChunkHandle,
        replication: u8,
        kind: FileKind,
    },
    /// Every other inode: directories, links, empty files and files of several chunks.
    Other {
        size: u64,
        mtime: u64,
        replication: u32,
        kind: FileKind,
        chunks: Box<[StoredChunk]>,
    },
}

impl Packed {
    /// Stands in while an inode is out being changed; holds nothing on the heap.
    fn empty() -> Packed {
        Packed::Other {
            size: 0,
            mtime: 0,
            replication: 0,
            kind: FileKind::File,
            chunks: Box::new([]),
        }
    }

    fn pack(inode: Inode) -> Packed {
        let Inode {
            kind,
            size,
            replication,
            mtime,
            chunks,
        } = inode;
        if let [one] = &chunks[..] {
            let fits = (
                u8::try_from(replication),
                u32::try_from(mtime),
                u32::try_from(one.version.0),
            );
            if let (Ok(replication), Ok(mtime), Ok(version)) = fits {
                if one.size == size {
                    return Packed::One {
                        size,
                        mtime,
                        version,
                        handle: one.handle,
                        replication,
                        kind,
                    };
                }
            }
        }
        let chunks = match chunks {
            ChunkList::One(c) => Box::new([c]) as Box<[StoredChunk]>,
            ChunkList::Many(v) => v.into_boxed_slice(),
        };
        Packed::Other {
            size,
            mtime,
            replication,
            kind,
            chunks,
        }
    }

    fn view(&self) -> InodeRef<'_> {
        match self {
            Packed::One {
                size,
                mtime,
                version,
                handle,
                replication,
                kind,
            } => InodeRef {
                kind: *kind,
                size: *size,
                replication: u32::from(*replication),
                mtime: u64::from(*mtime),
                chunks: Chunks::One(StoredChunk {
                    handle: *handle,
                    version: ChunkVersion(u64::from(*version)),
                    size: *size,
                }),
            },
            Packed::Other {
                size,
                mtime,
                replication,
                kind,
                chunks,
            } => InodeRef {
                kind: *kind,
                size: *size,
                replication: *replication,
                mtime: *mtime,
                chunks: Chunks::Many(chunks),
            },
        }
    }

    fn unpack(self) -> Inode {
        match self {
            one @ Packed::One { .. } => one.view().to_inode(),
            Packed::Other {
                size,
                mtime,
                replication,
                kind,
                chunks,
            } => Inode {
                kind,
                size,
                replication,
                mtime,
                chunks: ChunkList::from(chunks.into_vec()),
            },
        }
    }
}

/// An inode in the table, read in place: the fields of an [`Inode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InodeRef<'a> {
    pub kind: FileKind,
    pub size: u64,
    pub replication: u32,
    /// Seconds since the Unix epoch.
    pub mtime: u64,
    /// A file's chunks in order; empty for a directory.
    pub chunks: Chunks<'a>,
}

impl InodeRef<'_> {
    /// The inode to encode.
    pub fn out(&self) -> InodeOut<'_> {
        InodeOut {
            kind: self.kind,
            size: self.size,
            replication: self.replication,
            mtime: self.mtime,
            chunks: &self.chunks,
        }
    }

    /// The inode itself, to change and put back.
    pub fn to_inode(&self) -> Inode {
        Inode {
            kind: self.kind,
            size: self.size,
            replication: self.replication,
            mtime: self.mtime,
            chunks: ChunkList::from(self.chunks.to_vec()),
        }
    }
}

impl PartialEq<Inode> for InodeRef<'_> {
    fn eq(&self, other: &Inode) -> bool {
        self.kind == other.kind
            && self.size == other.size
            && self.replication == other.replication
            && self.mtime == other.mtime
            && self.chunks[..] == other.chunks[..]
    }
}

/// An inode's chunks: the one a packed file holds, or a slice of the table's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunks<'a> {
    One(StoredChunk),
    Many(&'a [StoredChunk]),
}

impl Deref for Chunks<'_> {
    type Target = [StoredChunk];

    fn deref(&self) -> &[StoredChunk] {
        match self {
            Chunks::One(c) => std::slice::from_ref(c),
            Chunks::Many(s) => s,
        }
    }
}

impl<'a> IntoIterator for &'a Chunks<'_> {
    type Item = &'a StoredChunk;
    type IntoIter = std::slice::Iter<'a, StoredChunk>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[derive(Debug, Default)]
struct Page {
    /// Bit `n` is set when number `page * 64 + n` is live.
    present: u64,
    /// The live inodes, in number order.
    inodes: Vec<Packed>,
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

/// Pages by number. Page numbers come from inode numbers the master hands out, not
/// from clients, so the table uses hashbrown's fast hash rather than std's
/// DoS-resistant one: every path walk and chunk lookup goes through it.
#[derive(Debug, Default)]
pub struct InodeTable {
    pages: HashMap<u64, Page, DefaultHashBuilder>,
}

impl InodeTable {
    pub fn get(&self, ino: &u64) -> Option<InodeRef<'_>> {
        let (page, slot) = split(*ino);
        let p = self.pages.get(&page)?;
        if !p.has(slot) {
            return None;
        }
        p.inodes.get(p.rank(slot)).map(Packed::view)
    }

    /// Changes `ino`'s inode in place with `change`; `None` if there is none.
    pub fn update<R>(&mut self, ino: u64, change: impl FnOnce(&mut Inode) -> R) -> Option<R> {
        let (page, slot) = split(ino);
        let p = self.pages.get_mut(&page)?;
        if !p.has(slot) {
            return None;
        }
        let at = p.rank(slot);
        let packed = p.inodes.get_mut(at)?;
        let mut inode = std::mem::replace(packed, Packed::empty()).unpack();
        let out = change(&mut inode);
        *packed = Packed::pack(inode);
        Some(out)
    }

    /// Sets `ino`'s inode; returns the one it replaced.
    pub fn insert(&mut self, ino: u64, inode: Inode) -> Option<Inode> {
        let inode = Packed::pack(inode);
        let (page, slot) = split(ino);
        let p = self.pages.entry(page).or_default();
        let at = p.rank(slot);
        if p.has(slot) {
            return p
                .inodes
                .get_mut(at)
                .map(|old| std::mem::replace(old, inode).unpack());
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
        Some(inode.unpack())
    }

    /// The live inodes of store group `group`, by their place in it.
    pub fn group(&self, group: u64) -> Vec<(u8, InodeRef<'_>)> {
        let first = group.saturating_mul(INODE_GROUP);
        (first..first.saturating_add(INODE_GROUP))
            .filter_map(|ino| Some((slot(ino), self.get(&ino)?)))
            .collect()
    }

    /// Every inode with its number, pages in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, InodeRef<'_>)> + '_ {
        self.pages.iter().flat_map(|(page, p)| {
            (0..PAGE as u32)
                .filter(|slot| p.has(*slot))
                .zip(p.inodes.iter())
                .map(move |(slot, inode)| (page * PAGE + u64::from(slot), inode.view()))
        })
    }

    /// Estimated bytes held, for `/metrics`: the page table and every page's room.
    /// Chunk lists on the heap are the caller's to estimate.
    pub fn footprint(&self) -> u64 {
        let rooms: usize = self.pages.values().map(|p| p.inodes.capacity()).sum();
        crate::footprint::hash_table::<u64, Page>(self.pages.capacity())
            + crate::footprint::vec_heap::<Packed>(rooms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn chunk(n: u64, size: u64) -> StoredChunk {
        StoredChunk {
            handle: ChunkHandle(uuid::Uuid::from_u64_pair(n, !n)),
            version: ChunkVersion(n + 1),
            size,
        }
    }

    fn inode(size: u64) -> Inode {
        Inode {
            kind: FileKind::File,
            size,
            replication: 3,
            mtime: 0,
            chunks: ChunkList::default(),
        }
    }

    /// Every shape an inode takes: packed whole or not.
    fn shaped(n: u64) -> Inode {
        let mut i = inode(n);
        match n % 8 {
            // One chunk as long as the file: packed whole.
            0 => i.chunks = ChunkList::from(vec![chunk(n, n)]),
            // One chunk of another length than the file.
            1 => i.chunks = ChunkList::from(vec![chunk(n, n + 1)]),
            // One chunk, a replication past a byte.
            2 => {
                i.chunks = ChunkList::from(vec![chunk(n, n)]);
                i.replication = 300;
            }
            3 => {
                i.chunks = ChunkList::from(vec![chunk(n, 7), chunk(n + 1, n)]);
                i.size = n + 7;
            }
            4 => {
                i.kind = FileKind::Dir;
                i.mtime = n;
            }
            // One chunk as long as the file, an mtime past 2106.
            6 => {
                i.chunks = ChunkList::from(vec![chunk(n, n)]);
                i.mtime = u64::from(u32::MAX) + n;
            }
            // One chunk as long as the file, a version past 32 bits.
            7 => {
                let mut c = chunk(n, n);
                c.version = ChunkVersion(u64::from(u32::MAX) + n);
                i.chunks = ChunkList::from(vec![c]);
            }
            _ => {}
        }
        i
    }

    #[test]
    fn packed_in_40_bytes() {
        assert_eq!(std::mem::size_of::<Packed>(), 40);
        assert!(matches!(Packed::pack(shaped(8)), Packed::One { .. }));
        for n in 9..16 {
            assert!(
                matches!(Packed::pack(shaped(n)), Packed::Other { .. }),
                "{n}"
            );
        }
    }

    /// A pseudo-random walk of inserts, changes and removals over a few pages,
    /// checked against a map after every step.
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
            match x % 4 {
                0 => assert_eq!(table.remove(&ino), model.remove(&ino), "step {step}"),
                1 => {
                    let changed = table.update(ino, |i| {
                        i.chunks.push(chunk(step, 1));
                        i.size += 1;
                        i.size
                    });
                    let want = model.get_mut(&ino).map(|i| {
                        i.chunks.push(chunk(step, 1));
                        i.size += 1;
                        i.size
                    });
                    assert_eq!(changed, want, "step {step}");
                }
                _ => assert_eq!(
                    table.insert(ino, shaped(step)),
                    model.insert(ino, shaped(step)),
                    "step {step}"
                ),
            }
            assert_eq!(
                table.get(&ino).map(|i| i.to_inode()),
                model.get(&ino).cloned()
            );
        }
        let mut all: Vec<(u64, Inode)> = table.iter().map(|(i, n)| (i, n.to_inode())).collect();
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
        assert_eq!(table.update(127, |i| i.size = 7), Some(()));
        assert_eq!(table.get(&127).map(|i| i.size), Some(7));
        assert!(table.get(&63).is_none() && table.get(&(1 << 40)).is_none());
        assert_eq!(table.update(63, |i| i.size = 7), None);
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
