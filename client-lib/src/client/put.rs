//! The put path: a file streamed into chunks, each pipelined down its chain of
//! replicas, kept until the chain confirms it, and committed as one new file (or a
//! rewrite) at the end.

use bytes::{BufMut, Bytes, BytesMut};
use dfs_protocol::{
    ChunkAllocation, ChunkHandle, CommittedChunk, ErrorCode, FileKind, Frame, Request, RequestId,
    Response, UploadId, PACKET_SIZE,
};
use dfs_protocol::{ChunkRequest, ClientToMaster};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{Client, PutOptions};
use crate::error::ClientError;
use crate::pool::Conn;

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

impl Client {
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
