//! Moving bytes: `put`, `get`, `append` and `tail`, with progress on a terminal.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use dfs_cli::progress::{bar, Metered};
use dfs_client::{AppendOptions, Client, ClientError, ErrorCode, FileKind, PutOptions};
use tokio::io::AsyncWriteExt;

use crate::cmd::shutdown_signal;

pub(crate) fn base_name(path: &str) -> Option<&str> {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
}

pub(crate) async fn put(
    client: &Client,
    local: &str,
    remote: &str,
    replication: Option<u32>,
    force: bool,
) -> anyhow::Result<()> {
    let into_dir = remote.ends_with('/')
        || matches!(client.stat(remote).await, Ok(s) if s.kind == FileKind::Dir);
    let remote = if into_dir {
        let name = Path::new(local)
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|_| local != "-")
            .with_context(|| format!("{remote}: is a directory; name the remote file"))?;
        format!("{}/{}", remote.trim_end_matches('/'), name)
    } else {
        remote.to_string()
    };
    let options = PutOptions {
        replication,
        overwrite: force,
    };
    let (input, progress, opened) = local_input(local).await?;
    let result = match opened {
        None => client.put(&remote, input, options).await,
        Some(before) => {
            // A file that changes while it is read fails the put before its commit.
            let input = dfs_cli::unchanged::Unchanged::new(input, PathBuf::from(local), &before);
            client.put(&remote, input, options).await
        }
    };
    progress.finish_and_clear();
    result?;
    Ok(())
}

/// LOCAL ('-' for stdin) as an input metered by a progress bar (sized for a file).
/// For a file, also its metadata as opened.
pub(crate) async fn local_input(
    local: &str,
) -> anyhow::Result<(
    Metered<Box<dyn tokio::io::AsyncRead + Unpin + Send>>,
    indicatif::ProgressBar,
    Option<std::fs::Metadata>,
)> {
    if local == "-" {
        let progress = bar(None, false);
        return Ok((
            Metered::new(Box::new(tokio::io::stdin()), progress.clone()),
            progress,
            None,
        ));
    }
    let file = tokio::fs::File::open(local)
        .await
        .with_context(|| format!("{local}: cannot open"))?;
    let meta = file
        .metadata()
        .await
        .with_context(|| format!("{local}: cannot stat"))?;
    if meta.is_dir() {
        bail!("{local}: is a directory (use -r)");
    }
    let progress = bar(Some(meta.len()), false);
    Ok((
        Metered::new(Box::new(file), progress.clone()),
        progress,
        Some(meta),
    ))
}

pub(crate) async fn append(
    client: &Client,
    local: &str,
    remote: &str,
    replication: Option<u32>,
) -> anyhow::Result<()> {
    let options = AppendOptions {
        create: true,
        replication,
    };
    let (input, progress, _) = local_input(local).await?;
    let result = client.append(remote, input, options).await;
    progress.finish_and_clear();
    result?;
    Ok(())
}

/// The last `bytes` of `remote`, then (with `follow`) whatever is appended, polling
/// its length every `interval`.
pub(crate) async fn tail(
    client: &Client,
    remote: &str,
    follow: bool,
    bytes: u64,
    interval: Duration,
) -> anyhow::Result<()> {
    let mut out = tokio::io::stdout();
    let stat = client.stat(remote).await?;
    if stat.kind == FileKind::Dir {
        return Err(ClientError::Remote(ErrorCode::IsADirectory { path: stat.path }).into());
    }
    let mut at = stat.size.saturating_sub(bytes);
    at += client.get_from(remote, at, &mut out).await?;
    if !follow {
        return Ok(());
    }
    loop {
        tokio::select! {
            _ = shutdown_signal() => return Ok(()),
            _ = tokio::time::sleep(interval) => {}
        }
        let size = client.stat(remote).await?.size;
        if size > at {
            at += client.get_from(remote, at, &mut out).await?;
        } else if size < at {
            eprintln!("dfs: {remote}: file shrank (replaced?); following from its end");
            at = size;
        }
    }
}

pub(crate) async fn get(client: &Client, remote: &str, local: &str) -> anyhow::Result<()> {
    if local == "-" {
        client.get(remote, tokio::io::stdout()).await?;
        return Ok(());
    }
    let stat = client.stat(remote).await?;
    if stat.kind == FileKind::Dir {
        return Err(ClientError::Remote(ErrorCode::IsADirectory { path: stat.path }).into());
    }
    let mut target = PathBuf::from(local);
    if target.is_dir() {
        target.push(base_name(&stat.path).context("cannot name the local file")?);
    }
    let progress = bar(Some(stat.size), false);
    let result = fetch_to(client, remote, &target, &progress).await;
    progress.finish_and_clear();
    result
}

