//! `dfs bench`: runs the workloads the user named (all when none) against the
//! cluster, and the ceiling probe when asked, then prints one report: lines for a
//! person, or one JSON object with a key per part.

use std::path::Path;
use std::time::Duration;

use dfs_cli::bench::ceiling::{self, Ceiling};
use dfs_cli::bench::stats::{median, median_run};
use dfs_cli::bench::workloads::{AppendRun, Bench, MetaRun, Rate, SmallFiles, Transfer};
use dfs_client::Client;
use serde::Serialize;

use crate::args::{bench_defaults as D, BenchCommand};

/// Everything one run measured; absent parts are left out of the JSON.
#[derive(Debug, Default, Serialize)]
struct Report {
    /// The first probe (the only one unless `--runs` is above 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    ceiling: Option<Ceiling>,
    /// With `--runs` above 1: every probe, one before each run's put and get.
    #[serde(skip_serializing_if = "Option::is_none")]
    ceilings: Option<Vec<Ceiling>>,
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

/// A figure (the median run's) and, when the ceiling was measured, its share of it.
#[derive(Debug, Serialize)]
struct WithRatio<T> {
    #[serde(flatten)]
    figure: T,
    /// The median over runs of each run's figure over the ceiling probed just
    /// before it.
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio: Option<f64>,
    /// Put only: the same against the ceiling of three writers alone
    /// (`put_three`), as issue targets are stated.
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio_three: Option<f64>,
    /// With `--runs` above 1: every run in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    runs: Vec<RunFigure>,
}

/// One run of a large transfer.
#[derive(Debug, Serialize)]
struct RunFigure {
    mib_per_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio_three: Option<f64>,
}

/// Where and how the ceilings are probed (`--ceiling-dir`, `--ceiling-size`,
/// `--rest`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProbeAt<'a> {
    pub(crate) dir: &'a Path,
    pub(crate) bytes: u64,
    pub(crate) rest: Duration,
}

/// `dfs bench ceiling`: no cluster involved.
pub(crate) async fn ceiling_only(
    dir: &Path,
    size: u64,
    rest: Duration,
    json: bool,
) -> anyhow::Result<()> {
    let report = Report {
        ceiling: Some(ceiling::probe(dir, size, rest).await?),
        ..Default::default()
    };
    print(&report, json)
}

