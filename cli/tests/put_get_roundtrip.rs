//! Files of every interesting size survive a round trip byte for byte, on three
//! distinct chunkservers per chunk, and a put is invisible until it completes.

use std::collections::HashSet;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use dfs_client::{ClientError, ErrorCode, FileKind, PutOptions};
use dfs_testkit::{bounded, cluster, cluster_with, data, LocalCluster, CHUNK};
use tokio::io::{AsyncRead, ReadBuf};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_size_round_trips_on_three_distinct_servers() {
    bounded(async {
        let (_dir, cluster) = cluster().await;
        every_size_round_trips(cluster).await;
    })
    .await
}

/// The same with chunkservers writing through the page cache (`--buffered-writes`)
/// instead of `O_DIRECT`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_size_round_trips_with_buffered_writes() {
    bounded(async {
        let (_dir, cluster) = cluster_with(|o| o.direct_io = false).await;
        every_size_round_trips(cluster).await;
    })
    .await
}

async fn every_size_round_trips(cluster: LocalCluster) {
    let client = cluster.client();
    let sizes = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK + 12_345];
    for (i, &size) in sizes.iter().enumerate() {
        let path = format!("/file-{size}");
        let content = data(size, i as u64);
        let stored = client
            .put(&path, &content[..], PutOptions::default())
            .await
            .expect("put");
        assert_eq!(stored, size as u64);

        let mut back = Vec::new();
        let got = client.get(&path, &mut back).await.expect("get");
        assert_eq!(got, size as u64);
        assert!(back == content, "{path}: content differs");

        let stat = client.stat(&path).await.expect("stat");
        assert_eq!(stat.kind, FileKind::File);
        assert_eq!(stat.size, size as u64);
        assert_eq!(stat.replication, 3);
        assert_eq!(stat.chunks.len(), size.div_ceil(CHUNK));
        assert_eq!(stat.chunks.iter().map(|c| c.size).sum::<u64>(), size as u64);
        for c in &stat.chunks {
            let distinct: HashSet<_> = c.replicas.iter().collect();
            assert_eq!(distinct.len(), 3, "chunk {} on {:?}", c.handle, c.replicas);
        }
    }
    let status = client.status().await.expect("status");
    assert_eq!(status.files, sizes.len() as u64);
    assert_eq!(status.under_replicated, 0);
    cluster.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_files_on_disk_are_named_by_handle_and_hold_the_bytes() {
    bounded(async {
        let (_dir, cluster) = cluster().await;
        let client = cluster.client();
        let content = data(CHUNK + 10, 7);
        client
            .put("/f", &content[..], PutOptions::default())
            .await
            .unwrap();
        let stat = client.stat("/f").await.unwrap();
        for i in 0..3 {
            let dir = cluster.chunkserver_data_dir(i).unwrap().join("chunks");
            let first =
                std::fs::read(dir.join(format!("{}.chunk", stat.chunks[0].handle))).unwrap();
            assert!(first == content[..CHUNK], "server {i}: first chunk differs");
            let second =
                std::fs::read(dir.join(format!("{}.chunk", stat.chunks[1].handle))).unwrap();
            assert!(second == content[CHUNK..]);
        }
        cluster.shutdown().await.unwrap();
    })
    .await
}

/// A reader that yields `good` bytes, then fails.
struct FailingReader {
    left: usize,
}

