//! The built `dfs` binary against a real cluster: stdin and stdout, the verbs, the
//! `--json` shapes of docs/operations.md, and one-line errors with a non-zero exit.

use dfs_testkit::verbs::{dfs, failed_with, json, ok, target, Target};
use dfs_testkit::{bounded, cluster, data, CHUNK};
use serde_json::Value;
use tokio::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_put_stdout_get_cat_and_files() {
    bounded(async {
        let (dir, cluster) = cluster().await;
        let m = target(&cluster);
        let content = data(2 * CHUNK + 3, 5);
        ok(&dfs(&m, &["put", "-", "/in"], Some(&content)).await);
        let got = dfs(&m, &["get", "/in", "-"], None).await;
        assert!(ok(&got).stdout == content, "get - differs");
        let got = dfs(&m, &["cat", "/in"], None).await;
        assert!(ok(&got).stdout == content, "cat differs");

        // local files, and the --master flag after the verb instead of the environment
        let local = dir.path().join("local.bin");
        std::fs::write(&local, &content).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_dfs"))
            .args([
                "put",
                local.to_str().unwrap(),
                "/copy",
                "--master",
                &m.master,
            ])
            .env("DFS_MASTER", "127.0.0.1:1")
            .env("DFS_SECRET", &m.secret)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let back = dir.path().join("back.bin");
        ok(&dfs(&m, &["get", "/copy", back.to_str().unwrap()], None).await);
        assert!(std::fs::read(&back).unwrap() == content);
        // into an existing local directory, keeping the remote name
        ok(&dfs(&m, &["get", "/copy", dir.path().to_str().unwrap()], None).await);
        assert!(std::fs::read(dir.path().join("copy")).unwrap() == content);
        // into a remote directory, keeping the local name
        ok(&dfs(&m, &["mkdir", "/d"], None).await);
        ok(&dfs(&m, &["put", local.to_str().unwrap(), "/d/"], None).await);
        ok(&dfs(&m, &["stat", "/d/local.bin"], None).await);
        cluster.shutdown().await.unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_shapes_match_the_design() {
    bounded(async {
        let (_dir, cluster) = cluster().await;
        let m = target(&cluster);
        ok(&dfs(&m, &["put", "-", "/f"], Some(&data(CHUNK + 1, 1))).await);
        ok(&dfs(&m, &["mkdir", "-p", "/d/e"], None).await);

        let stat = json(&dfs(&m, &["stat", "/f", "--json"], None).await);
        assert_eq!(stat["path"], "/f");
        assert_eq!(stat["kind"], "file");
        assert_eq!(stat["size"], CHUNK as u64 + 1);
        assert_eq!(stat["replication"], 3);
        let chunks = stat["chunks"].as_array().expect("chunks");
        assert_eq!(chunks.len(), 2);
        for c in chunks {
            assert!(c["handle"].as_str().unwrap().len() == 36);
            assert_eq!(c["version"], 1);
            assert!(c["size"].as_u64().is_some());
            assert_eq!(c["replicas"].as_array().unwrap().len(), 3);
        }
        let dir = json(&dfs(&m, &["stat", "/d", "--json"], None).await);
        assert_eq!(dir["kind"], "dir");

        let status = json(&dfs(&m, &["status", "--json"], None).await);
        let servers = status["chunkservers"].as_array().unwrap();
        assert_eq!(servers.len(), 3);
        for s in servers {
            for key in ["id", "addr", "alive", "capacity", "used", "chunks"] {
                assert!(!s[key].is_null(), "status chunkserver lacks {key}");
            }
            assert_eq!(s["alive"], true);
            assert_eq!(s["chunks"], 2);
        }
        assert_eq!(status["files"], 1);
        assert_eq!(status["chunks"], 2);
        assert_eq!(status["under_replicated"], 0);

        let ls = json(&dfs(&m, &["ls", "/", "--json"], None).await);
        let entries: Vec<(String, String, u64)> = ls
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap().into(),
                    e["kind"].as_str().unwrap().into(),
                    e["size"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            [
                ("d".into(), "dir".into(), 0),
                ("f".into(), "file".into(), CHUNK as u64 + 1)
            ]
        );
        let rec = json(&dfs(&m, &["ls", "-R", "--json", "/"], None).await);
        let names: Vec<&str> = rec
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["d", "f", "d/e"]);
        cluster.shutdown().await.unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_verbs_and_clear_errors() {
    bounded(async {
        let (dir, cluster) = cluster().await;
        let m = target(&cluster);
        ok(&dfs(&m, &["mkdir", "-p", "/a/b"], None).await);
        failed_with(&dfs(&m, &["mkdir", "/a"], None).await, "/a: already exists");
        failed_with(
            &dfs(&m, &["mkdir", "/x/y"], None).await,
            "/x: no such file or directory",
        );
        ok(&dfs(&m, &["put", "-", "/a/b/f"], Some(b"hello")).await);
        failed_with(
            &dfs(&m, &["put", "-", "/a/b/f"], Some(b"again")).await,
            "/a/b/f: already exists",
        );
        ok(&dfs(&m, &["put", "--force", "-", "/a/b/f"], Some(b"again")).await);
        assert_eq!(
            ok(&dfs(&m, &["cat", "/a/b/f"], None).await).stdout,
            b"again"
        );

        let ls = dfs(&m, &["ls", "/a/b"], None).await;
        assert_eq!(String::from_utf8_lossy(&ok(&ls).stdout), "f\n");
        let ls = dfs(&m, &["ls", "-l", "/a"], None).await;
        assert!(String::from_utf8_lossy(&ok(&ls).stdout).contains("b/"));
        let ls = dfs(&m, &["ls", "-R", "/"], None).await;
        assert_eq!(
            String::from_utf8_lossy(&ok(&ls).stdout),
            "/:\na/\n\n/a:\nb/\n\n/a/b:\nf\n"
        );

        failed_with(
            &dfs(&m, &["rm", "/a"], None).await,
            "/a: directory not empty",
        );
        failed_with(
            &dfs(&m, &["get", "/nope", "-"], None).await,
            "/nope: no such file or directory",
        );
        failed_with(&dfs(&m, &["cat", "/a"], None).await, "/a: is a directory");
        failed_with(
            &dfs(&m, &["stat", "/nope"], None).await,
            "/nope: no such file or directory",
        );
        failed_with(
            &dfs(&m, &["rm", "-r", "/"], None).await,
            "refusing to remove /",
        );
        failed_with(
            &dfs(&m, &["put", "/does/not/exist", "/z"], None).await,
            "/does/not/exist",
        );
        failed_with(
            &dfs(&m, &["put", "-", "/z", "--replication", "9"], Some(b"x")).await,
            "not enough chunkservers",
        );
        ok(&dfs(&m, &["rm", "--skip-trash", "-r", "/a"], None).await);
        failed_with(
            &dfs(&m, &["ls", "/a"], None).await,
            "/a: no such file or directory",
        );

        // a failed get leaves no partial local file behind
        let target = dir.path().join("never");
        failed_with(
            &dfs(&m, &["get", "/nope", target.to_str().unwrap()], None).await,
            "no such file",
        );
        assert!(!target.exists());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("partial"))
            .collect();
        assert!(leftovers.is_empty());

        let status = dfs(&m, &["status"], None).await;
        assert!(String::from_utf8_lossy(&ok(&status).stdout).contains("3 alive"));
        cluster.shutdown().await.unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_usage_and_unreachable_master() {
    bounded(async {
        // A port nothing listens on, below the ephemeral range, so no other test's
        // server (in-process clusters bind port 0) takes it meanwhile.
        let free = Target {
            master: dfs_testkit::free_addr(),
            secret: dfs_client::ClusterSecret::generate().encode(),
        };
        failed_with(
            &dfs(&free, &["ls", "/"], None).await,
            "cannot reach the master",
        );
        let out = dfs(&free, &["frobnicate"], None).await;
        assert_eq!(out.code, 2, "clap usage error");
        let out = dfs(
            &free,
            &["master", "--data", "/tmp/x", "--chunk-size", "lots"],
            None,
        )
        .await;
        assert_ne!(out.code, 0);
        assert!(out.stderr.contains("not a size"), "{}", out.stderr);
        let out = dfs(&free, &["--io-timeout", "0s", "ls", "/"], None).await;
        assert_eq!(out.code, 2, "a zero timeout is bad usage: {}", out.stderr);
        assert!(out.stderr.contains("longer than zero"), "{}", out.stderr);
        let out = dfs(&free, &["--help"], None).await;
        let help = String::from_utf8_lossy(&ok(&out).stdout).into_owned();
        for verb in [
            "master",
            "chunkserver",
            "up",
            "put",
            "get",
            "cat",
            "ls",
            "mkdir",
            "rm",
            "stat",
            "status",
        ] {
            assert!(help.contains(verb), "--help lacks {verb}");
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mv_rm_to_trash_and_restore() {
    bounded(async {
        let (_dir, cluster) = cluster().await;
        let m = target(&cluster);
        ok(&dfs(&m, &["mkdir", "-p", "/src/sub"], None).await);
        ok(&dfs(&m, &["put", "-", "/src/sub/f"], Some(b"payload")).await);
        ok(&dfs(&m, &["mv", "/src", "/dst"], None).await);
        assert_eq!(
            ok(&dfs(&m, &["cat", "/dst/sub/f"], None).await).stdout,
            b"payload"
        );
        failed_with(
            &dfs(&m, &["mv", "/dst", "/dst/sub"], None).await,
            "into itself",
        );
        failed_with(
            &dfs(&m, &["mv", "/", "/x"], None).await,
            "refusing to move /",
        );
        failed_with(
            &dfs(&m, &["mv", "/nope", "/x"], None).await,
            "/nope: no such file or directory",
        );

        ok(&dfs(&m, &["rm", "/dst/sub/f"], None).await);
        failed_with(&dfs(&m, &["cat", "/dst/sub/f"], None).await, "no such file");
        let trash = json(&dfs(&m, &["trash", "ls", "--json"], None).await);
        let entries = trash.as_array().unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0]["path"], "/dst/sub/f");
        assert_eq!(entries[0]["kind"], "file");
        assert_eq!(entries[0]["size"], 7);
        assert!(
            entries[0]["expires_at"].as_u64().unwrap() > entries[0]["deleted_at"].as_u64().unwrap()
        );
        let plain = dfs(&m, &["trash", "ls"], None).await;
        assert!(String::from_utf8_lossy(&ok(&plain).stdout).contains("/dst/sub/f"));

        ok(&dfs(&m, &["trash", "restore", "/dst/sub/f"], None).await);
        assert_eq!(
            ok(&dfs(&m, &["cat", "/dst/sub/f"], None).await).stdout,
            b"payload"
        );
        failed_with(
            &dfs(&m, &["trash", "restore", "/dst/sub/f"], None).await,
            "not in the trash",
        );
        let empty = dfs(&m, &["trash", "ls"], None).await;
        assert!(String::from_utf8_lossy(&ok(&empty).stdout).contains("empty"));

        ok(&dfs(&m, &["rm", "--skip-trash", "/dst/sub/f"], None).await);
        assert_eq!(
            json(&dfs(&m, &["trash", "ls", "--json"], None).await),
            serde_json::json!([])
        );
        let status = json(&dfs(&m, &["status", "--json"], None).await);
        assert_eq!(status["safe_mode"], false);
        assert_eq!(status["trash"], 0);

        // `ls` shows each file's replication; `trash empty` purges everything now,
        // for admin keys only.
        ok(&dfs(&m, &["mkdir", "/t"], None).await);
        ok(&dfs(
            &m,
            &["put", "--replication", "2", "-", "/t/two"],
            Some(b"22"),
        )
        .await);
        ok(&dfs(&m, &["put", "-", "/t/three"], Some(b"333")).await);
        let listed = json(&dfs(&m, &["ls", "--json", "/"], None).await);
        let t = listed
            .as_array()
            .and_then(|a| a.iter().find(|e| e["name"] == "t"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(t["replication"], 0, "a directory has none");
        let listed = json(&dfs(&m, &["ls", "--json", "/t"], None).await);
        assert_eq!(listed[0]["name"], "three");
        assert_eq!(listed[0]["replication"], 3);
        assert_eq!(listed[1]["replication"], 2);
        let long = ok(&dfs(&m, &["ls", "-l", "/t"], None).await).text();
        assert!(
            long.contains(" 3  three\n") && long.contains(" 2  two\n"),
            "{long}"
        );
        ok(&dfs(&m, &["rm", "/t/two"], None).await);
        ok(&dfs(&m, &["rm", "-r", "/t"], None).await);
        let key = cluster
            .client()
            .create_key("writer", dfs_client::Role::ReadWrite)
            .await
            .unwrap();
        let refused = cluster
            .client_as(dfs_client::Identity::key(&key))
            .trash_empty()
            .await
            .expect_err("a read-write key may not empty the trash");
        assert!(
            refused.to_string().contains("permission denied"),
            "{refused}"
        );
        let purged = json(&dfs(&m, &["trash", "empty", "--json"], None).await);
        assert_eq!(purged, serde_json::json!({"entries": 2, "bytes": 5}));
        assert_eq!(
            json(&dfs(&m, &["trash", "ls", "--json"], None).await),
            serde_json::json!([])
        );
        let again = ok(&dfs(&m, &["trash", "empty"], None).await).text();
        assert_eq!(again, "purged 0 trash entries (0 B)\n");
        cluster.shutdown().await.unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsck_exit_status_and_json() {
    bounded(async {
        let (_dir, cluster) = cluster().await;
        let m = target(&cluster);
        ok(&dfs(&m, &["mkdir", "/d"], None).await);
        ok(&dfs(&m, &["put", "-", "/d/f"], Some(&data(CHUNK + 5, 3))).await);
        let healthy = json(&dfs(&m, &["fsck", "--json"], None).await);
        assert_eq!(healthy["healthy"], true);
        assert_eq!(healthy["files"], 1);
        assert_eq!(healthy["chunks"], 2);
        assert_eq!(healthy["problems"], serde_json::json!([]));
        let plain = dfs(&m, &["fsck", "/d"], None).await;
        assert!(String::from_utf8_lossy(&ok(&plain).stdout).contains("HEALTHY"));

        // Damage every replica of the first chunk; a read finds and quarantines them.
        let handle = cluster.client().stat("/d/f").await.unwrap().chunks[0].handle;
        for i in 0..3 {
            let p = cluster
                .chunkserver_data_dir(i)
                .unwrap()
                .join("chunks")
                .join(format!("{handle}.chunk"));
            let mut b = std::fs::read(&p).unwrap();
            b[0] ^= 1;
            std::fs::write(&p, b).unwrap();
        }
        failed_with(&dfs(&m, &["cat", "/d/f"], None).await, "checksum");
        // Each replica's damage is reported on its own heartbeat: wait for the chunk
        // to be missing, not merely for the first report (which makes it corrupt).
        dfs_testkit::wait_until(
            std::time::Duration::from_secs(10),
            "fsck to see the chunk missing",
            || async {
                let out = dfs(&m, &["fsck", "/", "--json"], None).await;
                serde_json::from_slice::<Value>(&out.stdout).is_ok_and(|r| r["missing"] == 1)
            },
        )
        .await;
        let out = dfs(&m, &["fsck", "/", "--json"], None).await;
        assert_ne!(out.code, 0, "unhealthy exits non-zero");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["healthy"], false);
        assert_eq!(report["missing"], 1);
        assert_eq!(report["problems"][0]["path"], "/d/f");
        assert!(out.stderr.contains("unhealthy"), "{}", out.stderr);
        cluster.shutdown().await.unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setrep_balance_and_decommission_verbs() {
    bounded(async {
        let (_dir, cluster) = dfs_testkit::cluster_with(|o| o.chunkservers = 4).await;
        let m = target(&cluster);
        ok(&dfs(&m, &["put", "-", "/f"], Some(&data(3 * CHUNK, 9))).await);
        ok(&dfs(&m, &["setrep", "-w", "2", "/f"], None).await);
        let stat = json(&dfs(&m, &["stat", "/f", "--json"], None).await);
        assert_eq!(stat["replication"], 2);
        for c in stat["chunks"].as_array().unwrap() {
            assert_eq!(c["replicas"].as_array().unwrap().len(), 2);
        }
        ok(&dfs(&m, &["setrep", "-w", "4", "/"], None).await);
        let stat = json(&dfs(&m, &["stat", "/f", "--json"], None).await);
        for c in stat["chunks"].as_array().unwrap() {
            assert_eq!(c["replicas"].as_array().unwrap().len(), 4);
        }
        failed_with(
            &dfs(&m, &["setrep", "0", "/f"], None).await,
            "replication must be",
        );

        let balance = json(&dfs(&m, &["balance", "--json", "--threshold", "15"], None).await);
        assert_eq!(balance["servers"].as_array().unwrap().len(), 4);
        assert!((balance["threshold"].as_f64().unwrap() - 0.15).abs() < 1e-9);
        assert!(balance["spread"].as_f64().is_some());
        let plain = dfs(&m, &["balance"], None).await;
        assert!(String::from_utf8_lossy(&ok(&plain).stdout).contains("spread"));

        let victim = cluster.chunkserver_addrs()[0].to_string();
        ok(&dfs(&m, &["decommission", &victim], None).await);
        let status = json(&dfs(&m, &["status", "--json"], None).await);
        let me = status["chunkservers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["addr"] == victim.as_str())
            .unwrap()
            .clone();
        assert_eq!(me["decommissioning"], true);
        for key in ["missing", "over_replicated", "copying"] {
            assert!(status[key].is_u64(), "status lacks {key}");
        }
        ok(&dfs(&m, &["decommission", "--cancel", &victim], None).await);
        failed_with(
            &dfs(&m, &["decommission", "127.0.0.1:1"], None).await,
            "no chunkserver",
        );
        cluster.shutdown().await.unwrap();
    })
    .await
}

/// Issue 12's first verbs: head, rmdir, count, du, df and tree, with their error
/// cases and `--json` shapes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_rmdir_count_du_df_and_tree() {
    bounded(async {
        let (_dir, cluster) = cluster().await;
        let m = target(&cluster);
        let lines: Vec<u8> = (0..100)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        let big = data(2 * CHUNK + 777, 12);
        ok(&dfs(&m, &["mkdir", "-p", "/d/sub"], None).await);
        ok(&dfs(&m, &["mkdir", "/d/empty"], None).await);
        ok(&dfs(&m, &["put", "-", "/d/lines"], Some(&lines)).await);
        ok(&dfs(&m, &["put", "-", "/d/sub/big"], Some(&big)).await);

        // head: lines by default, -n, -c across chunks; errors in one line.
        let head = ok(&dfs(&m, &["head", "/d/lines"], None).await)
            .stdout
            .clone();
        assert_eq!(
            head,
            &lines[..lines
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .nth(9)
                .map(|(i, _)| i + 1)
                .unwrap_or(0)]
        );
        assert_eq!(
            ok(&dfs(&m, &["head", "-n", "2", "/d/lines"], None).await).stdout,
            b"line 0\nline 1\n"
        );
        assert_eq!(
            ok(&dfs(&m, &["head", "-n", "1000", "/d/lines"], None).await).stdout,
            lines
        );
        let c = CHUNK + 10;
        assert_eq!(
            ok(&dfs(&m, &["head", "-c", &c.to_string(), "/d/sub/big"], None).await).stdout,
            &big[..c]
        );
        failed_with(&dfs(&m, &["head", "/d"], None).await, "/d: is a directory");
        failed_with(
            &dfs(&m, &["head", "/nope"], None).await,
            "/nope: no such file or directory",
        );

        // count and du: exact figures, plain and JSON.
        let count = json(&dfs(&m, &["count", "/d", "--json"], None).await);
        assert_eq!(count["path"], "/d");
        assert_eq!(count["dirs"], 3, "/d, /d/sub, /d/empty");
        assert_eq!(count["files"], 2);
        assert_eq!(count["bytes"], (lines.len() + big.len()) as u64);
        let plain = String::from_utf8_lossy(&ok(&dfs(&m, &["count", "/d"], None).await).stdout)
            .into_owned();
        let fields: Vec<&str> = plain.split_whitespace().collect();
        assert_eq!(
            fields,
            ["3", "2", &(lines.len() + big.len()).to_string(), "/d"]
        );
        let du = json(&dfs(&m, &["du", "/d", "--json"], None).await);
        let rows: Vec<(String, u64)> = du
            .as_array()
            .expect("array")
            .iter()
            .map(|r| {
                (
                    r["path"].as_str().expect("path").to_string(),
                    r["size"].as_u64().expect("size"),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("/d/empty".to_string(), 0),
                ("/d/lines".to_string(), lines.len() as u64),
                ("/d/sub".to_string(), big.len() as u64)
            ]
        );
        let total = json(&dfs(&m, &["du", "-s", "/d", "--json"], None).await);
        assert_eq!(total[0]["size"], (lines.len() + big.len()) as u64);
        let human =
            String::from_utf8_lossy(&ok(&dfs(&m, &["du", "-s", "-h", "/d"], None).await).stdout)
                .into_owned();
        assert!(human.contains("MiB") && human.contains("/d"), "{human}");
        failed_with(
            &dfs(&m, &["du", "/nope"], None).await,
            "/nope: no such file or directory",
        );

        // df: figures that add up, over the three live chunkservers.
        let df = json(&dfs(&m, &["df", "--json"], None).await);
        let (cap, used, avail) = (
            df["capacity"].as_u64().expect("capacity"),
            df["used"].as_u64().expect("used"),
            df["available"].as_u64().expect("available"),
        );
        assert!(cap > 0 && used <= cap && avail == cap - used, "{df}");
        assert_eq!(df["chunkservers"], 3);
        let plain =
            String::from_utf8_lossy(&ok(&dfs(&m, &["df", "-h"], None).await).stdout).into_owned();
        assert!(
            plain.contains("available") && plain.contains("iB"),
            "{plain}"
        );

        // tree: every entry, drawn, and the totals; -L stops descending.
        let tree =
            String::from_utf8_lossy(&ok(&dfs(&m, &["tree", "/d"], None).await).stdout).into_owned();
        assert_eq!(
            tree,
            "/d\n├── empty/\n├── lines\n└── sub/\n    └── big\n\n2 directories, 2 files\n"
        );
        let shallow =
            String::from_utf8_lossy(&ok(&dfs(&m, &["tree", "-L", "1", "/d"], None).await).stdout)
                .into_owned();
        assert!(
            !shallow.contains("big") && shallow.contains("sub/"),
            "{shallow}"
        );

        // ls -d lists the path itself; -h shows sizes for people.
        assert_eq!(
            String::from_utf8_lossy(&ok(&dfs(&m, &["ls", "-d", "/d"], None).await).stdout),
            "/d/\n"
        );
        let me = json(&dfs(&m, &["ls", "-d", "/d/sub/big", "--json"], None).await);
        assert_eq!(me[0]["name"], "/d/sub/big");
        assert_eq!(me[0]["kind"], "file");
        assert_eq!(me[0]["size"], big.len() as u64);
        let long = String::from_utf8_lossy(
            &ok(&dfs(&m, &["ls", "-l", "-h", "/d/sub"], None).await).stdout,
        )
        .into_owned();
        assert!(long.contains("2.0 MiB") && long.contains("big"), "{long}");
        assert!(ok(&dfs(&m, &["ls", "--help"], None).await)
            .stdout
            .starts_with(b"List a directory"));

        // rmdir: only an empty directory.
        failed_with(
            &dfs(&m, &["rmdir", "/d"], None).await,
            "/d: directory not empty",
        );
        failed_with(
            &dfs(&m, &["rmdir", "/d/lines"], None).await,
            "/d/lines: not a directory",
        );
        failed_with(
            &dfs(&m, &["rmdir", "/nope"], None).await,
            "/nope: no such file or directory",
        );
        ok(&dfs(&m, &["rmdir", "/d/empty"], None).await);
        failed_with(
            &dfs(&m, &["stat", "/d/empty"], None).await,
            "no such file or directory",
        );
        cluster.shutdown().await.expect("shutdown");
    })
    .await
}

/// `dfs touch`: creates empty files, moves the modification time of what exists
/// (files and directories) to now on the master's clock, refuses a missing parent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn touch_creates_and_moves_times() {
    bounded(async {
        let clock = dfs_testkit::Clock::manual(1_700_000_000);
        let (_dir, cluster) = dfs_testkit::cluster_with(|o| o.clock = Some(clock.clone())).await;
        let m = target(&cluster);
        ok(&dfs(&m, &["touch", "/new", "/other"], None).await);
        let stat = json(&dfs(&m, &["stat", "/new", "--json"], None).await);
        assert_eq!(stat["kind"], "file");
        assert_eq!(stat["size"], 0);
        assert_eq!(ok(&dfs(&m, &["cat", "/new"], None).await).stdout, b"");
        let before = stat["mtime"].as_u64().expect("mtime");

        ok(&dfs(&m, &["put", "--force", "-", "/new"], Some(b"kept")).await);
        ok(&dfs(&m, &["mkdir", "/dir"], None).await);
        clock.advance(std::time::Duration::from_secs(100));
        // The jump leaves every chunkserver's last heartbeat 100 s old: wait for the next.
        let c = cluster.client();
        dfs_testkit::wait_until(std::time::Duration::from_secs(20), "heartbeats", || async {
            c.status()
                .await
                .is_ok_and(|s| s.chunkservers.iter().all(|cs| cs.alive))
        })
        .await;
        ok(&dfs(&m, &["touch", "/new", "/dir"], None).await);
        let stat = json(&dfs(&m, &["stat", "/new", "--json"], None).await);
        assert_eq!(stat["mtime"].as_u64(), Some(before + 100));
        assert_eq!(
            ok(&dfs(&m, &["cat", "/new"], None).await).stdout,
            b"kept",
            "content untouched"
        );
        let dir = json(&dfs(&m, &["stat", "/dir", "--json"], None).await);
        assert_eq!(dir["mtime"].as_u64(), Some(before + 100));

        failed_with(
            &dfs(&m, &["touch", "/missing/x"], None).await,
            "/missing: no such file or directory",
        );
        assert_ne!(
            dfs(&m, &["touch"], None).await.code,
            0,
            "a path is required"
        );
        cluster.shutdown().await.expect("shutdown");
    })
    .await
}

/// `dfs` with only the environment given: HOME (for the config file), and no
/// DFS_* variables unless listed.
async fn dfs_env(
    home: &std::path::Path,
    env: &[(&str, &str)],
    args: &[&str],
) -> dfs_testkit::verbs::Out {
    let mut command = Command::new(dfs_testkit::dfs_bin());
    for var in [
        "DFS_MASTER",
        "DFS_KEY",
        "DFS_SECRET",
        "DFS_TLS_CA",
        "XDG_CONFIG_HOME",
        "RUST_LOG",
    ] {
        command.env_remove(var);
    }
    let out = command
        .args(args)
        .env("HOME", home)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("dfs runs");
    dfs_testkit::verbs::Out {
        code: out.status.code().unwrap_or(-1),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_then_environment_then_flags() {
    bounded(async {
        let (dir, cluster) = cluster().await;
        let home = dir.path().join("home");
        let m = target(&cluster);
        let secret = m.secret.as_str();

        // Nothing set: defaults, and the file's path.
        let shown = json(&dfs_env(&home, &[], &["config", "show", "--json"]).await);
        let setting = |v: &Value, name: &str| {
            v["settings"]
                .as_array()
                .and_then(|s| s.iter().find(|s| s["name"] == name))
                .cloned()
                .unwrap_or(Value::Null)
        };
        assert_eq!(setting(&shown, "master")["value"], "127.0.0.1:7070");
        assert_eq!(setting(&shown, "master")["source"], "default");
        assert_eq!(setting(&shown, "credential")["value"], Value::Null);
        assert_eq!(setting(&shown, "parallel")["value"], "8");
        assert_eq!(shown["config_file_exists"], false);
        let config_file = home.join(".config/dfs/config.toml");
        assert_eq!(shown["config_file"], config_file.to_str().expect("utf-8"));

        // The file: master and default replication for new files.
        std::fs::create_dir_all(config_file.parent().expect("dir")).expect("mkdir");
        std::fs::write(
            &config_file,
            format!("master = \"{}\"\nreplication = 2\nparallel = 3\n", m.master),
        )
        .expect("write");
        let shown = json(&dfs_env(&home, &[], &["config", "show", "--json"]).await);
        assert_eq!(setting(&shown, "master")["value"], m.master.as_str());
        assert_eq!(setting(&shown, "master")["source"], "file");
        assert_eq!(setting(&shown, "replication")["value"], "2");
        assert_eq!(setting(&shown, "parallel")["source"], "file");
        let with_secret = [("DFS_SECRET", secret)];
        assert_eq!(
            setting(
                &json(&dfs_env(&home, &with_secret, &["config", "show", "--json"]).await),
                "credential"
            )["source"],
            "env"
        );
        ok(&dfs_env(&home, &with_secret, &["put", "-", "/from-config"]).await);
        let stat = json(&dfs_env(&home, &with_secret, &["stat", "--json", "/from-config"]).await);
        assert_eq!(stat["replication"], 2, "the file's default replication");
        // A flag beats the file.
        ok(&dfs_env(
            &home,
            &with_secret,
            &["put", "--replication", "1", "-", "/flagged"],
        )
        .await);
        let stat = json(&dfs_env(&home, &with_secret, &["stat", "--json", "/flagged"]).await);
        assert_eq!(stat["replication"], 1);

        // The environment beats the file, and a flag beats the environment.
        let env_master = [("DFS_MASTER", "127.0.0.1:9")];
        let shown = json(&dfs_env(&home, &env_master, &["config", "show", "--json"]).await);
        assert_eq!(setting(&shown, "master")["value"], "127.0.0.1:9");
        assert_eq!(setting(&shown, "master")["source"], "env");
        let shown = json(
            &dfs_env(
                &home,
                &env_master,
                &["--master", "127.0.0.1:10", "config", "show", "--json"],
            )
            .await,
        );
        assert_eq!(setting(&shown, "master")["value"], "127.0.0.1:10");
        assert_eq!(setting(&shown, "master")["source"], "flag");
        let plain = ok(&dfs_env(&home, &[], &["config", "show"]).await).text();
        assert!(
            plain.contains("master") && plain.contains("config file"),
            "{plain}"
        );

        // A typo in the file is an error, never ignored.
        std::fs::write(&config_file, "mastr = \"x\"\n").expect("write");
        failed_with(&dfs_env(&home, &[], &["config", "show"]).await, "mastr");
        std::fs::write(&config_file, "replication = 0\n").expect("write");
        failed_with(
            &dfs_env(&home, &[], &["ls", "/"]).await,
            "replication must be at least 1",
        );
        cluster.shutdown().await.expect("shutdown");
    })
    .await;
}
