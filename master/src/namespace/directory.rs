//! One directory's entries (name to inode number), packed into small byte blocks.
//!
//! Why: every entry of every directory lives in the master's memory. In a
//! `BTreeMap<Name, u64>` an entry took some 34 bytes at 10 million files (24 for the
//! inline name, 8 for the inode number, the rest the tree's nodes), about a fifth
//! of the master. Names in one directory tend to share their beginnings
//! (`part-00017`, `IMG_2041.jpg`) and files made one after another get inode numbers
//! one after another, so each entry is stored against the one before it, as
//! LevelDB's blocks and Lucene's term dictionaries do:
//! - how many bytes its name shares with the previous name, and the rest of it;
//! - its inode number's distance from the previous entry's, zigzag-coded;
//!
//! each number a LEB128 varint. A directory is a sorted list of blocks of at most
//! [`BLOCK_MAX`] bytes; each block starts afresh, so a lookup binary-searches the
//! blocks by their first names and walks one block, comparing only the lengths the
//! entries share until one shares as much as the name sought (see [`seek`]). A
//! change writes its block anew (an exact-size allocation, so a block has no
//! slack), coding again only the entry after the one changed; a block that grew
//! past [`BLOCK_MAX`] is split, and one that shrank below a quarter of it merged
//! into a neighbour.
//!
//! Names compare as bytes, as `str` does, so entries come out in the same order a
//! `BTreeMap` of names gave.

use std::cmp::Ordering;
use std::ops::Bound;

use super::name::Name;

/// Largest block, in bytes, before it is split in two.
const BLOCK_MAX: usize = 512;
/// A block smaller than this after a removal is merged into a neighbour if the two
/// fit in one.
const MERGE_BELOW: usize = BLOCK_MAX / 4;

/// A directory's entries in name order.
#[derive(Default)]
pub struct Directory {
    /// Non-empty, sorted, and each one's names all below the next one's first.
    blocks: Vec<Box<[u8]>>,
    len: usize,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("len", &self.len)
            .field("blocks", &self.blocks.len())
            .finish()
    }
}

/// One entry as coded in a block, decoded against the entry before it.
struct Coded<'a> {
    shared: usize,
    suffix: &'a [u8],
    delta: u64,
    /// Offset just past the entry.
    end: usize,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Inlined, with a one-byte number taken first: a lookup decodes three numbers for
/// each entry it walks past, nearly all of them below 128, and with `seek` this was
/// 6% of the master's CPU under `dfs bench meta`.
#[inline(always)]
fn get_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let first = *bytes.get(*at)?;
    if first < 0x80 {
        *at += 1;
        return Some(u64::from(first));
    }
    get_varint_long(bytes, at)
}

#[cold]
fn get_varint_long(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    let mut shift = 0;
    while shift < 64 {
        let b = *bytes.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
        shift += 7;
    }
    None
}

fn zigzag(from: u64, to: u64) -> u64 {
    let d = to.wrapping_sub(from) as i64;
    ((d << 1) ^ (d >> 63)) as u64
}

fn unzigzag(from: u64, z: u64) -> u64 {
    let d = ((z >> 1) as i64) ^ -((z & 1) as i64);
    from.wrapping_add(d as u64)
}

#[inline]
fn decode(block: &[u8], at: usize) -> Option<Coded<'_>> {
    let mut p = at;
    let shared = usize::try_from(get_varint(block, &mut p)?).ok()?;
    let n = usize::try_from(get_varint(block, &mut p)?).ok()?;
    let suffix = block.get(p..p.checked_add(n)?)?;
    p += n;
    let delta = get_varint(block, &mut p)?;
    Some(Coded {
        shared,
        suffix,
        delta,
        end: p,
    })
}

/// Appends an entry sharing `shared` bytes with the name before it, then `suffix`,
/// its number `delta` (zigzag) from the one before.
fn encode_raw(out: &mut Vec<u8>, shared: usize, suffix: &[u8], delta: u64) {
    put_varint(out, shared as u64);
    put_varint(out, suffix.len() as u64);
    out.extend_from_slice(suffix);
    put_varint(out, delta);
}