impl AsyncRead for FailingReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.left == 0 {
            return Poll::Ready(Err(io::Error::other("disk on fire")));
        }
        let n = self.left.min(buf.remaining()).min(100_000);
        buf.put_slice(&vec![9u8; n]);
        self.left -= n;
        Poll::Ready(Ok(()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_put_leaves_nothing_visible_and_the_old_file_intact() {
    bounded(async {
        let (_dir, cluster) = cluster().await;
        let client = cluster.client();
        let err = client
            .put(
                "/broken",
                FailingReader { left: 3 * CHUNK },
                PutOptions::default(),
            )
            .await
            .expect_err("input failed");
        assert!(matches!(err, ClientError::Input(_)), "{err}");
        assert!(matches!(
            client.stat("/broken").await,
            Err(ClientError::Remote(ErrorCode::NotFound { .. }))
        ));

        let old = data(1000, 1);
        client
            .put("/keep", &old[..], PutOptions::default())
            .await
            .unwrap();
        let overwrite = PutOptions {
            overwrite: true,
            ..Default::default()
        };
        client
            .put("/keep", FailingReader { left: CHUNK + 1 }, overwrite)
            .await
            .expect_err("input failed");
        let mut back = Vec::new();
        client.get("/keep", &mut back).await.unwrap();
        assert_eq!(back, old, "a failed overwrite must not touch the old file");
        cluster.shutdown().await.unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwrite_needs_force_and_namespace_errors_are_typed() {
    bounded(async {
        let (_dir, cluster) = cluster().await;
        let client = cluster.client();
        client
            .put("/a", &b"one"[..], PutOptions::default())
            .await
            .unwrap();
        let err = client
            .put("/a", &b"two"[..], PutOptions::default())
            .await
            .expect_err("exists");
        assert!(
            matches!(err, ClientError::Remote(ErrorCode::AlreadyExists { .. })),
            "{err}"
        );
        let force = PutOptions {
            overwrite: true,
            ..Default::default()
        };
        client.put("/a", &b"two!"[..], force).await.unwrap();
        let mut back = Vec::new();
        client.get("/a", &mut back).await.unwrap();
        assert_eq!(back, b"two!");
        assert_eq!(
            client.status().await.unwrap().chunks,
            1,
            "the replaced chunk is forgotten"
        );

        let err = client
            .put("/no/such/dir/f", &b"x"[..], PutOptions::default())
            .await
            .expect_err("no parent");
        assert!(
            matches!(err, ClientError::Remote(ErrorCode::NotFound { .. })),
            "{err}"
        );
        client.mkdir("/d", false).await.unwrap();
        let err = client.put("/d", &b"x"[..], force).await.expect_err("dir");
        assert!(
            matches!(err, ClientError::Remote(ErrorCode::IsADirectory { .. })),
            "{err}"
        );
        let err = client.get("/d", &mut Vec::new()).await.expect_err("dir");
        assert!(
            matches!(err, ClientError::Remote(ErrorCode::IsADirectory { .. })),
            "{err}"
        );
        let err = client
            .get("/missing", &mut Vec::new())
            .await
            .expect_err("missing");
        assert!(
            matches!(err, ClientError::Remote(ErrorCode::NotFound { .. })),
            "{err}"
        );
        let err = client
            .put("relative", &b"x"[..], PutOptions::default())
            .await
            .expect_err("relative");
        assert!(
            matches!(err, ClientError::Remote(ErrorCode::InvalidPath { .. })),
            "{err}"
        );
        let two = PutOptions {
            replication: Some(2),
            ..Default::default()
        };
        client
            .put("/two", &data(CHUNK + 1, 3)[..], two)
            .await
            .unwrap();
        let stat = client.stat("/two").await.unwrap();
        assert_eq!(stat.replication, 2);
        assert!(stat.chunks.iter().all(|c| c.replicas.len() == 2));
        let err = client
            .put(
                "/five",
                &b"x"[..],
                PutOptions {
                    replication: Some(5),
                    ..Default::default()
                },
            )
            .await
            .expect_err("only 3 servers");
        assert!(
            matches!(
                err,
                ClientError::Remote(ErrorCode::NotEnoughServers {
                    wanted: 5,
                    alive: 3
                })
            ),
            "{err}"
        );
        cluster.shutdown().await.unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mkdir_list_remove() {
    bounded(async {
        let (_dir, cluster) = cluster().await;
        let client = cluster.client();
        client.mkdir("/x/y/z", true).await.unwrap();
        client
            .put("/x/y/file", &b"abc"[..], PutOptions::default())
            .await
            .unwrap();
        let names: Vec<_> = client
            .list("/x/y")
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.kind, e.size))
            .collect();
        assert_eq!(
            names,
            [
                ("file".to_string(), FileKind::File, 3),
                ("z".to_string(), FileKind::Dir, 0)
            ]
        );
        let err = client
            .remove("/x", false, true)
            .await
            .expect_err("not empty");
        assert!(
            matches!(err, ClientError::Remote(ErrorCode::NotEmpty { .. })),
            "{err}"
        );
        client.remove("/x/y/file", false, true).await.unwrap();
        client.remove("/x", true, true).await.unwrap();
        assert!(client.list("/").await.unwrap().is_empty());
        assert_eq!(client.status().await.unwrap().chunks, 0);
        let err = client.remove("/", true, true).await.expect_err("root");
        assert!(
            matches!(err, ClientError::Remote(ErrorCode::InvalidArgument { .. })),
            "{err}"
        );
        cluster.shutdown().await.unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_and_gets_from_many_clients() {
    bounded(async {
        let (_dir, cluster) = cluster().await;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..8u64 {
            let client = cluster.client();
            tasks.spawn(async move {
                let content = data(CHUNK * 2 + i as usize * 1000, 100 + i);
                let path = format!("/c{i}");
                client
                    .put(&path, &content[..], PutOptions::default())
                    .await
                    .unwrap();
                let mut back = Vec::new();
                client.get(&path, &mut back).await.unwrap();
                assert!(back == content);
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.expect("task");
        }
        assert_eq!(cluster.client().status().await.unwrap().files, 8);
        cluster.shutdown().await.unwrap();
    })
    .await
}
