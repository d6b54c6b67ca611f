//! Credentials through the built `dfs` binary: `dfs key` verbs, a read-only key
//! trying every mutation, no credentials at all, a chunkserver with a wrong or no
//! secret, and `dfs up`'s two-command quickstart with no flags.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use dfs_testkit::{bounded, cluster, wait_until};
use tokio::process::Command;

/// `dfs ARGS` against `master` with exactly the credential environment `env`
/// (nothing inherited), and a config dir of its own.
async fn dfs(master: &str, home: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dfs"));
    c.args(args)
        .env("DFS_MASTER", master)
        .env_remove("DFS_KEY")
        .env_remove("DFS_SECRET")
        .env_remove("RUST_LOG")
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().await.expect("dfs runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "dfs failed: {}", stderr(&o));
    o
}

fn denied(o: &Output, what: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "{what}: {err}");
    assert!(err.starts_with("dfs: "), "{what}: {err}");
    assert!(err.contains("permission denied"), "{what}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{what}: one line: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_roles_and_missing_credentials_through_the_binary() {
    bounded(async {
        let (dir, cluster) = cluster().await;
        let m = cluster.master_addr().to_string();
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).expect("home");
        let secret = cluster.secret().encode();
        let admin = [("DFS_SECRET", secret.as_str())];

        // No credentials anywhere: a clear line, not a default.
        let o = dfs(&m, &home, &[], &["ls", "/"]).await;
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("no credentials"), "{}", stderr(&o));

        // Keys: create prints one line that DFS_KEY and --key-file take as is.
        let line = |o: Output| {
            String::from_utf8(o.stdout)
                .expect("utf-8")
                .trim()
                .to_string()
        };
        let reader = line(ok(dfs(
            &m,
            &home,
            &admin,
            &["key", "create", "reader", "--read-only"],
        )
        .await));
        let writer = line(ok(
            dfs(&m, &home, &admin, &["key", "create", "writer"]).await
        ));
        let boss = line(ok(dfs(
            &m,
            &home,
            &admin,
            &["key", "create", "boss", "--admin"],
        )
        .await));
        assert!(reader.starts_with("dfs-key:reader:"), "{reader}");
        let o = dfs(&m, &home, &admin, &["key", "create", "reader"]).await;
        assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
        let o = dfs(&m, &home, &admin, &["key", "create", "bad name"]).await;
        assert!(stderr(&o).contains("invalid key name"), "{}", stderr(&o));
        let ls = ok(dfs(&m, &home, &[("DFS_KEY", &boss)], &["key", "ls", "--json"]).await);
        let keys: serde_json::Value = serde_json::from_slice(&ls.stdout).expect("json");
        let roles: Vec<(String, String)> = keys
            .as_array()
            .expect("array")
            .iter()
            .map(|k| {
                (
                    k["name"].as_str().unwrap_or("").into(),
                    k["role"].as_str().unwrap_or("").into(),
                )
            })
            .collect();
        assert_eq!(
            roles,
            vec![
                ("boss".into(), "admin".into()),
                ("reader".into(), "read-only".into()),
                ("writer".into(), "read-write".into())
            ]
        );
        let text = String::from_utf8_lossy(&ls.stdout).into_owned();
        for k in [&reader, &writer, &boss] {
            let hex = k.rsplit(':').next().expect("hex");
            assert!(!text.contains(hex), "key ls never shows a secret");
        }

        // The writer puts; the key file form works as well as the environment.
        let key_file = dir.path().join("writer.key");
        std::fs::write(&key_file, format!("{writer}\n")).expect("key file");
        let local = dir.path().join("local");
        std::fs::write(&local, b"hello").expect("local");
        let kf = key_file.to_str().expect("utf-8");
        let lp = local.to_str().expect("utf-8");
        ok(dfs(&m, &home, &[], &["--key-file", kf, "put", lp, "/f"]).await);
        ok(dfs(&m, &home, &[("DFS_KEY", &writer)], &["mkdir", "/d"]).await);
        ok(dfs(&m, &home, &[("DFS_KEY", &writer)], &["put", lp, "/gone"]).await);
        ok(dfs(&m, &home, &[("DFS_KEY", &writer)], &["rm", "/gone"]).await);

        // The reader reads...
        let r = [("DFS_KEY", reader.as_str())];
        for args in [
            &["ls", "/"][..],
            &["cat", "/f"],
            &["stat", "/f"],
            &["status"],
            &["fsck"],
            &["trash", "ls"],
            &["balance"],
        ] {
            ok(dfs(&m, &home, &r, args).await);
        }
        // ...and mutates nothing.
        let cs = cluster.chunkserver_addrs()[0].to_string();
        for args in [
            &["put", lp, "/g"][..],
            &["put", "--force", lp, "/f"],
            &["mkdir", "/e"],
            &["mkdir", "-p", "/e/f"],
            &["rm", "/f"],
            &["rm", "-r", "--skip-trash", "/d"],
            &["mv", "/f", "/h"],
            &["append", lp, "/f"],
            &["setrep", "2", "/f"],
            &["trash", "restore", "/gone"],
            &["decommission", &cs],
            &["balance", "--threshold", "5"],
            &["key", "create", "mine"],
            &["key", "ls"],
            &["key", "rm", "writer"],
        ] {
            denied(&dfs(&m, &home, &r, args).await, &args.join(" "));
        }
        // Only admins manage the cluster and keys.
        let w = [("DFS_KEY", writer.as_str())];
        for args in [
            &["decommission", &cs][..],
            &["balance", "--threshold", "5"],
            &["key", "ls"],
            &["key", "create", "x"],
        ] {
            denied(&dfs(&m, &home, &w, args).await, &args.join(" "));
        }
        let b = [("DFS_KEY", boss.as_str())];
        ok(dfs(&m, &home, &b, &["balance", "--threshold", "5"]).await);
        let o = ok(dfs(&m, &home, &r, &["cat", "/f"]).await);
        assert_eq!(o.stdout, b"hello");

        // The config file names a key file: used when nothing else is given.
        let config_dir = home.join("config/dfs");
        std::fs::create_dir_all(&config_dir).expect("config dir");
        std::fs::write(
            config_dir.join("config.toml"),
            format!("key_file = {kf:?}\n"),
        )
        .expect("config");
        ok(dfs(&m, &home, &[], &["ls", "/"]).await);
        denied(&dfs(&m, &home, &[], &["key", "ls"]).await, "config key ls");
        std::fs::write(config_dir.join("config.toml"), "key_flie = 1\n").expect("config");
        let o = dfs(&m, &home, &[], &["ls", "/"]).await;
        assert!(
            stderr(&o).contains("key_flie"),
            "a typo is reported: {}",
            stderr(&o)
        );
        std::fs::remove_file(config_dir.join("config.toml")).expect("rm config");

        // A removed key stops at once; a wrong one gets one clear line.
        ok(dfs(&m, &home, &b, &["key", "rm", "reader"]).await);
        let o = dfs(&m, &home, &r, &["ls", "/"]).await;
        assert_eq!(
            stderr(&o).trim_end(),
            "dfs: authentication failed: unknown key 'reader'"
        );
        let o = dfs(&m, &home, &b, &["key", "rm", "reader"]).await;
        assert_eq!(o.status.code(), Some(1), "removing twice fails");
        let wrong = format!("dfs-key:writer:{}", "ab".repeat(32));
        let o = dfs(&m, &home, &[("DFS_KEY", &wrong)], &["ls", "/"]).await;
        assert!(
            stderr(&o).contains("authentication failed"),
            "{}",
            stderr(&o)
        );
        let o = dfs(&m, &home, &[("DFS_KEY", "not a key")], &["ls", "/"]).await;
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("DFS_KEY"), "{}", stderr(&o));
        cluster.shutdown().await.expect("shutdown");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunkserver_without_the_secret_cannot_join() {
    bounded(async {
        let (dir, cluster) = cluster().await;
        let m = cluster.master_addr().to_string();
        let run = |env: Vec<(&'static str, String)>, data: &str| {
            let mut c = Command::new(env!("CARGO_BIN_EXE_dfs"));
            c.args(["chunkserver", "--listen", "127.0.0.1:0", "--master", &m])
                .arg("--data")
                .arg(dir.path().join(data))
                .env_remove("DFS_SECRET")
                .env("RUST_LOG", "error")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            for (k, v) in env {
                c.env(k, v);
            }
            c.output()
        };
        let o = tokio::time::timeout(Duration::from_secs(30), run(Vec::new(), "none"))
            .await
            .expect("exits")
            .expect("runs");
        assert!(!o.status.success());
        assert!(stderr(&o).contains("no cluster secret"), "{}", stderr(&o));

        let wrong = dfs_client::ClusterSecret::generate().encode();
        let o = tokio::time::timeout(
            Duration::from_secs(30),
            run(vec![("DFS_SECRET", wrong)], "wrong"),
        )
        .await
        .expect("a refused chunkserver stops")
        .expect("runs");
        assert!(!o.status.success());
        assert!(stderr(&o).contains("refused"), "{}", stderr(&o));

        // A secret file works (and is how operators pass it), directly or named by
        // a config file.
        let file = dir.path().join("secret");
        std::fs::write(&file, cluster.secret().encode()).expect("secret file");
        let config = dir.path().join("chunkserver.toml");
        std::fs::write(&config, "secret_file = \"secret\"\n").expect("config file");
        let mut good = Vec::new();
        for (flag, path, data) in [
            ("--secret-file", &file, "good1"),
            ("--config", &config, "good2"),
        ] {
            good.push(
                Command::new(env!("CARGO_BIN_EXE_dfs"))
                    .args(["chunkserver", "--listen", "127.0.0.1:0", "--master", &m])
                    .args(["--heartbeat", "100ms", flag])
                    .arg(path)
                    .arg("--data")
                    .arg(dir.path().join(data))
                    .env_remove("DFS_SECRET")
                    .env("RUST_LOG", "error")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .kill_on_drop(true)
                    .spawn()
                    .expect("spawn"),
            );
        }
        let c = cluster.client();
        wait_until(Duration::from_secs(20), "two more chunkservers", || async {
            matches!(c.status().await, Ok(s) if s.chunkservers.iter().filter(|s| s.alive).count() == 5)
        })
        .await;
        let status = c.status().await.expect("status");
        assert_eq!(status.chunkservers.len(), 5, "the refused ones never joined");
        for mut g in good {
            let _ = g.start_kill();
            let _ = g.wait().await;
        }
        cluster.shutdown().await.expect("shutdown");
    })
    .await
}

/// `dfs up --buffered-writes`: the chunkservers write through the page cache, and a
/// file of a ragged size still comes back byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dfs_up_with_buffered_writes_stores_files() {
    bounded(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut up = dfs_testkit::dfs_up(dir.path(), 1, &["--buffered-writes"]).await;
        let (master, home) = (up.master.clone(), up.home.clone());
        let body = dfs_testkit::data(70_001, 3);
        let local = dir.path().join("ragged.bin");
        std::fs::write(&local, &body).expect("write");
        let lp = local.to_str().expect("utf-8");
        ok(dfs(&master, &home, &[], &["put", lp, "/ragged.bin"]).await);
        let o = ok(dfs(&master, &home, &[], &["cat", "/ragged.bin"]).await);
        assert!(o.stdout == body, "content differs");
        let _ = up.child.start_kill();
        let _ = up.child.wait().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dfs_up_then_client_verbs_with_no_flags() {
    bounded(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut up = dfs_testkit::dfs_up(dir.path(), 1, &[]).await;
        let (master, home) = (up.master.clone(), up.home.clone());
        let local = dir.path().join("hello.txt");
        std::fs::write(&local, b"hello, dfs\n").expect("write");
        let lp = local.to_str().expect("utf-8");
        ok(dfs(&master, &home, &[], &["put", lp, "/hello.txt"]).await);
        let o = ok(dfs(&master, &home, &[], &["cat", "/hello.txt"]).await);
        assert_eq!(o.stdout, b"hello, dfs\n");
        ok(dfs(&master, &home, &[], &["key", "ls"]).await);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let key = home
                .join("config/dfs/keys")
                .join(format!("{}.key", up.stem));
            for f in [key, dir.path().join("data/master/cluster.secret")] {
                let mode = std::fs::metadata(&f).expect("stat").permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{}", f.display());
            }
        }
        let _ = up.child.start_kill();
        let _ = up.child.wait().await;
    })
    .await
}
