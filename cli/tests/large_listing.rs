//! `dfs ls` of a directory with 300,000 entries: answered in pages, printed as they
//! come, in bounded memory on the master and in the `dfs` process. `dfs count` and
//! `dfs du -s` of it in one request each. Then `dfs rm -r
//! --skip-trash` of it: gone at once, reclaimed in the background in pieces
//! (`dfs_master_removals_reclaiming` on `/metrics` until done).

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use dfs_client::{Client, ClusterSecret, Identity};
use dfs_testkit::wait_until;
use tokio::io::{AsyncBufReadExt, BufReader};

const ENTRIES: usize = 300_000;
const WRITERS: usize = 64;

/// A field of `/proc/PID/status` in KiB (VmRSS, VmHWM).
fn proc_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_of_300k_entries_streams_in_pages() {
    // Creating the entries takes a while on a slow disk; the listing itself is fast.
    let run = async {
        let dir = tempfile::tempdir().expect("temp dir");
        let secret = ClusterSecret::generate();
        let master = dfs_testkit::free_addr();
        let http = dfs_testkit::free_addr();
        // No chunkservers: directories are metadata only.
        let mut master_proc = dfs_testkit::master_process(
            &master,
            &dir.path().join("master"),
            &secret,
            &["--http", &http],
        );
        let client = Client::new(master.clone(), Identity::cluster_admin(&secret));
        wait_until(Duration::from_secs(20), "the master", || async {
            client.status().await.is_ok()
        })
        .await;
        client.mkdir("/big", false).await.expect("mkdir");
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..WRITERS {
            let (client, next) = (client.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= ENTRIES {
                        return;
                    }
                    client
                        .mkdir(&format!("/big/d{i:06}"), false)
                        .await
                        .expect("mkdir");
                }
            }));
        }
        for t in tasks {
            t.await.expect("writer");
        }
        let pid = master_proc.id().expect("pid");
        let master_before = proc_kib(pid, "VmRSS:");

        // The library gathers every page.
        let all = client.list("/big").await.expect("list");
        assert_eq!(all.len(), ENTRIES);
        assert!(all.windows(2).all(|w| w[0].name < w[1].name), "name order");

        for json in [false, true] {
            let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_dfs"));
            cmd.args(["ls", "/big"])
                .env("DFS_MASTER", &master)
                .env("DFS_SECRET", secret.encode())
                .env_remove("DFS_KEY")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            if json {
                cmd.arg("--json");
            }
            let mut ls = cmd.spawn().expect("dfs ls");
            let ls_pid = ls.id().expect("pid");
            let mut lines = BufReader::new(ls.stdout.take().expect("stdout")).lines();
            let mut names = 0usize;
            let mut peak = 0u64;
            let mut last = String::new();
            while let Some(line) = lines.next_line().await.expect("read") {
                let is_entry = if json {
                    line.trim_start().starts_with("\"name\": \"d")
                } else {
                    line.starts_with('d') && line.ends_with('/')
                };
                if is_entry {
                    names += 1;
                    // Sampled as the listing passes through the process (while it
                    // still runs, held back by the pipe): one holding it all would
                    // peak well before its end.
                    if names.is_multiple_of(10_000) {
                        peak = peak.max(proc_kib(ls_pid, "VmHWM:"));
                    }
                    last = line;
                }
            }
            let status = ls.wait().await.expect("wait");
            assert!(status.success(), "dfs ls failed");
            assert_eq!(names, ENTRIES, "every entry listed (json: {json})");
            assert!(last.contains("d299999"), "in order to the last: {last}");
            eprintln!(
                "dfs ls{}: peak RSS {peak} KiB for {ENTRIES} entries",
                if json { " --json" } else { "" }
            );
            assert!(
                peak > 0 && peak < 30 << 10,
                "dfs ls holds the listing instead of streaming it: {peak} KiB"
            );
        }
        let master_after = proc_kib(pid, "VmRSS:");
        eprintln!("master: RSS {master_before} KiB before the listings, {master_after} KiB after");
        assert!(
            master_after < master_before + (64 << 10),
            "the master grew from {master_before} to {master_after} KiB"
        );

        // Counted in one request: the master walks the 300,000 entries in slices.
        for (verb, args) in [
            ("count", vec!["count", "--json", "/big"]),
            ("du", vec!["du", "-s", "--json", "/big"]),
        ] {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_dfs"))
                .args(&args)
                .env("DFS_MASTER", &master)
                .env("DFS_SECRET", secret.encode())
                .env_remove("DFS_KEY")
                .stdin(Stdio::null())
                .output()
                .await
                .expect("dfs");
            assert!(
                out.status.success(),
                "dfs {verb}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
            if verb == "count" {
                assert_eq!(v["dirs"], (ENTRIES + 1) as u64, "{v}");
                assert_eq!(
                    (v["files"].as_u64(), v["bytes"].as_u64()),
                    (Some(0), Some(0))
                );
            } else {
                assert_eq!(v[0]["path"], "/big", "{v}");
                assert_eq!(v[0]["size"], 0, "{v}");
            }
        }

        // Removed for good in one command: it answers once the tree is detached, and
        // the 300,000 entries are reclaimed after, a few thousand per record.
        let rm = tokio::process::Command::new(env!("CARGO_BIN_EXE_dfs"))
            .args(["rm", "-r", "--skip-trash", "/big"])
            .env("DFS_MASTER", &master)
            .env("DFS_SECRET", secret.encode())
            .env_remove("DFS_KEY")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .expect("dfs rm");
        assert!(
            rm.status.success(),
            "dfs rm: {}",
            String::from_utf8_lossy(&rm.stderr)
        );
        assert!(client.stat("/big").await.is_err(), "/big is gone at once");
        let reclaiming = || async {
            let (_, metrics) = dfs_testkit::http_get(&http, "/metrics").await;
            dfs_testkit::metric_sample(&metrics, "dfs_master_removals_reclaiming")
        };
        assert_eq!(
            reclaiming().await,
            Some(1.0),
            "the tree is reclaimed after the answer, not before it"
        );
        wait_until(Duration::from_secs(300), "the tree reclaimed", || async {
            reclaiming().await == Some(0.0)
        })
        .await;
        eprintln!(
            "master: RSS {} KiB after reclaiming the tree (peak {} KiB)",
            proc_kib(pid, "VmRSS:"),
            proc_kib(pid, "VmHWM:")
        );
        client.mkdir("/big", false).await.expect("mkdir /big again");
        assert!(client.list("/big").await.expect("list").is_empty());
        assert!(client.list("/").await.expect("list /").len() == 1);
        let _ = master_proc.start_kill();
        let _ = master_proc.wait().await;
    };
    tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .expect("test exceeded its time bound");
}

