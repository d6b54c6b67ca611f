//! Reads of one chunk: every block checked against its stored checksum, here or
//! (`read_stored`) by whoever the blocks are sent to.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use dfs_protocol::{ChunkHandle, ChunkVersion, ErrorCode, CHECKSUM_BLOCK};

use super::meta::{chunk_name, decode_meta, meta_name, ChunkMeta};
use super::pack::Record;
use super::ChunkStore;
use crate::error::StoreError;

impl ChunkStore {
    /// Opens a chunk for verified reads at exactly `version`.
    pub fn open_reader(
        &self,
        handle: ChunkHandle,
        version: ChunkVersion,
    ) -> Result<ChunkReader, StoreError> {
        let _g = self.stripe(&handle);
        self.open_reader_locked(handle, version)
    }

    /// `open_reader`, for a caller that holds the chunk's stripe lock.
    pub(super) fn open_reader_locked(
        &self,
        handle: ChunkHandle,
        version: ChunkVersion,
    ) -> Result<ChunkReader, StoreError> {
        let entry = {
            let mut idx = self.lock();
            let e = idx
                .chunks
                .get_mut(&handle)
                .ok_or(ErrorCode::UnknownChunk { handle })?;
            e.touched = Instant::now();
            *e
        };
        if entry.version != version {
            return Err(ErrorCode::StaleVersion {
                handle,
                have: entry.version,
                want: version,
            }
            .into());
        }
        if let Some(loc) = entry.packed {
            let (record, file) = self
                .packs
                .read(loc)?
                .filter(|(r, _)| r.handle == handle && r.version == version && r.len == entry.len)
                .ok_or_else(|| {
                    tracing::warn!(%handle, "packed record damaged");
                    StoreError::Refused(ErrorCode::ChecksumMismatch { handle, offset: 0 })
                })?;
            return Ok(ChunkReader {
                handle,
                meta: ChunkMeta {
                    handle,
                    version,
                    len: record.len,
                    blocks: record.blocks,
                },
                src: Source::Packed {
                    file,
                    base: Record::data_at(loc.at),
                },
            });
        }
        let meta_path = self.dir.join(meta_name(handle));
        // A file of an indexed chunk gone from disk is damage, like a flipped bit.
        let damaged = |e: std::io::Error, path: &Path| {
            if e.kind() == std::io::ErrorKind::NotFound {
                tracing::warn!(%handle, file = %path.display(), "chunk file missing");
                StoreError::Refused(ErrorCode::ChecksumMismatch { handle, offset: 0 })
            } else {
                StoreError::io(format!("read {}", path.display()), e)
            }
        };
        let bytes = fs::read(&meta_path).map_err(|e| damaged(e, &meta_path))?;
        let meta = decode_meta(&bytes)
            .ok()
            .filter(|m| m.handle == handle && m.version == version)
            .ok_or_else(|| {
                tracing::warn!(%handle, "meta file damaged");
                StoreError::Refused(ErrorCode::ChecksumMismatch { handle, offset: 0 })
            })?;
        let path = self.dir.join(chunk_name(handle));
        let file = File::open(&path).map_err(|e| damaged(e, &path))?;
        Ok(ChunkReader {
            handle,
            meta,
            src: Source::Own(file),
        })
    }

    /// Like `open_reader`, but without marking the chunk busy (the scrubber's reads
    /// must not keep a chunk from looking idle).
    pub(super) fn open_reader_quietly(
        &self,
        handle: ChunkHandle,
        version: ChunkVersion,
    ) -> Result<ChunkReader, StoreError> {
        let touched = self.lock().chunks.get(&handle).map(|e| e.touched);
        let reader = self.open_reader(handle, version);
        if let (Some(t), Some(e)) = (touched, self.lock().chunks.get_mut(&handle)) {
            e.touched = t;
        }
        reader
    }
}

/// Reads of one chunk, verified block by block against its stored checksums.
#[derive(Debug)]
pub struct ChunkReader {
    handle: ChunkHandle,
    meta: ChunkMeta,
    src: Source,
}

/// Where a chunk's bytes are read from.
#[derive(Debug)]
enum Source {
    /// Its own file, opened for this reader.
    Own(File),
    /// A pack file, shared with other readers (so read by offset, never by seeking),
    /// from `base` on.
    Packed { file: Arc<File>, base: u64 },
}

impl ChunkReader {
    pub fn len(&self) -> u64 {
        self.meta.len
    }

    pub fn version(&self) -> ChunkVersion {
        self.meta.version
    }

    pub fn is_empty(&self) -> bool {
        self.meta.len == 0
    }

    /// `len` bytes at `offset`, after verifying every block they touch. A mismatch
    /// is an error, never data.
    pub fn read(&mut self, offset: u64, len: u64) -> Result<Bytes, StoreError> {
        let blocks = self.read_blocks(offset, len)?;
        if len == 0 {
            // No block was read: nothing to cut out of (`blocks.offset` is only the
            // start of the block `offset` falls in).
            return Ok(Bytes::new());
        }
        let start = (offset - blocks.offset) as usize;
        Ok(blocks.data.slice(start..start + len as usize))
    }

