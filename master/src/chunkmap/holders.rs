//! The servers holding one chunk, by slot number (see [`super::ChunkMap`]): the
//! inverse index of what each server reported, kept per chunk in 16 bytes.
//!
//! At 10 million chunks this set is the master's most numerous object. As a
//! `HashSet<ServerId>` it cost about 190 bytes a chunk: the set's own header, and a
//! heap table of 16-byte ids. Three slot numbers fit inline, which covers chunks at
//! replication 3; a chunk with more holders (a higher replication, a copy or a stale
//! replica in flight) moves them to the heap.

/// Slot numbers inline before spilling to the heap.
const INLINE: usize = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Holders {
    Inline {
        len: u8,
        slots: [u32; INLINE],
    },
    // Boxed so that the enum stays 16 bytes (a `Vec` is 24): the spilled case is
    // rare, and its second allocation is the price of every chunk being smaller.
    #[allow(clippy::box_collection)]
    Spilled(Box<Vec<u32>>),
}

impl Default for Holders {
    fn default() -> Holders {
        Holders::Inline {
            len: 0,
            slots: [0; INLINE],
        }
    }
}

impl Holders {
    fn as_slice(&self) -> &[u32] {
        match self {
            Holders::Inline { len, slots } => &slots[..usize::from(*len)],
            Holders::Spilled(v) => v,
        }
    }

    /// The slots, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.as_slice().iter().copied()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Adds `slot`; whether it was not there yet.
    pub(super) fn insert(&mut self, slot: u32) -> bool {
        if self.as_slice().contains(&slot) {
            return false;
        }
        match self {
            Holders::Inline { len, slots } if usize::from(*len) < INLINE => {
                slots[usize::from(*len)] = slot;
                *len += 1;
            }
            Holders::Inline { slots, .. } => {
                let mut v = Vec::with_capacity(INLINE * 2);
                v.extend_from_slice(slots);
                v.push(slot);
                *self = Holders::Spilled(Box::new(v));
            }
            Holders::Spilled(v) => v.push(slot),
        }
        true
    }

    /// Removes `slot`; whether it was there. Back inline once few enough are left.
    pub(super) fn remove(&mut self, slot: u32) -> bool {
        match self {
            Holders::Inline { len, slots } => {
                let n = usize::from(*len);
                let Some(i) = slots[..n].iter().position(|s| *s == slot) else {
                    return false;
                };
                slots.copy_within(i + 1..n, i);
                *len -= 1;
            }
            Holders::Spilled(v) => {
                let Some(i) = v.iter().position(|s| *s == slot) else {
                    return false;
                };
                v.swap_remove(i);
                if v.len() <= INLINE {
                    let mut slots = [0; INLINE];
                    slots[..v.len()].copy_from_slice(v);
                    *self = Holders::Inline {
                        // At most INLINE, which fits.
                        len: v.len() as u8,
                        slots,
                    };
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixteen_bytes_and_any_number_of_holders() {
        assert_eq!(std::mem::size_of::<Holders>(), 16);
        let mut h = Holders::default();
        assert!(h.is_empty());
        for s in [5, 9, 5, 2] {
            h.insert(s);
        }
        assert_eq!(h.len(), 3);
        assert!(matches!(h, Holders::Inline { .. }));
        for s in 10..20 {
            assert!(h.insert(s));
        }
        assert!(!h.insert(12));
        assert_eq!(h.len(), 13);
        assert!(matches!(h, Holders::Spilled(_)));
        for s in 10..20 {
            assert!(h.remove(s));
        }
        assert!(!h.remove(10));
        assert!(matches!(h, Holders::Inline { len: 3, .. }));
        let mut left: Vec<u32> = h.iter().collect();
        left.sort_unstable();
        assert_eq!(left, [2, 5, 9]);
        assert!(h.remove(5) && h.remove(2) && h.remove(9));
        assert!(h.is_empty());
    }
}
