//! `dfs sync LOCAL_DIR REMOTE_DIR [--watch] [--delete]`: mirrors a local directory
//! into the cluster, sending only what changed.
//!
//! A file is sent when the cluster has no file there, or one of another size, or
//! (same size) one not newer than the local file whose checksum differs: size and
//! modification time first, then the content hash (`--checksum` always hashes).
//! Each file is stored like `put --force`: whole or not at all, and a file that
//! changes while it is read is not stored (it is sent again once it is quiet).
//!
//! `--watch` then follows the directory's events (inotify, through notify). Each
//! path waits until it has been quiet for `QUIET`, so a file still being written is
//! not sent half-done; then only that path is reconciled (a file sent or removed, a
//! directory compared as a whole). Events lost to a full queue make a full pass.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use dfs_cli::progress::{files_bar, Files};
use dfs_client::{Client, ClientError, DirEntry, ErrorCode, FileKind, PutOptions};
use futures::StreamExt;
use notify::Watcher;
use serde_json::json;

use crate::cmd::batch::{join, put_file};
use crate::cmd::{print_json, shutdown_signal};

/// How long a path must be quiet before `--watch` sends it.
const QUIET: Duration = Duration::from_millis(500);
/// How often `--watch` looks for paths that became quiet.
const TICK: Duration = Duration::from_millis(100);
/// Events queued between the watcher's thread and the sync loop; more make a full pass.
const EVENTS: usize = 4096;

/// How a sync decides and stores.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SyncOptions {
    /// Remove what the cluster has below REMOTE_DIR and the local dir does not.
    pub(crate) delete: bool,
    /// Compare content hashes even when size and time say unchanged.
    pub(crate) checksum: bool,
    pub(crate) parallel: usize,
    pub(crate) replication: Option<u32>,
    pub(crate) json: bool,
}

/// What a pass (or a watch step) did.
#[derive(Debug, Default)]
struct Report {
    uploaded: Vec<String>,
    deleted: Vec<String>,
    created: Vec<String>,
    unchanged: u64,
    bytes: u64,
    failed: Vec<String>,
}

impl Report {
    fn merge(&mut self, other: Report) {
        self.uploaded.extend(other.uploaded);
        self.deleted.extend(other.deleted);
        self.created.extend(other.created);
        self.unchanged += other.unchanged;
        self.bytes += other.bytes;
        self.failed.extend(other.failed);
    }

    fn is_empty(&self) -> bool {
        self.uploaded.is_empty()
            && self.deleted.is_empty()
            && self.created.is_empty()
            && self.failed.is_empty()
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "uploaded": self.uploaded,
            "deleted": self.deleted,
            "created_dirs": self.created,
            "unchanged": self.unchanged,
            "bytes": self.bytes,
            "failed": self.failed,
        })
    }

    fn summary(&self) -> String {
        let failed = if self.failed.is_empty() {
            String::new()
        } else {
            format!(", {} failed", self.failed.len())
        };
        format!(
            "dfs sync: {} sent ({}), {} removed, {} directories made, {} unchanged{failed}",
            self.uploaded.len(),
            dfs_cli::units::human_size(self.bytes),
            self.deleted.len(),
            self.created.len(),
            self.unchanged,
        )
    }
}

/// A local entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Local {
    Dir,
    File { size: u64, mtime: u64 },
}

pub(crate) async fn sync(
    client: &Client,
    local: &str,
    remote: &str,
    watch: bool,
    options: SyncOptions,
) -> anyhow::Result<()> {
    let root = PathBuf::from(local);
    let meta = std::fs::metadata(&root).with_context(|| format!("{local}: cannot open"))?;
    if !meta.is_dir() {
        bail!("{local}: not a directory");
    }
    if !remote.starts_with('/') {
        bail!("{remote}: REMOTE_DIR must be an absolute path in the cluster");
    }
    let remote = match remote.trim_end_matches('/') {
        "" => "/",
        r => r,
    };
    let syncer = Syncer {
        client,
        root: root.clone(),
        remote: remote.to_string(),
        options,
        chunk_size: client.chunk_size().await?,
    };
    let report = syncer.pass(&root, remote).await?;
    if options.json {
        print_json(&report.json())?;
    } else {
        eprintln!("{}", report.summary());
    }
    if !watch {
        if !report.failed.is_empty() {
            bail!("{} files failed", report.failed.len());
        }
        return Ok(());
    }
    syncer.watch().await
}

