//! The cluster secret on the master's side: taken from the configuration, else read
//! from the data dir, else generated there on first start (mode 0600).

use std::io::Write;
use std::path::{Path, PathBuf};

use dfs_protocol::ClusterSecret;

use crate::error::MasterError;

/// Name of the secret's file in the master's data dir.
pub const SECRET_FILE: &str = "cluster.secret";

/// Where the master keeps the cluster secret in `data_dir`.
pub fn secret_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SECRET_FILE)
}

/// Reads a secret file: one line, `dfs-secret:` and 64 hex digits.
pub fn read_secret_file(path: &Path) -> Result<ClusterSecret, MasterError> {
    let text = std::fs::read_to_string(path).map_err(|source| MasterError::Io {
        context: format!("read the cluster secret {}", path.display()),
        source,
    })?;
    ClusterSecret::parse(&text).map_err(|e| MasterError::Config(format!("{}: {e}", path.display())))
}

/// The secret in `data_dir`, created there if missing. Returns whether it was
/// created. Blocking.
pub fn load_or_create(data_dir: &Path) -> Result<(ClusterSecret, bool), MasterError> {
    let path = secret_path(data_dir);
    if path.exists() {
        return Ok((read_secret_file(&path)?, false));
    }
    std::fs::create_dir_all(data_dir).map_err(|source| MasterError::Io {
        context: format!("create {}", data_dir.display()),
        source,
    })?;
    let secret = ClusterSecret::generate();
    write_private(&path, &format!("{}\n", secret.encode()), false)?;
    Ok((secret, true))
}

/// Writes `text` to `path` readable by its owner only, atomically (temp file, fsync,
/// rename, fsync of the directory). Without `replace`, an existing file is never
/// replaced (a secret must not be lost to a race); with it, it is, atomically.
pub fn write_private(path: &Path, text: &str, replace: bool) -> Result<(), MasterError> {
    let io = |context: String| move |source| MasterError::Io { context, source };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(&tmp)
        .map_err(io(format!("create {}", tmp.display())))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io(format!("write {}", tmp.display())))?;
    drop(f);
    if replace {
        std::fs::rename(&tmp, path).map_err(io(format!("create {}", path.display())))?;
    } else {
        // A hard link fails if `path` exists: a secret is never silently replaced.
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        linked.map_err(io(format!("create {}", path.display())))?;
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("sync {}", dir.display())))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_private_and_read_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (s, created) = load_or_create(dir.path()).expect("create");
        assert!(created);
        let (again, created) = load_or_create(dir.path()).expect("read");
        assert!(!created);
        assert_eq!(s, again);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(secret_path(dir.path()))
                .expect("stat")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(secret_path(dir.path()), "garbage").expect("write");
        assert!(load_or_create(dir.path()).is_err());
    }
}
