//! Rename semantics, the trash, and garbage collection on a real cluster: chunk files
//! really leave the disks when nothing references them, never while something does,
//! and not at all while the master is in safe mode.

use std::time::Duration;

use dfs_chunkserver::store::ChunkStore;
use dfs_client::{Client, ClientError, ErrorCode, PutOptions};
use dfs_protocol::{ChunkHandle, ChunkVersion};
use dfs_testkit::{bounded, cluster, cluster_with, data, on_disk, wait_until, CHUNK};

async fn read(client: &Client, path: &str) -> Vec<u8> {
    let mut out = Vec::new();
    client.get(path, &mut out).await.expect("get");
    out
}

fn code(r: Result<(), ClientError>) -> ErrorCode {
    match r {
        Err(ClientError::Remote(c)) => c,
        other => panic!("expected an error code, got {other:?}"),
    }
}

async fn handles(client: &Client, path: &str) -> Vec<ChunkHandle> {
    client
        .stat(path)
        .await
        .expect("stat")
        .chunks
        .iter()
        .map(|c| c.handle)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_moves_files_and_directories_atomically() {
    bounded(async {
        let (_dir, cluster) = cluster().await;
        let c = cluster.client();
        let content = data(CHUNK + 3, 1);
        c.mkdir("/a", false).await.unwrap();
        c.put("/a/f", &content[..], PutOptions::default())
            .await
            .unwrap();
        c.rename("/a/f", "/a/g").await.unwrap();
        assert!(matches!(
            c.stat("/a/f").await,
            Err(ClientError::Remote(ErrorCode::NotFound { .. }))
        ));
        assert!(read(&c, "/a/g").await == content);

        c.rename("/a", "/b").await.unwrap();
        assert!(read(&c, "/b/g").await == content);
        assert!(matches!(
            code(c.rename("/b", "/b/c").await),
            ErrorCode::InvalidArgument { .. }
        ));
        assert!(matches!(
            code(c.rename("/b/g", "/b").await),
            ErrorCode::InvalidArgument { .. }
        ));
        assert!(matches!(
            code(c.rename("/", "/x").await),
            ErrorCode::InvalidArgument { .. }
        ));
        assert!(matches!(
            code(c.rename("/b/g", "/missing/x").await),
            ErrorCode::NotFound { .. }
        ));
        assert!(matches!(
            code(c.rename("/nope", "/x").await),
            ErrorCode::NotFound { .. }
        ));

        c.mkdir("/d", false).await.unwrap();
        c.rename("/b/g", "/d").await.unwrap();
        assert!(
            read(&c, "/d/g").await == content,
            "moved into the existing directory"
        );
        c.put("/e", &b"e"[..], PutOptions::default()).await.unwrap();
        assert!(matches!(
            code(c.rename("/d/g", "/e").await),
            ErrorCode::AlreadyExists { .. }
        ));
        c.rename("/d", "/ünïcødé dir").await.unwrap();
        assert!(read(&c, "/ünïcødé dir/g").await == content);
        cluster.shutdown().await.unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_entries_go_to_the_trash_and_come_back() {
    bounded(async {
        let (_dir, cluster) = cluster().await;
        let c = cluster.client();
        let content = data(2 * CHUNK, 2);
        c.mkdir("/t", false).await.unwrap();
        c.put("/t/f", &content[..], PutOptions::default())
            .await
            .unwrap();
        let hs = handles(&c, "/t/f").await;

        c.remove("/t/f", false, false).await.unwrap();
        assert!(matches!(
            c.stat("/t/f").await,
            Err(ClientError::Remote(ErrorCode::NotFound { .. }))
        ));
        let trash = c.trash_list().await.unwrap();
        assert_eq!(trash.len(), 1);
        assert_eq!(trash[0].path, "/t/f");
        assert_eq!(trash[0].size, 2 * CHUNK as u64);
        assert!(trash[0].expires_at > trash[0].deleted_at);
        let status = c.status().await.unwrap();
        assert_eq!((status.files, status.trash), (0, 1));
        assert!(
            hs.iter().all(|h| (0..3).all(|i| on_disk(&cluster, i, h))),
            "trashed data stays"
        );

        c.trash_restore("/t/f").await.unwrap();
        assert!(read(&c, "/t/f").await == content);
        assert!(matches!(
            code(c.trash_restore("/t/f").await),
            ErrorCode::NotInTrash { .. }
        ));

        // a whole directory, and a restore that would clobber a newer file
        c.remove("/t", true, false).await.unwrap();
        c.trash_restore("/t").await.unwrap();
        assert!(read(&c, "/t/f").await == content);
        c.remove("/t/f", false, false).await.unwrap();
        c.put("/t/f", &b"newer"[..], PutOptions::default())
            .await
            .unwrap();
        assert!(matches!(
            code(c.trash_restore("/t/f").await),
            ErrorCode::AlreadyExists { .. }
        ));
        assert_eq!(read(&c, "/t/f").await, b"newer");
        cluster.shutdown().await.unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreferenced_chunks_leave_every_disk_and_referenced_ones_stay() {
    bounded(async {
        let (_dir, cluster) = cluster_with(|o| o.trash_retention = Duration::from_secs(1)).await;
        let c = cluster.client();
        let keep = data(CHUNK + 1, 3);
        c.put("/keep", &keep[..], PutOptions::default())
            .await
            .unwrap();
        let kept = handles(&c, "/keep").await;

        c.put("/expires", &data(2 * CHUNK, 4)[..], PutOptions::default())
            .await
            .unwrap();
        let expiring = handles(&c, "/expires").await;
        c.remove("/expires", false, false).await.unwrap();
        c.put("/now", &data(CHUNK, 5)[..], PutOptions::default())
            .await
            .unwrap();
        let skipped = handles(&c, "/now").await;
        c.remove("/now", false, true).await.unwrap();
        c.put("/over", &data(CHUNK, 6)[..], PutOptions::default())
            .await
            .unwrap();
        let replaced = handles(&c, "/over").await;
        let force = PutOptions {
            overwrite: true,
            ..Default::default()
        };
        c.put("/over", &b"small"[..], force).await.unwrap();

        let gone: Vec<ChunkHandle> = expiring
            .iter()
            .chain(&skipped)
            .chain(&replaced)
            .copied()
            .collect();
        wait_until(
            Duration::from_secs(20),
            "garbage chunks deleted",
            || async {
                gone.iter()
                    .all(|h| (0..3).all(|i| !on_disk(&cluster, i, h)))
            },
        )
        .await;
        assert!(
            c.trash_list().await.unwrap().is_empty(),
            "expired entry purged"
        );
        assert!(
            kept.iter().all(|h| (0..3).all(|i| on_disk(&cluster, i, h))),
            "referenced chunks stay"
        );
        assert!(read(&c, "/keep").await == keep);
        assert_eq!(read(&c, "/over").await, b"small");
        wait_until(
            Duration::from_secs(10),
            "garbage count back to zero",
            || async { c.status().await.map(|s| s.garbage == 0).unwrap_or(false) },
        )
        .await;
        cluster.shutdown().await.unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safe_mode_defers_deletion_until_every_chunk_is_reported() {
    bounded(async {
        let (_dir, mut cluster) = cluster().await;
        let c = cluster.client();
        let keep = data(CHUNK + 7, 7);
        c.put("/keep", &keep[..], PutOptions::default())
            .await
            .unwrap();
        let one = PutOptions {
            replication: Some(1),
            ..Default::default()
        };
        let solo = data(1000, 8);
        c.put("/solo", &solo[..], one).await.unwrap();
        let solo_stat = c.stat("/solo").await.unwrap();
        let addrs: Vec<String> = cluster
            .chunkserver_addrs()
            .iter()
            .map(|a| a.to_string())
            .collect();
        let holder = addrs
            .iter()
            .position(|a| *a == solo_stat.chunks[0].replicas[0])
            .unwrap();
        let other = (holder + 1) % 3;

        // Plant a chunk nobody references on `other`, while it and the master are down,
        // and keep the only holder of /solo down so the restarted master stays in safe mode.
        cluster.stop_master().await.unwrap();
        cluster.stop_chunkserver(other).await.unwrap();
        cluster.stop_chunkserver(holder).await.unwrap();
        let orphan = ChunkHandle::random();
        {
            let store =
                ChunkStore::open(cluster.chunkserver_data_dir(other).unwrap(), Some(1 << 30))
                    .unwrap();
            let mut w = store.create(orphan, ChunkVersion::FIRST).unwrap();
            w.write(b"nobody's").unwrap();
            w.commit().unwrap();
        }
        cluster.options_mut().safe_start = Duration::from_secs(120);
        cluster.restart_master().await.unwrap();
        cluster.restart_chunkserver(other).await.unwrap();
        cluster
            .wait_for_chunkservers(2, Duration::from_secs(30))
            .await
            .unwrap();

        let status = c.status().await.unwrap();
        assert!(
            status.safe_mode,
            "a chunk has no replica yet: safe mode holds"
        );
        tokio::time::sleep(Duration::from_secs(1)).await; // ten heartbeats
        assert!(
            on_disk(&cluster, other, &orphan),
            "nothing deleted in safe mode"
        );

        cluster.restart_chunkserver(holder).await.unwrap();
        wait_until(
            Duration::from_secs(20),
            "safe mode to end and the orphan to go",
            || async {
                !on_disk(&cluster, other, &orphan)
                    && c.status().await.map(|s| !s.safe_mode).unwrap_or(false)
            },
        )
        .await;
        assert!(read(&c, "/keep").await == keep);
        assert!(read(&c, "/solo").await == solo);
        cluster.shutdown().await.unwrap();
    })
    .await
}
