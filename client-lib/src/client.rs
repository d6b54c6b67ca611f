//! `Client`: metadata calls to the master and the put and get data paths.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use dfs_protocol::checksum;
use dfs_protocol::{
    AppendLease, BalanceReport, ChunkAllocation, ChunkHandle, ChunkInfo, CommittedChunk, ErrorCode,
    FileKind, FileStat, Frame, Identity, ProtocolError, Request, RequestId, Response, UploadId,
    CHECKSUM_BLOCK, PACKET_SIZE,
};
use dfs_protocol::{ChunkRequest, ClientToMaster};
use futures::{StreamExt, TryStreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::ClientError;
use crate::pool::{Conn, Pool};

/// Tunables; the defaults suit a LAN or loopback cluster.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub connect_timeout: Duration,
    /// Limit on any single exchange (a metadata call, one packet, one chunk's confirmation).
    pub io_timeout: Duration,
    /// Byte ranges read at once during a get.
    pub read_parallelism: usize,
    /// Size of each ranged read; memory in flight is at most parallelism x this.
    pub read_unit: u64,
    /// Addresses to dial instead of those the master hands out (a client outside a
    /// NAT or port forward, or a test's fault proxy in front of a server).
    pub routes: Routes,
    /// How long a master call waits out a master that is down (a restart) or that
    /// cannot place chunks yet (chunkservers still reporting), before failing.
    /// Only calls the master never took, or refused without acting on, are sent
    /// again. Zero (the default) fails at once, as the CLI's verbs want.
    pub master_wait: Duration,
}

/// `address -> address to dial instead`; empty by default.
#[derive(Clone, Debug, Default)]
pub struct Routes(Arc<std::collections::HashMap<String, String>>);

impl Routes {
    pub fn new(routes: impl IntoIterator<Item = (String, String)>) -> Routes {
        Routes(Arc::new(routes.into_iter().collect()))
    }

    /// Where to dial to reach `addr`.
    pub fn resolve<'a>(&'a self, addr: &'a str) -> &'a str {
        self.0.get(addr).map_or(addr, String::as_str)
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(60),
            read_parallelism: 4,
            // 8 MiB: each unit is one request and one read-ahead hint on the
            // chunkserver; 4 MiB units read 11% slower from a cold disk, 16 MiB ones
            // leave too few units in flight per chunk (docs/benchmarks.md).
            read_unit: 8 << 20,
            routes: Routes::default(),
            master_wait: Duration::ZERO,
        }
    }
}

/// How to store a file.
#[derive(Clone, Copy, Debug, Default)]
pub struct PutOptions {
    /// Replicas per chunk; the cluster default when `None`.
    pub replication: Option<u32>,
    /// Replace an existing file instead of failing with `AlreadyExists`.
    pub overwrite: bool,
}

/// Attributes to change with [`Client::set_attr`]; `None` leaves one as it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// Permission bits, with set-uid, set-gid and sticky (at most 0o7777).
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Seconds since the Unix epoch.
    pub atime: Option<u64>,
    pub mtime: Option<u64>,
}

/// A handle on a dfs cluster. Cheap to clone; clones share connections.
#[derive(Clone, Debug)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) master: String,
    pub(crate) options: ClientOptions,
    pub(crate) pool: Pool,
    /// Metadata calls: one pipelined connection to the master.
    pub(crate) master_link: crate::link::Link,
    /// Append targets by path, so appenders go straight to the primary.
    pub(crate) leases: std::sync::Mutex<std::collections::HashMap<String, AppendLease>>,
    /// Chunkservers that failed this client lately: last in chains and reads.
    pub(crate) suspects: crate::suspects::Suspects,
}

/// Attempts at writing one chunk (the first chain and the retries) before a put fails.
const MAX_CHUNK_ATTEMPTS: u32 = 4;

/// An open write pipeline: the connection to its head and the request id.
struct Pipe {
    conn: Conn,
    addr: String,
    id: RequestId,
}

/// Bytes of a chunk sent before the previous chunk's confirmation is collected. A
/// put then holds at most one chunk and this much for replay (73 MiB at defaults,
/// not 128); with chunkservers writing `O_DIRECT`, the previous chunk's closing
/// fsync is short enough that waiting for it here did not slow a put
/// (docs/benchmarks.md).
const CONFIRM_AFTER: u64 = 8 << 20;

/// One chunk of a put: its packets are kept until the chain confirms it, so a broken
/// pipeline can be replaced and the chunk sent again (memory: one chunk's worth).
struct ChunkWrite {
    upload: UploadId,
    handle: ChunkHandle,
    size: u64,
    packets: Vec<Bytes>,
    /// The last packet has been sent.
    complete: bool,
    pipe: Option<Pipe>,
    attempts: u32,
}

