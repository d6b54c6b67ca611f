//! Who may ask the master what: the key behind each credential in the handshake,
//! the role each request needs, and the check that a client's key still exists on
//! every request (so a removed key stops working at once, also on open connections).

use dfs_protocol::auth::{fingerprint, Peer, Role};
use dfs_protocol::{ClusterSecret, Credential, ErrorCode, Request};

use crate::namespace::Namespace;

/// What a request needs of the peer that sends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    /// Any client key.
    Client(Role),
    /// A chunkserver (reporting about itself).
    Chunkserver,
    /// Nobody sends this to the master.
    Never,
}

fn need(request: &Request) -> Need {
    match request {
        Request::List { .. }
        | Request::Stat { .. }
        | Request::Status
        | Request::TrashList
        | Request::Fsck { .. }
        | Request::Balance {
            threshold_percent: None,
        }
        | Request::ListPage { .. }
        | Request::TrashPage { .. }
        | Request::FsckPage { .. }
        | Request::StatusPage { .. } => Need::Client(Role::ReadOnly),
        Request::Mkdir { .. }
        | Request::Delete { .. }
        | Request::Rename { .. }
        | Request::TrashRestore { .. }
        | Request::BeginPut { .. }
        | Request::AllocateChunk { .. }
        | Request::CommitPut { .. }
        | Request::AbortPut { .. }
        | Request::RetryChunk { .. }
        | Request::SetReplication { .. }
        | Request::AppendTarget { .. } => Need::Client(Role::ReadWrite),
        Request::Decommission { .. }
        | Request::Balance {
            threshold_percent: Some(_),
        }
        | Request::CreateKey { .. }
        | Request::ListKeys
        | Request::RemoveKey { .. } => Need::Client(Role::Admin),
        Request::Register { .. } | Request::Heartbeat { .. } => Need::Chunkserver,
        Request::Hello { .. }
        | Request::Auth { .. }
        | Request::Proof { .. }
        | Request::WriteChunk { .. }
        | Request::WritePacket { .. }
        | Request::ReadChunk { .. }
        | Request::GrantLease { .. }
        | Request::BumpVersion { .. }
        | Request::TruncateChunk { .. }
        | Request::Append { .. }
        | Request::AppendForward { .. }
        | Request::ChunkLength { .. } => Need::Never,
    }
}

/// Whether `peer` may send `request` to the master.
pub fn authorize(peer: &Peer, request: &Request) -> Result<(), ErrorCode> {
    let forbidden = |reason: String| Err(ErrorCode::Forbidden { reason });
    match (need(request), peer) {
        (Need::Client(want), Peer::Client { role, .. }) if *role >= want => Ok(()),
        (Need::Client(want), Peer::Client { .. }) => forbidden(format!(
            "{} needs a {} key; {peer} may not",
            request.name(),
            want.as_str()
        )),
        (Need::Chunkserver, Peer::Chunkserver { id }) => {
            let claimed = match request {
                Request::Register { server, .. } | Request::Heartbeat { server, .. } => server,
                _ => id,
            };
            if claimed == id {
                Ok(())
            } else {
                forbidden(format!(
                    "chunkserver {id} may not report for chunkserver {claimed}"
                ))
            }
        }
        (Need::Never, _) => Err(ErrorCode::BadRequest {
            reason: format!("{} is not a master request", request.name()),
        }),
        _ => forbidden(format!("{peer} may not send {}", request.name())),
    }
}

/// The key behind `credential`, and who its holder is once proven.
pub fn lookup(
    ns: &Namespace,
    secret: &ClusterSecret,
    credential: &Credential,
) -> Result<([u8; 32], Peer), ErrorCode> {
    match credential {
        Credential::Key { name } => match ns.key(name) {
            Some(record) => Ok((
                record.secret,
                Peer::Client {
                    key: Some(name.clone()),
                    role: record.role,
                    fingerprint: fingerprint(&record.secret),
                },
            )),
            None => Err(ErrorCode::AuthFailed {
                reason: format!("unknown key '{name}'"),
            }),
        },
        Credential::ClusterSecret => {
            let key = secret.admin_key();
            Ok((
                key,
                Peer::Client {
                    key: None,
                    role: Role::Admin,
                    fingerprint: fingerprint(&key),
                },
            ))
        }
        Credential::Chunkserver { id } => Ok((secret.server_key(), Peer::Chunkserver { id: *id })),
        Credential::Master => Err(ErrorCode::AuthFailed {
            reason: "the master does not take connections from masters".into(),
        }),
    }
}

/// Whether an authenticated client's key still stands: removed or replaced keys
/// are refused on their connections' next request.
pub fn still_valid(ns: &Namespace, peer: &Peer) -> Result<(), ErrorCode> {
    match peer {
        Peer::Client {
            key: Some(name),
            fingerprint: fp,
            ..
        } => match ns.key(name) {
            Some(record) if fingerprint(&record.secret) == *fp => Ok(()),
            _ => Err(ErrorCode::AuthFailed {
                reason: format!("key '{name}' was removed"),
            }),
        },
        _ => Ok(()),
    }
}
