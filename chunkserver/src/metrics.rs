//! A chunkserver's Prometheus metrics: requests and latency by type, payload bytes
//! in and out on its port, chunk copies, damage found, and (refreshed at each
//! scrape) its disk, chunk and stream figures. Served at `/metrics` with `--http`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::ctx::Ctx;

type Labels = Vec<(&'static str, &'static str)>;

#[derive(Debug)]
pub struct ChunkserverMetrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    latency: Family<Labels, Histogram>,
    bytes_in: Counter,
    bytes_out: Counter,
    copied: Counter,
    damaged: Counter,
    capacity: Gauge,
    used: Gauge,
    pack: Gauge,
    chunks: Gauge,
    streams: Gauge,
    load: Gauge,
    append_batches: Histogram,
}

impl Default for ChunkserverMetrics {
    fn default() -> Self {
        ChunkserverMetrics::new()
    }
}

impl ChunkserverMetrics {
    pub fn new() -> ChunkserverMetrics {
        let mut registry = Registry::with_prefix("dfs_chunkserver");
        let m = ChunkserverMetrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.00005, 2.5, 16))
            }),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            copied: Counter::default(),
            damaged: Counter::default(),
            capacity: Gauge::default(),
            used: Gauge::default(),
            pack: Gauge::default(),
            chunks: Gauge::default(),
            streams: Gauge::default(),
            load: Gauge::default(),
            append_batches: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "Requests served, by type (op)",
            m.requests.clone(),
        );
        registry.register(
            "request_seconds",
            "Time to serve a request, by type (op), streamed data included",
            m.latency.clone(),
        );
        registry.register(
            "received_bytes",
            "Chunk data received on this server's port (writes, appends, forwarded records)",
            m.bytes_in.clone(),
        );
        registry.register(
            "sent_bytes",
            "Chunk data sent from this server's port (reads)",
            m.bytes_out.clone(),
        );
        registry.register(
            "copied_bytes",
            "Chunk data pulled from other replicas (repair, balancing, server-side copies)",
            m.copied.clone(),
        );
        registry.register(
            "damaged_replicas",
            "Replicas found damaged by reads or the scrubber, and quarantined",
            m.damaged.clone(),
        );
        registry.register(
            "capacity_bytes",
            "Bytes this server may store",
            m.capacity.clone(),
        );
        registry.register("used_bytes", "Bytes this server stores", m.used.clone());
        registry.register(
            "pack_bytes",
            "Bytes in pack files (small chunks, with --pack-below), dead records included",
            m.pack.clone(),
        );
        registry.register("chunks", "Replicas this server holds", m.chunks.clone());
        registry.register(
            "streams_active",
            "Reads, writes and appends being streamed now",
            m.streams.clone(),
        );
        registry.register("load", "Requests being served now", m.load.clone());
        registry.register(
            "append_batch_records",
            "Records per append batch this server wrote as primary (records that share one write and fsync)",
            m.append_batches.clone(),
        );
        ChunkserverMetrics { registry, ..m }
    }

    /// One request of type `op`, served in `took`, which moved `bytes_in` and
    /// `bytes_out` of chunk data.
    pub fn request(&self, op: &'static str, took: Duration, bytes_in: u64, bytes_out: u64) {
        let labels = vec![("op", op)];
        self.requests.get_or_create(&labels).inc();
        self.latency
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        self.bytes_in.inc_by(bytes_in);
        self.bytes_out.inc_by(bytes_out);
    }

    /// Where the primary of a lease counts its batches.
    pub fn append_batches(&self) -> Histogram {
        self.append_batches.clone()
    }

    pub fn copied(&self, bytes: u64) {
        self.copied.inc_by(bytes);
    }

    pub fn damaged(&self) {
        self.damaged.inc();
    }

    fn refresh(&self, ctx: &Ctx) {
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.capacity.set(as_i64(ctx.store.capacity()));
        self.used.set(as_i64(ctx.store.used()));
        self.pack.set(as_i64(ctx.store.pack_bytes()));
        self.chunks.set(as_i64(ctx.store.len() as u64));
        let free = ctx.streams.available_permits();
        self.streams
            .set(as_i64(ctx.config.max_streams.saturating_sub(free) as u64));
        self.load.set(i64::from(ctx.busy.load(Ordering::Relaxed)));
    }
}

/// Serves `/metrics` on `listener` until `stop`.
pub async fn serve(ctx: Arc<Ctx>, listener: TcpListener, stop: CancellationToken) {
    tracing::info!(addr = ?listener.local_addr().ok(), "/metrics listening");
    let handler: dfs_web::Handler = Arc::new(move |request: dfs_web::Request| {
        let ctx = ctx.clone();
        Box::pin(async move {
            match request.path.as_str() {
                "/metrics" => {
                    ctx.metrics.refresh(&ctx);
                    dfs_web::metrics::scrape(&ctx.metrics.registry)
                }
                _ => dfs_web::Reply::not_found(),
            }
        })
    });
    dfs_web::serve(listener, handler, stop).await;
}