/// Appends `(name, ino)` coded against the entry `prev`.
fn encode(out: &mut Vec<u8>, prev: (&[u8], u64), name: &[u8], ino: u64) {
    let shared = common_prefix(prev.0, name);
    encode_raw(out, shared, &name[shared..], zigzag(prev.1, ino));
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Where a name is, or would go, in a block: found without building the names
/// before it. Each entry's shared length is exactly what its name has in common
/// with the name before (the first entry's is 0), so comparing that with what the
/// name before had in common with the sought name (`common`) places every entry
/// whose shared length differs, and only an equal one needs its suffix compared.
struct Spot<'a> {
    /// Start of the entry found, or of the first entry above the name; the block's
    /// length when every entry is below it.
    start: usize,
    /// The number of the entry before `start` (0 for none).
    prev_ino: u64,
    /// Bytes the entry before `start` has in common with the name (0 for none).
    common: usize,
    /// The entry at `start`, if any.
    entry: Option<SpotEntry<'a>>,
}

struct SpotEntry<'a> {
    coded: Coded<'a>,
    ino: u64,
    /// Whether it is the name sought (else it is the first above it).
    equal: bool,
}

fn seek<'a>(block: &'a [u8], name: &[u8]) -> Spot<'a> {
    let (mut at, mut ino, mut common) = (0, 0u64, 0);
    while let Some(c) = decode(block, at) {
        let this = unzigzag(ino, c.delta);
        let below = match c.shared.cmp(&common) {
            // Goes on like the name before, which is below the name.
            Ordering::Greater => true,
            // Leaves the name before where it matched the name: above it.
            Ordering::Less => false,
            Ordering::Equal => {
                let rest = name.get(common..).unwrap_or_default();
                let l = common_prefix(c.suffix, rest);
                let less = match (c.suffix.get(l), rest.get(l)) {
                    (None, Some(_)) => true,
                    (Some(a), Some(b)) => a < b,
                    _ => false,
                };
                if less {
                    common += l;
                }
                less
            }
        };
        if !below {
            let equal = c.shared == common && {
                let rest = name.get(common..).unwrap_or_default();
                c.suffix == rest
            };
            return Spot {
                start: at,
                prev_ino: ino,
                common,
                entry: Some(SpotEntry {
                    coded: c,
                    ino: this,
                    equal,
                }),
            };
        }
        at = c.end;
        ino = this;
    }
    Spot {
        start: at,
        prev_ino: ino,
        common,
        entry: None,
    }
}

/// Walks one block's entries, holding the current one whole.
struct Cursor<'a> {
    block: &'a [u8],
    /// Offset of the next entry.
    at: usize,
    /// The current entry's start, name and inode number.
    start: usize,
    name: Vec<u8>,
    ino: u64,
}

impl<'a> Cursor<'a> {
    fn new(block: &'a [u8]) -> Cursor<'a> {
        Cursor {
            block,
            at: 0,
            start: 0,
            name: Vec::new(),
            ino: 0,
        }
    }

    /// Moves to the next entry; false at the block's end. A block is only ever
    /// written by this module, so a malformed one cannot occur; it would read as
    /// ending early.
    fn advance(&mut self) -> bool {
        let Some(c) = decode(self.block, self.at) else {
            return false;
        };
        self.name.truncate(c.shared.min(self.name.len()));
        self.name.extend_from_slice(c.suffix);
        self.ino = unzigzag(self.ino, c.delta);
        self.start = self.at;
        self.at = c.end;
        true
    }
}

/// The first name of a block (its first entry shares nothing).
fn first_name(block: &[u8]) -> &[u8] {
    decode(block, 0).map_or(&[], |c| c.suffix)
}

impl Directory {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Heap bytes held: the blocks and the list of them.
    pub fn heap_bytes(&self) -> usize {
        self.blocks.capacity() * std::mem::size_of::<Box<[u8]>>()
            + self.blocks.iter().map(|b| b.len()).sum::<usize>()
    }

    /// The block that holds `name` if any block does: the last whose first name is
    /// not above it (the first block when `name` is below them all).
    fn block_for(&self, name: &[u8]) -> usize {
        self.blocks
            .partition_point(|b| first_name(b) <= name)
            .saturating_sub(1)
    }

