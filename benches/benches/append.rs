//! Record append throughput on a real loopback cluster (master + 3 chunkservers in this
//! process, temp dirs, replication 3, 64 MiB chunks, every batch fsynced on every
//! replica): 1, 4 and 16 appenders (separate client instances) appending records to
//! one file, 128 MiB in all per iteration. GFS fell from 6.0 to 4.8 MB/s going from
//! 1 to 16 appenders; the target here is 16 appenders at >= 90% of one. Figures go to
//! docs/benchmarks.md.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dfs_client::{AppendOptions, Client, Identity};

const TOTAL: usize = 128 << 20;

fn append(c: &mut Criterion) {
    let (rt, _dir, cluster) = support::start(|o| {
        o.chunk_size = 64 << 20;
        o.heartbeat = Duration::from_secs(1);
        o.lease = Duration::from_secs(60);
    });
    let master = cluster.master_addr().to_string();
    let admin = cluster.client();
    let n = AtomicU64::new(0);

    let mut group = c.benchmark_group("append");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Bytes(TOTAL as u64));
    for record in [1usize << 20, 64 << 10] {
        let body = Bytes::from((0..record).map(|i| (i * 13) as u8).collect::<Vec<u8>>());
        for appenders in [1usize, 4, 16] {
            let clients: Vec<Client> = (0..appenders)
                .map(|_| Client::new(&master, Identity::cluster_admin(cluster.secret())))
                .collect();
            let id = BenchmarkId::new(format!("record_{}KiB", record >> 10), appenders);
            group.bench_with_input(id, &appenders, |b, &appenders| {
                b.iter(|| {
                    let path = format!("/log-{}", n.fetch_add(1, Ordering::Relaxed));
                    rt.block_on(async {
                        let each = TOTAL / record / appenders;
                        let tasks: Vec<_> = clients
                            .iter()
                            .map(|client| {
                                let (client, path, body) =
                                    (client.clone(), path.clone(), body.clone());
                                tokio::spawn(async move {
                                    for _ in 0..each {
                                        client
                                            .append_record(
                                                &path,
                                                body.clone(),
                                                AppendOptions::default(),
                                            )
                                            .await
                                            .expect("append");
                                    }
                                })
                            })
                            .collect();
                        for t in tasks {
                            t.await.expect("appender");
                        }
                        admin.remove(&path, false, true).await.expect("rm");
                    })
                })
            });
        }
    }
    group.finish();
    rt.block_on(cluster.shutdown()).expect("shutdown");
}

criterion_group!(benches, append);
criterion_main!(benches);
