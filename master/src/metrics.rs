//! The master's Prometheus metrics: requests and their latency by type, the
//! operation log's fsyncs and batches, and (refreshed at each scrape from the
//! cluster status) chunk health, queues and every chunkserver's figures.

use std::time::Duration;

use dfs_protocol::ClusterStatus;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Seconds from 50 µs to about 100 s.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.00005, 2.5, 16)
}

#[derive(Debug)]
pub struct MasterMetrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    latency: Family<Labels, Histogram>,
    fsync: Histogram,
    batch_records: Histogram,
    batch_bytes: Histogram,
    upkeep_rounds: Counter,
    upkeep_assessed: Counter,
    upkeep_held: Histogram,
    files: Gauge,
    chunks: Family<Labels, Gauge>,
    queue: Family<Labels, Gauge>,
    safe_mode: Gauge,
    reclaiming: Gauge,
    memory: Family<Labels, Gauge>,
    servers: Family<Labels, Gauge>,
    server_capacity: Family<Labels, Gauge>,
    server_used: Family<Labels, Gauge>,
    server_chunks: Family<Labels, Gauge>,
    server_load: Family<Labels, Gauge>,
    server_alive: Family<Labels, Gauge>,
    server_heartbeat_age: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

impl Default for MasterMetrics {
    fn default() -> Self {
        MasterMetrics::new()
    }
}

impl MasterMetrics {
    pub fn new() -> MasterMetrics {
        let mut registry = Registry::with_prefix("dfs_master");
        let requests = Family::<Labels, Counter>::default();
        let errors = Family::<Labels, Counter>::default();
        let latency =
            Family::<Labels, Histogram>::new_with_constructor(|| Histogram::new(latency_buckets()));
        let fsync = Histogram::new(latency_buckets());
        let batch_records = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        let batch_bytes = Histogram::new(exponential_buckets(64.0, 4.0, 12));
        registry.register(
            "requests",
            "Requests answered, by type (op)",
            requests.clone(),
        );
        registry.register(
            "request_errors",
            "Requests answered with an error, by type (op)",
            errors.clone(),
        );
        registry.register(
            "request_seconds",
            "Time to answer a request, by type (op), durability wait included",
            latency.clone(),
        );
        registry.register(
            "oplog_fsync_seconds",
            "Time of each operation-log group commit (write and fdatasync)",
            fsync.clone(),
        );
        registry.register(
            "oplog_batch_records",
            "Mutations made durable by one fsync",
            batch_records.clone(),
        );
        registry.register(
            "oplog_batch_bytes",
            "Bytes written to the operation log by one group commit",
            batch_bytes.clone(),
        );
        let upkeep_rounds = Counter::default();
        let upkeep_assessed = Counter::default();
        let upkeep_held = Histogram::new(latency_buckets());
        registry.register(
            "upkeep_lock_seconds",
            "How long each upkeep round held the master's state lock (requests wait meanwhile)",
            upkeep_held.clone(),
        );
        registry.register(
            "upkeep_rounds",
            "Rounds of replication upkeep (one a second outside safe mode)",
            upkeep_rounds.clone(),
        );
        registry.register(
            "upkeep_chunks_assessed",
            "Chunks upkeep looked at: those that changed, and a slice of the rolling review of every chunk",
            upkeep_assessed.clone(),
        );
        let metrics = MasterMetrics {
            registry,
            requests,
            errors,
            latency,
            fsync,
            batch_records,
            batch_bytes,
            upkeep_rounds,
            upkeep_assessed,
            upkeep_held,
            files: Gauge::default(),
            chunks: Family::default(),
            queue: Family::default(),
            safe_mode: Gauge::default(),
            reclaiming: Gauge::default(),
            memory: Family::default(),
            servers: Family::default(),
            server_capacity: Family::default(),
            server_used: Family::default(),
            server_chunks: Family::default(),
            server_load: Family::default(),
            server_alive: Family::default(),
            server_heartbeat_age: Family::default(),
        };
        metrics.register_gauges()
    }

