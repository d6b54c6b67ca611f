//! `dfs bench`: runs the workloads the user named (all when none) against the
//! cluster, and the ceiling probe when asked, then prints one report: lines for a
//! person, or one JSON object with a key per part.

use std::path::Path;

use dfs_cli::bench::ceiling::{self, Ceiling};
use dfs_cli::bench::workloads::{AppendRun, Bench, MetaRun, Rate, SmallFiles, Transfer};
use dfs_client::Client;
use serde::Serialize;

use crate::args::{bench_defaults as D, BenchCommand};

/// Everything one run measured; absent parts are left out of the JSON.
#[derive(Debug, Default, Serialize)]
struct Report {
    #[serde(skip_serializing_if = "Option::is_none")]
    ceiling: Option<Ceiling>,
    #[serde(skip_serializing_if = "Option::is_none")]
    put: Option<WithRatio<Transfer>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    get: Option<WithRatio<Transfer>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    small: Option<SmallFiles>,
    #[serde(skip_serializing_if = "Option::is_none")]
    append: Option<Vec<AppendRun>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    meta: Option<Vec<MetaRun>>,
    /// This client's peak resident memory over the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    client_max_rss_bytes: Option<u64>,
}

/// A figure and, when the ceiling was measured, its share of it.
#[derive(Debug, Serialize)]
struct WithRatio<T> {
    #[serde(flatten)]
    figure: T,
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio: Option<f64>,
}

/// `dfs bench ceiling`: no cluster involved.
pub(crate) async fn ceiling_only(dir: &Path, size: u64, json: bool) -> anyhow::Result<()> {
    let report = Report {
        ceiling: Some(ceiling::probe(dir, size).await?),
        ..Default::default()
    };
    print(&report, json)
}

pub(crate) async fn bench(
    client: &Client,
    what: Option<BenchCommand>,
    json: bool,
    ceiling: Option<(&Path, u64)>,
) -> anyhow::Result<()> {
    if let Some(BenchCommand::Ceiling { dir, size }) = &what {
        return ceiling_only(dir, *size, json).await;
    }
    let mut report = Report::default();
    if let Some((dir, size)) = ceiling {
        report.ceiling = Some(ceiling::probe(dir, size).await?);
    }
    let bench = Bench::new(client).await?;
    let result = run(&bench, what, &mut report).await;
    let cleaned = bench.cleanup().await;
    result?;
    cleaned?;
    report.client_max_rss_bytes = dfs_cli::bench::process::max_rss();
    print(&report, json)
}

async fn run(bench: &Bench, what: Option<BenchCommand>, report: &mut Report) -> anyhow::Result<()> {
    let all = what.is_none();
    let ratio = |mib: f64, ceiling: Option<f64>| ceiling.filter(|c| *c > 0.0).map(|c| mib / c);
    let put_ceiling = report.ceiling.as_ref().map(|c| c.put);
    let get_ceiling = report.ceiling.as_ref().map(|c| c.get);
    let large = match &what {
        Some(BenchCommand::Put { size }) | Some(BenchCommand::Get { size }) => Some(*size),
        None => Some(1 << 30),
        _ => None,
    };
    if let Some(size) = large {
        let put = bench.put(size).await?;
        if !matches!(what, Some(BenchCommand::Get { .. })) {
            report.put = Some(WithRatio {
                ratio: ratio(put.mib_per_s, put_ceiling),
                figure: put,
            });
        }
        if all || matches!(what, Some(BenchCommand::Get { .. })) {
            let get = bench.get().await?;
            report.get = Some(WithRatio {
                ratio: ratio(get.mib_per_s, get_ceiling),
                figure: get,
            });
        }
    }
    match what {
        Some(BenchCommand::Small {
            files,
            size,
            concurrency,
        }) => report.small = Some(bench.small(files, size, concurrency).await?),
        None => {
            report.small = Some(
                bench
                    .small(D::SMALL_FILES, D::SMALL_SIZE, D::SMALL_CONCURRENCY)
                    .await?,
            )
        }
        _ => {}
    }
    match &what {
        Some(BenchCommand::Append {
            record,
            records,
            appenders,
            in_flight,
        }) => {
            report.append = Some(
                bench
                    .append(appenders, *record, *records, *in_flight)
                    .await?,
            )
        }
        None => {
            report.append = Some(
                bench
                    .append(
                        &D::APPENDERS,
                        D::APPEND_RECORD,
                        D::APPEND_RECORDS,
                        D::APPEND_IN_FLIGHT,
                    )
                    .await?,
            )
        }
        _ => {}
    }
    match what {
        Some(BenchCommand::Meta {
            ops,
            clients,
            in_flight,
        }) => report.meta = Some(bench.meta(ops, clients, in_flight).await?),
        None => {
            report.meta = Some(
                bench
                    .meta(D::META_OPS, D::META_CLIENTS, D::META_IN_FLIGHT)
                    .await?,
            )
        }
        _ => {}
    }
    Ok(())
}

