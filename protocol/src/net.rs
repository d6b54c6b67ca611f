//! Sockets (feature `net`): wrapping a TCP stream in a [`Connection`] and dialing a
//! peer with the handshake, the one way every dfs process connects to another.

use std::time::Duration;

use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::{Connection, Identity, Limits, PeerKind, ProtocolError, Session};

/// A framed connection over TCP.
pub type TcpConn = Connection<OwnedReadHalf, OwnedWriteHalf>;

/// Wraps an accepted or dialed socket (no Nagle delay: frames are written whole).
pub fn framed(stream: TcpStream) -> TcpConn {
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    Connection::new(r, w, Limits::default())
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
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| ProtocolError::Codec(e.into()))?;
        let mut conn = framed(stream);
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
