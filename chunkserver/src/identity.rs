//! The chunkserver's identity and its claim on the data dir.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use dfs_protocol::ServerId;

use crate::error::{ChunkserverError, StoreError};

const ID_FILE: &str = "server-id";
/// This server's own secret, which the master binds to its id on first registration.
const KEY_FILE: &str = "server-key";
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

/// The secret that proves this server's id to the master, created (durably, mode
/// 0600) on first start. The master enrols it at the first registration under the id
/// and refuses the id to anyone who cannot show it: holding the cluster secret is
/// not enough to take over another chunkserver's identity.
pub fn load_or_create_key(dir: &Path) -> Result<[u8; 32], ChunkserverError> {
    let path = dir.join(KEY_FILE);
    let bad = || ChunkserverError::Config(format!("{} does not hold a server key", path.display()));
    match fs::read_to_string(&path) {
        Ok(s) => {
            let s = s.trim();
            if s.len() != 64 || !s.is_ascii() {
                return Err(bad());
            }
            let mut key = [0u8; 32];
            for (i, b) in key.iter_mut().enumerate() {
                *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
            }
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = dfs_protocol::auth::random_bytes();
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            let tmp = dir.join(format!("{KEY_FILE}.tmp"));
            let write = || -> std::io::Result<()> {
                let mut options = fs::OpenOptions::new();
                options.write(true).create(true).truncate(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    options.mode(0o600);
                }
                let mut f = options.open(&tmp)?;
                writeln!(f, "{hex}")?;
                f.sync_all()?;
                fs::rename(&tmp, &path)?;
                File::open(dir)?.sync_all()
            };
            write().map_err(|e| StoreError::io(format!("write {}", path.display()), e))?;
            Ok(key)
        }
        Err(e) => Err(StoreError::io(format!("read {}", path.display()), e).into()),
    }
}
