//! `Client`: metadata calls to the master; the get path is in `get`, the put path
//! in `put`.

use std::sync::Arc;
use std::time::Duration;

use dfs_protocol::ClientToMaster;
use dfs_protocol::{
    AppendLease, BalanceReport, ErrorCode, FileStat, Identity, ProtocolError, Request, Response,
};

use crate::error::ClientError;
use crate::pool::Pool;

mod get;
mod put;

pub use get::read_order;

/// Tunables; the defaults suit a LAN or loopback cluster.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub connect_timeout: Duration,
    /// Limit on any single exchange (a metadata call, one packet, one chunk's confirmation).
    pub io_timeout: Duration,
    /// Byte ranges read at once during a get.
    pub read_parallelism: usize,
    /// Size of each ranged read; memory in flight is at most parallelism x this.
    pub read_unit: u64,
    /// Addresses to dial instead of those the master hands out (a client outside a
    /// NAT or port forward, or a test's fault proxy in front of a server).
    pub routes: Routes,
    /// How long a master call waits out a master that is down (a restart) or that
    /// cannot place chunks yet (chunkservers still reporting), before failing.
    /// Only calls the master never took, or refused without acting on, are sent
    /// again. Zero (the default) fails at once, as the CLI's verbs want.
    pub master_wait: Duration,
}

/// `address -> address to dial instead`; empty by default.
#[derive(Clone, Debug, Default)]
pub struct Routes(Arc<std::collections::HashMap<String, String>>);

impl Routes {
    pub fn new(routes: impl IntoIterator<Item = (String, String)>) -> Routes {
        Routes(Arc::new(routes.into_iter().collect()))
    }

    /// Where to dial to reach `addr`.
    pub fn resolve<'a>(&'a self, addr: &'a str) -> &'a str {
        self.0.get(addr).map_or(addr, String::as_str)
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(60),
            read_parallelism: 4,
            // 8 MiB: each unit is one request and one read-ahead hint on the
            // chunkserver; 4 MiB units read 11% slower from a cold disk, 16 MiB ones
            // leave too few units in flight per chunk (docs/benchmarks.md).
            read_unit: 8 << 20,
            routes: Routes::default(),
            master_wait: Duration::ZERO,
        }
    }
}

/// How to store a file.
#[derive(Clone, Copy, Debug, Default)]
pub struct PutOptions {
    /// Replicas per chunk; the cluster default when `None`.
    pub replication: Option<u32>,
    /// Replace an existing file instead of failing with `AlreadyExists`.
    pub overwrite: bool,
}

/// Attributes to change with [`Client::set_attr`]; `None` leaves one as it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// Permission bits, with set-uid, set-gid and sticky (at most 0o7777).
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Seconds since the Unix epoch.
    pub atime: Option<u64>,
    pub mtime: Option<u64>,
}

/// A handle on a dfs cluster. Cheap to clone; clones share connections.
#[derive(Clone, Debug)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) master: String,
    pub(crate) options: ClientOptions,
    pub(crate) pool: Pool,
    /// Metadata calls: one pipelined connection to the master.
    pub(crate) master_link: crate::link::Link,
    /// Append targets by path, so appenders go straight to the primary.
    pub(crate) leases: std::sync::Mutex<std::collections::HashMap<String, AppendLease>>,
    /// Chunkservers that failed this client lately: last in chains and reads.
    pub(crate) suspects: crate::suspects::Suspects,
}

impl Client {
    /// A client of the master at `master` (`host:port`) that proves `identity` (a
    /// key from `dfs key create`, or the cluster secret). Connections open on first use.
    pub fn new(master: impl Into<String>, identity: Identity) -> Client {
        Client::with_options(master, identity, ClientOptions::default())
    }

    pub fn with_options(
        master: impl Into<String>,
        identity: Identity,
        options: ClientOptions,
    ) -> Client {
        let routes = options.routes.clone();
        Client {
            inner: Arc::new(Inner {
                master: master.into(),
                options,
                pool: Pool::new(identity, routes),
                master_link: Default::default(),
                leases: Default::default(),
                suspects: Default::default(),
            }),
        }
    }

    pub fn master(&self) -> &str {
        &self.inner.master
    }

    /// The same cluster and identity with other options (on new connections).
    pub fn reconfigured(&self, change: impl FnOnce(&mut ClientOptions)) -> Client {
        let mut options = self.inner.options.clone();
        change(&mut options);
        Client::with_options(
            self.inner.master.clone(),
            self.inner.pool.identity().clone(),
            options,
        )
    }

    pub(crate) async fn exchange<T>(
        &self,
        addr: &str,
        fut: impl std::future::Future<Output = Result<T, ProtocolError>>,
    ) -> Result<T, ClientError> {
        let after = self.inner.options.io_timeout;
        tokio::time::timeout(after, fut)
            .await
            .map_err(|_| ClientError::Timeout {
                addr: addr.to_string(),
                after,
            })?
            .map_err(|e| ClientError::peer(addr, e))
    }

