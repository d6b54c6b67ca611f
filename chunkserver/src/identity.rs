//! The chunkserver's identity and its claim on the data dir.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use dfs_protocol::ServerId;

use crate::error::{ChunkserverError, StoreError};

const ID_FILE: &str = "server-id";
const LOCK_FILE: &str = "LOCK";

/// Locks the data dir against a second chunkserver; the lock lasts as long as the file.
pub fn lock_data_dir(dir: &Path) -> Result<File, ChunkserverError> {
    fs::create_dir_all(dir).map_err(|e| StoreError::io(format!("create {}", dir.display()), e))?;
    let path = dir.join(LOCK_FILE);
    let file =
        File::create(&path).map_err(|e| StoreError::io(format!("create {}", path.display()), e))?;
    file.try_lock().map_err(|_| {
        ChunkserverError::Config(format!(
            "{} is in use by another chunkserver",
            dir.display()
        ))
    })?;
    Ok(file)
}

/// The id kept in the data dir, created (durably) on first start.
pub fn load_or_create(dir: &Path) -> Result<ServerId, ChunkserverError> {
    let path = dir.join(ID_FILE);
    match fs::read_to_string(&path) {
        Ok(s) => s.trim().parse().map_err(|_| {
            ChunkserverError::Config(format!("{} does not hold a server id", path.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = ServerId::random();
            let tmp = dir.join(format!("{ID_FILE}.tmp"));
            let write = || -> std::io::Result<()> {
                let mut f = File::create(&tmp)?;
                writeln!(f, "{id}")?;
                f.sync_all()?;
                fs::rename(&tmp, &path)?;
                File::open(dir)?.sync_all()
            };
            write().map_err(|e| StoreError::io(format!("write {}", path.display()), e))?;
            Ok(id)
        }
        Err(e) => Err(StoreError::io(format!("read {}", path.display()), e).into()),
    }
}
