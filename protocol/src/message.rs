//! Every message of the protocol. Both enums are append-only: bincode encodes the
//! variant index, so a new message goes at the end and an old one is never reordered.
//!
//! Bulk data never appears here: it travels as the frame's raw payload.

use serde::{Deserialize, Serialize};

use crate::auth::{ChunkToken, Credential, KeyInfo, KeyTable, Role};
use crate::error::ErrorCode;
use crate::ids::{ChunkHandle, ChunkVersion, ServerId, UploadId};

/// Who opens a connection; a server may refuse roles it does not serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerKind {
    Client,
    Chunkserver,
}

/// A request, sent by whoever opened the connection: the handshake, then the
/// requests of one link. Each link has its own type, so a server's handler for
/// one link cannot even be handed another link's request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// First frame on every connection.
    Hello {
        magic: [u8; 4],
        version: u32,
        peer: PeerKind,
    },
    /// Who the dialer claims to be, and its fresh nonce. Answered `Challenge`.
    Auth {
        credential: Credential,
        nonce: [u8; 32],
    },
    /// The dialer's proof over the transcript. Answered `Authenticated`.
    Proof {
        proof: [u8; 32],
    },
    Master(ClientToMaster),
    Report(ChunkserverToMaster),
    Chunk(ChunkRequest),
    Order(MasterOrder),
    Peer(PeerOrder),
}

/// Requests a client sends the master: the namespace, puts, appends, listings,
/// cluster administration and keys. A client connection carries nothing else.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientToMaster {
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
    /// Health of every file at or below `path`.
    Fsck {
        path: String,
    },
    /// A chunk's pipeline broke: a new chain without the `failed` servers, and a new
    /// version so that partial or old replicas are never served.
    RetryChunk {
        upload: UploadId,
        handle: ChunkHandle,
        failed: Vec<String>,
    },
    /// Changes the replication of a file, or of every file below a directory.
    SetReplication {
        path: String,
        replication: u32,
    },
    /// Drains a chunkserver (`on`), or takes it back into service.
    Decommission {
        addr: String,
        on: bool,
    },
    /// How evenly disk use is spread, and what the balancer is doing; with
    /// `threshold_percent`, first sets the spread the balancer evens out above.
    Balance {
        threshold_percent: Option<u32>,
    },
    /// Client -> master: the chunk to append to at `path` and its primary. Creates
    /// an empty file when `create` and the path is free. `report` says why the last
    /// answer no longer works (the chunk is full, or its primary failed).
    AppendTarget {
        path: String,
        create: bool,
        replication: Option<u32>,
        report: Option<AppendReport>,
    },
    /// Issue a new key; answered `KeyCreated`.
    CreateKey {
        name: String,
        role: Role,
    },
    ListKeys,
    RemoveKey {
        name: String,
    },
    /// Up to `limit` entries of a directory after the name `after`, in name order.
    ListPage {
        path: String,
        after: Option<String>,
        limit: u32,
    },
    /// Up to `limit` trash entries after the cursor `after` (from the last page).
    TrashPage {
        after: Option<u64>,
        limit: u32,
    },
    /// The totals of `Fsck`, with up to `limit` unhealthy files after the path `after`
    /// in tree order (a directory's entries right after it, in name order). The
    /// next pages are cheaper as `FsckFrom`.
    FsckPage {
        path: String,
        after: Option<String>,
        limit: u32,
    },
    /// The totals of `Status`, with up to `limit` chunkservers after the address `after`.
    StatusPage {
        after: Option<String>,
        limit: u32,
    },
    /// Sets the modification time of `path` to now, creating an empty file (at the
    /// cluster's replication) when nothing is there; answered `Ok`.
    Touch {
        path: String,
    },
    /// Purges every entry of the trash now; answered `Purged`.
    TrashEmpty,
    /// Sets each given attribute of `path` (a mode of permission bits, at most
    /// 0o7777; owner ids; access and modification times in seconds since the epoch);
    /// answered `Ok`.
    SetAttr {
        path: String,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        atime: Option<u64>,
        mtime: Option<u64>,
    },
    /// Swaps the chunk list of the file at the upload's path for `chunks`, in one
    /// logged step: each is either a chunk of this upload or one the file has now
    /// (kept as it is). The inode, and so its attributes, stays; chunks the file no
    /// longer uses become garbage. Answered `Ok`.
    CommitRewrite {
        upload: UploadId,
        chunks: Vec<CommittedChunk>,
    },
    /// Creates a symbolic link at `path` pointing at `target` (stored as given, never
    /// resolved by the master); answered `Ok`.
    Symlink {
        path: String,
        target: String,
    },
    /// The target of the symbolic link at `path`; answered `Link`.
    ReadLink {
        path: String,
    },
    /// POSIX `rename(2)`: `src` becomes exactly `dst` (never "into" it). An existing
    /// `dst` is replaced in the same logged step when `replace` (a file by a file or
    /// link, an empty directory by a directory); otherwise it is `AlreadyExists`.
    /// Answered `Ok`.
    RenameOver {
        src: String,
        dst: String,
        replace: bool,
    },
    /// What is at or below `path` (the entry itself, not what a link points to):
    /// directories (`path` included), files and symbolic links, and their bytes.
    /// The master walks the tree in slices, so the answer is not a snapshot of a tree
    /// that changes meanwhile. Answered `Summary`.
    Summary {
        path: String,
    },
    /// The next page of an fsck: up to `limit` unhealthy files at or below `path`
    /// after the path `after` (the cursor of the page before), in tree order, and no
    /// totals (the first page, `FsckPage`, has them). The master walks from the
    /// cursor and stops at a full page. Answered `FsckProblems`.
    FsckFrom {
        path: String,
        after: String,
        limit: u32,
    },
}