impl ChunkWrite {
    fn new(upload: UploadId, handle: ChunkHandle) -> ChunkWrite {
        ChunkWrite {
            upload,
            handle,
            size: 0,
            packets: Vec::new(),
            complete: false,
            pipe: None,
            attempts: 0,
        }
    }
}

/// Times a get reads on with fresh metadata after its chunks moved to a new version.
const MAX_VERSION_MOVES: u32 = 3;

/// One ranged read of a get.
#[derive(Clone, Debug)]
struct Unit {
    index: usize,
    chunk: Arc<ChunkInfo>,
    offset: u64,
    len: u64,
}

impl Client {
    /// A client of the master at `master` (`host:port`) that proves `identity` (a
    /// key from `dfs key create`, or the cluster secret). Connections open on first use.
    pub fn new(master: impl Into<String>, identity: Identity) -> Client {
        Client::with_options(master, identity, ClientOptions::default())
    }

    pub fn with_options(
        master: impl Into<String>,
        identity: Identity,
        options: ClientOptions,
    ) -> Client {
        let routes = options.routes.clone();
        Client {
            inner: Arc::new(Inner {
                master: master.into(),
                options,
                pool: Pool::new(identity, routes),
                master_link: Default::default(),
                leases: Default::default(),
                suspects: Default::default(),
            }),
        }
    }

    pub fn master(&self) -> &str {
        &self.inner.master
    }

    /// The same cluster and identity with other options (on new connections).
    pub fn reconfigured(&self, change: impl FnOnce(&mut ClientOptions)) -> Client {
        let mut options = self.inner.options.clone();
        change(&mut options);
        Client::with_options(
            self.inner.master.clone(),
            self.inner.pool.identity().clone(),
            options,
        )
    }

    pub(crate) async fn exchange<T>(
        &self,
        addr: &str,
        fut: impl std::future::Future<Output = Result<T, ProtocolError>>,
    ) -> Result<T, ClientError> {
        let after = self.inner.options.io_timeout;
        tokio::time::timeout(after, fut)
            .await
            .map_err(|_| ClientError::Timeout {
                addr: addr.to_string(),
                after,
            })?
            .map_err(|e| ClientError::peer(addr, e))
    }

