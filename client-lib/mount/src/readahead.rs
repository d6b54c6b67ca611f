//! Read-ahead for an open file: a reader that goes through a file in order gets
//! windows of several read units fetched at once (spread over the replicas), and
//! the next window is fetched while it reads this one. A random reader fetches
//! exactly what it asked for. All windows of a mount share one byte budget, so
//! memory stays bounded however many files are read.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use dfs_client::{ClientError, ErrorCode, FileStat};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::open_file::Context;

/// The bytes of read-ahead a mount may hold at once, and the size of one window.
pub struct Budget {
    bytes: Arc<Semaphore>,
    pub window: u64,
}

impl Budget {
    pub fn new(total: u64, window: u64) -> Budget {
        let permits = usize::try_from(total >> 10).unwrap_or(usize::MAX >> 4);
        Budget {
            bytes: Arc::new(Semaphore::new(permits.min(Semaphore::MAX_PERMITS))),
            window: window.max(128 << 10),
        }
    }

    fn take(&self, len: u64) -> Option<OwnedSemaphorePermit> {
        let kib = u32::try_from(len.div_ceil(1024)).ok()?;
        self.bytes.clone().try_acquire_many_owned(kib).ok()
    }
}

struct Window {
    start: u64,
    data: Bytes,
    _permit: Option<OwnedSemaphorePermit>,
}

struct Pending {
    start: u64,
    len: u64,
    task: JoinHandle<Result<Bytes, ClientError>>,
    permit: OwnedSemaphorePermit,
}

#[derive(Default)]
pub struct ReadAhead {
    window: Option<Window>,
    next: Option<Pending>,
    /// Where the last read ended: a read starting there is sequential.
    last_end: u64,
}

impl ReadAhead {
    pub fn clear(&mut self) {
        self.window = None;
        if let Some(p) = self.next.take() {
            p.task.abort();
        }
    }

    /// `len` bytes from `offset` of `base` (which holds them all).
    pub async fn read(
        &mut self,
        cx: &Context<'_>,
        base: &FileStat,
        offset: u64,
        len: u64,
    ) -> Result<Bytes, ClientError> {
        let sequential = offset == self.last_end || self.covers(offset);
        self.last_end = offset + len;
        let mut out = BytesMut::new();
        let mut at = offset;
        let end = offset + len;
        while at < end {
            if let Some(w) = &self.window {
                let w_end = w.start + w.data.len() as u64;
                if w.start <= at && at < w_end {
                    let to = end.min(w_end);
                    let piece = w
                        .data
                        .slice(to_usize(at - w.start)?..to_usize(to - w.start)?);
                    if at == offset && to == end {
                        // The common case: one slice of the window, no copy.
                        self.prefetch(cx, base, sequential);
                        return Ok(piece);
                    }
                    out.extend_from_slice(&piece);
                    at = to;
                    continue;
                }
            }
            if let Some(p) = self.next.take() {
                if p.start <= at && at < p.start + p.len {
                    let data = p.task.await.map_err(|e| ErrorCode::Io {
                        reason: format!("read-ahead: {e}"),
                    })??;
                    self.window = Some(Window {
                        start: p.start,
                        data,
                        _permit: Some(p.permit),
                    });
                    continue;
                }
                p.task.abort();
            }
            // Nothing fetched covers `at`: a window from here when reading in order
            // (as far as the budget allows), else just what was asked.
            let want = if sequential {
                cx.readahead.window.max(end - at)
            } else {
                end - at
            };
            let permit = if sequential {
                cx.readahead.take(want)
            } else {
                None
            };
            let fetch_len = if permit.is_some() { want } else { end - at };
            let data = cx.client.read_at(base, at, fetch_len).await?;
            if data.is_empty() {
                return Err(ErrorCode::Io {
                    reason: format!("{}: nothing at {at}", base.path),
                }
                .into());
            }
            self.window = Some(Window {
                start: at,
                data,
                _permit: permit,
            });
        }
        self.prefetch(cx, base, sequential);
        Ok(out.freeze())
    }

    fn covers(&self, offset: u64) -> bool {
        self.window
            .as_ref()
            .is_some_and(|w| w.start <= offset && offset <= w.start + w.data.len() as u64)
    }

    /// While reading in order, the window after the current one is fetched.
    fn prefetch(&mut self, cx: &Context<'_>, base: &FileStat, sequential: bool) {
        if !sequential || self.next.is_some() {
            return;
        }
        let Some(w) = &self.window else { return };
        let start = w.start + w.data.len() as u64;
        if start >= base.size {
            return;
        }
        let len = cx.readahead.window.min(base.size - start);
        let Some(permit) = cx.readahead.take(len) else {
            return;
        };
        let client = cx.client.clone();
        let base = base.clone();
        let task = cx
            .tracker
            .spawn(async move { client.read_at(&base, start, len).await });
        self.next = Some(Pending {
            start,
            len,
            task,
            permit,
        });
    }
}

fn to_usize(n: u64) -> Result<usize, ClientError> {
    usize::try_from(n).map_err(|_| {
        ErrorCode::InvalidArgument {
            reason: "a read larger than memory".into(),
        }
        .into()
    })
}