impl ClientToMaster {
    /// The variant's name, for logs and "unexpected reply" errors.
    pub fn name(&self) -> &'static str {
        match self {
            ClientToMaster::Mkdir { .. } => "Mkdir",
            ClientToMaster::List { .. } => "List",
            ClientToMaster::Stat { .. } => "Stat",
            ClientToMaster::Delete { .. } => "Delete",
            ClientToMaster::BeginPut { .. } => "BeginPut",
            ClientToMaster::AllocateChunk { .. } => "AllocateChunk",
            ClientToMaster::CommitPut { .. } => "CommitPut",
            ClientToMaster::AbortPut { .. } => "AbortPut",
            ClientToMaster::Status => "Status",
            ClientToMaster::Rename { .. } => "Rename",
            ClientToMaster::TrashList => "TrashList",
            ClientToMaster::TrashRestore { .. } => "TrashRestore",
            ClientToMaster::Fsck { .. } => "Fsck",
            ClientToMaster::RetryChunk { .. } => "RetryChunk",
            ClientToMaster::SetReplication { .. } => "SetReplication",
            ClientToMaster::Decommission { .. } => "Decommission",
            ClientToMaster::Balance { .. } => "Balance",
            ClientToMaster::AppendTarget { .. } => "AppendTarget",
            ClientToMaster::CreateKey { .. } => "CreateKey",
            ClientToMaster::ListKeys => "ListKeys",
            ClientToMaster::RemoveKey { .. } => "RemoveKey",
            ClientToMaster::ListPage { .. } => "ListPage",
            ClientToMaster::TrashPage { .. } => "TrashPage",
            ClientToMaster::FsckPage { .. } => "FsckPage",
            ClientToMaster::StatusPage { .. } => "StatusPage",
            ClientToMaster::Touch { .. } => "Touch",
            ClientToMaster::TrashEmpty => "TrashEmpty",
            ClientToMaster::SetAttr { .. } => "SetAttr",
            ClientToMaster::CommitRewrite { .. } => "CommitRewrite",
            ClientToMaster::Symlink { .. } => "Symlink",
            ClientToMaster::ReadLink { .. } => "ReadLink",
            ClientToMaster::RenameOver { .. } => "RenameOver",
            ClientToMaster::Summary { .. } => "Summary",
            ClientToMaster::FsckFrom { .. } => "FsckFrom",
        }
    }

    /// Whether the request only reads: sent twice, it changes nothing, so a client
    /// may send it again when the first answer never came.
    pub fn reads_only(&self) -> bool {
        match self {
            ClientToMaster::List { .. }
            | ClientToMaster::Stat { .. }
            | ClientToMaster::Status
            | ClientToMaster::TrashList
            | ClientToMaster::Fsck { .. }
            | ClientToMaster::ListKeys
            | ClientToMaster::ListPage { .. }
            | ClientToMaster::TrashPage { .. }
            | ClientToMaster::FsckPage { .. }
            | ClientToMaster::StatusPage { .. }
            | ClientToMaster::ReadLink { .. }
            | ClientToMaster::Summary { .. }
            | ClientToMaster::FsckFrom { .. } => true,
            ClientToMaster::Mkdir { .. }
            | ClientToMaster::Delete { .. }
            | ClientToMaster::BeginPut { .. }
            | ClientToMaster::AllocateChunk { .. }
            | ClientToMaster::CommitPut { .. }
            | ClientToMaster::AbortPut { .. }
            | ClientToMaster::Rename { .. }
            | ClientToMaster::TrashRestore { .. }
            | ClientToMaster::RetryChunk { .. }
            | ClientToMaster::SetReplication { .. }
            | ClientToMaster::Decommission { .. }
            | ClientToMaster::Balance { .. }
            | ClientToMaster::AppendTarget { .. }
            | ClientToMaster::CreateKey { .. }
            | ClientToMaster::RemoveKey { .. }
            | ClientToMaster::Touch { .. }
            | ClientToMaster::TrashEmpty
            | ClientToMaster::SetAttr { .. }
            | ClientToMaster::CommitRewrite { .. }
            | ClientToMaster::Symlink { .. }
            | ClientToMaster::RenameOver { .. } => false,
        }
    }
}

