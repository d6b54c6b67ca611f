//! The namespace: directories, files, uploads in progress and the trash. All of it
//! lives in memory (as in GFS) and is loaded from the [`Store`] at start; changes reach
//! sled through the [`StoreWriter`], off the request path.
//!
//! Every change happens in two steps. A `plan_*` method checks the request against the
//! current state and returns the [`Mutation`] that carries it out, with every decision
//! (inode numbers, times) already made; nothing changes yet. [`Namespace::apply`] then
//! performs a mutation: one sled batch that also records the log sequence number, and
//! the matching in-memory updates. Live requests and log replay both go through
//! `apply`, so recovery rebuilds exactly what the live master had; a sequence number
//! already applied is skipped, which makes replay idempotent. The queries and the
//! plans are here; applying is in `apply.rs`.

mod apply;
mod chunk_table;
mod directory;
mod inode_table;
mod name;
pub mod summary;
pub mod tree_walk;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use dfs_protocol::{
    ChunkHandle, ChunkVersion, CommittedChunk, DirEntry, ErrorCode, FileKind, ServerId, UploadId,
};

use crate::error::{OpError, StoreError};
use crate::mutation::{Create, Mutation};
use crate::path;
use crate::store::{
    Attr, Inode, KeyRecord, Store, StoreWriter, StoredChunk, TrashEntry, UploadRecord, ROOT,
};
use chunk_table::{ChunkAt, ChunkTable, Found};
use directory::Directory;
use inode_table::InodeTable;
pub use inode_table::{Chunks, InodeRef};
use name::Name;

/// What the master knows of a chunk that a file (visible or in the trash) references.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkMeta {
    pub version: ChunkVersion,
    pub size: u64,
    pub replication: u32,
    /// The file that references it.
    pub ino: u64,
}

impl From<Found> for ChunkMeta {
    fn from(f: Found) -> ChunkMeta {
        ChunkMeta {
            version: f.chunk.version,
            size: f.chunk.size,
            replication: f.replication,
            ino: f.at.ino,
        }
    }
}

/// What `plan_set_attr` changes: each field given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttrChange {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub atime: Option<u64>,
    pub mtime: Option<u64>,
}

/// What applying a mutation released.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Chunks nothing references any more: garbage for the chunkservers to delete.
    pub freed: Vec<ChunkHandle>,
}

#[derive(Debug)]
pub struct Namespace {
    store: Store,
    writer: Arc<StoreWriter>,
    inodes: InodeTable,
    /// Each directory's entries, by name.
    children: HashMap<u64, Directory>,
    next_inode: u64,
    applied: u64,
    /// Each chunk's file and place in it, in handle order, so that upkeep can
    /// review it a slice at a time (see [`Namespace::chunks_after`]).
    chunks: ChunkTable,
    /// File inodes, including those in the trash.
    files: u64,
    uploads: HashMap<UploadId, UploadRecord>,
    upload_chunks: HashSet<ChunkHandle>,
    trash: BTreeMap<u64, TrashEntry>,
    /// Chunkservers being drained: not placed on, their replicas not counted.
    decommissioned: HashSet<ServerId>,
    /// Chunks open for appends -> the chain of their latest lease.
    open: HashMap<ChunkHandle, Vec<ServerId>>,
    /// Client keys by name.
    keys: BTreeMap<String, KeyRecord>,
    /// Changes whenever a key is created or removed (chunkservers compare it).
    keys_epoch: u64,
    /// Enrolled chunkservers: the fingerprint of the key each proves its id with.
    server_keys: HashMap<ServerId, [u8; 32]>,
    /// The highest cluster seconds logged (see `crate::clock`).
    clock_floor: u64,
    /// Attributes of the inodes that had them set; the others have the defaults.
    attrs: HashMap<u64, Attr>,
    /// Each symbolic link's target.
    links: HashMap<u64, String>,
    /// Roots of removed subtrees still being reclaimed, a piece at a time
    /// ([`Namespace::reap_piece`]), with the files left in each; unreachable from `/`.
    reaping: BTreeMap<u64, u64>,
}

/// Entries (files, directories, links) a removal may drop in one logged record. A
/// larger subtree is detached at once and reclaimed in pieces of this size, so
/// neither one sled batch nor one log record grows with the tree: removing a tree of
/// 300,000 entries at once had taken the master from 230 MB to 1.4 GB.
pub const REAP_PIECE: usize = 4096;

/// The longest symbolic link target stored (Linux's PATH_MAX).
pub const MAX_LINK_TARGET: usize = 4096;

fn not_found(comps: &[String]) -> OpError {
    ErrorCode::NotFound {
        path: path::join(comps),
    }
    .into()
}

/// The chunk table entries of file `ino`.
fn chunk_entries(
    ino: u64,
    chunks: &[StoredChunk],
) -> impl Iterator<Item = (ChunkHandle, ChunkAt)> + '_ {
    chunks
        .iter()
        .enumerate()
        .map(move |(index, c)| (c.handle, ChunkAt { ino, index }))
}

