//! Many-file transfers and in-cluster copies from the built `dfs` binary: `put -r`,
//! `get -r`, several sources, `cp [-r]` and `checksum`, with their error cases; and,
//! through the library behind fault proxies that count bytes, that a copy's bytes
//! never pass through the client.

use std::path::Path;

use dfs_client::{Client, ClientOptions, PutOptions, Routes};
use dfs_testkit::verbs::{dfs, dfs_in, failed_with, json, ok, target};
use dfs_testkit::{bounded, cluster, data, FaultProxy, CHUNK};

/// A local tree: nested directories, an empty one, a file of several chunks and
/// small files.
fn local_tree(root: &Path) -> Vec<(&'static str, Vec<u8>)> {
    let files = vec![
        ("top.txt", b"top\n".to_vec()),
        ("a/big", data(2 * CHUNK + 1234, 7)),
        ("a/b/small", b"small\n".to_vec()),
        ("a/b/zero", Vec::new()),
    ];
    for (name, bytes) in &files {
        let path = root.join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, bytes).expect("write");
    }
    std::fs::create_dir_all(root.join("empty")).expect("mkdir");
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_r_and_get_r_move_whole_trees_and_several_files() {
    bounded(async {
        let (dir, cluster) = cluster().await;
        let m = target(&cluster);
        let work = dir.path().join("work");
        let files = local_tree(&work.join("src"));

        // put -r into a new path: the tree lands there, empty directories included.
        ok(&dfs_in(&m, &work, &["put", "-r", "src", "/t"]).await);
        let listed = ok(&dfs(&m, &["ls", "-R", "/t"], None).await).text();
        for want in ["a/", "empty/", "top.txt", "big", "b/", "small", "zero"] {
            assert!(listed.contains(want), "{want} not in {listed}");
        }
        for (name, bytes) in &files {
            let got = ok(&dfs(&m, &["cat", &format!("/t/{name}")], None).await)
                .stdout
                .clone();
            assert_eq!(&got, bytes, "{name}");
        }
        // Into an existing directory, the source keeps its name.
        ok(&dfs(&m, &["mkdir", "/into"], None).await);
        ok(&dfs_in(&m, &work, &["put", "-r", "--parallel", "2", "src", "/into"]).await);
        assert_eq!(
            ok(&dfs(&m, &["cat", "/into/src/a/b/small"], None).await).stdout,
            b"small\n"
        );

        // get -r into a new local path, then every byte compared.
        ok(&dfs_in(&m, &work, &["get", "-r", "/t", "back"]).await);
        for (name, bytes) in &files {
            let got = std::fs::read(work.join("back").join(name)).expect(name);
            assert_eq!(&got, bytes, "{name}");
        }
        assert!(work.join("back/empty").is_dir());
        // No temp file is left beside what was fetched.
        let leftovers: Vec<_> = std::fs::read_dir(work.join("back/a"))
            .expect("list")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains("dfs-partial"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");

        // Several sources each way: the destination is a directory, made if missing.
        ok(&dfs_in(&m, &work, &["put", "src/top.txt", "src/a/big", "/several"]).await);
        assert_eq!(
            json(&dfs(&m, &["ls", "--json", "/several"], None).await)
                .as_array()
                .map(Vec::len),
            Some(2)
        );
        ok(&dfs_in(&m, &work, &["get", "/several/top.txt", "/t/a/big", "two"]).await);
        assert_eq!(
            std::fs::read(work.join("two/big")).expect("big"),
            files[1].1
        );
        assert_eq!(
            std::fs::read(work.join("two/top.txt")).expect("top"),
            b"top\n"
        );

        // Errors: one line each, and nothing half-done.
        failed_with(
            &dfs_in(&m, &work, &["put", "src", "/nope"]).await,
            "src: is a directory (use -r)",
        );
        failed_with(
            &dfs_in(&m, &work, &["put", "-", "src/top.txt", "/x"]).await,
            "'-' (stdin) can only be the one LOCAL",
        );
        failed_with(
            &dfs_in(&m, &work, &["get", "/t", "flat"]).await,
            "/t: is a directory",
        );
        failed_with(
            &dfs_in(&m, &work, &["get", "-r", "/missing", "out"]).await,
            "/missing: no such file or directory",
        );
        // One file of several fails (it exists, no --force): the others are stored,
        // each failure is named, and the exit status says so.
        ok(&dfs(&m, &["mkdir", "/clash"], None).await);
        ok(&dfs(&m, &["put", "-", "/clash/top.txt"], Some(b"old")).await);
        let out = dfs_in(
            &m,
            &work,
            &["put", "src/top.txt", "src/a/b/small", "/clash"],
        )
        .await;
        assert_ne!(out.code, 0);
        assert!(out.stderr.contains("already exists"), "{}", out.stderr);
        assert!(out.stderr.contains("1 of 2 files failed"), "{}", out.stderr);
        assert_eq!(
            ok(&dfs(&m, &["cat", "/clash/small"], None).await).stdout,
            b"small\n"
        );
        assert_eq!(
            ok(&dfs(&m, &["cat", "/clash/top.txt"], None).await).stdout,
            b"old"
        );
        ok(&dfs_in(&m, &work, &["put", "--force", "src/top.txt", "/clash"]).await);
        assert_eq!(
            ok(&dfs(&m, &["cat", "/clash/top.txt"], None).await).stdout,
            b"top\n"
        );
        cluster.shutdown().await.expect("shutdown");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cp_copies_in_the_cluster_and_checksum_compares_copies() {
    bounded(async {
        let (dir, cluster) = cluster().await;
        let m = target(&cluster);
        let big = data(2 * CHUNK + 4321, 9);
        let local = dir.path().join("big");
        std::fs::write(&local, &big).expect("write");
        ok(&dfs(&m, &["mkdir", "-p", "/d/sub"], None).await);
        ok(&dfs(
            &m,
            &["put", "--replication", "2", "-", "/d/big"],
            Some(&big),
        )
        .await);
        ok(&dfs(&m, &["put", "-", "/d/sub/small"], Some(b"small")).await);

        // A file: same bytes, same replication, same checksum; a local file's
        // checksum matches too, and a different file's does not.
        ok(&dfs(&m, &["cp", "/d/big", "/copy"], None).await);
        assert_eq!(ok(&dfs(&m, &["cat", "/copy"], None).await).stdout, big);
        let stat = json(&dfs(&m, &["stat", "--json", "/copy"], None).await);
        assert_eq!(stat["replication"], 2);
        let sums = json(
            &dfs(
                &m,
                &["checksum", "--json", "/d/big", "/copy", "/d/sub/small"],
                None,
            )
            .await,
        );
        let sum = |i: usize| sums[i]["checksum"].as_str().expect("checksum").to_string();
        assert_eq!(sum(0), sum(1));
        assert_ne!(sum(0), sum(2));
        assert_eq!(sums[0]["algorithm"], "blake3-chunks");
        assert_eq!(sums[0]["size"], big.len() as u64);
        assert_eq!(sums[0]["chunks"], 3);
        assert_eq!(sums[0]["chunk_size"], CHUNK as u64);
        assert_eq!(sums[0]["path"], "/d/big");
        let local_sum = ok(&dfs(
            &m,
            &["checksum", "--local", local.to_str().expect("utf-8")],
            None,
        )
        .await)
        .text();
        assert_eq!(local_sum.split_whitespace().next(), Some(sum(0).as_str()));
        // The plain form is b3sum's: checksum, two spaces, path.
        assert_eq!(
            ok(&dfs(&m, &["checksum", "/copy"], None).await).text(),
            format!("{}  /copy\n", sum(0))
        );

        // Through the client: the same bytes; --replication overrides the source's.
        ok(&dfs(
            &m,
            &[
                "cp",
                "--through-client",
                "--replication",
                "1",
                "/d/big",
                "/through",
            ],
            None,
        )
        .await);
        assert_eq!(ok(&dfs(&m, &["cat", "/through"], None).await).stdout, big);
        assert_eq!(
            json(&dfs(&m, &["stat", "--json", "/through"], None).await)["replication"],
            1
        );

        // A tree, into an existing directory under its own name.
        ok(&dfs(&m, &["mkdir", "/trees"], None).await);
        ok(&dfs(&m, &["cp", "-r", "/d", "/trees"], None).await);
        assert_eq!(
            ok(&dfs(&m, &["cat", "/trees/d/sub/small"], None).await).stdout,
            b"small"
        );
        assert_eq!(
            ok(&dfs(&m, &["cat", "/trees/d/big"], None).await).stdout,
            big
        );

        // Errors.
        failed_with(
            &dfs(&m, &["cp", "/d/big", "/copy"], None).await,
            "/copy: already exists",
        );
        ok(&dfs(&m, &["cp", "--force", "/d/sub/small", "/copy"], None).await);
        assert_eq!(ok(&dfs(&m, &["cat", "/copy"], None).await).stdout, b"small");
        failed_with(
            &dfs(&m, &["cp", "/d", "/e"], None).await,
            "/d: is a directory (use -r)",
        );
        failed_with(
            &dfs(&m, &["cp", "-r", "/d", "/d/sub/inside"], None).await,
            "cannot copy a directory into itself",
        );
        failed_with(
            &dfs(&m, &["cp", "/nope", "/x"], None).await,
            "/nope: no such file or directory",
        );
        failed_with(
            &dfs(&m, &["checksum", "/d"], None).await,
            "/d: is a directory",
        );
        failed_with(
            &dfs(&m, &["checksum", "--local", "/definitely/not/here"], None).await,
            "cannot open",
        );
        cluster.shutdown().await.expect("shutdown");
    })
    .await;
}

/// Every chunkserver behind a proxy that counts what crosses it: a server-side copy
/// moves (almost) nothing through the client, while a get of the same file moves
/// all of it, which shows the counting works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_moves_no_file_bytes_through_the_client() {
    bounded(async {
        let (_dir, cluster) = cluster().await;
        let admin = cluster.client();
        let size = 3 * CHUNK + 99;
        let bytes = data(size, 3);
        admin
            .put("/src", &bytes[..], PutOptions::default())
            .await
            .expect("put");

        let mut proxies = Vec::new();
        for addr in cluster.chunkserver_addrs() {
            proxies.push(FaultProxy::start(&addr.to_string()).await);
        }
        let routes = Routes::new(
            proxies
                .iter()
                .map(|p| (p.target().to_string(), p.addr().to_string())),
        );
        let client = Client::with_options(
            cluster.master_addr().to_string(),
            dfs_protocol::Identity::cluster_admin(cluster.secret()),
            ClientOptions {
                routes,
                ..ClientOptions::default()
            },
        );
        let crossed = |proxies: &[FaultProxy]| {
            proxies
                .iter()
                .map(|p| {
                    let (to, from) = p.forwarded();
                    to + from
                })
                .sum::<u64>()
        };
        let copied = client
            .copy("/src", "/dst", PutOptions::default(), &|_| {})
            .await
            .expect("copy");
        assert_eq!(copied, size as u64);
        let during_copy = crossed(&proxies);
        assert!(
            during_copy < 64 << 10,
            "{during_copy} bytes crossed the client's links for a {size}-byte copy"
        );
        assert_eq!(
            client.checksum("/src").await.expect("checksum"),
            client.checksum("/dst").await.expect("checksum")
        );
        let mut back = Vec::new();
        client.get("/dst", &mut back).await.expect("get");
        assert_eq!(back, bytes);
        assert!(crossed(&proxies) - during_copy >= size as u64);
        for p in proxies {
            p.stop().await;
        }
        cluster.shutdown().await.expect("shutdown");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_into_a_device_or_a_pipe_writes_into_it_and_leaves_it_there() {
    use std::io::Read;
    use std::os::unix::fs::FileTypeExt;
    bounded(async {
        let (dir, cluster) = cluster().await;
        let m = target(&cluster);
        let body = data(CHUNK + 4321, 3);
        let src = dir.path().join("src");
        std::fs::write(&src, &body).expect("write");
        ok(&dfs(&m, &["put", src.to_str().expect("utf-8"), "/f"], None).await);

        // Renaming a temp file over /dev/null would replace the device with a file.
        ok(&dfs(&m, &["get", "/f", "/dev/null"], None).await);
        let null = std::fs::metadata("/dev/null").expect("/dev/null");
        assert!(
            null.file_type().is_char_device(),
            "/dev/null is still a device"
        );

        // A FIFO gets the bytes as they come, and stays a FIFO.
        let fifo = dir.path().join("fifo");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .expect("mkfifo");
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                std::fs::File::open(&fifo)
                    .expect("open the fifo")
                    .read_to_end(&mut got)
                    .expect("read the fifo");
                got
            })
        };
        ok(&dfs(&m, &["get", "/f", fifo.to_str().expect("utf-8")], None).await);
        let got = tokio::task::spawn_blocking(move || reader.join().expect("reader"))
            .await
            .expect("join");
        assert_eq!(got, body, "every byte through the pipe");
        assert!(std::fs::metadata(&fifo)
            .expect("fifo")
            .file_type()
            .is_fifo());
    })
    .await;
}
