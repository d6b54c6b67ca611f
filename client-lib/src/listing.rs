//! Listings, which the master answers in pages of bounded size: one page at a time
//! (for callers that stream, like `dfs ls`), or all pages gathered.

use dfs_protocol::{
    ClientToMaster, ClusterStatus, DirEntry, FsckReport, Request, Response, TrashInfo,
};

use crate::client::Client;
use crate::error::ClientError;

/// What a subtree holds (`dfs count`, `dfs du`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub dirs: u64,
    pub files: u64,
    pub bytes: u64,
}

/// Entries asked for per page when gathering whole listings.
const PAGE: u32 = 5_000;

/// One page as gathering sees it: what the first page says besides its items (the
/// totals of fsck and status), the items, and the cursor of the next page.
type Page<H, T, C> = (H, Vec<T>, Option<C>);

impl Client {
    /// Asks for every page of a listing and gathers them: `ask` makes the request
    /// for a cursor, `open` takes a page apart (or names the answer of the wrong
    /// kind it got).
    async fn gather<H, T, C>(
        &self,
        ask: impl Fn(Option<C>) -> ClientToMaster,
        open: impl Fn(Response) -> Result<Page<H, T, C>, &'static str>,
    ) -> Result<(H, Vec<T>), ClientError> {
        let mut head = None;
        let mut items = Vec::new();
        let mut after = None;
        loop {
            let response = self.master_call(Request::Master(ask(after))).await?;
            let (h, page, next) = open(response).map_err(|got| ClientError::Unexpected {
                addr: self.master().to_string(),
                got,
            })?;
            head.get_or_insert(h);
            items.extend(page);
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        let head = head.ok_or_else(|| ClientError::BadReply {
            addr: self.master().to_string(),
            reason: "no page in a listing".into(),
        })?;
        Ok((head, items))
    }

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
        let ask = |after| ClientToMaster::ListPage {
            path: path.to_string(),
            after,
            limit: PAGE,
        };
        let open = |r| match r {
            Response::ListingPage { entries, next } => Ok(((), entries, next)),
            other => Err(other.name()),
        };
        Ok(self.gather(ask, open).await?.1)
    }

    /// What the trash holds, oldest first.
    pub async fn trash_list(&self) -> Result<Vec<TrashInfo>, ClientError> {
        let ask = |after| ClientToMaster::TrashPage { after, limit: PAGE };
        let open = |r| match r {
            Response::TrashPage { entries, next } => Ok(((), entries, next)),
            other => Err(other.name()),
        };
        Ok(self.gather(ask, open).await?.1)
    }

    /// What is at or below `path`: directories (`path` itself included when it is
    /// one), files and their bytes. One request: the master walks the tree in
    /// slices, with its lock free in between, so a tree of millions of entries
    /// costs no round trip per page and no memory here. A tree that changes
    /// meanwhile is not counted as of one instant.
    pub async fn summary(&self, path: &str) -> Result<Summary, ClientError> {
        let request = Request::Master(ClientToMaster::Summary {
            path: path.to_string(),
        });
        match self.master_call(request).await? {
            Response::Summary { dirs, files, bytes } => Ok(Summary { dirs, files, bytes }),
            other => Err(self.unexpected(&other)),
        }
    }

    /// The health of every file at or below `path`, with every unhealthy one in tree
    /// order. The first page carries the totals; the next ones are walked by the
    /// master from their cursor, so a million problems cost no walk of the whole
    /// tree per page.
    pub async fn fsck(&self, path: &str) -> Result<FsckReport, ClientError> {
        let ask = |after: Option<String>| match after {
            None => ClientToMaster::FsckPage {
                path: path.to_string(),
                after: None,
                limit: PAGE,
            },
            Some(after) => ClientToMaster::FsckFrom {
                path: path.to_string(),
                after,
                limit: PAGE,
            },
        };
        let open = |r| match r {
            Response::FsckPage { mut report, next } => {
                let problems = std::mem::take(&mut report.problems);
                Ok((Some(report), problems, next))
            }
            Response::FsckProblems { problems, next } => Ok((None, problems, next)),
            other => Err(other.name()),
        };
        let (report, problems) = self.gather(ask, open).await?;
        let mut report = report.ok_or_else(|| ClientError::BadReply {
            addr: self.master().to_string(),
            reason: "an fsck without its first page".into(),
        })?;
        report.problems = problems;
        Ok(report)
    }

    /// The cluster: every chunkserver, capacity, use, and the totals.
    pub async fn status(&self) -> Result<ClusterStatus, ClientError> {
        let ask = |after| ClientToMaster::StatusPage { after, limit: PAGE };
        let open = |r| match r {
            Response::StatusPage { mut status, next } => {
                let servers = std::mem::take(&mut status.chunkservers);
                Ok((status, servers, next))
            }
            other => Err(other.name()),
        };
        let (mut status, servers) = self.gather(ask, open).await?;
        status.chunkservers = servers;
        Ok(status)
    }
}
