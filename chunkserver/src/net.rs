//! Dialing peers: connect with a timeout, then the protocol handshake.

use std::time::Duration;

use dfs_protocol::{Connection, Limits, PeerKind, ProtocolError};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

pub type Conn = Connection<OwnedReadHalf, OwnedWriteHalf>;

/// Wraps an accepted or dialed socket.
pub fn framed(stream: TcpStream) -> Conn {
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    Connection::new(r, w, Limits::default())
}

/// Connects to `addr` and completes the handshake, all within `timeout`.
pub async fn dial(addr: &str, timeout: Duration) -> Result<Conn, ProtocolError> {
    let attempt = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| ProtocolError::Codec(e.into()))?;
        let mut conn = framed(stream);
        conn.handshake(PeerKind::Chunkserver).await?;
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
