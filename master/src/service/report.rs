//! Health and file reports read off the state: `fsck` (paged) and `stat`.

use dfs_protocol::auth::ops;
use dfs_protocol::{ChunkInfo, FileHealth, FileStat, FsckReport};

use super::{Minter, State};
use crate::error::OpError;

/// Files listed in an fsck report.
pub(super) const MAX_FSCK_PROBLEMS: usize = 10_000;

/// The health of every file at or below `path`, with the unhealthy files after the
/// path `after` (at most `limit` of them, in path order) and the cursor of the next
/// page. Memory stays proportional to `limit` whatever the number of problems.
pub(super) fn fsck(
    st: &State,
    path: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<(FsckReport, Option<String>), OpError> {
    let mut page: std::collections::BTreeMap<String, FileHealth> = Default::default();
    let now = st.clock.now();
    let files = st.ns.files_under(path)?;
    let mut report = FsckReport {
        path: path.to_string(),
        files: files.len() as u64,
        chunks: 0,
        missing: 0,
        under_replicated: 0,
        corrupt: 0,
        stale: 0,
        over_replicated: 0,
        safe_mode: st.safe.is_some(),
        problems: Vec::new(),
    };
    for (path, inode) in files {
        let mut health = FileHealth {
            path,
            chunks: inode.chunks.len() as u64,
            missing: 0,
            under_replicated: 0,
            corrupt: 0,
            stale: 0,
        };
        for c in &inode.chunks {
            let all = st.map.replicas(&c.handle, c.version, now).len() as u64;
            let live = st.effective(&c.handle, c.version, now).len() as u64;
            if all == 0 {
                health.missing += 1;
            } else if live < u64::from(inode.replication) {
                health.under_replicated += 1;
            } else if live > u64::from(inode.replication) {
                report.over_replicated += 1;
            }
            if st.corrupt.contains_key(&c.handle) {
                health.corrupt += 1;
            }
            // A stale replica on a dead server is harmless: deleted when it returns.
            if st
                .map
                .holders(&c.handle)
                .iter()
                .any(|(s, v)| *v < c.version && st.map.is_alive(s, now))
            {
                health.stale += 1;
            }
        }
        report.chunks += health.chunks;
        report.missing += health.missing;
        report.under_replicated += health.under_replicated;
        report.corrupt += health.corrupt;
        report.stale += health.stale;
        let sick = health.missing + health.under_replicated + health.corrupt + health.stale > 0;
        if sick && after.is_none_or(|a| health.path.as_str() > a) {
            page.insert(health.path.clone(), health);
            if page.len() > limit.saturating_add(1) {
                page.pop_last();
            }
        }
    }
    let next = if page.len() > limit {
        page.pop_last();
        page.keys().next_back().cloned()
    } else {
        None
    };
    report.problems = page.into_values().collect();
    Ok((report, next))
}

pub(super) fn stat(st: &State, tokens: &Minter, path: &str) -> Result<FileStat, OpError> {
    let (path, ino, inode) = st.ns.stat_ino(path)?;
    let attr = st.ns.attr(ino, &inode);
    let now = st.clock.now();
    let chunks = inode
        .chunks
        .iter()
        .map(|c| ChunkInfo {
            handle: c.handle,
            version: c.version,
            size: c.size,
            replicas: st
                .current(&c.handle, c.version, now)
                .into_iter()
                .map(|(_, addr)| addr)
                .collect(),
            open: st.ns.open_chain(&c.handle).is_some(),
            primary: st.lease(&c.handle, c.version).map(|l| l.addr.clone()),
            token: tokens.token(c.handle, c.version, ops::READ),
        })
        .collect();
    Ok(FileStat {
        path,
        kind: inode.kind,
        size: inode.size,
        replication: inode.replication,
        mtime: inode.mtime,
        chunks,
        mode: attr.mode,
        uid: attr.uid,
        gid: attr.gid,
        atime: attr.atime,
    })
}