/// Every directory's entries, from the store. They come in the store's key order:
/// one directory after another, each in name order, so each directory's blocks are
/// filled as they come (see [`directory::Builder`]).
fn load_directories(store: &Store) -> Result<HashMap<u64, Directory>, StoreError> {
    fn done(children: &mut HashMap<u64, Directory>, parent: u64, built: directory::Builder) {
        let built = built.finish();
        match children.entry(parent) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(built);
            }
            // Only if the store's order were not by directory: still correct.
            std::collections::hash_map::Entry::Occupied(mut o) => {
                for (name, ino) in built.iter() {
                    o.get_mut().insert(&name, ino);
                }
            }
        }
    }
    let mut children: HashMap<u64, Directory> = HashMap::new();
    let mut current: Option<(u64, directory::Builder)> = None;
    for item in store.all_dirents() {
        let (parent, name, child) = item?;
        match current.as_mut() {
            Some((p, b)) if *p == parent => b.push(&name, child),
            _ => {
                if let Some((p, b)) = current.take() {
                    done(&mut children, p, b);
                }
                let mut b = directory::Builder::default();
                b.push(&name, child);
                current = Some((parent, b));
            }
        }
    }
    if let Some((p, b)) = current {
        done(&mut children, p, b);
    }
    Ok(children)
}

fn corrupt(what: String) -> StoreError {
    StoreError::Corrupt {
        key: "log replay".into(),
        reason: what,
    }
}

impl Namespace {
    /// Loads the whole namespace from the store and starts its writer. Blocking.
    pub fn open(store: Store) -> Result<Namespace, StoreError> {
        let mut files = 0;
        let mut chunk_count = 0usize;
        let mut inodes = InodeTable::default();
        for item in store.all_inodes() {
            let (ino, inode) = item?;
            if inode.kind == FileKind::File {
                files += 1;
                chunk_count = chunk_count.saturating_add(inode.chunks.len());
            }
            inodes.insert(ino, inode);
        }
        let mut chunks = Vec::with_capacity(chunk_count);
        for (ino, inode) in inodes.iter() {
            if inode.kind == FileKind::File {
                chunks.extend(chunk_entries(ino, &inode.chunks));
            }
        }
        let chunks = ChunkTable::build(chunks);
        let children = load_directories(&store)?;
        let uploads: HashMap<UploadId, UploadRecord> = store.uploads()?.into_iter().collect();
        let upload_chunks = uploads
            .values()
            .flat_map(|u| u.chunks.iter().map(|c| c.handle))
            .collect();
        let trash = store.trash()?.into_iter().collect();
        let applied = store.applied()?;
        let decommissioned = store.decommissioned()?.into_iter().collect();
        let open = store.open_chunks()?.into_iter().collect();
        let keys = store.keys()?.into_iter().collect();
        let server_keys = store.server_keys()?.into_iter().collect();
        let clock_floor = store.clock_floor()?;
        let attrs = store.attrs()?.into_iter().collect();
        let links = store.links()?.into_iter().collect();
        let reaping = store.reaping()?;
        let mut ns = Namespace {
            reaping: BTreeMap::new(),
            attrs,
            links,
            clock_floor,
            server_keys,
            keys,
            // Any value that differs from what chunkservers hold makes them reload.
            keys_epoch: applied.wrapping_add(1) | 1 << 63,
            next_inode: store.next_inode()?,
            applied,
            writer: Arc::new(StoreWriter::start(store.clone(), applied)?),
            store,
            inodes,
            children,
            chunks,
            files,
            uploads,
            upload_chunks,
            trash,
            decommissioned,
            open,
        };
        for root in reaping {
            let (_, files) = ns.tally(root);
            ns.reaping.insert(root, files);
        }
        Ok(ns)
    }

    /// The writer that carries applied mutations into the store.
    pub fn writer(&self) -> Arc<StoreWriter> {
        self.writer.clone()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The client key called `name`.
    pub fn key(&self, name: &str) -> Option<&KeyRecord> {
        self.keys.get(name)
    }

    pub fn keys(&self) -> impl Iterator<Item = (&String, &KeyRecord)> {
        self.keys.iter()
    }

    pub fn keys_epoch(&self) -> u64 {
        self.keys_epoch
    }

    /// The fingerprint of the key chunkserver `server` enrolled with.
    /// The highest cluster seconds logged: a restarted master's clock starts there at least.
    pub fn clock_floor(&self) -> u64 {
        self.clock_floor
    }

    pub fn server_key(&self, server: &ServerId) -> Option<&[u8; 32]> {
        self.server_keys.get(server)
    }

    /// The last log sequence number applied.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// What a file says of chunk `handle`, if a file references it.
    pub fn chunk(&self, handle: &ChunkHandle) -> Option<ChunkMeta> {
        self.chunks.get(&self.inodes, handle).map(ChunkMeta::from)
    }

    pub fn chunks(&self) -> impl Iterator<Item = (ChunkHandle, ChunkMeta)> + '_ {
        self.chunks_after(None)
    }

