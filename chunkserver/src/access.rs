//! Who may ask a chunkserver what: the key behind each credential in the handshake
//! (client keys as the master last pushed them), the role each request needs, and
//! the chunk token that must come with every request on a chunk.

use std::collections::HashMap;
use std::sync::RwLock;

use dfs_protocol::auth::{fingerprint, ops, unix_now, unseal, Peer, Role};
use dfs_protocol::{
    ChunkHandle, ChunkToken, ChunkVersion, Credential, ErrorCode, KeyTable, Request,
};
use dfs_protocol::{ChunkRequest, LeaseGrant, MasterOrder, PeerOrder};

use crate::ctx::Ctx;

/// A client key as a chunkserver holds it; the fingerprint is kept so that checking a
/// connection's key on every request costs a lookup, not a hash.
#[derive(Clone, Copy)]
struct HeldKey {
    secret: [u8; 32],
    role: Role,
    fingerprint: [u8; 32],
}

impl std::fmt::Debug for HeldKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret: a `Ctx` may be logged.
        f.debug_struct("HeldKey")
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// Client keys by name.
type Keys = HashMap<String, HeldKey>;

/// The client keys and the epoch of the master's table they came from.
#[derive(Debug, Default)]
pub struct KeyStore {
    inner: RwLock<(u64, Keys)>,
}

impl KeyStore {
    /// The epoch held (0 before the first table).
    pub fn epoch(&self) -> u64 {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
    }

    /// Replaces the keys with `table`, sealed for the session `session`.
    pub fn load(&self, table: &KeyTable, session: &[u8; 32]) {
        let keys = table
            .keys
            .iter()
            .map(|k| {
                let secret = unseal(session, table.epoch, &k.name, &k.sealed);
                let held = HeldKey {
                    secret,
                    role: k.role,
                    fingerprint: fingerprint(&secret),
                };
                (k.name.clone(), held)
            })
            .collect();
        *self
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = (table.epoch, keys);
    }

    fn get(&self, name: &str) -> Option<HeldKey> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .1
            .get(name)
            .copied()
    }
}

/// The key behind `credential`, and who its holder is once proven.
pub fn lookup(ctx: &Ctx, credential: &Credential) -> Result<([u8; 32], Peer), ErrorCode> {
    let secret = &ctx.config.secret;
    match credential {
        Credential::Key { name } => match ctx.keys.get(name) {
            Some(k) => Ok(Peer::key_holder(name, k.secret, k.role)),
            None => Err(ErrorCode::AuthFailed {
                reason: format!("unknown key '{name}'"),
            }),
        },
        Credential::ClusterSecret => Ok(Peer::cluster_admin(secret)),
        Credential::Chunkserver { id } => Ok((secret.server_key(), Peer::Chunkserver { id: *id })),
        Credential::Master => Ok((secret.server_key(), Peer::Master)),
    }
}

/// Who may send a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sender {
    /// A client with at least this role, or a peer chunkserver.
    ClientOrPeer(Role),
    /// A client with at least this role.
    Client(Role),
    /// The master.
    Master,
    /// Another chunkserver (a primary ordering its secondaries).
    Peer,
}

/// What a request on a chunk needs: who may send it, and its token.
fn needs(request: &Request) -> Option<(Sender, ChunkHandle, ChunkVersion, u8, &ChunkToken)> {
    Some(match request {
        Request::Chunk(ChunkRequest::WriteChunk {
            handle,
            version,
            token,
            ..
        })
        | Request::Chunk(ChunkRequest::CopyFrom {
            handle,
            version,
            token,
            ..
        }) => (
            Sender::ClientOrPeer(Role::ReadWrite),
            *handle,
            *version,
            ops::WRITE,
            token,
        ),
        Request::Chunk(ChunkRequest::ReadChunk {
            handle,
            version,
            token,
            ..
        })
        | Request::Chunk(ChunkRequest::ChunkLength {
            handle,
            version,
            token,
        })
        | Request::Chunk(ChunkRequest::Digest {
            handle,
            version,
            token,
        })
        | Request::Chunk(ChunkRequest::ReadStored {
            handle,
            version,
            token,
            ..
        }) => (
            Sender::ClientOrPeer(Role::ReadOnly),
            *handle,
            *version,
            ops::READ,
            token,
        ),
        Request::Chunk(ChunkRequest::Append {
            handle,
            version,
            token,
            ..
        }) => (
            Sender::Client(Role::ReadWrite),
            *handle,
            *version,
            ops::APPEND,
            token,
        ),
        Request::Order(MasterOrder::GrantLease(LeaseGrant {
            handle,
            version,
            token,
            ..
        })) => (Sender::Master, *handle, *version, ops::ORDER, token),
        Request::Peer(PeerOrder::BumpVersion {
            handle,
            version,
            token,
            ..
        })
        | Request::Peer(PeerOrder::TruncateChunk {
            handle,
            version,
            token,
            ..
        })
        | Request::Peer(PeerOrder::AppendForward {
            handle,
            version,
            token,
            ..
        }) => (Sender::Peer, *handle, *version, ops::ORDER, token),
        _ => return None,
    })
}

/// Whether `peer` may send `request` now: its key still stands, its role allows
/// the request, and the request's chunk token is the master's, for this chunk and
/// version and operation, and unexpired.
pub fn admit(ctx: &Ctx, peer: &Peer, request: &Request) -> Result<(), ErrorCode> {
    if let Peer::Client {
        key: Some(name),
        fingerprint: fp,
        ..
    } = peer
    {
        match ctx.keys.get(name) {
            Some(k) if k.fingerprint == *fp => {}
            _ => {
                return Err(ErrorCode::AuthFailed {
                    reason: format!("key '{name}' was removed"),
                })
            }
        }
    }
    let Some((sender, handle, version, op, token)) = needs(request) else {
        return Err(ErrorCode::BadRequest {
            reason: format!("{} is not a chunkserver request", request.name()),
        });
    };
    let allowed = match (sender, peer) {
        (Sender::ClientOrPeer(want) | Sender::Client(want), Peer::Client { role, .. }) => {
            *role >= want
        }
        (Sender::ClientOrPeer(_), Peer::Chunkserver { .. } | Peer::Master) => true,
        (Sender::Master, Peer::Master) => true,
        (Sender::Peer, Peer::Chunkserver { .. }) => true,
        _ => false,
    };
    if !allowed {
        return Err(ErrorCode::Forbidden {
            reason: format!("{peer} may not send {}", request.name()),
        });
    }
    token
        .check(&ctx.token_key, handle, version, op, unix_now())
        .map_err(|e| ErrorCode::TokenRefused {
            handle,
            reason: e.to_string(),
        })
}
