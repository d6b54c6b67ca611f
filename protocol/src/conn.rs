//! A framed connection over any byte stream, and the handshake.
//!
//! Sockets are the callers' business: this works on any `AsyncRead`/`AsyncWrite` pair,
//! which keeps the crate free of a runtime and lets tests use in-memory pipes.

use bytes::Buf;
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::FramedRead;

use crate::auth::{self, ClientKey, ClusterSecret, Credential, Peer, Role, Side};
use crate::error::{CodecError, ErrorCode, ProtocolError};
use crate::frame::{encode_head, Body, Frame, FrameCodec, Limits, READ_BUFFER};
use crate::ids::{RequestId, ServerId};
use crate::message::{PeerKind, Request, Response};
use crate::{HANDSHAKE_MAGIC, PROTOCOL_VERSION};

/// How long one frame may take to leave, by default: a peer that stops reading is
/// given up on instead of holding the sender for ever.
pub const DEFAULT_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What a dialer proves in the handshake: a credential and the key behind it.
#[derive(Clone)]
pub struct Identity {
    pub credential: Credential,
    key: [u8; auth::KEY_LEN],
    /// Dial over TLS with these settings (see `net::Identity::with_tls`).
    #[cfg(feature = "net")]
    pub(crate) tls: Option<crate::net::Tls>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("credential", &self.credential)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A client with a named key.
    pub fn key(key: &ClientKey) -> Identity {
        Identity {
            credential: Credential::Key {
                name: key.name.clone(),
            },
            key: *key.secret.as_bytes(),
            #[cfg(feature = "net")]
            tls: None,
        }
    }

    /// A client holding the cluster secret: it acts as admin.
    pub fn cluster_admin(secret: &ClusterSecret) -> Identity {
        Identity {
            credential: Credential::ClusterSecret,
            key: secret.admin_key(),
            #[cfg(feature = "net")]
            tls: None,
        }
    }

    pub fn chunkserver(id: ServerId, secret: &ClusterSecret) -> Identity {
        Identity {
            credential: Credential::Chunkserver { id },
            key: secret.server_key(),
            #[cfg(feature = "net")]
            tls: None,
        }
    }

    pub fn master(secret: &ClusterSecret) -> Identity {
        Identity {
            credential: Credential::Master,
            key: secret.server_key(),
            #[cfg(feature = "net")]
            tls: None,
        }
    }
}

