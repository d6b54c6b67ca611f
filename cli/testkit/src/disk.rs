//! Damage to replicas on a chunkserver's disk, as a failing disk or an operator would
//! do it: the chunkserver's checksums must catch every one.

use std::path::{Path, PathBuf};

use dfs_protocol::ChunkHandle;

/// The data file of `handle` under a chunkserver's data dir.
pub fn replica_path(data_dir: &Path, handle: &ChunkHandle) -> PathBuf {
    data_dir.join("chunks").join(format!("{handle}.chunk"))
}

/// Whether chunkserver `i` of `cluster` has the data file of `handle` on disk.
pub fn on_disk(cluster: &dfs_cli::cluster::LocalCluster, i: usize, handle: &ChunkHandle) -> bool {
    cluster
        .chunkserver_data_dir(i)
        .map(|d| replica_path(d, handle).exists())
        .unwrap_or(false)
}

/// Flips the bits of one byte at `offset` of a replica (at its end when past it).
pub fn corrupt_replica(data_dir: &Path, handle: &ChunkHandle, offset: u64) -> std::io::Result<()> {
    let path = replica_path(data_dir, handle);
    let mut bytes = std::fs::read(&path)?;
    if bytes.is_empty() {
        return Err(std::io::Error::other(
            "an empty replica has no byte to flip",
        ));
    }
    let at = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len() - 1);
    bytes[at] ^= 0xff;
    std::fs::write(&path, bytes)
}

/// Cuts a replica's data file to `len` bytes.
pub fn truncate_replica(data_dir: &Path, handle: &ChunkHandle, len: u64) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(replica_path(data_dir, handle))?
        .set_len(len)
}

/// Removes a replica's data file (its meta stays: the chunkserver still claims it).
pub fn remove_replica(data_dir: &Path, handle: &ChunkHandle) -> std::io::Result<()> {
    std::fs::remove_file(replica_path(data_dir, handle))
}
