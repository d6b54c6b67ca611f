//! The `fuser::Filesystem` over a dfs cluster. Each kernel request becomes a task
//! that answers it; master calls wait out a master restart (up to the stall
//! timeout, through the client's `master_wait`) instead of failing at once.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::future::Future;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use dfs_client::{AppendOptions, Client, FileKind, FileStat, SetAttr};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, KernelConfig,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use tokio_util::task::TaskTracker;

use crate::errno::errno;
use crate::inodes::{child, Inodes};
use crate::open_file::{now, Context, OpenFile};
use crate::readahead::Budget;
use crate::MountOptions;

/// The longest name in a directory.
const NAME_MAX: usize = 255;
/// The block size `stat` reports: programs size their buffers by it (`cp` writes
/// in pieces this large, and each piece is one request to the mount).
const BLOCK_SIZE: u32 = 1 << 20;

/// An open file and the handles open on it.
struct Open {
    file: Arc<tokio::sync::Mutex<OpenFile>>,
    handles: u32,
}

/// An open directory's entries, taken at `opendir`.
type Listing = Arc<Vec<(String, FileKind)>>;

/// A handle from `open`/`create`.
#[derive(Debug, Clone, Copy)]
struct Handle {
    ino: u64,
    append: bool,
}

/// The shared state every request task works on.
struct Core {
    client: Client,
    options: MountOptions,
    inodes: Mutex<Inodes>,
    files: Mutex<HashMap<u64, Open>>,
    handles: Mutex<HashMap<u64, Handle>>,
    /// Open directories: their listing, taken at `opendir`.
    dirs: Mutex<HashMap<u64, Listing>>,
    next_fh: AtomicU64,
    readahead: Budget,
    tracker: TaskTracker,
}

/// The mount's file system; see the module docs.
pub struct DfsFs {
    core: Arc<Core>,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for DfsFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DfsFs")
            .field("master", &self.core.client.master())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Core {
    fn cx(&self) -> Context<'_> {
        Context {
            client: &self.client,
            cache_dir: &self.options.cache_dir,
            send_timeout: self.options.stall_timeout,
            readahead: &self.readahead,
            tracker: &self.tracker,
        }
    }

    fn path(&self, ino: INodeNo) -> Result<String, Errno> {
        lock(&self.inodes).path(ino.0).ok_or(Errno::ENOENT)
    }

    /// The path of `name` in directory `parent`.
    fn child_path(&self, parent: INodeNo, name: &OsStr) -> Result<String, Errno> {
        let name = name.to_str().ok_or(Errno::EINVAL)?;
        if name.len() > NAME_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        Ok(child(&self.path(parent)?, name))
    }

    fn writable(&self) -> Result<(), Errno> {
        if self.options.read_only {
            Err(Errno::EROFS)
        } else {
            Ok(())
        }
    }

    fn open_file(&self, ino: u64) -> Option<Arc<tokio::sync::Mutex<OpenFile>>> {
        lock(&self.files).get(&ino).map(|o| o.file.clone())
    }

    async fn stat(&self, path: &str) -> Result<FileStat, Errno> {
        self.client.stat(path).await.map_err(|e| errno(&e))
    }

    /// The attributes of `path` (number `ino`), with this mount's uncommitted
    /// changes to it.
    async fn attr(&self, ino: u64, path: &str) -> Result<FileAttr, Errno> {
        if let Some(f) = self.open_file(ino) {
            let f = f.lock().await;
            if f.pending() || path.starts_with('\0') {
                let mut a = to_attr(ino, &f.base);
                a.size = f.size;
                a.blocks = f.size.div_ceil(512);
                if let Some(t) = f.changed_at {
                    a.mtime = secs(t);
                    a.ctime = a.mtime;
                }
                return Ok(a);
            }
        }
        if path.starts_with('\0') {
            return Err(Errno::ENOENT);
        }
        Ok(to_attr(ino, &self.stat(path).await?))
    }