impl From<ClientToMaster> for Request {
    fn from(r: ClientToMaster) -> Request {
        Request::Master(r)
    }
}

/// What a chunkserver sends the master about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkserverToMaster {
    /// Sent on every (re)connection with the full list of chunks held.
    Register {
        server: ServerId,
        addr: String,
        capacity: u64,
        used: u64,
        chunks: Vec<ChunkReport>,
        /// The server's own key (kept in its data dir), sealed for this connection
        /// (`auth::seal`, epoch 0, name "server key"): the master binds it to the id
        /// at the first registration and requires it afterwards.
        id_key: [u8; 32],
    },
    /// Periodic liveness and the changes to the chunk list since the last heartbeat.
    Heartbeat {
        server: ServerId,
        capacity: u64,
        used: u64,
        added: Vec<ChunkReport>,
        removed: Vec<ChunkHandle>,
        /// Replicas found damaged (and quarantined) since the last heartbeat; they are
        /// in `removed` too.
        corrupt: Vec<ChunkHandle>,
        /// Requests being served right now.
        load: u32,
        /// Append leases this server holds as primary and used lately: the master
        /// extends those it still grants (see `HeartbeatAck::extended`).
        leases: Vec<LeaseReport>,
        /// The epoch of the client key table this server holds (0: none yet).
        keys_epoch: u64,
    },
}

impl ChunkserverToMaster {
    /// The variant's name, for logs and "unexpected reply" errors.
    pub fn name(&self) -> &'static str {
        match self {
            ChunkserverToMaster::Register { .. } => "Register",
            ChunkserverToMaster::Heartbeat { .. } => "Heartbeat",
        }
    }
}

impl From<ChunkserverToMaster> for Request {
    fn from(r: ChunkserverToMaster) -> Request {
        Request::Report(r)
    }
}

