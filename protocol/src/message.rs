//! Every message of the protocol. Both enums are append-only: bincode encodes the
//! variant index, so a new message goes at the end and an old one is never reordered.
//!
//! Bulk data never appears here: it travels as the frame's raw payload.

use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;
use crate::ids::{ChunkHandle, ChunkVersion, ServerId, UploadId};

/// Who opens a connection; a server may refuse roles it does not serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerKind {
    Client,
    Chunkserver,
}

/// A request, sent by whoever opened the connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// First frame on every connection.
    Hello {
        magic: [u8; 4],
        version: u32,
        peer: PeerKind,
    },

    // --- namespace (client -> master) ---
    Mkdir {
        path: String,
        parents: bool,
    },
    List {
        path: String,
    },
    /// A file's or directory's metadata; for a file also its chunks and their replicas.
    Stat {
        path: String,
    },
    /// Removes an entry: into the trash, unless `skip_trash` or the trash is off.
    Delete {
        path: String,
        recursive: bool,
        skip_trash: bool,
    },

    // --- writes (client -> master) ---
    /// Start a put. Nothing is visible until `CommitPut`.
    BeginPut {
        path: String,
        replication: Option<u32>,
        overwrite: bool,
    },
    /// Allocate the next chunk of an upload: a handle, a version and a replica chain.
    AllocateChunk {
        upload: UploadId,
    },
    /// Make the upload visible at its path, atomically, with these chunks in order.
    CommitPut {
        upload: UploadId,
        chunks: Vec<CommittedChunk>,
    },
    AbortPut {
        upload: UploadId,
    },
    Status,

    // --- chunkserver -> master ---
    /// Sent on every (re)connection with the full list of chunks held.
    Register {
        server: ServerId,
        addr: String,
        capacity: u64,
        used: u64,
        chunks: Vec<ChunkReport>,
    },
    /// Periodic liveness and the changes to the chunk list since the last heartbeat.
    Heartbeat {
        server: ServerId,
        capacity: u64,
        used: u64,
        added: Vec<ChunkReport>,
        removed: Vec<ChunkHandle>,
    },

    // --- to chunkservers ---
    /// Opens a pipelined chunk write; followed by `WritePacket` frames with the same
    /// request id. The receiver forwards to `downstream[0]` with the rest of the chain.
    WriteChunk {
        handle: ChunkHandle,
        version: ChunkVersion,
        downstream: Vec<String>,
    },
    /// One packet of chunk data (the frame payload). `last` ends the chunk.
    WritePacket {
        last: bool,
    },
    /// Read `len` bytes at `offset`; answered by `ReadData` frames until `last`.
    ReadChunk {
        handle: ChunkHandle,
        version: ChunkVersion,
        offset: u64,
        len: u64,
    },

    // --- namespace, continued (client -> master) ---
    /// Atomic move of a file or directory; into `dst` when that is a directory.
    Rename {
        src: String,
        dst: String,
    },
    TrashList,
    /// Puts the most recently removed entry that was at `path` back there.
    TrashRestore {
        path: String,
    },
}

/// A reply, echoing the request id it answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Error(ErrorCode),
    HelloOk {
        version: u32,
    },
    Ok,
    Listing {
        entries: Vec<DirEntry>,
    },
    Stat(FileStat),
    PutStarted {
        upload: UploadId,
        chunk_size: u64,
        replication: u32,
    },
    ChunkAllocated(ChunkAllocation),
    Status(ClusterStatus),
    Registered,
    HeartbeatAck {
        /// The master does not know this server (it restarted): register again.
        reregister: bool,
        /// Chunks this server should delete.
        delete: Vec<ChunkHandle>,
    },
    /// Every replica downstream of (and including) the answering one holds the chunk durably.
    ChunkWritten {
        handle: ChunkHandle,
        size: u64,
    },
    /// A slice of chunk data (the frame payload).
    ReadData {
        last: bool,
    },
    TrashListing {
        entries: Vec<TrashInfo>,
    },
}

