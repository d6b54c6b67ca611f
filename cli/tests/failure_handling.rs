//! Failure handling with chunkservers as real processes killed with SIGKILL: a put and a
//! get survive a dead server, lost replicas come back, a returning server's extra
//! replicas are trimmed, single-replica chunks are repaired first, a decommissioned
//! server drains, and an empty server gets its share.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use dfs_cli::cluster::LocalCluster;
use dfs_client::{Client, PutOptions};
use dfs_testkit::{bounded, data, wait_until, Procs, CHUNK};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEAD_AFTER: Duration = Duration::from_secs(2);

/// A master alone (in-process), quick to declare chunkservers dead.
async fn master(dir: &std::path::Path) -> LocalCluster {
    dfs_testkit::cluster_in(dir, |o| {
        o.chunkservers = 0;
        o.dead_after = DEAD_AFTER;
        o.safe_start = Duration::from_millis(500);
    })
    .await
}

/// A master and `n` chunkserver processes (with `args`), all registered.
async fn setup(n: usize, args: &[&str]) -> (tempfile::TempDir, LocalCluster, Procs, Client) {
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = master(dir.path()).await;
    let mut procs = Procs::start(
        &cluster.master_addr().to_string(),
        cluster.secret(),
        dir.path(),
        n,
        args,
    )
    .await;
    procs.wait_registered(&cluster).await;
    let c = cluster.client();
    (dir, cluster, procs, c)
}

/// Live replica count of each chunk of `path`.
async fn replica_counts(c: &Client, path: &str) -> Vec<usize> {
    c.stat(path)
        .await
        .expect("stat")
        .chunks
        .iter()
        .map(|ch| ch.replicas.len())
        .collect()
}

async fn all_at(c: &Client, paths: &[&str], n: usize) -> bool {
    for p in paths {
        if !replica_counts(c, p).await.iter().all(|k| *k == n) {
            return false;
        }
    }
    true
}

async fn read(c: &Client, path: &str) -> Vec<u8> {
    let mut out = Vec::new();
    c.get(path, &mut out).await.expect("get");
    out
}

