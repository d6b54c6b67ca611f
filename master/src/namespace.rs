//! The namespace: directories and files over the [`Store`], plus the in-memory chunk
//! table derived from it (which chunks files reference, at which version).
//!
//! Every mutation builds one [`Txn`] and applies it whole, so a crash leaves either the
//! old state or the new one. Callers make it durable with [`Store::flush`] before
//! answering.

use std::collections::HashMap;

use dfs_protocol::{ChunkHandle, ChunkVersion, DirEntry, ErrorCode, FileKind};

use crate::error::{OpError, StoreError};
use crate::path;
use crate::store::{Inode, Store, StoredChunk, Txn, ROOT};

/// What the master knows of a chunk that a file references.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkMeta {
    pub version: ChunkVersion,
    pub size: u64,
    pub replication: u32,
}

#[derive(Debug)]
pub struct Namespace {
    store: Store,
    next_inode: u64,
    chunks: HashMap<ChunkHandle, ChunkMeta>,
    files: u64,
}

fn not_found(comps: &[String]) -> OpError {
    ErrorCode::NotFound {
        path: path::join(comps),
    }
    .into()
}

impl Namespace {
    /// Loads the chunk table and counters from the store. Blocking.
    pub fn open(store: Store) -> Result<Namespace, StoreError> {
        let mut chunks = HashMap::new();
        let mut files = 0;
        for item in store.all_inodes() {
            let (_, inode) = item?;
            if inode.kind == FileKind::File {
                files += 1;
                for c in &inode.chunks {
                    chunks.insert(
                        c.handle,
                        ChunkMeta {
                            version: c.version,
                            size: c.size,
                            replication: inode.replication,
                        },
                    );
                }
            }
        }
        let next_inode = store.next_inode()?;
        Ok(Namespace {
            store,
            next_inode,
            chunks,
            files,
        })
    }

    pub fn chunk(&self, handle: &ChunkHandle) -> Option<&ChunkMeta> {
        self.chunks.get(handle)
    }

    pub fn chunks(&self) -> impl Iterator<Item = (&ChunkHandle, &ChunkMeta)> {
        self.chunks.iter()
    }

    pub fn file_count(&self) -> u64 {
        self.files
    }

    fn alloc_inode(&mut self, txn: &mut Txn) -> u64 {
        let ino = self.next_inode;
        self.next_inode += 1;
        txn.set_next_inode(self.next_inode);
        ino
    }

    fn inode(&self, ino: u64) -> Result<Inode, OpError> {
        self.store.inode(ino)?.ok_or_else(|| {
            OpError::Store(StoreError::Corrupt {
                key: format!("inode {ino}"),
                reason: "referenced by a directory entry but missing".into(),
            })
        })
    }

    /// Walks `comps` from the root.
    fn resolve(&self, comps: &[String]) -> Result<(u64, Inode), OpError> {
        let mut ino = ROOT;
        let mut inode = self.inode(ROOT)?;
        for (i, name) in comps.iter().enumerate() {
            if inode.kind != FileKind::Dir {
                return Err(ErrorCode::NotADirectory {
                    path: path::join(&comps[..i]),
                }
                .into());
            }
            ino = self
                .store
                .lookup(ino, name)?
                .ok_or_else(|| not_found(&comps[..=i]))?;
            inode = self.inode(ino)?;
        }
        Ok((ino, inode))
    }

