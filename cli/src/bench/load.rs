//! `dfs bench load`: fills a stopped master's data dir with many files of one chunk
//! each, for measuring a large master (its memory after a restart, how long the
//! restart takes) without writing the files' bytes.
//!
//! The files go through the master's own code: the data dir is recovered as at a
//! start, and each directory and file is a mutation applied by the namespace, as a
//! replayed log record would be, through the store's writer into sled. Only the
//! operation log is skipped (the store records the mutations as applied, so a
//! start finds nothing to replay). The chunks exist on no chunkserver: a master
//! started on the result counts them missing until something reports them, such
//! as `dfs bench holders` (file `i`'s chunk is [`super::holders::load_handle`]`(i)`).

use std::path::Path;
use std::time::Instant;

use dfs_master::mutation::{Create, Mutation};
use dfs_master::namespace::Namespace;
use dfs_master::store::{ChunkList, Inode, StoredChunk};
use dfs_protocol::{ChunkVersion, FileKind, UploadId};
use serde::Serialize;

/// Where the files go, under the root.
pub const LOAD_DIR: &str = "bulk";

/// What a load did.
#[derive(Debug, Serialize)]
pub struct LoadReport {
    pub files: u64,
    pub directories: u64,
    pub seconds: f64,
    pub files_per_s: f64,
    /// Estimated bytes per structure after the load (`dfs_master::footprint`).
    pub footprint: Vec<FootprintPart>,
}

#[derive(Debug, Serialize)]
pub struct FootprintPart {
    pub structure: &'static str,
    pub bytes: u64,
    pub bytes_per_file: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Master(#[from] dfs_master::error::MasterError),
    #[error("{0}")]
    Store(#[from] dfs_master::error::StoreError),
    #[error("/{LOAD_DIR} already exists in this data dir: load into a new one")]
    Exists,
    #[error("{0}")]
    Refused(String),
}

/// Loads `files` files of `file_size` bytes (one chunk each, replication
/// `replication`) into the master data dir `dir`, `per_dir` to a directory, under
/// `/bulk`. The master must not be running (sled refuses a second opener). Blocking.
pub fn load(
    dir: &Path,
    files: u64,
    per_dir: u64,
    file_size: u64,
    replication: u32,
    mut progress: impl FnMut(u64),
) -> Result<LoadReport, LoadError> {
    let started = Instant::now();
    let (mut ns, log) = dfs_master::recovery::recover(dir)?;
    // Nothing goes through the log; closing it leaves it as recovery made it.
    drop(log);
    if ns.stat_ino(&format!("/{LOAD_DIR}")).is_ok() {
        return Err(LoadError::Exists);
    }
    let mtime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let apply = |ns: &mut Namespace, m: Mutation| -> Result<(), LoadError> {
        let seq = ns.applied() + 1;
        ns.apply(seq, &m)?;
        Ok(())
    };
    let top = ns.next_inode();
    apply(
        &mut ns,
        Mutation::Mkdir {
            creates: vec![Create {
                parent: dfs_master::store::ROOT,
                name: LOAD_DIR.to_string(),
                ino: top,
            }],
            mtime,
        },
    )?;
    let mut directories = 1;
    let mut parent = top;
    for i in 0..files {
        if i % per_dir == 0 {
            parent = ns.next_inode();
            apply(
                &mut ns,
                Mutation::Mkdir {
                    creates: vec![Create {
                        parent: top,
                        name: format!("d{:06}", i / per_dir),
                        ino: parent,
                    }],
                    mtime,
                },
            )?;
            directories += 1;
        }
        let ino = ns.next_inode();
        apply(
            &mut ns,
            Mutation::CommitFile {
                // No upload stands behind it: committing one the namespace does not
                // know changes nothing else.
                upload: UploadId::random(),
                parent,
                name: format!("f{:06}", i % per_dir),
                ino,
                inode: Inode {
                    kind: FileKind::File,
                    size: file_size,
                    replication,
                    mtime,
                    chunks: ChunkList::One(StoredChunk {
                        handle: super::holders::load_handle(i),
                        version: ChunkVersion(1),
                        size: file_size,
                    }),
                },
                replaced: None,
            },
        )?;
        if (i + 1) % 100_000 == 0 {
            progress(i + 1);
        }
    }
    ns.writer().wait_applied(ns.applied())?;
    ns.store().flush_blocking()?;
    let seconds = started.elapsed().as_secs_f64();
    let per_file = |bytes: u64| {
        if files == 0 {
            0.0
        } else {
            bytes as f64 / files as f64
        }
    };
    let footprint = ns
        .footprint()
        .into_iter()
        .map(|p| FootprintPart {
            structure: p.structure,
            bytes: p.bytes,
            bytes_per_file: per_file(p.bytes),
        })
        .collect();
    Ok(LoadReport {
        files,
        directories,
        seconds,
        files_per_s: if seconds > 0.0 {
            files as f64 / seconds
        } else {
            0.0
        },
        footprint,
    })
}
