//! The chunk store: one file per chunk plus a checksum file beside it.
//!
//! Layout under `<data>/chunks/`:
//! - `<handle>.chunk`: the chunk's bytes, raw.
//! - `<handle>.meta`: format byte, bincode of [`ChunkMeta`] (version, length, one blake3
//!   hash per 64 KiB block), then a blake3 hash of all that, so a damaged meta file is
//!   recognised as such.
//! - `*.tmp`: writes in progress; removed at start.
//!
//! Damaged replicas are moved to `<data>/quarantine/` (never served again, kept for a
//! human to look at) and reported to the master, which replaces them.
//!
//! A chunk is written under temporary names, both files are fsynced, an older (stale)
//! version held here is retired by removing its meta, the chunk file is renamed first
//! and the meta file last, then the directory is fsynced: the meta file's presence is
//! the commit point. An append that rewrites an unacknowledged tail cuts the meta back
//! before touching those bytes. So no meta file ever describes bytes that are not on
//! disk; `tests/store_crash.rs` kills a process at every step to show it. At start only
//! meta files are read (no rehash); a chunk file without its meta is a crashed write
//! and is removed.
//!
//! Every change to a chunk's files or index entry, and every reader's open, holds the
//! chunk's stripe lock, so a reader never pairs one version's index entry with another
//! version's meta file, and damage is only declared on a replica that did not move.
//!
//! Every method here blocks; callers run them on the blocking pool.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use dfs_protocol::{ChunkHandle, ChunkReport, ChunkVersion, ErrorCode, CHECKSUM_BLOCK};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::failpoint::{Failpoints, Step};

const META_FORMAT: u8 = 1;
/// A chunk is never longer than this, whatever the client sends.
pub const MAX_CHUNK_LEN: u64 = 4 << 30;
/// A meta file is never larger than this (4 GiB of chunk at 32 bytes per 64 KiB, plus slack).
const MAX_META_LEN: u64 = (MAX_CHUNK_LEN / CHECKSUM_BLOCK) * 40 + 4096;

/// What a chunk's meta file holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkMeta {
    handle: ChunkHandle,
    version: ChunkVersion,
    len: u64,
    blocks: Vec<[u8; 32]>,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    version: ChunkVersion,
    len: u64,
    /// Last read or write: the scrubber leaves busy chunks alone.
    touched: Instant,
    /// Last full verification by the scrubber.
    scrubbed: Option<Instant>,
}

impl Entry {
    fn new(version: ChunkVersion, len: u64) -> Entry {
        Entry {
            version,
            len,
            touched: Instant::now(),
            scrubbed: None,
        }
    }
}

/// What changed since the last report to the master.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<ChunkReport>,
    pub removed: Vec<ChunkHandle>,
    pub corrupt: Vec<ChunkHandle>,
}

#[derive(Debug, Default)]
struct Index {
    chunks: HashMap<ChunkHandle, Entry>,
    used: u64,
    /// Bytes promised to writes in progress, so concurrent writes cannot overcommit.
    reserved: u64,
    added: Vec<ChunkReport>,
    removed: Vec<ChunkHandle>,
    corrupt: Vec<ChunkHandle>,
}

/// The chunks held on this server's disk.
#[derive(Debug, Clone)]
pub struct ChunkStore {
    dir: PathBuf,
    capacity: u64,
    index: Arc<Mutex<Index>>,
    /// Serialise changes to one chunk's files (bumps, appends, truncations): a chunk
    /// hashes to one stripe. Everything that moves a chunk's files or its index entry
    /// holds it, and so does opening a reader, so a reader never pairs an index entry
    /// with another version's meta file.
    stripes: Arc<[Mutex<()>; STRIPES]>,
    failpoints: Failpoints,
}

/// What the scrubber found in one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scrub {
    /// Every block verified; this many bytes.
    Clean(u64),
    /// Appended to, cut back, replaced or deleted meanwhile: verified another time.
    Changed,
    /// Damaged at this offset, and quarantined.
    Damaged(u64),
}

const STRIPES: usize = 64;

fn chunk_name(handle: ChunkHandle) -> String {
    format!("{handle}.chunk")
}

fn meta_name(handle: ChunkHandle) -> String {
    format!("{handle}.meta")
}