/// Requests on chunk data a chunkserver serves: from clients, and from peers (a
/// pipeline's next hop, a copy) and the master. Each carries a chunk token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkRequest {
    /// Opens a pipelined chunk write; followed by `WritePacket` frames with the same
    /// request id. The receiver forwards to `downstream[0]` with the rest of the chain.
    WriteChunk {
        handle: ChunkHandle,
        version: ChunkVersion,
        downstream: Vec<String>,
        /// The master's permission to write this chunk at this version.
        token: ChunkToken,
    },
    /// One packet of chunk data (the frame payload). `last` ends the chunk.
    WritePacket { last: bool },
    /// Read `len` bytes at `offset`; answered by `ReadData` frames until `last`, which
    /// cover the range widened to whole checksum blocks.
    ReadChunk {
        handle: ChunkHandle,
        version: ChunkVersion,
        offset: u64,
        len: u64,
        token: ChunkToken,
    },
    /// Client -> primary: one record of `len` bytes, sent in the `WritePacket` frames
    /// that follow under the same request id. Answered `Appended`.
    Append {
        handle: ChunkHandle,
        version: ChunkVersion,
        len: u64,
        token: ChunkToken,
    },
    /// The length of a replica at `version` (a primary answers what it acknowledged).
    ChunkLength {
        handle: ChunkHandle,
        version: ChunkVersion,
        /// Permission to read (or an order) on the chunk at this version.
        token: ChunkToken,
    },
    /// Create the replica `handle` at `version` from the verified bytes of another
    /// chunk (`source`), pulled by the receiver from the replica `source.source`: a
    /// server-side copy, whose bytes never pass through the client. `token` permits
    /// writing `handle`; `source.token` permits reading the source. Answered
    /// `ChunkWritten` once the new replica is durable.
    CopyFrom {
        handle: ChunkHandle,
        version: ChunkVersion,
        token: ChunkToken,
        source: ReplicateOrder,
    },
    /// The blake3 of the replica's whole content, read and verified block by block;
    /// answered `ChunkDigest`.
    Digest {
        handle: ChunkHandle,
        version: ChunkVersion,
        token: ChunkToken,
    },
    /// As `ReadChunk`, answered the same way, but the blocks go out as stored, not
    /// hashed by the chunkserver: the reader verifies them against the checksums
    /// that come with them, which it must do anyway, and on a mismatch asks for
    /// `Digest`, which verifies the replica here and quarantines it if damaged.
    ReadStored {
        handle: ChunkHandle,
        version: ChunkVersion,
        offset: u64,
        len: u64,
        token: ChunkToken,
    },
}

impl ChunkRequest {
    /// The variant's name, for logs and "unexpected reply" errors.
    pub fn name(&self) -> &'static str {
        match self {
            ChunkRequest::WriteChunk { .. } => "WriteChunk",
            ChunkRequest::WritePacket { .. } => "WritePacket",
            ChunkRequest::ReadChunk { .. } => "ReadChunk",
            ChunkRequest::Append { .. } => "Append",
            ChunkRequest::ChunkLength { .. } => "ChunkLength",
            ChunkRequest::CopyFrom { .. } => "CopyFrom",
            ChunkRequest::Digest { .. } => "Digest",
            ChunkRequest::ReadStored { .. } => "ReadStored",
        }
    }
}

impl From<ChunkRequest> for Request {
    fn from(r: ChunkRequest) -> Request {
        Request::Chunk(r)
    }
}

/// The master's orders to a chunkserver it dials.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MasterOrder {
    GrantLease(LeaseGrant),
}