    /// The whole checksum blocks that cover `len` bytes at `offset`, verified, with
    /// their checksums (for the reader to verify again end to end).
    pub fn read_blocks(&mut self, offset: u64, len: u64) -> Result<Blocks, StoreError> {
        let blocks = self.read_stored(offset, len)?;
        if let Err(bad) = dfs_protocol::checksum::verify_blocks(&blocks.data, &blocks.checksums) {
            return Err(ErrorCode::ChecksumMismatch {
                handle: self.handle,
                offset: blocks.offset + bad as u64 * CHECKSUM_BLOCK,
            }
            .into());
        }
        Ok(blocks)
    }

    /// The whole checksum blocks that cover `len` bytes at `offset`, and their
    /// stored checksums, without reading the blocks (for a reader that verifies
    /// them itself). A meta with too few checksums is damage found here.
    pub fn stored_span(&self, offset: u64, len: u64) -> Result<Span, StoreError> {
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= self.meta.len)
            .ok_or_else(|| ErrorCode::BadRequest {
                reason: format!(
                    "range {offset}+{len} is beyond the end of chunk {} ({} bytes)",
                    self.handle, self.meta.len
                ),
            })?;
        let first = offset / CHECKSUM_BLOCK;
        if len == 0 {
            return Ok(Span {
                offset: first * CHECKSUM_BLOCK,
                len: 0,
                checksums: Vec::new(),
            });
        }
        let last = (end - 1) / CHECKSUM_BLOCK;
        let start = first * CHECKSUM_BLOCK;
        let stop = ((last + 1) * CHECKSUM_BLOCK).min(self.meta.len);
        let checksums = self
            .meta
            .blocks
            .get(first as usize..=last as usize)
            .map(<[[u8; 32]]>::to_vec)
            .ok_or(ErrorCode::ChecksumMismatch {
                handle: self.handle,
                offset: start,
            })?;
        Ok(Span {
            offset: start,
            len: stop - start,
            checksums,
        })
    }

    /// The file the chunk's bytes are in, and where its byte 0 is in that file,
    /// once the file is found to hold all of them (a shorter one is damage).
    pub fn stored_file(&self) -> Result<(&File, u64), StoreError> {
        let (file, base) = match &self.src {
            Source::Own(f) => (f, 0),
            Source::Packed { file, base } => (&**file, *base),
        };
        let have = file
            .metadata()
            .map_err(|e| StoreError::io(format!("stat chunk {}", self.handle), e))?
            .len();
        if have < base.saturating_add(self.meta.len) {
            let short = have.saturating_sub(base);
            return Err(ErrorCode::ChecksumMismatch {
                handle: self.handle,
                offset: short - short % CHECKSUM_BLOCK,
            }
            .into());
        }
        Ok((file, base))
    }

    /// `read_blocks` without hashing the blocks: as stored, with their stored
    /// checksums, for a reader that verifies them itself. A file shorter than its
    /// meta, or a meta with too few checksums, is still damage found here.
    pub fn read_stored(&mut self, offset: u64, len: u64) -> Result<Blocks, StoreError> {
        let Span {
            offset: start,
            len: want,
            checksums,
        } = self.stored_span(offset, len)?;
        if want == 0 {
            return Ok(Blocks {
                offset: start,
                data: Bytes::new(),
                checksums,
            });
        }
        let want = want as usize;
        // Read straight into spare capacity: zeroing a buffer only to overwrite it
        // was a measurable share of a get's chunkserver CPU.
        let mut buf = Vec::with_capacity(want);
        let ctx = || format!("read chunk {}", self.handle);
        match &mut self.src {
            Source::Own(file) => {
                file.seek(SeekFrom::Start(start))
                    .map_err(|e| StoreError::io(ctx(), e))?;
                file.take(want as u64)
                    .read_to_end(&mut buf)
                    .map_err(|e| StoreError::io(ctx(), e))?;
            }
            Source::Packed { file, base } => {
                // Packed chunks are small: zeroing the buffer first costs little.
                buf.resize(want, 0);
                file.read_exact_at(&mut buf, *base + start)
                    .map_err(|e| StoreError::io(ctx(), e))?;
            }
        }
        if buf.len() != want {
            // A chunk file shorter than its meta says: damaged on disk.
            return Err(ErrorCode::ChecksumMismatch {
                handle: self.handle,
                offset: start,
            }
            .into());
        }
        Ok(Blocks {
            offset: start,
            data: Bytes::from(buf),
            checksums,
        })
    }
}

/// Whole checksum blocks of a chunk, not read, with their stored checksums.
#[derive(Debug, Clone)]
pub struct Span {
    /// Chunk offset of the first byte (a multiple of the checksum block).
    pub offset: u64,
    pub len: u64,
    pub checksums: Vec<[u8; 32]>,
}

/// Whole checksum blocks read from a chunk, with their checksums (verified here
/// by `read_blocks`, as stored by `read_stored`).
#[derive(Debug, Clone)]
pub struct Blocks {
    /// Chunk offset of the first byte (a multiple of the checksum block).
    pub offset: u64,
    pub data: Bytes,
    pub checksums: Vec<[u8; 32]>,
}
