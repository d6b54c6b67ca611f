//! `dfs shell`: typed at a real terminal (tmux) with Tab completion, a working
//! directory and history across sessions; and fed a script on stdin.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use dfs_testkit::verbs::{dfs, ok, target, Target};
use dfs_testkit::{bounded, cluster, dfs_bin, wait_until};
use tokio::io::AsyncWriteExt;

/// A tmux server of the test's own, on a socket in the test's temp dir (so nothing
/// is left in /tmp), killed when dropped.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn new(dir: &Path, name: &str) -> Tmux {
        assert!(
            std::process::Command::new("tmux")
                .arg("-V")
                .output()
                .is_ok(),
            "tmux is missing: `.ci/test` installs it (apt-get install tmux)"
        );
        Tmux {
            socket: dir.join(format!("tmux-{name}.sock")),
        }
    }

    fn run(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux runs");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `dfs shell` in a new 160x50 session.
    fn start_shell(&self, target: &Target, home: &Path) {
        let dfs = dfs_bin();
        let env = [
            format!("HOME={}", home.display()),
            format!("DFS_MASTER={}", target.master),
            format!("DFS_SECRET={}", target.secret),
            "RUST_LOG=error".to_string(),
        ];
        let mut args = vec![
            "new-session",
            "-d",
            "-s",
            "dfs",
            "-x",
            "160",
            "-y",
            "50",
            "--",
            "env",
            "-u",
            "XDG_CONFIG_HOME",
        ];
        args.extend(env.iter().map(String::as_str));
        args.push(dfs.to_str().expect("utf-8 path"));
        args.push("shell");
        self.run(&args);
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "dfs", "--"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "dfs"])
    }

    async fn wait_for(&self, what: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !self.screen().contains(what) {
            assert!(
                std::time::Instant::now() < deadline,
                "{what:?} never showed; the screen:\n{}",
                self.screen()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shell_at_a_terminal_completes_keeps_a_directory_and_history() {
    bounded(async {
        let (dir, cluster) = cluster().await;
        let m = target(&cluster);
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).expect("home");
        ok(&dfs(&m, &["mkdir", "-p", "/projects/alpha"], None).await);
        ok(&dfs(
            &m,
            &["put", "-", "/projects/alpha/notes.txt"],
            Some(b"first line\nsecond\n"),
        )
        .await);

        let tmux = Tmux::new(dir.path(), "shell");
        tmux.start_shell(&m, &home);
        tmux.wait_for("dfs:/>").await;

        // Tab completes a verb, then a remote directory, then a file in it.
        tmux.keys(&["c", "d", " ", "/pro", "Tab"]);
        tmux.wait_for("dfs:/> cd /projects/").await;
        tmux.keys(&["al", "Tab"]);
        tmux.wait_for("cd /projects/alpha/").await;
        tmux.keys(&["Enter"]);
        tmux.wait_for("dfs:/projects/alpha>").await;
        tmux.keys(&["pw", "Tab"]);
        tmux.wait_for("dfs:/projects/alpha> pwd").await;
        tmux.keys(&["Enter"]);
        tmux.keys(&["hea", "Tab"]);
        tmux.wait_for("> head").await;
        tmux.keys(&["-n 1 no", "Tab"]);
        tmux.wait_for("head -n 1 notes.txt").await;
        tmux.keys(&["Enter"]);
        tmux.wait_for("first line").await;
        assert!(!tmux.screen().contains("second"), "{}", tmux.screen());

        // Relative paths everywhere; errors are one line and the shell goes on.
        tmux.keys(&["touch fresh", "Enter"]);
        tmux.keys(&["ls", "Enter"]);
        tmux.wait_for("fresh").await;
        tmux.keys(&["cat nothing-here", "Enter"]);
        tmux.wait_for("dfs: /projects/alpha/nothing-here: no such file or directory")
            .await;
        tmux.keys(&["help", "Enter"]);
        tmux.wait_for("Verbs (`help VERB` for one):").await;
        tmux.keys(&["exit", "Enter"]);
        let history = home.join(".config/dfs/shell_history");
        wait_until(Duration::from_secs(20), "the history file", || async {
            std::fs::read_to_string(&history).is_ok_and(|h| h.contains("touch fresh"))
        })
        .await;

        // A new session remembers: Up brings back the last command.
        let tmux = Tmux::new(dir.path(), "again");
        tmux.start_shell(&m, &home);
        tmux.wait_for("dfs:/>").await;
        tmux.keys(&["Up"]);
        tmux.wait_for("dfs:/> exit").await;
        tmux.keys(&["Up"]);
        tmux.wait_for("dfs:/> help").await;
        tmux.keys(&["C-u", "exit", "Enter"]);
        drop(tmux);
        cluster.shutdown().await.expect("shutdown");
    })
    .await;
}

/// `dfs shell` with `input` as its stdin (a script).
async fn script(m: &Target, home: &Path, input: &[u8]) -> std::process::Output {
    let mut child = tokio::process::Command::new(dfs_bin())
        .arg("shell")
        .env("HOME", home)
        .env("DFS_MASTER", &m.master)
        .env("DFS_SECRET", &m.secret)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input).await.expect("write");
    drop(stdin);
    child.wait_with_output().await.expect("shell runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shell_runs_a_script_from_stdin() {
    bounded(async {
        let (dir, cluster) = cluster().await;
        let m = target(&cluster);
        let home = dir.path().join("home");
        let script_text = "mkdir -p /s/t\ncd /s\ncd t\ntouch 'a file'\nls\npwd\ncount --json\n";
        let out = script(&m, &home, script_text.as_bytes()).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stdout.contains("a file\n/s/t\n"), "{stdout}");
        assert!(stdout.contains("\"files\": 1"), "{stdout}");
        assert!(out.status.success(), "{stderr}");

        // A failing command: reported, the rest still runs, and the exit status says so.
        let out = script(
            &m,
            &home,
            b"cat /nope\nmaster --data x\nnot-a-verb\nput - /s/x\nls /s\n",
        )
        .await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stdout.contains("t/"), "the last line still ran: {stdout}");
        assert!(
            stderr.contains("dfs: /nope: no such file or directory"),
            "{stderr}"
        );
        assert!(
            stderr.contains("`master` is not run inside the shell"),
            "{stderr}"
        );
        assert!(
            stderr.contains("dfs: unrecognized subcommand 'not-a-verb'"),
            "{stderr}"
        );
        assert!(
            stderr.contains("'-' (stdin) is the shell's script here"),
            "{stderr}"
        );
        assert!(stderr.contains("dfs: 4 commands failed"), "{stderr}");
        assert!(!stderr.contains("panicked"));
        cluster.shutdown().await.expect("shutdown");
    })
    .await;
}
