//! A local file read for a put, checked at its end to be the file it was at its
//! start: a file that changes while it is read (a log being written, an editor
//! saving) would otherwise be stored as a mix of old and new bytes.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use tokio::io::{AsyncRead, ReadBuf};

type Check = Pin<Box<dyn Future<Output = io::Result<std::fs::Metadata>> + Send>>;

/// Reads `inner` (the file at `path`) and, at its end, fails the read instead of
/// ending it if the file's length or modification time changed, or if the bytes read
/// are not its length. Since a put commits only after its input ended, nothing is
/// stored then.
pub struct Unchanged<R> {
    inner: R,
    path: PathBuf,
    len: u64,
    mtime: Option<SystemTime>,
    read: u64,
    check: Option<Check>,
    /// Once known: whether the file was unchanged at its end.
    verdict: Option<bool>,
}

impl<R> std::fmt::Debug for Unchanged<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unchanged")
            .field("path", &self.path)
            .field("len", &self.len)
            .field("read", &self.read)
            .finish_non_exhaustive()
    }
}

impl<R> Unchanged<R> {
    /// `before` is the file's metadata when it was opened.
    pub fn new(inner: R, path: PathBuf, before: &std::fs::Metadata) -> Self {
        Unchanged {
            inner,
            path,
            len: before.len(),
            mtime: before.modified().ok(),
            read: 0,
            check: None,
            verdict: None,
        }
    }

    fn changed(&self) -> io::Error {
        io::Error::other(format!(
            "{} changed while it was being read; nothing was stored",
            self.path.display()
        ))
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Unchanged<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.verdict {
            Some(true) => return Poll::Ready(Ok(())),
            Some(false) => return Poll::Ready(Err(self.changed())),
            None => {}
        }
        if self.check.is_none() {
            let before = buf.filled().len();
            match Pin::new(&mut self.inner).poll_read(cx, buf) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
            let n = buf.filled().len() - before;
            self.read = self.read.saturating_add(n as u64);
            if n > 0 || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            // The end: look at the file again before saying so.
            self.check = Some(Box::pin(tokio::fs::metadata(self.path.clone())));
        }
        let Some(check) = self.check.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let now = match check.as_mut().poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(r) => r?,
        };
        let same =
            now.len() == self.len && now.modified().ok() == self.mtime && self.read == self.len;
        self.verdict = Some(same);
        self.check = None;
        if same {
            Poll::Ready(Ok(()))
        } else {
            Poll::Ready(Err(self.changed()))
        }
    }
}
