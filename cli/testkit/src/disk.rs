//! Damage to replicas on a chunkserver's disk, as a failing disk or an operator would
//! do it: the chunkserver's checksums must catch every one. A replica is a file of
//! its own, or (a small chunk) a record in a shared pack file; each kind of damage
//! is done to either.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use dfs_chunkserver::store::{find_packed, PackedReplica};
use dfs_protocol::ChunkHandle;

/// The data file of `handle` under a chunkserver's data dir (a packed replica has
/// none: see [`replica_bytes`]).
pub fn replica_path(data_dir: &Path, handle: &ChunkHandle) -> PathBuf {
    data_dir.join("chunks").join(format!("{handle}.chunk"))
}

fn packed(data_dir: &Path, handle: &ChunkHandle) -> std::io::Result<Option<PackedReplica>> {
    find_packed(data_dir, handle).map_err(|e| std::io::Error::other(e.to_string()))
}

/// Whether a chunkserver's data dir holds a replica of `handle`, in a file of its
/// own or packed.
pub fn has_replica(data_dir: &Path, handle: &ChunkHandle) -> bool {
    replica_path(data_dir, handle).exists() || matches!(packed(data_dir, handle), Ok(Some(_)))
}

/// Whether chunkserver `i` of `cluster` holds a replica of `handle` on disk.
pub fn on_disk(cluster: &dfs_cli::cluster::LocalCluster, i: usize, handle: &ChunkHandle) -> bool {
    cluster
        .chunkserver_data_dir(i)
        .map(|d| has_replica(d, handle))
        .unwrap_or(false)
}

/// The bytes of a replica as they lie on disk, unverified.
pub fn replica_bytes(data_dir: &Path, handle: &ChunkHandle) -> std::io::Result<Vec<u8>> {
    let path = replica_path(data_dir, handle);
    if path.exists() {
        return std::fs::read(path);
    }
    let p = packed(data_dir, handle)?.ok_or_else(|| no_replica(handle))?;
    let mut bytes = vec![0u8; usize::try_from(p.len).map_err(std::io::Error::other)?];
    std::fs::File::open(&p.file)?.read_exact_at(&mut bytes, p.data_at)?;
    Ok(bytes)
}

fn no_replica(handle: &ChunkHandle) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("no replica of {handle} here"),
    )
}

/// Flips the bits of one byte at `offset` of a replica (at its end when past it).
pub fn corrupt_replica(data_dir: &Path, handle: &ChunkHandle, offset: u64) -> std::io::Result<()> {
    let path = replica_path(data_dir, handle);
    let (file, at, len) = if path.exists() {
        let len = std::fs::metadata(&path)?.len();
        (path, 0, len)
    } else {
        let p = packed(data_dir, handle)?.ok_or_else(|| no_replica(handle))?;
        (p.file, p.data_at, p.len)
    };
    if len == 0 {
        return Err(std::io::Error::other(
            "an empty replica has no byte to flip",
        ));
    }
    let at = at + offset.min(len - 1);
    let f = OpenOptions::new().read(true).write(true).open(file)?;
    let mut byte = [0u8; 1];
    f.read_exact_at(&mut byte, at)?;
    f.write_all_at(&[byte[0] ^ 0xff], at)
}

/// Cuts a replica's data file to `len` bytes. A packed replica cannot be cut short
/// in place: its bytes from `len` on are flipped instead, which its checksums catch
/// the same way.
pub fn truncate_replica(data_dir: &Path, handle: &ChunkHandle, len: u64) -> std::io::Result<()> {
    let path = replica_path(data_dir, handle);
    if path.exists() {
        return OpenOptions::new().write(true).open(path)?.set_len(len);
    }
    let p = packed(data_dir, handle)?.ok_or_else(|| no_replica(handle))?;
    if len >= p.len {
        return Ok(());
    }
    let f = OpenOptions::new().read(true).write(true).open(&p.file)?;
    let mut bytes = vec![0u8; usize::try_from(p.len - len).map_err(std::io::Error::other)?];
    f.read_exact_at(&mut bytes, p.data_at + len)?;
    bytes.iter_mut().for_each(|b| *b ^= 0xff);
    f.write_all_at(&bytes, p.data_at + len)
}

/// Removes a replica's data file (its meta stays: the chunkserver still claims it).
/// For a packed replica, its record's start is wiped: the chunkserver still lists
/// it, and finds nothing there.
pub fn remove_replica(data_dir: &Path, handle: &ChunkHandle) -> std::io::Result<()> {
    let path = replica_path(data_dir, handle);
    if path.exists() {
        return std::fs::remove_file(path);
    }
    let p = packed(data_dir, handle)?.ok_or_else(|| no_replica(handle))?;
    OpenOptions::new()
        .write(true)
        .open(&p.file)?
        .write_all_at(&[0u8; 4], p.record_at)
}
