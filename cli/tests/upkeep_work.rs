//! The master's replication upkeep looks at the chunks that changed, not at every
//! chunk every second (`dfs_master_upkeep_chunks_assessed` on `/metrics`), and still
//! repairs a dead chunkserver's chunks promptly: from its death, not from the
//! rolling sweep that passes every chunk about once a minute on a table this small.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dfs_client::PutOptions;
use dfs_testkit::wait::wait_until;
use dfs_testkit::{bounded_for, cluster_with, data, http_get, metric_sample, CHUNK};

const FILES: usize = 12;
/// Chunks per file: 3, so 36 chunks in all.
const FILE_SIZE: usize = 2 * CHUNK + 100;
const CHUNKS: f64 = (FILES * 3) as f64;
const DEAD_AFTER: Duration = Duration::from_secs(2);

async fn counters(http: &str) -> (f64, f64) {
    let (status, metrics) = http_get(http, "/metrics").await;
    assert_eq!(status, 200, "{metrics}");
    let rounds = metric_sample(&metrics, "dfs_master_upkeep_rounds_total");
    let assessed = metric_sample(&metrics, "dfs_master_upkeep_chunks_assessed_total");
    (
        rounds.unwrap_or_else(|| panic!("no upkeep rounds in {metrics}")),
        assessed.unwrap_or_else(|| panic!("no chunks assessed in {metrics}")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upkeep_follows_changes_and_still_repairs_at_once() {
    bounded_for(Duration::from_secs(180), async {
        let (_dir, mut cluster) = cluster_with(|o| {
            o.chunkservers = 4;
            o.dead_after = DEAD_AFTER;
            o.safe_start = Duration::from_millis(200);
            o.http = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        })
        .await;
        let http = cluster.master_http_addr().expect("http").to_string();
        let c = cluster.client();
        for i in 0..FILES {
            c.put(
                &format!("/f{i}"),
                &data(FILE_SIZE, i as u64)[..],
                PutOptions::default(),
            )
            .await
            .expect("put");
        }
        let healthy = || async {
            let r = c.fsck("/").await.expect("fsck");
            r.chunks == CHUNKS as u64 && r.under_replicated == 0 && r.missing == 0
        };
        wait_until(
            Duration::from_secs(30),
            "every chunk at 3 replicas",
            healthy,
        )
        .await;

        // A quiet cluster: over ten rounds, the sweep passes one chunk a round (36 / 60,
        // rounded up), and upkeep looks at what the last writes' reports changed.
        // Looking at every chunk every round would be ten times the chunks.
        let (r0, a0) = counters(&http).await;
        wait_until(Duration::from_secs(30), "ten upkeep rounds", || async {
            counters(&http).await.0 >= r0 + 10.0
        })
        .await;
        let (r1, a1) = counters(&http).await;
        let assessed = a1 - a0;
        eprintln!("{assessed} chunks assessed over {} quiet rounds", r1 - r0);
        assert!(
            assessed <= 2.0 * CHUNKS,
            "{assessed} chunks assessed over {} quiet rounds with {CHUNKS} chunks",
            r1 - r0
        );

        // A chunkserver dies: its chunks are re-replicated on the three others well
        // before the sweep would get to them.
        let held = c
            .status()
            .await
            .expect("status")
            .chunkservers
            .iter()
            .map(|s| s.chunks)
            .collect::<Vec<_>>();
        assert!(
            held.iter().all(|n| *n > 0),
            "every server holds chunks: {held:?}"
        );
        cluster.stop_chunkserver(0).await.expect("stop");
        let stopped = Instant::now();
        wait_until(
            Duration::from_secs(40),
            "the dead server's chunks re-replicated",
            || async {
                let r = c.fsck("/").await.expect("fsck");
                let s = c.status().await.expect("status");
                let alive = s.chunkservers.iter().filter(|s| s.alive).count();
                alive == 3 && r.under_replicated == 0 && r.missing == 0
            },
        )
        .await;
        let took = stopped.elapsed();
        eprintln!("re-replicated {took:?} after the stop");
        assert!(
            took < DEAD_AFTER + Duration::from_secs(25),
            "repairs waited {took:?}: for the sweep, not the death"
        );
        let (_, a2) = counters(&http).await;
        assert!(a2 > a1, "the death was looked at");
    })
    .await;
}

/// Heartbeats carry only what changed; a full chunk report follows every
/// `--full-report-every` as a safety net. It arrives as a fresh registration, and the
/// server stays alive and its chunks readable through each one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunkservers_send_full_reports_periodically_and_stay_in_service() {
    bounded_for(Duration::from_secs(120), async {
        let dir = tempfile::tempdir().expect("temp dir");
        let cluster = dfs_testkit::cluster_in(dir.path(), |o| {
            o.chunkservers = 0;
            o.replication = 1;
            o.safe_start = Duration::from_millis(200);
            o.http = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        })
        .await;
        let http = cluster.master_http_addr().expect("http").to_string();
        let master = cluster.master_addr().to_string();
        let _procs = dfs_testkit::Procs::start(
            &master,
            cluster.secret(),
            dir.path(),
            1,
            &["--full-report-every", "1s"],
        )
        .await;
        let registrations = || async {
            let (_, metrics) = http_get(&http, "/metrics").await;
            metric_sample(&metrics, "dfs_master_requests_total{op=\"Register\"}").unwrap_or(0.0)
        };
        let c = cluster.client();
        wait_until(
            Duration::from_secs(20),
            "the chunkserver registered",
            || async { registrations().await >= 1.0 },
        )
        .await;
        let body = data(CHUNK + 1000, 7);
        wait_until(Duration::from_secs(20), "a put", || async {
            c.put("/f", &body[..], PutOptions::default()).await.is_ok()
        })
        .await;
        let first = registrations().await;
        wait_until(
            Duration::from_secs(30),
            "three more full reports",
            || async { registrations().await >= first + 3.0 },
        )
        .await;
        let status = c.status().await.expect("status");
        assert_eq!(status.chunkservers.len(), 1);
        assert!(status.chunkservers[0].alive);
        assert_eq!(status.chunkservers[0].chunks, 2);
        let fsck = c.fsck("/").await.expect("fsck");
        assert_eq!(
            (fsck.chunks, fsck.missing, fsck.under_replicated),
            (2, 0, 0)
        );
        let mut out = Vec::new();
        c.get("/f", &mut out).await.expect("get");
        assert!(out == body, "the file reads back whole");
    })
    .await;
}

/// A full report too large for one message goes in pieces: the registration carries
/// the first, heartbeats sent straight after it the rest. Here a piece is 4 chunks
/// and each chunkserver holds 10: after a master restart every replica is counted
/// again and nothing is missing or under-replicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_report_larger_than_a_message_arrives_in_pieces() {
    bounded_for(Duration::from_secs(120), async {
        let (_dir, mut cluster) = cluster_with(|o| {
            o.chunkservers = 3;
            o.report_piece = 4;
            o.safe_start = Duration::from_secs(20);
        })
        .await;
        let c = cluster.client();
        for i in 0..10 {
            c.put(
                &format!("/f{i}"),
                &data(1000 + i, i as u64)[..],
                PutOptions::default(),
            )
            .await
            .expect("put");
        }
        cluster.restart_master().await.expect("restart");
        let c = cluster.client();
        wait_until(
            Duration::from_secs(30),
            "every replica reported again",
            || async {
                c.status().await.is_ok_and(|s| {
                    s.chunkservers.len() == 3
                        && s.chunkservers.iter().all(|cs| cs.alive && cs.chunks == 10)
                        && s.missing == 0
                        && s.under_replicated == 0
                })
            },
        )
        .await;
        // Every chunk reported, so the master leaves safe mode well before its
        // 20 s deadline.
        wait_until(Duration::from_secs(10), "safe mode over", || async {
            c.status().await.is_ok_and(|s| !s.safe_mode)
        })
        .await;
        assert!(c.fsck("/").await.expect("fsck").healthy());
    })
    .await;
}