    pub fn get(&self, name: &str) -> Option<u64> {
        let block = self.blocks.get(self.block_for(name.as_bytes()))?;
        match seek(block, name.as_bytes()).entry {
            Some(e) if e.equal => Some(e.ino),
            _ => None,
        }
    }

    /// Adds `name`, or points it at `ino` if present; returns the number it had.
    pub fn insert(&mut self, name: &str, ino: u64) -> Option<u64> {
        let name = name.as_bytes();
        if self.blocks.is_empty() {
            let mut out = Vec::new();
            encode(&mut out, (&[], 0), name, ino);
            self.blocks.push(out.into_boxed_slice());
            self.len = 1;
            return None;
        }
        let b = self.block_for(name);
        let block = &self.blocks[b];
        let spot = seek(block, name);
        let mut out = Vec::with_capacity(block.len() + name.len() + 24);
        out.extend_from_slice(&block[..spot.start]);
        let old = match spot.entry {
            Some(e) if e.equal => {
                if e.ino == ino {
                    return Some(ino);
                }
                // Same name and place; this number and the next entry's distance
                // from it change.
                let c = &e.coded;
                encode_raw(&mut out, c.shared, c.suffix, zigzag(spot.prev_ino, ino));
                match decode(block, c.end) {
                    Some(n) => {
                        let next = unzigzag(e.ino, n.delta);
                        encode_raw(&mut out, n.shared, n.suffix, zigzag(ino, next));
                        out.extend_from_slice(&block[n.end..]);
                    }
                    None => out.extend_from_slice(&block[c.end..]),
                }
                Some(e.ino)
            }
            above => {
                let rest = name.get(spot.common..).unwrap_or_default();
                encode_raw(&mut out, spot.common, rest, zigzag(spot.prev_ino, ino));
                if let Some(e) = above {
                    // Coded anew against the new name: what they have in common is
                    // what it had with the name before, or more where it had as much
                    // as the new name.
                    let c = &e.coded;
                    let shared = if c.shared < spot.common {
                        c.shared
                    } else {
                        c.shared + common_prefix(c.suffix, rest)
                    };
                    let suffix = c.suffix.get(shared - c.shared..).unwrap_or_default();
                    encode_raw(&mut out, shared, suffix, zigzag(ino, e.ino));
                    out.extend_from_slice(&block[c.end..]);
                }
                None
            }
        };
        self.blocks[b] = out.into_boxed_slice();
        if old.is_none() {
            self.len += 1;
        }
        // A new number may code longer than the old one, too.
        if self.blocks[b].len() > BLOCK_MAX {
            self.split(b);
        }
        old
    }

    /// Removes `name`; returns the number it had.
    pub fn remove(&mut self, name: &str) -> Option<u64> {
        let name = name.as_bytes();
        let b = self.block_for(name);
        let block = self.blocks.get(b)?;
        let spot = seek(block, name);
        let e = spot.entry.filter(|e| e.equal)?;
        let c = &e.coded;
        let mut out = Vec::with_capacity(block.len());
        out.extend_from_slice(&block[..spot.start]);
        if let Some(n) = decode(block, c.end) {
            // The next entry, coded against the one before the removed one: they
            // have in common the lesser of what each had with the removed name.
            let next = unzigzag(e.ino, n.delta);
            let delta = zigzag(spot.prev_ino, next);
            if n.shared > c.shared {
                let mut suffix = c
                    .suffix
                    .get(..n.shared - c.shared)
                    .unwrap_or_default()
                    .to_vec();
                suffix.extend_from_slice(n.suffix);
                encode_raw(&mut out, c.shared, &suffix, delta);
            } else {
                encode_raw(&mut out, n.shared, n.suffix, delta);
            }
            out.extend_from_slice(&block[n.end..]);
        }
        let old = e.ino;
        self.len -= 1;
        if out.is_empty() {
            self.blocks.remove(b);
        } else {
            self.blocks[b] = out.into_boxed_slice();
            if self.blocks[b].len() < MERGE_BELOW {
                if b + 1 < self.blocks.len() && self.merge_fits(b) {
                    self.merge(b);
                } else if b > 0 && self.merge_fits(b - 1) {
                    self.merge(b - 1);
                }
            }
        }
        if self.blocks.is_empty() {
            self.blocks = Vec::new();
        }
        Some(old)
    }

