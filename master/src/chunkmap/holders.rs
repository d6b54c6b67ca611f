//! The servers holding one chunk, by slot number (see [`super::ChunkMap`]), each
//! with the version it reported: kept per chunk in 16 bytes.
//!
//! At 10 million chunks this set is the master's most numerous object. As a
//! `HashSet<ServerId>` it cost about 190 bytes a chunk: the set's own header, and a
//! heap table of 16-byte ids. Three slot numbers fit inline, which covers chunks at
//! replication 3. Their replicas are nearly always at one version, so the inline
//! form keeps one version for all of them; holders at different versions (a lease
//! just granted, a stale replica), or more than three, move to the heap with a
//! version each, and come back inline once they agree again.
//!
//! Inline slots are two bytes each: slots are numbered densely from 0 as servers
//! register, so any cluster of up to 65,536 servers keeps every chunk inline, and
//! a chunk on a slot past that simply spills. Four-byte slots made this 24 bytes
//! and each chunk's record 40; at 10 million chunks the 8 bytes are 80 MB.

use dfs_protocol::ChunkVersion;

/// Slot numbers inline before spilling to the heap.
const INLINE: usize = 3;

/// How many inline slots are in use. An enum rather than a `u8` so that its unused
/// values hold the enum's tag, and `Option<Holders>`'s too: with a `u8` the tag
/// would take a word of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Len {
    Zero,
    One,
    Two,
    Three,
}

impl Len {
    fn get(self) -> usize {
        self as usize
    }

