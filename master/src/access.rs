//! Who may ask the master what: the key behind each credential in the handshake,
//! the role each request needs, and the check that a client's key still exists on
//! every request (so a removed key stops working at once, also on open connections).
//!
//! Requests come typed by link: a client's are `ClientToMaster`, a chunkserver's
//! `ChunkserverToMaster`; any other link's requests are not the master's.

use dfs_protocol::auth::{fingerprint, Peer, Role};
use dfs_protocol::{
    ChunkserverToMaster, ClientToMaster, ClusterSecret, Credential, ErrorCode, Request,
};

use crate::namespace::Namespace;

/// The least role a client request needs.
fn role_for(request: &ClientToMaster) -> Role {
    match request {
        ClientToMaster::List { .. }
        | ClientToMaster::Stat { .. }
        | ClientToMaster::Status
        | ClientToMaster::TrashList
        | ClientToMaster::Fsck { .. }
        | ClientToMaster::Balance {
            threshold_percent: None,
        }
        | ClientToMaster::ListPage { .. }
        | ClientToMaster::TrashPage { .. }
        | ClientToMaster::FsckPage { .. }
        | ClientToMaster::FsckFrom { .. }
        | ClientToMaster::StatusPage { .. }
        | ClientToMaster::ReadLink { .. }
        | ClientToMaster::Summary { .. } => Role::ReadOnly,
        ClientToMaster::Mkdir { .. }
        | ClientToMaster::Delete { .. }
        | ClientToMaster::Rename { .. }
        | ClientToMaster::TrashRestore { .. }
        | ClientToMaster::BeginPut { .. }
        | ClientToMaster::AllocateChunk { .. }
        | ClientToMaster::CommitPut { .. }
        | ClientToMaster::AbortPut { .. }
        | ClientToMaster::RetryChunk { .. }
        | ClientToMaster::SetReplication { .. }
        | ClientToMaster::AppendTarget { .. }
        | ClientToMaster::Touch { .. }
        | ClientToMaster::SetAttr { .. }
        | ClientToMaster::CommitRewrite { .. }
        | ClientToMaster::Symlink { .. }
        | ClientToMaster::RenameOver { .. } => Role::ReadWrite,
        ClientToMaster::Decommission { .. }
        | ClientToMaster::Balance {
            threshold_percent: Some(_),
        }
        | ClientToMaster::CreateKey { .. }
        | ClientToMaster::TrashEmpty
        | ClientToMaster::ListKeys
        | ClientToMaster::RemoveKey { .. } => Role::Admin,
    }
}

/// Whether `peer` may send `request` to the master: clients the client link, with
/// the role it needs; chunkservers the chunkserver link, about themselves only.
pub fn authorize(peer: &Peer, request: &Request) -> Result<(), ErrorCode> {
    let forbidden = |reason: String| Err(ErrorCode::Forbidden { reason });
    match (request, peer) {
        (Request::Master(r), Peer::Client { role, .. }) => {
            let want = role_for(r);
            if *role >= want {
                Ok(())
            } else {
                let article = if want == Role::Admin { "an" } else { "a" };
                forbidden(format!(
                    "{} needs {article} {} key; {peer} may not",
                    r.name(),
                    want.as_str()
                ))
            }
        }
        (Request::Report(r), Peer::Chunkserver { id }) => {
            let claimed = match r {
                ChunkserverToMaster::Register { server, .. }
                | ChunkserverToMaster::Heartbeat { server, .. } => server,
            };
            if claimed == id {
                Ok(())
            } else {
                forbidden(format!(
                    "chunkserver {id} may not report for chunkserver {claimed}"
                ))
            }
        }
        (Request::Master(_) | Request::Report(_), _) => {
            forbidden(format!("{peer} may not send {}", request.name()))
        }
        _ => Err(ErrorCode::BadRequest {
            reason: format!("{} is not a master request", request.name()),
        }),
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
            Some(record) => Ok(Peer::key_holder(name, record.secret, record.role)),
            None => Err(ErrorCode::AuthFailed {
                reason: format!("unknown key '{name}'"),
            }),
        },
        Credential::ClusterSecret => Ok(Peer::cluster_admin(secret)),
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