    /// Splits block `b` about its middle, at an entry boundary.
    fn split(&mut self, b: usize) {
        let block = &self.blocks[b];
        let mut c = Cursor::new(block);
        // The first entry never starts the right half: a block of one entry stays whole.
        if !c.advance() {
            return;
        }
        while c.advance() {
            if c.start >= block.len() / 2 {
                let mut right = Vec::with_capacity(block.len() - c.start + 8);
                encode(&mut right, (&[], 0), &c.name, c.ino);
                right.extend_from_slice(&block[c.at..]);
                let left: Box<[u8]> = block[..c.start].into();
                self.blocks[b] = left;
                self.blocks.insert(b + 1, right.into_boxed_slice());
                return;
            }
        }
    }

    fn merge_fits(&self, b: usize) -> bool {
        match (self.blocks.get(b), self.blocks.get(b + 1)) {
            (Some(l), Some(r)) => l.len() + r.len() <= BLOCK_MAX,
            _ => false,
        }
    }

    /// Joins block `b + 1` onto block `b`.
    fn merge(&mut self, b: usize) {
        let right = self.blocks.remove(b + 1);
        let left = &self.blocks[b];
        let mut last = Cursor::new(left);
        while last.advance() {}
        let mut first = Cursor::new(&right);
        if !first.advance() {
            return;
        }
        let tail = (first.name.as_slice(), first.ino, first.at);
        let mut out = Vec::with_capacity(left.len() + right.len() + 8);
        out.extend_from_slice(left);
        encode(&mut out, (&last.name, last.ino), tail.0, tail.1);
        out.extend_from_slice(&right[tail.2..]);
        self.blocks[b] = out.into_boxed_slice();
        // The joined entry's number may code longer against its new neighbour.
        if self.blocks[b].len() > BLOCK_MAX {
            self.split(b);
        }
    }

    /// Builds a directory from entries sorted by name (see [`Builder`]).
    #[cfg(test)]
    pub fn from_sorted<'n>(entries: impl IntoIterator<Item = (&'n str, u64)>) -> Directory {
        let mut b = Builder::default();
        for (name, ino) in entries {
            b.push(name, ino);
        }
        b.finish()
    }

    /// Every entry in name order.
    pub fn iter(&self) -> Entries<'_> {
        self.range(Bound::Unbounded)
    }

    /// Every inode number, in the entries' name order.
    pub fn values(&self) -> impl Iterator<Item = u64> + '_ {
        let mut e = self.iter();
        std::iter::from_fn(move || e.advance())
    }

    /// The entries from `from` on, in name order.
    pub fn range(&self, from: Bound<&str>) -> Entries<'_> {
        let (block, key) = match from {
            Bound::Unbounded => (0, None),
            Bound::Included(k) | Bound::Excluded(k) => (self.block_for(k.as_bytes()), Some(k)),
        };
        let mut e = Entries {
            dir: self,
            block,
            cursor: self.blocks.get(block).map(|b| Cursor::new(b)),
            held: false,
        };
        let (Some(key), Some(c)) = (key, e.cursor.as_mut()) else {
            return e;
        };
        // Step over the names before the bound. Past the block's end, every name of
        // the next block is above the bound already.
        while c.advance() {
            let past = match from {
                Bound::Included(_) => c.name.as_slice() >= key.as_bytes(),
                _ => c.name.as_slice() > key.as_bytes(),
            };
            if past {
                e.held = true;
                break;
            }
        }
        e
    }
}

/// Builds a directory from its entries in name order, as the store gives them,
/// filling each block. An entry out of order (which a store read in key order never
/// gives) is inserted at the end.
#[derive(Default)]
pub struct Builder {
    dir: Directory,
    block: Vec<u8>,
    prev: (Vec<u8>, u64),
    late: Vec<(String, u64)>,
}

