//! Stopping and restarting the master and the chunkservers loses nothing.

use std::time::Duration;

use dfs_client::PutOptions;
use dfs_testkit::{bounded, cluster, data, wait_until, CHUNK};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_file_reads_back_after_the_whole_cluster_restarts() {
    bounded(async {
        let (_dir, mut cluster) = cluster().await;
        let client = cluster.client();
        client.mkdir("/dir/sub", true).await.unwrap();
        let files: Vec<(String, Vec<u8>)> = (0..5)
            .map(|i| (format!("/dir/sub/f{i}"), data(i * CHUNK / 2 + 17, i as u64)))
            .collect();
        for (path, content) in &files {
            client
                .put(path, &content[..], PutOptions::default())
                .await
                .unwrap();
        }
        let ids_before: Vec<_> = client
            .status()
            .await
            .unwrap()
            .chunkservers
            .into_iter()
            .map(|s| (s.addr, s.id))
            .collect();

        for i in 0..3 {
            cluster.stop_chunkserver(i).await.unwrap();
        }
        cluster.stop_master().await.unwrap();
        cluster.restart_master().await.unwrap();
        for i in 0..3 {
            cluster.restart_chunkserver(i).await.unwrap();
        }
        cluster
            .wait_for_chunkservers(3, Duration::from_secs(30))
            .await
            .unwrap();

        let client = cluster.client();
        let status = client.status().await.unwrap();
        let ids_after: Vec<_> = status
            .chunkservers
            .into_iter()
            .map(|s| (s.addr, s.id))
            .collect();
        assert_eq!(ids_before, ids_after, "chunkservers keep their identity");
        assert_eq!(status.files, files.len() as u64);
        assert_eq!(
            status.missing, 0,
            "missing is counted afresh for each status"
        );
        // Under-replication is counted by upkeep's index, which may have assessed the
        // chunks between two of the registrations: it catches up at its next round.
        wait_until(
            Duration::from_secs(10),
            "locations relearned from chunk reports",
            || async { matches!(client.status().await, Ok(s) if s.under_replicated == 0) },
        )
        .await;
        for (path, content) in &files {
            let mut back = Vec::new();
            client.get(path, &mut back).await.unwrap();
            assert!(&back == content, "{path} differs after restart");
            let stat = client.stat(path).await.unwrap();
            assert!(stat.chunks.iter().all(|c| c.replicas.len() == 3));
        }
        cluster.shutdown().await.unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_master_relearns_locations_from_running_chunkservers() {
    bounded(async {
        let (_dir, mut cluster) = cluster().await;
        let content = data(3 * CHUNK, 9);
        cluster
            .client()
            .put("/f", &content[..], PutOptions::default())
            .await
            .unwrap();
        cluster.restart_master().await.unwrap();
        // The chunkservers were never stopped: they notice the new master and register again.
        cluster
            .wait_for_chunkservers(3, Duration::from_secs(30))
            .await
            .unwrap();
        let client = cluster.client();
        let mut back = Vec::new();
        client.get("/f", &mut back).await.unwrap();
        assert!(back == content);
        cluster.shutdown().await.unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_fail_over_when_a_replica_is_down() {
    bounded(async {
        let (_dir, mut cluster) = cluster().await;
        let content = data(4 * CHUNK + 5, 11);
        cluster
            .client()
            .put("/f", &content[..], PutOptions::default())
            .await
            .unwrap();
        // Stat before the stop: the client then tries a replica that is gone first for
        // some ranges and must move on to the next.
        cluster.stop_chunkserver(1).await.unwrap();
        let mut back = Vec::new();
        cluster.client().get("/f", &mut back).await.unwrap();
        assert!(back == content);
        cluster.shutdown().await.unwrap();
    })
    .await
}
