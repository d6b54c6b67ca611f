//! A progress bar on stderr around a reader or writer; invisible when stderr is not a
//! terminal or with `--quiet`, so piped and scripted use stays clean.

use std::io::IsTerminal;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Set by `--quiet`: no bar anywhere in this process.
static QUIET: AtomicBool = AtomicBool::new(false);

pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

fn hidden(quiet: bool) -> bool {
    quiet || QUIET.load(Ordering::Relaxed) || !std::io::stderr().is_terminal()
}

/// A bar for a transfer of `total` bytes (unknown when `None`), hidden off a terminal.
pub fn bar(total: Option<u64>, quiet: bool) -> ProgressBar {
    if hidden(quiet) {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template(
                "{bytes:>10}/{total_bytes:<10} [{bar:30}] {binary_bytes_per_sec:>12} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {bytes:>10} {binary_bytes_per_sec:>12}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    bar.set_draw_target(ProgressDrawTarget::stderr());
    bar
}

/// A bar for a transfer of several files, `total` bytes in all: bytes, throughput,
/// ETA, and the files done as its message (`Files::done`).
pub fn files_bar(total: u64, files: u64) -> ProgressBar {
    if hidden(false) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template(
            "{bytes:>10}/{total_bytes:<10} [{bar:30}] {binary_bytes_per_sec:>12} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(format!("0/{files} files"));
    bar.set_draw_target(ProgressDrawTarget::stderr());
    bar
}

/// Counts the files of a batch as they finish, on its bar's message.
#[derive(Debug)]
pub struct Files {
    bar: ProgressBar,
    total: u64,
    done: std::sync::atomic::AtomicU64,
}

impl Files {
    pub fn new(bar: ProgressBar, total: u64) -> Files {
        Files {
            bar,
            total,
            done: Default::default(),
        }
    }

    pub fn bar(&self) -> &ProgressBar {
        &self.bar
    }

    /// One more file finished (or failed).
    pub fn done(&self) {
        let n = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        self.bar.set_message(format!("{n}/{} files", self.total));
    }

    /// Prints `line` above the bar (or plainly when there is none).
    pub fn say(&self, line: &str) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }
}

/// Counts the bytes that pass through `inner` on `bar`.
#[derive(Debug)]
pub struct Metered<T> {
    inner: T,
    bar: ProgressBar,
}

impl<T> Metered<T> {
    pub fn new(inner: T, bar: ProgressBar) -> Self {
        Metered { inner, bar }
    }

    /// The wrapped reader or writer.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Metered<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.bar.inc((buf.filled().len() - before) as u64);
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Metered<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = r {
            self.bar.inc(n as u64);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