impl Builder {
    pub fn push(&mut self, name: &str, ino: u64) {
        let bytes = name.as_bytes();
        if self.dir.len > 0 && bytes <= self.prev.0.as_slice() {
            self.late.push((name.to_owned(), ino));
            return;
        }
        let mark = self.block.len();
        encode(&mut self.block, (&self.prev.0, self.prev.1), bytes, ino);
        if self.block.len() > BLOCK_MAX && mark > 0 {
            self.block.truncate(mark);
            let full = std::mem::take(&mut self.block).into_boxed_slice();
            self.dir.blocks.push(full);
            encode(&mut self.block, (&[], 0), bytes, ino);
        }
        self.prev.0.clear();
        self.prev.0.extend_from_slice(bytes);
        self.prev.1 = ino;
        self.dir.len += 1;
    }

    pub fn finish(self) -> Directory {
        let mut dir = self.dir;
        if !self.block.is_empty() {
            dir.blocks.push(self.block.into_boxed_slice());
        }
        dir.blocks.shrink_to_fit();
        for (name, ino) in self.late {
            dir.insert(&name, ino);
        }
        dir
    }
}

/// Entries of a directory in name order, each name decoded whole.
pub struct Entries<'a> {
    dir: &'a Directory,
    block: usize,
    cursor: Option<Cursor<'a>>,
    /// The cursor is on an entry not yet given out (where a range begins).
    held: bool,
}

impl Entries<'_> {
    /// Moves to the next entry and returns its number; its name is then in the cursor.
    fn advance(&mut self) -> Option<u64> {
        if std::mem::take(&mut self.held) {
            return self.cursor.as_ref().map(|c| c.ino);
        }
        loop {
            let c = self.cursor.as_mut()?;
            if c.advance() {
                return Some(c.ino);
            }
            // Reuse the name buffer's allocation.
            let mut name = std::mem::take(&mut c.name);
            name.clear();
            self.block += 1;
            self.cursor = self.dir.blocks.get(self.block).map(|b| Cursor {
                name,
                ..Cursor::new(b)
            });
        }
    }
}