    /// The chunks after `after` in handle order (all of them for `None`): where a
    /// rolling pass over the table carries on.
    pub fn chunks_after(
        &self,
        after: Option<ChunkHandle>,
    ) -> impl Iterator<Item = (ChunkHandle, ChunkMeta)> + '_ {
        self.chunks
            .after(&self.inodes, after)
            .map(|(h, found)| (h, ChunkMeta::from(found)))
    }

    /// How many chunks files reference (visible or in the trash).
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// Whether a chunk must be kept: a file or an upload in progress references it.
    pub fn is_referenced(&self, handle: &ChunkHandle) -> bool {
        self.chunks.get(&self.inodes, handle).is_some() || self.upload_chunks.contains(handle)
    }

    /// Estimated bytes per structure (see [`crate::footprint`]); time in proportion
    /// to directories, not files.
    pub fn footprint(&self) -> Vec<crate::footprint::Part> {
        use crate::footprint::{hash_table, vec_heap, Part};
        let directory_bytes: usize = self.children.values().map(Directory::heap_bytes).sum();
        let stored_chunks = self.chunks.len();
        vec![
            Part {
                structure: "inodes",
                // A file of one chunk holds it inline; a file of several holds them
                // all on the heap, about as many as chunks outnumber files (the
                // first of each such file is not counted).
                bytes: self.inodes.footprint()
                    + vec_heap::<StoredChunk>(
                        stored_chunks.saturating_sub(usize::try_from(self.files).unwrap_or(0)),
                    ),
            },
            Part {
                structure: "directory_entries",
                // Each directory's blocks, counted exactly; time in proportion to
                // the blocks, some hundred entries each.
                bytes: hash_table::<u64, Directory>(self.children.capacity())
                    + directory_bytes as u64,
            },
            Part {
                structure: "chunk_table",
                bytes: self.chunks.footprint(),
            },
            Part {
                structure: "attributes",
                bytes: hash_table::<u64, Attr>(self.attrs.capacity())
                    + hash_table::<u64, String>(self.links.capacity()),
            },
        ]
    }

    /// The inode number the next new entry gets.
    pub fn next_inode(&self) -> u64 {
        self.next_inode
    }

    /// Files reachable from `/` (not in the trash).
    pub fn visible_files(&self) -> u64 {
        let hidden =
            self.trash.values().map(|t| t.files).sum::<u64>() + self.reaping.values().sum::<u64>();
        self.files.saturating_sub(hidden)
    }

    pub fn upload(&self, id: &UploadId) -> Option<&UploadRecord> {
        self.uploads.get(id)
    }

    pub fn trash(&self) -> impl Iterator<Item = (&u64, &TrashEntry)> {
        self.trash.iter()
    }

    /// Trash entries after the entry id `after`, oldest first.
    pub fn trash_after(&self, after: Option<u64>) -> impl Iterator<Item = (&u64, &TrashEntry)> {
        use std::ops::Bound;
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.trash.range((start, Bound::Unbounded))
    }

    pub fn decommissioned(&self) -> &HashSet<ServerId> {
        &self.decommissioned
    }

    /// The chain of a chunk open for appends; `None` when its size is settled.
    pub fn open_chain(&self, handle: &ChunkHandle) -> Option<&[ServerId]> {
        self.open.get(handle).map(Vec::as_slice)
    }

    pub fn open_chunks(&self) -> impl Iterator<Item = (&ChunkHandle, &Vec<ServerId>)> {
        self.open.iter()
    }

    /// A file by inode number.
    pub fn file(&self, ino: u64) -> Option<InodeRef<'_>> {
        self.inodes.get(&ino).filter(|i| i.kind == FileKind::File)
    }

    /// The file at `raw` for an append: its inode number, or the mutation creating
    /// it empty when `create` and it does not exist.
    pub fn plan_append_file(
        &self,
        raw: &str,
        create: bool,
        replication: u32,
        now: u64,
    ) -> Result<(u64, Option<Mutation>), OpError> {
        let comps = path::components(raw)?;
        match self.resolve(&comps) {
            Ok((ino, inode)) if inode.kind == FileKind::File => Ok((ino, None)),
            Ok(_) => Err(ErrorCode::IsADirectory {
                path: path::join(&comps),
            }
            .into()),
            Err(OpError::Client(ErrorCode::NotFound { .. })) if create => {
                let (parent, _) = self.check_create(&comps, false)?;
                let ino = self.next_inode;
                let m = Mutation::CreateFile {
                    parent,
                    name: comps.last().cloned().unwrap_or_default(),
                    ino,
                    replication,
                    mtime: now,
                };
                Ok((ino, Some(m)))
            }
            Err(e) => Err(e),
        }
    }

    /// `dfs touch`: the modification time of what is at `raw` set to `now`, or an
    /// empty file (at `replication`) created there.
    pub fn plan_touch(&self, raw: &str, replication: u32, now: u64) -> Result<Mutation, OpError> {
        let comps = path::components(raw)?;
        match self.resolve(&comps) {
            Ok((ino, _)) => Ok(Mutation::SetTimes { ino, mtime: now }),
            Err(OpError::Client(ErrorCode::NotFound { .. })) => {
                match self.plan_append_file(raw, true, replication, now)? {
                    (_, Some(m)) => Ok(m),
                    // Not there a moment ago, there now: only under the same lock, so
                    // this is not reached; a touch of it is what was asked.
                    (ino, None) => Ok(Mutation::SetTimes { ino, mtime: now }),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Every file at or below `raw` gets `replication`.
    pub fn plan_set_replication(&self, raw: &str, replication: u32) -> Result<Mutation, OpError> {
        let inodes = self.file_inodes_under(raw)?;
        Ok(Mutation::SetReplication {
            inodes,
            replication,
        })
    }

    fn file_inodes_under(&self, raw: &str) -> Result<Vec<u64>, OpError> {
        let comps = path::components(raw)?;
        let (ino, _) = self.resolve(&comps)?;
        let (inodes, _) = self.subtree(ino);
        Ok(inodes
            .into_iter()
            .filter(|i| self.inodes.get(i).is_some_and(|n| n.kind == FileKind::File))
            .collect())
    }

    fn inode(&self, ino: u64) -> Result<InodeRef<'_>, StoreError> {
        self.inodes
            .get(&ino)
            .ok_or_else(|| corrupt(format!("inode {ino} is referenced but missing")))
    }

    fn lookup(&self, parent: u64, name: &str) -> Option<u64> {
        self.children.get(&parent).and_then(|c| c.get(name))
    }

    fn has_children(&self, ino: u64) -> bool {
        self.children.get(&ino).is_some_and(|c| !c.is_empty())
    }

    /// Walks `comps` from the root.
    fn resolve(&self, comps: &[String]) -> Result<(u64, InodeRef<'_>), OpError> {
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
                .lookup(ino, name)
                .ok_or_else(|| not_found(&comps[..=i]))?;
            inode = self.inode(ino)?;
        }
        Ok((ino, inode))
    }

    /// The directory that holds the last component, which must exist and be a directory.
    fn resolve_parent<'a>(
        &self,
        comps: &'a [String],
        what: &str,
    ) -> Result<(u64, &'a str), OpError> {
        let (name, parent) = comps
            .split_last()
            .ok_or_else(|| ErrorCode::InvalidArgument {
                reason: format!("refusing to {what} /"),
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

    /// Every inode number of the subtree at `ino`, and the directory entries inside it.
    fn subtree(&self, ino: u64) -> (Vec<u64>, Vec<(u64, String)>) {
        let mut inodes = Vec::new();
        let mut dirents = Vec::new();
        // An explicit stack: no recursion depth limit for deep trees.
        let mut stack = vec![ino];
        while let Some(ino) = stack.pop() {
            if let Some(entries) = self.children.get(&ino) {
                for (name, child) in entries.iter() {
                    dirents.push((ino, name.to_string()));
                    stack.push(child);
                }
            }
            inodes.push(ino);
        }
        (inodes, dirents)
    }

    // ----- reads -----

    /// Up to `limit` entries of a directory after the name `after`, in name order, and
    /// the cursor for the next page; a file lists as its single entry.
    pub fn list_page(
        &self,
        raw: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<DirEntry>, Option<String>), OpError> {
        use std::ops::Bound;
        let comps = path::components(raw)?;
        let (ino, inode) = self.resolve(&comps)?;
        if inode.kind != FileKind::Dir {
            let entries = match after {
                Some(_) => Vec::new(),
                None => vec![DirEntry {
                    name: comps.last().cloned().unwrap_or_default(),
                    kind: inode.kind,
                    size: inode.size,
                    mtime: inode.mtime,
                    replication: inode.replication,
                }],
            };
            return Ok((entries, None));
        }
        let Some(children) = self.children.get(&ino) else {
            return Ok((Vec::new(), None));
        };
        let start = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        let mut out = Vec::with_capacity(limit.min(children.len()));
        let mut next = None;
        for (name, child) in children.range(start) {
            if out.len() == limit {
                next = out.last().map(|e: &DirEntry| e.name.clone());
                break;
            }
            let c = self.inode(child)?;
            out.push(DirEntry {
                name: name.to_string(),
                kind: c.kind,
                size: c.size,
                mtime: c.mtime,
                replication: if c.kind == FileKind::File {
                    c.replication
                } else {
                    0
                },
            });
        }
        Ok((out, next))
    }

    /// Entries in the directory at `raw` (1 for a file).
    pub fn entries(&self, raw: &str) -> Result<usize, OpError> {
        let comps = path::components(raw)?;
        let (ino, inode) = self.resolve(&comps)?;
        Ok(match inode.kind {
            FileKind::File | FileKind::Symlink => 1,
            FileKind::Dir => self.children.get(&ino).map_or(0, |c| c.len()),
        })
    }

    /// A directory's entries, or the single entry of a file.
    pub fn list(&self, raw: &str) -> Result<Vec<DirEntry>, OpError> {
        let comps = path::components(raw)?;
        let (ino, inode) = self.resolve(&comps)?;
        if inode.kind != FileKind::Dir {
            return Ok(vec![DirEntry {
                name: comps.last().cloned().unwrap_or_default(),
                kind: inode.kind,
                size: inode.size,
                mtime: inode.mtime,
                replication: inode.replication,
            }]);
        }
        let mut out = Vec::new();
        for (name, child) in self
            .children
            .get(&ino)
            .into_iter()
            .flat_map(Directory::iter)
        {
            let c = self.inode(child)?;
            out.push(DirEntry {
                name: name.to_string(),
                kind: c.kind,
                size: c.size,
                mtime: c.mtime,
                replication: if c.kind == FileKind::File {
                    c.replication
                } else {
                    0
                },
            });
        }
        Ok(out)
    }

    /// The canonical path and the inode at `raw`.
    pub fn stat(&self, raw: &str) -> Result<(String, Inode), OpError> {
        let comps = path::components(raw)?;
        let (_, inode) = self.resolve(&comps)?;
        Ok((path::join(&comps), inode.to_inode()))
    }

    /// The attributes of inode `ino`, of kind `kind` and modified at `mtime`.
    pub fn attr(&self, ino: u64, kind: FileKind, mtime: u64) -> Attr {
        self.attrs
            .get(&ino)
            .copied()
            .unwrap_or_else(|| Attr::default_for(kind, mtime))
    }

    /// The canonical path, the inode number and the inode at `raw`.
    pub fn stat_ino(&self, raw: &str) -> Result<(String, u64, Inode), OpError> {
        let comps = path::components(raw)?;
        let (ino, inode) = self.resolve(&comps)?;
        Ok((path::join(&comps), ino, inode.to_inode()))
    }

    /// `chmod`, `chown`, `touch -a`/`-m` with times: the attributes of `raw` with
    /// each given field changed. A mode is permission bits only (at most 0o7777).
    pub fn plan_set_attr(&self, raw: &str, change: &AttrChange) -> Result<Mutation, OpError> {
        let comps = path::components(raw)?;
        let (ino, inode) = self.resolve(&comps)?;
        if let Some(mode) = change.mode {
            if mode > 0o7777 {
                return Err(ErrorCode::InvalidArgument {
                    reason: format!("mode {mode:o} has bits beyond 7777"),
                }
                .into());
            }
        }
        let old = self.attr(ino, inode.kind, inode.mtime);
        let attr = Attr {
            mode: change.mode.unwrap_or(old.mode),
            uid: change.uid.unwrap_or(old.uid),
            gid: change.gid.unwrap_or(old.gid),
            atime: change.atime.unwrap_or(old.atime),
        };
        Ok(Mutation::SetAttr {
            ino,
            attr,
            mtime: change.mtime,
        })
    }

    // ----- plans -----

    /// `None` when there is nothing to do (`mkdir -p` of an existing directory).
    pub fn plan_mkdir(
        &self,
        raw: &str,
        parents: bool,
        now: u64,
    ) -> Result<Option<Mutation>, OpError> {
        let comps = path::components(raw)?;
        if comps.is_empty() {
            return if parents {
                Ok(None)
            } else {
                Err(ErrorCode::AlreadyExists { path: "/".into() }.into())
            };
        }
        let mut creates = Vec::new();
        let mut ino = ROOT;
        let mut next = self.next_inode;
        for (i, name) in comps.iter().enumerate() {
            let last = i + 1 == comps.len();
            let existing = if creates.is_empty() {
                self.lookup(ino, name)
            } else {
                None
            };
            match existing {
                Some(child) => {
                    let p = path::join(&comps[..=i]);
                    if self.inode(child)?.kind != FileKind::Dir {
                        return Err(if last {
                            ErrorCode::AlreadyExists { path: p }
                        } else {
                            ErrorCode::NotADirectory { path: p }
                        }
                        .into());
                    }
                    if last && !parents {
                        return Err(ErrorCode::AlreadyExists { path: p }.into());
                    }
                    ino = child;
                }
                None if !last && !parents => return Err(not_found(&comps[..=i])),
                None => {
                    creates.push(Create {
                        parent: ino,
                        name: name.clone(),
                        ino: next,
                    });
                    ino = next;
                    next += 1;
                }
            }
        }
        Ok((!creates.is_empty()).then_some(Mutation::Mkdir {
            creates,
            mtime: now,
        }))
    }

    /// Checks that a file could be created at `raw` now; returns its canonical path.
    fn check_create(
        &self,
        comps: &[String],
        overwrite: bool,
    ) -> Result<(u64, Option<u64>), OpError> {
        let (pino, name) = self.resolve_parent(comps, "write")?;
        let existing = self.lookup(pino, name);
        if let Some(old) = existing {
            let p = path::join(comps);
            if self.inode(old)?.kind == FileKind::Dir {
                return Err(ErrorCode::IsADirectory { path: p }.into());
            }
            if !overwrite {
                return Err(ErrorCode::AlreadyExists { path: p }.into());
            }
        }
        Ok((pino, existing))
    }

    pub fn plan_begin_upload(
        &self,
        raw: &str,
        replication: u32,
        overwrite: bool,
        now: u64,
    ) -> Result<(UploadId, Mutation), OpError> {
        let comps = path::components(raw)?;
        self.check_create(&comps, overwrite)?;
        let upload = UploadId::random();
        Ok((
            upload,
            Mutation::BeginUpload {
                upload,
                path: path::join(&comps),
                replication,
                overwrite,
                at: now,
            },
        ))
    }

    pub fn plan_allocate(
        &self,
        upload: UploadId,
        handle: ChunkHandle,
        chain: Vec<ServerId>,
        now: u64,
    ) -> Result<Mutation, OpError> {
        let rec = self.uploads.get(&upload).ok_or(ErrorCode::UnknownUpload)?;
        // A chunk allocated again (its pipeline broke) moves to a new version, so that no
        // replica written under the old one is ever taken for the new.
        let version = rec
            .chunks
            .iter()
            .find(|c| c.handle == handle)
            .map_or(ChunkVersion::FIRST, |c| ChunkVersion(c.version.0 + 1));
        Ok(Mutation::AllocateChunk {
            upload,
            handle,
            version,
            chain,
            at: now,
        })
    }

    pub fn plan_commit(
        &self,
        upload: UploadId,
        chunks: &[CommittedChunk],
        chunk_size: u64,
        now: u64,
    ) -> Result<Mutation, OpError> {
        let rec = self.uploads.get(&upload).ok_or(ErrorCode::UnknownUpload)?;
        let mut stored = Vec::with_capacity(chunks.len());
        let mut seen = HashSet::new();
        for c in chunks {
            let allocated = rec
                .chunks
                .iter()
                .find(|a| a.handle == c.handle)
                .filter(|_| seen.insert(c.handle))
                .ok_or_else(|| ErrorCode::BadRequest {
                    reason: format!(
                        "chunk {} was not allocated to this upload, or is listed twice",
                        c.handle
                    ),
                })?;
            if c.size > chunk_size {
                return Err(ErrorCode::BadRequest {
                    reason: format!("chunk {} is larger than the chunk size", c.handle),
                }
                .into());
            }
            stored.push(StoredChunk {
                handle: c.handle,
                version: allocated.version,
                size: c.size,
            });
        }
        let comps = path::components(&rec.path)?;
        let (parent, replaced) = self.check_create(&comps, rec.overwrite)?;
        let name = comps.last().cloned().unwrap_or_default();
        Ok(Mutation::CommitFile {
            upload,
            parent,
            name,
            ino: self.next_inode,
            inode: Inode {
                kind: FileKind::File,
                size: stored.iter().map(|c| c.size).sum(),
                replication: rec.replication,
                mtime: now,
                chunks: stored.into(),
            },
            replaced,
        })
    }

    /// `CommitRewrite`: the file at the upload's path with `chunks` as its chunk
    /// list, each either allocated to the upload or one the file has now (same
    /// handle and size). Refused when the file changed meanwhile (a kept chunk is
    /// gone), is not a file, or is being appended to.
    pub fn plan_rewrite(
        &self,
        upload: UploadId,
        chunks: &[CommittedChunk],
        chunk_size: u64,
        now: u64,
    ) -> Result<Mutation, OpError> {
        let rec = self.uploads.get(&upload).ok_or(ErrorCode::UnknownUpload)?;
        let comps = path::components(&rec.path)?;
        let (ino, inode) = self.resolve(&comps)?;
        if inode.kind != FileKind::File {
            return Err(ErrorCode::IsADirectory {
                path: path::join(&comps),
            }
            .into());
        }
        if inode
            .chunks
            .iter()
            .any(|c| self.open.contains_key(&c.handle))
        {
            return Err(ErrorCode::Unavailable {
                reason: format!("{} is being appended to", path::join(&comps)),
            }
            .into());
        }
        let mut stored = Vec::with_capacity(chunks.len());
        let mut seen = HashSet::new();
        for c in chunks {
            if !seen.insert(c.handle) || c.size > chunk_size {
                return Err(ErrorCode::BadRequest {
                    reason: format!("chunk {} is listed twice or too large", c.handle),
                }
                .into());
            }
            let new = rec.chunks.iter().find(|a| a.handle == c.handle);
            let kept = inode.chunks.iter().find(|k| k.handle == c.handle);
            match (new, kept) {
                (Some(a), _) => stored.push(StoredChunk {
                    handle: c.handle,
                    version: a.version,
                    size: c.size,
                }),
                (None, Some(k)) if k.size == c.size => stored.push(*k),
                _ => {
                    return Err(ErrorCode::BadRequest {
                        reason: format!(
                            "chunk {} is neither new in this upload nor part of {} (changed meanwhile?)",
                            c.handle,
                            path::join(&comps)
                        ),
                    }
                    .into())
                }
            }
        }
        Ok(Mutation::Rewrite {
            upload,
            ino,
            chunks: stored,
            mtime: now,
        })
    }

    /// Removes `raw`: into the trash when `to_trash`, else for good.
    pub fn plan_remove(
        &self,
        raw: &str,
        recursive: bool,
        to_trash: bool,
        now: u64,
    ) -> Result<Mutation, OpError> {
        let comps = path::components(raw)?;
        let (parent, name) = self.resolve_parent(&comps, "remove")?;
        let ino = self.lookup(parent, name).ok_or_else(|| not_found(&comps))?;
        let inode = self.inode(ino)?;
        if inode.kind == FileKind::Dir && !recursive && self.has_children(ino) {
            return Err(ErrorCode::NotEmpty {
                path: path::join(&comps),
            }
            .into());
        }
        if !to_trash {
            let name = name.to_string();
            return Ok(if self.larger_than(ino, REAP_PIECE) {
                Mutation::Detach { parent, name }
            } else {
                Mutation::Remove { parent, name }
            });
        }
        let (size, files) = self.tally(ino);
        Ok(Mutation::Trash {
            parent,
            name: name.to_string(),
            entry: self.next_inode,
            original_path: path::join(&comps),
            kind: inode.kind,
            size,
            files,
            deleted_at: now,
        })
    }

    /// Moves `src` to `dst`, or into `dst` when that is a directory.
    pub fn plan_rename(&self, src: &str, dst: &str) -> Result<Mutation, OpError> {
        let s = path::components(src)?;
        let (src_parent, src_name) = self.resolve_parent(&s, "move")?;
        if self.lookup(src_parent, src_name).is_none() {
            return Err(not_found(&s));
        }
        let d = path::components(dst)?;
        let (dst_parent, final_path) = match self.resolve(&d) {
            Ok((dino, dinode)) if dinode.kind == FileKind::Dir => {
                let mut f = d.clone();
                f.push(src_name.to_string());
                (dino, f)
            }
            Ok(_) => {
                return Err(ErrorCode::AlreadyExists {
                    path: path::join(&d),
                }
                .into())
            }
            Err(OpError::Client(ErrorCode::NotFound { .. })) => {
                let (dp, _) = self.resolve_parent(&d, "move onto")?;
                (dp, d.clone())
            }
            Err(e) => return Err(e),
        };
        if final_path == s {
            return Err(ErrorCode::InvalidArgument {
                reason: format!(
                    "{} and {} are the same",
                    path::join(&s),
                    path::join(&final_path)
                ),
            }
            .into());
        }
        if final_path.starts_with(&s) {
            return Err(ErrorCode::InvalidArgument {
                reason: format!("cannot move {} into itself", path::join(&s)),
            }
            .into());
        }
        let dst_name = final_path.last().cloned().unwrap_or_default();
        if self.lookup(dst_parent, &dst_name).is_some() {
            return Err(ErrorCode::AlreadyExists {
                path: path::join(&final_path),
            }
            .into());
        }
        Ok(Mutation::Rename {
            src_parent,
            src_name: src_name.to_string(),
            dst_parent,
            dst_name,
        })
    }

    /// A symbolic link at `raw` to `target`.
    pub fn plan_symlink(&self, raw: &str, target: &str, now: u64) -> Result<Mutation, OpError> {
        if target.is_empty() || target.len() > MAX_LINK_TARGET || target.contains('\0') {
            return Err(ErrorCode::InvalidArgument {
                reason: format!("a link target is 1 to {MAX_LINK_TARGET} bytes without NUL"),
            }
            .into());
        }
        let comps = path::components(raw)?;
        let (parent, _) = self.check_create(&comps, false)?;
        Ok(Mutation::Symlink {
            parent,
            name: comps.last().cloned().unwrap_or_default(),
            ino: self.next_inode,
            target: target.to_string(),
            mtime: now,
        })
    }

    /// The target of the symbolic link at `raw`.
    pub fn read_link(&self, raw: &str) -> Result<String, OpError> {
        let comps = path::components(raw)?;
        let (ino, inode) = self.resolve(&comps)?;
        if inode.kind != FileKind::Symlink {
            return Err(ErrorCode::InvalidArgument {
                reason: format!("{} is not a symbolic link", path::join(&comps)),
            }
            .into());
        }
        self.links
            .get(&ino)
            .cloned()
            .ok_or_else(|| OpError::Store(corrupt(format!("link {ino} has no target"))))
    }

    /// POSIX `rename(2)`: `src` becomes exactly `dst`, replacing what is there when
    /// `replace` and the kinds allow it (a non-directory over a non-directory, a
    /// directory over an empty directory).
    pub fn plan_rename_over(
        &self,
        src: &str,
        dst: &str,
        replace: bool,
    ) -> Result<Mutation, OpError> {
        let s = path::components(src)?;
        let (src_parent, src_name) = self.resolve_parent(&s, "move")?;
        let src_ino = self
            .lookup(src_parent, src_name)
            .ok_or_else(|| not_found(&s))?;
        let src_kind = self.inode(src_ino)?.kind;
        let d = path::components(dst)?;
        let (dst_parent, dst_name) = self.resolve_parent(&d, "move onto")?;
        if d == s {
            return Ok(Mutation::RenameOver {
                src_parent,
                src_name: src_name.to_string(),
                dst_parent,
                dst_name: dst_name.to_string(),
                replaced: Some(src_ino),
            });
        }
        if d.starts_with(&s) {
            return Err(ErrorCode::InvalidArgument {
                reason: format!("cannot move {} into itself", path::join(&s)),
            }
            .into());
        }
        let replaced = match self.lookup(dst_parent, dst_name) {
            None => None,
            Some(old) => {
                let p = path::join(&d);
                if !replace {
                    return Err(ErrorCode::AlreadyExists { path: p }.into());
                }
                let old_kind = self.inode(old)?.kind;
                match (src_kind == FileKind::Dir, old_kind == FileKind::Dir) {
                    (false, true) => return Err(ErrorCode::IsADirectory { path: p }.into()),
                    (true, false) => return Err(ErrorCode::NotADirectory { path: p }.into()),
                    (true, true) if self.children.get(&old).is_some_and(|c| !c.is_empty()) => {
                        return Err(ErrorCode::NotEmpty { path: p }.into())
                    }
                    _ => Some(old),
                }
            }
        };
        Ok(Mutation::RenameOver {
            src_parent,
            src_name: src_name.to_string(),
            dst_parent,
            dst_name: dst_name.to_string(),
            replaced,
        })
    }

    /// Puts the most recently trashed entry that was at `raw` back there.
    pub fn plan_restore(&self, raw: &str) -> Result<Mutation, OpError> {
        let comps = path::components(raw)?;
        let canonical = path::join(&comps);
        let entry = self
            .trash
            .iter()
            .rev()
            .find(|(_, t)| t.original_path == canonical)
            .map(|(id, _)| *id)
            .ok_or(ErrorCode::NotInTrash { path: canonical })?;
        let (parent, name) = self.resolve_parent(&comps, "restore")?;
        if self.lookup(parent, name).is_some() {
            return Err(ErrorCode::AlreadyExists {
                path: path::join(&comps),
            }
            .into());
        }
        Ok(Mutation::Restore {
            entry,
            parent,
            name: name.to_string(),
        })
    }

    /// Trash entries older than `retention_secs`: purged, or for a large subtree
    /// detached to be reclaimed in pieces.
    pub fn expired_trash(&self, now: u64, retention_secs: u64) -> Vec<Mutation> {
        self.trash
            .iter()
            .filter(|(_, t)| t.deleted_at.saturating_add(retention_secs) <= now)
            .map(|(entry, t)| {
                if self.larger_than(t.ino, REAP_PIECE) {
                    Mutation::DetachTrash { entry: *entry }
                } else {
                    Mutation::Purge { entry: *entry }
                }
            })
            .collect()
    }

    /// Removed subtrees still being reclaimed.
    pub fn reaping(&self) -> usize {
        self.reaping.len()
    }

    /// The next piece of a detached subtree to reclaim: up to [`REAP_PIECE`] entries
    /// in post-order (every directory after all of its entries), so each piece leaves
    /// a smaller subtree under the same root, and the last one takes the root.
    pub fn reap_piece(&self) -> Option<Mutation> {
        let (&root, _) = self.reaping.first_key_value()?;
        let mut dirents = Vec::new();
        let mut inodes = Vec::new();
        let children = |ino: u64| self.children.get(&ino).map(|c| c.iter());
        // (entry, its name in its parent, its entries not yet visited): an explicit
        // stack, so depth is no limit, holding one iterator per level.
        let mut stack: Vec<(u64, Option<Name>, _)> = vec![(root, None, children(root))];
        while inodes.len() < REAP_PIECE {
            let Some((_, _, entries)) = stack.last_mut() else {
                break;
            };
            match entries.as_mut().and_then(Iterator::next) {
                Some((name, child)) => stack.push((child, Some(name), children(child))),
                None => {
                    let Some((ino, name, _)) = stack.pop() else {
                        break;
                    };
                    inodes.push(ino);
                    // Unlinked from its parent along with it; the root was unlinked
                    // when it was detached.
                    if let (Some(name), Some((parent, _, _))) = (name, stack.last()) {
                        dirents.push((*parent, name.to_string()));
                    }
                }
            }
        }
        Some(Mutation::Reap {
            root,
            dirents,
            inodes,
        })
    }

    /// Whether the subtree at `ino` holds more than `n` entries (counting itself);
    /// stops counting there.
    fn larger_than(&self, ino: u64, n: usize) -> bool {
        let mut seen = 0usize;
        let mut stack = vec![ino];
        while let Some(ino) = stack.pop() {
            seen += 1;
            if seen > n {
                return true;
            }
            if let Some(entries) = self.children.get(&ino) {
                stack.extend(entries.values());
            }
        }
        false
    }

    /// Bytes and files in the subtree at `ino`, walked without collecting it.
    fn tally(&self, ino: u64) -> (u64, u64) {
        let (mut size, mut files) = (0u64, 0u64);
        let mut stack = vec![ino];
        while let Some(ino) = stack.pop() {
            if let Some(inode) = self.inodes.get(&ino) {
                if inode.kind == FileKind::File {
                    size = size.saturating_add(inode.size);
                    files += 1;
                }
            }
            if let Some(entries) = self.children.get(&ino) {
                stack.extend(entries.values());
            }
        }
        (size, files)
    }

    /// Uploads untouched for `idle_secs`: their clients are gone.
    pub fn idle_uploads(&self, now: u64, idle_secs: u64) -> Vec<Mutation> {
        self.uploads
            .iter()
            .filter(|(_, u)| u.touched.saturating_add(idle_secs) <= now)
            .map(|(id, _)| Mutation::EndUpload { upload: *id })
            .collect()
    }
}
