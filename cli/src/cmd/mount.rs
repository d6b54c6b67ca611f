//! `dfs mount` and `dfs umount`.
//!
//! Without `--foreground`, `dfs mount` starts itself again with `--foreground`, in
//! a process group of its own (so the terminal's Ctrl-C does not reach it), with
//! its log in the cache dir, and returns once the mount is in the mount table, or
//! fails with the served process's last log line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use dfs_client::Client;

pub(crate) struct Options {
    pub(crate) read_only: bool,
    pub(crate) foreground: bool,
    pub(crate) attr_timeout: f64,
    pub(crate) cache_dir: Option<PathBuf>,
    pub(crate) stall_timeout: u64,
    pub(crate) trash: bool,
}

/// How long a background `dfs mount` waits for the mount to appear.
const MOUNT_WAIT: Duration = Duration::from_secs(30);

pub(crate) async fn mount(client: &Client, mountpoint: &Path, o: Options) -> anyhow::Result<()> {
    let meta = std::fs::metadata(mountpoint)
        .with_context(|| format!("mount point {}", mountpoint.display()))?;
    if !meta.is_dir() {
        bail!("mount point {}: not a directory", mountpoint.display());
    }
    let mountpoint = std::fs::canonicalize(mountpoint)
        .with_context(|| format!("mount point {}", mountpoint.display()))?;
    if dfs_mount::is_mounted(&mountpoint) {
        bail!(
            "{}: something is already mounted there",
            mountpoint.display()
        );
    }
    if !(0.0..=3600.0).contains(&o.attr_timeout) {
        bail!("--attr-timeout: between 0 and 3600 seconds");
    }
    let base = match &o.cache_dir {
        Some(d) => d.clone(),
        None => default_cache_dir(),
    };
    std::fs::create_dir_all(&base).with_context(|| format!("cache dir {}", base.display()))?;
    // Reach the cluster first: a wrong address or key fails here, in one line.
    client.stat("/").await?;
    if !o.foreground {
        return background(&mountpoint, &base).await;
    }
    let cache = tempfile::Builder::new()
        .prefix("mount-")
        .tempdir_in(&base)
        .with_context(|| format!("cache dir {}", base.display()))?;
    let options = dfs_mount::MountOptions {
        read_only: o.read_only,
        attr_timeout: Duration::from_secs_f64(o.attr_timeout),
        cache_dir: cache.path().to_path_buf(),
        stall_timeout: Duration::from_secs(o.stall_timeout),
        trash: o.trash,
        fs_name: format!("dfs:{}", client.master()),
        ..Default::default()
    };
    let runtime = tokio::runtime::Handle::current();
    let (c, mp) = (client.clone(), mountpoint.clone());
    let mounted =
        tokio::task::spawn_blocking(move || dfs_mount::Mounted::new(c, &mp, options, runtime))
            .await??;
    tracing::info!(mountpoint = %mountpoint.display(), "mounted");
    let serving = tokio::task::spawn_blocking(move || mounted.wait());
    tokio::pin!(serving);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            done = &mut serving => {
                done??;
                return Ok(());
            }
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        // Unmounting ends the session; `serving` then returns.
        if let Err(e) = dfs_mount::unmount(&mountpoint) {
            eprintln!("dfs: cannot unmount yet: {e}");
        }
    }
}

pub(crate) fn umount(mountpoint: &Path) -> anyhow::Result<()> {
    let path = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    if !dfs_mount::is_mounted(&path) {
        bail!("{}: not mounted", mountpoint.display());
    }
    dfs_mount::unmount(&path)?;
    Ok(())
}

/// Serves the mount from a child `dfs mount --foreground`, and waits until it is
/// mounted.
async fn background(mountpoint: &Path, cache: &Path) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt as _;
    let log_path = cache.join(format!("mount-{}.log", std::process::id()));
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("log file {}", log_path.display()))?;
    let exe = std::env::current_exe().context("finding the dfs binary")?;
    let mut child = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .arg("--foreground")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log.try_clone()?)
        .process_group(0)
        .spawn()
        .context("starting the mount process")?;
    let deadline = tokio::time::Instant::now() + MOUNT_WAIT;
    loop {
        if dfs_mount::is_mounted(mountpoint) {
            let _ = std::fs::remove_file(&log_path);
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let last = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no message")
                .trim_start_matches("dfs: ")
                .to_string();
            bail!("the mount process exited ({status}): {last}");
        }
        if tokio::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{} was not mounted within {}s (log: {})",
                mountpoint.display(),
                MOUNT_WAIT.as_secs(),
                log_path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("dfs").join("mount")
}
