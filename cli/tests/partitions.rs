//! A chunkserver nobody can reach while it still reaches the master: a one-sided
//! partition, through the test kit's proxy in front of it. It keeps heartbeating, so
//! the master still counts it alive; puts fail over around it and gets read the
//! other replicas. Healed, every byte reads back and `fsck` is healthy.
//!
//! And a master whose connections are lost on the way (every packet of a dial
//! dropped, as 5% loss on a link does now and then for longer than the connect
//! timeout): a request that only reads is sent again on a new connection.

use std::time::Duration;

use dfs_client::ClientError;
use dfs_client::{Client, ClientOptions, PutOptions};
use dfs_testkit::{bounded, cluster, cluster_in, data, wait_until, Direction, FaultProxy, Procs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunkserver_nobody_reaches_is_routed_around_and_healed() {
    bounded(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let cluster = cluster_in(dir.path(), |o| {
            o.chunkservers = 0;
            o.safe_start = Duration::from_millis(300);
        })
        .await;
        let master = cluster.master_addr().to_string();
        let mut procs = Procs::start(&master, cluster.secret(), dir.path(), 4, &[]).await;
        let proxy = procs.behind_proxy(0).await;
        let behind = procs.advertised(0);
        let c = Client::with_options(
            master.clone(),
            dfs_protocol::Identity::cluster_admin(cluster.secret()),
            ClientOptions {
                connect_timeout: Duration::from_secs(2),
                io_timeout: Duration::from_secs(10),
                ..ClientOptions::default()
            },
        );
        wait_until(
            Duration::from_secs(30),
            "four chunkservers, one behind the proxy",
            || async {
                c.status().await.is_ok_and(|s| {
                    s.chunkservers.iter().filter(|cs| cs.alive).count() == 4
                        && s.chunkservers.iter().any(|cs| cs.addr == behind)
                        && !s.safe_mode
                })
            },
        )
        .await;
        let mut files = Vec::new();
        for i in 0..4u64 {
            let body = data(300_000 + i as usize * 1000, i);
            c.put(&format!("/before{i}"), &body[..], PutOptions::default())
                .await
                .expect("put");
            files.push((format!("/before{i}"), body));
        }

        // Nothing reaches it now; it still heartbeats, so it stays alive.
        proxy.partition(Direction::Both);
        for i in 0..4u64 {
            let body = data(200_000, 100 + i);
            c.put(&format!("/during{i}"), &body[..], PutOptions::default())
                .await
                .expect("a put fails over around the unreachable server");
            files.push((format!("/during{i}"), body));
        }
        for (path, body) in &files {
            let mut got = Vec::new();
            c.get(path, &mut got)
                .await
                .expect("a get reads the other replicas");
            assert_eq!(&got, body, "{path}");
        }
        let s = c.status().await.expect("status");
        assert!(
            s.chunkservers
                .iter()
                .any(|cs| cs.addr == behind && cs.alive),
            "one-sided: the master still hears it"
        );

        proxy.heal();
        wait_until(
            Duration::from_secs(60),
            "fsck healthy after healing",
            || async {
                c.fsck("/").await.is_ok_and(|r| {
                    r.missing == 0 && r.under_replicated == 0 && r.corrupt == 0 && r.stale == 0
                })
            },
        )
        .await;
        for (path, body) in &files {
            let mut got = Vec::new();
            c.get(path, &mut got).await.expect("get");
            assert_eq!(&got, body, "{path}");
        }
        proxy.stop().await;
        procs.kill_all().await;
        cluster.shutdown().await.expect("shutdown");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_whose_connection_is_lost_is_sent_again() {
    bounded(async {
        let (_dir, cluster) = cluster().await;
        let body = data(300_000, 7);
        cluster
            .client()
            .put("/f", &body[..], PutOptions::default())
            .await
            .expect("put");
        let proxy = FaultProxy::start(&cluster.master_addr().to_string()).await;
        let timeout = Duration::from_millis(500);
        let c = Client::with_options(
            proxy.addr().to_string(),
            dfs_protocol::Identity::cluster_admin(cluster.secret()),
            ClientOptions {
                connect_timeout: timeout,
                io_timeout: timeout,
                ..ClientOptions::default()
            },
        );

        // Two dials answer nothing; the third gets through.
        proxy.swallow_next(2);
        let mut got = Vec::new();
        c.get("/f", &mut got)
            .await
            .expect("a get whose first two dials were lost");
        assert_eq!(got, body);
        assert_eq!(proxy.to_swallow(), 0, "both lost dials were made");

        // Three lost dials are the caller's error, after three tries, not before.
        let fresh = c.reconfigured(|_| {});
        proxy.swallow_next(3);
        let started = std::time::Instant::now();
        let err = fresh.stat("/f").await.expect_err("three lost dials");
        assert!(
            matches!(err, ClientError::Timeout { .. }),
            "a timeout, not {err}"
        );
        assert_eq!(proxy.to_swallow(), 0, "tried three times");
        assert!(started.elapsed() >= timeout * 3, "{:?}", started.elapsed());
        proxy.stop().await;
    })
    .await;
}
