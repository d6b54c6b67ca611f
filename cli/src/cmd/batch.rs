//! Transfers of many files in one process: `put -r`, `get -r`, `cp [-r]` and their
//! forms with several sources. A plan (directories to make, files to move) is built
//! first, then the files move several at a time on one shared connection pool, under
//! one progress bar. A file that fails is reported and the others go on.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use anyhow::{bail, Context as _};
use dfs_cli::progress::{files_bar, Files, Metered};
use dfs_client::{Client, ClientError, ErrorCode, FileKind, PutOptions};
use futures::StreamExt;
use tokio::io::{AsyncRead, ReadBuf};

use crate::cmd::transfer::{base_name, fetch_to};

/// `dir/name` in the cluster's namespace.
pub(crate) fn join(dir: &str, name: &str) -> String {
    format!("{}/{}", dir.trim_end_matches('/'), name)
}

/// What a batch does: directories to make (parents first), then files to move.
#[derive(Debug)]
struct Plan<F> {
    dirs: Vec<String>,
    files: Vec<F>,
    bytes: u64,
}

impl<F> Plan<F> {
    /// One bar for all of the plan's files.
    fn progress(&self) -> Files {
        let files = self.files.len() as u64;
        Files::new(files_bar(self.bytes, files), files)
    }
}

impl<F> Default for Plan<F> {
    fn default() -> Self {
        Plan {
            dirs: Vec::new(),
            files: Vec::new(),
            bytes: 0,
        }
    }
}

/// How a batch's files are stored.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Batch {
    pub(crate) parallel: usize,
    pub(crate) replication: Option<u32>,
    pub(crate) force: bool,
}

/// Whether `path` in the cluster is a directory (false when nothing is there).
async fn remote_is_dir(client: &Client, path: &str) -> anyhow::Result<bool> {
    match client.stat(path).await {
        Ok(s) => Ok(s.kind == FileKind::Dir),
        Err(ClientError::Remote(ErrorCode::NotFound { .. })) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Where each of `sources` goes under `dst`: into it (keeping the source's name)
/// when it is a directory, ends in '/', or there are several sources; else to `dst`
/// itself. With several sources `dst` is made if missing.
async fn targets(
    client: &Client,
    sources: &[String],
    dst: &str,
    dirs: &mut Vec<String>,
) -> anyhow::Result<Vec<(String, String)>> {
    let into = sources.len() > 1 || dst.ends_with('/') || remote_is_dir(client, dst).await?;
    if into && !dst.trim_end_matches('/').is_empty() {
        dirs.push(dst.trim_end_matches('/').to_string());
    }
    sources
        .iter()
        .map(|src| {
            if !into {
                return Ok((src.clone(), dst.to_string()));
            }
            let name = base_name(src).with_context(|| format!("{src}: cannot name it"))?;
            Ok((src.clone(), join(dst, name)))
        })
        .collect()
}

/// Runs `each` over `files`, `parallel` at a time, counting them on `files_done`;
/// failures are printed as they happen and counted in the result.
async fn run_files<F, Fut>(
    files: Vec<F>,
    parallel: usize,
    progress: &Files,
    name: impl Fn(&F) -> String,
    each: impl Fn(F) -> Fut,
) -> anyhow::Result<()>
where
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let total = files.len();
    if total == 1 {
        // One file: its own error is the whole story.
        let mut files = files;
        let r = match files.pop() {
            Some(f) => each(f).await,
            None => Ok(()),
        };
        progress.done();
        progress.bar().finish_and_clear();
        return r;
    }
    let failed = futures::stream::iter(files.into_iter().map(|f| {
        let label = name(&f);
        let fut = each(f);
        async move {
            let r = fut.await;
            progress.done();
            if let Err(e) = &r {
                progress.say(&format!("dfs: {label}: {e:#}"));
            }
            r.is_err()
        }
    }))
    .buffer_unordered(parallel.max(1))
    .filter(|failed| std::future::ready(*failed))
    .count()
    .await;
    progress.bar().finish_and_clear();
    if failed > 0 {
        bail!("{failed} of {total} files failed");
    }
    Ok(())
}

/// One local file to store.
#[derive(Debug)]
struct Upload {
    local: PathBuf,
    remote: String,
}

/// `dfs put` with several LOCALs or -r.
pub(crate) async fn put(
    client: &Client,
    locals: &[String],
    remote: &str,
    recursive: bool,
    batch: Batch,
) -> anyhow::Result<()> {
    if locals.iter().any(|l| l == "-") {
        bail!("'-' (stdin) can only be the one LOCAL of a put");
    }
    let mut plan = Plan::<Upload>::default();
    for (local, target) in targets(client, locals, remote, &mut plan.dirs).await? {
        let meta = std::fs::metadata(&local).with_context(|| format!("{local}: cannot open"))?;
        if meta.is_dir() {
            if !recursive {
                bail!("{local}: is a directory (use -r)");
            }
            walk_local(Path::new(&local), &target, &mut plan)?;
        } else {
            plan.bytes += meta.len();
            plan.files.push(Upload {
                local: PathBuf::from(local),
                remote: target,
            });
        }
    }
    for dir in &plan.dirs {
        client.mkdir(dir, true).await?;
    }
    let progress = &plan.progress();
    let options = PutOptions {
        replication: batch.replication,
        overwrite: batch.force,
    };
    run_files(
        plan.files,
        batch.parallel,
        progress,
        |f| f.local.display().to_string(),
        |f| async move { put_file(client, &f.local, &f.remote, options, progress).await },
    )
    .await
}

/// Adds `dir` (stored at `remote`) and everything below it to `plan`. Symbolic links
/// to files are followed; links to directories are not (they could loop), nor are
/// sockets and fifos: those are reported and skipped.
fn walk_local(dir: &Path, remote: &str, plan: &mut Plan<Upload>) -> anyhow::Result<()> {
    let mut stack = vec![(dir.to_path_buf(), remote.to_string())];
    while let Some((dir, remote)) = stack.pop() {
        plan.dirs.push(remote.clone());
        let mut entries = std::fs::read_dir(&dir)
            .with_context(|| format!("{}: cannot list", dir.display()))?
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("{}: cannot list", dir.display()))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                eprintln!("dfs: {}: skipped: not a UTF-8 name", path.display());
                continue;
            };
            let kind = entry
                .file_type()
                .with_context(|| format!("{}: cannot stat", path.display()))?;
            let target = join(&remote, &name);
            if kind.is_dir() {
                stack.push((path, target));
                continue;
            }
            let meta = match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("dfs: {}: skipped: {e}", path.display());
                    continue;
                }
            };
            if meta.is_file() {
                plan.bytes += meta.len();
                plan.files.push(Upload {
                    local: path,
                    remote: target,
                });
            } else {
                eprintln!(
                    "dfs: {}: skipped: not a regular file or directory",
                    path.display()
                );
            }
        }
    }
    Ok(())
}