    /// Looks `path` up for the kernel: its number (counted) and attributes.
    async fn entry(&self, path: &str) -> Result<FileAttr, Errno> {
        let stat = self.stat(path).await?;
        let ino = lock(&self.inodes).lookup(path);
        let mut attr = to_attr(ino, &stat);
        if let Some(f) = self.open_file(ino) {
            let f = f.lock().await;
            if f.pending() {
                attr.size = f.size;
            }
        }
        Ok(attr)
    }

    /// Sets owner and mode on a new entry, as the kernel asked (the caller's ids,
    /// the mode under the umask, and a set-gid parent's group).
    async fn set_new_attrs(
        &self,
        path: &str,
        parent: &str,
        req: (u32, u32),
        mode: u32,
        dir: bool,
    ) -> Result<(), Errno> {
        let (uid, mut gid) = req;
        let mut mode = mode & 0o7777;
        let p = self.stat(parent).await?;
        if p.mode & 0o2000 != 0 {
            gid = p.gid;
            if dir {
                mode |= 0o2000;
            }
        }
        // What the master gives a new entry anyway needs no logged change.
        let default_mode = if dir { 0o755 } else { 0o644 };
        if (mode, uid, gid) == (default_mode, 0, 0) {
            return Ok(());
        }
        let change = SetAttr {
            mode: Some(mode),
            uid: Some(uid),
            gid: Some(gid),
            atime: None,
            mtime: None,
        };
        self.client
            .set_attr(path, change)
            .await
            .map_err(|e| errno(&e))
    }

    /// Commits an open file's changes (flush, fsync).
    async fn commit(&self, ino: u64) -> Result<(), Errno> {
        match self.open_file(ino) {
            Some(f) => self.commit_file(ino, &f).await,
            None => Ok(()),
        }
    }

    async fn commit_file(&self, ino: u64, f: &tokio::sync::Mutex<OpenFile>) -> Result<(), Errno> {
        let mut f = f.lock().await;
        let path = self.path(INodeNo(ino))?;
        if path.starts_with('\0') {
            // Unlinked while open: nothing can see what it would commit.
            f.discard();
            return Ok(());
        }
        let cx = self.cx();
        f.commit(&cx, &path).await.map_err(|e| {
            tracing::warn!(%path, error = %e, "commit failed");
            errno(&e)
        })
    }

    /// Opens `ino` (at `path`, `stat` when the caller has it): a new handle on
    /// its shared open file.
    async fn open(
        &self,
        ino: u64,
        path: &str,
        stat: Option<FileStat>,
        append: bool,
    ) -> Result<u64, Errno> {
        let counted = lock(&self.files)
            .get_mut(&ino)
            .map(|o| o.handles += 1)
            .is_some();
        if !counted {
            let stat = match stat {
                Some(s) => s,
                None => self.stat(path).await?,
            };
            if stat.kind == FileKind::Dir {
                return Err(Errno::EISDIR);
            }
            // Opened by another task meanwhile: that open file is shared.
            lock(&self.files)
                .entry(ino)
                .or_insert_with(|| Open {
                    file: Arc::new(tokio::sync::Mutex::new(OpenFile::new(stat))),
                    handles: 0,
                })
                .handles += 1;
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, Handle { ino, append });
        Ok(fh)
    }

    /// The last handle's release commits what is left (flush normally did) and
    /// forgets the open file; an open after that starts from the cluster's file.
    async fn release(&self, fh: u64) -> Result<(), Errno> {
        let Some(h) = lock(&self.handles).remove(&fh) else {
            return Ok(());
        };
        let last = {
            let mut files = lock(&self.files);
            match files.get_mut(&h.ino) {
                Some(o) if o.handles <= 1 => files.remove(&h.ino).map(|o| o.file),
                Some(o) => {
                    o.handles -= 1;
                    None
                }
                None => None,
            }
        };
        match last {
            Some(f) => self.commit_file(h.ino, &f).await,
            None => Ok(()),
        }
    }

