//! One open file of the mount: what the cluster had when it was opened, and what
//! this mount changed since. Shared by every handle open on the same inode.
//!
//! Writes take one of two paths:
//! - a file written from offset 0 of an empty file, in order, streams through the
//!   put pipeline as it is written (nothing is spooled locally);
//! - any other write lands in a shadow file in the cache directory (unlinked, so
//!   nothing is left behind) and its range is remembered. The kernel's page cache
//!   keeps the shadow in memory while it can; memory stays bounded whatever is
//!   written.
//!
//! On flush, fsync or the last close, the changes are committed: the stream is
//! ended, or the touched chunks are written again as new chunks and the chunk
//! list swapped in one logged step (`Client::rewrite_file`). Readers elsewhere see
//! the old file or the new one, never a mix.

use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dfs_client::rewrite::NewBytes;
use dfs_client::{Client, ClientError, ErrorCode, FileStat};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::ranges::RangeSet;
use crate::readahead::ReadAhead;

/// Writes queued to a streaming put before a write waits for the pipeline.
const STREAM_QUEUE: usize = 16;

/// A put being fed by in-order writes.
struct Stream {
    tx: mpsc::Sender<Bytes>,
    task: JoinHandle<Result<u64, ClientError>>,
    /// Bytes handed to the put so far (the next in-order write's offset).
    at: u64,
}

pub struct OpenFile {
    /// The file as the cluster has it (at open, or after this mount's last commit).
    pub base: FileStat,
    /// The size with this mount's changes.
    pub size: u64,
    /// Bytes of `base` still part of the file (a cut lowers it; zeros beyond).
    old_valid: u64,
    dirty: RangeSet,
    shadow: Option<Arc<std::fs::File>>,
    stream: Option<Stream>,
    readahead: ReadAhead,
    /// Seconds since the epoch of this mount's last change, until it is committed.
    pub changed_at: Option<u64>,
}

/// What an open file needs from the mount to do its work.
pub struct Context<'a> {
    pub client: &'a Client,
    pub cache_dir: &'a Path,
    pub send_timeout: Duration,
    pub readahead: &'a crate::readahead::Budget,
    pub tracker: &'a tokio_util::task::TaskTracker,
}

impl OpenFile {
    pub fn new(base: FileStat) -> OpenFile {
        OpenFile {
            size: base.size,
            old_valid: base.size,
            base,
            dirty: RangeSet::default(),
            shadow: None,
            stream: None,
            readahead: ReadAhead::default(),
            changed_at: None,
        }
    }

    /// Starts over from `base` (after changes made around this open file, such as
    /// record appends).
    pub fn reset(&mut self, base: FileStat) {
        *self = OpenFile::new(base);
    }

    /// Whether anything awaits a commit.
    pub fn pending(&self) -> bool {
        self.stream.is_some()
            || !self.dirty.is_empty()
            || self.size != self.base.size
            || self.old_valid < self.base.size
    }

    pub async fn write(
        &mut self,
        cx: &Context<'_>,
        path: &str,
        offset: u64,
        data: Bytes,
    ) -> Result<(), ClientError> {
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or(ErrorCode::InvalidArgument {
                reason: "a write past the largest file size".into(),
            })?;
        self.readahead.clear();
        self.changed_at = Some(now());
        if let Some(stream) = &mut self.stream {
            if offset == stream.at {
                let sent =
                    tokio::time::timeout(cx.send_timeout, stream.tx.send(data.clone())).await;
                if matches!(sent, Ok(Ok(()))) {
                    stream.at = end;
                    self.size = end;
                    return Ok(());
                }
                // The put ended (its error is the answer) or stalled past the deadline.
                return self.end_stream(cx, path).await.and(Err(ErrorCode::Io {
                    reason: "the streaming write stopped".into(),
                }
                .into()));
            }
            // Out of order: what streamed so far is committed, and the rest of the
            // changes go through the shadow file.
            self.end_stream(cx, path).await?;
        }
        if offset == 0 && self.size == 0 && self.base.size == 0 && self.dirty.is_empty() {
            self.start_stream(cx, path);
            return Box::pin(self.write(cx, path, offset, data)).await;
        }
        let shadow = self.shadow(cx)?;
        blocking(move || shadow.write_all_at(&data, offset)).await?;
        self.dirty.insert(offset..end);
        self.size = self.size.max(end);
        Ok(())
    }

    /// Cuts or extends the file to `len` (committed with the other changes).
    pub async fn truncate(
        &mut self,
        cx: &Context<'_>,
        path: &str,
        len: u64,
    ) -> Result<(), ClientError> {
        if self.stream.as_ref().is_some_and(|s| s.at == len) {
            return Ok(());
        }
        if self.stream.is_some() {
            self.end_stream(cx, path).await?;
        }
        self.readahead.clear();
        self.changed_at = Some(now());
        self.old_valid = self.old_valid.min(len);
        self.dirty.cut(len);
        self.size = len;
        Ok(())
    }

