//! End-to-end throughput on a real loopback cluster (master + 3 chunkservers in this
//! process, temp dirs, replication 3, every replica fsynced): put and get of a 256 MiB
//! file with 64 MiB chunks, and 200 files of 64 KiB put and got 16 at a time by one
//! client. Figures go to docs/benchmarks.md.

mod support;

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dfs_client::PutOptions;
use futures::{StreamExt, TryStreamExt};

const FILE: usize = 256 << 20;

fn put_get(c: &mut Criterion) {
    let (rt, _dir, cluster) = support::start(|o| {
        o.chunk_size = 64 << 20;
        o.heartbeat = Duration::from_secs(1);
    });
    let client = cluster.client();
    let data: Vec<u8> = (0..FILE).map(|i| (i * 7 + i / 4096) as u8).collect();
    let n = AtomicU64::new(0);

    let mut group = c.benchmark_group("cluster");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(30));
    group.throughput(Throughput::Bytes(FILE as u64));
    group.bench_function("put_256MiB_r3", |b| {
        b.iter(|| {
            let path = format!("/put-{}", n.fetch_add(1, Ordering::Relaxed));
            rt.block_on(async {
                client
                    .put(&path, &data[..], PutOptions::default())
                    .await
                    .expect("put");
                // Removing (past the trash) keeps the namespace small; GC reclaims the chunks.
                client.remove(&path, false, true).await.expect("rm");
            })
        })
    });
    rt.block_on(client.put("/read-me", &data[..], PutOptions::default()))
        .expect("put");
    group.bench_function("get_256MiB", |b| {
        b.iter(|| {
            black_box(
                rt.block_on(client.get("/read-me", tokio::io::sink()))
                    .expect("get"),
            )
        })
    });
    group.finish();

    // Small files: one client, `SMALL_AT_ONCE` transfers in flight.
    let small = bytes::Bytes::from(data[..SMALL].to_vec());
    let mut group = c.benchmark_group("small_files");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(30));
    group.throughput(Throughput::Elements(SMALL_FILES));
    let round = AtomicU64::new(0);
    group.bench_function("put_200x64KiB", |b| {
        b.iter(|| {
            let r = round.fetch_add(1, Ordering::Relaxed);
            rt.block_on(async {
                client
                    .mkdir(&format!("/small-{r}"), false)
                    .await
                    .expect("mkdir");
                futures::stream::iter(0..SMALL_FILES)
                    .map(|i| {
                        let (client, small) = (&client, small.clone());
                        async move {
                            client
                                .put(
                                    &format!("/small-{r}/{i}"),
                                    &small[..],
                                    PutOptions::default(),
                                )
                                .await
                        }
                    })
                    .buffer_unordered(SMALL_AT_ONCE)
                    .try_collect::<Vec<_>>()
                    .await
                    .expect("put");
                client
                    .remove(&format!("/small-{r}"), true, true)
                    .await
                    .expect("rm");
            })
        })
    });
    rt.block_on(async {
        client.mkdir("/small", false).await.expect("mkdir");
        for i in 0..SMALL_FILES {
            client
                .put(&format!("/small/{i}"), &small[..], PutOptions::default())
                .await
                .expect("put");
        }
    });
    group.bench_function("get_200x64KiB", |b| {
        b.iter(|| {
            rt.block_on(
                futures::stream::iter(0..SMALL_FILES)
                    .map(|i| {
                        let client = &client;
                        async move { client.get(&format!("/small/{i}"), tokio::io::sink()).await }
                    })
                    .buffer_unordered(SMALL_AT_ONCE)
                    .try_collect::<Vec<_>>(),
            )
            .expect("get")
        })
    });
    group.finish();
    rt.block_on(cluster.shutdown()).expect("shutdown");
}

/// Small-file workload: this many files of `SMALL` bytes, `SMALL_AT_ONCE` at a time.
const SMALL_FILES: u64 = 200;
const SMALL: usize = 64 << 10;
const SMALL_AT_ONCE: usize = 16;

criterion_group!(benches, put_get);
criterion_main!(benches);