/// Stores the local file `local` at `remote`, counting its bytes on `progress`; a
/// file that changes while it is read is not stored.
pub(crate) async fn put_file(
    client: &Client,
    local: &Path,
    remote: &str,
    options: PutOptions,
    progress: &Files,
) -> anyhow::Result<()> {
    let opened = tokio::fs::File::open(local).await.context("cannot open")?;
    let meta = opened.metadata().await.context("cannot stat")?;
    let input = dfs_cli::unchanged::Unchanged::new(
        Metered::new(opened, progress.bar().clone()),
        local.to_path_buf(),
        &meta,
    );
    client.put(remote, input, options).await?;
    Ok(())
}

/// One remote file to fetch.
#[derive(Debug)]
struct Download {
    remote: String,
    local: PathBuf,
}

/// `dfs get` with several REMOTEs or -r: LOCAL is a directory, made if missing.
pub(crate) async fn get(
    client: &Client,
    remotes: &[String],
    local: &str,
    recursive: bool,
    parallel: usize,
) -> anyhow::Result<()> {
    if local == "-" {
        bail!("several files cannot go to stdout; name a local directory");
    }
    let root = PathBuf::from(local);
    let into = remotes.len() > 1 || root.is_dir() || local.ends_with('/');
    let mut plan = Plan::<Download>::default();
    for remote in remotes {
        let stat = client.stat(remote).await?;
        let target = if into {
            root.join(base_name(&stat.path).unwrap_or("root"))
        } else {
            root.clone()
        };
        if stat.kind == FileKind::Dir {
            if !recursive {
                bail!("{remote}: is a directory (use -r)");
            }
            let mut stack = vec![(stat.path.clone(), target)];
            while let Some((dir, local_dir)) = stack.pop() {
                plan.dirs.push(local_dir.display().to_string());
                for entry in client.list(&dir).await? {
                    if !safe_local_name(&entry.name) {
                        eprintln!("dfs: {}: skipped: not a safe local file name", entry.name);
                        continue;
                    }
                    let path = join(&dir, &entry.name);
                    let to = local_dir.join(&entry.name);
                    match entry.kind {
                        FileKind::Dir => stack.push((path, to)),
                        FileKind::Symlink => {
                            eprintln!("dfs: {path}: skipped: a symbolic link");
                        }
                        FileKind::File => {
                            plan.bytes += entry.size;
                            plan.files.push(Download {
                                remote: path,
                                local: to,
                            });
                        }
                    }
                }
            }
        } else {
            plan.bytes += stat.size;
            plan.files.push(Download {
                remote: stat.path.clone(),
                local: target,
            });
        }
    }
    if into {
        std::fs::create_dir_all(&root).with_context(|| format!("{local}: cannot create"))?;
    }
    for dir in &plan.dirs {
        std::fs::create_dir_all(dir).with_context(|| format!("{dir}: cannot create"))?;
    }
    let progress = &plan.progress();
    run_files(
        plan.files,
        parallel,
        progress,
        |f| f.remote.clone(),
        |f| async move { fetch_to(client, &f.remote, &f.local, progress.bar()).await },
    )
    .await
}