/// The dialer's view of an authenticated connection.
#[derive(Clone)]
pub struct Session {
    /// Known only to the two ends: seals secrets sent on this connection.
    pub key: [u8; auth::KEY_LEN],
    /// A client's role, as the listener sees it.
    pub role: Option<Role>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// The listener's view of an authenticated connection.
#[derive(Clone)]
pub struct Accepted {
    pub peer: Peer,
    pub session: [u8; auth::KEY_LEN],
}

impl std::fmt::Debug for Accepted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accepted")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// Writes one frame; the payload goes out in the same vectored write as the header,
/// without being copied.
///
/// Then flushes: a TLS stream takes bytes into its own buffer when the socket is
/// full and reports them written, so without a flush the end of a frame could wait
/// there for the next frame, while the peer waits for the end of this one (a 1 GiB
/// put over TLS hung so, now and then). On plain TCP the flush does nothing.
pub async fn write_frame<W>(w: &mut W, frame: &Frame, limits: Limits) -> Result<(), CodecError>
where
    W: AsyncWrite + Unpin,
{
    let head = encode_head(frame, limits)?.freeze();
    let mut buf = head.chain(frame.payload.clone());
    w.write_all_buf(&mut buf).await?;
    w.flush().await?;
    Ok(())
}

/// Both halves of a framed connection.
#[derive(Debug)]
pub struct Connection<R, W> {
    pub reader: FramedRead<R, FrameCodec>,
    pub writer: W,
    limits: Limits,
    next_id: RequestId,
    write_timeout: std::time::Duration,
    /// Payload bytes received and sent so far (bulk data only, not headers).
    payload_in: u64,
    payload_out: u64,
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
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            payload_in: 0,
            payload_out: 0,
        }
    }

    /// Receives large payloads at aligned addresses from now on (see
    /// [`FrameCodec::aligning_payloads`]).
    pub fn align_payloads(&mut self) {
        let codec = *self.reader.decoder();
        *self.reader.decoder_mut() = codec.aligning_payloads(true);
    }

    /// Payload bytes (bulk data) received and sent on this connection so far.
    pub fn payload_bytes(&self) -> (u64, u64) {
        (self.payload_in, self.payload_out)
    }

    /// Sets how long one frame may take to leave before the send fails.
    pub fn set_write_timeout(&mut self, timeout: std::time::Duration) {
        self.write_timeout = timeout;
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// How long one frame may take to leave.
    pub fn write_timeout(&self) -> std::time::Duration {
        self.write_timeout
    }

    /// Counts `bytes` of payload sent on this connection other than by
    /// [`Connection::send`] (a chunkserver's `sendfile`).
    pub fn count_payload_out(&mut self, bytes: u64) {
        self.payload_out = self.payload_out.saturating_add(bytes);
    }

    /// A fresh request id for this connection.
    pub fn next_request_id(&mut self) -> RequestId {
        let id = self.next_id;
        self.next_id = id.next();
        id
    }

    /// Writes one frame within the write timeout.
    pub async fn send(&mut self, frame: &Frame) -> Result<(), CodecError> {
        let limits = self.limits;
        match tokio::time::timeout(
            self.write_timeout,
            write_frame(&mut self.writer, frame, limits),
        )
        .await
        {
            Ok(r) => {
                if r.is_ok() {
                    self.payload_out += frame.payload.len() as u64;
                }
                r
            }
            Err(_) => Err(CodecError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "peer is not reading: write deadline passed",
            ))),
        }
    }

    /// The next frame, or `None` when the peer closed cleanly between frames.
    pub async fn recv(&mut self) -> Result<Option<Frame>, CodecError> {
        let frame = self.reader.next().await.transpose();
        if let Ok(Some(f)) = &frame {
            self.payload_in += f.payload.len() as u64;
        }
        frame
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

    /// The dialer's side of the handshake: version check, then mutual
    /// challenge-response. Returns what the listener granted.
    pub async fn handshake(
        &mut self,
        peer: PeerKind,
        identity: &Identity,
    ) -> Result<Session, ProtocolError> {
        let reply = self
            .call(Request::Hello {
                magic: HANDSHAKE_MAGIC,
                version: PROTOCOL_VERSION,
                peer,
            })
            .await?;
        if !matches!(reply, Response::HelloOk { .. }) {
            return Err(ProtocolError::Unexpected {
                got: reply.name(),
                to: "Hello",
            });
        }
        let nonce = auth::random_bytes();
        let credential = identity.credential.clone();
        let reply = self
            .call(Request::Auth {
                credential: credential.clone(),
                nonce,
            })
            .await?;
        let Response::Challenge {
            nonce: theirs,
            proof: server_proof,
        } = reply
        else {
            return Err(ProtocolError::Unexpected {
                got: reply.name(),
                to: "Auth",
            });
        };
        let t = auth::transcript(&credential, &nonce, &theirs);
        let expected = auth::proof(&identity.key, Side::Server, &t);
        if !auth::proof_matches(&expected, &server_proof) {
            // Tell the listener (so it logs the failure), but prove nothing to a
            // peer that could not prove itself.
            let _ = self.call(Request::Proof { proof: [0; 32] }).await;
            return Err(ProtocolError::Remote(ErrorCode::AuthFailed {
                reason: format!(
                    "wrong secret for {credential}, or the server is not part of this cluster"
                ),
            }));
        }
        let reply = self
            .call(Request::Proof {
                proof: auth::proof(&identity.key, Side::Client, &t),
            })
            .await?;
        match reply {
            Response::Authenticated { role } => Ok(Session {
                key: auth::proof(&identity.key, Side::Session, &t),
                role,
            }),
            other => Err(ProtocolError::Unexpected {
                got: other.name(),
                to: "Proof",
            }),
        }
    }

    /// The next frame, which must be the request `what` of the handshake.
    async fn handshake_request(
        &mut self,
        what: &'static str,
    ) -> Result<(RequestId, Request), ProtocolError> {
        let frame = self.recv().await?.ok_or(ProtocolError::Closed)?;
        match frame.body {
            Body::Request(r) => Ok((frame.request_id, r)),
            Body::Response(other) => Err(ProtocolError::Unexpected {
                got: other.name(),
                to: what,
            }),
        }
    }

    /// Answers `code` and returns it as the error.
    async fn refuse<T>(&mut self, id: RequestId, code: ErrorCode) -> Result<T, ProtocolError> {
        self.reply(id, Response::Error(code.clone())).await?;
        Err(ProtocolError::Remote(code))
    }

    /// The listener's side of the handshake: the first frame must be a matching
    /// `Hello`, then the peer names its credential, `lookup` finds the key behind it,
    /// and both prove they hold that key. On any failure the peer is told why before
    /// the error is returned.
    pub async fn accept_handshake<F>(&mut self, lookup: F) -> Result<Accepted, ProtocolError>
    where
        F: FnOnce(&Credential) -> Result<([u8; auth::KEY_LEN], Peer), ErrorCode>,
    {
        let (id, request) = self.handshake_request("Hello").await?;
        let (magic, version) = match request {
            Request::Hello { magic, version, .. } => (magic, version),
            other => {
                let code = ErrorCode::BadRequest {
                    reason: format!("expected Hello, got {}", other.name()),
                };
                return self.refuse(id, code).await;
            }
        };
        if magic != HANDSHAKE_MAGIC || version != PROTOCOL_VERSION {
            let code = ErrorCode::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: version,
            };
            return self.refuse(id, code).await;
        }
        self.reply(
            id,
            Response::HelloOk {
                version: PROTOCOL_VERSION,
            },
        )
        .await?;

        let (id, request) = self.handshake_request("Auth").await?;
        let (credential, nonce) = match request {
            Request::Auth { credential, nonce } => (credential, nonce),
            other => {
                let code = ErrorCode::AuthFailed {
                    reason: format!("{} sent before authenticating", other.name()),
                };
                return self.refuse(id, code).await;
            }
        };
        let (key, peer) = match lookup(&credential) {
            Ok(found) => found,
            Err(code) => return self.refuse(id, code).await,
        };
        let ours = auth::random_bytes();
        let t = auth::transcript(&credential, &nonce, &ours);
        self.reply(
            id,
            Response::Challenge {
                nonce: ours,
                proof: auth::proof(&key, Side::Server, &t),
            },
        )
        .await?;

        let (id, request) = self.handshake_request("Proof").await?;
        let proven = match request {
            Request::Proof { proof } => {
                auth::proof_matches(&auth::proof(&key, Side::Client, &t), &proof)
            }
            _ => false,
        };
        if !proven {
            let code = ErrorCode::AuthFailed {
                reason: format!("wrong secret for {credential}"),
            };
            return self.refuse(id, code).await;
        }
        self.reply(
            id,
            Response::Authenticated {
                role: peer.client_role(),
            },
        )
        .await?;
        Ok(Accepted {
            peer,
            session: auth::proof(&key, Side::Session, &t),
        })
    }

    /// Sends a reply without a payload.
    pub async fn reply(&mut self, id: RequestId, response: Response) -> Result<(), CodecError> {
        self.send(&Frame::response(id, response)).await
    }
}
