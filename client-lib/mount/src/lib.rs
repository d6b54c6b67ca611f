//! dfs as a FUSE file system (`dfs mount`), on fuser's pure-Rust mount.
//!
//! The kernel's requests arrive on fuser's session thread; each becomes a task on
//! the caller's tokio runtime, tracked so that unmounting waits for it, and
//! answers the kernel when done. Layout:
//! - [`fs`]: the `fuser::Filesystem` — lookups, attributes, directories, links,
//!   and open files;
//! - [`open_file`]: one open file's changes and how they are committed
//!   (close-to-open, by copy-on-write chunks);
//! - [`readahead`]: windows fetched ahead for sequential readers, under one budget;
//! - [`inodes`]: the kernel's inode numbers for dfs paths;
//! - [`ranges`]: merged dirty ranges;
//! - [`errno`]: dfs errors as errno values.

mod errno;
mod fs;
mod inodes;
mod open_file;
mod ranges;
mod readahead;

use std::path::{Path, PathBuf};
use std::time::Duration;

use dfs_client::Client;

pub use fs::DfsFs;

/// How a mount behaves.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// Refuse every change with EROFS.
    pub read_only: bool,
    /// How long the kernel may trust attributes and names without asking again.
    pub attr_timeout: Duration,
    /// Where files changed at random offsets keep their changes until committed.
    pub cache_dir: PathBuf,
    /// How long operations wait for an unreachable master before failing with EIO.
    pub stall_timeout: Duration,
    /// Bytes fetched at once for a sequential reader, and for all readers together.
    pub readahead_window: u64,
    pub readahead_total: u64,
    /// Other users may use the mount (and the kernel checks mode bits).
    pub allow_other: bool,
    /// Unlinked files go to the cluster's trash instead of being removed.
    pub trash: bool,
    /// The name shown as the mount's source.
    pub fs_name: String,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            read_only: false,
            attr_timeout: Duration::from_secs(1),
            cache_dir: std::env::temp_dir(),
            stall_timeout: Duration::from_secs(60),
            readahead_window: 16 << 20,
            readahead_total: 256 << 20,
            allow_other: true,
            trash: false,
            fs_name: "dfs".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("{path}: {source}")]
    Mount {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Session(#[source] std::io::Error),
}

/// A mounted file system, served on a thread of its own until it is unmounted (by
/// [`unmount`], `umount`, or `fusermount3 -u`).
pub struct Mounted {
    session: fuser::BackgroundSession,
}

impl std::fmt::Debug for Mounted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mounted").finish_non_exhaustive()
    }
}

impl Mounted {
    /// Mounts `client`'s cluster at `mountpoint` and starts serving it; requests run
    /// as tasks on `runtime`.
    pub fn new(
        client: Client,
        mountpoint: &Path,
        options: MountOptions,
        runtime: tokio::runtime::Handle,
    ) -> Result<Mounted, MountError> {
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName(options.fs_name.clone()),
            fuser::MountOption::Subtype("dfs".into()),
            fuser::MountOption::DefaultPermissions,
            fuser::MountOption::NoDev,
            if options.read_only {
                fuser::MountOption::RO
            } else {
                fuser::MountOption::RW
            },
        ];
        if options.allow_other {
            config.acl = fuser::SessionACL::All;
        }
        let failed = |source| MountError::Mount {
            path: mountpoint.display().to_string(),
            source,
        };
        let fs = DfsFs::new(client, options, runtime);
        let session = fuser::Session::new(fs, mountpoint, &config).map_err(failed)?;
        let session = session.spawn().map_err(failed)?;
        Ok(Mounted { session })
    }

    /// Blocks until the file system is unmounted and every request is answered.
    pub fn wait(self) -> Result<(), MountError> {
        self.session.join().map_err(MountError::Session)
    }
}

/// Unmounts the dfs mount at `path`: directly when this process may (root), else
/// through `fusermount3 -u` (or `fusermount -u`), as an unprivileged user must.
pub fn unmount(path: &Path) -> Result<(), MountError> {
    let failed = |source| MountError::Mount {
        path: path.display().to_string(),
        source,
    };
    let err = match rustix::mount::unmount(path, rustix::mount::UnmountFlags::empty()) {
        Ok(()) => return Ok(()),
        Err(e) => std::io::Error::from(e),
    };
    if err.raw_os_error() != Some(rustix::io::Errno::PERM.raw_os_error()) {
        return Err(failed(err));
    }
    for tool in ["fusermount3", "fusermount"] {
        match std::process::Command::new(tool)
            .arg("-u")
            .arg(path)
            .output()
        {
            Ok(out) if out.status.success() => return Ok(()),
            Ok(out) => {
                let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
                return Err(failed(std::io::Error::other(msg)));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(failed(e)),
        }
    }
    Err(failed(err))
}

/// Whether a dfs file system is mounted at `path` (per /proc/self/mountinfo).
pub fn is_mounted(path: &Path) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    table.lines().any(|line| {
        let mut fields = line.split(' ');
        let point = fields.nth(4).map(unescape);
        // After the separator: the type ("fuse", or "fuse.dfs" through
        // fusermount3) and the source, which the mount names "dfs:MASTER".
        let mut tail = line.split(" - ").nth(1).unwrap_or("").split(' ');
        let fstype = tail.next().unwrap_or("");
        let source = tail.next().unwrap_or("");
        point.as_deref() == Some(&*want) && fstype.starts_with("fuse") && source.starts_with("dfs")
    })
}

/// Mount table fields escape space, tab, newline and backslash as octal.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if let (b'\\', Some(&[a, b, c])) = (bytes[i], bytes.get(i + 1..i + 4)) {
            if [a, b, c].iter().all(|d| (b'0'..=b'7').contains(d)) {
                out.push(((a - b'0') << 6) | ((b - b'0') << 3) | (c - b'0'));
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
