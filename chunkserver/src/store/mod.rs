//! The chunk store: one file per chunk plus a checksum file beside it.
//!
//! Layout under `<data>/chunks/`:
//! - `<handle>.chunk`: the chunk's bytes, raw.
//! - `<handle>.meta`: format byte, bincode of [`ChunkMeta`] (version, length, one blake3
//!   hash per 64 KiB block), then a blake3 hash of all that, so a damaged meta file is
//!   recognised as such.
//! - `*.tmp`: writes in progress; removed at start.
//!
//! - `<data>/packs/<seq>.pack`: small chunks, one record each, in shared append-only
//!   files ([`pack`] says why and how); a new chunk of at most `pack_below` bytes goes
//!   there instead of files of its own.
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
//!
//! Files: this one holds the index (what is held, at which version and length, the
//! report to the master), opening the store, deletion and quarantine; [`meta`] the
//! meta file format and block hashing; [`writer`] new chunks and their commit;
//! [`reader`] verified reads; [`mutate`] bumps, cuts and appends in place; [`direct`]
//! the `O_DIRECT` file a new chunk is written through; [`pack`] the pack files, and
//! [`packed`] what the store does with them (moving a chunk out, compaction).

pub mod direct;
mod meta;
mod mutate;
mod pack;
mod packed;
mod reader;
mod writer;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use dfs_protocol::{ChunkHandle, ChunkReport, ChunkVersion, ErrorCode};

use crate::error::StoreError;
use crate::failpoint::{Failpoints, Step};
use meta::{chunk_name, meta_name};

pub use meta::{decode_meta, ChunkMeta, MAX_CHUNK_LEN};
pub use pack::{find_packed, PackedReplica, MAX_PACKED};
pub use packed::Compaction;
pub use reader::{Blocks, ChunkReader, Span};
pub use writer::ChunkWriter;

#[derive(Clone, Copy, Debug)]
struct Entry {
    version: ChunkVersion,
    len: u64,
    /// Last read or write: the scrubber leaves busy chunks alone.
    touched: Instant,
    /// Last full verification by the scrubber.
    scrubbed: Option<Instant>,
    /// Where its record is, for a chunk held in a pack file; `None` for one in files
    /// of its own.
    packed: Option<pack::PackLoc>,
}

impl Entry {
    fn new(version: ChunkVersion, len: u64) -> Entry {
        Entry {
            version,
            len,
            touched: Instant::now(),
            scrubbed: None,
            packed: None,
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
    /// Chunks whose appended bytes are being written (outside the stripe lock, since
    /// a forwarded batch is written while it arrives): one writer per chunk at a time.
    appending: HashSet<ChunkHandle>,
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
    /// Chunks are written with `O_DIRECT` where the file system allows it: new ones,
    /// and appends.
    direct_io: bool,
    /// Aligned buffers for `O_DIRECT` appends.
    buffers: Arc<direct::BufferPool>,
    packs: Arc<pack::Packs>,
    /// New chunks of at most this many bytes go into a pack file; 0 packs none.
    pack_below: u64,
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
        let (packs, found) = pack::Packs::open(data_dir.join("packs"))?;
        let mut superseded = Vec::new();
        for (seq, records) in found {
            for (at, r) in records.into_iter().filter(|(_, r)| r.live) {
                let loc = pack::PackLoc { seq, at };
                let wins = match index.chunks.get(&r.handle) {
                    None => true,
                    // Files win a tie: a chunk is moved out of its pack before it changes.
                    Some(e) if e.packed.is_none() => r.version > e.version,
                    // A later record of the same version is a copy moved forward.
                    Some(e) => r.version >= e.version,
                };
                if !wins {
                    superseded.push(loc);
                    continue;
                }
                if let Some(old) = index.chunks.get(&r.handle).copied() {
                    index.used = index.used.saturating_sub(old.len);
                    match old.packed {
                        Some(old) => superseded.push(old),
                        None => {
                            tracing::info!(handle = %r.handle, "removing the files of a version a packed one replaced");
                            for name in [meta_name(r.handle), chunk_name(r.handle)] {
                                let _ = fs::remove_file(dir.join(name));
                            }
                        }
                    }
                }
                index.used += r.len;
                let mut entry = Entry::new(r.version, r.len);
                entry.packed = Some(loc);
                index.chunks.insert(r.handle, entry);
            }
        }
        for loc in superseded {
            // Only tidiness: the same choice is made at every start.
            if let Err(e) = packs.kill(loc, false) {
                tracing::warn!(error = %e, "could not mark a superseded packed record dead");
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
            direct_io: true,
            buffers: Arc::default(),
            packs: Arc::new(packs),
            pack_below: 0,
        })
    }

    /// New chunks of at most `bytes` (and at least one byte) are written into a shared
    /// pack file instead of files of their own; 0 (the default) packs none. Capped at
    /// [`pack::MAX_PACKED`], since a chunk is held in memory until it is packed.
    pub fn with_pack_below(mut self, bytes: u64) -> ChunkStore {
        self.pack_below = bytes.min(pack::MAX_PACKED);
        self
    }

    /// Starts a new pack file once the open one holds `bytes` (256 MiB otherwise):
    /// for tests of compaction, which only takes files no longer appended to.
    pub fn with_pack_file_max(self, bytes: u64) -> ChunkStore {
        self.packs.set_file_max(bytes);
        self
    }

    /// Whether chunk writes (new chunks and appends) bypass the page cache
    /// (`O_DIRECT`, on by default; see
    /// [`direct`] for why). Off, they are written through the page cache.
    pub fn with_direct_io(mut self, on: bool) -> ChunkStore {
        self.direct_io = on;
        self
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

    /// Takes a chunk out of the index and queues the change for the next report;
    /// returns what the index held.
    fn unindex(&self, handle: ChunkHandle, corrupt: bool) -> Option<Entry> {
        let mut idx = self.lock();
        let e = idx.chunks.remove(&handle)?;
        idx.used = idx.used.saturating_sub(e.len);
        idx.added.retain(|r| r.handle != handle);
        idx.removed.push(handle);
        if corrupt {
            idx.corrupt.push(handle);
        }
        Some(e)
    }

    /// Deletes a chunk (at any version).
    pub fn delete(&self, handle: ChunkHandle) -> Result<bool, StoreError> {
        let _g = self.stripe(&handle);
        let Some(removed) = self.unindex(handle, false) else {
            return Ok(false);
        };
        if let Some(loc) = removed.packed {
            // Not synced: a replica back after a crash is deleted again as garbage.
            self.packs.kill(loc, false)?;
        } else {
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
        Ok(true)
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
        let Some(entry) = self.unindex(handle, true) else {
            return Ok(false);
        };
        let qdir = self.quarantine_dir();
        fs::create_dir_all(&qdir)
            .map_err(|e| StoreError::io(format!("create {}", qdir.display()), e))?;
        let stamp = uuid::Uuid::new_v4();
        if let Some(loc) = entry.packed {
            self.quarantine_packed(
                handle,
                entry.len,
                loc,
                &qdir.join(format!("{stamp}.{handle}.packed")),
            )?;
            return Ok(true);
        }
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
