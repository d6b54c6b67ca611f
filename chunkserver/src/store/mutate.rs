//! Changes to a committed replica in place: a new version for a lease (bump), a cut
//! back to the acknowledged length (truncate), and appended bytes. Each replaces the
//! meta file atomically, the commit point; data goes to disk before the meta that
//! covers it.

use std::fs::{self, File, OpenOptions};
use std::io::Write;

use bytes::Bytes;
use dfs_protocol::{ChunkHandle, ChunkReport, ChunkVersion, ErrorCode, CHECKSUM_BLOCK};

use super::meta::{
    chunk_name, decode_meta, encode_meta, meta_name, sync_dir, BlockHasher, ChunkMeta,
    MAX_CHUNK_LEN,
};
use super::{direct, ChunkStore, Entry};
use crate::error::StoreError;
use crate::failpoint::Step;

impl ChunkStore {
    /// The committed meta of a chunk at exactly `version`; a damaged one is a
    /// checksum error, like damaged data.
    fn read_meta(
        &self,
        handle: ChunkHandle,
        version: ChunkVersion,
    ) -> Result<ChunkMeta, StoreError> {
        let have = self
            .get(&handle)
            .ok_or(ErrorCode::UnknownChunk { handle })?
            .0;
        if have != version {
            return Err(ErrorCode::StaleVersion {
                handle,
                have,
                want: version,
            }
            .into());
        }
        let path = self.dir.join(meta_name(handle));
        let bytes =
            fs::read(&path).map_err(|e| StoreError::io(format!("read {}", path.display()), e))?;
        decode_meta(&bytes)
            .ok()
            .filter(|m| m.handle == handle && m.version == version)
            .ok_or_else(|| ErrorCode::ChecksumMismatch { handle, offset: 0 }.into())
    }