/// Master -> primary: take a lease on `handle` at `version` (its replicas move
/// there from `from`; `None` creates an empty chunk). The primary moves the
/// `secondaries` too, brings every replica to the shortest one's length, and
/// answers `LeaseGranted`. `lease_ms == 0` only syncs the replicas (closing).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGrant {
    pub handle: ChunkHandle,
    pub from: Option<ChunkVersion>,
    pub version: ChunkVersion,
    pub secondaries: Vec<String>,
    pub lease_ms: u64,
    pub chunk_size: u64,
    pub max_append: u64,
    /// The master's order on `handle` at `version`; passed on to the secondaries.
    pub token: ChunkToken,
}

impl MasterOrder {
    /// The variant's name, for logs and "unexpected reply" errors.
    pub fn name(&self) -> &'static str {
        match self {
            MasterOrder::GrantLease(_) => "GrantLease",
        }
    }
}

impl From<MasterOrder> for Request {
    fn from(r: MasterOrder) -> Request {
        Request::Order(r)
    }
}

/// A primary's orders to the secondaries of its lease (chunkserver to chunkserver).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerOrder {
    /// Primary -> secondary: move the replica from `from` (or create it, when `None`)
    /// to `version`; answered `ChunkSize` with the replica's length.
    BumpVersion {
        handle: ChunkHandle,
        from: Option<ChunkVersion>,
        version: ChunkVersion,
        token: ChunkToken,
    },
    /// Primary -> secondary: cut the replica back to `size` (bytes past it were never
    /// acknowledged).
    TruncateChunk {
        handle: ChunkHandle,
        version: ChunkVersion,
        size: u64,
        token: ChunkToken,
    },
    /// Primary -> secondary: records to write at `offset`, in `WritePacket` frames
    /// that follow. Answered `ChunkSize` once durable.
    AppendForward {
        handle: ChunkHandle,
        version: ChunkVersion,
        offset: u64,
        len: u64,
        token: ChunkToken,
    },
}

impl PeerOrder {
    /// The variant's name, for logs and "unexpected reply" errors.
    pub fn name(&self) -> &'static str {
        match self {
            PeerOrder::BumpVersion { .. } => "BumpVersion",
            PeerOrder::TruncateChunk { .. } => "TruncateChunk",
            PeerOrder::AppendForward { .. } => "AppendForward",
        }
    }
}

impl From<PeerOrder> for Request {
    fn from(r: PeerOrder) -> Request {
        Request::Peer(r)
    }
}
/// Why a client asks the master for an append target again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendReport {
    /// The primary closed the chunk at `size`: the record did not fit.
    Full {
        handle: ChunkHandle,
        version: ChunkVersion,
        size: u64,
    },
    /// The append failed: `addr` is the replica that failed, `None` when the
    /// primary no longer holds the lease.
    Failed {
        handle: ChunkHandle,
        version: ChunkVersion,
        addr: Option<String>,
    },
}

/// A lease a primary reports in its heartbeat, with the length it acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseReport {
    pub handle: ChunkHandle,
    pub version: ChunkVersion,
    pub size: u64,
}

/// Where to append: the file's last chunk and the primary holding its lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendLease {
    pub handle: ChunkHandle,
    pub version: ChunkVersion,
    pub primary: String,
    /// Offset in the file of the chunk's first byte.
    pub file_offset: u64,
    pub chunk_size: u64,
    /// Largest record appended atomically.
    pub max_append: u64,
    /// Permission to append to and read the chunk at this version.
    pub token: ChunkToken,
}

