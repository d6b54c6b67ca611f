//! Client keys: issuing, listing and removing them (logged like the namespace), and
//! the table of them that chunkservers receive, sealed for each connection.

use std::time::Duration;

use dfs_protocol::auth::{seal, valid_key_name, SealedKey, MAX_KEY_NAME};
use dfs_protocol::{Accepted, ClientKey, ErrorCode, KeyInfo, KeyTable, Response, Role, ServerId};

use super::Master;
use crate::error::OpError;
use crate::mutation::Mutation;
use crate::namespace::Namespace;
use crate::store::KeyRecord;

/// Keys the master holds at most: each is pushed to every chunkserver.
pub const MAX_KEYS: usize = 10_000;

/// Every key, sealed with `session` (the chunkserver connection's session key).
pub(super) fn table(ns: &Namespace, session: &[u8; 32]) -> KeyTable {
    let epoch = ns.keys_epoch();
    KeyTable {
        epoch,
        keys: ns
            .keys()
            .map(|(name, record)| SealedKey {
                name: name.clone(),
                role: record.role,
                sealed: seal(session, epoch, name, &record.secret),
            })
            .collect(),
    }
}

pub(super) fn list(ns: &Namespace) -> Vec<KeyInfo> {
    ns.keys()
        .map(|(name, record)| KeyInfo {
            name: name.clone(),
            role: record.role,
            created: record.created,
        })
        .collect()
}

pub(super) fn plan_remove(ns: &Namespace, name: &str) -> Result<Mutation, OpError> {
    if ns.key(name).is_none() {
        return Err(ErrorCode::NotFound {
            path: format!("key '{name}'"),
        }
        .into());
    }
    Ok(Mutation::RemoveKey {
        name: name.to_string(),
    })
}

/// How long a key change waits for live chunkservers to hold it.
const KEY_PROPAGATION: Duration = Duration::from_secs(10);

impl Master {
    /// Waits until every live chunkserver said it holds the current key table (they
    /// get it with their next heartbeat's answer), so a key works everywhere, and a
    /// removed one nowhere, once `dfs key` returns. A server that does not catch up
    /// in time is logged; it gets the table with its next heartbeat all the same.
    pub(super) async fn keys_everywhere(&self) {
        let deadline = self.clock.now() + KEY_PROPAGATION;
        loop {
            let behind: Vec<ServerId> = {
                let st = self.lock();
                let epoch = st.ns.keys_epoch();
                st.map
                    .live(self.clock.now())
                    .filter(|id| st.key_epochs.get(id) != Some(&epoch))
                    .copied()
                    .collect()
            };
            if behind.is_empty() {
                return;
            }
            if self.clock.now() >= deadline {
                tracing::warn!(
                    ?behind,
                    "chunkservers have not picked up the key change yet"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `CreateKey`: a new random key, logged before it is answered, its secret
    /// sealed for the asking connection.
    pub(super) async fn create_key(
        &self,
        from: &Accepted,
        name: String,
        role: Role,
    ) -> Result<Response, OpError> {
        if !valid_key_name(&name) {
            return Err(ErrorCode::InvalidArgument {
                reason: format!(
                    "invalid key name {name:?}: use 1 to {MAX_KEY_NAME} letters, digits, '-', '_' or '.'"
                ),
            }
            .into());
        }
        let key = ClientKey::generate(&name).map_err(|e| ErrorCode::InvalidArgument {
            reason: e.to_string(),
        })?;
        let record = KeyRecord {
            role,
            secret: *key.secret.as_bytes(),
            created: self.clock.secs(),
        };
        self.mutate(|st| {
            if st.ns.key(&name).is_some() {
                return Err(ErrorCode::AlreadyExists {
                    path: format!("key '{name}'"),
                }
                .into());
            }
            if st.ns.keys().count() >= MAX_KEYS {
                return Err(ErrorCode::InvalidArgument {
                    reason: format!("at most {MAX_KEYS} keys; remove unused ones first"),
                }
                .into());
            }
            Ok((
                Some(Mutation::CreateKey {
                    name: name.clone(),
                    record: record.clone(),
                }),
                (),
            ))
        })
        .await?;
        tracing::info!(key = %name, role = role.as_str(), by = %from.peer, "client key created");
        self.keys_everywhere().await;
        Ok(Response::KeyCreated {
            sealed: seal(&from.session, 0, &name, &record.secret),
            name,
            role,
        })
    }
}
