//! Dialing peers and keeping idle connections for reuse.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use dfs_protocol::{Identity, PeerKind};

use crate::client::Routes;
use crate::error::ClientError;

pub type Conn = dfs_protocol::net::TcpConn;

/// Idle connections kept per address; more are closed when returned.
const MAX_IDLE_PER_ADDR: usize = 16;

#[derive(Debug)]
pub struct Pool {
    identity: Identity,
    routes: Routes,
    idle: Mutex<HashMap<String, Vec<Conn>>>,
}

impl Pool {
    /// A pool whose connections prove `identity`, dialing through `routes`.
    pub fn new(identity: Identity, routes: Routes) -> Pool {
        Pool {
            identity,
            routes,
            idle: Mutex::default(),
        }
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// An idle connection to `addr`, or a new one (connected and handshaken within `timeout`).
    pub async fn get(&self, addr: &str, timeout: Duration) -> Result<Conn, ClientError> {
        while let Some(mut conn) = self.lock().get_mut(addr).and_then(Vec::pop) {
            if conn.is_idle_open() {
                return Ok(conn);
            }
        }
        // The dial's own timeout error is reported as ours, with the address.
        match tokio::time::timeout(
            timeout,
            dfs_protocol::net::dial(
                self.routes.resolve(addr),
                PeerKind::Client,
                &self.identity,
                timeout + timeout,
            ),
        )
        .await
        {
            Ok(r) => r.map_err(|e| ClientError::peer(addr, e)),
            Err(_) => Err(ClientError::Timeout {
                addr: addr.to_string(),
                after: timeout,
            }),
        }
    }

    /// Returns a connection that finished its exchange cleanly.
    pub fn put(&self, addr: &str, conn: Conn) {
        let mut idle = self.lock();
        let list = idle.entry(addr.to_string()).or_default();
        if list.len() < MAX_IDLE_PER_ADDR {
            list.push(conn);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Conn>>> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
