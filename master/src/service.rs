//! Request handling: what the master answers to each request.
//!
//! All state sits behind one mutex that is never held across an await. A mutation is
//! applied under the lock and made durable (`Store::flush`) after it is released and
//! before the client is answered.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use dfs_protocol::{
    ChunkAllocation, ChunkHandle, ChunkInfo, ChunkVersion, ClusterStatus, CommittedChunk,
    ErrorCode, FileStat, Request, Response, ServerId, UploadId,
};

use crate::chunkmap::ChunkMap;
use crate::config::MasterConfig;
use crate::error::OpError;
use crate::namespace::Namespace;
use crate::store::{Store, StoredChunk};

/// An upload not touched for this long is forgotten (its client is gone).
const UPLOAD_IDLE_LIMIT: Duration = Duration::from_secs(3600);

#[derive(Debug)]
struct Upload {
    path: String,
    replication: u32,
    overwrite: bool,
    allocated: HashMap<ChunkHandle, (ChunkVersion, Vec<ServerId>)>,
    touched: Instant,
}

#[derive(Debug)]
struct State {
    ns: Namespace,
    map: ChunkMap,
    uploads: HashMap<UploadId, Upload>,
}

/// The master's state and its request handler.
#[derive(Debug)]
pub struct Master {
    config: MasterConfig,
    store: Store,
    state: Mutex<State>,
}

