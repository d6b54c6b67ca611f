//! The master's status page, its JSON API and `/metrics`, and the chunkservers'
//! `/metrics`, over real HTTP against a real cluster; and `dfs up` serving them.

use std::net::SocketAddr;

use dfs_client::PutOptions;
use dfs_testkit::{bounded, cluster_with, data, dfs_up, http_get, CHUNK};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

async fn get_json(addr: &str, path: &str) -> Value {
    let (status, body) = http_get(addr, path).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).expect("JSON")
}

use dfs_testkit::metric_sample as sample;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_api_and_metrics_show_the_cluster() {
    bounded(async {
        let (_dir, cluster) = cluster_with(|o| {
            o.http = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        })
        .await;
        let http = cluster.master_http_addr().expect("http").to_string();
        let c = cluster.client();
        let size = 2 * CHUNK + 10;
        c.mkdir("/d", false).await.expect("mkdir");
        c.put("/d/f <&>", &data(size, 1)[..], PutOptions::default())
            .await
            .expect("put");
        c.remove("/d/missing", false, true)
            .await
            .expect_err("a file that is not there");
        c.put("/d/g", &b"g"[..], PutOptions::default())
            .await
            .expect("put");

        // The page: one self-contained file.
        let (status, page) = http_get(&http, "/").await;
        assert_eq!(status, 200);
        assert!(page.contains("<title>dfs status</title>"));
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "no external assets"
        );

        let s = get_json(&http, "/api/status").await;
        let servers = s["chunkservers"].as_array().expect("servers");
        assert_eq!(servers.len(), 3);
        for server in servers {
            assert_eq!(server["alive"], true);
            assert!(server["heartbeat_age"].as_f64().expect("age") < 10.0);
            assert!(server["capacity"].as_u64().expect("capacity") > 0);
        }
        assert_eq!(s["files"], 2);
        assert_eq!(s["chunks"], 4);
        assert_eq!(s["missing"], 0);
        assert!(s["balance"]["spread"].is_number());

        let health = get_json(&http, "/api/health").await;
        assert_eq!(health["healthy"], true);
        assert_eq!(health["files"], 2);

        let ls = get_json(&http, "/api/ls?path=%2Fd").await;
        let names: Vec<&str> = ls["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .filter_map(|e| e["name"].as_str())
            .collect();
        assert_eq!(names, ["f <&>", "g"]);

        let stat = get_json(&http, "/api/stat?path=%2Fd%2Ff%20%3C%26%3E").await;
        assert_eq!(stat["size"], size as u64);
        let chunks = stat["chunks"].as_array().expect("chunks");
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[0]["replicas"].as_array().map(Vec::len), Some(3));
        let (_, raw) = http_get(&http, "/api/stat?path=/d/g").await;
        assert!(!raw.contains("token") && !raw.contains("mac"), "{raw}");

        let (status, body) = http_get(&http, "/api/stat?path=/nope").await;
        assert_eq!(status, 404);
        assert!(body.contains("no such file"), "{body}");
        assert_eq!(http_get(&http, "/api/stat").await.0, 400);
        assert_eq!(http_get(&http, "/nothing-here").await.0, 404);

        // Recent operations, newest first, failures included.
        let ops = get_json(&http, "/api/ops").await;
        let ops = ops.as_array().expect("ops");
        let seen: Vec<(String, String, bool)> = ops
            .iter()
            .map(|o| {
                (
                    o["op"].as_str().unwrap_or("").to_string(),
                    o["target"].as_str().unwrap_or("").to_string(),
                    o["error"].is_null(),
                )
            })
            .collect();
        assert!(
            seen.contains(&("Mkdir".into(), "/d".into(), true)),
            "{seen:?}"
        );
        assert!(
            seen.contains(&("Delete".into(), "/d/missing".into(), false)),
            "{seen:?}"
        );
        assert_eq!(ops[0]["op"], "CommitPut", "newest first: {seen:?}");
        assert_eq!(ops[0]["by"], "cluster secret");

        // The master's metrics.
        let (status, metrics) = http_get(&http, "/metrics").await;
        assert_eq!(status, 200);
        assert!(
            sample(&metrics, "dfs_master_requests_total{op=\"Mkdir\"}") >= Some(1.0),
            "{metrics}"
        );
        assert!(sample(&metrics, "dfs_master_request_errors_total{op=\"Delete\"}") >= Some(1.0));
        assert!(sample(&metrics, "dfs_master_oplog_fsync_seconds_count") >= Some(3.0));
        assert!(sample(&metrics, "dfs_master_oplog_batch_records_sum") >= Some(3.0));
        assert_eq!(
            sample(&metrics, "dfs_master_chunks{state=\"all\"}"),
            Some(4.0)
        );
        assert_eq!(
            sample(&metrics, "dfs_master_chunks{state=\"missing\"}"),
            Some(0.0)
        );
        assert_eq!(sample(&metrics, "dfs_master_files"), Some(2.0));
        assert_eq!(
            sample(&metrics, "dfs_master_chunkservers{state=\"alive\"}"),
            Some(3.0)
        );
        for addr in cluster.chunkserver_addrs() {
            assert_eq!(
                sample(
                    &metrics,
                    &format!("dfs_master_chunkserver_alive{{addr=\"{addr}\"}}")
                ),
                Some(1.0)
            );
        }
        assert!(metrics.trim_end().ends_with("# EOF"));

        // Each chunkserver's own: every replica received the file's bytes.
        for addr in cluster.chunkserver_http_addrs() {
            let addr = addr.expect("chunkserver metrics").to_string();
            let (status, m) = http_get(&addr, "/metrics").await;
            assert_eq!(status, 200);
            assert!(
                sample(&m, "dfs_chunkserver_received_bytes_total") >= Some(size as f64 + 1.0),
                "{m}"
            );
            assert_eq!(sample(&m, "dfs_chunkserver_chunks"), Some(4.0));
            assert!(sample(&m, "dfs_chunkserver_requests_total{op=\"WriteChunk\"}") >= Some(1.0));
            assert!(sample(&m, "dfs_chunkserver_capacity_bytes") > Some(0.0));
            assert_eq!(http_get(&addr, "/").await.0, 404);
        }

        // Garbage on the port: answered or dropped, and the server goes on.
        for junk in [
            &b"\x16\x03\x01\x02\x00garbage"[..],
            b"POST / HTTP/1.1\r\n\r\n",
            &[b'x'; 20_000],
        ] {
            let mut s = tokio::net::TcpStream::connect(&http)
                .await
                .expect("connect");
            let _ = s.write_all(junk).await;
            drop(s);
        }
        assert_eq!(http_get(&http, "/api/status").await.0, 200);
        cluster.shutdown().await.expect("shutdown");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dfs_up_serves_the_status_page_on_loopback() {
    bounded(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let up = dfs_up(dir.path(), 2, &[]).await;
        let http = up.http_addr().await.expect("dfs up names its status page");
        assert!(http.starts_with("127.0.0.1:"), "{http}");
        let s = get_json(&http, "/api/status").await;
        assert_eq!(s["chunkservers"].as_array().map(Vec::len), Some(2));
        let (status, metrics) = http_get(&http, "/metrics").await;
        assert_eq!(status, 200);
        assert!(metrics.contains("dfs_master_chunkservers"), "{metrics}");
    })
    .await;
}
