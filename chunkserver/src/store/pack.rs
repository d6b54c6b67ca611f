//! Small chunks packed into shared, append-only pack files.
//!
//! For a small chunk, the file system costs far more than its bytes: a file of its
//! own means two inodes created (data and meta), three fsyncs, two renames, and two
//! inodes freed when it goes. With three replicas on a 2-core machine that was most
//! of a 64 KiB put's CPU. So a new chunk of at most `pack_below` bytes is appended,
//! as one record, to the pack file open for appends, and the commits waiting at the
//! same time share one `fdatasync`.
//!
//! Layout under `<data>/packs/`: `<seq>.pack`, `seq` as 16 hex digits. Only the file
//! with the highest `seq` is appended to; a store opens a new one at start and when
//! the open one passes [`PACK_FILE_MAX`]. A record is:
//! - a header: magic `dfsP`, a state byte (1 live, 0 dead), the handle (16 bytes),
//!   the version (u64 LE), the length (u32 LE);
//! - the chunk's bytes;
//! - blake3 of each 64 KiB block of them, 32 bytes each;
//! - blake3 of the header (state byte left out) and the block sums.
//!
//! The data is covered by its block sums, checked on every read and by the scrubber,
//! so opening the store reads headers and sums only. A record's `fdatasync` is its
//! commit point. A record stops being live when its state byte is cleared in place
//! (one byte, not synced): a chunk deleted, superseded, or moved to files of its own
//! for an append. A clear lost in a crash brings back a replica the master no longer
//! lists, which it deletes again as garbage; a quarantined record's clear is synced.
//!
//! At open, the highest version of a chunk wins, in a pack or in files of its own,
//! and files win a tie (a chunk is moved out before it is changed in place). Space
//! comes back by [`Packs`]'s users compacting: a pack file no live record points
//! into is removed, and one mostly dead has its live records copied forward first.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use dfs_protocol::{ChunkHandle, ChunkVersion, CHECKSUM_BLOCK};

use super::meta::sync_dir;
use crate::error::StoreError;

/// The open pack file is closed for appends past this size.
pub const PACK_FILE_MAX: u64 = 256 << 20;
/// No chunk larger than this is packed, whatever the configuration says: it is
/// held in memory until committed.
pub const MAX_PACKED: u64 = 16 << 20;

const MAGIC: [u8; 4] = *b"dfsP";
const LIVE: u8 = 1;
const DEAD: u8 = 0;
/// Offset of the state byte in a record.
const STATE_AT: u64 = 4;
const HEADER: usize = 4 + 1 + 16 + 8 + 4;
const SUM: usize = 32;

/// Where a packed chunk's record starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct PackLoc {
    pub(super) seq: u64,
    pub(super) at: u64,
}

/// A record found by a scan, or read back for a reader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Record {
    pub(super) handle: ChunkHandle,
    pub(super) version: ChunkVersion,
    pub(super) len: u64,
    pub(super) live: bool,
    pub(super) blocks: Vec<[u8; 32]>,
}

impl Record {
    /// Bytes the whole record takes in its pack file.
    pub(super) fn size(&self) -> u64 {
        record_size(self.len)
    }

    /// Offset of the chunk's first byte, for a record at `at`.
    pub(super) fn data_at(at: u64) -> u64 {
        at + HEADER as u64
    }
}

fn blocks_in(len: u64) -> u64 {
    len.div_ceil(CHECKSUM_BLOCK)
}

pub(super) fn record_size(len: u64) -> u64 {
    HEADER as u64 + len + blocks_in(len) * 32 + SUM as u64
}

fn header(handle: ChunkHandle, version: ChunkVersion, len: u32, state: u8) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..4].copy_from_slice(&MAGIC);
    h[4] = state;
    h[5..21].copy_from_slice(handle.0.as_bytes());
    h[21..29].copy_from_slice(&version.0.to_le_bytes());
    h[29..33].copy_from_slice(&len.to_le_bytes());
    h
}

