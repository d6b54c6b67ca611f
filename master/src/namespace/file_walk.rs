//! Every file at or below a path, visited a slice at a time with its canonical
//! path: what `fsck` checks. Like [`super::summary`], the walk keeps its own cursor
//! so the state lock can be let go between slices; the tree may change meanwhile,
//! so a file moved across the cursor may be visited twice or not at all, and a
//! directory removed meanwhile is skipped.

use std::ops::Bound;

use dfs_protocol::FileKind;

use super::Namespace;
use crate::error::OpError;
use crate::path;
use crate::store::Inode;

/// A walk under way.
#[derive(Debug)]
pub struct FileWalk {
    /// Directories still to visit: inode, canonical path, last name visited in it.
    pending: Vec<(u64, String, Option<String>)>,
    /// The walk's path when it names a file: visited on the first step.
    single: Option<(String, u64)>,
    /// The path of the file being visited, rebuilt in place for each.
    scratch: String,
}

impl FileWalk {
    /// Starts a walk of `raw`: the file itself, or every file below the directory
    /// (symbolic links are not followed or visited).
    pub fn start(ns: &Namespace, raw: &str) -> Result<FileWalk, OpError> {
        let comps = path::components(raw)?;
        let (ino, inode) = ns.resolve(&comps)?;
        let mut walk = FileWalk {
            pending: Vec::new(),
            single: None,
            scratch: String::new(),
        };
        match inode.kind {
            FileKind::File => walk.single = Some((path::join(&comps), ino)),
            FileKind::Dir => walk.pending.push((ino, path::join(&comps), None)),
            FileKind::Symlink => {}
        }
        Ok(walk)
    }

    /// Looks at up to `budget` entries, calling `visit` for each file; `true` once
    /// every file has been visited.
    pub fn step(
        &mut self,
        ns: &Namespace,
        budget: usize,
        mut visit: impl FnMut(&str, &Inode),
    ) -> bool {
        if let Some((p, ino)) = self.single.take() {
            if let Some(inode) = ns.inodes.get(&ino).filter(|i| i.kind == FileKind::File) {
                visit(&p, inode);
            }
            return true;
        }
        let mut left = budget.max(1);
        while let Some((dir, dir_path, after)) = self.pending.pop() {
            let Some(children) = ns.children.get(&dir) else {
                continue;
            };
            let from = match &after {
                Some(name) => Bound::Excluded(name.as_str()),
                None => Bound::Unbounded,
            };
            let mut last: Option<&str> = None;
            let mut below = Vec::new();
            for (name, child) in children.range::<str, _>((from, Bound::Unbounded)) {
                if left == 0 {
                    let resume = last.map(str::to_string).or(after);
                    self.pending.push((dir, dir_path.clone(), resume));
                    break;
                }
                left -= 1;
                last = Some(name);
                let Some(inode) = ns.inodes.get(child) else {
                    continue;
                };
                self.scratch.clear();
                self.scratch.push_str(&dir_path);
                if dir_path != "/" {
                    self.scratch.push('/');
                }
                self.scratch.push_str(name);
                match inode.kind {
                    FileKind::File => visit(&self.scratch, inode),
                    FileKind::Dir => below.push((*child, self.scratch.clone(), None)),
                    FileKind::Symlink => {}
                }
            }
            // Below the rest of this directory on the stack, so they come first.
            self.pending.extend(below);
            if left == 0 {
                return self.pending.is_empty();
            }
        }
        true
    }
}
