//! A `dfs mount --foreground` process over a cluster, at a mount point in a temp
//! dir, for tests that drive the mount with ordinary programs. Dropping it
//! unmounts (lazily, if something is still busy) and ends the process, so no test
//! leaves a mount behind.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::procs::dfs_bin;
use crate::verbs::Target;
use crate::wait::wait_until;

#[derive(Debug)]
pub struct Mount {
    dir: tempfile::TempDir,
    point: PathBuf,
    child: Option<Child>,
}

impl Mount {
    /// Mounts the cluster `target` names, with extra `dfs mount` flags, and waits
    /// until the mount is in the mount table.
    pub async fn start(target: &Target, flags: &[&str]) -> Mount {
        let dir = tempfile::tempdir().expect("temp dir");
        let point = dir.path().join("mnt");
        let cache = dir.path().join("cache");
        std::fs::create_dir(&point).expect("mount point");
        let child = Command::new(dfs_bin())
            .arg("mount")
            .arg(&point)
            .arg("--foreground")
            .arg("--cache-dir")
            .arg(&cache)
            .args(flags)
            .env("DFS_MASTER", &target.master)
            .env("DFS_SECRET", &target.secret)
            .env_remove("DFS_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn dfs mount");
        let mut m = Mount {
            dir,
            point,
            child: Some(child),
        };
        let point = m.point.clone();
        wait_until(Duration::from_secs(30), "the mount to appear", || {
            let mounted = dfs_mount::is_mounted(&point);
            let exited = m
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            assert!(!exited, "dfs mount exited before mounting");
            async move { mounted }
        })
        .await;
        m
    }

    pub fn path(&self) -> &Path {
        &self.point
    }

    /// `name` under the mount point.
    pub fn join(&self, name: &str) -> PathBuf {
        self.point.join(name.trim_start_matches('/'))
    }

    /// The temp dir holding the mount point (for local files beside it).
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// Unmounts with `dfs umount` and waits for the mount process to exit;
    /// returns its exit status.
    pub async fn unmount(mut self) -> std::process::ExitStatus {
        let out = Command::new(dfs_bin())
            .arg("umount")
            .arg(&self.point)
            .output()
            .await
            .expect("dfs umount runs");
        assert!(
            out.status.success(),
            "dfs umount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut child = self.child.take().expect("mount process");
        tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .expect("the mount process exits after umount")
            .expect("wait")
    }

    /// Waits for the mount process to exit (after a signal, say); its status.
    pub async fn wait_exit(mut self, limit: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("mount process");
        tokio::time::timeout(limit, child.wait())
            .await
            .expect("the mount process exits")
            .expect("wait")
    }

    /// The mount process's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if dfs_mount::is_mounted(&self.point) {
            let _ = rustix::mount::unmount(&self.point, rustix::mount::UnmountFlags::DETACH);
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
        }
    }
}

/// Runs `program args` in `dir` (bounded to `limit`), panicking with its output
/// unless it succeeds; returns its stdout.
pub async fn run_ok(dir: &Path, program: &str, args: &[&str], limit: Duration) -> String {
    let out = tokio::time::timeout(
        limit,
        Command::new(program)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{program} {args:?} did not finish within {limit:?}"))
    .unwrap_or_else(|e| panic!("{program}: {e} (is it installed? .ci/test installs it)"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