    /// Replaces a chunk's meta file atomically (temp, fsync, rename, directory fsync)
    /// and updates the index and the pending report.
    fn write_meta(&self, meta: &ChunkMeta) -> Result<(), StoreError> {
        let tmp = self
            .dir
            .join(format!("{}.{}.meta.tmp", meta.handle, uuid::Uuid::new_v4()));
        let result = (|| {
            let mut f = File::create(&tmp)
                .map_err(|e| StoreError::io(format!("create {}", tmp.display()), e))?;
            f.write_all(&encode_meta(meta)?)
                .and_then(|_| f.sync_data())
                .map_err(|e| StoreError::io(format!("write {}", tmp.display()), e))?;
            self.hit(Step::MetaTmpWritten)?;
            let path = self.dir.join(meta_name(meta.handle));
            fs::rename(&tmp, &path)
                .map_err(|e| StoreError::io(format!("rename to {}", path.display()), e))?;
            self.hit(Step::MetaRenamed)?;
            sync_dir(&self.dir)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result?;
        let mut idx = self.lock();
        let old = idx.chunks.get(&meta.handle).map_or(0, |e| e.len);
        idx.used = idx.used.saturating_sub(old) + meta.len;
        let mut entry = Entry::new(meta.version, meta.len);
        if let Some(e) = idx.chunks.get(&meta.handle) {
            entry.scrubbed = e.scrubbed;
        }
        idx.chunks.insert(meta.handle, entry);
        idx.added.retain(|r| r.handle != meta.handle);
        idx.added.push(ChunkReport {
            handle: meta.handle,
            version: meta.version,
            size: meta.len,
        });
        Ok(())
    }

    /// Checksums of the whole blocks before `at`, and a hasher holding the bytes of
    /// the block `at` falls in, read back and verified against `meta`.
    fn hasher_at(&self, meta: &ChunkMeta, at: u64) -> Result<BlockHasher, StoreError> {
        let full = (at / CHECKSUM_BLOCK) as usize;
        let mut hasher = BlockHasher::new(
            meta.blocks
                .get(..full)
                .map(<[_]>::to_vec)
                .unwrap_or_default(),
        );
        let start = full as u64 * CHECKSUM_BLOCK;
        if at > start {
            let stop = (start + CHECKSUM_BLOCK).min(meta.len);
            let mut buf = vec![0u8; (stop - start) as usize];
            let path = self.dir.join(chunk_name(meta.handle));
            let damaged = || {
                StoreError::from(ErrorCode::ChecksumMismatch {
                    handle: meta.handle,
                    offset: start,
                })
            };
            let file = File::open(&path)
                .map_err(|e| StoreError::io(format!("open {}", path.display()), e))?;
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf, start).map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    damaged()
                } else {
                    StoreError::io(format!("read {}", path.display()), e)
                }
            })?;
            let want = meta.blocks.get(full).ok_or_else(damaged)?;
            if blake3::hash(&buf).as_bytes() != want {
                return Err(damaged());
            }
            hasher.update(&buf[..(at - start) as usize]);
        }
        Ok(hasher)
    }

    /// Moves a replica to `version` for a new append lease: from `from` or any
    /// version between, or creates it empty when `from` is `None`. Already at
    /// `version` is fine (a repeated request). Returns the replica's length.
    pub fn bump(
        &self,
        handle: ChunkHandle,
        from: Option<ChunkVersion>,
        version: ChunkVersion,
    ) -> Result<u64, StoreError> {
        let _g = self.stripe(&handle);
        match (self.get(&handle), from) {
            (Some((have, len)), _) if have == version => Ok(len),
            (None, None) => self.create(handle, version)?.commit_locked(),
            (Some((have, _)), Some(from)) if have >= from && have < version => {
                let mut meta = self.read_meta(handle, have)?;
                meta.version = version;
                self.write_meta(&meta)?;
                Ok(meta.len)
            }
            (Some((have, _)), _) => Err(ErrorCode::StaleVersion {
                handle,
                have,
                want: version,
            }
            .into()),
            (None, Some(_)) => Err(ErrorCode::UnknownChunk { handle }.into()),
        }
    }

    /// Cuts a replica back to `size` bytes (what lies past it was never acknowledged).
    /// Only the meta changes: readers holding the old one still find their bytes.
    pub fn truncate(
        &self,
        handle: ChunkHandle,
        version: ChunkVersion,
        size: u64,
    ) -> Result<u64, StoreError> {
        let _g = self.stripe(&handle);
        let meta = self.read_meta(handle, version)?;
        if meta.len <= size {
            return Ok(meta.len);
        }
        let blocks = self.hasher_at(&meta, size)?.finish();
        self.write_meta(&ChunkMeta {
            handle,
            version,
            len: size,
            blocks,
        })?;
        Ok(size)
    }

    /// Writes `pieces` at `offset` of a replica at `version` and makes them durable:
    /// data first, then the meta that covers it (the commit point). Bytes past
    /// `offset` are replaced (never acknowledged); the prefix is never rewritten.
    /// Returns the new length.
    pub fn append(
        &self,
        handle: ChunkHandle,
        version: ChunkVersion,
        offset: u64,
        pieces: &[Bytes],
    ) -> Result<u64, StoreError> {
        let _g = self.stripe(&handle);
        let meta = self.read_meta(handle, version)?;
        if meta.len < offset {
            return Err(ErrorCode::BadRequest {
                reason: format!(
                    "append at {offset} past the end of chunk {handle} ({} bytes)",
                    meta.len
                ),
            }
            .into());
        }
        let n: u64 = pieces.iter().map(|p| p.len() as u64).sum();
        let end = offset + n;
        if end > MAX_CHUNK_LEN {
            return Err(ErrorCode::BadRequest {
                reason: format!("chunk {handle} would exceed {MAX_CHUNK_LEN} bytes"),
            }
            .into());
        }
        let grow = end.saturating_sub(meta.len);
        self.reserve(grow)?;
        let result = (|| {
            let mut hasher = self.hasher_at(&meta, offset)?;
            if meta.len > offset {
                // The bytes past `offset` are about to be overwritten: the meta must stop
                // claiming them first, or a crash in between leaves checksums for bytes
                // that are no longer on disk.
                self.write_meta(&ChunkMeta {
                    handle,
                    version,
                    len: offset,
                    blocks: hasher.clone().finish(),
                })?;
            }
            let path = self.dir.join(chunk_name(handle));
            let ctx = || format!("write {}", path.display());
            let direct = if self.direct_io {
                direct::write_at(&path, offset, pieces, &self.buffers)
                    .map_err(|e| StoreError::io(ctx(), e))?
            } else {
                None
            };
            let file = match direct {
                Some(file) => file,
                None => {
                    let file = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(|e| StoreError::io(ctx(), e))?;
                    let mut at = offset;
                    for p in pieces {
                        std::os::unix::fs::FileExt::write_all_at(&file, p, at)
                            .map_err(|e| StoreError::io(ctx(), e))?;
                        at += p.len() as u64;
                    }
                    file
                }
            };
            for p in pieces {
                hasher.update(p);
            }
            self.hit(Step::AppendDataWritten)?;
            file.sync_data().map_err(|e| StoreError::io(ctx(), e))?;
            self.hit(Step::AppendDataSynced)?;
            self.write_meta(&ChunkMeta {
                handle,
                version,
                len: end,
                blocks: hasher.finish(),
            })
        })();
        self.release(grow);
        result.map(|()| end)
    }
}