/// `dfs fsck` of 12,500 files no chunkserver holds (loaded with `dfs bench load`):
/// every one named missing, once, in tree order, across three pages. The pages after
/// the first are walked from their cursor (`FsckFrom`), not from the top.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsck_names_every_missing_file_once_across_pages() {
    const FILES: u64 = 12_500;
    let run = async {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("master");
        let load = tokio::process::Command::new(env!("CARGO_BIN_EXE_dfs"))
            .args(["bench", "load", "--quiet", "--per-dir", "4000", "--files"])
            .arg(FILES.to_string())
            .arg("--data")
            .arg(&data)
            .stdin(Stdio::null())
            .output()
            .await
            .expect("dfs bench load");
        assert!(
            load.status.success(),
            "dfs bench load: {}",
            String::from_utf8_lossy(&load.stderr)
        );
        let secret = ClusterSecret::generate();
        let master = dfs_testkit::free_addr();
        let mut master_proc = dfs_testkit::master_process(&master, &data, &secret, &[]);
        let client = Client::new(master.clone(), Identity::cluster_admin(&secret));
        wait_until(Duration::from_secs(60), "the master", || async {
            client.status().await.is_ok()
        })
        .await;
        let target = dfs_testkit::verbs::Target {
            master: master.clone(),
            secret: secret.encode(),
        };
        let out = dfs_testkit::verbs::dfs(&target, &["fsck", "--json", "/"], None).await;
        assert_eq!(
            out.code, 1,
            "dfs fsck exits 1 when files are unhealthy: {}",
            out.stderr
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(v["healthy"], false, "{}", v["path"]);
        assert_eq!(
            (v["files"].as_u64(), v["missing"].as_u64()),
            (Some(FILES), Some(FILES))
        );
        let problems: Vec<&str> = v["problems"]
            .as_array()
            .expect("problems")
            .iter()
            .map(|p| p["path"].as_str().expect("a path"))
            .collect();
        assert_eq!(problems.len() as u64, FILES, "every missing file named");
        // The loaded names sort alike in tree and string order: strictly increasing
        // means each named once, in order, across the pages.
        assert!(
            problems.windows(2).all(|w| w[0] < w[1]),
            "each file once, in tree order"
        );
        assert!(problems.iter().all(|p| p.starts_with("/bulk/d")));
        let _ = master_proc.start_kill();
        let _ = master_proc.wait().await;
    };
    tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("test exceeded its time bound");
}
