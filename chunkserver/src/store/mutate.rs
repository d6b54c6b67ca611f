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
    /// The committed meta of a chunk at exactly `version`, moved out of its pack
    /// first if packed; a damaged one is a checksum error, like damaged data. The
    /// caller holds the chunk's stripe lock.
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
        // Changes in place need files of their own.
        self.move_out_locked(handle)?;
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
        let len = pieces.iter().map(|p| p.len() as u64).sum();
        let mut next = pieces.iter().cloned();
        self.append_from(handle, version, offset, len, || next.next())
    }

    /// [`ChunkStore::append`] of `len` bytes taken from `next` as they come (a
    /// secondary writes a forwarded batch while it still arrives). `next` ending
    /// before `len` bytes (the sender gave up) fails the append with nothing
    /// committed; bytes past `len` are refused the same way.
    ///
    /// The stripe lock is held to check and prepare, and again to commit, but not
    /// while the bytes arrive: a slow sender must not hold up every chunk of its
    /// stripe. Meanwhile the chunk is marked as being appended to, which refuses a
    /// second append; a bump, cut or removal in between fails the commit instead.
    pub fn append_from(
        &self,
        handle: ChunkHandle,
        version: ChunkVersion,
        offset: u64,
        len: u64,
        mut next: impl FnMut() -> Option<Bytes>,
    ) -> Result<u64, StoreError> {
        let (mut hasher, grow, end) = {
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
            let end = offset
                .checked_add(len)
                .filter(|e| *e <= MAX_CHUNK_LEN)
                .ok_or_else(|| ErrorCode::BadRequest {
                    reason: format!("chunk {handle} would exceed {MAX_CHUNK_LEN} bytes"),
                })?;
            // Checked before the meta below is cut, and marked only once all is
            // ready; both under the stripe lock, which every append takes first.
            if self.lock().appending.contains(&handle) {
                return Err(ErrorCode::Unavailable {
                    reason: format!("chunk {handle} is being appended to already"),
                }
                .into());
            }
            let hasher = self.hasher_at(&meta, offset)?;
            let grow = end.saturating_sub(meta.len);
            self.reserve(grow)?;
            if meta.len > offset {
                // The bytes past `offset` are about to be overwritten: the meta must
                // stop claiming them first, or a crash in between leaves checksums
                // for bytes that are no longer on disk.
                let cut = ChunkMeta {
                    handle,
                    version,
                    len: offset,
                    blocks: hasher.clone().finish(),
                };
                if let Err(e) = self.write_meta(&cut) {
                    self.release(grow);
                    return Err(e);
                }
            }
            self.lock().appending.insert(handle);
            (hasher, grow, end)
        };
        let result = (|| {
            let path = self.dir.join(chunk_name(handle));
            let ctx = || format!("write {}", path.display());
            let io = |e| StoreError::io(ctx(), e);
            let direct = if self.direct_io {
                direct::InPlace::open(&path, offset, &self.buffers).map_err(io)?
            } else {
                None
            };
            let mut target = match direct {
                Some(w) => Target::Direct(w),
                None => Target::Buffered(OpenOptions::new().write(true).open(&path).map_err(io)?),
            };
            let mut at = offset;
            while at < end {
                let Some(piece) = next() else {
                    return Err(StoreError::from(ErrorCode::BadRequest {
                        reason: format!("{} bytes sent, {len} announced", at - offset),
                    }));
                };
                if piece.len() as u64 > end - at {
                    return Err(ErrorCode::BadRequest {
                        reason: format!("more than the {len} bytes announced"),
                    }
                    .into());
                }
                match &mut target {
                    Target::Direct(w) => w.write(&piece).map_err(io)?,
                    Target::Buffered(f) => {
                        std::os::unix::fs::FileExt::write_all_at(f, &piece, at).map_err(io)?
                    }
                }
                hasher.update(&piece);
                at += piece.len() as u64;
            }
            let file = match target {
                Target::Direct(w) => w.finish().map_err(io)?,
                Target::Buffered(f) => f,
            };
            self.hit(Step::AppendDataWritten)?;
            file.sync_data().map_err(io)?;
            self.hit(Step::AppendDataSynced)?;
            let _g = self.stripe(&handle);
            if !self.unchanged(&handle, version, offset) {
                return Err(ErrorCode::Unavailable {
                    reason: format!("chunk {handle} changed during the append"),
                }
                .into());
            }
            self.write_meta(&ChunkMeta {
                handle,
                version,
                len: end,
                blocks: hasher.finish(),
            })
        })();
        self.release(grow);
        self.lock().appending.remove(&handle);
        result.map(|()| end)
    }
}

/// Where an append's bytes go: around the page cache, or through it.
enum Target<'a> {
    Direct(direct::InPlace<'a>),
    Buffered(File),
}