fn encode_meta(meta: &ChunkMeta) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![META_FORMAT];
    let body = bincode::serde::encode_to_vec(meta, bincode::config::standard())
        .map_err(|e| StoreError::io("encode meta", std::io::Error::other(e.to_string())))?;
    out.extend(body);
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    Ok(out)
}

/// Parses a meta file (format byte, bincode body, blake3 of both); public so the
/// fuzz targets can reach it. Never panics, whatever the bytes.
pub fn decode_meta(bytes: &[u8]) -> Result<ChunkMeta, String> {
    if bytes.len() < 33 {
        return Err("too short".into());
    }
    let (body, sum) = bytes.split_at(bytes.len() - 32);
    if blake3::hash(body).as_bytes() != sum {
        return Err("checksum of the meta file does not match".into());
    }
    if body[0] != META_FORMAT {
        return Err(format!("unknown format {}", body[0]));
    }
    let config = bincode::config::standard().with_limit::<{ MAX_META_LEN as usize }>();
    let (meta, _) =
        bincode::serde::decode_from_slice(&body[1..], config).map_err(|e| e.to_string())?;
    Ok(meta)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(format!("fsync {}", dir.display()), e))
}

impl ChunkStore {
    /// Opens the store under `data_dir/chunks`, removing what crashed writes left and
    /// indexing every committed chunk from its meta file. Without a `capacity`, the
    /// store may fill what it holds plus what the disk has free now.
    pub fn open(data_dir: &Path, capacity: Option<u64>) -> Result<ChunkStore, StoreError> {
        let dir = data_dir.join("chunks");
        fs::create_dir_all(&dir)
            .map_err(|e| StoreError::io(format!("create {}", dir.display()), e))?;
        let mut index = Index::default();
        let mut chunk_files = Vec::new();
        let mut unreadable = std::collections::HashSet::new();
        let entries =
            fs::read_dir(&dir).map_err(|e| StoreError::io(format!("list {}", dir.display()), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(format!("list {}", dir.display()), e))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                tracing::info!(file = %name, "removing a write left by a crash");
                let _ = fs::remove_file(&path);
            } else if let Some(stem) = name.strip_suffix(".meta") {
                let Ok(handle) = stem.parse::<ChunkHandle>() else {
                    continue;
                };
                match fs::read(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|b| decode_meta(&b))
                {
                    Ok(meta) if meta.handle == handle => {
                        index.used += meta.len;
                        index
                            .chunks
                            .insert(handle, Entry::new(meta.version, meta.len));
                    }
                    Ok(_) | Err(_) => {
                        // Never served (the master re-replicates what it misses), and
                        // never deleted either: a newer build or a human may still
                        // read it. Both files go to quarantine below.
                        tracing::warn!(file = %name, "unreadable meta file: chunk quarantined");
                        unreadable.insert(handle);
                    }
                }
            } else if let Some(stem) = name.strip_suffix(".chunk") {
                if let Ok(handle) = stem.parse::<ChunkHandle>() {
                    chunk_files.push((handle, path));
                }
            }
        }
        if !unreadable.is_empty() {
            let qdir = dir.with_file_name("quarantine");
            fs::create_dir_all(&qdir)
                .map_err(|e| StoreError::io(format!("create {}", qdir.display()), e))?;
            for handle in &unreadable {
                let stamp = uuid::Uuid::new_v4();
                // Meta first, as in `quarantine`: a chunk file left alone is uncommitted.
                for name in [meta_name(*handle), chunk_name(*handle)] {
                    let to = qdir.join(format!("{stamp}.{name}"));
                    match fs::rename(dir.join(&name), &to) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            return Err(StoreError::io(format!("quarantine {name}"), e));
                        }
                    }
                }
            }
        }
        for (handle, path) in chunk_files {
            if !index.chunks.contains_key(&handle) && !unreadable.contains(&handle) {
                tracing::info!(%handle, "removing a chunk file without its meta");
                let _ = fs::remove_file(path);
            }
        }
        let capacity = match capacity {
            Some(c) => c,
            None => fs4::available_space(&dir)
                .map_err(|e| StoreError::io(format!("free space of {}", dir.display()), e))?
                .saturating_add(index.used),
        };
        Ok(ChunkStore {
            dir,
            capacity,
            index: Arc::new(Mutex::new(index)),
            stripes: Arc::new(std::array::from_fn(|_| Mutex::new(()))),
            failpoints: Failpoints::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        self.index
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The failure injection hooks of this store (and its clones), for tests.
    pub fn failpoints(&self) -> &Failpoints {
        &self.failpoints
    }

    fn hit(&self, step: Step) -> Result<(), StoreError> {
        self.failpoints
            .hit(step)
            .map_err(|e| StoreError::io(format!("{step:?}"), e))
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    pub fn used(&self) -> u64 {
        self.lock().used
    }

    pub fn len(&self) -> usize {
        self.lock().chunks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every chunk held; clears the pending changes, which the full list supersedes.
    pub fn full_report(&self) -> Vec<ChunkReport> {
        let mut idx = self.lock();
        idx.added.clear();
        idx.removed.clear();
        idx.chunks
            .iter()
            .map(|(h, e)| ChunkReport {
                handle: *h,
                version: e.version,
                size: e.len,
            })
            .collect()
    }

    /// Chunks added, removed and found damaged since the last report.
    pub fn take_changes(&self) -> Changes {
        let mut idx = self.lock();
        Changes {
            added: std::mem::take(&mut idx.added),
            removed: std::mem::take(&mut idx.removed),
            corrupt: std::mem::take(&mut idx.corrupt),
        }
    }

    /// The version and length of a chunk held here.
    pub fn get(&self, handle: &ChunkHandle) -> Option<(ChunkVersion, u64)> {
        self.lock().chunks.get(handle).map(|e| (e.version, e.len))
    }

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
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp_chunk)
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

    /// Reserves `n` more bytes of capacity for a write in progress.
    fn reserve(&self, n: u64) -> Result<(), StoreError> {
        let mut idx = self.lock();
        let committed = idx.used + idx.reserved;
        if committed + n > self.capacity {
            return Err(ErrorCode::NoSpace {
                needed: n,
                available: self.capacity.saturating_sub(committed),
            }
            .into());
        }
        idx.reserved += n;
        Ok(())
    }

    fn release(&self, n: u64) {
        let mut idx = self.lock();
        idx.reserved = idx.reserved.saturating_sub(n);
    }

    /// Opens a chunk for verified reads at exactly `version`.
    pub fn open_reader(
        &self,
        handle: ChunkHandle,
        version: ChunkVersion,
    ) -> Result<ChunkReader, StoreError> {
        let _g = self.stripe(&handle);
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
        Ok(ChunkReader { handle, meta, file })
    }

    /// Takes a chunk out of the index and queues the change for the next report.
    fn unindex(&self, handle: ChunkHandle, corrupt: bool) -> bool {
        let mut idx = self.lock();
        let Some(e) = idx.chunks.remove(&handle) else {
            return false;
        };
        idx.used = idx.used.saturating_sub(e.len);
        idx.added.retain(|r| r.handle != handle);
        idx.removed.push(handle);
        if corrupt {
            idx.corrupt.push(handle);
        }
        true
    }

    /// Deletes a chunk (at any version).
    pub fn delete(&self, handle: ChunkHandle) -> Result<bool, StoreError> {
        let _g = self.stripe(&handle);
        let removed = self.unindex(handle, false);
        if removed {
            // Meta first: without it the chunk is no longer committed, even if we crash here.
            for name in [meta_name(handle), chunk_name(handle)] {
                let p = self.dir.join(name);
                if let Err(e) = fs::remove_file(&p) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        return Err(StoreError::io(format!("remove {}", p.display()), e));
                    }
                }
            }
        }
        Ok(removed)
    }

    /// Takes a damaged replica out of service: its files move to `quarantine/`, it
    /// leaves the index, and the next heartbeat reports it removed and corrupt.
    pub fn quarantine(&self, handle: ChunkHandle) -> Result<bool, StoreError> {
        let _g = self.stripe(&handle);
        self.quarantine_locked(handle)
    }

    /// Quarantines a replica found damaged at `version` (and, when known, `len`), unless
    /// it moved on meanwhile: a checksum error on a replica that was bumped, appended
    /// to, cut back or replaced under the reader is a race, not damage. Returns whether
    /// it was quarantined.
    pub fn quarantine_damaged(
        &self,
        handle: ChunkHandle,
        version: ChunkVersion,
        len: Option<u64>,
    ) -> Result<bool, StoreError> {
        let _g = self.stripe(&handle);
        match self.get(&handle) {
            Some((v, l)) if v == version && len.is_none_or(|len| len == l) => {
                self.quarantine_locked(handle)
            }
            _ => Ok(false),
        }
    }

    fn quarantine_locked(&self, handle: ChunkHandle) -> Result<bool, StoreError> {
        if !self.unindex(handle, true) {
            return Ok(false);
        }
        let qdir = self.quarantine_dir();
        fs::create_dir_all(&qdir)
            .map_err(|e| StoreError::io(format!("create {}", qdir.display()), e))?;
        let stamp = uuid::Uuid::new_v4();
        // Meta first: without it the chunk is not committed, even if we crash here.
        for name in [meta_name(handle), chunk_name(handle)] {
            let from = self.dir.join(&name);
            let to = qdir.join(format!("{stamp}.{name}"));
            if let Err(e) = fs::rename(&from, &to) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    let _ = fs::remove_file(&from);
                }
            }
        }
        tracing::warn!(%handle, dir = %qdir.display(), "damaged replica quarantined");
        Ok(true)
    }

    pub fn quarantine_dir(&self) -> PathBuf {
        self.dir.with_file_name("quarantine")
    }

    /// Reads a whole chunk, verifying every block, and quarantines it when damaged.
    /// Blocking; used by the scrubber.
    pub fn verify(&self, handle: ChunkHandle) -> Result<Scrub, StoreError> {
        let Some((version, _)) = self.get(&handle) else {
            return Ok(Scrub::Changed);
        };
        let damaged = |offset: u64, len: Option<u64>| -> Result<Scrub, StoreError> {
            Ok(if self.quarantine_damaged(handle, version, len)? {
                Scrub::Damaged(offset)
            } else {
                Scrub::Changed
            })
        };
        let mut reader = match self.open_reader_quietly(handle, version) {
            Ok(r) => r,
            Err(StoreError::Refused(ErrorCode::ChecksumMismatch { offset, .. })) => {
                return damaged(offset, None)
            }
            Err(StoreError::Refused(_)) => return Ok(Scrub::Changed),
            Err(e) => return Err(e),
        };
        let len = reader.len();
        let mut pos = 0;
        while pos < len {
            let n = (len - pos).min(1 << 20);
            match reader.read_blocks(pos, n) {
                Ok(_) => {}
                Err(StoreError::Refused(ErrorCode::ChecksumMismatch { offset, .. })) => {
                    return damaged(offset, Some(len))
                }
                Err(e) => return Err(e),
            }
            pos += n;
        }
        if let Some(e) = self.lock().chunks.get_mut(&handle) {
            e.scrubbed = Some(Instant::now());
        }
        Ok(Scrub::Clean(len))
    }

    /// Like `open_reader`, but without marking the chunk busy (the scrubber's reads
    /// must not keep a chunk from looking idle).
    fn open_reader_quietly(
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

    /// Chunks idle for at least `idle`, least recently scrubbed first.
    pub fn scrub_candidates(&self, idle: std::time::Duration) -> Vec<ChunkHandle> {
        let now = Instant::now();
        let idx = self.lock();
        let mut out: Vec<(Option<Instant>, ChunkHandle)> = idx
            .chunks
            .iter()
            .filter(|(_, e)| now.saturating_duration_since(e.touched) >= idle)
            .map(|(h, e)| (e.scrubbed, *h))
            .collect();
        out.sort();
        out.into_iter().map(|(_, h)| h).collect()
    }

    fn stripe(&self, handle: &ChunkHandle) -> MutexGuard<'_, ()> {
        let i = (handle.0.as_u128() % STRIPES as u128) as usize;
        self.stripes[i]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

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
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| StoreError::io(ctx(), e))?;
            let mut at = offset;
            for p in pieces {
                std::os::unix::fs::FileExt::write_all_at(&file, p, at)
                    .map_err(|e| StoreError::io(ctx(), e))?;
                hasher.update(p);
                at += p.len() as u64;
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

    /// Whether a replica still is as a reader found it (same version and length): a
    /// checksum mismatch on one that changed meanwhile is a race, not damage.
    pub fn unchanged(&self, handle: &ChunkHandle, version: ChunkVersion, len: u64) -> bool {
        self.get(handle) == Some((version, len))
    }

    /// Path of a chunk's data file (for tests and tools that inspect the disk).
    pub fn chunk_path(&self, handle: ChunkHandle) -> PathBuf {
        self.dir.join(chunk_name(handle))
    }
}

