//! Client reads sent by the kernel from the chunk file to the socket (`sendfile`):
//! on a plain TCP link, the blocks of a `ReadStored` never pass through this
//! process's memory.
//!
//! A get's chunkserver CPU went mostly to two copies of every byte: from the page
//! cache into a buffer, and from the buffer into the socket. `sendfile` hands the
//! socket the cached pages instead. Only reads the client verifies can skip the
//! buffer: a read checked here must see the bytes. TLS links keep the buffered path,
//! since their bytes must pass through rustls.
//!
//! The whole exchange runs on a blocking thread, because `sendfile` reads the file
//! and may wait for the disk. The socket stays non-blocking (tokio owns it): the
//! thread waits for room with `poll`, each frame within the connection's write
//! timeout. The connection's task waits for the thread and writes nothing
//! meanwhile. Should that task be dropped (its request's deadline passed, the server
//! is stopping), the socket is shut down, which ends the thread's next wait.

use std::fs::File;
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dfs_protocol::frame::{encode_head_for, Limits};
use dfs_protocol::{CodecError, Frame, ProtocolError, RequestId, Response};
use rustix::event::{poll, PollFd, PollFlags, Timespec};

use super::Range;
use crate::ctx::Ctx;
use crate::error::StoreError;
use crate::net::Conn;
use crate::store::ChunkStore;

/// Shuts the socket down if the read is abandoned before the thread is done.
struct Abandon(Option<Arc<TcpStream>>);

impl Drop for Abandon {
    fn drop(&mut self) {
        if let Some(sock) = self.0.take() {
            let _ = sock.shutdown(Shutdown::Both);
        }
    }
}

/// Streams `range` as `ReadData` frames of at most one packet each, their payloads
/// sent from the file by `sendfile` on `sock` (a second handle on `conn`'s socket).
pub(crate) async fn stream(
    ctx: &Ctx,
    conn: &mut Conn,
    id: RequestId,
    range: Range,
    sock: TcpStream,
) -> Result<(), ProtocolError> {
    let store = ctx.store.clone();
    let limits = conn.limits();
    let timeout = conn.write_timeout();
    let sock = Arc::new(sock);
    let mut abandon = Abandon(Some(sock.clone()));
    let sent =
        tokio::task::spawn_blocking(move || send(&store, &sock, id, range, limits, timeout)).await;
    abandon.0 = None;
    let (bytes, ended) =
        sent.map_err(|e| CodecError::Io(std::io::Error::other(format!("sendfile task: {e}"))))?;
    conn.count_payload_out(bytes);
    match ended {
        Ok(()) => Ok(()),
        Err(Failure::Refused(e)) => {
            super::log_refusal(ctx, &e);
            conn.reply(id, Response::Error(e.to_code())).await?;
            Ok(())
        }
        Err(Failure::Broken(e)) => Err(CodecError::Io(e).into()),
    }
}

/// Why a read on the thread stopped early.
enum Failure {
    /// Between frames: the connection can carry the error reply.
    Refused(StoreError),
    /// In the middle of a frame.
    Broken(std::io::Error),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        Failure::Refused(e)
    }
}

fn broken(e: impl std::fmt::Display) -> Failure {
    Failure::Broken(std::io::Error::other(e.to_string()))
}

/// The read, on the blocking thread: the payload bytes sent, and how it ended (a
/// refusal already settled: damage found here quarantines the replica).
fn send(
    store: &ChunkStore,
    sock: &TcpStream,
    id: RequestId,
    range: Range,
    limits: Limits,
    timeout: Duration,
) -> (u64, Result<(), Failure>) {
    let mut seen = None;
    let mut sent = 0u64;
    let result = (|| {
        let reader = store.open_reader(range.handle, range.version)?;
        seen = Some(reader.len());
        let (file, base) = reader.stored_file()?;
        for (pos, n, last) in range.pieces() {
            let span = reader.stored_span(pos, n)?;
            let payload = usize::try_from(span.len).map_err(broken)?;
            let frame = Frame::response(
                id,
                Response::ReadData {
                    last,
                    offset: span.offset,
                    checksums: span.checksums,
                },
            );
            let head = encode_head_for(&frame, payload, limits).map_err(broken)?;
            let deadline = Instant::now() + timeout;
            write_all(sock, &head, deadline)
                .and_then(|()| send_file(sock, file, base + span.offset, payload, deadline))
                .map_err(Failure::Broken)?;
            sent += span.len;
        }
        Ok(())
    })();
    let result = result.map_err(|f| match f {
        Failure::Refused(e) => Failure::Refused(super::settle_damage(
            store,
            range.handle,
            range.version,
            seen,
            e,
        )),
        broken => broken,
    });
    (sent, result)
}

/// Waits until `sock` takes more bytes, at most until `deadline`.
fn wait_writable(sock: &TcpStream, deadline: Instant) -> std::io::Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "peer is not reading: write deadline passed",
        ));
    }
    let wait = Timespec {
        tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(left.subsec_nanos()),
    };
    let mut fds = [PollFd::new(sock, PollFlags::OUT)];
    match poll(&mut fds, Some(&wait)) {
        Ok(_) | Err(rustix::io::Errno::INTR) => {}
        Err(e) => return Err(e.into()),
    }
    let got = fds[0].revents();
    if got.intersects(PollFlags::ERR | PollFlags::HUP | PollFlags::NVAL) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::BrokenPipe,
            "connection closed while sending",
        ));
    }
    Ok(())
}

fn write_all(mut sock: &TcpStream, mut buf: &[u8], deadline: Instant) -> std::io::Result<()> {
    while !buf.is_empty() {
        match sock.write(buf) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => wait_writable(sock, deadline)?,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sends `len` bytes of `file` from `at` to `sock`.
fn send_file(
    sock: &TcpStream,
    file: &File,
    mut at: u64,
    mut len: usize,
    deadline: Instant,
) -> std::io::Result<()> {
    while len > 0 {
        match rustix::fs::sendfile(sock, file, Some(&mut at), len) {
            // The file ended early (cut back under the read): the frame cannot be
            // completed, so the connection goes.
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "chunk file ended in the middle of a frame",
                ))
            }
            Ok(n) => len -= n,
            Err(rustix::io::Errno::AGAIN) => wait_writable(sock, deadline)?,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
