//! Writes that cannot complete fail with a clear cause and leave nothing visible.
//! (Retrying on a new chain is the failure-handling issue; here the put must fail cleanly.)

use dfs_client::{ClientError, ErrorCode, PutOptions};
use dfs_testkit::{bounded, cluster, cluster_with, data, CHUNK};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_down_in_the_chain_fails_the_put_naming_it() {
    bounded(async {
        let (_dir, mut cluster) = cluster().await;
        let down = cluster.chunkserver_addrs()[2].to_string();
        // Still "alive" at the master until --dead-after, so it is placed on.
        cluster.stop_chunkserver(2).await.unwrap();
        let client = cluster.client();
        let err = client
            .put("/f", &data(2 * CHUNK, 1)[..], PutOptions::default())
            .await
            .expect_err("a replica is down");
        assert!(
            err.to_string().contains(&down),
            "error should name {down}: {err}"
        );
        assert!(err.is_retryable(), "{err}");
        assert!(matches!(
            client.stat("/f").await,
            Err(ClientError::Remote(ErrorCode::NotFound { .. }))
        ));
        cluster.shutdown().await.unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_chunkserver_refuses_with_no_space() {
    bounded(async {
        let (_dir, cluster) = cluster_with(|o| o.capacity = Some(CHUNK as u64 * 3 / 2)).await;
        let client = cluster.client();
        let err = client
            .put("/big", &data(3 * CHUNK, 2)[..], PutOptions::default())
            .await
            .expect_err("no room");
        // The full server may be the head of the chain or further down it.
        let no_space = match &err {
            ClientError::Remote(ErrorCode::NoSpace { .. }) => true,
            ClientError::Remote(ErrorCode::ReplicaFailed { reason, .. }) => {
                reason.contains("no space")
            }
            _ => false,
        };
        assert!(no_space, "expected a no-space error, got {err}");
        assert!(matches!(
            client.stat("/big").await,
            Err(ClientError::Remote(ErrorCode::NotFound { .. }))
        ));
        // The chunks the failed put did store are garbage now and leave every disk.
        dfs_testkit::wait_until(
            std::time::Duration::from_secs(15),
            "the failed put's chunks to go",
            || async {
                (0..3).all(|i| {
                    let dir = cluster.chunkserver_data_dir(i).unwrap().join("chunks");
                    std::fs::read_dir(dir)
                        .map(|d| d.count() == 0)
                        .unwrap_or(false)
                })
            },
        )
        .await;
        // What fits still fits, once heartbeats have replaced the master's placement
        // estimates with what the servers really hold.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match client
                .put("/small", &data(1000, 3)[..], PutOptions::default())
                .await
            {
                Ok(_) => break,
                Err(ClientError::Remote(ErrorCode::NoSpace { .. }))
                    if std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await
                }
                Err(e) => panic!("a small file should fit: {e}"),
            }
        }
        cluster.shutdown().await.unwrap();
    })
    .await
}