fn record_sum(header: &[u8], blocks: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&header[..4]);
    h.update(&header[5..]);
    h.update(blocks);
    *h.finalize().as_bytes()
}

/// The bytes of a live record holding `data`, whose block sums are `blocks`.
pub(super) fn encode(
    handle: ChunkHandle,
    version: ChunkVersion,
    data: &[u8],
    blocks: &[[u8; 32]],
) -> Result<Vec<u8>, StoreError> {
    let len = u32::try_from(data.len())
        .ok()
        .filter(|l| {
            u64::from(*l) <= MAX_PACKED && blocks.len() as u64 == blocks_in(data.len() as u64)
        })
        .ok_or_else(|| {
            StoreError::io(
                format!("pack chunk {handle}"),
                std::io::Error::other("not a packable chunk"),
            )
        })?;
    let head = header(handle, version, len, LIVE);
    let sums: Vec<u8> = blocks.iter().flatten().copied().collect();
    let mut out = Vec::with_capacity(record_size(data.len() as u64) as usize);
    out.extend_from_slice(&head);
    out.extend_from_slice(data);
    out.extend_from_slice(&sums);
    out.extend_from_slice(&record_sum(&head, &sums));
    Ok(out)
}

/// Parses the header and block sums of the record at `at`: `None` when what lies
/// there is not a whole record (torn by a crash, damaged, or not a record start).
fn parse(file: &File, at: u64, file_len: u64) -> std::io::Result<Option<Record>> {
    if file_len.saturating_sub(at) < (HEADER + SUM) as u64 {
        return Ok(None);
    }
    let mut head = [0u8; HEADER];
    file.read_exact_at(&mut head, at)?;
    if head[..4] != MAGIC || (head[4] != LIVE && head[4] != DEAD) {
        return Ok(None);
    }
    let mut len = [0u8; 4];
    len.copy_from_slice(&head[29..33]);
    let len = u64::from(u32::from_le_bytes(len));
    if len > MAX_PACKED || file_len.saturating_sub(at) < record_size(len) {
        return Ok(None);
    }
    let mut tail = vec![0u8; (blocks_in(len) * 32) as usize + SUM];
    file.read_exact_at(&mut tail, at + HEADER as u64 + len)?;
    let (sums, sum) = tail.split_at(tail.len() - SUM);
    if record_sum(&head, sums) != sum {
        return Ok(None);
    }
    let mut handle = [0u8; 16];
    handle.copy_from_slice(&head[5..21]);
    let mut version = [0u8; 8];
    version.copy_from_slice(&head[21..29]);
    Ok(Some(Record {
        handle: ChunkHandle(uuid::Uuid::from_bytes(handle)),
        version: ChunkVersion(u64::from_le_bytes(version)),
        len,
        live: head[4] == LIVE,
        blocks: sums
            .chunks_exact(32)
            .map(|c| {
                let mut b = [0u8; 32];
                b.copy_from_slice(c);
                b
            })
            .collect(),
    }))
}

/// The next offset after `from` where a record's magic starts, if any.
fn next_magic(file: &File, from: u64, file_len: u64) -> std::io::Result<Option<u64>> {
    const WINDOW: usize = 1 << 20;
    let mut at = from;
    let mut buf = vec![0u8; WINDOW];
    while at < file_len {
        let n = ((file_len - at) as usize).min(WINDOW);
        file.read_exact_at(&mut buf[..n], at)?;
        if let Some(i) = buf[..n].windows(MAGIC.len()).position(|w| w == MAGIC) {
            return Ok(Some(at + i as u64));
        }
        if n < WINDOW {
            break;
        }
        // Overlap by the magic's length less one, for a magic across two windows.
        at += (n - (MAGIC.len() - 1)) as u64;
    }
    Ok(None)
}

