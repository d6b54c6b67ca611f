//! Every entry at or below a path, in tree order, a slice at a time: what `fsck`
//! checks and what `count` and `du` add up. The walk keeps its own cursor, so the
//! state lock can be let go between slices, and it can start after any path, so a
//! paged report resumes where its last page ended instead of walking from the top.
//!
//! Tree order is a pre-order with each directory's entries in name order: a
//! directory comes just before what it holds, and paths compare component by
//! component (`/a/b` before `/a.txt`, since `a` sorts before `a.txt`; see
//! [`tree_cmp`]).
//!
//! Between slices the tree may change, so like `hdfs dfs -count` the walk is not a
//! snapshot: an entry renamed across the cursor may be visited twice or not at all,
//! and a directory removed meanwhile is skipped.

use std::cmp::Ordering;
use std::ops::Bound;

use dfs_protocol::{ErrorCode, FileKind};

use super::InodeRef;
use super::Namespace;
use crate::error::OpError;
use crate::path;

/// One directory on the walk's stack.
#[derive(Debug)]
struct Frame {
    ino: u64,
    /// Its canonical path.
    path: String,
    /// The last of its entries visited (or passed into): the walk goes on after it.
    after: Option<String>,
}

/// A walk under way.
#[derive(Debug)]
pub struct TreeWalk {
    /// Directories under way, innermost last.
    pending: Vec<Frame>,
    /// The walk's own entry, visited on the first step.
    root: Option<(String, u64)>,
    /// The path of the entry being visited, rebuilt in place for each.
    scratch: String,
}

impl TreeWalk {
    /// Starts a walk of `raw`: the entry itself, then (for a directory) everything
    /// below it. Symbolic links are visited, never followed.
    pub fn start(ns: &Namespace, raw: &str) -> Result<TreeWalk, OpError> {
        let comps = path::components(raw)?;
        let (ino, inode) = ns.resolve(&comps)?;
        let root = path::join(&comps);
        let mut walk = TreeWalk {
            pending: Vec::new(),
            root: Some((root.clone(), ino)),
            scratch: String::new(),
        };
        if inode.kind == FileKind::Dir {
            walk.pending.push(Frame {
                ino,
                path: root,
                after: None,
            });
        }
        Ok(walk)
    }

    /// Starts a walk of `raw` just after the entry `after` (a path at or below it,
    /// which need not exist any more): the next page of a paged report. What comes
    /// before `after` in tree order is not visited, nor is `raw` itself.
    pub fn start_after(ns: &Namespace, raw: &str, after: &str) -> Result<TreeWalk, OpError> {
        let comps = path::components(raw)?;
        let below = path::components(after)?;
        let rest = below
            .strip_prefix(comps.as_slice())
            .ok_or_else(|| ErrorCode::InvalidPath {
                path: after.to_string(),
                reason: format!("a cursor not at or below {raw}"),
            })?;
        let mut walk = TreeWalk::start(ns, raw)?;
        walk.root = None;
        // Down the cursor's path: each directory on it goes on after the name the
        // cursor passes through, and one the cursor names is walked into.
        let mut depth = 0;
        while let Some(frame) = walk.pending.last_mut() {
            let Some(name) = rest.get(depth) else { break };
            frame.after = Some(name.to_string());
            let (dir, dir_path) = (frame.ino, frame.path.clone());
            let child = ns.children.get(&dir).and_then(|c| c.get(name.as_str()));
            let Some(child) =
                child.filter(|c| ns.inodes.get(c).is_some_and(|i| i.kind == FileKind::Dir))
            else {
                break;
            };
            walk.pending.push(Frame {
                ino: child,
                path: join(&dir_path, name),
                after: None,
            });
            depth += 1;
        }
        Ok(walk)
    }

    /// Looks at up to `budget` entries, calling `visit` with each one's path and
    /// inode; `true` once every entry has been visited.
    pub fn step(
        &mut self,
        ns: &Namespace,
        budget: usize,
        mut visit: impl FnMut(&str, &InodeRef<'_>),
    ) -> bool {
        let mut left = budget.max(1);
        if let Some((p, ino)) = self.root.take() {
            if let Some(inode) = ns.inodes.get(&ino) {
                visit(&p, &inode);
            }
            left -= 1;
        }
        while let Some(frame) = self.pending.last_mut() {
            // A directory removed since it was stacked holds nothing any more.
            let Some(children) = ns.children.get(&frame.ino) else {
                self.pending.pop();
                continue;
            };
            let from = match &frame.after {
                Some(name) => Bound::Excluded(name.as_str()),
                None => Bound::Unbounded,
            };
            let (mut last, mut below, mut spent) = (None, None, false);
            for (name, child) in children.range(from) {
                if left == 0 {
                    spent = true;
                    break;
                }
                left -= 1;
                let name = &*last.insert(name);
                let Some(inode) = ns.inodes.get(&child) else {
                    continue;
                };
                self.scratch.clear();
                self.scratch.push_str(&frame.path);
                if frame.path != "/" {
                    self.scratch.push('/');
                }
                self.scratch.push_str(name);
                visit(&self.scratch, &inode);
                if inode.kind == FileKind::Dir {
                    // Into it now: what it holds comes before its next sibling.
                    below = Some(child);
                    break;
                }
            }
            if let Some(name) = last {
                frame.after = Some(name.to_string());
            }
            if spent {
                return false;
            }
            match below {
                Some(ino) => self.pending.push(Frame {
                    ino,
                    path: self.scratch.clone(),
                    after: None,
                }),
                None => {
                    self.pending.pop();
                }
            }
        }
        true
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Paths in tree order: component by component, so a directory's entries come
/// right after it and before its next sibling.
pub fn tree_cmp(a: &str, b: &str) -> Ordering {
    a.split('/')
        .filter(|c| !c.is_empty())
        .cmp(b.split('/').filter(|c| !c.is_empty()))
}
