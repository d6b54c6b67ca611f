//! New chunks: written under a temp name, hashed block by block as they arrive, and
//! committed (see the store's docs for the order of the steps). A chunk small enough
//! to pack is held in memory instead, and committed as one record of a pack file.

use std::fs::{self, File};
use std::io::Write;
use std::path::PathBuf;

use bytes::Bytes;
use dfs_protocol::{ChunkHandle, ChunkReport, ChunkVersion, ErrorCode};

use super::direct::SequentialFile;
use super::meta::{
    chunk_name, encode_meta, meta_name, sync_dir, BlockHasher, ChunkMeta, MAX_CHUNK_LEN,
};
use super::pack::{self, PackLoc};
use super::{ChunkStore, Entry};
use crate::error::StoreError;
use crate::failpoint::Step;

impl ChunkStore {
    /// Starts writing a chunk: a new one, or a newer version of one held here (a write
    /// retried on a new chain), which replaces the old copy when committed.
    pub fn create(
        &self,
        handle: ChunkHandle,
        version: ChunkVersion,
    ) -> Result<ChunkWriter, StoreError> {
        if let Some(e) = self.lock().chunks.get(&handle) {
            if e.version >= version {
                return Err(ErrorCode::BadRequest {
                    reason: format!(
                        "chunk {handle} already exists here at version {}",
                        e.version
                    ),
                }
                .into());
            }
        }
        let mut w = self.writer(handle, version, false);
        if self.pack_below > 0 {
            w.mem = Some(Vec::new());
        } else {
            w.open_file()?;
        }
        Ok(w)
    }

    /// A writer of files of its own for a chunk held packed at `version`, to move it
    /// out before it changes in place: its commit replaces the packed copy.
    pub(super) fn create_moving_out(
        &self,
        handle: ChunkHandle,
        version: ChunkVersion,
    ) -> Result<ChunkWriter, StoreError> {
        let mut w = self.writer(handle, version, true);
        w.open_file()?;
        Ok(w)
    }

    /// A writer with nothing written yet, holding neither a file nor bytes.
    fn writer(&self, handle: ChunkHandle, version: ChunkVersion, moving_out: bool) -> ChunkWriter {
        ChunkWriter {
            store: self.clone(),
            handle,
            version,
            tmp_chunk: self
                .dir
                .join(format!("{handle}.{}.chunk.tmp", uuid::Uuid::new_v4())),
            file: None,
            mem: None,
            len: 0,
            reserved: 0,
            hasher: BlockHasher::new(Vec::new()),
            done: false,
            moving_out,
        }
    }
}

/// A chunk being written: bytes go to a temp file and are hashed block by block.
/// Dropped without [`ChunkWriter::commit`], it removes its temp file.
#[derive(Debug)]
pub struct ChunkWriter {
    store: ChunkStore,
    handle: ChunkHandle,
    version: ChunkVersion,
    tmp_chunk: PathBuf,
    file: Option<SequentialFile>,
    /// The bytes so far, while the chunk may still be packed.
    mem: Option<Vec<u8>>,
    len: u64,
    reserved: u64,
    hasher: BlockHasher,
    done: bool,
    /// Replaces a packed copy at the same version (see `create_moving_out`).
    moving_out: bool,
}

