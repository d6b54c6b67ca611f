//! Health and file reports read off the state: `fsck` (paged, and walked in
//! slices) and `stat`.

use std::cmp::Ordering;

use dfs_protocol::auth::ops;
use dfs_protocol::{ChunkInfo, FileHealth, FileKind, FileStat, FsckReport};

use super::{Minter, State};
use crate::error::OpError;
use crate::namespace::tree_walk::{tree_cmp, TreeWalk};
use crate::namespace::InodeRef;

/// Files listed in an fsck report.
pub(super) const MAX_FSCK_PROBLEMS: usize = 10_000;

/// Files a slice of an fsck looks at before the state lock is let go.
pub(super) const FSCK_SLICE: usize = 10_000;

/// An fsck under way: the unhealthy files at or below a path after the path
/// `after` (at most `limit` of them, in tree order: see [`tree_cmp`]) and the
/// cursor of the next page, with the health of every file (a first page) or not (a
/// next page). It walks the tree a slice at a time ([`TreeWalk`]), so a tree of
/// millions of files neither holds the state lock for long nor gathers its paths;
/// memory stays proportional to `limit` whatever the number of files or problems.
/// Like `count`, the report is not a snapshot when the tree changes during the walk.
///
/// A first page walks the whole tree for its totals. A next page starts at its
/// cursor and stops once its page is full: after a loss at 10 M files, when a
/// million files are short of replicas, each page of problems used to walk every
/// file again (some 30 s a page).
pub(super) struct Fsck {
    walk: TreeWalk,
    report: FsckReport,
    page: Vec<FileHealth>,
    /// Problems count only after this path (a first page asked with a cursor).
    after: Option<String>,
    limit: usize,
    /// Walk every file for the totals, rather than stop at a full page.
    totals: bool,
}

impl Fsck {
    /// The first page (with totals) of the problems after `after`.
    pub(super) fn start(
        st: &State,
        path: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Fsck, OpError> {
        Ok(Fsck {
            walk: TreeWalk::start(&st.ns, path)?,
            report: empty_report(st, path),
            page: Vec::new(),
            after: after.map(str::to_string),
            limit,
            totals: true,
        })
    }

    /// A next page: the problems after `after` alone, walked from there.
    pub(super) fn start_after(
        st: &State,
        path: &str,
        after: &str,
        limit: usize,
    ) -> Result<Fsck, OpError> {
        Ok(Fsck {
            walk: TreeWalk::start_after(&st.ns, path, after)?,
            report: empty_report(st, path),
            page: Vec::new(),
            after: None,
            limit,
            totals: false,
        })
    }

    fn full(&self) -> bool {
        self.page.len() > self.limit
    }

    /// Checks up to `budget` entries; `true` once done.
    pub(super) fn step(&mut self, st: &State, budget: usize) -> bool {
        let Fsck {
            walk,
            report,
            page,
            after,
            limit,
            totals,
        } = self;
        let now = st.clock.now();
        report.safe_mode = st.safe.is_some();
        let done = walk.step(&st.ns, budget, |path, inode| {
            if inode.kind != FileKind::File || (!*totals && page.len() > *limit) {
                return;
            }
            let mut health = check(st, report, inode, now);
            let sick = health.missing + health.under_replicated + health.corrupt + health.stale > 0;
            if sick
                && page.len() <= *limit
                && after
                    .as_deref()
                    .is_none_or(|a| tree_cmp(path, a) == Ordering::Greater)
            {
                health.path = path.to_string();
                page.push(health);
            }
        });
        done || (!self.totals && self.full())
    }

    /// The report and the cursor of the next page.
    pub(super) fn finish(mut self) -> (FsckReport, Option<String>) {
        let next = if self.full() {
            self.page.truncate(self.limit);
            self.page.last().map(|h| h.path.clone())
        } else {
            None
        };
        self.report.problems = self.page;
        (self.report, next)
    }
}

fn empty_report(st: &State, path: &str) -> FsckReport {
    FsckReport {
        path: path.to_string(),
        files: 0,
        chunks: 0,
        missing: 0,
        under_replicated: 0,
        corrupt: 0,
        stale: 0,
        over_replicated: 0,
        safe_mode: st.safe.is_some(),
        problems: Vec::new(),
    }
}

/// One file's health (its path left empty: most files are healthy, and only a
/// listed one needs it), added to the report's totals.
fn check(
    st: &State,
    report: &mut FsckReport,
    inode: &InodeRef<'_>,
    now: std::time::Instant,
) -> FileHealth {
    let mut health = FileHealth {
        path: String::new(),
        chunks: inode.chunks.len() as u64,
        missing: 0,
        under_replicated: 0,
        corrupt: 0,
        stale: 0,
    };
    for c in &inode.chunks {
        // One pass over the holders: at 10 M files the lookups into the chunk map
        // are most of fsck's time, each a likely cache (and TLB) miss.
        let chain = st.ns.open_chain(&c.handle);
        let (mut all, mut live, mut stale) = (0u64, 0u64, false);
        for (server, version) in st.map.holder_versions(&c.handle) {
            if !st.map.is_alive(&server, now) {
                continue;
            }
            if version == c.version {
                all += 1;
                if st.counts(&server, &c.handle, chain) {
                    live += 1;
                }
            } else if version < c.version {
                // A stale replica on a dead server is harmless: deleted when it returns.
                stale = true;
            }
        }
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
        if stale {
            health.stale += 1;
        }
    }
    report.files += 1;
    report.chunks += health.chunks;
    report.missing += health.missing;
    report.under_replicated += health.under_replicated;
    report.corrupt += health.corrupt;
    report.stale += health.stale;
    health
}

pub(super) fn stat(st: &State, tokens: &Minter, path: &str) -> Result<FileStat, OpError> {
    let (path, ino, inode) = st.ns.stat_ino(path)?;
    let attr = st.ns.attr(ino, inode.kind, inode.mtime);
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