/// Fetches `remote` into the local file `target`, counting bytes on `progress`.
///
/// Written beside the target and renamed at the end: never a half-written file at
/// `target`. The temp name is unguessable and created exclusively (O_EXCL: never
/// through a symlink someone planted), fsynced before the rename, and removed on
/// any failure, Ctrl-C and SIGTERM included.
///
/// A target that is a device or a pipe (`/dev/null`, a FIFO, `/dev/stdout`) is
/// written as the bytes come instead: renaming over it would replace the device
/// with a file.
pub(crate) async fn fetch_to(
    client: &Client,
    remote: &str,
    target: &Path,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    if let Ok(meta) = tokio::fs::metadata(target).await {
        let kind = meta.file_type();
        if !kind.is_file() && !kind.is_dir() {
            return stream_to(client, remote, target, progress).await;
        }
    }
    let file_name = target
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{}: not a file name", target.display()))?;
    let tmp = target.with_file_name(format!(
        ".{file_name}.dfs-partial-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .await
        .with_context(|| format!("{}: cannot create", tmp.display()))?;
    let mut writer = local_writer(file, progress);
    let transfer = async {
        client.get(remote, &mut writer).await?;
        writer.flush().await.context("writing the local file")?;
        writer
            .get_mut()
            .get_mut()
            .sync_all()
            .await
            .context("syncing the local file")?;
        tokio::fs::rename(&tmp, target)
            .await
            .with_context(|| format!("{}: cannot write", target.display()))?;
        if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
            // The rename itself durable too; a failure here loses nothing already there.
            if let Ok(d) = tokio::fs::File::open(dir).await {
                let _ = d.sync_all().await;
            }
        }
        Ok::<(), anyhow::Error>(())
    };
    let result = tokio::select! {
        r = transfer => r,
        _ = shutdown_signal() => Err(anyhow::anyhow!("interrupted")),
    };
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}

/// A local file written through a 1 MiB buffer, counting bytes on `progress`.
fn local_writer(
    file: tokio::fs::File,
    progress: &indicatif::ProgressBar,
) -> Metered<tokio::io::BufWriter<tokio::fs::File>> {
    Metered::new(
        tokio::io::BufWriter::with_capacity(1 << 20, file),
        progress.clone(),
    )
}

/// Fetches `remote` into a device or pipe as the bytes come (see [`fetch_to`]).
async fn stream_to(
    client: &Client,
    remote: &str,
    target: &Path,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .open(target)
        .await
        .with_context(|| format!("{}: cannot write", target.display()))?;
    let mut writer = local_writer(file, progress);
    let transfer = async {
        client.get(remote, &mut writer).await?;
        writer
            .flush()
            .await
            .with_context(|| format!("{}: cannot write", target.display()))?;
        Ok::<(), anyhow::Error>(())
    };
    tokio::select! {
        r = transfer => r,
        _ = shutdown_signal() => Err(anyhow::anyhow!("interrupted")),
    }
}

/// How much `head -n` reads at a time while looking for the end of its lines.
const HEAD_STEP: u64 = 64 << 10;

/// `dfs head`: the first `bytes` bytes, else the first `lines` lines (10), of `remote`.
pub(crate) async fn head(
    client: &Client,
    remote: &str,
    bytes: Option<u64>,
    lines: Option<u64>,
) -> anyhow::Result<()> {
    let mut out = tokio::io::stdout();
    if let Some(n) = bytes {
        client.get_range(remote, 0, n, &mut out).await?;
        return Ok(());
    }
    let want = lines.unwrap_or(10);
    let mut seen = 0u64;
    let mut at = 0u64;
    while seen < want {
        let mut piece = Vec::new();
        let got = client.get_range(remote, at, HEAD_STEP, &mut piece).await?;
        let mut cut = piece.len();
        for (i, b) in piece.iter().enumerate() {
            if *b == b'\n' {
                seen += 1;
                if seen == want {
                    cut = i + 1;
                    break;
                }
            }
        }
        out.write_all(&piece[..cut]).await?;
        if got < HEAD_STEP {
            break;
        }
        at += got;
    }
    out.flush().await?;
    Ok(())
}
