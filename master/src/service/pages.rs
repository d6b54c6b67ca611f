//! Listings in pages: each answer is one bounded frame, and the cursor in it asks
//! for the next, so listing a directory of any size takes bounded memory on both
//! sides.

use dfs_protocol::{ClusterStatus, TrashInfo};

use super::State;

/// Most entries in one page, whatever the client asks for.
pub const MAX_PAGE: usize = 10_000;

/// The page size to use for a client's `limit` (0 means the largest).
pub fn limit(asked: u32) -> usize {
    match usize::try_from(asked) {
        Ok(0) | Err(_) => MAX_PAGE,
        Ok(n) => n.min(MAX_PAGE),
    }
}

/// Trash entries after the cursor `after`, and the next cursor.
pub(super) fn trash(
    st: &State,
    after: Option<u64>,
    limit: usize,
    retention: u64,
) -> (Vec<TrashInfo>, Option<u64>) {
    let mut page: Vec<(u64, TrashInfo)> = st
        .ns
        .trash_after(after)
        .take(limit.saturating_add(1))
        .map(|(id, t)| {
            let info = TrashInfo {
                path: t.original_path.clone(),
                kind: t.kind,
                size: t.size,
                deleted_at: t.deleted_at,
                expires_at: t.deleted_at.saturating_add(retention),
            };
            (*id, info)
        })
        .collect();
    let next = if page.len() > limit {
        page.truncate(limit);
        page.last().map(|(id, _)| *id)
    } else {
        None
    };
    (page.into_iter().map(|(_, t)| t).collect(), next)
}

/// The status with the chunkservers after the address `after` (they are sorted by
/// address), at most `limit` of them, and the next cursor.
pub(super) fn status(
    mut status: ClusterStatus,
    after: Option<&str>,
    limit: usize,
) -> (ClusterStatus, Option<String>) {
    let servers = std::mem::take(&mut status.chunkservers);
    let mut page: Vec<_> = servers
        .into_iter()
        .filter(|s| after.is_none_or(|a| s.addr.as_str() > a))
        .take(limit.saturating_add(1))
        .collect();
    let next = if page.len() > limit {
        page.truncate(limit);
        page.last().map(|s| s.addr.clone())
    } else {
        None
    };
    status.chunkservers = page;
    (status, next)
}
