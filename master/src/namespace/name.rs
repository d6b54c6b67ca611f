//! A directory entry's name, held inline when short.
//!
//! Every entry of every directory holds its name in memory. As a `String`, a name
//! was 24 bytes in the directory's tree plus a heap allocation of 32 (the
//! allocator's smallest, which most names fit): 56 bytes, at 10 million files more
//! than half a gigabyte. A name of up to [`INLINE`] bytes now lives in the same 24
//! bytes; a longer one takes a heap allocation of exactly its length.
//!
//! A `Name` orders, compares and hashes as its `str`, so a tree keyed by names
//! answers lookups and ranges by `&str`.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

/// Longest name held inline.
pub const INLINE: usize = 22;

#[derive(Clone)]
pub enum Name {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<str>),
}

impl Name {
    pub fn as_str(&self) -> &str {
        match self {
            Name::Inline { len, bytes } => {
                let bytes = bytes.get(..usize::from(*len)).unwrap_or_default();
                // Only ever filled from a whole `str` (see `From<&str>`), so this
                // always holds; the empty name is the safe answer if it did not.
                std::str::from_utf8(bytes).unwrap_or_default()
            }
            Name::Heap(s) => s,
        }
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Name {
        match u8::try_from(s.len()) {
            Ok(len) if s.len() <= INLINE => {
                let mut bytes = [0u8; INLINE];
                bytes[..s.len()].copy_from_slice(s.as_bytes());
                Name::Inline { len, bytes }
            }
            _ => Name::Heap(s.into()),
        }
    }
}

impl From<String> for Name {
    fn from(s: String) -> Name {
        if s.len() <= INLINE {
            Name::from(s.as_str())
        } else {
            Name::Heap(s.into_boxed_str())
        }
    }
}

impl Deref for Name {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Name {}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Name) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Name) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for Name {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn is_as_small_as_a_string_and_holds_short_names_inline() {
        assert_eq!(std::mem::size_of::<Name>(), 24);
        assert!(matches!(Name::from("f0001234"), Name::Inline { .. }));
        assert!(matches!(
            Name::from("a".repeat(INLINE)),
            Name::Inline { .. }
        ));
        assert!(matches!(Name::from("a".repeat(INLINE + 1)), Name::Heap(_)));
    }

    #[test]
    fn keeps_every_name_and_its_order() {
        let names = [
            "",
            "a",
            "b",
            "ab",
            "é",
            "日本語のファイル名",
            "exactly-twenty-two-by!",
            "a name well past the inline length, on the heap",
            "a name well past the inline length, on the heap too",
        ];
        let mut tree: BTreeMap<Name, usize> = BTreeMap::new();
        for (i, n) in names.iter().enumerate() {
            tree.insert(Name::from(*n), i);
            assert_eq!(Name::from(n.to_string()).as_str(), *n);
        }
        let got: Vec<&str> = tree.keys().map(|n| n.as_str()).collect();
        let mut want = names.to_vec();
        want.sort();
        assert_eq!(got, want, "the tree orders names as their strings");
        for (i, n) in names.iter().enumerate() {
            assert_eq!(tree.get(*n), Some(&i), "lookup of {n:?} by &str");
        }
        use std::ops::Bound;
        let after: Vec<&str> = tree
            .range::<str, _>((Bound::Excluded("ab"), Bound::Unbounded))
            .map(|(n, _)| n.as_str())
            .take(1)
            .collect();
        assert_eq!(after, ["b"]);
    }
}