    /// `n` (at most [`INLINE`]).
    fn of(n: usize) -> Len {
        match n {
            0 => Len::Zero,
            1 => Len::One,
            2 => Len::Two,
            _ => Len::Three,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Holders {
    Inline {
        len: Len,
        slots: [u16; INLINE],
        /// Every inline holder's version.
        version: ChunkVersion,
    },
    // Boxed so that the enum stays 16 bytes (a `Vec` is 24 on its own): the spilled
    // case is rare, and its second allocation is the price of every chunk being
    // smaller.
    #[allow(clippy::box_collection)]
    Spilled(Box<Vec<(u32, ChunkVersion)>>),
}

impl Default for Holders {
    fn default() -> Holders {
        Holders::Inline {
            len: Len::Zero,
            slots: [0; INLINE],
            version: ChunkVersion(0),
        }
    }
}

impl Holders {
    /// The slots with their versions, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u32, ChunkVersion)> + '_ {
        let (inline, version, spilled): (&[u16], ChunkVersion, &[(u32, ChunkVersion)]) = match self
        {
            Holders::Inline {
                len,
                slots,
                version,
            } => (&slots[..len.get()], *version, &[]),
            Holders::Spilled(v) => (&[], ChunkVersion(0), v.as_slice()),
        };
        inline
            .iter()
            .map(move |s| (u32::from(*s), version))
            .chain(spilled.iter().copied())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn len(&self) -> usize {
        match self {
            Holders::Inline { len, .. } => len.get(),
            Holders::Spilled(v) => v.len(),
        }
    }

    /// The version `slot` holds, if it is a holder.
    pub(super) fn version_of(&self, slot: u32) -> Option<ChunkVersion> {
        self.iter().find(|(s, _)| *s == slot).map(|(_, v)| v)
    }

    /// Records that `slot` holds the chunk at `version`, added or replacing the
    /// version it held.
    pub(super) fn set(&mut self, slot: u32, at: ChunkVersion) {
        if let (
            Holders::Inline {
                len,
                slots,
                version,
            },
            Ok(slot),
        ) = (&mut *self, u16::try_from(slot))
        {
            let n = len.get();
            let held = slots[..n].contains(&slot);
            if n == 0 || (*version == at && (held || n < INLINE)) {
                if !held {
                    slots[n] = slot;
                    *len = Len::of(n + 1);
                }
                *version = at;
                return;
            }
            if n == 1 && held {
                *version = at;
                return;
            }
        }
        let mut all: Vec<(u32, ChunkVersion)> = self.iter().collect();
        match all.iter_mut().find(|(s, _)| *s == slot) {
            Some(entry) => entry.1 = at,
            None => all.push((slot, at)),
        }
        *self = Holders::from_vec(all);
    }

    /// Removes `slot`; whether it was there.
    pub(super) fn remove(&mut self, slot: u32) -> bool {
        match self {
            Holders::Inline { len, slots, .. } => {
                let n = len.get();
                let Some(i) = slots[..n].iter().position(|s| u32::from(*s) == slot) else {
                    return false;
                };
                slots.copy_within(i + 1..n, i);
                *len = Len::of(n - 1);
                true
            }
            Holders::Spilled(v) => {
                let Some(i) = v.iter().position(|(s, _)| *s == slot) else {
                    return false;
                };
                v.swap_remove(i);
                let all = std::mem::take(&mut **v);
                *self = Holders::from_vec(all);
                true
            }
        }
    }

    /// Inline when the holders fit and agree on the version; spilled otherwise.
    fn from_vec(all: Vec<(u32, ChunkVersion)>) -> Holders {
        let agree = all.windows(2).all(|w| w[0].1 == w[1].1);
        if all.len() <= INLINE && agree {
            let mut slots = [0; INLINE];
            let fit = slots
                .iter_mut()
                .zip(&all)
                .all(|(cell, (s, _))| u16::try_from(*s).map(|s| *cell = s).is_ok());
            if fit {
                return Holders::Inline {
                    len: Len::of(all.len()),
                    slots,
                    version: all.first().map_or(ChunkVersion(0), |(_, v)| *v),
                };
            }
        }
        Holders::Spilled(Box::new(all))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(h: &Holders) -> Vec<(u32, u64)> {
        let mut v: Vec<(u32, u64)> = h.iter().map(|(s, v)| (s, v.0)).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn sixteen_bytes_and_any_number_of_holders() {
        assert_eq!(std::mem::size_of::<Holders>(), 16);
        assert_eq!(std::mem::size_of::<Option<Holders>>(), 16);
        let v1 = ChunkVersion(1);
        let mut h = Holders::default();
        assert!(h.is_empty());
        for s in [5, 9, 5, 2] {
            h.set(s, v1);
        }
        assert_eq!(h.len(), 3);
        assert!(matches!(h, Holders::Inline { .. }));
        for s in 10..20 {
            h.set(s, v1);
        }
        h.set(12, v1);
        assert_eq!(h.len(), 13);
        assert!(matches!(h, Holders::Spilled(_)));
        for s in 10..20 {
            assert!(h.remove(s));
        }
        assert!(!h.remove(10));
        assert!(matches!(
            h,
            Holders::Inline {
                len: Len::Three,
                ..
            }
        ));
        assert_eq!(sorted(&h), [(2, 1), (5, 1), (9, 1)]);
        assert!(h.remove(5) && h.remove(2) && h.remove(9));
        assert!(h.is_empty());
    }

    #[test]
    fn holders_at_different_versions_keep_their_own_until_they_agree() {
        let mut h = Holders::default();
        for s in [1, 2, 3] {
            h.set(s, ChunkVersion(4));
        }
        // A lease moves the replicas to version 5 one report at a time.
        h.set(2, ChunkVersion(5));
        assert!(matches!(h, Holders::Spilled(_)));
        assert_eq!(sorted(&h), [(1, 4), (2, 5), (3, 4)]);
        assert_eq!(h.version_of(2), Some(ChunkVersion(5)));
        assert_eq!(h.version_of(3), Some(ChunkVersion(4)));
        assert_eq!(h.version_of(7), None);
        h.set(1, ChunkVersion(5));
        h.set(3, ChunkVersion(5));
        assert!(matches!(
            h,
            Holders::Inline {
                len: Len::Three,
                ..
            }
        ));
        assert_eq!(sorted(&h), [(1, 5), (2, 5), (3, 5)]);
        // A stale replica, then its removal brings the rest back inline.
        h.set(3, ChunkVersion(2));
        assert_eq!(sorted(&h), [(1, 5), (2, 5), (3, 2)]);
        assert!(h.remove(3));
        assert!(matches!(h, Holders::Inline { len: Len::Two, .. }));
        assert_eq!(sorted(&h), [(1, 5), (2, 5)]);
        // A lone holder changes its version in place.
        let mut one = Holders::default();
        one.set(8, ChunkVersion(1));
        one.set(8, ChunkVersion(2));
        assert!(matches!(one, Holders::Inline { len: Len::One, .. }));
        assert_eq!(one.version_of(8), Some(ChunkVersion(2)));
    }

    #[test]
    fn slots_past_two_bytes_spill_and_stay_exact() {
        let v = ChunkVersion(3);
        let big = u32::from(u16::MAX) + 1;
        let mut h = Holders::default();
        h.set(7, v);
        h.set(big, v);
        assert!(matches!(h, Holders::Spilled(_)), "{h:?}");
        assert_eq!(sorted(&h), [(7, 3), (big, 3)]);
        assert_eq!(h.version_of(big), Some(v));
        assert!(h.remove(big));
        assert!(matches!(h, Holders::Inline { len: Len::One, .. }));
        assert_eq!(sorted(&h), [(7, 3)]);
        // The largest two-byte slot is still inline, and no slot aliases another.
        h.set(u32::from(u16::MAX), v);
        assert!(matches!(h, Holders::Inline { len: Len::Two, .. }));
        assert!(!h.remove(big + 7));
        assert_eq!(sorted(&h), [(7, 3), (u32::from(u16::MAX), 3)]);
    }
}