    /// `O_APPEND`: each write is one record append, at the end wherever that is.
    async fn append(&self, ino: u64, data: Bytes) -> Result<u32, Errno> {
        let path = self.path(INodeNo(ino))?;
        self.commit(ino).await?;
        let options = AppendOptions {
            create: false,
            replication: None,
        };
        let max = self
            .client
            .max_append(&path, options)
            .await
            .map_err(|e| errno(&e))?;
        let max = usize::try_from(max.max(1)).unwrap_or(usize::MAX);
        let mut rest = data;
        let total = rest.len();
        while !rest.is_empty() {
            let record = rest.split_to(rest.len().min(max));
            self.client
                .append_record(&path, record, options)
                .await
                .map_err(|e| errno(&e))?;
        }
        if let Some(f) = self.open_file(ino) {
            let fresh = self.stat(&path).await?;
            f.lock().await.reset(fresh);
        }
        u32::try_from(total).map_err(|_| Errno::EINVAL)
    }

    async fn listing(&self, path: &str) -> Result<Vec<(String, FileKind)>, Errno> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let (page, next) = self
                .client
                .list_page(path, after.clone(), 1000)
                .await
                .map_err(|e| errno(&e))?;
            out.extend(page.into_iter().map(|e| (e.name, e.kind)));
            match next {
                Some(n) => after = Some(n),
                None => return Ok(out),
            }
        }
    }
}

impl DfsFs {
    pub fn new(client: Client, options: MountOptions, runtime: tokio::runtime::Handle) -> DfsFs {
        // Every master call waits out a restart, up to the stall timeout.
        let client = client.reconfigured(|o| o.master_wait = options.stall_timeout);
        let readahead = Budget::new(options.readahead_total, options.readahead_window);
        DfsFs {
            core: Arc::new(Core {
                client,
                options,
                inodes: Mutex::new(Inodes::default()),
                files: Mutex::new(HashMap::new()),
                handles: Mutex::new(HashMap::new()),
                dirs: Mutex::new(HashMap::new()),
                next_fh: AtomicU64::new(1),
                readahead,
                tracker: TaskTracker::new(),
            }),
            runtime,
        }
    }

    /// Runs `work` as a task that answers the kernel.
    fn spawn<F, Fut>(&self, work: F)
    where
        F: FnOnce(Arc<Core>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let fut = work(self.core.clone());
        self.core.tracker.spawn_on(fut, &self.runtime);
    }

    fn ttl(&self) -> Duration {
        self.core.options.attr_timeout
    }
}

fn secs(t: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(t)
}

fn to_secs(t: TimeOrNow) -> u64 {
    match t {
        TimeOrNow::Now => now(),
        TimeOrNow::SpecificTime(t) => t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
    }
}

fn kind(k: FileKind) -> FileType {
    match k {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
    }
}

fn to_attr(ino: u64, s: &FileStat) -> FileAttr {
    let mtime = secs(s.mtime);
    FileAttr {
        ino: INodeNo(ino),
        size: s.size,
        blocks: s.size.div_ceil(512),
        atime: secs(s.atime),
        mtime,
        ctime: mtime,
        crtime: mtime,
        kind: kind(s.kind),
        perm: (s.mode & 0o7777) as u16,
        nlink: if s.kind == FileKind::Dir { 2 } else { 1 },
        uid: s.uid,
        gid: s.gid,
        rdev: 0,
        blksize: BLOCK_SIZE,
        flags: 0,
    }
}

/// A readdir number for an entry the kernel has no inode number for yet: stable
/// per path, and apart from the numbers handed out by lookups.
fn dir_ino(path: &str) -> u64 {
    let h = blake3_free_hash(path.as_bytes());
    h | 1 << 63
}