    fn register_gauges(mut self) -> MasterMetrics {
        let r = &mut self.registry;
        r.register("files", "Files outside the trash", self.files.clone());
        r.register(
            "chunks",
            "Chunks by health (state): all, under_replicated, missing, over_replicated, garbage",
            self.chunks.clone(),
        );
        r.register(
            "replication_queue",
            "Repair and balancing work (kind): copying (under way), waiting (under-replicated chunks), trash entries",
            self.queue.clone(),
        );
        r.register(
            "safe_mode",
            "1 while the master waits for chunkservers to report after a start",
            self.safe_mode.clone(),
        );
        r.register(
            "removals_reclaiming",
            "Removed trees too large for one record, detached and still being reclaimed in the background",
            self.reclaiming.clone(),
        );
        r.register(
            "memory_bytes",
            "Estimated bytes held in memory, by structure (inodes, directory_entries, chunk_table, attributes, replica_locations, replicas_per_server); sled's cache and allocator overhead come on top",
            self.memory.clone(),
        );
        r.register(
            "chunkservers",
            "Chunkservers known, by state: alive, dead, decommissioning",
            self.servers.clone(),
        );
        r.register(
            "chunkserver_capacity_bytes",
            "Bytes each chunkserver may store, as its last heartbeat said",
            self.server_capacity.clone(),
        );
        r.register(
            "chunkserver_used_bytes",
            "Bytes each chunkserver stores, as its last heartbeat said",
            self.server_used.clone(),
        );
        r.register(
            "chunkserver_chunks",
            "Replicas each chunkserver holds",
            self.server_chunks.clone(),
        );
        r.register(
            "chunkserver_load",
            "Requests each chunkserver was serving at its last heartbeat (streams)",
            self.server_load.clone(),
        );
        r.register(
            "chunkserver_alive",
            "1 while a chunkserver's heartbeats arrive",
            self.server_alive.clone(),
        );
        r.register(
            "chunkserver_heartbeat_age_seconds",
            "Time since each chunkserver was last heard from",
            self.server_heartbeat_age.clone(),
        );
        self
    }

    /// One request of type `op` answered after `took`.
    pub fn request(&self, op: &'static str, took: Duration, failed: bool) {
        let labels = vec![("op", op.to_string())];
        self.requests.get_or_create(&labels).inc();
        if failed {
            self.errors.get_or_create(&labels).inc();
        }
        self.latency
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// One round of upkeep held the state lock for `held` (in safe mode too).
    pub fn upkeep_lock(&self, held: Duration) {
        self.upkeep_held.observe(held.as_secs_f64());
    }

    /// One round of replication upkeep that looked at `assessed` chunks.
    pub fn upkeep(&self, assessed: usize) {
        self.upkeep_rounds.inc();
        self.upkeep_assessed
            .inc_by(u64::try_from(assessed).unwrap_or(u64::MAX));
    }

    /// One group commit of the operation log.
    pub fn commit(&self, took: Duration, records: u64, bytes: u64) {
        self.fsync.observe(took.as_secs_f64());
        self.batch_records.observe(records as f64);
        self.batch_bytes.observe(bytes as f64);
    }

    /// The estimated bytes per in-memory structure.
    pub fn set_footprint(&self, parts: &[crate::footprint::Part]) {
        for p in parts {
            self.memory
                .get_or_create(&vec![("structure", p.structure.to_string())])
                .set(i64::try_from(p.bytes).unwrap_or(i64::MAX));
        }
    }

    /// Removed trees still being reclaimed in the background.
    pub fn set_reclaiming(&self, trees: usize) {
        self.reclaiming
            .set(i64::try_from(trees).unwrap_or(i64::MAX));
    }

    /// Sets the gauges from the cluster's status; `ages` are the heartbeat ages by address.
    pub fn refresh(&self, status: &ClusterStatus, ages: &[(String, Duration)]) {
        let set = |family: &Family<Labels, Gauge>, key: &'static str, value: &str, v: u64| {
            family
                .get_or_create(&vec![(key, value.to_string())])
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        self.files
            .set(i64::try_from(status.files).unwrap_or(i64::MAX));
        set(&self.chunks, "state", "all", status.chunks);
        set(
            &self.chunks,
            "state",
            "under_replicated",
            status.under_replicated,
        );
        set(&self.chunks, "state", "missing", status.missing);
        set(
            &self.chunks,
            "state",
            "over_replicated",
            status.over_replicated,
        );
        set(&self.chunks, "state", "garbage", status.garbage);
        set(&self.queue, "kind", "copying", status.copying);
        set(&self.queue, "kind", "waiting", status.under_replicated);
        set(&self.queue, "kind", "trash", status.trash);
        self.safe_mode.set(i64::from(status.safe_mode));
        let alive = status.chunkservers.iter().filter(|s| s.alive).count() as u64;
        let draining = status
            .chunkservers
            .iter()
            .filter(|s| s.decommissioning)
            .count() as u64;
        set(&self.servers, "state", "alive", alive);
        set(
            &self.servers,
            "state",
            "dead",
            status.chunkservers.len() as u64 - alive,
        );
        set(&self.servers, "state", "decommissioning", draining);
        // Forgotten servers must not linger as stale series.
        for family in [
            &self.server_capacity,
            &self.server_used,
            &self.server_chunks,
            &self.server_load,
            &self.server_alive,
        ] {
            family.clear();
        }
        self.server_heartbeat_age.clear();
        for s in &status.chunkservers {
            set(&self.server_capacity, "addr", &s.addr, s.capacity);
            set(&self.server_used, "addr", &s.addr, s.used);
            set(&self.server_chunks, "addr", &s.addr, s.chunks);
            set(&self.server_load, "addr", &s.addr, u64::from(s.load));
            set(&self.server_alive, "addr", &s.addr, u64::from(s.alive));
        }
        for (addr, age) in ages {
            self.server_heartbeat_age
                .get_or_create(&vec![("addr", addr.clone())])
                .set(age.as_secs_f64());
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}
