//! The master's recent operations, for the status page: a bounded ring of the
//! client requests that change something (listings and polls are left out), with
//! who sent them, how long they took and how they ended.

use std::collections::VecDeque;
use std::sync::Mutex;

use dfs_protocol::ClientToMaster;

/// Operations kept; older ones fall off.
const KEPT: usize = 200;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecentOp {
    /// Seconds since the Unix epoch, on the master's clock.
    pub at: u64,
    pub op: &'static str,
    /// The path (or key, or server) it was about.
    pub target: String,
    /// The key that sent it (`cluster secret` for the secret's holder).
    pub by: String,
    pub micros: u64,
    /// `None` when it succeeded.
    pub error: Option<String>,
}

#[derive(Debug, Default)]
pub struct RecentOps {
    ops: Mutex<VecDeque<RecentOp>>,
}

impl RecentOps {
    pub fn record(&self, op: RecentOp) {
        let mut ops = self
            .ops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if ops.len() == KEPT {
            ops.pop_front();
        }
        ops.push_back(op);
    }

    /// The newest first.
    pub fn newest(&self) -> Vec<RecentOp> {
        self.ops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .rev()
            .cloned()
            .collect()
    }
}

/// What a request is about, when it is worth showing: `None` for reads and polls,
/// and for the steps inside a put or an append (their begin and commit are shown).
pub fn describe(request: &ClientToMaster) -> Option<String> {
    use ClientToMaster as C;
    Some(match request {
        C::Mkdir { path, .. }
        | C::Delete { path, .. }
        | C::BeginPut { path, .. }
        | C::TrashRestore { path }
        | C::SetReplication { path, .. }
        | C::Touch { path }
        | C::SetAttr { path, .. } => path.clone(),
        C::Symlink { path, target } => format!("{path} -> {target}"),
        C::Rename { src, dst } | C::RenameOver { src, dst, .. } => format!("{src} -> {dst}"),
        C::CommitPut { upload, chunks } | C::CommitRewrite { upload, chunks } => {
            format!("upload {upload} ({} chunks)", chunks.len())
        }
        C::AbortPut { upload } => format!("upload {upload}"),
        C::AppendTarget {
            path,
            report: Some(_),
            ..
        } => path.clone(),
        C::Decommission { addr, on } => format!("{addr} ({})", if *on { "on" } else { "off" }),
        C::Balance {
            threshold_percent: Some(p),
        } => format!("threshold {p}%"),
        C::CreateKey { name, .. } | C::RemoveKey { name } => name.clone(),
        C::TrashEmpty => "the trash".into(),
        C::RetryChunk { handle, failed, .. } => format!("chunk {handle} without {failed:?}"),
        _ => return None,
    })
}
