//! Applying a mutation: the one sled batch it makes (through the store's writer)
//! and the matching in-memory changes, for live requests and log replay alike (see
//! the parent module).

use std::collections::HashSet;

use dfs_protocol::{ChunkHandle, ChunkVersion, FileKind, ServerId, UploadId};

use super::{corrupt, Applied, Namespace};
use crate::error::StoreError;
use crate::mutation::Mutation;
use crate::store::{
    AllocatedChunk, ChunkList, Inode, InodeOut, StoredChunk, TrashEntry, Txn, UploadRecord,
};

impl Namespace {
    /// Ends upload `upload`: its chunks that no file references (all of them for an
    /// abandoned upload; those a commit or rewrite left out) are freed.
    fn end_upload(&mut self, txn: &mut Txn, upload: &UploadId, freed: &mut Vec<ChunkHandle>) {
        if let Some(rec) = self.uploads.remove(upload) {
            for c in rec.chunks {
                self.upload_chunks.remove(&c.handle);
                if self.chunks.get(&self.inodes, &c.handle).is_none() {
                    freed.push(c.handle);
                }
            }
        }
        txn.remove_upload(*upload);
    }

    /// Rewrites file `ino` after `change` edited its chunk list.
    fn update_file(
        &mut self,
        txn: &mut Txn,
        ino: u64,
        mtime: u64,
        change: impl FnOnce(&mut ChunkList) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let not_a_file = || corrupt(format!("append to {ino}, which is not a file"));
        self.inodes
            .update(ino, |inode| {
                if inode.kind != FileKind::File {
                    return Err(not_a_file());
                }
                change(&mut inode.chunks)?;
                inode.size = inode.chunks.iter().map(|c| c.size).sum();
                inode.mtime = mtime;
                Ok(())
            })
            .unwrap_or_else(|| Err(not_a_file()))?;
        txn.inode_changed(ino);
        // After the change: the table reads each chunk's owner from the lists.
        self.chunks.put_file(&self.inodes, ino);
        Ok(())
    }

    /// Sets inode `ino`'s modification time in place (it stays the same inode).
    fn set_mtime(&mut self, txn: &mut Txn, ino: u64, mtime: u64) -> Result<(), StoreError> {
        self.inodes
            .update(ino, |inode| inode.mtime = mtime)
            .ok_or_else(|| corrupt(format!("times of {ino}, which does not exist")))?;
        txn.inode_changed(ino);
        Ok(())
    }

    fn set_open(
        &mut self,
        txn: &mut Txn,
        handle: ChunkHandle,
        chain: Option<&Vec<ServerId>>,
    ) -> Result<(), StoreError> {
        match chain {
            Some(chain) => {
                txn.put_open(handle, chain)?;
                self.open.insert(handle, chain.clone());
            }
            None => {
                txn.remove_open(handle);
                self.open.remove(&handle);
            }
        }
        Ok(())
    }

    fn link(&mut self, txn: &mut Txn, parent: u64, name: &str, child: u64) {
        txn.put_dirent(parent, name, child);
        self.children.entry(parent).or_default().insert(name, child);
    }

    fn unlink(&mut self, txn: &mut Txn, parent: u64, name: &str) -> Result<u64, StoreError> {
        txn.remove_dirent(parent, name);
        self.children
            .get_mut(&parent)
            .and_then(|c| c.remove(name))
            .ok_or_else(|| corrupt(format!("no entry {name} in directory {parent}")))
    }

    fn put_inode(&mut self, txn: &mut Txn, ino: u64, inode: Inode) -> Result<(), StoreError> {
        txn.inode_changed(ino);
        let file = inode.kind == FileKind::File;
        self.inodes.insert(ino, inode);
        if file {
            self.files += 1;
            self.chunks.put_file(&self.inodes, ino);
        }
        self.next_inode = self.next_inode.max(ino + 1);
        Ok(())
    }

