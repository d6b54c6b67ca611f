//! The workloads `dfs bench` runs against a cluster, all under one scratch
//! directory (`/.dfs-bench/<id>`) that is removed at the end.

use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dfs_client::{AppendOptions, Client, ClientError, PutOptions};
use futures::StreamExt;
use serde::Serialize;
use tokio::io::{AsyncRead, ReadBuf};

use super::process;
use super::stats::{mib_per_s, per_s, Latency, Samples};

/// Longest a workload waits for the deletions of the one before.
const SETTLE: Duration = Duration::from_secs(60);

/// One large transfer.
#[derive(Debug, Clone, Serialize)]
pub struct Transfer {
    pub bytes: u64,
    pub seconds: f64,
    pub mib_per_s: f64,
    /// This client's CPU time (user and system) per MiB moved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cpu_ms_per_mib: Option<f64>,
}

/// Many operations of one kind: rate and latency.
#[derive(Debug, Clone, Serialize)]
pub struct Rate {
    pub count: u64,
    pub seconds: f64,
    pub per_s: f64,
    pub mib_per_s: f64,
    pub latency: Latency,
    /// With `--runs` above 1: `per_s` of every run in order (this is the median one).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SmallFiles {
    pub files: u64,
    pub size: u64,
    pub concurrency: u32,
    pub put: Rate,
    pub get: Rate,
}

#[derive(Debug, Clone, Serialize)]
pub struct AppendRun {
    pub appenders: u32,
    /// Records each appender kept in flight.
    pub in_flight: u32,
    pub record: u64,
    pub rate: Rate,
    /// With the ceiling probed: this run's MiB/s over the append ceiling (three
    /// writers in step, synced every batch) of the probe before it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    /// When the same `dfs bench` measured a put: MiB/s over the put's (the median
    /// run's), the ratio issue targets for one appender are stated in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_put: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MetaRun {
    pub op: &'static str,
    /// Operations each client kept in flight, on its one connection to the master.
    pub in_flight: u32,
    pub clients: u32,
    pub rate: Rate,
}

/// A scratch directory on the cluster for one `dfs bench` run.
#[derive(Debug)]
pub struct Bench {
    client: Client,
    root: String,
}

impl Bench {
    pub async fn new(client: &Client) -> Result<Bench, ClientError> {
        let root = format!("/.dfs-bench/{}", uuid::Uuid::new_v4().simple());
        client.mkdir(&root, true).await?;
        Ok(Bench {
            client: client.clone(),
            root,
        })
    }

    pub fn root(&self) -> &str {
        &self.root
    }

    /// Removes everything the run made (not through the trash), and the parent
    /// when no other run uses it.
    pub async fn cleanup(&self) -> Result<(), ClientError> {
        self.client.remove(&self.root, true, true).await?;
        let _ = self.client.remove("/.dfs-bench", false, true).await;
        Ok(())
    }

    fn path(&self, name: &str) -> String {
        format!("{}/{name}", self.root)
    }

    /// Run `run`'s large file, `bytes` long, streamed from memory (a few packets at
    /// a time).
    pub async fn put(&self, bytes: u64, run: u32) -> Result<Transfer, ClientError> {
        let (start, cpu) = (Instant::now(), process::cpu_time());
        let stored = self
            .client
            .put(
                &self.path(&format!("big-{run}")),
                Pattern::new(bytes),
                force(),
            )
            .await?;
        Ok(transfer(stored, start.elapsed(), cpu))
    }

    /// The file `put` stored for run `run`, read into nothing.
    pub async fn get(&self, run: u32) -> Result<Transfer, ClientError> {
        let (start, cpu) = (Instant::now(), process::cpu_time());
        let got = self
            .client
            .get(&self.path(&format!("big-{run}")), tokio::io::sink())
            .await?;
        Ok(transfer(got, start.elapsed(), cpu))
    }

    /// Removes run `run`'s large file, so that runs do not pile up on the disks,
    /// and waits for the chunkservers to delete its chunks: deleting 1 GiB of
    /// replicas while the next workload runs made its appends' batches up to five
    /// times slower for a second (docs/benchmarks.md).
    pub async fn drop_large(&self, run: u32) -> Result<(), ClientError> {
        self.client
            .remove(&self.path(&format!("big-{run}")), false, true)
            .await?;
        self.settle().await
    }

