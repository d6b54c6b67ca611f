//! The client's one pipelined connection to the master.
//!
//! Every metadata call of a `Client` goes over one connection, and concurrent calls
//! do not wait for each other: each writes its request as soon as it holds the
//! writer, and a reader task hands the answers back in order (the master starts
//! and answers a connection's requests in the order they came). So one client
//! with many operations in flight gets the master's group commit to itself,
//! without a connection per operation.
//!
//! A broken connection fails every call waiting on it; the next call dials again.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dfs_protocol::net::{NetRead, NetWrite};
use dfs_protocol::{
    Body, Connection, Frame, FrameCodec, Limits, ProtocolError, Request, RequestId, Response,
};
use futures::StreamExt;
use tokio::sync::{oneshot, Semaphore};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use crate::error::ClientError;
use crate::pool::Pool;

/// Calls one client may have waiting on the master at once; the master serves up
/// to 64 per connection.
const IN_FLIGHT: usize = 64;

/// The link, dialed on first use and again after it broke.
#[derive(Debug, Default)]
pub(crate) struct Link {
    open: tokio::sync::Mutex<Option<Arc<Open>>>,
}

#[derive(Debug)]
struct Open {
    writer: tokio::sync::Mutex<Writer>,
    waiting: Arc<Mutex<Waiting>>,
    slots: Semaphore,
    /// Stops the reader task when the link is dropped.
    stop: CancellationToken,
    /// The reader task: once it has ended (also when the runtime it ran on is gone),
    /// no answer can arrive on this connection.
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[derive(Debug)]
struct Writer {
    half: NetWrite,
    next: RequestId,
}

type Reply = oneshot::Sender<Result<Frame, ProtocolError>>;

#[derive(Debug, Default)]
struct Waiting {
    queue: VecDeque<(RequestId, Reply)>,
    /// Set once the connection failed: nothing more is sent on it.
    broken: bool,
}

impl Waiting {
    /// Marks the link broken and fails every call still waiting.
    fn fail_all(&mut self) {
        self.broken = true;
        for (_, reply) in self.queue.drain(..) {
            let _ = reply.send(Err(ProtocolError::Closed));
        }
    }
}

/// Marks the link broken when dropped before `done`.
struct Sending<'a> {
    waiting: &'a Mutex<Waiting>,
    done: bool,
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        if !self.done {
            lock(self.waiting).fail_all();
        }
    }
}

fn lock(waiting: &Mutex<Waiting>) -> std::sync::MutexGuard<'_, Waiting> {
    waiting
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Link {
    /// Sends `request` to `addr` (the master) and waits for its answer; an `Error`
    /// answer comes back as `ClientError::Remote`.
    pub(crate) async fn call(
        &self,
        pool: &Pool,
        addr: &str,
        request: Request,
        connect_timeout: Duration,
        io_timeout: Duration,
    ) -> Result<Response, ClientError> {
        let open = self.open(pool, addr, connect_timeout).await?;
        let _slot = open
            .slots
            .acquire()
            .await
            .map_err(|_| ClientError::peer(addr, ProtocolError::Closed))?;
        let to = request.name();
        let (tx, rx) = oneshot::channel();
        {
            let mut writer = open.writer.lock().await;
            let id = writer.next;
            writer.next = id.next();
            {
                // Queued before it is written: the answer can never come first.
                let mut waiting = lock(&open.waiting);
                if waiting.broken {
                    return Err(ClientError::peer(addr, ProtocolError::Closed));
                }
                waiting.queue.push_back((id, tx));
            }
            // A call dropped from here until its frame is whole (a caller's timeout,
            // Ctrl-C in the shell) leaves a queued waiter without a request, or half a
            // frame on the wire: nothing more may go over this link.
            let mut sending = Sending {
                waiting: &open.waiting,
                done: false,
            };
            let frame = Frame::request(id, request);
            let written = tokio::time::timeout(
                io_timeout,
                dfs_protocol::write_frame(&mut writer.half, &frame, Limits::default()),
            )
            .await;
            match written {
                Ok(Ok(())) => sending.done = true,
                Ok(Err(e)) => {
                    lock(&open.waiting).fail_all();
                    return Err(ClientError::peer(addr, e.into()));
                }
                Err(_) => {
                    lock(&open.waiting).fail_all();
                    return Err(ClientError::Timeout {
                        addr: addr.to_string(),
                        after: io_timeout,
                    });
                }
            }
        }
        let frame = match tokio::time::timeout(io_timeout, rx).await {
            Ok(Ok(Ok(frame))) => frame,
            Ok(Ok(Err(e))) => return Err(ClientError::peer(addr, e)),
            Ok(Err(_)) => return Err(ClientError::peer(addr, ProtocolError::Closed)),
            Err(_) => {
                return Err(ClientError::Timeout {
                    addr: addr.to_string(),
                    after: io_timeout,
                })
            }
        };
        match frame.body {
            Body::Response(Response::Error(code)) => Err(ClientError::Remote(code)),
            Body::Response(r) => Ok(r),
            Body::Request(r) => Err(ClientError::peer(
                addr,
                ProtocolError::Unexpected { got: r.name(), to },
            )),
        }
    }

    /// The open link, or a new one when there is none or it broke.
    async fn open(
        &self,
        pool: &Pool,
        addr: &str,
        connect_timeout: Duration,
    ) -> Result<Arc<Open>, ClientError> {
        let mut slot = self.open.lock().await;
        if let Some(open) = slot.as_ref() {
            if !lock(&open.waiting).broken && !open.reader.is_finished() {
                return Ok(open.clone());
            }
        }
        *slot = None;
        let conn = pool.get(addr, connect_timeout).await?;
        let Connection { reader, writer, .. } = conn;
        let waiting = Arc::new(Mutex::new(Waiting::default()));
        let stop = CancellationToken::new();
        // Ends when the connection does, or when the link is dropped (`Open::drop`).
        let reader = tokio::spawn(read_answers(reader, waiting.clone(), stop.clone()));
        let open = Arc::new(Open {
            writer: tokio::sync::Mutex::new(Writer {
                half: writer,
                next: RequestId(1),
            }),
            waiting: waiting.clone(),
            slots: Semaphore::new(IN_FLIGHT),
            stop,
            reader,
        });
        *slot = Some(open.clone());
        Ok(open)
    }
}

/// Hands each answer to the call waiting longest: answers come in request order.
async fn read_answers(
    mut reader: FramedRead<NetRead, FrameCodec>,
    waiting: Arc<Mutex<Waiting>>,
    stop: CancellationToken,
) {
    loop {
        let frame = tokio::select! {
            _ = stop.cancelled() => break,
            f = reader.next() => f,
        };
        let frame = match frame {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                tracing::info!(error = %e, "master connection failed");
                break;
            }
            None => break,
        };
        let mut w = lock(&waiting);
        match w.queue.pop_front() {
            Some((id, reply)) if id == frame.request_id => {
                let _ = reply.send(Ok(frame));
            }
            Some((id, reply)) => {
                let _ = reply.send(Err(ProtocolError::RequestIdMismatch {
                    got: frame.request_id.0,
                    want: id.0,
                }));
                break;
            }
            // An answer nobody asked for: the link cannot be trusted.
            None => break,
        }
    }
    lock(&waiting).fail_all();
}
