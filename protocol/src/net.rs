//! Sockets (feature `net`): wrapping a TCP stream in a [`Connection`] and dialing a
//! peer with the handshake, the one way every dfs process connects to another.

use std::time::Duration;

use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::{Connection, Limits, PeerKind, ProtocolError};

/// A framed connection over TCP.
pub type TcpConn = Connection<OwnedReadHalf, OwnedWriteHalf>;

/// Wraps an accepted or dialed socket (no Nagle delay: frames are written whole).
pub fn framed(stream: TcpStream) -> TcpConn {
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    Connection::new(r, w, Limits::default())
}

/// Connects to `addr` as `peer` and completes the handshake, all within `timeout`.
pub async fn dial(addr: &str, peer: PeerKind, timeout: Duration) -> Result<TcpConn, ProtocolError> {
    let attempt = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| ProtocolError::Codec(e.into()))?;
        let mut conn = framed(stream);
        conn.handshake(peer).await?;
        Ok(conn)
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
