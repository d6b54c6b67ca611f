//! The logical mutations the operation log records.
//!
//! A mutation carries every decision already made (inode numbers, times, chains), so
//! applying it is deterministic: replay after a crash produces exactly the state the
//! live master had. The enum is append-only, like the wire messages, because old logs
//! must stay readable.

use dfs_protocol::{ChunkHandle, ChunkVersion, FileKind, ServerId, UploadId};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::store::{Inode, KeyRecord, StoredChunk};

/// Format byte in front of every encoded mutation.
const FORMAT: u8 = 1;

/// One directory created by a `Mkdir`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Create {
    pub parent: u64,
    pub name: String,
    pub ino: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mutation {
    /// Directories, parents first (one for `mkdir`, several for `mkdir -p`).
    Mkdir { creates: Vec<Create>, mtime: u64 },
    BeginUpload {
        upload: UploadId,
        path: String,
        replication: u32,
        overwrite: bool,
        at: u64,
    },
    AllocateChunk {
        upload: UploadId,
        handle: ChunkHandle,
        version: ChunkVersion,
        chain: Vec<ServerId>,
        at: u64,
    },
    /// An upload abandoned (aborted by its client or idle too long).
    EndUpload { upload: UploadId },
    /// An upload made visible; `replaced` is the file it overwrote.
    CommitFile {
        upload: UploadId,
        parent: u64,
        name: String,
        ino: u64,
        inode: Inode,
        replaced: Option<u64>,
    },
    /// Permanent removal of an entry and everything below it.
    Remove { parent: u64, name: String },
    Rename {
        src_parent: u64,
        src_name: String,
        dst_parent: u64,
        dst_name: String,
    },
    /// Detach an entry into the trash.
    Trash {
        parent: u64,
        name: String,
        entry: u64,
        original_path: String,
        kind: FileKind,
        size: u64,
        files: u64,
        deleted_at: u64,
    },
    Restore {
        entry: u64,
        parent: u64,
        name: String,
    },
    /// Permanent removal of a trash entry.
    Purge { entry: u64 },
    /// New replication for these files.
    SetReplication { inodes: Vec<u64>, replication: u32 },
    /// A chunkserver drained (`on`) or back in service.
    Decommission { server: ServerId, on: bool },
    /// An empty file, created by an append.
    CreateFile {
        parent: u64,
        name: String,
        ino: u64,
        replication: u32,
        mtime: u64,
    },
    /// A new last chunk for appends to file `ino`, open on `chain` at the first
    /// version; `seal` closes the previous last chunk at its final size.
    AppendChunk {
        ino: u64,
        seal: Option<(ChunkHandle, u64)>,
        handle: ChunkHandle,
        chain: Vec<ServerId>,
        mtime: u64,
    },
    /// A chunk's version and size after a lease grant or a size report: `open` with
    /// the lease's chain, or settled (`None`) when its replicas were made equal.
    SetChunk {
        handle: ChunkHandle,
        version: ChunkVersion,
        size: u64,
        open: Option<Vec<ServerId>>,
        mtime: u64,
    },
    /// A client key issued (`dfs key create`).
    CreateKey { name: String, record: KeyRecord },
    /// A client key withdrawn (`dfs key rm`).
    RemoveKey { name: String },
    /// A chunkserver's first registration: its id is bound to the key it proved.
    EnrollServer {
        server: ServerId,
        fingerprint: [u8; 32],
    },
    /// Cluster seconds reached: after a restart the clock starts no lower.
    ClockFloor { secs: u64 },
    /// `ino`'s modification time set (`dfs touch`).
    SetTimes { ino: u64, mtime: u64 },
    /// `ino`'s attributes replaced by `attr` (mode, owner, access time), and its
    /// modification time set when `mtime` is given (`dfs chmod`, `chown`, the mount).
    SetAttr {
        ino: u64,
        attr: crate::store::Attr,
        mtime: Option<u64>,
    },
    /// File `ino`'s chunk list replaced by `chunks` (kept ones and the upload's new
    /// ones), ending `upload`: a write in place by copy-on-write chunks.
    Rewrite {
        upload: UploadId,
        ino: u64,
        chunks: Vec<StoredChunk>,
        mtime: u64,
    },
    /// A symbolic link `ino` to `target` created as `name` in `parent`.
    Symlink {
        parent: u64,
        name: String,
        ino: u64,
        target: String,
        mtime: u64,
    },
    /// POSIX rename: the entry moved to exactly `dst_name` in `dst_parent`, and
    /// `replaced` (what was there, a file, link or empty directory) removed in the
    /// same step.
    RenameOver {
        src_parent: u64,
        src_name: String,
        dst_parent: u64,
        dst_name: String,
        replaced: Option<u64>,
    },
    /// An entry unlinked for good, its subtree left to be reclaimed in pieces
    /// ([`Mutation::Reap`]): a removal too large for one record.
    Detach { parent: u64, name: String },
    /// A trash entry purged, its subtree left to be reclaimed in pieces.
    DetachTrash { entry: u64 },
    /// One piece of a detached subtree rooted at `root` reclaimed: `dirents` (parent,
    /// name) unlinked and `inodes` dropped, children before their directories; the
    /// subtree is gone once `root` itself is among `inodes`.
    Reap {
        root: u64,
        dirents: Vec<(u64, String)>,
        inodes: Vec<u64>,
    },
}

impl Mutation {
    pub fn name(&self) -> &'static str {
        match self {
            Mutation::Mkdir { .. } => "mkdir",
            Mutation::BeginUpload { .. } => "begin-upload",
            Mutation::AllocateChunk { .. } => "allocate-chunk",
            Mutation::EndUpload { .. } => "end-upload",
            Mutation::CommitFile { .. } => "commit-file",
            Mutation::Remove { .. } => "remove",
            Mutation::Rename { .. } => "rename",
            Mutation::Trash { .. } => "trash",
            Mutation::Restore { .. } => "restore",
            Mutation::Purge { .. } => "purge",
            Mutation::SetReplication { .. } => "set-replication",
            Mutation::Decommission { .. } => "decommission",
            Mutation::CreateFile { .. } => "create-file",
            Mutation::AppendChunk { .. } => "append-chunk",
            Mutation::SetChunk { .. } => "set-chunk",
            Mutation::CreateKey { .. } => "create-key",
            Mutation::RemoveKey { .. } => "remove-key",
            Mutation::EnrollServer { .. } => "enroll-server",
            Mutation::ClockFloor { .. } => "clock-floor",
            Mutation::SetTimes { .. } => "set-times",
            Mutation::SetAttr { .. } => "set-attr",
            Mutation::Rewrite { .. } => "rewrite",
            Mutation::Symlink { .. } => "symlink",
            Mutation::RenameOver { .. } => "rename-over",
            Mutation::Detach { .. } => "detach",
            Mutation::DetachTrash { .. } => "detach-trash",
            Mutation::Reap { .. } => "reap",
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>, StoreError> {
        let mut out = vec![FORMAT];
        out.extend(bincode::serde::encode_to_vec(
            self,
            bincode::config::standard(),
        )?);
        Ok(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<Mutation, String> {
        let (&format, body) = bytes.split_first().ok_or("empty record")?;
        if format != FORMAT {
            return Err(format!("unknown record format {format}"));
        }
        let config = bincode::config::standard().with_limit::<{ 64 << 20 }>();
        let (m, used) =
            bincode::serde::decode_from_slice(body, config).map_err(|e| e.to_string())?;
        if used != body.len() {
            return Err("trailing bytes after the record".into());
        }
        Ok(m)
    }
}
