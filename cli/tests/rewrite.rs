//! Writes at any offset and truncates by copy-on-write chunks (the mount's write
//! path): only touched chunks are written again, the chunk list is swapped in one
//! logged step, the replaced chunks are collected as garbage, and racing writers
//! never leave a mix.

use std::time::Duration;

use dfs_client::{Client, ClientError, ErrorCode, PutOptions, SetAttr};
use dfs_testkit::{bounded, cluster, data, on_disk, wait_until, CHUNK};

async fn read(c: &Client, path: &str) -> Vec<u8> {
    let mut out = Vec::new();
    c.get(path, &mut out).await.expect("get");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_byte_edit_rewrites_one_chunk_and_frees_the_old_one() {
    bounded(async {
        let (_dir, cluster) = cluster().await;
        let c = cluster.client();
        let mut want = data(3 * CHUNK + 100, 5);
        c.put("/f", &want[..], PutOptions::default())
            .await
            .expect("put");
        let mode = SetAttr {
            mode: Some(0o600),
            ..Default::default()
        };
        c.set_attr("/f", mode).await.expect("chmod");
        let before = c.stat("/f").await.expect("stat");

        let at = CHUNK as u64 + 5;
        let size = c.write_at("/f", at, b"X").await.expect("write");
        want[CHUNK + 5] = b'X';
        assert_eq!(size, want.len() as u64);
        let after = c.stat("/f").await.expect("stat");
        let handles =
            |s: &dfs_client::FileStat| s.chunks.iter().map(|c| c.handle).collect::<Vec<_>>();
        let (old, new) = (handles(&before), handles(&after));
        assert_eq!(new.len(), 4);
        assert_eq!(
            (new[0], new[2], new[3]),
            (old[0], old[2], old[3]),
            "untouched chunks kept"
        );
        assert_ne!(new[1], old[1], "the touched chunk is a new one");
        assert_eq!(after.mode, 0o600, "the same inode: its attributes stay");
        assert_eq!(read(&c, "/f").await, want);

        // The replaced chunk is garbage: it leaves every chunkserver's disk.
        wait_until(Duration::from_secs(60), "the old chunk deleted", || async {
            (0..3).all(|i| !on_disk(&cluster, i, &old[1]))
        })
        .await;
        assert_eq!(c.status().await.expect("status").files, 1);
        cluster.shutdown().await.expect("shutdown");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_past_the_end_and_truncates_in_every_place() {
    bounded(async {
        let (_dir, cluster) = cluster().await;
        let c = cluster.client();
        let mut want = data(2 * CHUNK + 10, 9);
        c.put("/g", &want[..], PutOptions::default())
            .await
            .expect("put");

        // Past the end, with a gap: zeros fill it.
        let at = want.len() as u64 + 1000;
        c.write_at("/g", at, b"tail").await.expect("write");
        want.resize(want.len() + 1000, 0);
        want.extend_from_slice(b"tail");
        assert_eq!(read(&c, "/g").await, want);

        // Across a chunk boundary.
        let across = vec![7u8; 300];
        c.write_at("/g", CHUNK as u64 - 100, &across)
            .await
            .expect("write");
        want[CHUNK - 100..CHUNK + 200].copy_from_slice(&across);
        assert_eq!(read(&c, "/g").await, want);

        // Cut inside a chunk, at a boundary, to nothing; then grow with zeros.
        for len in [CHUNK + 7, CHUNK, 0, 3 * CHUNK / 2] {
            let size = c.truncate("/g", len as u64).await.expect("truncate");
            assert_eq!(size, len as u64);
            want.resize(len, 0);
            assert_eq!(read(&c, "/g").await, want, "truncated to {len}");
            assert_eq!(c.stat("/g").await.expect("stat").size, len as u64);
        }
        // An empty write inside the file changes nothing; a directory is refused.
        c.write_at("/g", 3, b"").await.expect("empty write");
        assert_eq!(read(&c, "/g").await, want);
        c.mkdir("/dir", false).await.expect("mkdir");
        assert!(matches!(
            c.write_at("/dir", 0, b"x").await,
            Err(ClientError::Remote(ErrorCode::IsADirectory { .. }))
        ));
        assert!(matches!(
            c.truncate("/nope", 0).await,
            Err(ClientError::Remote(ErrorCode::NotFound { .. }))
        ));
        // Changing a file in place, touching it or setting its times counts no new file.
        c.touch("/g").await.expect("touch");
        let times = SetAttr {
            mtime: Some(5),
            ..Default::default()
        };
        c.set_attr("/g", times).await.expect("times");
        assert_eq!(c.status().await.expect("status").files, 1);
        cluster.shutdown().await.expect("shutdown");
    })
    .await;
}

/// Writers each change a different chunk of one file at once. Every write either
/// lands whole or fails cleanly (a chunk it meant to keep was replaced meanwhile),
/// and the file is always the original with exactly the landed writes on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_never_leave_a_mix() {
    bounded(async {
        let (_dir, cluster) = cluster().await;
        let c = cluster.client();
        let original = data(4 * CHUNK, 3);
        c.put("/r", &original[..], PutOptions::default())
            .await
            .expect("put");
        let writes = (0..4u8).map(|i| {
            let c = c.clone();
            async move {
                let at = u64::from(i) * CHUNK as u64 + 10;
                (i, c.write_at("/r", at, &[b'a' + i; 16]).await)
            }
        });
        let results = futures::future::join_all(writes).await;
        let mut want = original.clone();
        let mut landed = 0;
        for (i, r) in results {
            match r {
                Ok(_) => {
                    let at = usize::from(i) * CHUNK + 10;
                    want[at..at + 16].copy_from_slice(&[b'a' + i; 16]);
                    landed += 1;
                }
                Err(ClientError::Remote(ErrorCode::BadRequest { reason })) => {
                    assert!(reason.contains("changed meanwhile"), "{reason}")
                }
                Err(e) => panic!("writer {i}: {e}"),
            }
        }
        assert!(landed >= 1);
        assert_eq!(read(&c, "/r").await, want);
        cluster.shutdown().await.expect("shutdown");
    })
    .await;
}
