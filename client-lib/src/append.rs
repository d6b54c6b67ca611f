//! Record append: `Client::append_record` and `Client::append`, and the lengths of
//! chunks being appended to.
//!
//! A record goes to the primary holding the lease on the file's last chunk, which
//! picks its offset and answers once every replica holds it. When the chunk is full,
//! or the append failed, the client tells the master why and gets a new target.
//!
//! The guarantee: each record of up to `max_append` bytes appears whole, at one
//! offset, never interleaved with another. An acknowledged record is never lost. A
//! failed attempt may still have reached the replicas, so a retried record can
//! appear twice; without failures every record appears exactly once.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dfs_protocol::{
    AppendLease, AppendReport, ChunkInfo, ChunkVersion, ErrorCode, FileStat, Frame, Request,
    Response, PACKET_SIZE,
};
use dfs_protocol::{ChunkRequest, ClientToMaster};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::client::Client;
use crate::error::ClientError;

/// Failed attempts at one record (each on a new lease) before the append fails.
const MAX_APPEND_ATTEMPTS: u32 = 8;
/// Full chunks one record may meet in a row (others' records can fill each new one).
const MAX_FULL_CHUNKS: u32 = 64;

/// How to append.
#[derive(Clone, Copy, Debug)]
pub struct AppendOptions {
    /// Create the file (empty) when it does not exist.
    pub create: bool,
    /// Replicas per chunk of a file created here; the cluster default when `None`.
    pub replication: Option<u32>,
}

impl Default for AppendOptions {
    fn default() -> Self {
        AppendOptions {
            create: true,
            replication: None,
        }
    }
}

/// Why one attempt at a record did not land.
enum Miss {
    Full(u64),
    /// Worth another lease; `addr` is the replica that failed, if known.
    Retry(Option<String>, ClientError),
    /// The primary is busy (its memory budget for records is spent): the same
    /// lease, a moment later.
    Busy(ClientError),
    Fatal(ClientError),
}

impl Client {
    fn cached_lease(&self, path: &str) -> Option<AppendLease> {
        self.inner
            .leases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(path)
            .cloned()
    }

    fn cache_lease(&self, path: &str, lease: Option<AppendLease>) {
        let mut leases = self
            .inner
            .leases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match lease {
            Some(l) => {
                leases.insert(path.to_string(), l);
            }
            None => {
                leases.remove(path);
            }
        }
    }

    async fn append_target(
        &self,
        path: &str,
        options: AppendOptions,
        report: Option<AppendReport>,
    ) -> Result<AppendLease, ClientError> {
        let request = Request::Master(ClientToMaster::AppendTarget {
            path: path.to_string(),
            create: options.create,
            replication: options.replication,
            report,
        });
        match self.master_call(request).await? {
            Response::AppendLease(lease) => {
                self.cache_lease(path, Some(lease.clone()));
                Ok(lease)
            }
            other => Err(self.unexpected(&other)),
        }
    }

    /// The largest record `append_record` takes for `path` (the cluster's `max_append`).
    pub async fn max_append(&self, path: &str, options: AppendOptions) -> Result<u64, ClientError> {
        if let Some(l) = self.cached_lease(path) {
            return Ok(l.max_append);
        }
        Ok(self.append_target(path, options, None).await?.max_append)
    }

