//! What a subtree holds (`dfs count`, `dfs du`): directories, files and bytes,
//! counted on the master in slices so that a tree of millions of entries costs one
//! request and never holds the state lock for long.
//!
//! The walk is a [`TreeWalk`]: between slices the lock is free and the tree may
//! change, so like the client-side walk it replaced (and `hdfs dfs -count`), the
//! result is not a snapshot.

use dfs_protocol::FileKind;

use super::tree_walk::TreeWalk;
use super::Namespace;
use crate::error::OpError;

/// Directories, files (symbolic links included) and their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Directories, the walked one included.
    pub dirs: u64,
    pub files: u64,
    pub bytes: u64,
}

/// A walk under way.
#[derive(Debug)]
pub struct SummaryWalk {
    walk: TreeWalk,
    sum: Summary,
}

impl SummaryWalk {
    /// Starts a walk of `raw` (the entry itself, not what a link points to).
    pub fn start(ns: &Namespace, raw: &str) -> Result<SummaryWalk, OpError> {
        Ok(SummaryWalk {
            walk: TreeWalk::start(ns, raw)?,
            sum: Summary::default(),
        })
    }

    /// Counts up to `budget` entries; the total once the walk is done.
    pub fn step(&mut self, ns: &Namespace, budget: usize) -> Option<Summary> {
        let sum = &mut self.sum;
        let done = self.walk.step(ns, budget, |_, inode| match inode.kind {
            FileKind::Dir => sum.dirs += 1,
            FileKind::File | FileKind::Symlink => {
                sum.files += 1;
                sum.bytes = sum.bytes.saturating_add(inode.size);
            }
        });
        done.then_some(self.sum)
    }
}
