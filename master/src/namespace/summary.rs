//! What a subtree holds (`dfs count`, `dfs du`): directories, files and bytes,
//! counted on the master in slices so that a tree of millions of entries costs one
//! request and never holds the state lock for long.
//!
//! A walk keeps its own cursor: the directories still to visit, each with the last
//! name counted in it. Between slices the lock is free and the tree may change, so
//! like the client-side walk it replaced (and `hdfs dfs -count`), the result is not
//! a snapshot: an entry renamed across the cursor may be counted twice or missed,
//! and a directory removed meanwhile is skipped.

use std::ops::Bound;

use dfs_protocol::FileKind;

use super::Namespace;
use crate::error::OpError;
use crate::path;

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
    /// Directories still to visit, each after the last name already counted.
    pending: Vec<(u64, Option<String>)>,
    sum: Summary,
}

impl SummaryWalk {
    /// Starts a walk of `raw` (the entry itself, not what a link points to).
    pub fn start(ns: &Namespace, raw: &str) -> Result<SummaryWalk, OpError> {
        let comps = path::components(raw)?;
        let (ino, inode) = ns.resolve(&comps)?;
        let mut walk = SummaryWalk {
            pending: Vec::new(),
            sum: Summary::default(),
        };
        if inode.kind == FileKind::Dir {
            walk.sum.dirs = 1;
            walk.pending.push((ino, None));
        } else {
            walk.sum.files = 1;
            walk.sum.bytes = inode.size;
        }
        Ok(walk)
    }

    /// Counts up to `budget` entries; the total once the walk is done.
    pub fn step(&mut self, ns: &Namespace, budget: usize) -> Option<Summary> {
        let mut left = budget.max(1);
        while let Some((dir, after)) = self.pending.pop() {
            // A directory removed since it was queued holds nothing any more.
            let Some(children) = ns.children.get(&dir) else {
                continue;
            };
            let from = match &after {
                Some(name) => Bound::Excluded(name.as_str()),
                None => Bound::Unbounded,
            };
            let mut last: Option<&str> = None;
            for (name, child) in children.range::<str, _>((from, Bound::Unbounded)) {
                if left == 0 {
                    let resume = last.map(str::to_string).or(after);
                    self.pending.push((dir, resume));
                    return None;
                }
                left -= 1;
                last = Some(name);
                let Some(inode) = ns.inodes.get(child) else {
                    continue;
                };
                match inode.kind {
                    FileKind::Dir => {
                        self.sum.dirs += 1;
                        self.pending.push((*child, None));
                    }
                    FileKind::File | FileKind::Symlink => {
                        self.sum.files += 1;
                        self.sum.bytes = self.sum.bytes.saturating_add(inode.size);
                    }
                }
            }
        }
        Some(self.sum)
    }
}