/// An entry in the trash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrashInfo {
    /// Where it was when removed (and where `restore` puts it).
    pub path: String,
    pub kind: FileKind,
    /// Bytes in its files.
    pub size: u64,
    /// Seconds since the epoch.
    pub deleted_at: u64,
    /// Seconds since the epoch when it is purged for good.
    pub expires_at: u64,
}

/// What a chunkserver holds of one chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkReport {
    pub handle: ChunkHandle,
    pub version: ChunkVersion,
    pub size: u64,
}

/// A chunk of an upload as the client wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedChunk {
    pub handle: ChunkHandle,
    pub size: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkAllocation {
    pub handle: ChunkHandle,
    pub version: ChunkVersion,
    /// The replica chain: the client writes to the first, which forwards along the rest.
    pub replicas: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileKind {
    File,
    Dir,
}

impl FileKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::File => "file",
            FileKind::Dir => "dir",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    pub name: String,
    pub kind: FileKind,
    pub size: u64,
    /// Seconds since the Unix epoch of the last change.
    pub mtime: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkInfo {
    pub handle: ChunkHandle,
    pub version: ChunkVersion,
    pub size: u64,
    /// Addresses of live chunkservers holding this chunk at this version.
    pub replicas: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStat {
    pub path: String,
    pub kind: FileKind,
    pub size: u64,
    pub replication: u32,
    pub mtime: u64,
    pub chunks: Vec<ChunkInfo>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    pub id: ServerId,
    pub addr: String,
    pub alive: bool,
    pub capacity: u64,
    pub used: u64,
    pub chunks: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub chunkservers: Vec<ServerStatus>,
    pub files: u64,
    pub chunks: u64,
    pub under_replicated: u64,
    pub chunk_size: u64,
    pub replication: u32,
    /// After a restart, until chunkservers have reported: no deletion, no chunk declared missing.
    pub safe_mode: bool,
    /// Entries in the trash.
    pub trash: u64,
    /// Unreferenced chunks still held by some chunkserver, waiting to be deleted.
    pub garbage: u64,
}

impl Request {
    /// The variant's name, for logs and "unexpected reply" errors.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Hello { .. } => "Hello",
            Request::Mkdir { .. } => "Mkdir",
            Request::List { .. } => "List",
            Request::Stat { .. } => "Stat",
            Request::Delete { .. } => "Delete",
            Request::BeginPut { .. } => "BeginPut",
            Request::AllocateChunk { .. } => "AllocateChunk",
            Request::CommitPut { .. } => "CommitPut",
            Request::AbortPut { .. } => "AbortPut",
            Request::Status => "Status",
            Request::Register { .. } => "Register",
            Request::Heartbeat { .. } => "Heartbeat",
            Request::WriteChunk { .. } => "WriteChunk",
            Request::WritePacket { .. } => "WritePacket",
            Request::ReadChunk { .. } => "ReadChunk",
            Request::Rename { .. } => "Rename",
            Request::TrashList => "TrashList",
            Request::TrashRestore { .. } => "TrashRestore",
        }
    }
}

impl Response {
    /// The variant's name, for logs and "unexpected reply" errors.
    pub fn name(&self) -> &'static str {
        match self {
            Response::Error(_) => "Error",
            Response::HelloOk { .. } => "HelloOk",
            Response::Ok => "Ok",
            Response::Listing { .. } => "Listing",
            Response::Stat(_) => "Stat",
            Response::PutStarted { .. } => "PutStarted",
            Response::ChunkAllocated(_) => "ChunkAllocated",
            Response::Status(_) => "Status",
            Response::Registered => "Registered",
            Response::HeartbeatAck { .. } => "HeartbeatAck",
            Response::ChunkWritten { .. } => "ChunkWritten",
            Response::ReadData { .. } => "ReadData",
            Response::TrashListing { .. } => "TrashListing",
        }
    }

    /// `Error` as `Err`, anything else as `Ok`.
    pub fn into_result(self) -> Result<Response, ErrorCode> {
        match self {
            Response::Error(code) => Err(code),
            other => Ok(other),
        }
    }
}
