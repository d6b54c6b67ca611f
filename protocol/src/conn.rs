//! A framed connection over any byte stream, and the handshake.
//!
//! Sockets are the callers' business: this works on any `AsyncRead`/`AsyncWrite` pair,
//! which keeps the crate free of a runtime and lets tests use in-memory pipes.

use bytes::Buf;
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::FramedRead;

use crate::error::{CodecError, ErrorCode, ProtocolError};
use crate::frame::{encode_head, Body, Frame, FrameCodec, Limits};
use crate::ids::RequestId;
use crate::message::{PeerKind, Request, Response};
use crate::{HANDSHAKE_MAGIC, PROTOCOL_VERSION};

/// Read buffer per connection: one data packet plus its header fits without regrowth.
const READ_BUFFER: usize = 1 << 20;

/// Writes one frame; the payload goes out in the same vectored write as the header,
/// without being copied.
pub async fn write_frame<W>(w: &mut W, frame: &Frame, limits: Limits) -> Result<(), CodecError>
where
    W: AsyncWrite + Unpin,
{
    let head = encode_head(frame, limits)?.freeze();
    let mut buf = head.chain(frame.payload.clone());
    w.write_all_buf(&mut buf).await?;
    Ok(())
}

/// Both halves of a framed connection.
#[derive(Debug)]
pub struct Connection<R, W> {
    pub reader: FramedRead<R, FrameCodec>,
    pub writer: W,
    limits: Limits,
    next_id: RequestId,
}

impl<R, W> Connection<R, W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    pub fn new(reader: R, writer: W, limits: Limits) -> Self {
        Connection {
            reader: FramedRead::with_capacity(reader, FrameCodec::new(limits), READ_BUFFER),
            writer,
            limits,
            next_id: RequestId(1),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// A fresh request id for this connection.
    pub fn next_request_id(&mut self) -> RequestId {
        let id = self.next_id;
        self.next_id = id.next();
        id
    }

    pub async fn send(&mut self, frame: &Frame) -> Result<(), CodecError> {
        write_frame(&mut self.writer, frame, self.limits).await
    }

    /// The next frame, or `None` when the peer closed cleanly between frames.
    pub async fn recv(&mut self) -> Result<Option<Frame>, CodecError> {
        self.reader.next().await.transpose()
    }

    /// The next frame, which must be a response to `id`.
    pub async fn recv_response(
        &mut self,
        id: RequestId,
        to: &'static str,
    ) -> Result<(Response, bytes::Bytes), ProtocolError> {
        let frame = self.recv().await?.ok_or(ProtocolError::Closed)?;
        if frame.request_id != id {
            return Err(ProtocolError::RequestIdMismatch {
                got: frame.request_id.0,
                want: id.0,
            });
        }
        match frame.body {
            Body::Response(Response::Error(code)) => Err(ProtocolError::Remote(code)),
            Body::Response(r) => Ok((r, frame.payload)),
            Body::Request(r) => Err(ProtocolError::Unexpected { got: r.name(), to }),
        }
    }

    /// Sends a request and waits for its reply; an `Error` reply becomes `Err(Remote)`.
    pub async fn call(&mut self, request: Request) -> Result<Response, ProtocolError> {
        let to = request.name();
        let id = self.next_request_id();
        self.send(&Frame::request(id, request)).await?;
        let (response, _payload) = self.recv_response(id, to).await?;
        Ok(response)
    }

    /// The dialer's side of the handshake.
    pub async fn handshake(&mut self, peer: PeerKind) -> Result<u32, ProtocolError> {
        let reply = self
            .call(Request::Hello {
                magic: HANDSHAKE_MAGIC,
                version: PROTOCOL_VERSION,
                peer,
            })
            .await?;
        match reply {
            Response::HelloOk { version } => Ok(version),
            other => Err(ProtocolError::Unexpected {
                got: other.name(),
                to: "Hello",
            }),
        }
    }

    /// The listener's side of the handshake: the first frame must be a matching `Hello`.
    /// On a mismatch the peer is told why before the error is returned.
    pub async fn accept_handshake(&mut self) -> Result<PeerKind, ProtocolError> {
        let frame = self.recv().await?.ok_or(ProtocolError::Closed)?;
        let (magic, version, peer) = match frame.body {
            Body::Request(Request::Hello {
                magic,
                version,
                peer,
            }) => (magic, version, peer),
            Body::Request(other) => {
                let code = ErrorCode::BadRequest {
                    reason: format!("expected Hello, got {}", other.name()),
                };
                self.reply(frame.request_id, Response::Error(code.clone()))
                    .await?;
                return Err(ProtocolError::Remote(code));
            }
            Body::Response(other) => {
                return Err(ProtocolError::Unexpected {
                    got: other.name(),
                    to: "Hello",
                })
            }
        };
        if magic != HANDSHAKE_MAGIC || version != PROTOCOL_VERSION {
            let code = ErrorCode::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: version,
            };
            self.reply(frame.request_id, Response::Error(code.clone()))
                .await?;
            return Err(ProtocolError::Remote(code));
        }
        self.reply(
            frame.request_id,
            Response::HelloOk {
                version: PROTOCOL_VERSION,
            },
        )
        .await?;
        Ok(peer)
    }

    /// Sends a reply without a payload.
    pub async fn reply(&mut self, id: RequestId, response: Response) -> Result<(), CodecError> {
        self.send(&Frame::response(id, response)).await
    }
}
