//! What the store does with packed chunks beyond writing and reading them: moving
//! one out to files of its own before it changes in place, quarantining one, and
//! compaction, which gives back the space of dead records.

use std::fs;
use std::path::Path;

use dfs_protocol::{ChunkHandle, ErrorCode};

use super::pack::{self, PackLoc};
use super::ChunkStore;
use crate::error::StoreError;

/// What one compaction pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    /// Live records copied forward out of mostly dead pack files.
    pub moved: u64,
    /// Pack files removed, with no live record left.
    pub removed: u64,
}

impl ChunkStore {
    /// Whether a chunk is held in a pack file (for tests and tools).
    pub fn is_packed(&self, handle: &ChunkHandle) -> bool {
        self.lock()
            .chunks
            .get(handle)
            .is_some_and(|e| e.packed.is_some())
    }

    /// Bytes held in pack files, dead records included.
    pub fn pack_bytes(&self) -> u64 {
        self.packs.bytes()
    }

    /// Moves a packed chunk to files of its own, for a change in place (bump, cut or
    /// append), which only files support. The caller holds the chunk's stripe lock.
    /// Nothing to do for a chunk not packed.
    pub(super) fn move_out_locked(&self, handle: ChunkHandle) -> Result<(), StoreError> {
        let Some(entry) = self.lock().chunks.get(&handle).copied() else {
            return Ok(());
        };
        if entry.packed.is_none() {
            return Ok(());
        }
        let mut reader = self.open_reader_locked(handle, entry.version)?;
        let blocks = reader.read_blocks(0, entry.len)?;
        let mut w = self.create_moving_out(handle, entry.version)?;
        w.write(&blocks.data)?;
        w.commit_locked()?;
        tracing::debug!(%handle, "packed chunk moved to files of its own");
        Ok(())
    }

    /// Quarantines a packed record: a copy of it goes to `to`, and it is marked dead
    /// durably, so a restart never serves it again.
    pub(super) fn quarantine_packed(
        &self,
        handle: ChunkHandle,
        len: u64,
        loc: PackLoc,
        to: &Path,
    ) -> Result<(), StoreError> {
        match self.packs.raw(loc, len) {
            Ok(bytes) => {
                if let Err(e) = fs::write(to, bytes) {
                    tracing::warn!(%handle, error = %e, "could not keep a copy of a damaged packed record");
                }
            }
            Err(e) => {
                tracing::warn!(%handle, error = %e, "could not read a damaged packed record")
            }
        }
        self.packs.kill(loc, true)?;
        tracing::warn!(%handle, file = %to.display(), "damaged packed replica quarantined");
        Ok(())
    }

    /// Gives back the space of dead records: removes each closed pack file no live
    /// record is left in, and copies the live records of one at most half live
    /// into the open file first. Blocking; a background task runs it now and then.
    pub fn compact_packs(&self) -> Result<Compaction, StoreError> {
        let mut done = Compaction::default();
        for (seq, size) in self.packs.closed() {
            let live: Vec<(ChunkHandle, PackLoc, u64)> = self
                .lock()
                .chunks
                .iter()
                .filter_map(|(h, e)| e.packed.filter(|l| l.seq == seq).map(|l| (*h, l, e.len)))
                .collect();
            let live_bytes: u64 = live.iter().map(|(_, _, len)| pack::record_size(*len)).sum();
            if live_bytes.saturating_mul(2) > size {
                continue;
            }
            for (handle, loc, _) in live {
                done.moved += u64::from(self.copy_forward(handle, loc)?);
            }
            let left = self
                .lock()
                .chunks
                .values()
                .any(|e| e.packed.is_some_and(|l| l.seq == seq));
            if !left {
                self.packs.remove(seq)?;
                done.removed += 1;
            }
        }
        if done != Compaction::default() {
            tracing::info!(
                moved = done.moved,
                removed = done.removed,
                "pack files compacted"
            );
        }
        Ok(done)
    }

    /// Copies a packed chunk's record, verified, to the open pack file; returns
    /// whether it did (the chunk may have changed or gone meanwhile). A damaged one
    /// is quarantined instead of copied.
    fn copy_forward(&self, handle: ChunkHandle, loc: PackLoc) -> Result<bool, StoreError> {
        let _g = self.stripe(&handle);
        let Some(entry) = self.lock().chunks.get(&handle).copied() else {
            return Ok(false);
        };
        if entry.packed != Some(loc) {
            return Ok(false);
        }
        let blocks = self
            .open_reader_locked(handle, entry.version)
            .and_then(|mut r| r.read_blocks(0, entry.len));
        let blocks = match blocks {
            Ok(b) => b,
            Err(StoreError::Refused(ErrorCode::ChecksumMismatch { .. })) => {
                self.quarantine_locked(handle)?;
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        let record = pack::encode(handle, entry.version, &blocks.data, &blocks.checksums)?;
        let to = self.packs.append(&record)?;
        if let Some(e) = self.lock().chunks.get_mut(&handle) {
            // Reads keep their touch time: compaction is not a use.
            e.packed = Some(to);
            e.touched = entry.touched;
        }
        // The copy is later in the pack order and wins at a start even if this is lost.
        self.packs.kill(loc, false)?;
        Ok(true)
    }
}