/// A reply, echoing the request id it answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    Registered {
        /// The client keys, sealed for this connection.
        keys: KeyTable,
    },
    HeartbeatAck {
        /// The master does not know this server (it restarted): register again.
        reregister: bool,
        /// Chunks this server should delete.
        delete: Vec<ChunkHandle>,
        /// Chunks this server should copy from another replica.
        replicate: Vec<ReplicateOrder>,
        /// Reported leases the master extends; the others are revoked.
        extended: Vec<ChunkHandle>,
        /// The client keys, sealed for this connection, when they changed.
        keys: Option<KeyTable>,
    },
    /// Every replica downstream of (and including) the answering one holds the chunk durably.
    ChunkWritten {
        handle: ChunkHandle,
        size: u64,
    },
    /// Chunk data (the frame payload): whole checksum blocks starting at `offset`
    /// (only the chunk's last block may be short), with each block's blake3.
    ReadData {
        last: bool,
        offset: u64,
        checksums: Vec<[u8; 32]>,
    },
    TrashListing {
        entries: Vec<TrashInfo>,
    },
    Fsck(FsckReport),
    Balance(BalanceReport),
    AppendLease(AppendLease),
    /// The primary holds the lease; `secondaries` are those it could move to the
    /// new version, all at `size` bytes.
    LeaseGranted {
        size: u64,
        secondaries: Vec<String>,
    },
    /// A replica's length (after a bump, a forwarded append, or when asked).
    ChunkSize {
        size: u64,
    },
    /// The record is durable on every replica at this offset in the chunk.
    Appended {
        offset: u64,
    },
    /// The listener's nonce and its proof that it holds the claimed credential's key.
    Challenge {
        nonce: [u8; 32],
        proof: [u8; 32],
    },
    /// The handshake is done; clients learn their role.
    Authenticated {
        role: Option<Role>,
    },
    /// A new key: its secret sealed for this connection (see `auth::seal`, epoch 0).
    KeyCreated {
        name: String,
        role: Role,
        sealed: [u8; 32],
    },
    Keys {
        keys: Vec<KeyInfo>,
    },
    /// A page of a directory; `next` is the cursor for the following page, if any.
    ListingPage {
        entries: Vec<DirEntry>,
        next: Option<String>,
    },
    TrashPage {
        entries: Vec<TrashInfo>,
        next: Option<u64>,
    },
    /// `report.problems` holds this page's files only.
    FsckPage {
        report: FsckReport,
        next: Option<String>,
    },
    /// `status.chunkservers` holds this page's servers only.
    StatusPage {
        status: ClusterStatus,
        next: Option<String>,
    },
    /// A replica's length and the blake3 of its content.
    ChunkDigest {
        size: u64,
        digest: [u8; 32],
    },
    /// Trash entries purged, and the bytes of their files.
    Purged {
        entries: u64,
        bytes: u64,
    },
    /// A symbolic link's target.
    Link {
        target: String,
    },
    /// What a subtree holds (`ClientToMaster::Summary`).
    Summary {
        dirs: u64,
        files: u64,
        bytes: u64,
    },
    /// A next page of an fsck (`FsckFrom`): its unhealthy files, and the cursor of
    /// the page after it (`None`: that was the last).
    FsckProblems {
        problems: Vec<FileHealth>,
        next: Option<String>,
    },
}

/// Disk use per chunkserver and the balancer's work.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BalanceReport {
    /// Live chunkservers in service: (address, used fraction of capacity).
    pub servers: Vec<(String, f64)>,
    /// Largest minus smallest used fraction.
    pub spread: f64,
    /// The balancer moves chunks while the spread is above this.
    pub threshold: f64,
    /// Chunk moves under way.
    pub moving: u64,
}

/// An order to copy a chunk from another chunkserver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicateOrder {
    pub handle: ChunkHandle,
    pub version: ChunkVersion,
    pub size: u64,
    /// A live replica to read from.
    pub source: String,
    /// The master's permission to read it there.
    pub token: ChunkToken,
}

/// What `fsck` found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsckReport {
    pub path: String,
    pub files: u64,
    pub chunks: u64,
    /// Chunks with no live replica at their version.
    pub missing: u64,
    /// Chunks with fewer live replicas than their file's replication.
    pub under_replicated: u64,
    /// Chunks with a replica found damaged and not yet replaced.
    pub corrupt: u64,
    /// Chunks with a replica at an old version still on some server.
    pub stale: u64,
    /// Chunks with more live replicas than wanted (trimmed in the background; healthy).
    pub over_replicated: u64,
    /// The master is in safe mode: replicas may not all have been reported yet.
    pub safe_mode: bool,
    /// Every file with a problem (at most 10,000).
    pub problems: Vec<FileHealth>,
}

