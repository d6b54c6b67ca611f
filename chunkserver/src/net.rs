//! Dialing peers as a chunkserver: every connection proves this server's identity.
//! Connections to the next replica of a write chain are kept for the next chunk.

use std::collections::HashMap;
use std::sync::Mutex;
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

/// Idle connections kept per peer, and over all peers (a large cluster has hundreds
/// of peers, and each idle connection holds a descriptor); more are closed when
/// returned.
const MAX_IDLE_PER_PEER: usize = 16;
const MAX_IDLE: usize = 256;

/// Idle connections to peers, for the next write forwarded down a chain: dialing
/// and authenticating afresh for every chunk was two connects and two handshakes
/// per small file. A connection is kept only after an exchange that ended cleanly,
/// and one the peer has closed meanwhile is never handed out.
#[derive(Debug, Default)]
pub struct Peers {
    idle: Mutex<HashMap<String, Vec<Conn>>>,
}

impl Peers {
    /// An idle connection to `addr`, or a new one dialed as `identity`.
    pub async fn get(
        &self,
        identity: &Identity,
        addr: &str,
        timeout: Duration,
    ) -> Result<Conn, ProtocolError> {
        while let Some(mut conn) = self.lock().get_mut(addr).and_then(Vec::pop) {
            if conn.is_idle_open() {
                return Ok(conn);
            }
        }
        dial(identity, addr, timeout).await
    }

    /// Keeps a connection whose last exchange ended cleanly. Connections to this
    /// peer that it has closed meanwhile are let go first.
    pub fn put(&self, addr: &str, conn: Conn) {
        let mut idle = self.lock();
        let total: usize = idle.values().map(Vec::len).sum();
        let list = idle.entry(addr.to_string()).or_default();
        let before = list.len();
        list.retain_mut(|c| c.is_idle_open());
        if list.len() < MAX_IDLE_PER_PEER && total - (before - list.len()) < MAX_IDLE {
            list.push(conn);
        }
        if list.is_empty() {
            idle.remove(addr);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Conn>>> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
