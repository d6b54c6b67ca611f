//! Changing a file in place (the mount's write path) against storing it again: a
//! one-byte `write_at` into a 256 MiB file rewrites one 64 MiB chunk, a `put` of the
//! same file writes four. Real loopback cluster (master + 3 chunkservers in this
//! process, replication 3, fsync on every replica). Figures go to docs/benchmarks.md.

mod support;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use dfs_client::PutOptions;

const SIZE: usize = 256 << 20;

fn rewrite(c: &mut Criterion) {
    let (rt, _dir, cluster) = support::start(|o| {
        o.chunk_size = 64 << 20;
        o.heartbeat = Duration::from_secs(1);
    });
    let client = cluster.client();
    let body: Vec<u8> = (0..SIZE).map(|i| (i * 31) as u8).collect();
    rt.block_on(client.put("/f", &body[..], PutOptions::default()))
        .expect("put");

    let mut group = c.benchmark_group("rewrite_256MiB");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    let mut byte = 0u8;
    group.bench_function("write_1_byte_in_place", |b| {
        b.iter(|| {
            byte = byte.wrapping_add(1);
            rt.block_on(client.write_at("/f", (SIZE / 2) as u64, &[byte]))
                .expect("write_at")
        })
    });
    group.bench_function("put_whole_file_again", |b| {
        b.iter(|| {
            let options = PutOptions {
                overwrite: true,
                ..Default::default()
            };
            rt.block_on(client.put("/f", &body[..], options))
                .expect("put")
        })
    });
    group.finish();
    drop(client);
    rt.block_on(cluster.shutdown()).expect("shutdown");
}

criterion_group!(benches, rewrite);
criterion_main!(benches);
