//! Listings, which the master answers in pages of bounded size: one page at a time
//! (for callers that stream, like `dfs ls`), or all pages gathered.

use dfs_protocol::ClientToMaster;
use dfs_protocol::{ClusterStatus, DirEntry, FsckReport, Request, Response, TrashInfo};

use crate::client::Client;
use crate::error::ClientError;

/// Entries asked for per page when gathering whole listings.
const PAGE: u32 = 5_000;

impl Client {
    /// Up to `limit` entries of the directory at `path` after the name `after` (in
    /// name order), and the cursor for the next page (`None`: that was the last). A
    /// file lists as its one entry.
    pub async fn list_page(
        &self,
        path: &str,
        after: Option<String>,
        limit: u32,
    ) -> Result<(Vec<DirEntry>, Option<String>), ClientError> {
        let request = Request::Master(ClientToMaster::ListPage {
            path: path.to_string(),
            after,
            limit,
        });
        match self.master_call(request).await? {
            Response::ListingPage { entries, next } => Ok((entries, next)),
            other => Err(self.unexpected(&other)),
        }
    }

    /// A directory's entries (every page), or the one entry of a file.
    pub async fn list(&self, path: &str) -> Result<Vec<DirEntry>, ClientError> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let (entries, next) = self.list_page(path, after, PAGE).await?;
            out.extend(entries);
            match next {
                Some(n) => after = Some(n),
                None => return Ok(out),
            }
        }
    }

    /// What the trash holds, oldest first.
    pub async fn trash_list(&self) -> Result<Vec<TrashInfo>, ClientError> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let request = Request::Master(ClientToMaster::TrashPage { after, limit: PAGE });
            match self.master_call(request).await? {
                Response::TrashPage { entries, next } => {
                    out.extend(entries);
                    match next {
                        Some(n) => after = Some(n),
                        None => return Ok(out),
                    }
                }
                other => return Err(self.unexpected(&other)),
            }
        }
    }

    /// Replication and checksum health of every file at or below `path`, with every
    /// unhealthy file in path order.
    pub async fn fsck(&self, path: &str) -> Result<FsckReport, ClientError> {
        let mut all: Option<FsckReport> = None;
        let mut after = None;
        loop {
            let request = Request::Master(ClientToMaster::FsckPage {
                path: path.to_string(),
                after,
                limit: PAGE,
            });
            match self.master_call(request).await? {
                Response::FsckPage { report, next } => {
                    match all.as_mut() {
                        None => all = Some(report),
                        Some(a) => a.problems.extend(report.problems),
                    }
                    match next {
                        Some(n) => after = Some(n),
                        None => break,
                    }
                }
                other => return Err(self.unexpected(&other)),
            }
        }
        all.ok_or_else(|| ClientError::BadReply {
            addr: self.master().to_string(),
            reason: "no fsck report".into(),
        })
    }

    /// The cluster: every chunkserver, capacity, use, and the totals.
    pub async fn status(&self) -> Result<ClusterStatus, ClientError> {
        let mut all: Option<ClusterStatus> = None;
        let mut after = None;
        loop {
            let request = Request::Master(ClientToMaster::StatusPage { after, limit: PAGE });
            match self.master_call(request).await? {
                Response::StatusPage { status, next } => {
                    match all.as_mut() {
                        None => all = Some(status),
                        Some(a) => a.chunkservers.extend(status.chunkservers),
                    }
                    match next {
                        Some(n) => after = Some(n),
                        None => break,
                    }
                }
                other => return Err(self.unexpected(&other)),
            }
        }
        all.ok_or_else(|| ClientError::BadReply {
            addr: self.master().to_string(),
            reason: "no status".into(),
        })
    }
}