    pub async fn read(
        &mut self,
        cx: &Context<'_>,
        path: &str,
        offset: u64,
        len: u64,
    ) -> Result<Bytes, ClientError> {
        if self.stream.is_some() {
            self.end_stream(cx, path).await?;
        }
        let end = offset.saturating_add(len).min(self.size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        if self.pending() {
            let mut source = self.composer(cx);
            return source.bytes(offset, end - offset).await;
        }
        match self
            .readahead
            .read(cx, &self.base, offset, end - offset)
            .await
        {
            Err(e) if e.is_retryable() => {
                // Tokens expire and replicas move to new versions: the chunk list
                // again, then once more.
                self.readahead.clear();
                let fresh = cx.client.stat(path).await?;
                if !self.pending() {
                    self.size = fresh.size;
                    self.old_valid = fresh.size;
                    self.base = fresh;
                }
                let end = offset.saturating_add(len).min(self.size);
                self.readahead
                    .read(cx, &self.base, offset, end.saturating_sub(offset))
                    .await
            }
            other => other,
        }
    }

    /// Makes this mount's changes visible in the cluster.
    pub async fn commit(&mut self, cx: &Context<'_>, path: &str) -> Result<(), ClientError> {
        if self.stream.is_some() {
            return self.end_stream(cx, path).await;
        }
        if !self.pending() {
            return Ok(());
        }
        let touched = {
            let mut t = self.dirty.to_vec();
            if self.old_valid < self.base.size {
                t.push(self.old_valid..u64::MAX);
            }
            t
        };
        let mut source = self.composer(cx);
        cx.client
            .rewrite_file(path, &self.base, self.size, &touched, &mut source)
            .await?;
        self.settle(cx, path).await
    }

    /// The file after a commit: the cluster's view, no local changes.
    async fn settle(&mut self, cx: &Context<'_>, path: &str) -> Result<(), ClientError> {
        let fresh = cx.client.stat(path).await?;
        self.size = fresh.size;
        self.old_valid = fresh.size;
        self.base = fresh;
        self.dirty.clear();
        self.changed_at = None;
        self.readahead.clear();
        if let Some(shadow) = &self.shadow {
            let shadow = shadow.clone();
            blocking(move || shadow.set_len(0)).await?;
        }
        Ok(())
    }

    /// Drops everything not committed (the file is gone from the namespace).
    pub fn discard(&mut self) {
        if let Some(s) = self.stream.take() {
            s.task.abort();
        }
        self.dirty.clear();
        self.size = self.base.size;
        self.old_valid = self.base.size;
    }

    fn start_stream(&mut self, cx: &Context<'_>, path: &str) {
        let (tx, mut rx) = mpsc::channel::<Bytes>(STREAM_QUEUE);
        let reader = tokio_util::io::StreamReader::new(futures::stream::poll_fn(move |cx| {
            rx.poll_recv(cx).map(|b| b.map(Ok::<_, std::io::Error>))
        }));
        let client = cx.client.clone();
        let path = path.to_string();
        let task = cx
            .tracker
            .spawn(async move { client.replace(&path, reader).await });
        self.stream = Some(Stream { tx, task, at: 0 });
    }

    async fn end_stream(&mut self, cx: &Context<'_>, path: &str) -> Result<(), ClientError> {
        let Some(Stream { tx, task, .. }) = self.stream.take() else {
            return Ok(());
        };
        drop(tx);
        match task.await {
            Ok(Ok(_)) => self.settle(cx, path).await,
            Ok(Err(e)) => {
                self.size = self.base.size;
                Err(e)
            }
            Err(e) => {
                self.size = self.base.size;
                Err(ErrorCode::Io {
                    reason: format!("the streaming write failed: {e}"),
                }
                .into())
            }
        }
    }

    fn shadow(&mut self, cx: &Context<'_>) -> Result<Arc<std::fs::File>, ClientError> {
        if let Some(s) = &self.shadow {
            return Ok(s.clone());
        }
        let file = tempfile::tempfile_in(cx.cache_dir).map_err(|e| ErrorCode::Io {
            reason: format!("cache dir {}: {e}", cx.cache_dir.display()),
        })?;
        let file = Arc::new(file);
        self.shadow = Some(file.clone());
        Ok(file)
    }

    fn composer(&self, cx: &Context<'_>) -> Composer {
        Composer {
            client: cx.client.clone(),
            base: self.base.clone(),
            old_valid: self.old_valid,
            dirty: self.dirty.clone(),
            shadow: self.shadow.clone(),
        }
    }
}

/// The file with this mount's changes: old bytes, zeros past a cut, and the
/// shadow file's bytes over every dirty range.
struct Composer {
    client: Client,
    base: FileStat,
    old_valid: u64,
    dirty: RangeSet,
    shadow: Option<Arc<std::fs::File>>,
}

impl NewBytes for Composer {
    async fn bytes(&mut self, at: u64, len: u64) -> Result<Bytes, ClientError> {
        let buf = self
            .client
            .old_bytes(&self.base, self.old_valid, at, len)
            .await?;
        let ranges: Vec<Range<u64>> = self.dirty.within(at..at.saturating_add(len));
        let Some(shadow) = self.shadow.clone().filter(|_| !ranges.is_empty()) else {
            return Ok(Bytes::from(buf));
        };
        let buf = blocking(move || {
            let mut buf = buf;
            for r in ranges {
                let from = usize::try_from(r.start - at).unwrap_or(0);
                let to = usize::try_from(r.end - at).unwrap_or(0);
                shadow.read_exact_at(&mut buf[from..to], r.start)?;
            }
            Ok(buf)
        })
        .await?;
        Ok(Bytes::from(buf))
    }
}

/// Runs local file I/O off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, ClientError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ErrorCode::Io {
            reason: format!("the mount's cache dir: {e}"),
        }
        .into()),
        Err(e) => Err(ErrorCode::Io {
            reason: format!("the mount's cache dir: {e}"),
        }
        .into()),
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
