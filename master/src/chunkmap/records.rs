//! Every chunk some server reported, numbered densely: its handle and its holders,
//! in one record per chunk.
//!
//! Each server's set of chunks names them by these four-byte numbers instead of
//! sixteen-byte handles, and with no version beside them (the record keeps each
//! holder's). At 10 million chunks on three replicas, per-server maps of handle to
//! version cost 98 bytes a chunk and a map of handle to holders 55 more; numbered,
//! the records cost 32, and the sets (`number_set.rs`) 1 to 10.
//!
//! A handle is found through a hash table of numbers alone: the handle to compare
//! is the one in the number's record. A `HashMap` of handle to number held the
//! handle a second time, 21 bytes a bucket and 35 a chunk at 10 million chunks;
//! this table holds 5 a bucket, about 8 a chunk.
//!
//! A number is freed when its chunk's last holder goes, and handed out again.

use std::hash::BuildHasher;

use dfs_protocol::ChunkHandle;
use hashbrown::{DefaultHashBuilder, HashTable};

use super::holders::Holders;

/// Records per page. Pages are allocated whole as the table grows, so it never holds
/// room for up to twice its records, as a doubling `Vec` does right after it grew.
const PAGE: usize = 4096;

#[derive(Debug)]
pub(super) struct Record {
    pub(super) handle: ChunkHandle,
    pub(super) holders: Holders,
}

#[derive(Debug, Default)]
pub(super) struct Records {
    /// The numbers in use, by their handle's hash.
    numbers: HashTable<u32>,
    hasher: DefaultHashBuilder,
    /// By number; `None` for a free one.
    pages: Vec<Vec<Option<Record>>>,
    free: Vec<u32>,
    /// Numbers handed out so far (in use or free).
    issued: u32,
}

fn place(n: u32) -> (usize, usize) {
    let n = n as usize;
    (n / PAGE, n % PAGE)
}

fn record(pages: &[Vec<Option<Record>>], n: u32) -> Option<&Record> {
    let (page, i) = place(n);
    pages.get(page)?.get(i)?.as_ref()
}

/// Whether number `n` is `handle`'s.
fn is(pages: &[Vec<Option<Record>>], n: u32, handle: &ChunkHandle) -> bool {
    record(pages, n).is_some_and(|r| r.handle == *handle)
}

/// The hash a number in the table is filed under: its record's handle's. Every
/// number in the table has a record, so the fallback is never used.
fn rehash(hasher: &DefaultHashBuilder, pages: &[Vec<Option<Record>>], n: u32) -> u64 {
    record(pages, n).map_or(0, |r| hasher.hash_one(r.handle))
}

impl Records {
    pub(super) fn number(&self, handle: &ChunkHandle) -> Option<u32> {
        let hash = self.hasher.hash_one(handle);
        self.numbers
            .find(hash, |&n| is(&self.pages, n, handle))
            .copied()
    }

    pub(super) fn get(&self, n: u32) -> Option<&Record> {
        record(&self.pages, n)
    }

    fn get_mut(&mut self, n: u32) -> Option<&mut Record> {
        let (page, i) = place(n);
        self.pages.get_mut(page)?.get_mut(i)?.as_mut()
    }

    pub(super) fn by_handle(&self, handle: &ChunkHandle) -> Option<&Record> {
        self.get(self.number(handle)?)
    }

    /// The holders of chunk `n`, to change.
    pub(super) fn holders_mut(&mut self, n: u32) -> Option<&mut Holders> {
        self.get_mut(n).map(|r| &mut r.holders)
    }

    /// The number of `handle`, handed out now if it has none (with no holders yet);
    /// `None` only once four billion numbers are in use.
    pub(super) fn number_or_new(&mut self, handle: ChunkHandle) -> Option<u32> {
        let Records {
            numbers,
            hasher,
            pages,
            free,
            issued,
        } = self;
        // One hash of the handle for a known chunk and a new one alike: a
        // registration at 10 M chunks reports 100,000 of them a server.
        let hash = hasher.hash_one(handle);
        if let Some(n) = numbers.find(hash, |&n| is(pages, n, &handle)) {
            return Some(*n);
        }
        let n = match free.pop() {
            Some(n) => n,
            None => {
                let n = *issued;
                *issued = n.checked_add(1)?;
                n
            }
        };
        let (page, i) = place(n);
        if page == pages.len() {
            let mut fresh = Vec::with_capacity(PAGE);
            fresh.resize_with(PAGE, || None);
            pages.push(fresh);
        }
        let cell = pages.get_mut(page)?.get_mut(i)?;
        *cell = Some(Record {
            handle,
            holders: Holders::default(),
        });
        // The record is in place first: growing the table rehashes through it.
        numbers.insert_unique(hash, n, |&m| rehash(hasher, pages, m));
        Some(n)
    }

    /// Frees chunk `n` if no server holds it any more.
    pub(super) fn release_if_unheld(&mut self, n: u32) {
        let unheld = self.get(n).map(|r| (r.handle, r.holders.is_empty()));
        let Some((handle, true)) = unheld else {
            return;
        };
        let hash = self.hasher.hash_one(handle);
        if let Ok(entry) = self.numbers.find_entry(hash, |&m| m == n) {
            entry.remove();
        }
        let (page, i) = place(n);
        if let Some(cell) = self.pages.get_mut(page).and_then(|p| p.get_mut(i)) {
            *cell = None;
            self.free.push(n);
        }
    }

    /// Chunks held somewhere.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.numbers.len()
    }

    /// Estimated bytes (see [`crate::footprint`]).
    pub(super) fn footprint(&self) -> u64 {
        use crate::footprint::{hash_table, vec_heap};
        hash_table::<u32, ()>(self.numbers.capacity())
            + vec_heap::<Option<Record>>(self.pages.len().saturating_mul(PAGE))
            + vec_heap::<u32>(self.free.capacity())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dfs_protocol::ChunkVersion;

    #[test]
    fn forty_bytes_a_record_and_numbers_come_back() {
        assert_eq!(std::mem::size_of::<Option<Record>>(), 32);
        let mut r = Records::default();
        let hs: Vec<ChunkHandle> = (0..PAGE + 10).map(|_| ChunkHandle::random()).collect();
        for (i, h) in hs.iter().enumerate() {
            let n = r.number_or_new(*h).expect("room");
            assert_eq!(n as usize, i);
            assert_eq!(r.number_or_new(*h), Some(n), "one number a handle");
            r.holders_mut(n).expect("record").set(1, ChunkVersion(1));
        }
        assert_eq!(r.pages.len(), 2);
        assert_eq!(r.len(), PAGE + 10);
        // Held chunks are kept; an unheld one is freed and its number reused.
        r.release_if_unheld(3);
        assert_eq!(r.by_handle(&hs[3]).map(|x| x.handle), Some(hs[3]));
        r.holders_mut(3).expect("record").remove(1);
        r.release_if_unheld(3);
        assert!(r.by_handle(&hs[3]).is_none());
        assert!(r.get(3).is_none());
        assert_eq!(r.len(), PAGE + 9);
        let other = ChunkHandle::random();
        assert_eq!(r.number_or_new(other), Some(3));
        assert_eq!(r.get(3).map(|x| x.handle), Some(other));
        assert_eq!(r.number(&hs[4]), Some(4));
    }
}