/// Every whole record of a pack file, with where it starts. Damage (or a torn
/// tail) is stepped over by looking for the next record start, so one bad record
/// never hides the records after it.
pub(super) fn scan(path: &Path) -> Result<Vec<(u64, Record)>, StoreError> {
    let io = |e| StoreError::io(format!("scan {}", path.display()), e);
    let file = File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut out = Vec::new();
    let mut at = 0;
    let mut skipped = 0u64;
    while at < file_len {
        match parse(&file, at, file_len).map_err(io)? {
            Some(r) => {
                let next = at + r.size();
                out.push((at, r));
                at = next;
            }
            None => match next_magic(&file, at + 1, file_len).map_err(io)? {
                Some(next) => {
                    skipped += next - at;
                    at = next;
                }
                None => {
                    skipped += file_len - at;
                    break;
                }
            },
        }
    }
    if skipped > 0 {
        // The tail of the file open at a crash is expected to be torn.
        tracing::info!(file = %path.display(), bytes = skipped, "pack file: bytes that hold no whole record skipped");
    }
    Ok(out)
}

/// One pack file's seq and its whole records, each with where it starts.
pub(super) type Scanned = (u64, Vec<(u64, Record)>);

/// The pack files of a store, and the one open for appends.
#[derive(Debug)]
pub(super) struct Packs {
    dir: PathBuf,
    /// The open file is closed for appends past this size.
    file_max: std::sync::atomic::AtomicU64,
    state: Mutex<State>,
    synced: Condvar,
}

#[derive(Debug)]
struct State {
    /// Every pack file, by seq: for reads, and its size.
    files: BTreeMap<u64, PackFile>,
    /// The seq of the file appended to, once one is open.
    open: Option<u64>,
    next_seq: u64,
    /// Everything before `upto` in file `seq` (and all of every older file) is on disk.
    synced_seq: u64,
    synced_upto: u64,
    /// A sync is running; the others wait for it instead of starting their own.
    syncing: bool,
}

#[derive(Debug)]
struct PackFile {
    file: Arc<File>,
    size: u64,
    /// An fsync of it failed: what it holds is not known to be on disk (a later
    /// fsync may not say so again), so no record waiting in it is acknowledged,
    /// and the next append opens a new file.
    failed: bool,
}

fn name(seq: u64) -> String {
    format!("{seq:016x}.pack")
}

