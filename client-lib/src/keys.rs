//! Client keys: issuing, listing and removing them (admin keys or the cluster
//! secret only).

use dfs_protocol::auth::unseal;
use dfs_protocol::ClientToMaster;
use dfs_protocol::{ClientKey, KeyInfo, PeerKind, Request, Response, Role};

use crate::client::Client;
use crate::error::ClientError;

impl Client {
    /// Issues a key called `name` with `role`. The master seals its secret for this
    /// connection, so it never crosses the network in the clear.
    pub async fn create_key(&self, name: &str, role: Role) -> Result<ClientKey, ClientError> {
        let addr = self.master();
        let opts = &self.inner.options;
        let identity = self.inner.pool.identity();
        let (mut conn, session) = tokio::time::timeout(
            opts.connect_timeout,
            dfs_protocol::net::dial_session(addr, PeerKind::Client, identity, opts.connect_timeout),
        )
        .await
        .map_err(|_| ClientError::Timeout {
            addr: addr.to_string(),
            after: opts.connect_timeout,
        })?
        .map_err(|e| ClientError::peer(addr, e))?;
        let request = Request::Master(ClientToMaster::CreateKey {
            name: name.to_string(),
            role,
        });
        let answer = self
            .exchange(addr, async { conn.call(request).await })
            .await?;
        match answer {
            Response::KeyCreated {
                name: got, sealed, ..
            } if got == name => Ok(ClientKey {
                secret: dfs_protocol::auth::SecretBytes::from_bytes(unseal(
                    &session.key,
                    0,
                    &got,
                    &sealed,
                )),
                name: got,
            }),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Every key: names, roles, creation times; never secrets.
    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>, ClientError> {
        match self
            .master_call(Request::Master(ClientToMaster::ListKeys))
            .await?
        {
            Response::Keys { keys } => Ok(keys),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Withdraws the key `name`: it stops working at once, also on open connections.
    pub async fn remove_key(&self, name: &str) -> Result<(), ClientError> {
        match self
            .master_call(Request::Master(ClientToMaster::RemoveKey {
                name: name.to_string(),
            }))
            .await?
        {
            Response::Ok => Ok(()),
            other => Err(self.unexpected(&other)),
        }
    }
}