    /// Removes one inode; returns the chunks it referenced.
    fn drop_inode(&mut self, txn: &mut Txn, ino: u64) -> Vec<ChunkHandle> {
        txn.inode_changed(ino);
        if self.attrs.remove(&ino).is_some() {
            txn.remove_attr(ino);
        }
        if self.links.remove(&ino).is_some() {
            txn.remove_link(ino);
        }
        self.children.remove(&ino);
        let Some(inode) = self.inodes.remove(&ino) else {
            return Vec::new();
        };
        if inode.kind != FileKind::File {
            return Vec::new();
        }
        self.files -= 1;
        let freed: Vec<ChunkHandle> = inode.chunks.iter().map(|c| c.handle).collect();
        self.chunks.remove_from_file(&self.inodes, ino, &freed);
        for h in &freed {
            if self.open.remove(h).is_some() {
                txn.remove_open(*h);
            }
        }
        freed
    }

    /// Removes the subtree at `ino` (already unlinked from its parent); returns the
    /// freed chunks.
    fn remove_subtree(&mut self, txn: &mut Txn, ino: u64) -> Vec<ChunkHandle> {
        let (inodes, dirents) = self.subtree(ino);
        for (parent, name) in dirents {
            txn.remove_dirent(parent, &name);
        }
        let mut freed = Vec::new();
        for ino in inodes {
            freed.extend(self.drop_inode(txn, ino));
        }
        freed
    }