async fn alive(c: &Client) -> usize {
    c.status()
        .await
        .map(|s| s.chunkservers.iter().filter(|s| s.alive).count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_succeeds_through_a_dead_replica_at_a_new_version() {
    bounded(async {
        let (_dir, cluster, mut procs, c) = setup(5, &[]).await;
        // Dead, but the master does not know yet: chains still include it.
        procs.kill(0).await;
        let content = data(12 * CHUNK, 1);
        c.put("/f", &content[..], PutOptions::default())
            .await
            .expect("put survives");
        // Still counted alive after the put, so counted alive for all of it: some of
        // its 12 chains of 3 out of 5 included it. (On a loaded machine the master
        // can count it dead first, and then rightly leaves it out of every chain.)
        let placed_on_it = alive(&c).await == 5;
        assert!(read(&c, "/f").await == content);
        let stat = c.stat("/f").await.unwrap();
        assert!(
            !placed_on_it || stat.chunks.iter().any(|ch| ch.version.0 > 1),
            "a chunk rerouted around the dead server moved to a new version"
        );
        assert!(stat
            .chunks
            .iter()
            .all(|ch| !ch.replicas.contains(&procs.addr(0))));
        wait_until(
            Duration::from_secs(20),
            "every chunk at 3 live replicas",
            || all_at(&c, &["/f"], 3),
        )
        .await;
        procs.kill_all().await;
        cluster.shutdown().await.unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_put_and_during_a_get() {
    bounded(async {
        let (_dir, cluster, mut procs, c) = setup(5, &[]).await;

        // A put fed slowly, with a chunkserver killed in the middle of it.
        let content = data(16 * CHUNK, 2);
        let (mut w, r) = tokio::io::duplex(256 << 10);
        let feed = {
            let content = content.clone();
            tokio::spawn(async move {
                for piece in content.chunks(256 << 10) {
                    w.write_all(piece).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        };
        let put = {
            let c = c.clone();
            tokio::spawn(async move { c.put("/slow", r, PutOptions::default()).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        procs.kill(1).await;
        put.await.unwrap().expect("put survives a kill -9");
        feed.await.unwrap();
        assert!(read(&c, "/slow").await == content);

        // A get drained slowly, with another chunkserver killed in the middle of it.
        let (w, mut r) = tokio::io::duplex(256 << 10);
        let get = {
            let c = c.clone();
            tokio::spawn(async move { c.get("/slow", w).await })
        };
        let drain = tokio::spawn(async move {
            let mut out = Vec::new();
            let mut buf = vec![0u8; 128 << 10];
            loop {
                let n = r.read(&mut buf).await.unwrap();
                if n == 0 {
                    return out;
                }
                out.extend_from_slice(&buf[..n]);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        procs.kill(2).await;
        get.await.unwrap().expect("get survives a kill -9");
        assert!(drain.await.unwrap() == content);
        procs.kill_all().await;
        cluster.shutdown().await.unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_replicas_come_back_and_a_returning_server_is_trimmed() {
    bounded(async {
        let (_dir, cluster, mut procs, c) = setup(4, &[]).await;
        let files = ["/a", "/b", "/c"];
        for (i, f) in files.iter().enumerate() {
            c.put(
                f,
                &data(4 * CHUNK, 10 + i as u64)[..],
                PutOptions::default(),
            )
            .await
            .unwrap();
        }
        let before: HashMap<String, String> = c
            .status()
            .await
            .unwrap()
            .chunkservers
            .into_iter()
            .map(|s| (s.addr, s.id.to_string()))
            .collect();

        let killed_at = Instant::now();
        procs.kill(3).await;
        wait_until(
            Duration::from_secs(10),
            "the dead server noticed",
            || async { alive(&c).await == 3 },
        )
        .await;
        let detected = killed_at.elapsed();
        wait_until(
            Duration::from_secs(30),
            "every chunk back at 3 replicas",
            || all_at(&c, &files, 3),
        )
        .await;
        let repaired = killed_at.elapsed();
        eprintln!("dead detected after {detected:?}, 12 MiB re-replicated after {repaired:?}");
        // The status counts are upkeep's, as of its last round (once a second).
        wait_until(
            Duration::from_secs(10),
            "status counting no chunk short",
            || async {
                matches!(c.status().await, Ok(s) if (s.under_replicated, s.missing) == (0, 0))
            },
        )
        .await;

        // It comes back with its old chunks: the extra replicas are trimmed.
        procs.spawn(3);
        wait_until(Duration::from_secs(10), "the server back", || async {
            alive(&c).await == 4
        })
        .await;
        wait_until(
            Duration::from_secs(30),
            "over-replication trimmed",
            || async {
                matches!(c.status().await, Ok(s) if s.over_replicated == 0)
                    && all_at(&c, &files, 3).await
            },
        )
        .await;
        let after = c.status().await.unwrap();
        let back = after
            .chunkservers
            .iter()
            .find(|s| s.addr == procs.addr(3))
            .unwrap();
        assert_eq!(
            before[&procs.addr(3)],
            back.id.to_string(),
            "identity kept across restart"
        );
        for (i, f) in files.iter().enumerate() {
            assert!(read(&c, f).await == data(4 * CHUNK, 10 + i as u64));
        }
        procs.kill_all().await;
        cluster.shutdown().await.unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_left_with_one_replica_are_repaired_first() {
    bounded(async {
        // Slow copies, so the order of repairs can be watched.
        let (_dir, cluster, mut procs, c) = setup(5, &["--replication-rate", "3MiB"]).await;
        c.put("/f", &data(20 * CHUNK, 3)[..], PutOptions::default())
            .await
            .unwrap();
        procs.kill(0).await;
        procs.kill(1).await;
        let stat = c.stat("/f").await.unwrap();
        let held =
            |ch: &dfs_client::ChunkInfo, k: usize| ch.replicas.iter().any(|r| *r == procs.addr(k));
        let lone: Vec<usize> = (0..stat.chunks.len())
            .filter(|&i| held(&stat.chunks[i], 0) && held(&stat.chunks[i], 1))
            .collect();
        let pair: Vec<usize> = (0..stat.chunks.len())
            .filter(|&i| held(&stat.chunks[i], 0) != held(&stat.chunks[i], 1))
            .collect();
        assert!(
            !lone.is_empty() && !pair.is_empty(),
            "20 chunks on 5 servers hit both cases"
        );

        // Until every chunk is whole again: no chunk that kept two replicas may reach
        // three while a chunk that kept one still has one.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let counts = replica_counts(&c, "/f").await;
            let lone_min = lone.iter().map(|&i| counts[i]).min().unwrap_or(3);
            let pair_max = pair.iter().map(|&i| counts[i]).max().unwrap_or(0);
            if counts.iter().all(|&k| k == 3) {
                break;
            }
            // Before the master notices the deaths it still lists the dead replicas.
            if alive(&c).await == 3 {
                assert!(
                    !(lone_min == 1 && pair_max == 3),
                    "a two-replica chunk was repaired before a one-replica chunk: {counts:?}"
                );
            }
            assert!(
                Instant::now() < deadline,
                "repair did not finish: {counts:?}"
            );
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        procs.kill_all().await;
        cluster.shutdown().await.unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decommissioned_server_drains_and_can_then_go() {
    bounded(async {
        let (_dir, cluster, mut procs, c) = setup(4, &[]).await;
        let content = data(8 * CHUNK, 4);
        c.put("/f", &content[..], PutOptions::default())
            .await
            .unwrap();
        let victim = procs.addr(2);
        c.decommission(&victim, true).await.unwrap();
        let s = c.status().await.unwrap();
        let me = s.chunkservers.iter().find(|s| s.addr == victim).unwrap();
        assert!(me.decommissioning);
        // What it holds is to give from the start, not from upkeep's next round
        // (copies may have begun already: nothing waits for the status call).
        assert!(me.draining > 0, "{me:?}");
        wait_until(Duration::from_secs(30), "the server to drain", || async {
            match c.status().await {
                Ok(s) => {
                    s.chunkservers
                        .iter()
                        .any(|x| x.addr == victim && x.draining == 0)
                        && s.under_replicated == 0
                }
                Err(_) => false,
            }
        })
        .await;
        // New chunks avoid it.
        c.put("/g", &data(4 * CHUNK, 5)[..], PutOptions::default())
            .await
            .unwrap();
        assert!(c
            .stat("/g")
            .await
            .unwrap()
            .chunks
            .iter()
            .all(|ch| !ch.replicas.contains(&victim)));
        // Now it can go without anything becoming under-replicated.
        procs.kill(2).await;
        wait_until(Duration::from_secs(10), "its death noticed", || async {
            alive(&c).await == 3
        })
        .await;
        let r = c.fsck("/").await.unwrap();
        assert!(r.healthy(), "{r:?}");
        assert!(read(&c, "/f").await == content);
        procs.kill_all().await;
        cluster.shutdown().await.unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_server_that_joins_gets_its_share() {
    bounded(async {
        let (_dir, cluster, mut procs, c) = setup(3, &["--capacity", "40MiB"]).await;
        let content = data(16 * CHUNK, 6);
        c.put("/f", &content[..], PutOptions::default())
            .await
            .unwrap();
        let newcomer = procs.add();
        procs.wait_registered(&cluster).await;
        let start = c.balance(None).await.unwrap();
        assert!(
            start.spread > start.threshold,
            "40% vs 0% must be out of balance: {start:?}"
        );
        wait_until(
            Duration::from_secs(60),
            "the spread within the threshold",
            || async {
                matches!(c.balance(None).await, Ok(b) if b.spread <= b.threshold && b.moving == 0)
            },
        )
        .await;
        let s = c.status().await.unwrap();
        let joined = s
            .chunkservers
            .iter()
            .find(|x| x.addr == procs.addr(newcomer))
            .unwrap();
        assert!(
            joined.chunks >= 8,
            "the newcomer holds its share: {}",
            joined.chunks
        );
        wait_until(
            Duration::from_secs(10),
            "status counting every chunk at its replication",
            || async {
                matches!(c.status().await,
                    Ok(s) if (s.under_replicated, s.over_replicated) == (0, 0))
            },
        )
        .await;
        assert!(read(&c, "/f").await == content);
        procs.kill_all().await;
        cluster.shutdown().await.unwrap();
    })
    .await
}