impl Iterator for Entries<'_> {
    type Item = (Name, u64);

    fn next(&mut self) -> Option<(Name, u64)> {
        let ino = self.advance()?;
        let name = self.cursor.as_ref().map_or(&[][..], |c| c.name.as_slice());
        // Every name was put in as a whole `str` and is decoded whole.
        Some((
            Name::from(std::str::from_utf8(name).unwrap_or_default()),
            ino,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn check(dir: &Directory, want: &BTreeMap<String, u64>) {
        assert_eq!(dir.len(), want.len());
        assert_eq!(dir.is_empty(), want.is_empty());
        let got: Vec<(String, u64)> = dir.iter().map(|(n, i)| (n.to_string(), i)).collect();
        let expect: Vec<(String, u64)> = want.iter().map(|(n, i)| (n.clone(), *i)).collect();
        assert_eq!(got, expect);
        assert_eq!(
            dir.values().collect::<Vec<_>>(),
            want.values().copied().collect::<Vec<_>>()
        );
        for (i, b) in dir.blocks.iter().enumerate() {
            assert!(!b.is_empty(), "block {i} is empty");
            let mut c = Cursor::new(b);
            let mut n = 0;
            while c.advance() {
                n += 1;
            }
            assert_eq!(c.at, b.len(), "block {i} decodes to its end");
            assert!(
                b.len() <= BLOCK_MAX || n == 1,
                "block {i} is {} bytes",
                b.len()
            );
            if let Some(next) = dir.blocks.get(i + 1) {
                assert!(
                    c.name.as_slice() < first_name(next),
                    "blocks {i} and next overlap"
                );
            }
        }
    }

    /// Names of a few shapes: sharing long beginnings, short, multibyte, long.
    fn name(r: u64) -> String {
        match r % 5 {
            0 => format!("part-{:05}", r % 12_000),
            1 => format!("{}", r % 3_000),
            2 => format!("日本語-{}", r % 1_000),
            3 => format!("{}-a-name-longer-than-twenty-two-bytes", r % 800),
            _ => format!("IMG_{:04}.jpg", r % 4_000),
        }
    }

    /// A pseudo-random walk of inserts, replacements and removals, growing the
    /// directory to thousands of entries over many blocks and emptying it again,
    /// checked against a map after every step: lookups, iteration from every kind
    /// of bound, and the blocks' own order and size.
    #[test]
    fn random_walk_matches_a_map() {
        for seed in [1u64, 7, 1234] {
            let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let mut rand = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            let mut dir = Directory::default();
            let mut want: BTreeMap<String, u64> = BTreeMap::new();
            let mut most_blocks = 0;
            for step in 0..24_000u32 {
                most_blocks = most_blocks.max(dir.blocks.len());
                let r = rand();
                let n = name(rand());
                // Grow for the first half, shrink for the second.
                let grow = if step < 12_000 { 4 } else { 1 };
                if r % 5 < grow {
                    let ino = match rand() % 3 {
                        0 => rand(),
                        1 => u64::from(step),
                        _ => u64::MAX - u64::from(step),
                    };
                    assert_eq!(
                        dir.insert(&n, ino),
                        want.insert(n.clone(), ino),
                        "insert {n}"
                    );
                } else {
                    // Mostly names that are there.
                    let n = match want.keys().nth((rand() % (want.len() as u64 + 1)) as usize) {
                        Some(k) if r % 4 != 0 => k.clone(),
                        _ => n.clone(),
                    };
                    assert_eq!(dir.remove(&n), want.remove(&n), "remove {n}");
                    assert_eq!(dir.get(&n), None);
                }
                assert_eq!(dir.get(&n), want.get(&n).copied());
                if step % 100 == 0 {
                    check(&dir, &want);
                }
                if step % 1_000 == 0 {
                    // Removals merge blocks: none is left nearly empty for long.
                    if dir.len() >= 200 {
                        let per_block = dir.len() / dir.blocks.len();
                        assert!(per_block >= 8, "{per_block} entries a block");
                    }
                    for probe in [n.as_str(), "", "part-01500", "zzzz", "5"] {
                        for bound in [Bound::Included(probe), Bound::Excluded(probe)] {
                            let got: Vec<(String, u64)> =
                                dir.range(bound).map(|(n, i)| (n.to_string(), i)).collect();
                            let expect: Vec<(String, u64)> = want
                                .range::<str, _>((bound, Bound::Unbounded))
                                .map(|(n, i)| (n.clone(), *i))
                                .collect();
                            assert_eq!(got, expect, "range from {bound:?}");
                        }
                    }
                }
            }
            check(&dir, &want);
            // The directory grew over many blocks.
            assert!(most_blocks >= 20, "at most {most_blocks} blocks");
            for n in want.keys().cloned().collect::<Vec<_>>() {
                assert_eq!(dir.remove(&n), want.remove(&n));
            }
            check(&dir, &want);
            assert!(dir.blocks.is_empty());
        }
    }

    #[test]
    fn built_from_sorted_entries_equals_one_built_by_inserts() {
        let entries: Vec<(String, u64)> = (0..5_000u64)
            .map(|i| (format!("f{i:06}"), 100 + i))
            .collect();
        let built = Directory::from_sorted(entries.iter().map(|(n, i)| (n.as_str(), *i)));
        let mut inserted = Directory::default();
        for (n, i) in entries.iter().rev() {
            inserted.insert(n, *i);
        }
        let want: BTreeMap<String, u64> = entries.iter().cloned().collect();
        check(&built, &want);
        check(&inserted, &want);
        // Consecutive names and numbers: a few bytes an entry, not a tree's 34.
        let per_entry = built.heap_bytes() as f64 / entries.len() as f64;
        assert!(per_entry < 6.0, "{per_entry} bytes an entry");
        // Out of order input still ends up whole.
        let shuffled =
            Directory::from_sorted(entries.iter().rev().take(50).map(|(n, i)| (n.as_str(), *i)));
        assert_eq!(shuffled.len(), 50);
        assert_eq!(
            shuffled.iter().next().map(|(n, _)| n.to_string()),
            Some("f004950".into())
        );
    }

    #[test]
    fn numbers_round_trip_whatever_their_distance() {
        for (a, b) in [(0, u64::MAX), (u64::MAX, 0), (5, 3), (3, 5), (1 << 63, 1)] {
            assert_eq!(unzigzag(a, zigzag(a, b)), b);
        }
        let mut out = Vec::new();
        put_varint(&mut out, u64::MAX);
        let mut at = 0;
        assert_eq!(get_varint(&out, &mut at), Some(u64::MAX));
        assert_eq!(at, out.len());
        assert_eq!(get_varint(&out[..3], &mut 0), None, "cut short");
    }
}