    /// One request to the master; an error code comes back as `ClientError::Remote`.
    /// Waits out an unreachable master for up to `master_wait` (see
    /// [`ClientOptions::master_wait`]). A request that only reads is sent again, up
    /// to [`READ_ATTEMPTS`] times in all, when its answer never came: on a lossy
    /// network one connection can lose its SYNs for longer than the connect timeout
    /// while the next gets through.
    pub(crate) async fn master_call(&self, request: Request) -> Result<Response, ClientError> {
        let wait = self.inner.options.master_wait;
        let reads_only = matches!(&request, Request::Master(r) if r.reads_only());
        if wait.is_zero() && !reads_only {
            return self.master_link_call(request).await;
        }
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(50);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let result = self.master_link_call(request.clone()).await;
            let unavailable = match &result {
                Err(ClientError::Remote(
                    ErrorCode::Unavailable { .. } | ErrorCode::NotEnoughServers { .. },
                )) => true,
                Err(ClientError::Peer { source, .. }) => master_gone(source),
                _ => false,
            };
            let lost = reads_only
                && attempts < READ_ATTEMPTS
                && result.as_ref().is_err_and(lost_on_the_way);
            let waiting = unavailable && started.elapsed() < wait;
            if !(lost || waiting) {
                return result;
            }
            if let Err(e) = &result {
                if waiting {
                    tracing::warn!(error = %e, "the master cannot serve {} yet; waiting", request.name());
                } else {
                    tracing::info!(error = %e, attempts, "no answer from the master to {}; sending it again", request.name());
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    /// One request to the master on the client's pipelined link (see [`crate::link`]).
    async fn master_link_call(&self, request: Request) -> Result<Response, ClientError> {
        let opts = &self.inner.options;
        self.inner
            .master_link
            .call(
                &self.inner.pool,
                &self.inner.master,
                request,
                opts.connect_timeout,
                opts.io_timeout,
            )
            .await
    }

    /// One request and its one-frame answer, to the master or a chunkserver, on a
    /// pooled connection; an error code comes back as `ClientError::Remote`.
    pub(crate) async fn server_call(
        &self,
        addr: &str,
        request: Request,
    ) -> Result<Response, ClientError> {
        let opts = &self.inner.options;
        let mut conn = self.inner.pool.get(addr, opts.connect_timeout).await?;
        let after = opts.io_timeout;
        let result = tokio::time::timeout(after, conn.call(request)).await;
        match result {
            Ok(Ok(response)) => {
                self.inner.pool.put(addr, conn);
                Ok(response)
            }
            Ok(Err(ProtocolError::Remote(code))) => {
                self.inner.pool.put(addr, conn);
                Err(ClientError::Remote(code))
            }
            Ok(Err(e)) => Err(ClientError::peer(addr, e)),
            Err(_) => Err(ClientError::Timeout {
                addr: addr.to_string(),
                after,
            }),
        }
    }

    pub(crate) fn unexpected(&self, got: &Response) -> ClientError {
        ClientError::Unexpected {
            addr: self.inner.master.clone(),
            got: got.name(),
        }
    }

    /// A master request whose success answer is `Ok`.
    async fn master_ok(&self, request: Request) -> Result<(), ClientError> {
        match self.master_call(request).await? {
            Response::Ok => Ok(()),
            other => Err(self.unexpected(&other)),
        }
    }

    pub async fn mkdir(&self, path: &str, parents: bool) -> Result<(), ClientError> {
        self.master_ok(Request::Master(ClientToMaster::Mkdir {
            path: path.to_string(),
            parents,
        }))
        .await
    }

    /// Removes a file, or a directory (`recursive` for a non-empty one). The entry goes
    /// to the trash (see [`Client::trash_restore`]) unless `skip_trash`.
    pub async fn remove(
        &self,
        path: &str,
        recursive: bool,
        skip_trash: bool,
    ) -> Result<(), ClientError> {
        self.master_ok(Request::Master(ClientToMaster::Delete {
            path: path.to_string(),
            recursive,
            skip_trash,
        }))
        .await
    }

    /// Moves `src` to `dst` atomically, or into `dst` when that is a directory.
    /// Sets the modification time of `path` to now, creating an empty file there
    /// when nothing is.
    pub async fn touch(&self, path: &str) -> Result<(), ClientError> {
        self.master_ok(Request::Master(ClientToMaster::Touch {
            path: path.to_string(),
        }))
        .await
    }

    /// Sets each attribute `change` gives on `path` (the others stay as they are).
    pub async fn set_attr(&self, path: &str, change: SetAttr) -> Result<(), ClientError> {
        self.master_ok(Request::Master(ClientToMaster::SetAttr {
            path: path.to_string(),
            mode: change.mode,
            uid: change.uid,
            gid: change.gid,
            atime: change.atime,
            mtime: change.mtime,
        }))
        .await
    }

    /// POSIX `rename(2)`: `src` becomes exactly `dst`. An existing `dst` is replaced
    /// atomically when `replace` (a file by a file, an empty directory by a
    /// directory); otherwise it is an `AlreadyExists` error.
    pub async fn rename_over(
        &self,
        src: &str,
        dst: &str,
        replace: bool,
    ) -> Result<(), ClientError> {
        self.master_ok(Request::Master(ClientToMaster::RenameOver {
            src: src.to_string(),
            dst: dst.to_string(),
            replace,
        }))
        .await
    }

    /// Creates a symbolic link at `path` to `target` (stored as given).
    pub async fn symlink(&self, path: &str, target: &str) -> Result<(), ClientError> {
        self.master_ok(Request::Master(ClientToMaster::Symlink {
            path: path.to_string(),
            target: target.to_string(),
        }))
        .await
    }

    /// The target of the symbolic link at `path`.
    pub async fn read_link(&self, path: &str) -> Result<String, ClientError> {
        match self
            .master_call(Request::Master(ClientToMaster::ReadLink {
                path: path.to_string(),
            }))
            .await?
        {
            Response::Link { target } => Ok(target),
            other => Err(self.unexpected(&other)),
        }
    }

    pub async fn rename(&self, src: &str, dst: &str) -> Result<(), ClientError> {
        self.master_ok(Request::Master(ClientToMaster::Rename {
            src: src.to_string(),
            dst: dst.to_string(),
        }))
        .await
    }

    /// Sets the replication of a file, or of every file below a directory; the cluster
    /// adds or trims replicas in the background.
    pub async fn set_replication(&self, path: &str, replication: u32) -> Result<(), ClientError> {
        self.master_ok(Request::Master(ClientToMaster::SetReplication {
            path: path.to_string(),
            replication,
        }))
        .await
    }

    /// Starts (`on`) or cancels draining the chunkserver at `addr`.
    pub async fn decommission(&self, addr: &str, on: bool) -> Result<(), ClientError> {
        self.master_ok(Request::Master(ClientToMaster::Decommission {
            addr: addr.to_string(),
            on,
        }))
        .await
    }

    /// Disk use spread and balancer progress; `threshold_percent` first sets the spread
    /// the balancer evens out above.
    pub async fn balance(
        &self,
        threshold_percent: Option<u32>,
    ) -> Result<BalanceReport, ClientError> {
        match self
            .master_call(Request::Master(ClientToMaster::Balance {
                threshold_percent,
            }))
            .await?
        {
            Response::Balance(report) => Ok(report),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Purges every trash entry now (admin keys only); the entries purged and the
    /// bytes of their files.
    pub async fn trash_empty(&self) -> Result<(u64, u64), ClientError> {
        match self
            .master_call(Request::Master(ClientToMaster::TrashEmpty))
            .await?
        {
            Response::Purged { entries, bytes } => Ok((entries, bytes)),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Puts the most recently removed entry that was at `path` back there.
    pub async fn trash_restore(&self, path: &str) -> Result<(), ClientError> {
        self.master_ok(Request::Master(ClientToMaster::TrashRestore {
            path: path.to_string(),
        }))
        .await
    }

    /// A file's or directory's metadata. The size of a chunk being appended to is
    /// asked of its replicas, so it counts every acknowledged append.
    pub async fn stat(&self, path: &str) -> Result<FileStat, ClientError> {
        match self
            .master_call(Request::Master(ClientToMaster::Stat {
                path: path.to_string(),
            }))
            .await?
        {
            Response::Stat(mut stat) => {
                self.settle_sizes(&mut stat).await?;
                Ok(stat)
            }
            other => Err(self.unexpected(&other)),
        }
    }

    /// Stores everything `reader` yields at `path`. Nothing is visible at `path` until
    /// the whole file is stored; on error nothing changes there. Memory stays at a few
    /// packets whatever the file's size. Returns the number of bytes stored.
    pub async fn put<R>(
        &self,
        path: &str,
        reader: R,
        options: PutOptions,
    ) -> Result<u64, ClientError>
    where
        R: AsyncRead + Unpin,
    {
        let (upload, chunk_size) = self
            .begin_put(path, options.replication, options.overwrite)
            .await?;
        self.stream_and_commit(upload, chunk_size, reader, false)
            .await
    }

    /// Stores everything `reader` yields as the new contents of the existing file at
    /// `path`, keeping its inode and so its attributes (mode, owner): the chunks
    /// stream as a put's do, and the chunk list is swapped in one logged step at the
    /// end (`CommitRewrite`). Nothing changes at `path` until then, and nothing on
    /// error. Returns the number of bytes stored.
    pub async fn replace<R>(&self, path: &str, reader: R) -> Result<u64, ClientError>
    where
        R: AsyncRead + Unpin,
    {
        let stat = self.stat(path).await?;
        if stat.kind != FileKind::File {
            return Err(ErrorCode::IsADirectory { path: stat.path }.into());
        }
        let (upload, chunk_size) = self.begin_put(path, Some(stat.replication), true).await?;
        self.stream_and_commit(upload, chunk_size, reader, true)
            .await
    }

    /// Streams `reader` into `upload` and commits it as a new file, or (`rewrite`)
    /// as the new chunk list of the file there; aborts the upload on error.
    async fn stream_and_commit<R>(
        &self,
        upload: UploadId,
        chunk_size: u64,
        reader: R,
        rewrite: bool,
    ) -> Result<u64, ClientError>
    where
        R: AsyncRead + Unpin,
    {
        let done = async {
            let (chunks, total) = self.put_chunks(upload, chunk_size, reader).await?;
            let commit = if rewrite {
                ClientToMaster::CommitRewrite { upload, chunks }
            } else {
                ClientToMaster::CommitPut { upload, chunks }
            };
            self.master_ok(Request::Master(commit)).await?;
            Ok(total)
        };
        match done.await {
            Ok(total) => Ok(total),
            Err(e) => {
                self.abort_put(upload).await;
                Err(e)
            }
        }
    }

    /// Starts an upload to `path`: its id and the cluster's chunk size.
    pub(crate) async fn begin_put(
        &self,
        path: &str,
        replication: Option<u32>,
        overwrite: bool,
    ) -> Result<(UploadId, u64), ClientError> {
        let started = self
            .master_call(Request::Master(ClientToMaster::BeginPut {
                path: path.to_string(),
                replication,
                overwrite,
            }))
            .await?;
        match started {
            Response::PutStarted {
                upload, chunk_size, ..
            } => Ok((upload, chunk_size)),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Best effort: the master forgets idle uploads anyway.
    pub(crate) async fn abort_put(&self, upload: UploadId) {
        let _ = self
            .master_call(Request::Master(ClientToMaster::AbortPut { upload }))
            .await;
    }

    /// The next chunk of `upload`: allocated, with its pipeline open (on a new chain
    /// if the first one's head cannot be reached).
    async fn start_chunk(&self, upload: UploadId) -> Result<ChunkWrite, ClientError> {
        let mut alloc = match self
            .master_call(Request::Master(ClientToMaster::AllocateChunk { upload }))
            .await?
        {
            Response::ChunkAllocated(a) => a,
            other => return Err(self.unexpected(&other)),
        };
        self.inner.suspects.last(&mut alloc.replicas);
        let mut chunk = ChunkWrite::new(upload, alloc.handle);
        if let Err(e) = self
            .open_pipeline(&alloc)
            .await
            .map(|p| chunk.pipe = Some(p))
        {
            let head = alloc.replicas.first().cloned().unwrap_or_default();
            self.reroute(&mut chunk, e, &head).await?;
        }
        Ok(chunk)
    }

    async fn put_chunks<R>(
        &self,
        upload: UploadId,
        chunk_size: u64,
        mut reader: R,
    ) -> Result<(Vec<CommittedChunk>, u64), ClientError>
    where
        R: AsyncRead + Unpin,
    {
        let mut committed: Vec<CommittedChunk> = Vec::new();
        let mut in_flight: Option<ChunkWrite> = None;
        let mut total = 0u64;
        // One packet of look-ahead tells whether the packet being sent is a chunk's last.
        let mut next = read_packet(&mut reader, PACKET_SIZE as u64, chunk_size).await?;
        while !next.is_empty() {
            let mut chunk = self.start_chunk(upload).await?;
            loop {
                let packet = std::mem::take(&mut next);
                let room = chunk_size - chunk.size - packet.len() as u64;
                next = read_packet(
                    &mut reader,
                    PACKET_SIZE as u64,
                    if room == 0 { chunk_size } else { room },
                )
                .await?;
                let last = room == 0 || next.is_empty();
                self.send_packet(&mut chunk, packet, last).await?;
                // The previous chunk's replicas fsync while this one starts streaming;
                // collecting it a few packets in bounds what is kept for replay to one
                // chunk and `CONFIRM_AFTER`, instead of two chunks.
                if chunk.size >= CONFIRM_AFTER || last {
                    if let Some(prev) = in_flight.take() {
                        committed.push(self.confirm(prev).await?);
                    }
                }
                if last {
                    break;
                }
            }
            total += chunk.size;
            in_flight = Some(chunk);
        }
        if let Some(prev) = in_flight.take() {
            committed.push(self.confirm(prev).await?);
        }
        Ok((committed, total))
    }

    /// Stores `data` (at most a chunk) as the next chunk of `upload`, through the
    /// same pipeline, failover and confirmation as a put; the chunk as committed.
    pub(crate) async fn write_chunk(
        &self,
        upload: UploadId,
        data: Bytes,
    ) -> Result<CommittedChunk, ClientError> {
        let mut chunk = self.start_chunk(upload).await?;
        let mut rest = data;
        loop {
            let packet = rest.split_to(rest.len().min(PACKET_SIZE));
            let last = rest.is_empty();
            self.send_packet(&mut chunk, packet, last).await?;
            if last {
                break;
            }
        }
        self.confirm(chunk).await
    }

    /// Opens a write to the head of the chain; the chunkservers link the rest.
    async fn open_pipeline(&self, alloc: &ChunkAllocation) -> Result<Pipe, ClientError> {
        let (head, rest) = alloc
            .replicas
            .split_first()
            .ok_or(ErrorCode::NotEnoughServers {
                wanted: 1,
                alive: 0,
            })?;
        let mut conn = self
            .inner
            .pool
            .get(head, self.inner.options.connect_timeout)
            .await?;
        let id = conn.next_request_id();
        let open = Frame::request(
            id,
            Request::Chunk(ChunkRequest::WriteChunk {
                handle: alloc.handle,
                version: alloc.version,
                downstream: rest.to_vec(),
                token: alloc.token,
            }),
        );
        self.exchange(head, async { conn.send(&open).await.map_err(Into::into) })
            .await?;
        Ok(Pipe {
            conn,
            addr: head.clone(),
            id,
        })
    }

    /// Sends one packet of `chunk`, keeping it until the chunk is confirmed; a broken
    /// pipeline is replaced and everything so far sent again.
    async fn send_packet(
        &self,
        chunk: &mut ChunkWrite,
        packet: Bytes,
        last: bool,
    ) -> Result<(), ClientError> {
        chunk.size += packet.len() as u64;
        chunk.packets.push(packet.clone());
        chunk.complete = last;
        let Some(mut pipe) = chunk.pipe.take() else {
            return Err(ClientError::BadReply {
                addr: self.inner.master.clone(),
                reason: "no pipeline for the chunk".into(),
            });
        };
        let frame = Frame::request(pipe.id, Request::Chunk(ChunkRequest::WritePacket { last }))
            .with_payload(packet);
        match self
            .exchange(&pipe.addr, async {
                pipe.conn.send(&frame).await.map_err(Into::into)
            })
            .await
        {
            Ok(()) => {
                chunk.pipe = Some(pipe);
                Ok(())
            }
            Err(e) => self.reroute(chunk, e, &pipe.addr).await,
        }
    }

    /// After `cause` broke the pipeline headed by `head`: a new chain from the master
    /// (without the failed replica, at a new version), and every packet so far again.
    async fn reroute(
        &self,
        chunk: &mut ChunkWrite,
        mut cause: ClientError,
        head: &str,
    ) -> Result<(), ClientError> {
        let mut head = head.to_string();
        loop {
            chunk.attempts += 1;
            if chunk.attempts > MAX_CHUNK_ATTEMPTS {
                return Err(cause);
            }
            let failed = match &cause {
                ClientError::Remote(ErrorCode::ReplicaFailed { addr, .. }) => addr.clone(),
                _ => head.clone(),
            };
            tracing::info!(handle = %chunk.handle, %failed, error = %cause, "write pipeline broke; retrying on a new chain");
            if let Some(addr) = cause.unreachable() {
                self.inner.suspects.note(addr);
            }
            let retry = Request::Master(ClientToMaster::RetryChunk {
                upload: chunk.upload,
                handle: chunk.handle,
                failed: vec![failed],
            });
            let mut alloc = match self.master_call(retry).await {
                Ok(Response::ChunkAllocated(a)) => a,
                // No chain left: the pipeline's failure is the one worth reporting.
                Ok(_) | Err(_) => return Err(cause),
            };
            self.inner.suspects.last(&mut alloc.replicas);
            head = alloc.replicas.first().cloned().unwrap_or_default();
            let mut pipe = match self.open_pipeline(&alloc).await {
                Ok(p) => p,
                Err(e) => {
                    cause = e;
                    continue;
                }
            };
            let count = chunk.packets.len();
            let mut resent = Ok(());
            for (i, packet) in chunk.packets.iter().enumerate() {
                let last = chunk.complete && i + 1 == count;
                let frame =
                    Frame::request(pipe.id, Request::Chunk(ChunkRequest::WritePacket { last }))
                        .with_payload(packet.clone());
                resent = self
                    .exchange(&pipe.addr, async {
                        pipe.conn.send(&frame).await.map_err(Into::into)
                    })
                    .await;
                if resent.is_err() {
                    break;
                }
            }
            match resent {
                Ok(()) => {
                    chunk.pipe = Some(pipe);
                    return Ok(());
                }
                Err(e) => cause = e,
            }
        }
    }

    /// Waits for the whole chain to confirm a chunk, rerouting if it broke.
    async fn confirm(&self, mut chunk: ChunkWrite) -> Result<CommittedChunk, ClientError> {
        loop {
            let Some(mut pipe) = chunk.pipe.take() else {
                return Err(ClientError::BadReply {
                    addr: self.inner.master.clone(),
                    reason: "no pipeline for the chunk".into(),
                });
            };
            let reply = self
                .exchange(&pipe.addr, pipe.conn.recv_response(pipe.id, "WriteChunk"))
                .await;
            match reply {
                Ok((Response::ChunkWritten { handle, size }, _))
                    if handle == chunk.handle && size == chunk.size =>
                {
                    self.inner.suspects.clear(&pipe.addr);
                    self.inner.pool.put(&pipe.addr, pipe.conn);
                    return Ok(CommittedChunk { handle, size });
                }
                Ok((other, _)) => {
                    return Err(ClientError::Unexpected {
                        addr: pipe.addr,
                        got: other.name(),
                    })
                }
                Err(e) => self.reroute(&mut chunk, e, &pipe.addr).await?,
            }
        }
    }

    /// Writes the file at `path` to `writer`, reading several ranges at once from the
    /// replicas. Returns the number of bytes written.
    pub async fn get<W>(&self, path: &str, writer: W) -> Result<u64, ClientError>
    where
        W: AsyncWrite + Unpin,
    {
        self.get_from(path, 0, writer).await
    }

    /// Writes the file at `path` from byte `start` on to `writer`; returns the number
    /// of bytes written (none when `start` is at or past the end).
    pub async fn get_from<W>(&self, path: &str, start: u64, writer: W) -> Result<u64, ClientError>
    where
        W: AsyncWrite + Unpin,
    {
        self.get_range(path, start, u64::MAX, writer).await
    }

    /// Writes at most `len` bytes of the file at `path`, from byte `start`, to
    /// `writer`; returns the number written. Only those bytes are read.
    pub async fn get_range<W>(
        &self,
        path: &str,
        start: u64,
        len: u64,
        mut writer: W,
    ) -> Result<u64, ClientError>
    where
        W: AsyncWrite + Unpin,
    {
        let mut done = 0u64;
        let mut moved_on = 0;
        loop {
            let stat = self.stat(path).await?;
            if stat.kind == FileKind::Dir {
                return Err(ErrorCode::IsADirectory { path: stat.path }.into());
            }
            let from = start.saturating_add(done);
            let left = len.saturating_sub(done);
            match self
                .read_stat_range(&stat, from, left, &mut writer, &mut done)
                .await
            {
                // Every replica refused the version we asked for: if the chunk moved
                // to a new version meanwhile (a lease grant, a settle), read on from
                // where we are with fresh metadata; anything else is the answer.
                Err(e @ ClientError::NoReplica { .. }) if moved_on < MAX_VERSION_MOVES => {
                    let now = self.stat(path).await?;
                    let moved = now
                        .chunks
                        .iter()
                        .zip(&stat.chunks)
                        .any(|(a, b)| a.handle == b.handle && a.version != b.version);
                    if !moved {
                        return Err(e);
                    }
                    moved_on += 1;
                }
                Err(e) => return Err(e),
                Ok(()) => {
                    writer.flush().await.map_err(ClientError::Output)?;
                    return Ok(done);
                }
            }
        }
    }

    /// Reads at most `len` bytes from `start` of the file as `stat` described it (no
    /// master call: a reader that already holds the chunk list, as an open file of
    /// the mount does), several ranges at once. A replica that moved to a newer
    /// version answers `NoReplica`; stat again and retry then.
    pub async fn read_at(
        &self,
        stat: &FileStat,
        start: u64,
        len: u64,
    ) -> Result<Bytes, ClientError> {
        let end = start.saturating_add(len).min(stat.size);
        let want =
            usize::try_from(end.saturating_sub(start)).map_err(|_| ErrorCode::InvalidArgument {
                reason: "a read larger than memory".into(),
            })?;
        let mut out = Vec::with_capacity(want);
        self.read_into(stat, start, want as u64, &mut out).await?;
        Ok(Bytes::from(out))
    }

    /// Appends `len` bytes from `start` of the file `stat` describes to `out`;
    /// returns how many were read (fewer only past the end).
    pub(crate) async fn read_into(
        &self,
        stat: &FileStat,
        start: u64,
        len: u64,
        out: &mut Vec<u8>,
    ) -> Result<u64, ClientError> {
        let mut done = 0;
        if len > 0 {
            self.read_stat_range(stat, start, len, out, &mut done)
                .await?;
        }
        Ok(done)
    }

    /// Writes `len` bytes from `start` of the file `stat` describes to `writer`,
    /// counting what was written in `done` (also when it fails part-way).
    async fn read_stat_range<W>(
        &self,
        stat: &FileStat,
        start: u64,
        len: u64,
        writer: &mut W,
        done: &mut u64,
    ) -> Result<(), ClientError>
    where
        W: AsyncWrite + Unpin,
    {
        let end = start.saturating_add(len);
        let unit_len = self.inner.options.read_unit.max(1);
        let mut units = Vec::new();
        let mut chunk_start = 0u64;
        for chunk in &stat.chunks {
            let chunk = Arc::new(chunk.clone());
            let mut offset = start.saturating_sub(chunk_start);
            let stop = end.saturating_sub(chunk_start).min(chunk.size);
            chunk_start += chunk.size;
            while offset < stop {
                let len = unit_len.min(stop - offset);
                units.push(Unit {
                    index: units.len(),
                    chunk: chunk.clone(),
                    offset,
                    len,
                });
                offset += len;
            }
        }
        let mut pieces = futures::stream::iter(units.into_iter().map(|u| self.read_unit(u)))
            .buffered(self.inner.options.read_parallelism.max(1));
        while let Some(parts) = pieces.try_next().await? {
            for part in parts {
                writer.write_all(&part).await.map_err(ClientError::Output)?;
                *done += part.len() as u64;
            }
        }
        Ok(())
    }

    /// Reads one range, trying each replica in turn (starting at a different one per
    /// unit so that a get spreads over all of them).
    async fn read_unit(&self, unit: Unit) -> Result<Vec<Bytes>, ClientError> {
        let replicas = &unit.chunk.replicas;
        if replicas.is_empty() {
            return Err(ClientError::NoReplica {
                handle: unit.chunk.handle,
                last: "no live replica is known to the master".into(),
            });
        }
        let mut order: Vec<String> = (0..replicas.len())
            .map(|i| replicas[(unit.index + i) % replicas.len()].clone())
            .collect();
        self.inner.suspects.last(&mut order);
        let mut last = String::new();
        for addr in &order {
            match self.read_range(addr, &unit).await {
                Ok(parts) => {
                    self.inner.suspects.clear(addr);
                    return Ok(parts);
                }
                Err(e) => {
                    if let Some(addr) = e.unreachable() {
                        self.inner.suspects.note(addr);
                    }
                    tracing::info!(%addr, handle = %unit.chunk.handle, error = %e, "replica read failed; trying the next");
                    last = format!("{addr}: {e}");
                }
            }
        }
        Err(ClientError::NoReplica {
            handle: unit.chunk.handle,
            last,
        })
    }

    /// Bytes from `addr` failed their checksums: asks it to verify the replica
    /// itself, which quarantines it there if the damage is on its disk (and changes
    /// nothing if the bytes were damaged on the way). Best effort: the read moves on
    /// to another replica whatever the answer, and the scrubber would find the
    /// damage in time.
    async fn report_damage(&self, addr: &str, unit: &Unit) {
        let digest = Request::Chunk(ChunkRequest::Digest {
            handle: unit.chunk.handle,
            version: unit.chunk.version,
            token: unit.chunk.token,
        });
        match self.server_call(addr, digest).await {
            Ok(_) => {
                tracing::info!(%addr, handle = %unit.chunk.handle, "bytes damaged on the way; the replica checks out");
            }
            Err(e) => {
                tracing::info!(%addr, handle = %unit.chunk.handle, error = %e, "damaged replica reported");
            }
        }
    }

    async fn read_range(&self, addr: &str, unit: &Unit) -> Result<Vec<Bytes>, ClientError> {
        let mut conn = self
            .inner
            .pool
            .get(addr, self.inner.options.connect_timeout)
            .await?;
        let id = conn.next_request_id();
        let request = Frame::request(
            id,
            Request::Chunk(ChunkRequest::ReadStored {
                handle: unit.chunk.handle,
                version: unit.chunk.version,
                offset: unit.offset,
                len: unit.len,
                token: unit.chunk.token,
            }),
        );
        self.exchange(addr, async {
            conn.send(&request).await.map_err(Into::into)
        })
        .await?;
        let mut parts = Vec::new();
        let mut got = 0u64;
        let want_end = unit.offset + unit.len;
        // Frames carry whole checksum blocks from the block holding `unit.offset` on.
        let mut expect = unit.offset - unit.offset % CHECKSUM_BLOCK;
        let bad_reply = |reason: String| ClientError::BadReply {
            addr: addr.to_string(),
            reason,
        };
        loop {
            let (response, payload) = self
                .exchange(addr, conn.recv_response(id, "ReadChunk"))
                .await?;
            let (last, offset, checksums) = match response {
                Response::ReadData {
                    last,
                    offset,
                    checksums,
                } => (last, offset, checksums),
                other => {
                    return Err(ClientError::Unexpected {
                        addr: addr.to_string(),
                        got: other.name(),
                    })
                }
            };
            if offset != expect {
                return Err(bad_reply(format!("data at {offset}, expected {expect}")));
            }
            // The only check these bytes get: the chunkserver sends them as stored.
            if let Err(b) = checksum::verify_blocks(&payload, &checksums) {
                drop(conn);
                self.report_damage(addr, unit).await;
                return Err(ClientError::Remote(ErrorCode::ChecksumMismatch {
                    handle: unit.chunk.handle,
                    offset: offset + b as u64 * CHECKSUM_BLOCK,
                }));
            }
            let frame_end = offset + payload.len() as u64;
            expect = frame_end;
            let from = unit.offset.max(offset);
            let to = want_end.min(frame_end);
            if to > from {
                parts.push(payload.slice((from - offset) as usize..(to - offset) as usize));
                got += to - from;
            }
            if last {
                break;
            }
        }
        if got != unit.len {
            return Err(bad_reply(format!("{got} bytes instead of {}", unit.len)));
        }
        self.inner.pool.put(addr, conn);
        Ok(parts)
    }
}

/// How many times a request that only reads goes to the master before its
/// timeout or broken connection is the caller's error.
const READ_ATTEMPTS: u32 = 3;

/// Whether an exchange failed on the way (no answer in time, a connection broken),
/// as a lossy network fails one now and then; not a refusal, which says at once and
/// for sure that nobody listens there.
fn lost_on_the_way(e: &ClientError) -> bool {
    match e {
        ClientError::Timeout { .. } => true,
        ClientError::Peer { source, .. } => !matches!(
            source,
            ProtocolError::Codec(dfs_protocol::CodecError::Io(io))
                if io.kind() == std::io::ErrorKind::ConnectionRefused
        ),
        _ => false,
    }
}

/// Whether a failed master exchange means the master is gone (refused, or an idle
/// pooled connection found closed by its restart).
fn master_gone(e: &ProtocolError) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionRefused, ConnectionReset, UnexpectedEof};
    match e {
        ProtocolError::Closed => true,
        ProtocolError::Codec(dfs_protocol::CodecError::Io(io)) => matches!(
            io.kind(),
            ConnectionRefused | ConnectionReset | BrokenPipe | UnexpectedEof
        ),
        _ => false,
    }
}

/// Reads up to `min(packet, limit)` bytes, fewer only at the end of the input.
async fn read_packet<R: AsyncRead + Unpin>(
    reader: &mut R,
    packet: u64,
    limit: u64,
) -> Result<Bytes, ClientError> {
    let want = packet.min(limit) as usize;
    let mut buf = BytesMut::with_capacity(want);
    while buf.len() < want {
        let room = want - buf.len();
        let n = reader
            .read_buf(&mut (&mut buf).limit(room))
            .await
            .map_err(ClientError::Input)?;
        if n == 0 {
            break;
        }
    }
    Ok(buf.freeze())
}