impl ChunkWriter {
    pub fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.write_with(data, |file| file.write_all(data))
    }

    /// [`ChunkWriter::write`] for bytes the caller owns: with `O_DIRECT`, aligned
    /// ones reach the disk without a copy (see `SequentialFile::write_bytes`).
    pub fn write_bytes(&mut self, data: Bytes) -> Result<(), StoreError> {
        let owned = data.clone();
        self.write_with(&data, move |file| file.write_bytes(owned))
    }

    /// Checks and reserves room for `data`, moves to a file of its own if it no
    /// longer packs, hashes it, and keeps it in memory or has `to_file` write it.
    /// Hashed first: a file may hold owned bytes for a later vectored write.
    fn write_with(
        &mut self,
        data: &[u8],
        to_file: impl FnOnce(&mut SequentialFile) -> std::io::Result<()>,
    ) -> Result<(), StoreError> {
        let n = data.len() as u64;
        if self.len + n > MAX_CHUNK_LEN {
            return Err(ErrorCode::BadRequest {
                reason: format!("chunk {} would exceed {MAX_CHUNK_LEN} bytes", self.handle),
            }
            .into());
        }
        self.store.reserve(n)?;
        self.reserved += n;
        if self.mem.is_some() && self.len + n > self.store.pack_below {
            // Too big to pack after all: on to a file of its own.
            self.open_file()?;
        }
        self.hasher.update(data);
        if let Some(mem) = self.mem.as_mut() {
            mem.extend_from_slice(data);
        } else {
            to_file(self.file_mut()?)
                .map_err(|e| StoreError::io(format!("write {}", self.tmp_chunk.display()), e))?;
        }
        self.len += n;
        Ok(())
    }

    fn file_mut(&mut self) -> Result<&mut SequentialFile, StoreError> {
        self.file.as_mut().ok_or_else(|| {
            StoreError::io("write after commit", std::io::Error::other("writer closed"))
        })
    }

    /// Creates the temp data file, with what was held in memory so far.
    fn open_file(&mut self) -> Result<(), StoreError> {
        let mut file = SequentialFile::create(&self.tmp_chunk, self.store.direct_io)
            .map_err(|e| StoreError::io(format!("create {}", self.tmp_chunk.display()), e))?;
        if let Some(held) = self.mem.take() {
            file.write_all(&held)
                .map_err(|e| StoreError::io(format!("write {}", self.tmp_chunk.display()), e))?;
        }
        self.file = Some(file);
        Ok(())
    }

    /// Makes the chunk durable and visible; returns its length.
    pub fn commit(self) -> Result<u64, StoreError> {
        let store = self.store.clone();
        let _g = store.stripe(&self.handle);
        self.commit_locked()
    }

    /// `commit`, for a caller that holds the chunk's stripe lock.
    ///
    /// Data and meta are fsynced under temp names; an older version held here is then
    /// retired (its meta removed, durably), and only then do the files take their
    /// final names, data first and meta last. A crash at any point leaves the old
    /// replica whole, or nothing, or the new replica whole; never a meta file that
    /// describes another write's data.
    pub(super) fn commit_locked(mut self) -> Result<u64, StoreError> {
        let blocks = std::mem::replace(&mut self.hasher, BlockHasher::new(Vec::new())).finish();
        match self.mem.take() {
            Some(data) if !data.is_empty() => return self.commit_packed(&data, blocks),
            // An empty chunk is one an append will grow: files of its own from the start.
            Some(_) => self.open_file()?,
            None => {}
        }
        let file = self.file.take().ok_or_else(|| {
            StoreError::io("commit twice", std::io::Error::other("writer closed"))
        })?;
        file.finish()
            .map_err(|e| StoreError::io(format!("fsync {}", self.tmp_chunk.display()), e))?;
        let store = self.store.clone();
        store.hit(Step::CommitDataSynced)?;
        let dir = &store.dir;
        self.check_newer()?;
        let meta = ChunkMeta {
            handle: self.handle,
            version: self.version,
            len: self.len,
            blocks,
        };
        let tmp_meta = dir.join(format!("{}.{}.meta.tmp", self.handle, uuid::Uuid::new_v4()));
        let chunk_path = dir.join(chunk_name(self.handle));
        let mut renamed = (false, false);
        let mut retired = None;
        let result = (|| {
            let mut f = File::create(&tmp_meta)
                .map_err(|e| StoreError::io(format!("create {}", tmp_meta.display()), e))?;
            f.write_all(&encode_meta(&meta)?)
                .and_then(|_| f.sync_all())
                .map_err(|e| StoreError::io(format!("write {}", tmp_meta.display()), e))?;
            store.hit(Step::CommitMetaWritten)?;
            if self.moving_out {
                // The packed copy stays indexed (and served) until the files are in
                // place; they win over it at the next start from then on.
            } else if let Some(old) = store.unindex(self.handle, false) {
                retired = old.packed;
                // The older version is stale (the master moved the chunk past it): its
                // meta goes before its data file is replaced.
                let old_meta = dir.join(meta_name(self.handle));
                match fs::remove_file(&old_meta) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(StoreError::io(format!("remove {}", old_meta.display()), e))
                    }
                }
                sync_dir(dir)?;
                store.hit(Step::CommitOldRetired)?;
            }
            fs::rename(&self.tmp_chunk, &chunk_path)
                .map_err(|e| StoreError::io(format!("rename to {}", chunk_path.display()), e))?;
            renamed.0 = true;
            store.hit(Step::CommitChunkRenamed)?;
            let meta_path = dir.join(meta_name(self.handle));
            fs::rename(&tmp_meta, &meta_path)
                .map_err(|e| StoreError::io(format!("rename to {}", meta_path.display()), e))?;
            renamed.1 = true;
            store.hit(Step::CommitMetaRenamed)?;
            sync_dir(dir)
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp_meta);
            // Only files this write put in place, meta first (the commit point): an
            // older replica's files were never touched unless retired above.
            if renamed.1 {
                let _ = fs::remove_file(dir.join(meta_name(self.handle)));
            }
            if renamed.0 {
                let _ = fs::remove_file(&chunk_path);
            }
            // Otherwise `Drop` removes the temp data file.
            return Err(e);
        }
        self.done = true;
        let moved_from = if self.moving_out {
            store.lock().chunks.get(&self.handle).and_then(|e| e.packed)
        } else {
            None
        };
        for loc in retired.into_iter().chain(moved_from) {
            // Not synced: the files win over a packed copy of the same or an older
            // version at every start anyway.
            if let Err(e) = store.packs.kill(loc, false) {
                tracing::warn!(handle = %self.handle, error = %e, "could not mark a packed copy dead");
            }
        }
        let mut idx = store.lock();
        idx.reserved = idx.reserved.saturating_sub(self.reserved);
        if self.moving_out {
            if let Some(e) = idx.chunks.get_mut(&self.handle) {
                e.packed = None;
            }
            return Ok(self.len);
        }
        drop(idx);
        self.index(None);
        Ok(self.len)
    }

    /// Refuses to commit over a version as new as this one (another write of this
    /// chunk committed while this one ran), unless moving a packed copy out.
    fn check_newer(&self) -> Result<(), StoreError> {
        match self.store.get(&self.handle) {
            Some((have, _))
                if have > self.version || (have == self.version && !self.moving_out) =>
            {
                Err(ErrorCode::BadRequest {
                    reason: format!(
                        "chunk {} already exists here at version {have}",
                        self.handle
                    ),
                }
                .into())
            }
            _ => Ok(()),
        }
    }

    /// Puts the committed chunk in the index and the next report.
    fn index(&self, packed: Option<PackLoc>) {
        let mut idx = self.store.lock();
        idx.used += self.len;
        let mut entry = Entry::new(self.version, self.len);
        entry.packed = packed;
        idx.chunks.insert(self.handle, entry);
        idx.removed.retain(|h| *h != self.handle);
        idx.added.push(ChunkReport {
            handle: self.handle,
            version: self.version,
            size: self.len,
        });
    }

    /// Commits a chunk held in memory as one record of the open pack file: the
    /// record's fsync is the commit point, and an older version held here is
    /// retired only after it (the newer version wins at every start).
    fn commit_packed(mut self, data: &[u8], blocks: Vec<[u8; 32]>) -> Result<u64, StoreError> {
        self.check_newer()?;
        let store = self.store.clone();
        let record = pack::encode(self.handle, self.version, data, &blocks)?;
        let loc = store.packs.append(&record)?;
        store.hit(Step::PackSynced)?;
        if let Some(old) = store.unindex(self.handle, false) {
            let retired = match old.packed {
                Some(old) => store.packs.kill(old, false),
                None => [meta_name(self.handle), chunk_name(self.handle)]
                    .into_iter()
                    .map(|n| store.dir.join(n))
                    .try_for_each(|p| match fs::remove_file(&p) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            Err(StoreError::io(format!("remove {}", p.display()), e))
                        }
                        _ => Ok(()),
                    }),
            };
            if let Err(e) = retired {
                // Tidiness only: the newer packed version wins at the next start.
                tracing::warn!(handle = %self.handle, error = %e, "could not retire an older version");
            }
        }
        self.done = true;
        store.release(self.reserved);
        self.index(Some(loc));
        Ok(self.len)
    }
}

impl Drop for ChunkWriter {
    fn drop(&mut self) {
        if !self.done {
            self.store.release(self.reserved);
            self.file.take();
            let _ = fs::remove_file(&self.tmp_chunk);
        }
    }
}
