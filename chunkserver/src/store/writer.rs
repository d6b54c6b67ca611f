//! New chunks: written under a temp name, hashed block by block as they arrive, and
//! committed (see the store's docs for the order of the steps).

use std::fs::{self, File};
use std::io::Write;
use std::path::PathBuf;

use dfs_protocol::{ChunkHandle, ChunkReport, ChunkVersion, ErrorCode};

use super::direct::SequentialFile;
use super::meta::{
    chunk_name, encode_meta, meta_name, sync_dir, BlockHasher, ChunkMeta, MAX_CHUNK_LEN,
};
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
        let tmp_chunk = self
            .dir
            .join(format!("{handle}.{}.chunk.tmp", uuid::Uuid::new_v4()));
        let file = SequentialFile::create(&tmp_chunk, self.direct_io)
            .map_err(|e| StoreError::io(format!("create {}", tmp_chunk.display()), e))?;
        Ok(ChunkWriter {
            store: self.clone(),
            handle,
            version,
            tmp_chunk,
            file: Some(file),
            len: 0,
            reserved: 0,
            hasher: BlockHasher::new(Vec::new()),
            done: false,
        })
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
    len: u64,
    reserved: u64,
    hasher: BlockHasher,
    done: bool,
}

impl ChunkWriter {
    pub fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        let n = data.len() as u64;
        if self.len + n > MAX_CHUNK_LEN {
            return Err(ErrorCode::BadRequest {
                reason: format!("chunk {} would exceed {MAX_CHUNK_LEN} bytes", self.handle),
            }
            .into());
        }
        self.store.reserve(n)?;
        self.reserved += n;
        let file = self.file.as_mut().ok_or_else(|| {
            StoreError::io("write after commit", std::io::Error::other("writer closed"))
        })?;
        file.write_all(data)
            .map_err(|e| StoreError::io(format!("write {}", self.tmp_chunk.display()), e))?;
        self.len += n;
        self.hasher.update(data);
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
        let file = self.file.take().ok_or_else(|| {
            StoreError::io("commit twice", std::io::Error::other("writer closed"))
        })?;
        file.finish()
            .map_err(|e| StoreError::io(format!("fsync {}", self.tmp_chunk.display()), e))?;
        let store = self.store.clone();
        store.hit(Step::CommitDataSynced)?;
        let dir = &store.dir;
        if let Some((have, _)) = store.get(&self.handle) {
            // Another write of this chunk committed while this one ran.
            if have >= self.version {
                return Err(ErrorCode::BadRequest {
                    reason: format!(
                        "chunk {} already exists here at version {have}",
                        self.handle
                    ),
                }
                .into());
            }
        }
        let meta = ChunkMeta {
            handle: self.handle,
            version: self.version,
            len: self.len,
            blocks,
        };
        let tmp_meta = dir.join(format!("{}.{}.meta.tmp", self.handle, uuid::Uuid::new_v4()));
        let chunk_path = dir.join(chunk_name(self.handle));
        let mut renamed = (false, false);
        let result = (|| {
            let mut f = File::create(&tmp_meta)
                .map_err(|e| StoreError::io(format!("create {}", tmp_meta.display()), e))?;
            f.write_all(&encode_meta(&meta)?)
                .and_then(|_| f.sync_all())
                .map_err(|e| StoreError::io(format!("write {}", tmp_meta.display()), e))?;
            store.hit(Step::CommitMetaWritten)?;
            if store.unindex(self.handle, false) {
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
        let mut idx = store.lock();
        idx.reserved = idx.reserved.saturating_sub(self.reserved);
        idx.used += self.len;
        idx.chunks
            .insert(self.handle, Entry::new(self.version, self.len));
        idx.removed.retain(|h| *h != self.handle);
        idx.added.push(ChunkReport {
            handle: self.handle,
            version: self.version,
            size: self.len,
        });
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
