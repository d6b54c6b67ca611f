//! `dfs sync`: one pass sends only what changed and (with --delete) removes what is
//! gone; `--watch` follows creations, edits, renames and removals as they happen,
//! and never stores a file that is still being written.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use dfs_client::{Client, ClientError, ErrorCode};
use dfs_testkit::verbs::{dfs, failed_with, json, ok, target, Target};
use dfs_testkit::{bounded, cluster, dfs_bin, wait_until};
use serde_json::Value;

fn names(v: &Value, field: &str) -> Vec<String> {
    let mut out: Vec<String> = v[field]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

async fn sync(m: &Target, local: &Path, remote: &str, extra: &[&str]) -> Value {
    let local = local.to_str().expect("utf-8");
    let mut args = vec!["sync", "--json", local, remote];
    args.extend_from_slice(extra);
    json(&dfs(m, &args, None).await)
}

async fn content(c: &Client, path: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match c.get(path, &mut out).await {
        Ok(_) => Some(out),
        Err(ClientError::Remote(ErrorCode::NotFound { .. })) => None,
        Err(e) => panic!("get {path}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_sends_only_what_changed_and_deletes_only_when_asked() {
    bounded(async {
        let (dir, cluster) = cluster().await;
        let m = target(&cluster);
        let c = cluster.client();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("docs/old")).expect("mkdir");
        std::fs::create_dir_all(src.join("empty")).expect("mkdir");
        std::fs::write(src.join("a.txt"), b"aaaa").expect("write");
        std::fs::write(src.join("docs/b.txt"), b"bbbb").expect("write");
        std::fs::write(src.join("docs/old/c.txt"), b"cccc").expect("write");

        let first = sync(&m, &src, "/mirror", &[]).await;
        assert_eq!(
            names(&first, "uploaded"),
            [
                "/mirror/a.txt",
                "/mirror/docs/b.txt",
                "/mirror/docs/old/c.txt"
            ]
        );
        assert!(names(&first, "created_dirs").contains(&"/mirror/empty".to_string()));
        assert_eq!(
            content(&c, "/mirror/docs/old/c.txt").await.as_deref(),
            Some(&b"cccc"[..])
        );

        // Nothing changed: nothing sent.
        let again = sync(&m, &src, "/mirror", &[]).await;
        assert_eq!(names(&again, "uploaded"), Vec::<String>::new());
        assert_eq!(again["unchanged"], 3);

        // One grows, one changes in place (same size), one is new, one dir goes.
        std::fs::write(src.join("a.txt"), b"aaaaa").expect("write");
        std::fs::write(src.join("docs/b.txt"), b"BBBB").expect("write");
        std::fs::write(src.join("new.txt"), b"new").expect("write");
        std::fs::remove_dir_all(src.join("docs/old")).expect("rm");
        let kept = sync(&m, &src, "/mirror", &[]).await;
        assert_eq!(
            names(&kept, "uploaded"),
            ["/mirror/a.txt", "/mirror/docs/b.txt", "/mirror/new.txt"]
        );
        assert_eq!(names(&kept, "deleted"), Vec::<String>::new());
        assert!(
            content(&c, "/mirror/docs/old/c.txt").await.is_some(),
            "kept without --delete"
        );
        assert_eq!(
            content(&c, "/mirror/docs/b.txt").await.as_deref(),
            Some(&b"BBBB"[..])
        );

        let pruned = sync(&m, &src, "/mirror", &["--delete"]).await;
        assert_eq!(names(&pruned, "deleted"), ["/mirror/docs/old"]);
        assert_eq!(names(&pruned, "uploaded"), Vec::<String>::new());
        assert!(content(&c, "/mirror/docs/old/c.txt").await.is_none());
        // Removals go to the trash.
        let trash = ok(&dfs(&m, &["trash", "ls"], None).await).text();
        assert!(trash.contains("/mirror/docs/old"), "{trash}");

        // A local file where the cluster has a directory: refused without --delete.
        ok(&dfs(&m, &["mkdir", "-p", "/mirror/clash/inner"], None).await);
        std::fs::write(src.join("clash"), b"file").expect("write");
        let out = dfs(&m, &["sync", src.to_str().expect("utf-8"), "/mirror"], None).await;
        assert_ne!(out.code, 0);
        assert!(
            out.stderr
                .contains("/mirror/clash: a directory in the cluster"),
            "{}",
            out.stderr
        );
        let replaced = sync(&m, &src, "/mirror", &["--delete"]).await;
        assert_eq!(names(&replaced, "uploaded"), ["/mirror/clash"]);
        assert_eq!(
            content(&c, "/mirror/clash").await.as_deref(),
            Some(&b"file"[..])
        );

        failed_with(
            &dfs(&m, &["sync", "/definitely/not/here", "/x"], None).await,
            "cannot open",
        );
        failed_with(
            &dfs(
                &m,
                &["sync", src.to_str().expect("utf-8"), "relative"],
                None,
            )
            .await,
            "must be an absolute path",
        );
        cluster.shutdown().await.expect("shutdown");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_follows_edits_renames_and_deletions_and_waits_for_writers() {
    bounded(async {
        let (dir, cluster) = cluster().await;
        let m = target(&cluster);
        let c = cluster.client();
        let src = dir.path().join("watched");
        std::fs::create_dir_all(&src).expect("mkdir");
        std::fs::write(src.join("first.txt"), b"one").expect("write");

        let _child = tokio::process::Command::new(dfs_bin())
            .args(["sync", "--watch", "--delete"])
            .arg(&src)
            .arg("/live")
            .env("DFS_MASTER", &m.master)
            .env("DFS_SECRET", &m.secret)
            .env("HOME", dir.path())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn dfs sync --watch");
        let limit = Duration::from_secs(30);
        let has = |path: &'static str, want: &'static [u8]| {
            let c = c.clone();
            move || {
                let c = c.clone();
                async move { content(&c, path).await.as_deref() == Some(want) }
            }
        };
        wait_until(limit, "the first pass", has("/live/first.txt", b"one")).await;

        std::fs::write(src.join("made.txt"), b"made").expect("write");
        wait_until(limit, "a new file", has("/live/made.txt", b"made")).await;
        std::fs::write(src.join("made.txt"), b"edited").expect("write");
        wait_until(limit, "an edit", has("/live/made.txt", b"edited")).await;
        std::fs::rename(src.join("made.txt"), src.join("moved.txt")).expect("rename");
        wait_until(
            limit,
            "the rename's new name",
            has("/live/moved.txt", b"edited"),
        )
        .await;
        wait_until(limit, "the rename's old name gone", || async {
            content(&c, "/live/made.txt").await.is_none()
        })
        .await;
        std::fs::create_dir_all(src.join("sub/deeper")).expect("mkdir");
        std::fs::write(src.join("sub/deeper/x"), b"x").expect("write");
        wait_until(
            limit,
            "a new directory's file",
            has("/live/sub/deeper/x", b"x"),
        )
        .await;
        std::fs::remove_file(src.join("first.txt")).expect("rm");
        wait_until(limit, "a removal", || async {
            content(&c, "/live/first.txt").await.is_none()
        })
        .await;

        // A slow writer: pieces 200 ms apart (the quiet period is 500 ms). The
        // cluster never holds a part of it; it holds all of it once it is quiet.
        let whole: Vec<u8> = (0..5u8).flat_map(|i| vec![b'a' + i; 10_000]).collect();
        {
            use std::io::Write;
            let mut f = std::fs::File::create(src.join("slow.bin")).expect("create");
            for piece in whole.chunks(10_000) {
                f.write_all(piece).expect("write");
                f.flush().expect("flush");
                if let Some(seen) = content(&c, "/live/slow.bin").await {
                    assert_eq!(seen, whole, "a half-written file was stored");
                }
                // Pacing the writer, not waiting for a result.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let want = whole.clone();
        wait_until(limit, "the slow file, whole", || {
            let (c, want) = (c.clone(), want.clone());
            async move { content(&c, "/live/slow.bin").await == Some(want) }
        })
        .await;
        cluster.shutdown().await.expect("shutdown");
    })
    .await;
}