    /// Waits until the master holds no garbage replicas (up to [`SETTLE`]; a
    /// cluster that takes longer is measured as it is).
    pub async fn settle(&self) -> Result<(), ClientError> {
        let until = Instant::now() + SETTLE;
        while self.client.status().await?.garbage > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// `files` files of `size` bytes, `concurrency` at a time, stored and read back;
    /// each run in a directory of its own, so that no run overwrites another's.
    pub async fn small(
        &self,
        files: u64,
        size: u64,
        concurrency: u32,
        run: u32,
    ) -> Result<SmallFiles, ClientError> {
        let dir = format!("small-{run}");
        self.client.mkdir(&self.path(&dir), true).await?;
        let c = concurrency.max(1) as usize;
        let put = self
            .many(files, c, |i| {
                let (client, path) = (self.client.clone(), self.path(&format!("{dir}/{i}")));
                async move {
                    client.put(&path, Pattern::new(size), force()).await?;
                    Ok(size)
                }
            })
            .await?;
        let get = self
            .many(files, c, |i| {
                let (client, path) = (self.client.clone(), self.path(&format!("{dir}/{i}")));
                async move { client.get(&path, tokio::io::sink()).await }
            })
            .await?;
        Ok(SmallFiles {
            files,
            size,
            concurrency,
            put,
            get,
        })
    }

    /// For each count in `appenders`: that many clients append `records` records of
    /// `record` bytes each to one new file, `in_flight(appenders)` records at once
    /// per client.
    pub async fn append(
        &self,
        appenders: &[u32],
        record: u64,
        records: u64,
        in_flight: impl Fn(u32) -> u32,
        run: u32,
        rest: Duration,
    ) -> Result<Vec<AppendRun>, ClientError> {
        let mut out = Vec::new();
        let body = Bytes::from(vec![0x5a; usize::try_from(record).unwrap_or(1 << 20)]);
        for &n in appenders {
            let in_flight = in_flight(n);
            let path = self.path(&format!("append-{n}-{run}"));
            // Started from rest as the put they are compared with (`dfs bench --rest`).
            tokio::time::sleep(rest).await;
            let start = Instant::now();
            let runs = (0..n.max(1)).map(|_| {
                // A client of its own per appender: its own connections and lease.
                let client = self.client.reconfigured(|_| {});
                let (path, body) = (path.clone(), body.clone());
                async move {
                    let (samples, _) = timed(records, in_flight as usize, |_| {
                        let (client, path, body) = (&client, &path, body.clone());
                        async move {
                            client
                                .append_record(path, body, AppendOptions::default())
                                .await
                                .map(|_| 0)
                        }
                    })
                    .await?;
                    Ok::<_, ClientError>(samples)
                }
            });
            let mut samples = Samples::default();
            for r in futures::future::join_all(runs).await {
                samples.extend(r?);
            }
            out.push(AppendRun {
                appenders: n,
                in_flight,
                record,
                rate: rate(samples, record, start.elapsed()),
                ratio: None,
                ratio_put: None,
            });
        }
        Ok(out)
    }

    /// `ops` of each metadata operation (mkdir, create, rename, stat), spread over
    /// `clients` clients, in a new directory for each run.
    pub async fn meta(
        &self,
        ops: u64,
        clients: u32,
        in_flight: u32,
        run: u32,
    ) -> Result<Vec<MetaRun>, ClientError> {
        let dir = self.path(&format!("meta-{run}"));
        self.client.mkdir(&dir, true).await?;
        let pool: Vec<Client> = (0..clients.max(1))
            .map(|_| self.client.reconfigured(|_| {}))
            .collect();
        let c = pool.len();
        // Each client dials and authenticates on its first call: done here, so the
        // first operation's figure is not also the cost of 32 handshakes.
        futures::future::try_join_all(pool.iter().map(|client| client.stat(&dir))).await?;
        let mut out = Vec::new();
        for op in ["mkdir", "create", "rename", "stat"] {
            let rate = self
                .many(ops, c * in_flight.max(1) as usize, |i| {
                    let client = pool[(i as usize) % c].clone();
                    let dir = dir.clone();
                    async move {
                        match op {
                            "mkdir" => client.mkdir(&format!("{dir}/d{i}"), false).await?,
                            "create" => client.touch(&format!("{dir}/f{i}")).await?,
                            "rename" => {
                                client
                                    .rename(&format!("{dir}/f{i}"), &format!("{dir}/g{i}"))
                                    .await?
                            }
                            _ => {
                                client.stat(&format!("{dir}/g{i}")).await?;
                            }
                        }
                        Ok(0)
                    }
                })
                .await?;
            out.push(MetaRun {
                op,
                clients: clients.max(1),
                in_flight: in_flight.max(1),
                rate,
            });
        }
        Ok(out)
    }

    /// Runs `n` operations, `concurrency` at once, timing each; an operation
    /// returns the bytes it moved.
    async fn many<F, Fut>(&self, n: u64, concurrency: usize, op: F) -> Result<Rate, ClientError>
    where
        F: Fn(u64) -> Fut,
        Fut: std::future::Future<Output = Result<u64, ClientError>>,
    {
        let start = Instant::now();
        let (samples, bytes) = timed(n, concurrency, op).await?;
        let elapsed = start.elapsed();
        let count = samples.len() as u64;
        Ok(Rate {
            count,
            seconds: elapsed.as_secs_f64(),
            per_s: per_s(count, elapsed),
            mib_per_s: mib_per_s(bytes, elapsed),
            latency: samples.latency(),
            runs: Vec::new(),
        })
    }
}

/// Runs operations `0..n`, `concurrency` at once; each one's latency, and the bytes
/// they say they moved.
async fn timed<F, Fut>(n: u64, concurrency: usize, op: F) -> Result<(Samples, u64), ClientError>
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = Result<u64, ClientError>>,
{
    let mut results = futures::stream::iter((0..n).map(|i| {
        let fut = op(i);
        async move {
            let t = Instant::now();
            fut.await.map(|b| (b, t.elapsed()))
        }
    }))
    .buffer_unordered(concurrency.max(1));
    let mut samples = Samples::default();
    let mut bytes = 0u64;
    while let Some(r) = results.next().await {
        let (b, d) = r?;
        bytes += b;
        samples.add(d);
    }
    Ok((samples, bytes))
}

fn force() -> PutOptions {
    PutOptions {
        replication: None,
        overwrite: true,
    }
}

/// A transfer's figures; `cpu_before` is this process's CPU time when it began.
fn transfer(bytes: u64, elapsed: Duration, cpu_before: Option<Duration>) -> Transfer {
    let mib = bytes as f64 / (1024.0 * 1024.0);
    let cpu = cpu_before
        .zip(process::cpu_time())
        .map(|(a, b)| b.saturating_sub(a));
    Transfer {
        bytes,
        seconds: elapsed.as_secs_f64(),
        mib_per_s: mib_per_s(bytes, elapsed),
        client_cpu_ms_per_mib: cpu
            .filter(|_| mib > 0.0)
            .map(|c| c.as_secs_f64() * 1000.0 / mib),
    }
}

fn rate(samples: Samples, each: u64, elapsed: Duration) -> Rate {
    let count = samples.len() as u64;
    Rate {
        count,
        seconds: elapsed.as_secs_f64(),
        per_s: per_s(count, elapsed),
        mib_per_s: mib_per_s(count.saturating_mul(each), elapsed),
        latency: samples.latency(),
        runs: Vec::new(),
    }
}

/// `len` bytes of a fixed pattern, produced as read: no file, bounded memory.
#[derive(Debug)]
pub struct Pattern {
    left: u64,
    block: Bytes,
    at: usize,
}

impl Pattern {
    pub fn new(len: u64) -> Pattern {
        // Made once per process and shared: the small-file workload makes a pattern per
        // file, and generating a MiB each time cost the client more than its transfers.
        static BLOCK: OnceLock<Bytes> = OnceLock::new();
        let block = BLOCK.get_or_init(|| {
            let mut x: u64 = 0x2545_f491_4f6c_dd1d;
            let mut block = Vec::with_capacity(1 << 20);
            for _ in 0..(1 << 20) / 8 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                block.extend_from_slice(&x.to_le_bytes());
            }
            Bytes::from(block)
        });
        Pattern {
            left: len,
            block: block.clone(),
            at: 0,
        }
    }
}

impl AsyncRead for Pattern {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let room = buf.remaining().min(this.block.len() - this.at);
        let n = (room as u64).min(this.left) as usize;
        buf.put_slice(&this.block[this.at..this.at + n]);
        this.at = (this.at + n) % this.block.len();
        this.left -= n as u64;
        Poll::Ready(Ok(()))
    }
}