struct Syncer<'a> {
    client: &'a Client,
    root: PathBuf,
    remote: String,
    options: SyncOptions,
    chunk_size: u64,
}

impl Syncer<'_> {
    /// Mirrors the local directory `dir` into the cluster directory `remote`.
    async fn pass(&self, dir: &Path, remote: &str) -> anyhow::Result<Report> {
        let mut report = Report::default();
        self.client.mkdir(remote, true).await?;
        let locals = {
            let dir = dir.to_path_buf();
            tokio::task::spawn_blocking(move || scan_local(&dir))
                .await
                .context("scan task")??
        };
        let remotes = scan_remote(self.client, remote).await?;
        if self.options.delete {
            self.remove_extra(remote, &locals, &remotes, &mut report)
                .await;
        }
        let mut uploads = Vec::new();
        for (rel, entry) in &locals {
            let path = join(remote, rel);
            let there = remotes
                .get(rel)
                .filter(|_| !report.deleted.iter().any(|d| is_under(&path, d)));
            match (entry, there.map(|e| e.kind)) {
                (Local::Dir, Some(FileKind::Dir)) => {}
                (Local::Dir, None) => {
                    self.client.mkdir(&path, true).await?;
                    report.created.push(path);
                }
                (Local::File { size, mtime }, Some(FileKind::File)) => {
                    let local = dir.join(rel);
                    let entry = there.filter(|e| e.kind == FileKind::File);
                    match entry {
                        Some(r) if !self.changed(&local, &path, *size, *mtime, r).await => {
                            report.unchanged += 1
                        }
                        _ => uploads.push((local, path, *size)),
                    }
                }
                (Local::File { size, .. }, None) => uploads.push((dir.join(rel), path, *size)),
                // A file where a directory is, or the other way, without --delete.
                (_, Some(kind)) => {
                    eprintln!(
                        "dfs: {path}: a {} in the cluster (use --delete to replace it)",
                        if kind == FileKind::Dir {
                            "directory"
                        } else {
                            "file"
                        }
                    );
                    report.failed.push(path);
                }
            }
        }
        self.upload(uploads, &mut report).await;
        Ok(report)
    }

    /// Removes (to the trash) what the cluster has below `remote` and `locals` does
    /// not, or has as the other kind; only the top of a removed subtree.
    async fn remove_extra(
        &self,
        remote: &str,
        locals: &BTreeMap<String, Local>,
        remotes: &BTreeMap<String, DirEntry>,
        report: &mut Report,
    ) {
        for (rel, entry) in remotes {
            let keep = matches!(
                (locals.get(rel), entry.kind),
                (Some(Local::Dir), FileKind::Dir) | (Some(Local::File { .. }), FileKind::File)
            );
            let path = join(remote, rel);
            if keep || report.deleted.iter().any(|d| is_under(&path, d)) {
                continue;
            }
            match self.client.remove(&path, true, false).await {
                Ok(()) | Err(ClientError::Remote(ErrorCode::NotFound { .. })) => {
                    report.deleted.push(path)
                }
                Err(e) => {
                    eprintln!("dfs: {path}: {e}");
                    report.failed.push(path);
                }
            }
        }
    }

    /// Whether the local file differs from the cluster's (size, then time, then
    /// content).
    async fn changed(
        &self,
        local: &Path,
        path: &str,
        size: u64,
        mtime: u64,
        remote: &DirEntry,
    ) -> bool {
        if size != remote.size {
            return true;
        }
        // Stored after the local file last changed: the same file.
        if !self.options.checksum && mtime < remote.mtime {
            return false;
        }
        let (file, chunk_size) = (local.display().to_string(), self.chunk_size);
        let mine = tokio::task::spawn_blocking(move || {
            crate::cmd::checksum::local_checksum(&file, chunk_size)
        })
        .await;
        let theirs = self.client.checksum(path).await;
        match (mine, theirs) {
            (Ok(Ok(a)), Ok(b)) => a.digest != b.digest,
            // Cannot tell: send it.
            _ => true,
        }
    }

    /// Sends `files` several at a time, `put --force` style.
    async fn upload(&self, files: Vec<(PathBuf, String, u64)>, report: &mut Report) {
        if files.is_empty() {
            return;
        }
        let total: u64 = files.iter().map(|f| f.2).sum();
        let count = files.len() as u64;
        let progress = Files::new(files_bar(total, count), count);
        let options = PutOptions {
            replication: self.options.replication,
            overwrite: true,
        };
        let progress = &progress;
        let results: Vec<(String, u64, anyhow::Result<()>)> =
            futures::stream::iter(files.into_iter().map(|(local, remote, size)| async move {
                let r = put_file(self.client, &local, &remote, options, progress).await;
                progress.done();
                (remote, size, r)
            }))
            .buffer_unordered(self.options.parallel.max(1))
            .collect()
            .await;
        progress.bar().finish_and_clear();
        for (remote, size, r) in results {
            match r {
                Ok(()) => {
                    report.bytes += size;
                    report.uploaded.push(remote);
                }
                Err(e) => {
                    eprintln!("dfs: {remote}: {e:#}");
                    report.failed.push(remote);
                }
            }
        }
    }

    /// Follows the directory's events until Ctrl-C or SIGTERM.
    async fn watch(&self) -> anyhow::Result<()> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<notify::Result<notify::Event>>(EVENTS);
        let overflow = Arc::new(AtomicBool::new(false));
        let mut watcher = {
            let overflow = overflow.clone();
            notify::recommended_watcher(move |event| {
                // Never block the watcher's thread: a full queue means "rescan".
                if tx.try_send(event).is_err() {
                    overflow.store(true, Ordering::Relaxed);
                }
            })
            .context("cannot watch the directory")?
        };
        watcher
            .watch(&self.root, notify::RecursiveMode::Recursive)
            .with_context(|| format!("{}: cannot watch", self.root.display()))?;
        eprintln!("dfs sync: watching {} (Ctrl-C stops)", self.root.display());
        let mut pending: HashMap<PathBuf, Instant> = HashMap::new();
        let mut tick = tokio::time::interval(TICK);
        let stop = shutdown_signal();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                event = rx.recv() => match event {
                    Some(Ok(e)) => {
                        if e.need_rescan() {
                            overflow.store(true, Ordering::Relaxed);
                        }
                        for p in e.paths {
                            pending.insert(p, Instant::now());
                        }
                    }
                    Some(Err(e)) => {
                        eprintln!("dfs sync: watch error: {e}; making a full pass");
                        overflow.store(true, Ordering::Relaxed);
                    }
                    None => bail!("the directory watcher stopped"),
                },
                _ = tick.tick() => {
                    let report = if overflow.swap(false, Ordering::Relaxed) {
                        pending.clear();
                        self.pass(&self.root, &self.remote).await?
                    } else {
                        let quiet: Vec<PathBuf> = pending
                            .iter()
                            .filter(|(_, at)| at.elapsed() >= QUIET)
                            .map(|(p, _)| p.clone())
                            .collect();
                        let mut report = Report::default();
                        for path in quiet {
                            pending.remove(&path);
                            self.reconcile(&path, &mut report).await;
                        }
                        report
                    };
                    self.say(&report)?;
                }
            }
        }
        drop(watcher);
        Ok(())
    }

    /// Prints what a watch step did, when it did anything.
    fn say(&self, report: &Report) -> anyhow::Result<()> {
        if report.is_empty() {
            return Ok(());
        }
        if self.options.json {
            // One line per step, for a script that follows the output.
            return crate::cmd::print_text(&format!("{}\n", report.json()));
        }
        for p in &report.uploaded {
            eprintln!("dfs sync: sent {p}");
        }
        for p in &report.deleted {
            eprintln!("dfs sync: removed {p}");
        }
        Ok(())
    }

    /// Brings one changed local path and the cluster back in line; failures are
    /// printed and counted in `report`.
    async fn reconcile(&self, path: &Path, report: &mut Report) {
        let Ok(rel) = path.strip_prefix(&self.root) else {
            return;
        };
        let Some(rel) = rel.to_str() else {
            eprintln!("dfs sync: {}: skipped: not a UTF-8 name", path.display());
            return;
        };
        let remote = if rel.is_empty() {
            self.remote.clone()
        } else {
            join(&self.remote, rel)
        };
        if let Err(e) = self.reconcile_at(path, &remote, report).await {
            eprintln!("dfs: {remote}: {e:#}");
            report.failed.push(remote);
        }
    }

    async fn reconcile_at(
        &self,
        path: &Path,
        remote: &str,
        report: &mut Report,
    ) -> anyhow::Result<()> {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if self.options.delete {
                    match self.client.remove(remote, true, false).await {
                        Ok(()) => report.deleted.push(remote.to_string()),
                        Err(ClientError::Remote(ErrorCode::NotFound { .. })) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        if meta.is_dir() {
            report.merge(self.pass(path, remote).await?);
            return Ok(());
        }
        // Links to files are followed; to directories, and sockets or fifos, not.
        let meta = match std::fs::metadata(path) {
            Ok(m) if m.is_file() => m,
            _ => return Ok(()),
        };
        let there = match self.client.stat(remote).await {
            Ok(s) => Some(s),
            Err(ClientError::Remote(ErrorCode::NotFound { .. })) => None,
            Err(e) => return Err(e.into()),
        };
        if there.as_ref().is_some_and(|s| s.kind == FileKind::Dir) {
            if !self.options.delete {
                bail!("a directory in the cluster (use --delete to replace it)");
            }
            self.client.remove(remote, true, false).await?;
            report.deleted.push(remote.to_string());
        }
        let size = meta.len();
        let mtime = secs(meta.modified().ok());
        let send = match there.filter(|s| s.kind == FileKind::File) {
            Some(s) => {
                let entry = DirEntry {
                    name: String::new(),
                    kind: s.kind,
                    size: s.size,
                    mtime: s.mtime,
                    replication: s.replication,
                };
                self.changed(path, remote, size, mtime, &entry).await
            }
            None => true,
        };
        if send {
            self.upload(vec![(path.to_path_buf(), remote.to_string(), size)], report)
                .await;
        } else {
            report.unchanged += 1;
        }
        Ok(())
    }
}

/// Whether the cluster path `path` is `dir` or below it.
fn is_under(path: &str, dir: &str) -> bool {
    path == dir || path.starts_with(&format!("{}/", dir.trim_end_matches('/')))
}

fn secs(t: Option<SystemTime>) -> u64 {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// Every directory and regular file below `root`, by relative path ('/'-separated).
/// Links to files are followed; links to directories, sockets and fifos are skipped.
fn scan_local(root: &Path) -> anyhow::Result<BTreeMap<String, Local>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("{}: cannot list", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("{}: cannot list", dir.display()))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                eprintln!("dfs: {}: skipped: not a UTF-8 name", entry.path().display());
                continue;
            };
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                out.insert(child.clone(), Local::Dir);
                stack.push((entry.path(), child));
            } else if let Ok(m) = std::fs::metadata(entry.path()) {
                if m.is_file() {
                    let mtime = secs(m.modified().ok());
                    out.insert(
                        child,
                        Local::File {
                            size: m.len(),
                            mtime,
                        },
                    );
                }
            }
        }
    }
    Ok(out)
}

/// Everything below `root` in the cluster, by relative path.
async fn scan_remote(client: &Client, root: &str) -> anyhow::Result<BTreeMap<String, DirEntry>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(root.to_string(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        for entry in client.list(&dir).await? {
            let child = if rel.is_empty() {
                entry.name.clone()
            } else {
                format!("{rel}/{}", entry.name)
            };
            if entry.kind == FileKind::Dir {
                stack.push((join(&dir, &entry.name), child.clone()));
            }
            out.insert(child, entry);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_under_a_directory() {
        assert!(is_under("/a/b", "/a"));
        assert!(is_under("/a", "/a"));
        assert!(!is_under("/ab", "/a"));
        assert!(is_under("/x", "/"));
    }
}