impl Packs {
    /// The pack files under `dir` (made if missing) and every record in them, by file.
    pub(super) fn open(dir: PathBuf) -> Result<(Packs, Vec<Scanned>), StoreError> {
        fs::create_dir_all(&dir)
            .map_err(|e| StoreError::io(format!("create {}", dir.display()), e))?;
        let mut files = BTreeMap::new();
        let mut found = Vec::new();
        let entries =
            fs::read_dir(&dir).map_err(|e| StoreError::io(format!("list {}", dir.display()), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(format!("list {}", dir.display()), e))?;
            let file_name = entry.file_name().to_string_lossy().into_owned();
            let Some(seq) = file_name
                .strip_suffix(".pack")
                .and_then(|s| u64::from_str_radix(s, 16).ok())
            else {
                continue;
            };
            let path = entry.path();
            let records = scan(&path)?;
            let io = |e| StoreError::io(format!("open {}", path.display()), e);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io)?;
            let size = file.metadata().map_err(io)?.len();
            files.insert(
                seq,
                PackFile {
                    file: Arc::new(file),
                    size,
                    failed: false,
                },
            );
            found.push((seq, records));
        }
        found.sort_by_key(|(seq, _)| *seq);
        let next_seq = files.keys().next_back().map_or(1, |s| s + 1);
        Ok((
            Packs {
                dir,
                file_max: std::sync::atomic::AtomicU64::new(PACK_FILE_MAX),
                state: Mutex::new(State {
                    files,
                    open: None,
                    next_seq,
                    synced_seq: 0,
                    synced_upto: 0,
                    syncing: false,
                }),
                synced: Condvar::new(),
            },
            found,
        ))
    }

    fn file_max(&self) -> u64 {
        self.file_max.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Closes the open file for appends past `bytes` instead of [`PACK_FILE_MAX`].
    pub(super) fn set_file_max(&self, bytes: u64) {
        self.file_max
            .store(bytes.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts a new pack file for appends; the one open so far is synced whole first,
    /// so every record before the new file is on disk (or marked failed).
    fn rotate(&self, st: &mut State) -> Result<u64, StoreError> {
        if let Some(old) = st.open.take() {
            if let Some(f) = st.files.get_mut(&old).filter(|f| !f.failed) {
                if let Err(e) = f.file.sync_data() {
                    tracing::error!(file = name(old), error = %e, "fsync of a pack file failed");
                    f.failed = true;
                }
            }
        }
        let seq = st.next_seq;
        let path = self.dir.join(name(seq));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| StoreError::io(format!("create {}", path.display()), e))?;
        // Listed (and its seq used) before anything else can fail, so a failure
        // below never leaves a file that a later rotation trips over.
        st.next_seq += 1;
        st.files.insert(
            seq,
            PackFile {
                file: Arc::new(file),
                size: 0,
                failed: false,
            },
        );
        // The file's name must last before any record in it is acknowledged.
        sync_dir(&self.dir)?;
        st.open = Some(seq);
        st.synced_seq = seq;
        st.synced_upto = 0;
        Ok(seq)
    }

    /// Appends a record and returns once it is on disk: the commit point of a packed
    /// chunk. Commits waiting together share one fsync.
    pub(super) fn append(&self, record: &[u8]) -> Result<PackLoc, StoreError> {
        let (seq, at, end, file) = {
            let mut st = self.lock();
            let seq = match st.open {
                Some(seq)
                    if st.files.get(&seq).is_some_and(|f| {
                        !f.failed
                            && (f.size == 0 || f.size + record.len() as u64 <= self.file_max())
                    }) =>
                {
                    seq
                }
                _ => self.rotate(&mut st)?,
            };
            let f = st.files.get_mut(&seq).ok_or_else(|| {
                StoreError::io(
                    "append to a pack",
                    std::io::Error::other("no open pack file"),
                )
            })?;
            let at = f.size;
            f.file
                .write_all_at(record, at)
                .map_err(|e| StoreError::io(format!("write {}", name(seq)), e))?;
            f.size += record.len() as u64;
            (seq, at, f.size, f.file.clone())
        };
        self.wait_synced(seq, end, &file)?;
        Ok(PackLoc { seq, at })
    }

    /// Waits until the first `end` bytes of file `seq` are on disk, running the fsync
    /// when no other caller is.
    fn wait_synced(&self, seq: u64, end: u64, file: &File) -> Result<(), StoreError> {
        let mut st = self.lock();
        loop {
            if st.files.get(&seq).is_some_and(|f| f.failed) {
                return Err(StoreError::io(
                    format!("fsync {}", name(seq)),
                    std::io::Error::other("an earlier fsync of this pack file failed"),
                ));
            }
            if st.synced_seq > seq || (st.synced_seq == seq && st.synced_upto >= end) {
                return Ok(());
            }
            if !st.syncing {
                st.syncing = true;
                // Everything written so far is covered by this sync, not just ours.
                let upto = st.files.get(&seq).map_or(end, |f| f.size);
                drop(st);
                let result = file.sync_data();
                st = self.lock();
                st.syncing = false;
                match &result {
                    Ok(()) if st.synced_seq == seq => st.synced_upto = st.synced_upto.max(upto),
                    Ok(()) => {}
                    Err(_) => {
                        if let Some(f) = st.files.get_mut(&seq) {
                            f.failed = true;
                        }
                    }
                }
                self.synced.notify_all();
                if let Err(e) = result {
                    return Err(StoreError::io(format!("fsync {}", name(seq)), e));
                }
                continue;
            }
            st = self
                .synced
                .wait(st)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// The header and block sums of the live record at `loc`, and the file to read
    /// its bytes from; `None` when no whole live record is there (damage).
    pub(super) fn read(&self, loc: PackLoc) -> Result<Option<(Record, Arc<File>)>, StoreError> {
        let (file, size) = {
            let st = self.lock();
            match st.files.get(&loc.seq) {
                Some(f) => (f.file.clone(), f.size),
                None => return Ok(None),
            }
        };
        let record = parse(&file, loc.at, size)
            .map_err(|e| StoreError::io(format!("read {}", name(loc.seq)), e))?;
        Ok(record.filter(|r| r.live).map(|r| (r, file)))
    }

    /// The whole record at `loc`, as it lies on disk (for quarantine).
    pub(super) fn raw(&self, loc: PackLoc, len: u64) -> Result<Vec<u8>, StoreError> {
        let file = self.file(loc.seq)?;
        let mut buf = vec![0u8; record_size(len) as usize];
        file.read_exact_at(&mut buf, loc.at)
            .map_err(|e| StoreError::io(format!("read {}", name(loc.seq)), e))?;
        Ok(buf)
    }

    fn file(&self, seq: u64) -> Result<Arc<File>, StoreError> {
        self.lock()
            .files
            .get(&seq)
            .map(|f| f.file.clone())
            .ok_or_else(|| {
                StoreError::io(format!("open {}", name(seq)), std::io::Error::other("gone"))
            })
    }

    /// Marks the record at `loc` dead, in place; synced only when `durably`.
    pub(super) fn kill(&self, loc: PackLoc, durably: bool) -> Result<(), StoreError> {
        let file = self.file(loc.seq)?;
        let io = |e| StoreError::io(format!("write {}", name(loc.seq)), e);
        file.write_all_at(&[DEAD], loc.at + STATE_AT).map_err(io)?;
        if durably {
            file.sync_data().map_err(io)?;
        }
        Ok(())
    }

    /// Each pack file not open for appends, with its size.
    pub(super) fn closed(&self) -> Vec<(u64, u64)> {
        let st = self.lock();
        st.files
            .iter()
            .filter(|(seq, _)| st.open != Some(**seq))
            .map(|(seq, f)| (*seq, f.size))
            .collect()
    }

    /// Removes a closed pack file that no live record is left in.
    pub(super) fn remove(&self, seq: u64) -> Result<(), StoreError> {
        let mut st = self.lock();
        if st.open == Some(seq) {
            return Ok(());
        }
        st.files.remove(&seq);
        let path = self.dir.join(name(seq));
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(format!("remove {}", path.display()), e)),
        }
    }

    /// Bytes in pack files, dead records and torn tails included.
    pub(super) fn bytes(&self) -> u64 {
        self.lock().files.values().map(|f| f.size).sum()
    }
}

/// Where a replica held in a pack file lies, for tools and tests that look at a
/// chunkserver's disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedReplica {
    pub file: PathBuf,
    /// Where its record starts.
    pub record_at: u64,
    /// Where its bytes start.
    pub data_at: u64,
    pub len: u64,
}