    /// Carries out mutation `seq`. Skips a sequence number already applied.
    pub fn apply(&mut self, seq: u64, m: &Mutation) -> Result<Applied, StoreError> {
        if seq <= self.applied {
            return Ok(Applied::default());
        }
        self.writer.check()?;
        let mut txn = Txn::default();
        let mut freed = Vec::new();
        match m {
            Mutation::Mkdir { creates, mtime } => {
                for c in creates {
                    let dir = Inode {
                        kind: FileKind::Dir,
                        size: 0,
                        replication: 0,
                        mtime: *mtime,
                        chunks: ChunkList::default(),
                    };
                    self.put_inode(&mut txn, c.ino, dir)?;
                    self.link(&mut txn, c.parent, &c.name, c.ino);
                }
            }
            Mutation::BeginUpload {
                upload,
                path,
                replication,
                overwrite,
                at,
            } => {
                let rec = UploadRecord {
                    path: path.clone(),
                    replication: *replication,
                    overwrite: *overwrite,
                    touched: *at,
                    chunks: Vec::new(),
                };
                txn.put_upload(*upload, &rec)?;
                self.uploads.insert(*upload, rec);
            }
            Mutation::AllocateChunk {
                upload,
                handle,
                version,
                chain,
                at,
            } => {
                let rec = self
                    .uploads
                    .get_mut(upload)
                    .ok_or_else(|| corrupt(format!("allocation for unknown upload {upload}")))?;
                let allocated = AllocatedChunk {
                    handle: *handle,
                    version: *version,
                    chain: chain.clone(),
                };
                // A retry on a new chain replaces the chunk's earlier allocation.
                match rec.chunks.iter_mut().find(|c| c.handle == *handle) {
                    Some(c) => *c = allocated,
                    None => rec.chunks.push(allocated),
                }
                rec.touched = *at;
                txn.put_upload(*upload, rec)?;
                self.upload_chunks.insert(*handle);
            }
            Mutation::EndUpload { upload } => {
                self.end_upload(&mut txn, upload, &mut freed);
            }
            Mutation::CommitFile {
                upload,
                parent,
                name,
                ino,
                inode,
                replaced,
            } => {
                if let Some(old) = replaced {
                    self.unlink(&mut txn, *parent, name)?;
                    freed.extend(self.drop_inode(&mut txn, *old));
                }
                self.put_inode(&mut txn, *ino, inode.clone())?;
                self.link(&mut txn, *parent, name, *ino);
                self.end_upload(&mut txn, upload, &mut freed);
            }
            Mutation::Remove { parent, name } => {
                let ino = self.unlink(&mut txn, *parent, name)?;
                freed = self.remove_subtree(&mut txn, ino);
            }
            Mutation::Rename {
                src_parent,
                src_name,
                dst_parent,
                dst_name,
            } => {
                let ino = self.unlink(&mut txn, *src_parent, src_name)?;
                self.link(&mut txn, *dst_parent, dst_name, ino);
            }
            Mutation::Trash {
                parent,
                name,
                entry,
                original_path,
                kind,
                size,
                files,
                deleted_at,
            } => {
                let ino = self.unlink(&mut txn, *parent, name)?;
                let t = TrashEntry {
                    ino,
                    original_path: original_path.clone(),
                    kind: *kind,
                    size: *size,
                    files: *files,
                    deleted_at: *deleted_at,
                };
                txn.put_trash(*entry, &t)?;
                self.trash.insert(*entry, t);
                self.next_inode = self.next_inode.max(entry + 1);
            }
            Mutation::Restore {
                entry,
                parent,
                name,
            } => {
                let t = self
                    .trash
                    .remove(entry)
                    .ok_or_else(|| corrupt(format!("restore of unknown trash entry {entry}")))?;
                txn.remove_trash(*entry);
                self.link(&mut txn, *parent, name, t.ino);
            }
            Mutation::Purge { entry } => {
                if let Some(t) = self.trash.remove(entry) {
                    freed = self.remove_subtree(&mut txn, t.ino);
                }
                txn.remove_trash(*entry);
            }
            Mutation::Detach { parent, name } => {
                let ino = self.unlink(&mut txn, *parent, name)?;
                let (_, files) = self.tally(ino);
                self.reaping.insert(ino, files);
                txn.set_reaping(ino, true);
            }
            Mutation::DetachTrash { entry } => {
                if let Some(t) = self.trash.remove(entry) {
                    self.reaping.insert(t.ino, t.files);
                    txn.set_reaping(t.ino, true);
                }
                txn.remove_trash(*entry);
            }
            Mutation::Reap {
                root,
                dirents,
                inodes,
            } => {
                for (parent, name) in dirents {
                    txn.remove_dirent(*parent, name);
                    if let Some(entries) = self.children.get_mut(parent) {
                        entries.remove(name.as_str());
                    }
                }
                let mut files = 0u64;
                for ino in inodes {
                    if self
                        .inodes
                        .get(ino)
                        .is_some_and(|i| i.kind == FileKind::File)
                    {
                        files += 1;
                    }
                    freed.extend(self.drop_inode(&mut txn, *ino));
                }
                if inodes.contains(root) {
                    self.reaping.remove(root);
                    txn.set_reaping(*root, false);
                } else if let Some(left) = self.reaping.get_mut(root) {
                    *left = left.saturating_sub(files);
                }
            }
            Mutation::SetReplication {
                inodes,
                replication,
            } => {
                for ino in inodes {
                    if self
                        .inodes
                        .update(*ino, |inode| inode.replication = *replication)
                        .is_some()
                    {
                        txn.inode_changed(*ino);
                    }
                }
            }
            Mutation::CreateFile {
                parent,
                name,
                ino,
                replication,
                mtime,
            } => {
                let file = Inode {
                    kind: FileKind::File,
                    size: 0,
                    replication: *replication,
                    mtime: *mtime,
                    chunks: ChunkList::default(),
                };
                self.put_inode(&mut txn, *ino, file)?;
                self.link(&mut txn, *parent, name, *ino);
            }
            Mutation::AppendChunk {
                ino,
                seal,
                handle,
                chain,
                mtime,
            } => {
                let new = StoredChunk {
                    handle: *handle,
                    version: ChunkVersion::FIRST,
                    size: 0,
                };
                self.update_file(&mut txn, *ino, *mtime, |chunks| {
                    if let Some((sealed, size)) = seal {
                        let last = chunks
                            .last_mut()
                            .filter(|c| c.handle == *sealed)
                            .ok_or_else(|| {
                                corrupt(format!("seal of {sealed}, not the last chunk"))
                            })?;
                        last.size = *size;
                    }
                    chunks.push(new);
                    Ok(())
                })?;
                if let Some((sealed, _)) = seal {
                    self.set_open(&mut txn, *sealed, None)?;
                }
                self.set_open(&mut txn, *handle, Some(chain))?;
            }
            Mutation::SetChunk {
                handle,
                version,
                size,
                open,
                mtime,
            } => {
                let ino = self
                    .chunks
                    .get(&self.inodes, handle)
                    .map(|found| found.at.ino)
                    .ok_or_else(|| corrupt(format!("update of unknown chunk {handle}")))?;
                self.update_file(&mut txn, ino, *mtime, |chunks| {
                    let c = chunks
                        .iter_mut()
                        .find(|c| c.handle == *handle)
                        .ok_or_else(|| corrupt(format!("chunk {handle} not in file {ino}")))?;
                    c.version = *version;
                    c.size = *size;
                    Ok(())
                })?;
                self.set_open(&mut txn, *handle, open.as_ref())?;
            }
            Mutation::CreateKey { name, record } => {
                txn.put_key(name, record)?;
                self.keys.insert(name.clone(), record.clone());
                self.keys_epoch = seq;
            }
            Mutation::RemoveKey { name } => {
                txn.remove_key(name);
                self.keys.remove(name);
                self.keys_epoch = seq;
            }
            Mutation::EnrollServer {
                server,
                fingerprint,
            } => {
                txn.put_server_key(*server, fingerprint);
                self.server_keys.insert(*server, *fingerprint);
            }
            Mutation::SetTimes { ino, mtime } => self.set_mtime(&mut txn, *ino, *mtime)?,
            Mutation::SetAttr { ino, attr, mtime } => {
                if let Some(mtime) = mtime {
                    self.set_mtime(&mut txn, *ino, *mtime)?;
                }
                txn.put_attr(*ino, attr)?;
                self.attrs.insert(*ino, *attr);
            }
            Mutation::Rewrite {
                upload,
                ino,
                chunks,
                mtime,
            } => {
                let keep: HashSet<ChunkHandle> = chunks.iter().map(|c| c.handle).collect();
                let old = self
                    .inodes
                    .get(ino)
                    .map(|i| i.chunks.to_vec())
                    .unwrap_or_default();
                let dropped: Vec<ChunkHandle> = old
                    .iter()
                    .map(|c| c.handle)
                    .filter(|h| !keep.contains(h))
                    .collect();
                let new = chunks.clone();
                self.update_file(&mut txn, *ino, *mtime, |list| {
                    *list = new.into();
                    Ok(())
                })?;
                // After the new list is in: an entry a kept chunk may own stays.
                self.chunks.remove_from_file(&self.inodes, *ino, &dropped);
                freed.extend(dropped);
                self.end_upload(&mut txn, upload, &mut freed);
            }
            Mutation::Symlink {
                parent,
                name,
                ino,
                target,
                mtime,
            } => {
                let link = Inode {
                    kind: FileKind::Symlink,
                    size: target.len() as u64,
                    replication: 0,
                    mtime: *mtime,
                    chunks: ChunkList::default(),
                };
                self.put_inode(&mut txn, *ino, link)?;
                txn.put_link(*ino, target)?;
                self.links.insert(*ino, target.clone());
                self.link(&mut txn, *parent, name, *ino);
            }
            Mutation::RenameOver {
                src_parent,
                src_name,
                dst_parent,
                dst_name,
                replaced,
            } => {
                let ino = self.unlink(&mut txn, *src_parent, src_name)?;
                // Renaming an entry onto itself changes nothing (POSIX).
                if *replaced == Some(ino) {
                    self.link(&mut txn, *src_parent, src_name, ino);
                } else {
                    if let Some(old) = replaced {
                        self.unlink(&mut txn, *dst_parent, dst_name)?;
                        freed.extend(self.drop_inode(&mut txn, *old));
                    }
                    self.link(&mut txn, *dst_parent, dst_name, ino);
                }
            }
            Mutation::ClockFloor { secs } => {
                if *secs > self.clock_floor {
                    self.clock_floor = *secs;
                    txn.set_clock_floor(*secs);
                }
            }
            Mutation::Decommission { server, on } => {
                txn.set_decommissioned(*server, *on);
                if *on {
                    self.decommissioned.insert(*server);
                } else {
                    self.decommissioned.remove(server);
                }
            }
        }
        for group in txn.changed_groups() {
            let live = self.inodes.group(group);
            let members: Vec<(u8, InodeOut<'_>)> = live
                .iter()
                .map(|(slot, inode)| (*slot, inode.out()))
                .collect();
            txn.put_inode_group(group, &members)?;
        }
        txn.set_next_inode(self.next_inode);
        txn.set_applied(seq);
        self.writer.submit(txn)?;
        self.applied = seq;
        Ok(Applied { freed })
    }
}