    /// One request to the master; an error code comes back as `ClientError::Remote`.
    /// Waits out an unreachable master for up to `master_wait` (see
    /// [`ClientOptions::master_wait`]). A request that only reads is sent again, up
    /// to [`READ_ATTEMPTS`] times in all, when its answer never came: on a lossy
    /// network one connection can lose its SYNs for longer than the connect timeout
    /// while the next gets through.
    pub(crate) async fn master_call(&self, request: Request) -> Result<Response, ClientError> {
        let wait = self.inner.options.master_wait;
        let reads_only = matches!(&request, Request::Master(r) if r.reads_only());
        if wait.is_zero() && !reads_only {
            return self.master_link_call(request).await;
        }
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(50);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let result = self.master_link_call(request.clone()).await;
            let unavailable = match &result {
                Err(ClientError::Remote(
                    ErrorCode::Unavailable { .. } | ErrorCode::NotEnoughServers { .. },
                )) => true,
                Err(ClientError::Peer { source, .. }) => master_gone(source),
                _ => false,
            };
            let lost = reads_only
                && attempts < READ_ATTEMPTS
                && result.as_ref().is_err_and(lost_on_the_way);
            let waiting = unavailable && started.elapsed() < wait;
            if !(lost || waiting) {
                return result;
            }
            if let Err(e) = &result {
                if waiting {
                    tracing::warn!(error = %e, "the master cannot serve {} yet; waiting", request.name());
                } else {
                    tracing::info!(error = %e, attempts, "no answer from the master to {}; sending it again", request.name());
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    /// One request to the master on the client's pipelined link (see [`crate::link`]).
    async fn master_link_call(&self, request: Request) -> Result<Response, ClientError> {
        let opts = &self.inner.options;
        self.inner
            .master_link
            .call(
                &self.inner.pool,
                &self.inner.master,
                request,
                opts.connect_timeout,
                opts.io_timeout,
            )
            .await
    }

    /// One request and its one-frame answer, to the master or a chunkserver, on a
    /// pooled connection; an error code comes back as `ClientError::Remote`.
    pub(crate) async fn server_call(
        &self,
        addr: &str,
        request: Request,
    ) -> Result<Response, ClientError> {
        let opts = &self.inner.options;
        let mut conn = self.inner.pool.get(addr, opts.connect_timeout).await?;
        let after = opts.io_timeout;
        let result = tokio::time::timeout(after, conn.call(request)).await;
        match result {
            Ok(Ok(response)) => {
                self.inner.pool.put(addr, conn);
                Ok(response)
            }
            Ok(Err(ProtocolError::Remote(code))) => {
                self.inner.pool.put(addr, conn);
                Err(ClientError::Remote(code))
            }
            Ok(Err(e)) => Err(ClientError::peer(addr, e)),
            Err(_) => Err(ClientError::Timeout {
                addr: addr.to_string(),
                after,
            }),
        }
    }

    pub(crate) fn unexpected(&self, got: &Response) -> ClientError {
        ClientError::Unexpected {
            addr: self.inner.master.clone(),
            got: got.name(),
        }
    }

    /// A master request whose success answer is `Ok`.
    async fn master_ok(&self, request: Request) -> Result<(), ClientError> {
        match self.master_call(request).await? {
            Response::Ok => Ok(()),
            other => Err(self.unexpected(&other)),
        }
    }

    pub async fn mkdir(&self, path: &str, parents: bool) -> Result<(), ClientError> {
        self.master_ok(Request::Master(ClientToMaster::Mkdir {
            path: path.to_string(),
            parents,
        }))
        .await
    }

    /// Removes a file, or a directory (`recursive` for a non-empty one). The entry goes
    /// to the trash (see [`Client::trash_restore`]) unless `skip_trash`.
    pub async fn remove(
        &self,
        path: &str,
        recursive: bool,
        skip_trash: bool,
    ) -> Result<(), ClientError> {
        self.master_ok(Request::Master(ClientToMaster::Delete {
            path: path.to_string(),
            recursive,
            skip_trash,
        }))
        .await
    }

    /// Moves `src` to `dst` atomically, or into `dst` when that is a directory.
    /// Sets the modification time of `path` to now, creating an empty file there
    /// when nothing is.
    pub async fn touch(&self, path: &str) -> Result<(), ClientError> {
        self.master_ok(Request::Master(ClientToMaster::Touch {
            path: path.to_string(),
        }))
        .await
    }

    /// Sets each attribute `change` gives on `path` (the others stay as they are).
    pub async fn set_attr(&self, path: &str, change: SetAttr) -> Result<(), ClientError> {
        self.master_ok(Request::Master(ClientToMaster::SetAttr {
            path: path.to_string(),
            mode: change.mode,
            uid: change.uid,
            gid: change.gid,
            atime: change.atime,
            mtime: change.mtime,
        }))
        .await
    }

    /// POSIX `rename(2)`: `src` becomes exactly `dst`. An existing `dst` is replaced
    /// atomically when `replace` (a file by a file, an empty directory by a
    /// directory); otherwise it is an `AlreadyExists` error.
    pub async fn rename_over(
        &self,
        src: &str,
        dst: &str,
        replace: bool,
    ) -> Result<(), ClientError> {
        self.master_ok(Request::Master(ClientToMaster::RenameOver {
            src: src.to_string(),
            dst: dst.to_string(),
            replace,
        }))
        .await
    }

    /// Creates a symbolic link at `path` to `target` (stored as given).
    pub async fn symlink(&self, path: &str, target: &str) -> Result<(), ClientError> {
        self.master_ok(Request::Master(ClientToMaster::Symlink {
            path: path.to_string(),
            target: target.to_string(),
        }))
        .await
    }

    /// The target of the symbolic link at `path`.
    pub async fn read_link(&self, path: &str) -> Result<String, ClientError> {
        match self
            .master_call(Request::Master(ClientToMaster::ReadLink {
                path: path.to_string(),
            }))
            .await?
        {
            Response::Link { target } => Ok(target),
            other => Err(self.unexpected(&other)),
        }
    }

    pub async fn rename(&self, src: &str, dst: &str) -> Result<(), ClientError> {
        self.master_ok(Request::Master(ClientToMaster::Rename {
            src: src.to_string(),
            dst: dst.to_string(),
        }))
        .await
    }

    /// Sets the replication of a file, or of every file below a directory; the cluster
    /// adds or trims replicas in the background.
    pub async fn set_replication(&self, path: &str, replication: u32) -> Result<(), ClientError> {
        self.master_ok(Request::Master(ClientToMaster::SetReplication {
            path: path.to_string(),
            replication,
        }))
        .await
    }

    /// Starts (`on`) or cancels draining the chunkserver at `addr`.
    pub async fn decommission(&self, addr: &str, on: bool) -> Result<(), ClientError> {
        self.master_ok(Request::Master(ClientToMaster::Decommission {
            addr: addr.to_string(),
            on,
        }))
        .await
    }

    /// Disk use spread and balancer progress; `threshold_percent` first sets the spread
    /// the balancer evens out above.
    pub async fn balance(
        &self,
        threshold_percent: Option<u32>,
    ) -> Result<BalanceReport, ClientError> {
        match self
            .master_call(Request::Master(ClientToMaster::Balance {
                threshold_percent,
            }))
            .await?
        {
            Response::Balance(report) => Ok(report),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Purges every trash entry now (admin keys only); the entries purged and the
    /// bytes of their files.
    pub async fn trash_empty(&self) -> Result<(u64, u64), ClientError> {
        match self
            .master_call(Request::Master(ClientToMaster::TrashEmpty))
            .await?
        {
            Response::Purged { entries, bytes } => Ok((entries, bytes)),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Puts the most recently removed entry that was at `path` back there.
    pub async fn trash_restore(&self, path: &str) -> Result<(), ClientError> {
        self.master_ok(Request::Master(ClientToMaster::TrashRestore {
            path: path.to_string(),
        }))
        .await
    }

    /// A file's or directory's metadata. The size of a chunk being appended to is
    /// asked of its replicas, so it counts every acknowledged append.
    ///
    /// A chunk that moves to a new version between the master's answer and its
    /// replicas' (a lease moving, a replica added) is asked about again, from a
    /// fresh answer of the master, up to [`STAT_ATTEMPTS`] times in all.
    pub async fn stat(&self, path: &str) -> Result<FileStat, ClientError> {
        let mut attempt = 1;
        loop {
            let mut stat = match self
                .master_call(Request::Master(ClientToMaster::Stat {
                    path: path.to_string(),
                }))
                .await?
            {
                Response::Stat(stat) => stat,
                other => return Err(self.unexpected(&other)),
            };
            match self.settle_sizes(&mut stat).await {
                Ok(()) => return Ok(stat),
                Err(ClientError::Remote(ErrorCode::StaleVersion { .. }))
                    if attempt < STAT_ATTEMPTS =>
                {
                    // A moment for the master to log the version it moved to.
                    tokio::time::sleep(crate::append::backoff(attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// How many times `stat` asks the master, when an open chunk's version moves on
/// between its answer and the replicas'.
const STAT_ATTEMPTS: u32 = 4;

/// How many times a request that only reads goes to the master before its
/// timeout or broken connection is the caller's error.
const READ_ATTEMPTS: u32 = 3;

/// Whether an exchange failed on the way (no answer in time, a connection broken),
/// as a lossy network fails one now and then; not a refusal, which says at once and
/// for sure that nobody listens there.
fn lost_on_the_way(e: &ClientError) -> bool {
    match e {
        ClientError::Timeout { .. } => true,
        ClientError::Peer { source, .. } => !matches!(
            source,
            ProtocolError::Codec(dfs_protocol::CodecError::Io(io))
                if io.kind() == std::io::ErrorKind::ConnectionRefused
        ),
        _ => false,
    }
}

/// Whether a failed master exchange means the master is gone (refused, or an idle
/// pooled connection found closed by its restart).
fn master_gone(e: &ProtocolError) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionRefused, ConnectionReset, UnexpectedEof};
    match e {
        ProtocolError::Closed => true,
        ProtocolError::Codec(dfs_protocol::CodecError::Io(io)) => matches!(
            io.kind(),
            ConnectionRefused | ConnectionReset | BrokenPipe | UnexpectedEof
        ),
        _ => false,
    }
}