fn print(report: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        return super::print_json(&serde_json::to_value(report)?);
    }
    let mut out = String::new();
    if let Some(c) = &report.ceiling {
        out.push_str(&format!(
            "ceiling   disk write {:.0} MiB/s (1 writer), {:.0} MiB/s of user data (3 writers), {:.0} (3 x {} writers); cold read {:.0} MiB/s (1 reader), {:.0} (4 readers); loopback {:.0} MiB/s; blake3 {:.0} MiB/s per core ({} cores)\n",
            c.disk_write_one, c.disk_write_three, c.disk_write_deep, c.disk_write_depth, c.disk_read_cold, c.disk_read_cold_parallel, c.loopback, c.blake3_one_core, c.cores
        ));
        out.push_str(&c.explain());
    }
    let transfer = |name: &str, t: &WithRatio<Transfer>| {
        let ratio = t
            .ratio
            .map(|r| format!(" ({:.0}% of the ceiling)", r * 100.0))
            .unwrap_or_default();
        let cpu = t
            .figure
            .client_cpu_ms_per_mib
            .map(|c| format!(", client CPU {c:.2} ms/MiB"))
            .unwrap_or_default();
        format!(
            "{name:<9} {:.1} MiB/s, {} bytes in {:.2} s{ratio}{cpu}\n",
            t.figure.mib_per_s, t.figure.bytes, t.figure.seconds
        )
    };
    if let Some(p) = &report.put {
        out.push_str(&transfer("put", p));
    }
    if let Some(g) = &report.get {
        out.push_str(&transfer("get", g));
    }
    let rate = |r: &Rate, unit: &str| {
        let mib = if r.mib_per_s > 0.0 {
            format!(" ({:.1} MiB/s)", r.mib_per_s)
        } else {
            String::new()
        };
        format!(
            "{:.0} {unit}/s{mib}, p50 {:.1} ms, p99 {:.1} ms",
            r.per_s, r.latency.p50_ms, r.latency.p99_ms
        )
    };
    if let Some(s) = &report.small {
        out.push_str(&format!(
            "small     {} files of {} bytes, {} at once: put {}; get {}\n",
            s.files,
            s.size,
            s.concurrency,
            rate(&s.put, "files"),
            rate(&s.get, "files")
        ));
    }
    for a in report.append.iter().flatten() {
        out.push_str(&format!(
            "append    {:>2} appenders, {}-byte records, {} in flight each: {}\n",
            a.appenders,
            a.record,
            a.in_flight,
            rate(&a.rate, "records")
        ));
    }
    for m in report.meta.iter().flatten() {
        out.push_str(&format!(
            "meta      {:<6} {} clients, {} in flight each: {}\n",
            m.op,
            m.clients,
            m.in_flight,
            rate(&m.rate, "ops")
        ));
    }
    if let Some(rss) = report.client_max_rss_bytes {
        out.push_str(&format!(
            "client    peak memory {:.1} MiB\n",
            rss as f64 / (1024.0 * 1024.0)
        ));
    }
    super::print_text(&out)
}