/// The live packed record of `handle` under a chunkserver's data dir, as a start
/// would choose it (the highest version, the later record of one version).
pub fn find_packed(
    data_dir: &Path,
    handle: &ChunkHandle,
) -> Result<Option<PackedReplica>, StoreError> {
    let dir = data_dir.join("packs");
    let mut files: Vec<(u64, PathBuf)> = match fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let seq = e
                    .file_name()
                    .to_string_lossy()
                    .strip_suffix(".pack")
                    .and_then(|s| u64::from_str_radix(s, 16).ok())?;
                Some((seq, e.path()))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io(format!("list {}", dir.display()), e)),
    };
    files.sort();
    let mut best: Option<(ChunkVersion, PackedReplica)> = None;
    for (_, path) in files {
        for (at, r) in scan(&path)? {
            if r.live && r.handle == *handle && best.as_ref().is_none_or(|(v, _)| r.version >= *v) {
                let found = PackedReplica {
                    file: path.clone(),
                    record_at: at,
                    data_at: Record::data_at(at),
                    len: r.len,
                };
                best = Some((r.version, found));
            }
        }
    }
    Ok(best.map(|(_, p)| p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(data: &[u8]) -> Vec<[u8; 32]> {
        data.chunks(CHECKSUM_BLOCK as usize)
            .map(|c| *blake3::hash(c).as_bytes())
            .collect()
    }

    fn rec(n: usize, seed: u8) -> (ChunkHandle, Vec<u8>, Vec<u8>) {
        let h = ChunkHandle::random();
        let data: Vec<u8> = (0..n).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect();
        let bytes = encode(h, ChunkVersion(3), &data, &blocks(&data)).unwrap();
        (h, data, bytes)
    }

    #[test]
    fn records_read_back_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (packs, found) = Packs::open(dir.path().to_path_buf()).unwrap();
        assert!(found.is_empty());
        let mut locs = Vec::new();
        for (i, n) in [0usize, 1, 65_536, 65_537, 200_000].into_iter().enumerate() {
            let (h, data, bytes) = rec(n, i as u8);
            let loc = packs.append(&bytes).unwrap();
            let (r, file) = packs.read(loc).unwrap().unwrap();
            assert_eq!(
                (r.handle, r.len, r.blocks.clone()),
                (h, n as u64, blocks(&data))
            );
            let mut back = vec![0u8; n];
            file.read_exact_at(&mut back, Record::data_at(loc.at))
                .unwrap();
            assert_eq!(back, data);
            locs.push((loc, h));
        }
        packs.kill(locs[1].0, false).unwrap();
        assert!(packs.read(locs[1].0).unwrap().is_none());
        drop(packs);
        let (_, found) = Packs::open(dir.path().to_path_buf()).unwrap();
        let records: Vec<(u64, ChunkHandle, bool)> = found
            .into_iter()
            .flat_map(|(_, rs)| rs)
            .map(|(at, r)| (at, r.handle, r.live))
            .collect();
        let want: Vec<(u64, ChunkHandle, bool)> = locs
            .iter()
            .enumerate()
            .map(|(i, (loc, h))| (loc.at, *h, i != 1))
            .collect();
        assert_eq!(records, want);
    }

    #[test]
    fn a_scan_steps_over_damage_and_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name(1));
        let (h1, _, b1) = rec(70_000, 1);
        let (h2, _, b2) = rec(10, 2);
        let (h3, _, b3) = rec(5_000, 3);
        let mut bytes = b1.clone();
        bytes.extend_from_slice(&b2);
        bytes.extend_from_slice(&b3);
        bytes.extend_from_slice(&b1[..b1.len() / 2]);
        // A flipped bit in the second record's block sum: the record is lost, the
        // third is still found.
        let sum_at = b1.len() + HEADER + 10;
        bytes[sum_at] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let found: Vec<ChunkHandle> = scan(&path)
            .unwrap()
            .into_iter()
            .map(|(_, r)| r.handle)
            .collect();
        assert_eq!(found, vec![h1, h3]);
        assert_ne!(h2, h3);
    }

    #[test]
    fn a_full_pack_file_is_closed_and_a_new_one_opened() {
        let dir = tempfile::tempdir().unwrap();
        let (packs, _) = Packs::open(dir.path().to_path_buf()).unwrap();
        let (_, _, bytes) = rec(1000, 1);
        let first = packs.append(&bytes).unwrap();
        packs.lock().files.get_mut(&first.seq).unwrap().size = PACK_FILE_MAX;
        let second = packs.append(&bytes).unwrap();
        assert_eq!(
            second,
            PackLoc {
                seq: first.seq + 1,
                at: 0
            }
        );
        assert_eq!(packs.closed(), vec![(first.seq, PACK_FILE_MAX)]);
    }
}
