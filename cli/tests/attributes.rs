//! File attributes (mode, owner, access time) kept by the master for the mount: set
//! with `chmod`/`chown` (or the library's `set_attr`), shown by `stat`, logged like
//! every mutation, so a kill -9 right after the answer loses none of them, and gone
//! with the file they belonged to.

use std::time::Duration;

use dfs_client::ClusterSecret;
use dfs_client::{Client, ClientError, ErrorCode, Identity, PutOptions, Role, SetAttr};
use dfs_testkit::verbs::{dfs, failed_with, json, ok, target, Target};
use dfs_testkit::{bounded, cluster, wait_until, MasterProc};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chmod_chown_and_stat_from_the_binary() {
    bounded(async {
        let (_dir, cluster) = cluster().await;
        let m = target(&cluster);
        ok(&dfs(&m, &["mkdir", "/d"], None).await);
        ok(&dfs(&m, &["put", "-", "/d/f"], Some(b"data")).await);

        // Defaults: 0644 files, 0755 directories, root, accessed when modified.
        let f = json(&dfs(&m, &["stat", "--json", "/d/f"], None).await);
        assert_eq!(f["mode"], 0o644);
        assert_eq!((f["uid"].clone(), f["gid"].clone()), (0.into(), 0.into()));
        assert_eq!(f["atime"], f["mtime"]);
        let d = json(&dfs(&m, &["stat", "--json", "/d"], None).await);
        assert_eq!(d["mode"], 0o755);

        ok(&dfs(&m, &["chmod", "0600", "/d/f"], None).await);
        ok(&dfs(&m, &["chmod", "1777", "/d"], None).await);
        ok(&dfs(&m, &["chown", "1000:100", "/d/f"], None).await);
        ok(&dfs(&m, &["chown", "42", "/d"], None).await);
        let f = json(&dfs(&m, &["stat", "--json", "/d/f"], None).await);
        assert_eq!(f["mode"], 0o600);
        assert_eq!(
            (f["uid"].clone(), f["gid"].clone()),
            (1000.into(), 100.into())
        );
        assert_eq!(f["size"], 4, "content untouched");
        let d = json(&dfs(&m, &["stat", "--json", "/d"], None).await);
        assert_eq!(
            (d["mode"].clone(), d["uid"].clone(), d["gid"].clone()),
            (0o1777.into(), 42.into(), 0.into())
        );
        let plain = ok(&dfs(&m, &["stat", "/d/f"], None).await).text();
        assert!(
            plain.contains("mode:        0600") && plain.contains("owner:       1000:100"),
            "{plain}"
        );
        // A rename keeps them; the shell's relative paths reach them too.
        ok(&dfs(&m, &["mv", "/d/f", "/d/g"], None).await);
        assert_eq!(
            json(&dfs(&m, &["stat", "--json", "/d/g"], None).await)["mode"],
            0o600
        );

        // Bad usage: exit 2, with clap's explanation.
        for (args, why) in [
            (&["chmod", "999", "/d/g"][..], "not an octal mode"),
            (&["chmod", "17777", "/d/g"][..], "not an octal mode"),
            (&["chown", "bob", "/d/g"][..], "not UID or UID:GID"),
        ] {
            let out = dfs(&m, args, None).await;
            assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
            assert!(out.stderr.contains(why), "{}", out.stderr);
        }
        failed_with(
            &dfs(&m, &["chmod", "644", "/nope"], None).await,
            "/nope: no such file or directory",
        );
        let c = cluster.client();
        let too_wide = SetAttr {
            mode: Some(0o17777),
            ..Default::default()
        };
        assert!(matches!(
            c.set_attr("/d/g", too_wide).await,
            Err(ClientError::Remote(ErrorCode::InvalidArgument { .. }))
        ));
        let key = c.create_key("reader", Role::ReadOnly).await.expect("key");
        let reader = cluster.client_as(Identity::key(&key));
        let refused = reader
            .set_attr(
                "/d/g",
                SetAttr {
                    mode: Some(0o777),
                    ..Default::default()
                },
            )
            .await
            .expect_err("a read-only key changes nothing");
        assert!(
            refused.to_string().contains("permission denied"),
            "{refused}"
        );

        // Times: both settable; a removed file's attributes go with it.
        let times = SetAttr {
            atime: Some(1_000),
            mtime: Some(2_000),
            ..Default::default()
        };
        c.set_attr("/d/g", times).await.expect("times");
        let g = c.stat("/d/g").await.expect("stat");
        assert_eq!((g.atime, g.mtime), (1_000, 2_000));
        ok(&dfs(&m, &["rm", "--skip-trash", "/d/g"], None).await);
        c.put("/d/g", &b"new"[..], PutOptions::default())
            .await
            .expect("put");
        let g = c.stat("/d/g").await.expect("stat");
        assert_eq!(
            (g.mode, g.uid, g.gid),
            (0o644, 0, 0),
            "a new file starts afresh"
        );
        cluster.shutdown().await.expect("shutdown");
    })
    .await;
}

/// Attributes acknowledged just before a kill -9 come back from the log; after a
/// clean stop, from the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attributes_survive_kill_9_and_a_clean_restart() {
    bounded(async {
        let dir = tempfile::tempdir().expect("dir");
        let secret = ClusterSecret::generate();
        let mut master = MasterProc::start(&dir.path().join("m"), &secret, &[]).await;
        let c = Client::new(master.addr.clone(), Identity::cluster_admin(&secret));
        let m = Target {
            master: master.addr.clone(),
            secret: secret.encode(),
        };
        for i in 0..20u32 {
            let path = format!("/d{i}");
            c.mkdir(&path, false).await.expect("mkdir");
            let change = SetAttr {
                mode: Some(0o700 + i),
                uid: Some(1000 + i),
                gid: Some(2000 + i),
                atime: Some(u64::from(i)),
                mtime: None,
            };
            c.set_attr(&path, change).await.expect("set_attr");
        }
        master.kill().await;
        master.restart();
        let back = || async {
            let c = Client::new(m.master.clone(), Identity::cluster_admin(&secret));
            c.stat("/d19").await.is_ok()
        };
        wait_until(Duration::from_secs(30), "the master back", back).await;
        let check = |c: Client| async move {
            for i in 0..20u32 {
                let s = c.stat(&format!("/d{i}")).await.expect("stat");
                assert_eq!(
                    (s.mode, s.uid, s.gid, s.atime),
                    (0o700 + i, 1000 + i, 2000 + i, u64::from(i)),
                    "/d{i}"
                );
            }
        };
        check(Client::new(
            master.addr.clone(),
            Identity::cluster_admin(&secret),
        ))
        .await;
        // A clean stop (SIGTERM: the store flushed), then the same again.
        ok(&dfs(&m, &["stat", "/d0"], None).await);
        if let Some(pid) = master.pid() {
            dfs_testkit::signal(pid, rustix::process::Signal::TERM);
        }
        wait_until(Duration::from_secs(30), "the master to stop", || async {
            tokio::net::TcpStream::connect(&m.master).await.is_err()
        })
        .await;
        master.kill().await;
        master.restart();
        wait_until(Duration::from_secs(30), "the master back", back).await;
        check(Client::new(
            master.addr.clone(),
            Identity::cluster_admin(&secret),
        ))
        .await;
        master.kill().await;
    })
    .await;
}
