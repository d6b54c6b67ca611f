//! Running the built `dfs` binary's client verbs against a cluster, as a user or a
//! script would: the exit status, stdout, and stderr (which must be one line on
//! failure, never a panic).

use std::path::Path;
use std::process::Stdio;

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::procs::dfs_bin;
use crate::LocalCluster;

/// What one `dfs` run gave.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Out {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Where the verbs go: the master's address, and the cluster secret they prove.
#[derive(Clone, Debug)]
pub struct Target {
    pub master: String,
    pub secret: String,
}

pub fn target(cluster: &LocalCluster) -> Target {
    Target {
        master: cluster.master_addr().to_string(),
        secret: cluster.secret().encode(),
    }
}

/// `dfs ARGS` with `stdin` as its input (none: /dev/null).
pub async fn dfs(target: &Target, args: &[&str], stdin: Option<&[u8]>) -> Out {
    run(target, None, args, stdin).await
}

/// `dfs ARGS` run in the local directory `dir`, for verbs with local paths.
pub async fn dfs_in(target: &Target, dir: &Path, args: &[&str]) -> Out {
    run(target, Some(dir), args, None).await
}

async fn run(target: &Target, dir: Option<&Path>, args: &[&str], stdin: Option<&[u8]>) -> Out {
    let mut command = Command::new(dfs_bin());
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    command.args(args);
    run_command(command, target, stdin).await
}

/// Runs `command`, a `dfs` invocation prepared by the caller (such as `dfs` on
/// another host, through `ip netns exec`), as a user would against `target`: the
/// master and secret from the environment, no key, no logging, `stdin` as input.
pub async fn run_command(mut command: Command, target: &Target, stdin: Option<&[u8]>) -> Out {
    let mut child = command
        .env("DFS_MASTER", &target.master)
        .env("DFS_SECRET", &target.secret)
        .env_remove("DFS_KEY")
        .env_remove("RUST_LOG")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn dfs");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(input).await.expect("write stdin");
        drop(pipe);
    }
    let out = child.wait_with_output().await.expect("dfs runs");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Asserts the run succeeded.
pub fn ok(out: &Out) -> &Out {
    assert_eq!(out.code, 0, "dfs failed: {}", out.stderr);
    out
}

/// Asserts the run succeeded and printed JSON.
pub fn json(out: &Out) -> Value {
    serde_json::from_slice(&ok(out).stdout).expect("valid JSON")
}

/// Asserts the run failed with one line on stderr that contains `needle`.
pub fn failed_with(out: &Out, needle: &str) {
    assert_ne!(out.code, 0, "expected failure");
    assert!(out.stderr.starts_with("dfs: "), "stderr: {}", out.stderr);
    assert_eq!(
        out.stderr.trim_end().lines().count(),
        1,
        "one line: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains(needle),
        "{needle:?} not in {}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"));
}