/// blake3 per checksum block over bytes fed in order, possibly starting inside a block.
#[derive(Debug, Clone)]
struct BlockHasher {
    blocks: Vec<[u8; 32]>,
    partial: blake3::Hasher,
    partial_len: u64,
}

impl BlockHasher {
    fn new(blocks: Vec<[u8; 32]>) -> BlockHasher {
        BlockHasher {
            blocks,
            partial: blake3::Hasher::new(),
            partial_len: 0,
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let room = (CHECKSUM_BLOCK - self.partial_len) as usize;
            let take = room.min(data.len());
            self.partial.update(&data[..take]);
            self.partial_len += take as u64;
            data = &data[take..];
            if self.partial_len == CHECKSUM_BLOCK {
                self.blocks.push(*self.partial.finalize().as_bytes());
                self.partial.reset();
                self.partial_len = 0;
            }
        }
    }

    fn finish(mut self) -> Vec<[u8; 32]> {
        if self.partial_len > 0 {
            self.blocks.push(*self.partial.finalize().as_bytes());
        }
        self.blocks
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
    file: Option<File>,
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
    fn commit_locked(mut self) -> Result<u64, StoreError> {
        let blocks = std::mem::replace(&mut self.hasher, BlockHasher::new(Vec::new())).finish();
        let file = self.file.take().ok_or_else(|| {
            StoreError::io("commit twice", std::io::Error::other("writer closed"))
        })?;
        file.sync_all()
            .map_err(|e| StoreError::io(format!("fsync {}", self.tmp_chunk.display()), e))?;
        drop(file);
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

/// Reads of one chunk, verified block by block against its stored checksums.
#[derive(Debug)]
pub struct ChunkReader {
    handle: ChunkHandle,
    meta: ChunkMeta,
    file: File,
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
        let start = (offset - blocks.offset) as usize;
        Ok(blocks.data.slice(start..start + len as usize))
    }

    /// The whole checksum blocks that cover `len` bytes at `offset`, verified, with
    /// their checksums (for the reader to verify again end to end).
    pub fn read_blocks(&mut self, offset: u64, len: u64) -> Result<Blocks, StoreError> {
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
            return Ok(Blocks {
                offset: first * CHECKSUM_BLOCK,
                data: Bytes::new(),
                checksums: Vec::new(),
            });
        }
        let last = (end - 1) / CHECKSUM_BLOCK;
        let start = first * CHECKSUM_BLOCK;
        let stop = ((last + 1) * CHECKSUM_BLOCK).min(self.meta.len);
        let mut buf = vec![0u8; (stop - start) as usize];
        let ctx = || format!("read chunk {}", self.handle);
        self.file
            .seek(SeekFrom::Start(start))
            .map_err(|e| StoreError::io(ctx(), e))?;
        if let Err(e) = self.file.read_exact(&mut buf) {
            // A chunk file shorter than its meta says: damaged on disk.
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                return Err(ErrorCode::ChecksumMismatch {
                    handle: self.handle,
                    offset: start,
                }
                .into());
            }
            return Err(StoreError::io(ctx(), e));
        }
        let range = first as usize..=last as usize;
        let checksums = self
            .meta
            .blocks
            .get(range)
            .map(<[[u8; 32]]>::to_vec)
            .unwrap_or_default();
        if let Err(bad) = dfs_protocol::checksum::verify_blocks(&buf, &checksums) {
            return Err(ErrorCode::ChecksumMismatch {
                handle: self.handle,
                offset: start + bad as u64 * CHECKSUM_BLOCK,
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

/// Verified whole blocks of a chunk.
#[derive(Debug, Clone)]
pub struct Blocks {
    /// Chunk offset of the first byte (a multiple of the checksum block).
    pub offset: u64,
    pub data: Bytes,
    pub checksums: Vec<[u8; 32]>,
}
