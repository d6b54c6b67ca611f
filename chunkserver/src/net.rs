//! Dialing peers as a chunkserver.

use std::time::Duration;

use dfs_protocol::net::TcpConn;
use dfs_protocol::{PeerKind, ProtocolError};

pub use dfs_protocol::net::framed;

pub type Conn = TcpConn;

/// Connects to `addr` and completes the handshake, all within `timeout`.
pub async fn dial(addr: &str, timeout: Duration) -> Result<Conn, ProtocolError> {
    dfs_protocol::net::dial(addr, PeerKind::Chunkserver, timeout).await
}
