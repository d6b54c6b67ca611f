//! A file's chunks, with the first held inline.
//!
//! Most files are one chunk. As a `Vec`, each of them cost a heap allocation of 48
//! bytes (32 for the chunk, the rest the allocator's) on top of the vector's own 24;
//! inline, one chunk costs 40 bytes in the inode and nothing on the heap. Encoded, a
//! list is exactly a `Vec<StoredChunk>`, so the store's format and the operation log
//! do not change.

use std::ops::{Deref, DerefMut};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::StoredChunk;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChunkList {
    One(StoredChunk),
    /// None (a directory, an empty file) or several.
    Many(Vec<StoredChunk>),
}

impl Default for ChunkList {
    fn default() -> Self {
        ChunkList::Many(Vec::new())
    }
}

impl ChunkList {
    pub fn push(&mut self, chunk: StoredChunk) {
        match self {
            ChunkList::One(first) => *self = ChunkList::Many(vec![*first, chunk]),
            ChunkList::Many(v) if v.is_empty() => *self = ChunkList::One(chunk),
            ChunkList::Many(v) => v.push(chunk),
        }
    }
}

impl From<Vec<StoredChunk>> for ChunkList {
    fn from(mut v: Vec<StoredChunk>) -> Self {
        match v.as_slice() {
            [one] => ChunkList::One(*one),
            _ => {
                v.shrink_to_fit();
                ChunkList::Many(v)
            }
        }
    }
}

impl FromIterator<StoredChunk> for ChunkList {
    fn from_iter<I: IntoIterator<Item = StoredChunk>>(iter: I) -> Self {
        iter.into_iter().collect::<Vec<_>>().into()
    }
}

impl Deref for ChunkList {
    type Target = [StoredChunk];

    fn deref(&self) -> &[StoredChunk] {
        match self {
            ChunkList::One(c) => std::slice::from_ref(c),
            ChunkList::Many(v) => v,
        }
    }
}

impl DerefMut for ChunkList {
    fn deref_mut(&mut self) -> &mut [StoredChunk] {
        match self {
            ChunkList::One(c) => std::slice::from_mut(c),
            ChunkList::Many(v) => v,
        }
    }
}

impl<'a> IntoIterator for &'a ChunkList {
    type Item = &'a StoredChunk;
    type IntoIter = std::slice::Iter<'a, StoredChunk>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl Serialize for ChunkList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for ChunkList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<StoredChunk>::deserialize(d).map(ChunkList::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dfs_protocol::{ChunkHandle, ChunkVersion};

    fn chunk(n: u64) -> StoredChunk {
        StoredChunk {
            handle: ChunkHandle(uuid::Uuid::from_u64_pair(0, n)),
            version: ChunkVersion(n),
            size: n,
        }
    }

    #[test]
    fn encodes_exactly_as_a_vector() {
        let config = bincode::config::standard();
        for n in 0..4u64 {
            let v: Vec<StoredChunk> = (0..n).map(chunk).collect();
            let list: ChunkList = v.clone().into();
            let a = bincode::serde::encode_to_vec(&v, config).expect("encode");
            let b = bincode::serde::encode_to_vec(&list, config).expect("encode");
            assert_eq!(a, b, "{n} chunks");
            let (back, _): (ChunkList, usize) =
                bincode::serde::decode_from_slice(&a, config).expect("decode");
            assert_eq!(&back[..], &v[..]);
            assert_eq!(matches!(back, ChunkList::One(_)), n == 1);
        }
    }

    #[test]
    fn pushes_keep_order_through_every_form() {
        let mut list = ChunkList::default();
        assert!(list.is_empty());
        for n in 0..5 {
            list.push(chunk(n));
            let want: Vec<StoredChunk> = (0..=n).map(chunk).collect();
            assert_eq!(&list[..], &want[..]);
        }
        list[4].size = 99;
        assert_eq!(list.last().map(|c| c.size), Some(99));
    }
}
