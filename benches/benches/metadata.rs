//! Metadata operations per second on a real master (fsync on, group commit), with 1 and
//! 32 concurrent clients: mkdir, create+commit of an empty file, rename.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use dfs_client::{Client, PutOptions};

const OPS: u64 = 3200;

async fn fan_out<F, Fut>(clients: &[Client], op: F)
where
    F: Fn(Client, u64, u64) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let per = OPS / clients.len() as u64;
    let mut set = tokio::task::JoinSet::new();
    for (k, c) in clients.iter().enumerate() {
        let c = c.clone();
        let f = op(c, k as u64, per);
        set.spawn(f);
    }
    while let Some(r) = set.join_next().await {
        r.expect("client task");
    }
}

fn metadata(c: &mut Criterion) {
    let (rt, _dir, cluster) = support::start(|o| o.chunkservers = 0);
    let n = AtomicU64::new(0);

    let mut group = c.benchmark_group("metadata");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(OPS));
    for clients in [1usize, 32] {
        let cs: Vec<Client> = (0..clients).map(|_| cluster.client()).collect();
        group.bench_function(format!("mkdir/{clients}_clients"), |b| {
            b.iter(|| {
                let it = n.fetch_add(1, Ordering::Relaxed);
                rt.block_on(async {
                    cs[0].mkdir(&format!("/m{it}"), false).await.expect("mkdir");
                    fan_out(&cs, |c, k, per| async move {
                        for j in 0..per {
                            c.mkdir(&format!("/m{it}/{k}-{j}"), false)
                                .await
                                .expect("mkdir");
                        }
                    })
                    .await
                })
            })
        });
        group.bench_function(format!("create_commit/{clients}_clients"), |b| {
            b.iter(|| {
                let it = n.fetch_add(1, Ordering::Relaxed);
                rt.block_on(async {
                    cs[0].mkdir(&format!("/f{it}"), false).await.expect("mkdir");
                    fan_out(&cs, |c, k, per| async move {
                        for j in 0..per {
                            let empty: &[u8] = &[];
                            c.put(&format!("/f{it}/{k}-{j}"), empty, PutOptions::default())
                                .await
                                .expect("create");
                        }
                    })
                    .await
                })
            })
        });
        group.bench_function(format!("rename/{clients}_clients"), |b| {
            b.iter_batched(
                || {
                    let it = n.fetch_add(1, Ordering::Relaxed);
                    rt.block_on(async {
                        cs[0].mkdir(&format!("/r{it}"), false).await.expect("mkdir");
                        fan_out(&cs, |c, k, per| async move {
                            for j in 0..per {
                                c.mkdir(&format!("/r{it}/a{k}-{j}"), false)
                                    .await
                                    .expect("mkdir");
                            }
                        })
                        .await
                    });
                    it
                },
                |it| {
                    rt.block_on(fan_out(&cs, |c, k, per| async move {
                        for j in 0..per {
                            c.rename(&format!("/r{it}/a{k}-{j}"), &format!("/r{it}/b{k}-{j}"))
                                .await
                                .expect("rename");
                        }
                    }))
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
    rt.block_on(cluster.shutdown()).expect("shutdown");
}

criterion_group!(benches, metadata);
criterion_main!(benches);