/// `dfs bench holders`: `servers` chunkservers in name only, reporting the chunks of
/// `files` files of `dfs bench load`, until Ctrl-C or `run_for`.
pub(crate) async fn holders(
    master: &str,
    secret_file: Option<&Path>,
    (servers, files, replication, file_size): (u64, u64, u64, u64),
    heartbeat: std::time::Duration,
    run_for: Option<std::time::Duration>,
) -> anyhow::Result<()> {
    if replication > servers {
        anyhow::bail!("--replication {replication} needs at least as many --servers ({servers})");
    }
    let config = dfs_cli::config::Config::default();
    let secret = dfs_cli::credentials::server_secret(secret_file, &config)?.ok_or_else(|| {
        anyhow::anyhow!("no cluster secret: set $DFS_SECRET or pass --secret-file")
    })?;
    let stop = tokio_util::sync::CancellationToken::new();
    let started = std::time::Instant::now();
    let stopper = {
        let stop = stop.clone();
        async move {
            match run_for {
                Some(d) => tokio::time::sleep(d).await,
                None => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
            stop.cancel();
        }
    };
    let share = dfs_cli::bench::holders::Share {
        servers,
        files,
        replication,
        file_size,
    };
    // What a full report each heartbeat would cost, against incremental ones.
    match dfs_cli::bench::holders::wire_bytes(0, share) {
        Ok((register, beat)) => {
            let per_s = heartbeat.as_secs_f64().max(0.001);
            eprintln!(
                "holder 0: registration (a full report) {register} bytes, idle heartbeat {beat} bytes; \
                 {servers} servers each {:.1} s: {:.1} MB/s as full reports, {:.1} KB/s as incremental ones",
                heartbeat.as_secs_f64(),
                (register as f64) * (servers as f64) / per_s / 1e6,
                (beat as f64) * (servers as f64) / per_s / 1e3,
            );
        }
        Err(e) => eprintln!("holder 0: its report does not fit one frame ({e}); it goes in pieces"),
    }
    let run = dfs_cli::bench::holders::run(master, &secret, share, heartbeat, stop.clone(), || {
        eprintln!(
                "{servers} holders registered with {master} in {:.1} s, reporting {} replicas of {files} chunks",
                started.elapsed().as_secs_f64(),
                files.saturating_mul(replication)
            )
    });
    tokio::pin!(run);
    tokio::select! {
        r = &mut run => r?,
        _ = stopper => {
            // The holders stop on the token; wait for every one of them.
            stop.cancel();
            run.await?;
        }
    }
    Ok(())
}

/// `dfs bench load`: files written into a stopped master's data dir, then the
/// master's estimate of its memory per structure.
pub(crate) async fn load(
    data: std::path::PathBuf,
    files: u64,
    per_dir: u64,
    file_size: u64,
    replication: u32,
    json: bool,
) -> anyhow::Result<()> {
    let quiet = json;
    let report = tokio::task::spawn_blocking(move || {
        dfs_cli::bench::load::load(&data, files, per_dir, file_size, replication, |n| {
            if !quiet {
                eprintln!("{n} files");
            }
        })
    })
    .await??;
    if json {
        return super::print_json(&serde_json::to_value(&report)?);
    }
    let mut out = format!(
        "loaded {} files in {} directories under /{} in {:.1} s ({:.0} files/s)
",
        report.files,
        report.directories,
        dfs_cli::bench::load::LOAD_DIR,
        report.seconds,
        report.files_per_s
    );
    for p in &report.footprint {
        out.push_str(&format!(
            "  {:<20} {:>12} bytes  {:>6.1} per file (estimated)\n",
            p.structure, p.bytes, p.bytes_per_file
        ));
    }
    super::print_text(&out)
}

pub(crate) async fn bench(
    client: &Client,
    what: Option<BenchCommand>,
    json: bool,
    ceiling: Option<ProbeAt<'_>>,
    runs: u32,
) -> anyhow::Result<()> {
    // `bench ceiling` needs no cluster: main sends it to `ceiling_only`.
    let mut report = Report::default();
    let bench = Bench::new(client).await?;
    let result = run(&bench, what, ceiling, runs.max(1), &mut report).await;
    let cleaned = bench.cleanup().await;
    result?;
    cleaned?;
    report.client_max_rss_bytes = dfs_cli::bench::process::max_rss();
    print(&report, json)
}

/// A large transfer's runs, each with its ratio to the ceiling probed before it:
/// the median run's figure, the median ratio, and every run when there were several.
fn large_result(runs: Vec<(Transfer, Ratios)>) -> Option<WithRatio<Transfer>> {
    let ratios: Vec<f64> = runs.iter().filter_map(|(_, r)| r.ceiling).collect();
    let threes: Vec<f64> = runs.iter().filter_map(|(_, r)| r.three).collect();
    let each: Vec<RunFigure> = runs
        .iter()
        .map(|(t, r)| RunFigure {
            mib_per_s: t.mib_per_s,
            ratio: r.ceiling,
            ratio_three: r.three,
        })
        .collect();
    let several = each.len() > 1;
    let ((figure, _), _) = median_run(runs, |(t, _)| t.mib_per_s)?;
    Some(WithRatio {
        figure,
        ratio: median(&ratios),
        ratio_three: median(&threes),
        runs: if several { each } else { Vec::new() },
    })
}

/// One run's figure over its ceilings, when they were probed.
#[derive(Debug, Clone, Copy, Default)]
struct Ratios {
    ceiling: Option<f64>,
    /// Put only: over the three-writer ceiling.
    three: Option<f64>,
}

/// The median of several runs of one rate, with every run's rate in it.
fn median_rate(rates: Vec<Rate>) -> Option<Rate> {
    let several = rates.len() > 1;
    let (mut rate, each) = median_run(rates, |r| r.per_s)?;
    if several {
        rate.runs = each;
    }
    Some(rate)
}

/// A part of a workload that measures several things at once (append with several
/// appender counts, meta with several operations), each part with its rate.
trait Part {
    fn rate(&self) -> &Rate;
    fn rate_mut(&mut self) -> &mut Rate;
}

impl Part for AppendRun {
    fn rate(&self) -> &Rate {
        &self.rate
    }
    fn rate_mut(&mut self) -> &mut Rate {
        &mut self.rate
    }
}

impl Part for MetaRun {
    fn rate(&self) -> &Rate {
        &self.rate
    }
    fn rate_mut(&mut self) -> &mut Rate {
        &mut self.rate
    }
}

/// Several runs of such a workload: the median run of each part.
fn median_parts<T: Part>(runs: Vec<Vec<T>>) -> Vec<T> {
    let parts = runs.first().map_or(0, Vec::len);
    let mut columns: Vec<Vec<T>> = (0..parts).map(|_| Vec::new()).collect();
    for run in runs {
        for (column, part) in columns.iter_mut().zip(run) {
            column.push(part);
        }
    }
    columns
        .into_iter()
        .filter_map(|column| {
            let several = column.len() > 1;
            let (mut part, each) = median_run(column, |p| p.rate().per_s)?;
            if several {
                part.rate_mut().runs = each;
            }
            Some(part)
        })
        .collect()
}

/// `mib` over `ceiling`, when there is one above zero.
fn ratio(mib: f64, ceiling: Option<f64>) -> Option<f64> {
    ceiling.filter(|c| *c > 0.0).map(|c| mib / c)
}

/// Several runs of the append workload: the median run of each appender count,
/// with that run's ratio to its ceiling, and its MiB/s over the put's when a put
/// (`put_mib`, the median run's) was measured too.
fn append_result(runs: Vec<Vec<AppendRun>>, put_mib: Option<f64>) -> Vec<AppendRun> {
    let mut medians = median_parts(runs);
    for part in &mut medians {
        part.ratio_put = ratio(part.rate.mib_per_s, put_mib);
    }
    medians
}

async fn run(
    bench: &Bench,
    what: Option<BenchCommand>,
    ceiling: Option<ProbeAt<'_>>,
    runs: u32,
    report: &mut Report,
) -> anyhow::Result<()> {
    let all = what.is_none();
    let large = match &what {
        Some(BenchCommand::Put { size }) | Some(BenchCommand::Get { size }) => Some(*size),
        None => Some(1 << 30),
        _ => None,
    };
    // Before a transfer held against the probe: as long at rest as each probe run.
    let rest = || async {
        if let Some(p) = ceiling {
            tokio::time::sleep(p.rest).await;
        }
    };
    let mut probes = Vec::new();
    match large {
        Some(size) => {
            let want_put = !matches!(what, Some(BenchCommand::Get { .. }));
            let want_get = all || matches!(what, Some(BenchCommand::Get { .. }));
            let (mut puts, mut gets) = (Vec::new(), Vec::new());
            for n in 0..runs {
                // Probed right before the transfers it is held against: this disk's
                // speed moves between minutes.
                let probe = match ceiling {
                    Some(p) => Some(ceiling::probe(p.dir, p.bytes, p.rest).await?),
                    None => None,
                };
                rest().await;
                let put = bench.put(size, n).await?;
                let put_ratio = Ratios {
                    ceiling: ratio(put.mib_per_s, probe.as_ref().map(|c| c.put)),
                    three: ratio(put.mib_per_s, probe.as_ref().map(|c| c.put_three)),
                };
                puts.push((put, put_ratio));
                if want_get {
                    rest().await;
                    let get = bench.get(n).await?;
                    let get_ratio = Ratios {
                        ceiling: ratio(get.mib_per_s, probe.as_ref().map(|c| c.get)),
                        three: None,
                    };
                    gets.push((get, get_ratio));
                }
                bench.drop_large(n).await?;
                probes.extend(probe);
            }
            if want_put {
                report.put = large_result(puts);
            }
            report.get = large_result(gets);
        }
        None => {
            if let Some(p) = ceiling {
                probes.push(ceiling::probe(p.dir, p.bytes, p.rest).await?);
            }
        }
    }
    // Appends run after every put and get: run n is held against probe n.
    let append_ceilings: Vec<f64> = probes.iter().map(|c| c.append).collect();
    report.ceiling = probes.first().cloned();
    if probes.len() > 1 {
        report.ceilings = Some(probes);
    }
    let small = match what {
        Some(BenchCommand::Small {
            files,
            size,
            concurrency,
        }) => Some((files, size, concurrency)),
        None => Some((D::SMALL_FILES, D::SMALL_SIZE, D::SMALL_CONCURRENCY)),
        _ => None,
    };
    if let Some((files, size, concurrency)) = small {
        let mut each = Vec::new();
        for n in 0..runs {
            // The large file's replicas were just deleted, and a file system
            // mounted with `discard` trims their blocks for seconds afterwards: a
            // run started at once ran at a third of its rate meanwhile.
            rest().await;
            each.push(bench.small(files, size, concurrency, n).await?);
        }
        let puts = each.iter().map(|s| s.put.clone()).collect();
        let gets = each.iter().map(|s| s.get.clone()).collect();
        report.small = match (median_rate(puts), median_rate(gets)) {
            (Some(put), Some(get)) => Some(SmallFiles {
                files,
                size,
                concurrency,
                put,
                get,
            }),
            _ => None,
        };
    }
    let append = match &what {
        Some(BenchCommand::Append {
            record,
            records,
            appenders,
            in_flight,
        }) => Some((appenders.clone(), *record, *records, *in_flight)),
        None => Some((
            D::APPENDERS.to_vec(),
            D::APPEND_RECORD,
            D::APPEND_RECORDS,
            None,
        )),
        _ => None,
    };
    if let Some((appenders, record, records, in_flight)) = append {
        let mut each = Vec::new();
        for n in 0..runs {
            let ceiling_now = append_ceilings
                .get(n as usize)
                .or(append_ceilings.last())
                .copied();
            let mut parts = bench
                .append(
                    &appenders,
                    record,
                    records,
                    |each| in_flight.unwrap_or_else(|| D::append_in_flight(each)),
                    n,
                    ceiling.map_or(Duration::ZERO, |p| p.rest),
                )
                .await?;
            for part in &mut parts {
                part.ratio = ratio(part.rate.mib_per_s, ceiling_now);
            }
            each.push(parts);
        }
        let put = report.put.as_ref().map(|p| p.figure.mib_per_s);
        report.append = Some(append_result(each, put));
    }
    let meta = match what {
        Some(BenchCommand::Meta {
            ops,
            clients,
            in_flight,
        }) => Some((ops, clients, in_flight)),
        None => Some((D::META_OPS, D::META_CLIENTS, D::META_IN_FLIGHT)),
        _ => None,
    };
    if let Some((ops, clients, in_flight)) = meta {
        let mut each = Vec::new();
        for n in 0..runs {
            each.push(bench.meta(ops, clients, in_flight, n).await?);
        }
        report.meta = Some(median_parts(each));
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
    if let Some(cs) = &report.ceilings {
        let puts: Vec<f64> = cs.iter().map(|c| c.put).collect();
        let gets: Vec<f64> = cs.iter().map(|c| c.get).collect();
        let appends: Vec<f64> = cs.iter().map(|c| c.append).collect();
        if let (Some(p), Some(g), Some(a)) = (spread(&puts), spread(&gets), spread(&appends)) {
            out.push_str(&format!(
                "ceilings  probed {} times, once before each run's transfers (the first is above): put {p} MiB/s, get {g} MiB/s, append {a} MiB/s; each ratio is the median of the runs' own (an append's, the median run's)\n",
                cs.len()
            ));
        }
    }
    let transfer = |name: &str, t: &WithRatio<Transfer>| {
        let ratio = match (t.ratio, t.ratio_three) {
            (Some(r), Some(three)) => format!(
                " ({:.0}% of the ceiling, {:.0}% of three writers')",
                r * 100.0,
                three * 100.0
            ),
            (Some(r), None) => format!(" ({:.0}% of the ceiling)", r * 100.0),
            _ => String::new(),
        };
        let cpu = t
            .figure
            .client_cpu_ms_per_mib
            .map(|c| format!(", client CPU {c:.2} ms/MiB"))
            .unwrap_or_default();
        let mibs: Vec<f64> = t.runs.iter().map(|r| r.mib_per_s).collect();
        let ratios: Vec<f64> = t.runs.iter().filter_map(|r| r.ratio).collect();
        let spread = match (spread(&mibs), spread(&ratios)) {
            (Some(m), Some(r)) => format!("; median of {}: {m} MiB/s, ratios {r}", mibs.len()),
            (Some(m), None) => format!("; median of {}: {m} MiB/s", mibs.len()),
            _ => String::new(),
        };
        format!(
            "{name:<9} {:.1} MiB/s, {} bytes in {:.2} s{ratio}{cpu}{spread}\n",
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
        let runs = spread(&r.runs)
            .map(|s| format!(" (median of {}: {s})", r.runs.len()))
            .unwrap_or_default();
        format!(
            "{:.0} {unit}/s{runs}{mib}, p50 {:.1} ms, p99 {:.1} ms",
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
        let ratios: Vec<String> = [
            a.ratio_put.map(|r| format!("{r:.2} x the put")),
            a.ratio
                .map(|r| format!("{:.0}% of the append ceiling", r * 100.0)),
        ]
        .into_iter()
        .flatten()
        .collect();
        let ratios = if ratios.is_empty() {
            String::new()
        } else {
            format!("; {}", ratios.join(", "))
        };
        out.push_str(&format!(
            "append    {:>2} appenders, {}-byte records, {} in flight each: {}{ratios}\n",
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

/// "low–high" of several runs' figures, or nothing for fewer than two.
fn spread(values: &[f64]) -> Option<String> {
    if values.len() < 2 {
        return None;
    }
    let low = values.iter().copied().fold(f64::INFINITY, f64::min);
    let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some(if high < 10.0 {
        format!("{low:.2}–{high:.2}")
    } else {
        format!("{low:.0}–{high:.0}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dfs_cli::bench::stats::Latency;

    fn part(appenders: u32, mib: f64, ratio: Option<f64>) -> AppendRun {
        AppendRun {
            appenders,
            in_flight: 16,
            record: 1 << 20,
            rate: Rate {
                count: 64,
                seconds: 64.0 / mib,
                per_s: mib,
                mib_per_s: mib,
                latency: Latency {
                    p50_ms: 1.0,
                    p99_ms: 2.0,
                    max_ms: 3.0,
                },
                runs: Vec::new(),
            },
            ratio,
            ratio_put: None,
        }
    }

    #[test]
    fn an_append_keeps_its_median_runs_ratio_and_is_held_against_the_put() {
        let runs = vec![
            vec![part(1, 90.0, Some(0.6)), part(4, 50.0, Some(0.3))],
            vec![part(1, 150.0, Some(0.9)), part(4, 70.0, Some(0.5))],
            vec![part(1, 120.0, Some(0.8)), part(4, 60.0, Some(0.4))],
        ];
        let got = append_result(runs, Some(200.0));
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].rate.mib_per_s, 120.0);
        assert_eq!(got[0].ratio, Some(0.8), "the median run's own ratio");
        assert_eq!(got[0].ratio_put, Some(0.6));
        assert_eq!(got[0].rate.runs, vec![90.0, 150.0, 120.0]);
        assert_eq!(got[1].ratio_put, Some(0.3));

        let alone = append_result(vec![vec![part(1, 80.0, None)]], None);
        assert_eq!((alone[0].ratio, alone[0].ratio_put), (None, None));
        assert!(alone[0].rate.runs.is_empty());
        let no_put = append_result(vec![vec![part(1, 80.0, None)]], Some(0.0));
        assert_eq!(no_put[0].ratio_put, None, "no ratio to a put of nothing");
    }
}
