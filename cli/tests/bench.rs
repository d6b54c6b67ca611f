//! `dfs bench --json` and `dfs bench ceiling --json` from the built binary: the
//! shape of the report (speed is never asserted), that the scratch directory is
//! gone afterwards, and usage errors.

use std::time::Duration;

use dfs_testkit::verbs::{dfs, json, ok, target};
use dfs_testkit::{bounded_for, cluster};

fn number(v: &serde_json::Value, path: &str) -> f64 {
    let mut at = v;
    for key in path.split('.') {
        at = &at[key];
    }
    at.as_f64()
        .unwrap_or_else(|| panic!("{path} is not a number in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_reports_every_workload_as_json() {
    bounded_for(Duration::from_secs(300), async {
        let (dir, cluster) = cluster().await;
        let t = target(&cluster);
        let scratch = dir.path().join("ceiling");
        std::fs::create_dir(&scratch).expect("dir");
        let s = scratch.to_string_lossy().to_string();

        let r = json(
            &dfs(
                &t,
                &[
                    "bench",
                    "put",
                    "--size",
                    "3MiB",
                    "--json",
                    "--ceiling-dir",
                    &s,
                    "--ceiling-size",
                    "8MiB",
                    "--rest",
                    "1s",
                ],
                None,
            )
            .await,
        );
        for key in [
            "ceiling.disk_write_one",
            "ceiling.disk_write_three",
            "ceiling.disk_write_deep",
            "ceiling.disk_write_depth",
            "ceiling.disk_read_cold",
            "ceiling.disk_read_cold_parallel",
            "ceiling.loopback",
            "ceiling.blake3_one_core",
            "ceiling.put",
            "ceiling.put_three",
            "ceiling.disk_append_three",
            "ceiling.append",
            "ceiling.get",
            "put.bytes",
            "put.seconds",
            "put.mib_per_s",
            "put.ratio",
            "put.ratio_three",
        ] {
            assert!(number(&r, key) > 0.0, "{key} in {r}");
        }
        assert_eq!(number(&r, "put.bytes"), (3 << 20) as f64);
        assert_eq!(number(&r, "ceiling.rest_s"), 1.0, "{r}");
        // The best of several writer counts is at least the three writers' figure.
        assert!(
            number(&r, "ceiling.put") >= number(&r, "ceiling.put_three"),
            "{r}"
        );
        assert!(
            number(&r, "put.ratio_three") >= number(&r, "put.ratio"),
            "{r}"
        );
        assert!(number(&r, "put.client_cpu_ms_per_mib") >= 0.0, "{r}");
        assert!(number(&r, "client_max_rss_bytes") > 0.0, "{r}");
        assert!(r.get("get").is_none(), "only what was asked: {r}");
        assert_eq!(
            std::fs::read_dir(&scratch).expect("dir").count(),
            0,
            "the probe's files are removed"
        );

        // Several runs: the ceiling is probed before each, every run is listed, and
        // the figures are the median run's.
        let r = json(
            &dfs(
                &t,
                &[
                    "bench",
                    "get",
                    "--size",
                    "2MiB",
                    "--runs",
                    "3",
                    "--json",
                    "--ceiling-dir",
                    &s,
                    "--ceiling-size",
                    "4MiB",
                    "--rest",
                    "0s",
                ],
                None,
            )
            .await,
        );
        assert_eq!(r["ceilings"].as_array().map(Vec::len), Some(3), "{r}");
        let runs = r["get"]["runs"].as_array().expect("get runs");
        assert_eq!(runs.len(), 3, "{r}");
        let mut mibs: Vec<f64> = runs.iter().map(|x| number(x, "mib_per_s")).collect();
        let mut ratios: Vec<f64> = runs.iter().map(|x| number(x, "ratio")).collect();
        mibs.sort_by(f64::total_cmp);
        ratios.sort_by(f64::total_cmp);
        assert_eq!(number(&r, "get.mib_per_s"), mibs[1], "the median run: {r}");
        assert_eq!(number(&r, "get.ratio"), ratios[1], "the median ratio: {r}");
        assert!(r.get("put").is_none(), "only what was asked: {r}");
        assert!(
            runs.iter().all(|x| x.get("ratio_three").is_none()),
            "a get has no three-writer ratio: {r}"
        );
        let r = json(
            &dfs(
                &t,
                &[
                    "bench",
                    "meta",
                    "--ops",
                    "8",
                    "--clients",
                    "2",
                    "--runs",
                    "2",
                    "--json",
                ],
                None,
            )
            .await,
        );
        for m in r["meta"].as_array().expect("meta runs") {
            let runs = m["rate"]["runs"].as_array().expect("runs of each op");
            assert_eq!(runs.len(), 2, "{r}");
            let low = runs
                .iter()
                .filter_map(|x| x.as_f64())
                .fold(f64::MAX, f64::min);
            assert_eq!(number(m, "rate.per_s"), low, "the lower of two: {r}");
        }
        let bad = dfs(&t, &["bench", "meta", "--runs", "0"], None).await;
        assert_eq!(bad.code, 2, "{}", bad.stderr);

        let r = json(&dfs(&t, &["bench", "get", "--size", "2MiB", "--json"], None).await);
        assert!(r["get"].get("runs").is_none(), "one run lists none: {r}");
        assert_eq!(number(&r, "get.bytes"), (2 << 20) as f64);
        assert!(
            r["get"].get("ratio").is_none(),
            "no ratio without a ceiling"
        );

        let r = json(
            &dfs(
                &t,
                &[
                    "bench",
                    "small",
                    "--files",
                    "20",
                    "--size",
                    "4KiB",
                    "--concurrency",
                    "4",
                    "--json",
                ],
                None,
            )
            .await,
        );
        assert_eq!(number(&r, "small.files"), 20.0);
        for key in [
            "small.put.per_s",
            "small.get.per_s",
            "small.put.latency.p50_ms",
            "small.get.latency.p99_ms",
        ] {
            assert!(number(&r, key) > 0.0, "{key} in {r}");
        }
        assert_eq!(number(&r, "small.put.count"), 20.0);

        let r = json(
            &dfs(
                &t,
                &[
                    "bench",
                    "append",
                    "--record",
                    "64KiB",
                    "--records",
                    "3",
                    "--appenders",
                    "1,2",
                    "--in-flight",
                    "2",
                    "--json",
                ],
                None,
            )
            .await,
        );
        let runs = r["append"].as_array().expect("append runs");
        assert_eq!(runs.len(), 2);
        assert!(
            runs[0].get("ratio").is_none() && runs[0].get("ratio_put").is_none(),
            "no ratio without a ceiling or a put: {r}"
        );
        assert_eq!(runs[1]["appenders"], 2);
        assert_eq!(runs[1]["in_flight"], 2);
        assert_eq!(runs[1]["rate"]["count"], 6);
        assert!(runs[0]["rate"]["latency"]["p99_ms"].as_f64().expect("p99") > 0.0);

        let r = json(
            &dfs(
                &t,
                &[
                    "bench",
                    "meta",
                    "--ops",
                    "20",
                    "--clients",
                    "4",
                    "--in-flight",
                    "3",
                    "--json",
                ],
                None,
            )
            .await,
        );
        let ops: Vec<&str> = r["meta"]
            .as_array()
            .expect("meta runs")
            .iter()
            .filter_map(|m| m["op"].as_str())
            .collect();
        assert_eq!(ops, ["mkdir", "create", "rename", "stat"]);
        assert_eq!(r["meta"][0]["in_flight"], 3);

        // Held against the probe: each run's share of the append ceiling, and the
        // probe's files gone afterwards. (`ratio_put` needs a put in the same run,
        // which only the whole `dfs bench` makes: a unit test covers it.)
        let r = json(
            &dfs(
                &t,
                &[
                    "bench",
                    "append",
                    "--record",
                    "64KiB",
                    "--records",
                    "4",
                    "--appenders",
                    "1",
                    "--json",
                    "--ceiling-dir",
                    &s,
                    "--ceiling-size",
                    "12MiB",
                    "--rest",
                    "0s",
                ],
                None,
            )
            .await,
        );
        let a = &r["append"][0];
        assert!(number(a, "ratio") > 0.0, "{r}");
        assert!(
            (number(a, "ratio") * number(&r, "ceiling.append") - number(a, "rate.mib_per_s")).abs()
                < 1e-6 * number(a, "rate.mib_per_s"),
            "ratio = MiB/s over the append ceiling: {r}"
        );
        assert!(a.get("ratio_put").is_none(), "no put was measured: {r}");
        assert_eq!(
            std::fs::read_dir(&scratch).expect("dir").count(),
            0,
            "the probe's files are removed"
        );

        // Nothing is left behind in the cluster.
        let root = json(&dfs(&t, &["ls", "--json", "/"], None).await);
        assert_eq!(root.as_array().map(Vec::len), Some(0), "{root}");

        // The plain report names each part; bad usage is exit 2.
        let plain =
            ok(&dfs(&t, &["bench", "meta", "--ops", "4", "--clients", "2"], None).await).text();
        assert!(plain.contains("mkdir") && plain.contains("p99"), "{plain}");
        let bad = dfs(&t, &["bench", "small", "--concurrency", "0"], None).await;
        assert_eq!(bad.code, 2, "{}", bad.stderr);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_ceiling_needs_no_cluster() {
    bounded_for(Duration::from_secs(120), async {
        let dir = tempfile::tempdir().expect("dir");
        let t = dfs_testkit::verbs::Target {
            master: "127.0.0.1:1".into(),
            secret: String::new(),
        };
        let d = dir.path().to_string_lossy().to_string();
        let r = json(
            &dfs(
                &t,
                &[
                    "bench", "ceiling", "--dir", &d, "--size", "4MiB", "--rest", "0s", "--json",
                ],
                None,
            )
            .await,
        );
        assert!(number(&r, "ceiling.put") > 0.0, "{r}");
        assert_eq!(number(&r, "ceiling.bytes"), (4 << 20) as f64);
        let plain = ok(&dfs(
            &t,
            &[
                "bench", "ceiling", "--dir", &d, "--size", "4MiB", "--rest", "0s",
            ],
            None,
        )
        .await)
        .text();
        assert!(
            plain.contains("put ceiling = min(")
                && plain.contains("append ceiling = min(")
                && plain.contains("get ceiling = min("),
            "{plain}"
        );
        assert!(plain.contains("after 0 s at rest"), "{plain}");
        // A directory that is not there fails at once, before any rest (the
        // default is 20 s before each of six disk runs: this would time out).
        let missing = dfs(
            &t,
            &[
                "bench",
                "ceiling",
                "--dir",
                "/nonexistent/dfs",
                "--size",
                "1MiB",
            ],
            None,
        )
        .await;
        assert_eq!(missing.code, 1);
        assert_eq!(missing.stderr.lines().count(), 1, "{}", missing.stderr);
    })
    .await;
}

/// `dfs bench load` fills a stopped master's data dir; a master started on it serves
/// the files, and counts their chunks missing until `dfs bench holders` reports them
/// from chunkservers in name only. `/metrics` then estimates every structure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_load_and_holders_make_a_large_master_to_measure() {
    bounded_for(Duration::from_secs(180), async {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("master");
        let d = data.to_string_lossy().to_string();
        let nobody = dfs_testkit::verbs::Target {
            master: dfs_testkit::free_addr(),
            secret: dfs_client::ClusterSecret::generate().encode(),
        };
        let load = [
            "bench",
            "load",
            "--data",
            &d,
            "--files",
            "2500",
            "--per-dir",
            "1000",
        ];
        let r = json(&dfs(&nobody, &[&load[..], &["--json"]].concat(), None).await);
        assert_eq!(number(&r, "files"), 2500.0);
        assert_eq!(number(&r, "directories"), 4.0, "/bulk and three of 1000");
        let parts: Vec<&str> = r["footprint"]
            .as_array()
            .expect("footprint")
            .iter()
            .filter_map(|p| p["structure"].as_str())
            .collect();
        assert_eq!(
            parts,
            ["inodes", "directory_entries", "chunk_table", "attributes"]
        );
        dfs_testkit::verbs::failed_with(&dfs(&nobody, &load, None).await, "already exists");

        let secret = dfs_client::ClusterSecret::generate();
        let http = dfs_testkit::free_addr();
        let m = dfs_testkit::MasterProc::start(
            &data,
            &secret,
            &["--http", &http, "--safe-start", "1s", "--dead-after", "2s"],
        )
        .await;
        let t = dfs_testkit::verbs::Target {
            master: m.addr.clone(),
            secret: secret.encode(),
        };
        let status = || async { json(&dfs(&t, &["status", "--json"], None).await) };
        let s = status().await;
        assert_eq!(
            (number(&s, "files"), number(&s, "missing")),
            (2500.0, 2500.0)
        );
        let ls = json(&dfs(&t, &["ls", "--json", "/bulk/d000002"], None).await);
        assert_eq!(ls.as_array().map(Vec::len), Some(500));

        dfs_testkit::verbs::failed_with(
            &dfs(
                &t,
                &["bench", "holders", "--servers", "2", "--files", "2500"],
                None,
            )
            .await,
            "--replication 3 needs at least",
        );
        let holders = tokio::process::Command::new(dfs_testkit::dfs_bin())
            .args(["bench", "holders", "--servers", "5", "--files", "2500"])
            .args(["--heartbeat", "200ms", "--for", "60s"])
            .env("DFS_MASTER", &m.addr)
            .env("DFS_SECRET", secret.encode())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("holders");
        dfs_testkit::wait_until(Duration::from_secs(60), "every chunk reported", || async {
            let s = status().await;
            number(&s, "missing") == 0.0
                && number(&s, "under_replicated") == 0.0
                && s["chunkservers"].as_array().map(Vec::len) == Some(5)
        })
        .await;
        // They go on heartbeating once all have registered: past --dead-after,
        // every one is still alive and no chunk is missing.
        let reported = std::time::Instant::now();
        dfs_testkit::wait_until(
            Duration::from_secs(30),
            "heartbeats past --dead-after",
            || async {
                let s = status().await;
                let alive = s["chunkservers"]
                    .as_array()
                    .map(|a| a.iter().filter(|c| c["alive"] == true).count());
                alive == Some(5)
                    && number(&s, "missing") == 0.0
                    && reported.elapsed() > Duration::from_secs(3)
            },
        )
        .await;
        let (code, metrics) = dfs_testkit::http_get(&http, "/metrics").await;
        assert_eq!(code, 200);
        for part in [
            "inodes",
            "directory_entries",
            "chunk_table",
            "replica_locations",
        ] {
            let name = format!("dfs_master_memory_bytes{{structure=\"{part}\"}}");
            let bytes = dfs_testkit::metric_sample(&metrics, &name)
                .unwrap_or_else(|| panic!("no {name} in {metrics}"));
            // Each is at least its entries' own bytes, 2500 of them: 16 or more
            // each, but for a directory entry, coded in at least 4 (a shared
            // length, a suffix length, a byte of suffix, a number's distance).
            let least = if part == "directory_entries" {
                4.0
            } else {
                16.0
            };
            assert!(bytes >= 2500.0 * least, "{part}: {bytes}");
        }
        drop(holders);
    })
    .await;
}
