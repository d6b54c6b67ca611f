//! Sockets (feature `net`): TCP, optionally inside TLS, wrapped in a [`Connection`];
//! accepting and dialing with the handshake, the one way every dfs process connects
//! to another.
//!
//! TLS (rustls) adds confidentiality and integrity to a link and proves the listener
//! holds a certificate of the cluster's CA; the dfs handshake inside it still proves
//! the credentials of both ends.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::FutureExt;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::{Connection, Identity, Limits, PeerKind, ProtocolError, Session};

/// A framed connection over TCP, with or without TLS.
pub type TcpConn = Connection<NetRead, NetWrite>;

type TlsClient = tokio_rustls::client::TlsStream<TcpStream>;
type TlsServer = tokio_rustls::server::TlsStream<TcpStream>;

/// The read half of a link.
#[derive(Debug)]
pub enum NetRead {
    Tcp(OwnedReadHalf),
    TlsClient(tokio::io::ReadHalf<TlsClient>),
    TlsServer(tokio::io::ReadHalf<TlsServer>),
}

/// The write half of a link.
#[derive(Debug)]
pub enum NetWrite {
    Tcp(OwnedWriteHalf),
    TlsClient(tokio::io::WriteHalf<TlsClient>),
    TlsServer(tokio::io::WriteHalf<TlsServer>),
}

impl AsyncRead for NetRead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NetRead::Tcp(r) => Pin::new(r).poll_read(cx, buf),
            NetRead::TlsClient(r) => Pin::new(r).poll_read(cx, buf),
            NetRead::TlsServer(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for NetWrite {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            NetWrite::Tcp(w) => Pin::new(w).poll_write(cx, buf),
            NetWrite::TlsClient(w) => Pin::new(w).poll_write(cx, buf),
            NetWrite::TlsServer(w) => Pin::new(w).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            NetWrite::Tcp(w) => Pin::new(w).poll_write_vectored(cx, bufs),
            NetWrite::TlsClient(w) => Pin::new(w).poll_write_vectored(cx, bufs),
            NetWrite::TlsServer(w) => Pin::new(w).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            NetWrite::Tcp(w) => w.is_write_vectored(),
            NetWrite::TlsClient(w) => w.is_write_vectored(),
            NetWrite::TlsServer(w) => w.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NetWrite::Tcp(w) => Pin::new(w).poll_flush(cx),
            NetWrite::TlsClient(w) => Pin::new(w).poll_flush(cx),
            NetWrite::TlsServer(w) => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NetWrite::Tcp(w) => Pin::new(w).poll_shutdown(cx),
            NetWrite::TlsClient(w) => Pin::new(w).poll_shutdown(cx),
            NetWrite::TlsServer(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}

impl TcpConn {
    /// A second descriptor for the socket under a plain TCP link, for a sender that
    /// writes to it from a thread of its own while this connection waits (a
    /// chunkserver's `sendfile`); `None` on TLS, whose bytes must pass through
    /// rustls. The socket stays non-blocking.
    pub fn plain_socket(&self) -> Option<std::io::Result<std::net::TcpStream>> {
        use std::os::fd::AsFd;
        match &self.writer {
            NetWrite::Tcp(w) => {
                let stream: &TcpStream = w.as_ref();
                Some(
                    stream
                        .as_fd()
                        .try_clone_to_owned()
                        .map(std::net::TcpStream::from),
                )
            }
            NetWrite::TlsClient(_) | NetWrite::TlsServer(_) => None,
        }
    }

    /// Whether an idle connection is still usable: the peer has not closed it (a
    /// restarted server does) and has sent nothing unasked. Never waits.
    pub fn is_idle_open(&mut self) -> bool {
        if !self.reader.read_buffer().is_empty() {
            return false;
        }
        match self.reader.get_mut() {
            NetRead::Tcp(r) => {
                let mut probe = [0u8; 1];
                // Pending: nothing to read and no EOF.
                r.peek(&mut probe).now_or_never().is_none()
            }
            // TLS has no peek; reading consumes, but anything read here (but for
            // TLS's own records, which rustls handles) means the link is unusable.
            NetRead::TlsClient(_) | NetRead::TlsServer(_) => {
                use tokio::io::AsyncReadExt;
                let mut probe = [0u8; 1];
                self.reader
                    .get_mut()
                    .read(&mut probe)
                    .now_or_never()
                    .is_none()
            }
        }
    }
}

/// Wraps an accepted or dialed plain socket (no Nagle delay: frames are written whole).
pub fn framed(stream: TcpStream) -> TcpConn {
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    Connection::new(NetRead::Tcp(r), NetWrite::Tcp(w), Limits::default())
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("no certificate in {0}")]
    NoCertificate(&'static str),
    #[error("no private key in the key file")]
    NoKey,
    #[error("{what}: {reason}")]
    Bad { what: &'static str, reason: String },
}

fn bad(what: &'static str) -> impl Fn(String) -> TlsError {
    move |reason| TlsError::Bad { what, reason }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(pem: &[u8], what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(what)(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(what));
    }
    Ok(certs)
}

/// TLS settings: how to verify listeners (the cluster CA) and, for servers, the
/// certificate to present.
#[derive(Clone)]
pub struct Tls {
    connector: TlsConnector,
    acceptor: Option<TlsAcceptor>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("serves", &self.acceptor.is_some())
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// For clients: trust listeners whose certificate the CA in `ca_pem` signed.
    pub fn client(ca_pem: &[u8]) -> Result<Tls, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for c in certs(ca_pem, "the CA file")? {
            roots
                .add(c)
                .map_err(|e| bad("the CA certificate")(e.to_string()))?;
        }
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| bad("TLS versions")(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Tls {
            connector: TlsConnector::from(Arc::new(config)),
            acceptor: None,
        })
    }

    /// For servers: present `cert_pem` (with `key_pem`) and trust peers the CA signed.
    pub fn server(ca_pem: &[u8], cert_pem: &[u8], key_pem: &[u8]) -> Result<Tls, TlsError> {
        let mut tls = Tls::client(ca_pem)?;
        let chain = certs(cert_pem, "the certificate file")?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| TlsError::NoKey)?;
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| bad("TLS versions")(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| bad("the certificate and key")(e.to_string()))?;
        tls.acceptor = Some(TlsAcceptor::from(Arc::new(config)));
        Ok(tls)
    }

    /// Whether these settings can serve (hold a certificate).
    pub fn serves(&self) -> bool {
        self.acceptor.is_some()
    }
}

/// Wraps an accepted socket, with the TLS handshake first when `tls` serves.
pub async fn accept(stream: TcpStream, tls: Option<&Tls>) -> io::Result<TcpConn> {
    let Some(acceptor) = tls.and_then(|t| t.acceptor.as_ref()) else {
        return Ok(framed(stream));
    };
    let _ = stream.set_nodelay(true);
    let stream = acceptor.accept(stream).await?;
    let (r, w) = tokio::io::split(stream);
    Ok(Connection::new(
        NetRead::TlsServer(r),
        NetWrite::TlsServer(w),
        Limits::default(),
    ))
}

/// The name a listener's certificate must carry: the host of `addr` (`host:port`).
fn server_name(addr: &str) -> io::Result<ServerName<'static>> {
    let host = match addr.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => addr,
    };
    ServerName::try_from(host.to_string())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{addr}: {e}")))
}

