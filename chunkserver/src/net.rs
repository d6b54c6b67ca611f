//! Dialing peers as a chunkserver: every connection proves this server's identity.

use std::time::Duration;

use dfs_protocol::net::TcpConn;
use dfs_protocol::{Identity, PeerKind, ProtocolError, Session};

pub type Conn = TcpConn;

/// Connects to `addr` as `identity` and completes the handshake, all within `timeout`.
pub async fn dial(
    identity: &Identity,
    addr: &str,
    timeout: Duration,
) -> Result<Conn, ProtocolError> {
    dfs_protocol::net::dial(addr, PeerKind::Chunkserver, identity, timeout).await
}

/// Like [`dial`], also returning the session (the master seals client keys with it).
pub async fn dial_session(
    identity: &Identity,
    addr: &str,
    timeout: Duration,
) -> Result<(Conn, Session), ProtocolError> {
    dfs_protocol::net::dial_session(addr, PeerKind::Chunkserver, identity, timeout).await
}