/// A name from the cluster that is safe to create locally: never a path.
fn safe_local_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// One file of a copy.
#[derive(Debug)]
struct CopyFile {
    src: String,
    dst: String,
    size: u64,
}

/// `dfs cp`: server-side unless `through_client`.
pub(crate) async fn cp(
    client: &Client,
    srcs: &[String],
    dst: &str,
    recursive: bool,
    through_client: bool,
    batch: Batch,
) -> anyhow::Result<()> {
    let mut plan = Plan::<CopyFile>::default();
    for (src, target) in targets(client, srcs, dst, &mut plan.dirs).await? {
        let stat = client.stat(&src).await?;
        if stat.kind == FileKind::File {
            plan.bytes += stat.size;
            plan.files.push(CopyFile {
                src: stat.path,
                dst: target,
                size: stat.size,
            });
            continue;
        }
        if !recursive {
            bail!("{src}: is a directory (use -r)");
        }
        let from = stat.path.trim_end_matches('/');
        if target == from || target.starts_with(&format!("{from}/")) {
            bail!("{src}: cannot copy a directory into itself ({target})");
        }
        let mut stack = vec![(stat.path.clone(), target)];
        while let Some((dir, to)) = stack.pop() {
            plan.dirs.push(to.clone());
            for entry in client.list(&dir).await? {
                let (path, target) = (join(&dir, &entry.name), join(&to, &entry.name));
                match entry.kind {
                    FileKind::Dir => stack.push((path, target)),
                    FileKind::Symlink => {
                        eprintln!("dfs: {path}: skipped: a symbolic link");
                    }
                    FileKind::File => {
                        plan.bytes += entry.size;
                        plan.files.push(CopyFile {
                            src: path,
                            dst: target,
                            size: entry.size,
                        });
                    }
                }
            }
        }
    }
    for dir in &plan.dirs {
        client.mkdir(dir, true).await?;
    }
    let progress = &plan.progress();
    let options = PutOptions {
        replication: batch.replication,
        overwrite: batch.force,
    };
    run_files(
        plan.files,
        batch.parallel,
        progress,
        |f| f.src.clone(),
        |f| async move {
            if through_client {
                copy_through(client, &f, options, progress).await
            } else {
                let bar = progress.bar();
                client
                    .copy(&f.src, &f.dst, options, &|n| bar.inc(n))
                    .await?;
                Ok(())
            }
        },
    )
    .await
}

/// A copy whose bytes are read from the source and written to the copy by this
/// client, through a bounded in-memory pipe. A read that ends early fails the write
/// before its commit, so a short copy is never stored.
async fn copy_through(
    client: &Client,
    file: &CopyFile,
    options: PutOptions,
    progress: &Files,
) -> anyhow::Result<()> {
    let replication = match options.replication {
        Some(r) => Some(r),
        None => Some(client.stat(&file.src).await?.replication),
    };
    let (mut writer, reader) = tokio::io::duplex(1 << 20);
    let reader = Exact {
        inner: Metered::new(reader, progress.bar().clone()),
        left: file.size,
    };
    let read = async {
        let r = client.get_range(&file.src, 0, file.size, &mut writer).await;
        drop(writer);
        r
    };
    let write = client.put(
        &file.dst,
        reader,
        PutOptions {
            replication,
            ..options
        },
    );
    let (read, written) = futures::join!(read, write);
    // The reader's failure is the cause when both failed.
    read?;
    written?;
    Ok(())
}

/// Yields exactly `left` more bytes of `inner`, and fails if it ends before that.
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: AsyncRead + Unpin> AsyncRead for Exact<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let n = (buf.filled().len() - before) as u64;
            if n == 0 && self.left > 0 {
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the source ended early",
                )));
            }
            self.left = self.left.saturating_sub(n);
        }
        r
    }
}