async fn connect(addr: &str, tls: Option<&Tls>) -> io::Result<TcpConn> {
    let stream = TcpStream::connect(addr).await?;
    wrap_dialed(stream, addr, tls).await
}

/// Wraps a socket dialed to `addr`, with the TLS handshake first when `tls` is
/// given (for a caller that set the socket up itself; [`dial`] dials and wraps).
pub async fn wrap_dialed(stream: TcpStream, addr: &str, tls: Option<&Tls>) -> io::Result<TcpConn> {
    let Some(tls) = tls else {
        return Ok(framed(stream));
    };
    let _ = stream.set_nodelay(true);
    let stream = tls.connector.connect(server_name(addr)?, stream).await?;
    let (r, w) = tokio::io::split(stream);
    Ok(Connection::new(
        NetRead::TlsClient(r),
        NetWrite::TlsClient(w),
        Limits::default(),
    ))
}

/// Connects to `addr` as `peer`, proving `identity`, all within `timeout`.
pub async fn dial(
    addr: &str,
    peer: PeerKind,
    identity: &Identity,
    timeout: Duration,
) -> Result<TcpConn, ProtocolError> {
    dial_session(addr, peer, identity, timeout)
        .await
        .map(|(conn, _)| conn)
}

/// Like [`dial`], also returning the session (its key seals secrets on this link).
pub async fn dial_session(
    addr: &str,
    peer: PeerKind,
    identity: &Identity,
    timeout: Duration,
) -> Result<(TcpConn, Session), ProtocolError> {
    let attempt = async {
        let mut conn = connect(addr, identity.tls.as_ref())
            .await
            .map_err(|e| ProtocolError::Codec(e.into()))?;
        let session = conn.handshake(peer, identity).await?;
        Ok((conn, session))
    };
    tokio::time::timeout(timeout, attempt).await.map_err(|_| {
        ProtocolError::Codec(
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("connecting to {addr}"),
            )
            .into(),
        )
    })?
}

impl Identity {
    /// The same identity, dialing over TLS with `tls`.
    pub fn with_tls(mut self, tls: Tls) -> Identity {
        self.tls = Some(tls);
        self
    }

    /// The TLS settings this identity dials with, if any.
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }
}