/// FNV-1a: a small stable hash, enough to tell entries apart in a listing.
fn blake3_free_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl fuser::Filesystem for DfsFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        Ok(())
    }

    fn destroy(&mut self) {
        // Every request was answered; open files were released by the kernel.
        self.core.tracker.close();
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let ttl = self.ttl();
        let name = name.to_owned();
        self.spawn(move |core| async move {
            let result = async {
                let path = core.child_path(parent, &name)?;
                core.entry(&path).await
            }
            .await;
            match result {
                Ok(attr) => reply.entry(&ttl, &attr, Generation(0)),
                Err(e) => reply.error(e),
            }
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        lock(&self.core.inodes).forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let ttl = self.ttl();
        self.spawn(move |core| async move {
            let result = async {
                let path = core.path(ino)?;
                core.attr(ino.0, &path).await
            }
            .await;
            match result {
                Ok(attr) => reply.attr(&ttl, &attr),
                Err(e) => reply.error(e),
            }
        });
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let ttl = self.ttl();
        self.spawn(move |core| async move {
            let result = async {
                core.writable()?;
                let path = core.path(ino)?;
                if let Some(len) = size {
                    match core.open_file(ino.0) {
                        Some(f) => {
                            let cx = core.cx();
                            f.lock()
                                .await
                                .truncate(&cx, &path, len)
                                .await
                                .map_err(|e| errno(&e))?;
                        }
                        None => {
                            core.client
                                .truncate(&path, len)
                                .await
                                .map_err(|e| errno(&e))?;
                        }
                    }
                }
                if mode.is_some()
                    || uid.is_some()
                    || gid.is_some()
                    || atime.is_some()
                    || mtime.is_some()
                {
                    let change = SetAttr {
                        mode: mode.map(|m| m & 0o7777),
                        uid,
                        gid,
                        atime: atime.map(to_secs),
                        mtime: mtime.map(to_secs),
                    };
                    core.client
                        .set_attr(&path, change)
                        .await
                        .map_err(|e| errno(&e))?;
                    if let Some(f) = core.open_file(ino.0) {
                        let fresh = core.stat(&path).await?;
                        let mut g = f.lock().await;
                        g.base.mode = fresh.mode;
                        g.base.uid = fresh.uid;
                        g.base.gid = fresh.gid;
                        g.base.atime = fresh.atime;
                        g.base.mtime = fresh.mtime;
                        if mtime.is_some() {
                            g.changed_at = None;
                        }
                    }
                }
                core.attr(ino.0, &path).await
            }
            .await;
            match result {
                Ok(attr) => reply.attr(&ttl, &attr),
                Err(e) => reply.error(e),
            }
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.spawn(move |core| async move {
            let result = async {
                let path = core.path(ino)?;
                core.client.read_link(&path).await.map_err(|e| errno(&e))
            }
            .await;
            match result {
                Ok(target) => reply.data(target.as_bytes()),
                Err(e) => reply.error(e),
            }
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        // Only regular files: dfs stores no device nodes, fifos or sockets.
        if mode & libc_s_ifmt() != libc_s_ifreg() {
            reply.error(Errno::EPERM);
            return;
        }
        let ttl = self.ttl();
        let ids = (req.uid(), req.gid());
        let name = name.to_owned();
        self.spawn(move |core| async move {
            let result = async {
                core.writable()?;
                let path = core.child_path(parent, &name)?;
                let parent_path = core.path(parent)?;
                core.client.touch(&path).await.map_err(|e| errno(&e))?;
                core.set_new_attrs(&path, &parent_path, ids, mode & !umask, false)
                    .await?;
                core.entry(&path).await
            }
            .await;
            match result {
                Ok(attr) => reply.entry(&ttl, &attr, Generation(0)),
                Err(e) => reply.error(e),
            }
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let ttl = self.ttl();
        let ids = (req.uid(), req.gid());
        let name = name.to_owned();
        self.spawn(move |core| async move {
            let result = async {
                core.writable()?;
                let path = core.child_path(parent, &name)?;
                let parent_path = core.path(parent)?;
                core.client
                    .mkdir(&path, false)
                    .await
                    .map_err(|e| errno(&e))?;
                core.set_new_attrs(&path, &parent_path, ids, mode & !umask, true)
                    .await?;
                core.entry(&path).await
            }
            .await;
            match result {
                Ok(attr) => reply.entry(&ttl, &attr, Generation(0)),
                Err(e) => reply.error(e),
            }
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, reply);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let ttl = self.ttl();
        let ids = (req.uid(), req.gid());
        let name = link_name.to_owned();
        let target = target.as_os_str().as_bytes().to_vec();
        self.spawn(move |core| async move {
            let result = async {
                core.writable()?;
                let target = String::from_utf8(target).map_err(|_| Errno::EINVAL)?;
                let path = core.child_path(parent, &name)?;
                core.client
                    .symlink(&path, &target)
                    .await
                    .map_err(|e| errno(&e))?;
                if ids != (0, 0) {
                    let change = SetAttr {
                        mode: None,
                        uid: Some(ids.0),
                        gid: Some(ids.1),
                        atime: None,
                        mtime: None,
                    };
                    core.client
                        .set_attr(&path, change)
                        .await
                        .map_err(|e| errno(&e))?;
                }
                core.entry(&path).await
            }
            .await;
            match result {
                Ok(attr) => reply.entry(&ttl, &attr, Generation(0)),
                Err(e) => reply.error(e),
            }
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            reply.error(Errno::EINVAL);
            return;
        }
        let replace = !flags.contains(RenameFlags::RENAME_NOREPLACE);
        let (name, newname) = (name.to_owned(), newname.to_owned());
        self.spawn(move |core| async move {
            let result = async {
                core.writable()?;
                let from = core.child_path(parent, &name)?;
                let to = core.child_path(newparent, &newname)?;
                core.client
                    .rename_over(&from, &to, replace)
                    .await
                    .map_err(|e| errno(&e))?;
                lock(&core.inodes).rename(&from, &to);
                Ok(())
            }
            .await;
            match result {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        // dfs has no hard links: one name per inode.
        reply.error(Errno::EPERM);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let writes = flags.acc_mode() != fuser::OpenAccMode::O_RDONLY;
        let append = flags.0 & O_APPEND != 0;
        self.spawn(move |core| async move {
            let result = async {
                if writes {
                    core.writable()?;
                }
                let path = core.path(ino)?;
                core.open(ino.0, &path, None, append).await
            }
            .await;
            match result {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(e) => reply.error(e),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        self.spawn(move |core| async move {
            let result = async {
                let path = core.path(ino)?;
                let f = core.open_file(ino.0).ok_or(Errno::EBADF)?;
                let cx = core.cx();
                let mut g = f.lock().await;
                g.read(&cx, &path, offset, u64::from(size))
                    .await
                    .map_err(|e| errno(&e))
            }
            .await;
            match result {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(e),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        let data = Bytes::copy_from_slice(data);
        self.spawn(move |core| async move {
            let result = async {
                core.writable()?;
                let handle = lock(&core.handles).get(&fh.0).copied();
                if handle.is_some_and(|h| h.append) {
                    return core.append(ino.0, data).await;
                }
                let path = core.path(ino)?;
                let f = core.open_file(ino.0).ok_or(Errno::EBADF)?;
                let cx = core.cx();
                let len = data.len();
                f.lock()
                    .await
                    .write(&cx, &path, offset, data)
                    .await
                    .map_err(|e| errno(&e))?;
                u32::try_from(len).map_err(|_| Errno::EINVAL)
            }
            .await;
            match result {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(e),
            }
        });
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        self.flush_reply(ino, reply);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.spawn(move |core| async move {
            match core.release(fh.0).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.flush_reply(ino, reply);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.spawn(move |core| async move {
            let result = async {
                let path = core.path(ino)?;
                let entries = core.listing(&path).await?;
                let fh = core.next_fh.fetch_add(1, Ordering::Relaxed);
                lock(&core.dirs).insert(fh, Arc::new(entries));
                Ok::<_, Errno>(fh)
            }
            .await;
            match result {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(e) => reply.error(e),
            }
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(entries) = lock(&self.core.dirs).get(&fh.0).cloned() else {
            reply.error(Errno::EBADF);
            return;
        };
        let Some(path) = lock(&self.core.inodes).path(ino.0) else {
            reply.error(Errno::ENOENT);
            return;
        };
        let dots = [
            (".".to_string(), FileKind::Dir),
            ("..".to_string(), FileKind::Dir),
        ];
        let inodes = lock(&self.core.inodes);
        for (i, (name, k)) in dots
            .iter()
            .chain(entries.iter())
            .enumerate()
            .skip(offset as usize)
        {
            let full = child(&path, name);
            let n = match name.as_str() {
                "." => ino.0,
                ".." => crate::inodes::ROOT,
                _ => inodes.peek(&full).unwrap_or_else(|| dir_ino(&full)),
            };
            if reply.add(INodeNo(n), (i + 1) as u64, kind(*k), name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        lock(&self.core.dirs).remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Every namespace change was logged durably before it was answered.
        reply.ok();
    }

    // Extended attributes are not kept: ENOSYS tells the kernel once, and it
    // answers EOPNOTSUPP itself from then on without asking.
    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: fuser::ReplyXattr,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: fuser::ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::ENOSYS);
    }

    /// Not offered: ENOSYS makes the kernel copy through read and write itself.
    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::ENOSYS);
    }

    /// `posix_fallocate`: space is not reserved ahead in dfs, but the size grows as
    /// asked (with zeros). Other modes (punching holes, keeping the size) are not
    /// offered.
    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if mode != 0 {
            reply.error(Errno::from_i32(EOPNOTSUPP));
            return;
        }
        self.spawn(move |core| async move {
            let result = async {
                core.writable()?;
                let path = core.path(ino)?;
                let end = offset.checked_add(length).ok_or(Errno::EFBIG)?;
                let f = core.open_file(ino.0).ok_or(Errno::EBADF)?;
                let mut g = f.lock().await;
                if end > g.size {
                    let cx = core.cx();
                    g.truncate(&cx, &path, end).await.map_err(|e| errno(&e))?;
                }
                Ok(())
            }
            .await;
            match result {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.spawn(move |core| async move {
            match core.client.status().await {
                Ok(st) => {
                    let alive = st.chunkservers.iter().filter(|s| s.alive);
                    let (cap, used) = alive.fold((0u64, 0u64), |(c, u), s| {
                        (c.saturating_add(s.capacity), u.saturating_add(s.used))
                    });
                    // In user bytes: every byte is stored `replication` times.
                    let r = u64::from(st.replication.max(1));
                    let bsize = u64::from(BLOCK_SIZE);
                    let blocks = cap / r / bsize;
                    let free = cap.saturating_sub(used) / r / bsize;
                    let files = st.files;
                    reply.statfs(
                        blocks,
                        free,
                        free,
                        files.saturating_add(1 << 32),
                        1 << 32,
                        BLOCK_SIZE,
                        NAME_MAX as u32,
                        BLOCK_SIZE,
                    );
                }
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let ttl = self.ttl();
        let ids = (req.uid(), req.gid());
        let name = name.to_owned();
        let append = flags & O_APPEND != 0;
        self.spawn(move |core| async move {
            let result = async {
                core.writable()?;
                let path = core.child_path(parent, &name)?;
                let parent_path = core.path(parent)?;
                core.client.touch(&path).await.map_err(|e| errno(&e))?;
                core.set_new_attrs(&path, &parent_path, ids, mode & !umask, false)
                    .await?;
                let stat = core.stat(&path).await?;
                let ino = lock(&core.inodes).lookup(&path);
                let attr = to_attr(ino, &stat);
                let fh = core.open(ino, &path, Some(stat), append).await?;
                Ok::<_, Errno>((attr, fh))
            }
            .await;
            match result {
                Ok((attr, fh)) => reply.created(
                    &ttl,
                    &attr,
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::empty(),
                ),
                Err(e) => reply.error(e),
            }
        });
    }
}

const O_APPEND: i32 = 0o2000;
const EOPNOTSUPP: i32 = 95;

fn libc_s_ifmt() -> u32 {
    0o170000
}

fn libc_s_ifreg() -> u32 {
    0o100000
}

impl DfsFs {
    fn remove(&self, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_owned();
        self.spawn(move |core| async move {
            let result = async {
                core.writable()?;
                let path = core.child_path(parent, &name)?;
                let skip_trash = !core.options.trash;
                core.client
                    .remove(&path, false, skip_trash)
                    .await
                    .map_err(|e| errno(&e))?;
                lock(&core.inodes).detach(&path);
                Ok(())
            }
            .await;
            match result {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    /// flush and fsync alike: the open file's changes committed.
    fn flush_reply(&self, ino: INodeNo, reply: ReplyEmpty) {
        self.spawn(move |core| async move {
            match core.commit(ino.0).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }
}