impl Master {
    pub fn new(config: MasterConfig, store: Store, ns: Namespace) -> Master {
        let map = ChunkMap::new(config.dead_after);
        Master {
            config,
            store,
            state: Mutex::new(State {
                ns,
                map,
                uploads: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic under the lock is a bug; the state it guards is still the best we have.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Answers one request.
    pub async fn handle(&self, request: Request) -> Result<Response, OpError> {
        match request {
            Request::Mkdir { path, parents } => {
                self.lock().ns.mkdir(&path, parents)?;
                self.store.flush().await?;
                Ok(Response::Ok)
            }
            Request::List { path } => Ok(Response::Listing {
                entries: self.lock().ns.list(&path)?,
            }),
            Request::Stat { path } => self.stat(&path).map(Response::Stat),
            Request::Delete { path, recursive } => {
                {
                    let mut st = self.lock();
                    let freed = st.ns.delete(&path, recursive)?;
                    for h in freed {
                        st.map.forget(h);
                    }
                }
                self.store.flush().await?;
                Ok(Response::Ok)
            }
            Request::BeginPut {
                path,
                replication,
                overwrite,
            } => self.begin_put(&path, replication, overwrite),
            Request::AllocateChunk { upload } => self.allocate(upload),
            Request::CommitPut { upload, chunks } => {
                self.commit(upload, chunks)?;
                self.store.flush().await?;
                Ok(Response::Ok)
            }
            Request::AbortPut { upload } => {
                self.lock().uploads.remove(&upload);
                Ok(Response::Ok)
            }
            Request::Status => Ok(Response::Status(self.status())),
            Request::Register {
                server,
                addr,
                capacity,
                used,
                chunks,
            } => {
                tracing::info!(%server, %addr, chunks = chunks.len(), "chunkserver registered");
                self.lock()
                    .map
                    .register(server, addr, capacity, used, chunks, Instant::now());
                Ok(Response::Registered)
            }
            Request::Heartbeat {
                server,
                capacity,
                used,
                added,
                removed,
            } => {
                let known = self.lock().map.heartbeat(
                    server,
                    capacity,
                    used,
                    added,
                    removed,
                    Instant::now(),
                );
                Ok(Response::HeartbeatAck {
                    reregister: !known,
                    delete: Vec::new(),
                })
            }
            other @ (Request::Hello { .. }
            | Request::WriteChunk { .. }
            | Request::WritePacket { .. }
            | Request::ReadChunk { .. }) => Err(ErrorCode::BadRequest {
                reason: format!("{} is not a master request", other.name()),
            }
            .into()),
        }
    }

    fn stat(&self, path: &str) -> Result<FileStat, OpError> {
        let st = self.lock();
        let (path, inode) = st.ns.stat(path)?;
        let now = Instant::now();
        let chunks = inode
            .chunks
            .iter()
            .map(|c| ChunkInfo {
                handle: c.handle,
                version: c.version,
                size: c.size,
                replicas: st
                    .map
                    .replicas(&c.handle, c.version, now)
                    .into_iter()
                    .map(|(_, addr)| addr)
                    .collect(),
            })
            .collect();
        Ok(FileStat {
            path,
            kind: inode.kind,
            size: inode.size,
            replication: inode.replication,
            mtime: inode.mtime,
            chunks,
        })
    }

    fn begin_put(
        &self,
        path: &str,
        replication: Option<u32>,
        overwrite: bool,
    ) -> Result<Response, OpError> {
        let replication = replication.unwrap_or(self.config.replication);
        if !(1..=crate::config::MAX_REPLICATION).contains(&replication) {
            return Err(ErrorCode::InvalidArgument {
                reason: format!(
                    "replication must be 1..={}, not {replication}",
                    crate::config::MAX_REPLICATION
                ),
            }
            .into());
        }
        let mut st = self.lock();
        let path = st.ns.check_create(path, overwrite)?;
        let now = Instant::now();
        st.uploads
            .retain(|_, u| now.saturating_duration_since(u.touched) < UPLOAD_IDLE_LIMIT);
        let upload = UploadId::random();
        st.uploads.insert(
            upload,
            Upload {
                path,
                replication,
                overwrite,
                allocated: HashMap::new(),
                touched: now,
            },
        );
        Ok(Response::PutStarted {
            upload,
            chunk_size: self.config.chunk_size,
            replication,
        })
    }

    fn allocate(&self, upload: UploadId) -> Result<Response, OpError> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let now = Instant::now();
        let up = st
            .uploads
            .get_mut(&upload)
            .ok_or(ErrorCode::UnknownUpload)?;
        up.touched = now;
        let chosen = st.map.place(up.replication, self.config.chunk_size, now)?;
        let handle = ChunkHandle::random();
        let version = ChunkVersion::FIRST;
        let (ids, replicas): (Vec<ServerId>, Vec<String>) = chosen.into_iter().unzip();
        up.allocated.insert(handle, (version, ids));
        tracing::debug!(%handle, ?replicas, "chunk allocated");
        Ok(Response::ChunkAllocated(ChunkAllocation {
            handle,
            version,
            replicas,
        }))
    }

    fn commit(&self, upload: UploadId, chunks: Vec<CommittedChunk>) -> Result<(), OpError> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let up = st.uploads.get(&upload).ok_or(ErrorCode::UnknownUpload)?;
        let mut stored = Vec::with_capacity(chunks.len());
        for c in &chunks {
            let (version, _) =
                up.allocated
                    .get(&c.handle)
                    .ok_or_else(|| ErrorCode::BadRequest {
                        reason: format!("chunk {} was not allocated to this upload", c.handle),
                    })?;
            if c.size > self.config.chunk_size {
                return Err(ErrorCode::BadRequest {
                    reason: format!("chunk {} is larger than the chunk size", c.handle),
                }
                .into());
            }
            stored.push(StoredChunk {
                handle: c.handle,
                version: *version,
                size: c.size,
            });
        }
        let replaced = st
            .ns
            .commit_file(&up.path, up.overwrite, up.replication, stored)?;
        let Some(up) = st.uploads.remove(&upload) else {
            return Ok(());
        };
        for h in replaced {
            st.map.forget(h);
        }
        for c in &chunks {
            if let Some((version, chain)) = up.allocated.get(&c.handle) {
                st.map.record_chain(c.handle, *version, chain);
            }
        }
        tracing::info!(path = %up.path, chunks = chunks.len(), "file committed");
        Ok(())
    }

    fn status(&self) -> ClusterStatus {
        let st = self.lock();
        let now = Instant::now();
        let under_replicated = st
            .ns
            .chunks()
            .filter(|(h, meta)| {
                let have = st.map.replicas(h, meta.version, now).len();
                u32::try_from(have).unwrap_or(u32::MAX) < meta.replication
            })
            .count() as u64;
        ClusterStatus {
            chunkservers: st.map.status(now),
            files: st.ns.file_count(),
            chunks: st.ns.chunks().count() as u64,
            under_replicated,
            chunk_size: self.config.chunk_size,
            replication: self.config.replication,
        }
    }
}

impl Master {
    pub fn max_connections(&self) -> usize {
        self.config.max_connections
    }
}