    /// Appends one record atomically and returns the file offset where it landed.
    /// Records from any number of clients never interleave; a record larger than
    /// `max_append` is refused (see [`Client::append`] for splitting).
    pub async fn append_record(
        &self,
        path: &str,
        record: Bytes,
        options: AppendOptions,
    ) -> Result<u64, ClientError> {
        if record.is_empty() {
            return Err(ErrorCode::InvalidArgument {
                reason: "a record cannot be empty".into(),
            }
            .into());
        }
        let mut report = None;
        let mut failures = 0;
        let mut fulls = 0;
        loop {
            let lease = match (report.take(), self.cached_lease(path)) {
                (None, Some(lease)) => lease,
                (report, _) => match self.append_target(path, options, report).await {
                    Ok(lease) => lease,
                    // Too few chunkservers is often a moment after a master restart,
                    // before they all registered again.
                    Err(e)
                        if (e.is_retryable()
                            || matches!(
                                e,
                                ClientError::Remote(ErrorCode::NotEnoughServers { .. })
                            ))
                            && failures + 1 < MAX_APPEND_ATTEMPTS =>
                    {
                        failures += 1;
                        tracing::info!(path, error = %e, "no append target yet; retrying");
                        tokio::time::sleep(backoff(failures)).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            if record.len() as u64 > lease.max_append {
                return Err(ErrorCode::InvalidArgument {
                    reason: format!(
                        "a record of {} bytes is larger than the cluster's max append ({} bytes)",
                        record.len(),
                        lease.max_append
                    ),
                }
                .into());
            }
            match self.send_record(&lease, &record).await {
                Ok(offset) => return Ok(lease.file_offset + offset),
                Err(Miss::Full(size)) => {
                    fulls += 1;
                    if fulls > MAX_FULL_CHUNKS {
                        return Err(ErrorCode::Unavailable {
                            reason: format!("{fulls} chunks in a row were full"),
                        }
                        .into());
                    }
                    report = Some(AppendReport::Full {
                        handle: lease.handle,
                        version: lease.version,
                        size,
                    });
                }
                Err(Miss::Retry(addr, e)) => {
                    failures += 1;
                    if failures >= MAX_APPEND_ATTEMPTS {
                        return Err(e);
                    }
                    tracing::info!(path, handle = %lease.handle, failed = ?addr, error = %e, "append failed; asking for a new lease");
                    report = Some(AppendReport::Failed {
                        handle: lease.handle,
                        version: lease.version,
                        addr,
                    });
                    tokio::time::sleep(backoff(failures)).await;
                }
                Err(Miss::Busy(e)) => {
                    failures += 1;
                    if failures >= MAX_APPEND_ATTEMPTS {
                        return Err(e);
                    }
                    tracing::debug!(path, error = %e, "primary busy; retrying");
                    tokio::time::sleep(backoff(failures)).await;
                }
                Err(Miss::Fatal(e)) => return Err(e),
            }
        }
    }

    /// Appends each of `records` atomically with up to `in_flight` of them sent at
    /// once, and returns their offsets in the order given.
    ///
    /// Records in flight together are concurrent appends: each lands whole, but not
    /// necessarily in the order given (the offsets say where each went). In return
    /// the primary can take several into one batch, so they share its writes and
    /// fsyncs: one appender with 1 MiB records and four in flight is several times
    /// faster than with one (docs/benchmarks.md). `in_flight` 1 keeps the order.
    pub async fn append_records<I>(
        &self,
        path: &str,
        records: I,
        options: AppendOptions,
        in_flight: usize,
    ) -> Result<Vec<u64>, ClientError>
    where
        I: IntoIterator<Item = Bytes>,
    {
        use futures::{StreamExt, TryStreamExt};
        futures::stream::iter(records)
            .map(|record| self.append_record(path, record, options))
            .buffered(in_flight.max(1))
            .try_collect()
            .await
    }

    /// Appends everything `reader` yields, cut into records of `max_append` bytes
    /// (only each record is atomic). Returns the bytes appended.
    pub async fn append<R>(
        &self,
        path: &str,
        mut reader: R,
        options: AppendOptions,
    ) -> Result<u64, ClientError>
    where
        R: AsyncRead + Unpin,
    {
        let max = self.max_append(path, options).await?;
        let mut total = 0u64;
        loop {
            let mut buf = BytesMut::with_capacity(max.min(64 << 20) as usize);
            while (buf.len() as u64) < max {
                let room = (max - buf.len() as u64) as usize;
                let n = (&mut reader)
                    .take(room as u64)
                    .read_buf(&mut buf)
                    .await
                    .map_err(ClientError::Input)?;
                if n == 0 {
                    break;
                }
            }
            if buf.is_empty() {
                if total == 0 {
                    // Nothing to append: still create the file, as asked.
                    return Ok(0);
                }
                return Ok(total);
            }
            let n = buf.len() as u64;
            self.append_record(path, buf.freeze(), options).await?;
            total += n;
            if n < max {
                return Ok(total);
            }
        }
    }

    /// One attempt: the record to the primary, in packets, and its answer.
    async fn send_record(&self, lease: &AppendLease, record: &Bytes) -> Result<u64, Miss> {
        let addr = lease.primary.as_str();
        let opts = &self.inner.options;
        // A dial failure, a timeout or a reset says nothing about which replica failed
        // (the primary may be alive and merely unreachable from here): the master is
        // told the lease failed, and finds a dead primary itself when it grants again.
        // Only a replica the primary saw fail (`ReplicaFailed`) is named.
        let failed = |e: ClientError| Miss::Retry(None, e);
        let mut conn = self
            .inner
            .pool
            .get(addr, opts.connect_timeout)
            .await
            .map_err(failed)?;
        let id = conn.next_request_id();
        let exchange = async {
            let head = Request::Chunk(ChunkRequest::Append {
                handle: lease.handle,
                version: lease.version,
                len: record.len() as u64,
                token: lease.token,
            });
            conn.send(&Frame::request(id, head)).await?;
            let mut at = 0;
            while at < record.len() {
                let end = (at + PACKET_SIZE).min(record.len());
                let packet = Frame::request(
                    id,
                    Request::Chunk(ChunkRequest::WritePacket {
                        last: end == record.len(),
                    }),
                )
                .with_payload(record.slice(at..end));
                conn.send(&packet).await?;
                at = end;
            }
            conn.recv_response(id, "Append").await
        };
        let answer = self.exchange(addr, exchange).await;
        match answer {
            Ok((Response::Appended { offset }, _)) => {
                self.inner.pool.put(addr, conn);
                Ok(offset)
            }
            Ok((other, _)) => Err(failed(ClientError::Unexpected {
                addr: addr.to_string(),
                got: other.name(),
            })),
            Err(ClientError::Remote(code)) => {
                self.inner.pool.put(addr, conn);
                Err(match code {
                    ErrorCode::ChunkFull { size, .. } => Miss::Full(size),
                    ErrorCode::NotPrimary { .. } | ErrorCode::StaleVersion { .. } => {
                        Miss::Retry(None, code.into())
                    }
                    ErrorCode::ReplicaFailed { ref addr, .. } => {
                        Miss::Retry(Some(addr.clone()), code.clone().into())
                    }
                    ErrorCode::Unavailable { .. } => Miss::Busy(code.into()),
                    code if code.is_retryable() => failed(code.into()),
                    code => Miss::Fatal(code.into()),
                })
            }
            Err(e) => Err(failed(e)),
        }
    }

    /// Replaces the sizes of chunks being appended to with what their replicas
    /// acknowledged: the primary's word, else the shortest replica's.
    pub(crate) async fn settle_sizes(&self, stat: &mut FileStat) -> Result<(), ClientError> {
        let mut changed = false;
        for chunk in stat.chunks.iter_mut().filter(|c| c.open) {
            chunk.size = self.open_chunk_len(chunk).await?;
            changed = true;
        }
        if changed {
            stat.size = stat.chunks.iter().map(|c| c.size).sum();
        }
        Ok(())
    }

    async fn open_chunk_len(&self, chunk: &ChunkInfo) -> Result<u64, ClientError> {
        if let Some(primary) = &chunk.primary {
            match self.chunk_length(primary, chunk).await {
                Ok(size) => return Ok(size),
                Err(e) => tracing::info!(%primary, error = %e, "primary did not say the length"),
            }
        }
        let mut shortest = None;
        let mut moved_on = None;
        let mut last = String::from("no live replica is known to the master");
        for addr in &chunk.replicas {
            match self.chunk_length(addr, chunk).await {
                Ok(size) => shortest = Some(shortest.map_or(size, |s: u64| s.min(size))),
                Err(e) => {
                    if moved_past(&e, chunk.version) {
                        moved_on = Some(e);
                    } else {
                        last = format!("{addr}: {e}");
                    }
                }
            }
        }
        match (shortest, moved_on) {
            (Some(size), _) => Ok(size),
            // The chunk got a new version after the master answered (a lease moved,
            // a replica was added): the caller asks the master again.
            (None, Some(e)) => Err(e),
            (None, None) => Err(ClientError::NoReplica {
                handle: chunk.handle,
                last,
            }),
        }
    }

    async fn chunk_length(&self, addr: &str, chunk: &ChunkInfo) -> Result<u64, ClientError> {
        let opts = &self.inner.options;
        let mut conn = self.inner.pool.get(addr, opts.connect_timeout).await?;
        let request = Request::Chunk(ChunkRequest::ChunkLength {
            handle: chunk.handle,
            version: chunk.version,
            token: chunk.token,
        });
        let answer = self
            .exchange(addr, async { conn.call(request).await })
            .await?;
        self.inner.pool.put(addr, conn);
        match answer {
            Response::ChunkSize { size } => Ok(size),
            other => Err(ClientError::Unexpected {
                addr: addr.to_string(),
                got: other.name(),
            }),
        }
    }
}

/// Whether `e` says a replica holds the chunk at a newer version than `asked`: the
/// chunk map the question came from is out of date, not the replica damaged.
fn moved_past(e: &ClientError, asked: ChunkVersion) -> bool {
    matches!(e, ClientError::Remote(ErrorCode::StaleVersion { have, want, .. })
        if *want == asked && *have > *want)
}

pub(crate) fn backoff(failures: u32) -> Duration {
    Duration::from_millis(50 << failures.min(5))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dfs_protocol::ChunkHandle;

    #[test]
    fn only_a_newer_version_than_asked_means_the_chunk_moved_on() {
        let handle = ChunkHandle::random();
        let stale = |have, want| {
            ClientError::Remote(ErrorCode::StaleVersion {
                handle,
                have: ChunkVersion(have),
                want: ChunkVersion(want),
            })
        };
        assert!(moved_past(&stale(3, 2), ChunkVersion(2)));
        assert!(
            !moved_past(&stale(1, 2), ChunkVersion(2)),
            "a replica behind"
        );
        assert!(
            !moved_past(&stale(3, 2), ChunkVersion(1)),
            "another question's"
        );
        let other = ClientError::Remote(ErrorCode::UnknownChunk { handle });
        assert!(!moved_past(&other, ChunkVersion(2)));
    }
}