    /// The directory that holds the last component, which must exist and be a directory.
    fn resolve_parent<'a>(&self, comps: &'a [String]) -> Result<(u64, &'a str), OpError> {
        let (name, parent) = comps
            .split_last()
            .ok_or_else(|| ErrorCode::InvalidArgument {
                reason: "that operation does not apply to /".into(),
            })?;
        let (pino, pinode) = self.resolve(parent)?;
        if pinode.kind != FileKind::Dir {
            return Err(ErrorCode::NotADirectory {
                path: path::join(parent),
            }
            .into());
        }
        Ok((pino, name))
    }

    fn new_dir() -> Inode {
        Inode {
            kind: FileKind::Dir,
            size: 0,
            replication: 0,
            mtime: crate::now_secs(),
            chunks: Vec::new(),
        }
    }

    pub fn mkdir(&mut self, raw: &str, parents: bool) -> Result<(), OpError> {
        let comps = path::components(raw)?;
        if comps.is_empty() {
            return if parents {
                Ok(())
            } else {
                Err(ErrorCode::AlreadyExists { path: "/".into() }.into())
            };
        }
        let mut txn = Txn::default();
        let mut ino = ROOT;
        let mut creating = false;
        for (i, name) in comps.iter().enumerate() {
            let last = i + 1 == comps.len();
            let existing = if creating {
                None
            } else {
                self.store.lookup(ino, name)?
            };
            match existing {
                Some(child) => {
                    let inode = self.inode(child)?;
                    if inode.kind != FileKind::Dir {
                        let p = path::join(&comps[..=i]);
                        return Err(if last {
                            ErrorCode::AlreadyExists { path: p }
                        } else {
                            ErrorCode::NotADirectory { path: p }
                        }
                        .into());
                    }
                    if last && !parents {
                        return Err(ErrorCode::AlreadyExists {
                            path: path::join(&comps),
                        }
                        .into());
                    }
                    ino = child;
                }
                None if !last && !parents => return Err(not_found(&comps[..=i])),
                None => {
                    creating = true;
                    let child = self.alloc_inode(&mut txn);
                    txn.put_inode(child, &Self::new_dir())?;
                    txn.put_dirent(ino, name, child);
                    ino = child;
                }
            }
        }
        self.store.apply(txn)?;
        Ok(())
    }

    /// A directory's entries, or the single entry of a file.
    pub fn list(&self, raw: &str) -> Result<Vec<DirEntry>, OpError> {
        let comps = path::components(raw)?;
        let (ino, inode) = self.resolve(&comps)?;
        if inode.kind == FileKind::File {
            return Ok(vec![DirEntry {
                name: comps.last().cloned().unwrap_or_default(),
                kind: FileKind::File,
                size: inode.size,
                mtime: inode.mtime,
            }]);
        }
        let mut out = Vec::new();
        for (name, child) in self.store.children(ino)? {
            let c = self.inode(child)?;
            out.push(DirEntry {
                name,
                kind: c.kind,
                size: c.size,
                mtime: c.mtime,
            });
        }
        Ok(out)
    }

    /// The canonical path and the inode at `raw`.
    pub fn stat(&self, raw: &str) -> Result<(String, Inode), OpError> {
        let comps = path::components(raw)?;
        let (_, inode) = self.resolve(&comps)?;
        Ok((path::join(&comps), inode))
    }

    /// Removes a file, or a directory (with `recursive`, everything below it). Returns
    /// the chunks no file references any more.
    pub fn delete(&mut self, raw: &str, recursive: bool) -> Result<Vec<ChunkHandle>, OpError> {
        let comps = path::components(raw)?;
        if comps.is_empty() {
            return Err(ErrorCode::InvalidArgument {
                reason: "refusing to remove /".into(),
            }
            .into());
        }
        let (pino, name) = self.resolve_parent(&comps)?;
        let ino = self
            .store
            .lookup(pino, name)?
            .ok_or_else(|| not_found(&comps))?;
        let inode = self.inode(ino)?;
        if inode.kind == FileKind::Dir && !recursive && self.store.has_children(ino)? {
            return Err(ErrorCode::NotEmpty {
                path: path::join(&comps),
            }
            .into());
        }
        let mut txn = Txn::default();
        txn.remove_dirent(pino, name);
        let mut freed = Vec::new();
        let mut files_removed = 0;
        // Depth-first over the subtree with an explicit stack: no recursion depth limit.
        let mut stack = vec![(ino, inode)];
        while let Some((ino, inode)) = stack.pop() {
            txn.remove_inode(ino);
            if inode.kind == FileKind::File {
                files_removed += 1;
                freed.extend(inode.chunks.iter().map(|c| c.handle));
            } else {
                for (child_name, child) in self.store.children(ino)? {
                    txn.remove_dirent(ino, &child_name);
                    stack.push((child, self.inode(child)?));
                }
            }
        }
        self.store.apply(txn)?;
        self.files -= files_removed;
        for h in &freed {
            self.chunks.remove(h);
        }
        Ok(freed)
    }

    /// Checks that a file could be created at `raw` now; returns its canonical path.
    pub fn check_create(&self, raw: &str, overwrite: bool) -> Result<String, OpError> {
        let comps = path::components(raw)?;
        let (pino, name) = self.resolve_parent(&comps)?;
        if let Some(existing) = self.store.lookup(pino, name)? {
            let inode = self.inode(existing)?;
            if inode.kind == FileKind::Dir {
                return Err(ErrorCode::IsADirectory {
                    path: path::join(&comps),
                }
                .into());
            }
            if !overwrite {
                return Err(ErrorCode::AlreadyExists {
                    path: path::join(&comps),
                }
                .into());
            }
        }
        Ok(path::join(&comps))
    }

    /// Links a complete file at `raw` in one step. Returns the chunks of the file it
    /// replaced, if any.
    pub fn commit_file(
        &mut self,
        raw: &str,
        overwrite: bool,
        replication: u32,
        chunks: Vec<StoredChunk>,
    ) -> Result<Vec<ChunkHandle>, OpError> {
        self.check_create(raw, overwrite)?;
        let comps = path::components(raw)?;
        let (pino, name) = self.resolve_parent(&comps)?;
        let mut txn = Txn::default();
        let mut replaced = Vec::new();
        if let Some(old) = self.store.lookup(pino, name)? {
            replaced = self.inode(old)?.chunks.iter().map(|c| c.handle).collect();
            txn.remove_inode(old);
        } else {
            self.files += 1;
        }
        let ino = self.alloc_inode(&mut txn);
        let inode = Inode {
            kind: FileKind::File,
            size: chunks.iter().map(|c| c.size).sum(),
            replication,
            mtime: crate::now_secs(),
            chunks,
        };
        txn.put_inode(ino, &inode)?;
        txn.put_dirent(pino, name, ino);
        self.store.apply(txn)?;
        for h in &replaced {
            self.chunks.remove(h);
        }
        for c in &inode.chunks {
            self.chunks.insert(
                c.handle,
                ChunkMeta {
                    version: c.version,
                    size: c.size,
                    replication,
                },
            );
        }
        Ok(replaced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns() -> (tempfile::TempDir, Namespace) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        (dir, Namespace::open(store).expect("ns"))
    }

    fn code(r: Result<impl std::fmt::Debug, OpError>) -> ErrorCode {
        match r {
            Err(OpError::Client(c)) => c,
            other => panic!("expected a client error, got {other:?}"),
        }
    }

    #[test]
    fn mkdir_list_delete() {
        let (_d, mut ns) = ns();
        ns.mkdir("/a", false).unwrap();
        assert!(matches!(
            code(ns.mkdir("/a", false)),
            ErrorCode::AlreadyExists { .. }
        ));
        ns.mkdir("/a", true).unwrap();
        assert!(matches!(
            code(ns.mkdir("/x/y", false)),
            ErrorCode::NotFound { .. }
        ));
        ns.mkdir("/x/y/z", true).unwrap();
        let names: Vec<_> = ns.list("/").unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["a", "x"]);
        assert!(matches!(
            code(ns.delete("/x", false)),
            ErrorCode::NotEmpty { .. }
        ));
        ns.delete("/x", true).unwrap();
        assert!(matches!(code(ns.list("/x")), ErrorCode::NotFound { .. }));
        assert!(matches!(
            code(ns.delete("/", true)),
            ErrorCode::InvalidArgument { .. }
        ));
    }

    #[test]
    fn files_commit_overwrite_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let h = ChunkHandle::random();
        {
            let mut ns = Namespace::open(Store::open(dir.path()).unwrap()).unwrap();
            let c = StoredChunk {
                handle: h,
                version: ChunkVersion::FIRST,
                size: 10,
            };
            ns.commit_file("/f", false, 3, vec![c]).unwrap();
            assert!(matches!(
                code(ns.commit_file("/f", false, 3, vec![])),
                ErrorCode::AlreadyExists { .. }
            ));
            assert!(matches!(
                code(ns.mkdir("/f/g", true)),
                ErrorCode::NotADirectory { .. }
            ));
            ns.store.flush_blocking().unwrap();
        }
        let mut ns = Namespace::open(Store::open(dir.path()).unwrap()).unwrap();
        assert_eq!(ns.file_count(), 1);
        assert_eq!(ns.chunk(&h).map(|m| m.size), Some(10));
        let (_, inode) = ns.stat("/f").unwrap();
        assert_eq!(inode.size, 10);
        let replaced = ns.commit_file("/f", true, 2, vec![]).unwrap();
        assert_eq!(replaced, vec![h]);
        assert!(ns.chunk(&h).is_none());
        assert_eq!(ns.file_count(), 1);
    }
}