impl FsckReport {
    pub fn healthy(&self) -> bool {
        self.missing == 0 && self.under_replicated == 0 && self.corrupt == 0 && self.stale == 0
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHealth {
    pub path: String,
    pub chunks: u64,
    pub missing: u64,
    pub under_replicated: u64,
    pub corrupt: u64,
    pub stale: u64,
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
    pub token: ChunkToken,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileKind {
    File,
    Dir,
    /// A symbolic link: no chunks; its size is the length of its target.
    Symlink,
}

impl FileKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::File => "file",
            FileKind::Dir => "dir",
            FileKind::Symlink => "symlink",
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
    /// Replicas per chunk of a file (0 for a directory).
    pub replication: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkInfo {
    pub handle: ChunkHandle,
    pub version: ChunkVersion,
    pub size: u64,
    /// Addresses of live chunkservers holding this chunk at this version.
    pub replicas: Vec<String>,
    /// Appended to since its size was last settled: `size` may lag, and readers ask
    /// the replicas (the `primary` first, when a lease is held) for the length.
    pub open: bool,
    pub primary: Option<String>,
    /// Permission to read the chunk at this version (never shown to users).
    pub token: ChunkToken,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStat {
    pub path: String,
    pub kind: FileKind,
    pub size: u64,
    pub replication: u32,
    pub mtime: u64,
    pub chunks: Vec<ChunkInfo>,
    /// Permission bits (with set-uid, set-gid and sticky).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the epoch of the last access recorded.
    pub atime: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    pub id: ServerId,
    pub addr: String,
    pub alive: bool,
    pub capacity: u64,
    pub used: u64,
    pub chunks: u64,
    /// Requests it was serving at its last heartbeat.
    pub load: u32,
    pub decommissioning: bool,
    /// Decommissioning: chunks that still have too few replicas elsewhere.
    pub draining: u64,
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
    /// Chunks with no live replica.
    pub missing: u64,
    /// Chunks with more live replicas than wanted (trimmed in the background).
    pub over_replicated: u64,
    /// Chunk copies under way (repair, re-replication, balancing).
    pub copying: u64,
}

impl Request {
    /// The variant's name, for logs and "unexpected reply" errors.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Hello { .. } => "Hello",
            Request::Auth { .. } => "Auth",
            Request::Proof { .. } => "Proof",
            Request::Master(r) => r.name(),
            Request::Report(r) => r.name(),
            Request::Chunk(r) => r.name(),
            Request::Order(r) => r.name(),
            Request::Peer(r) => r.name(),
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
            Response::Registered { .. } => "Registered",
            Response::HeartbeatAck { .. } => "HeartbeatAck",
            Response::ChunkWritten { .. } => "ChunkWritten",
            Response::ReadData { .. } => "ReadData",
            Response::TrashListing { .. } => "TrashListing",
            Response::Fsck(_) => "Fsck",
            Response::Balance(_) => "Balance",
            Response::AppendLease(_) => "AppendLease",
            Response::LeaseGranted { .. } => "LeaseGranted",
            Response::ChunkSize { .. } => "ChunkSize",
            Response::Appended { .. } => "Appended",
            Response::Challenge { .. } => "Challenge",
            Response::Authenticated { .. } => "Authenticated",
            Response::KeyCreated { .. } => "KeyCreated",
            Response::Keys { .. } => "Keys",
            Response::ListingPage { .. } => "ListingPage",
            Response::TrashPage { .. } => "TrashPage",
            Response::FsckPage { .. } => "FsckPage",
            Response::StatusPage { .. } => "StatusPage",
            Response::ChunkDigest { .. } => "ChunkDigest",
            Response::Purged { .. } => "Purged",
            Response::Link { .. } => "Link",
            Response::Summary { .. } => "Summary",
            Response::FsckProblems { .. } => "FsckProblems",
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
