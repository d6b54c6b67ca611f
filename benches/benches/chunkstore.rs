//! Chunk reads with and without checksum verification: a 64 MiB chunk read in 1 MiB
//! pieces through `ChunkReader::read_blocks` (every block hashed and compared) against
//! the same reads of the same file with nothing verified. Twice: from the page cache
//! (memory speed, where hashing dominates) and from the disk (the file evicted from the
//! page cache before every iteration, as a chunkserver's cold reads are).

use std::fs::File;
use std::hint::black_box;
use std::io::{Read, Seek, SeekFrom};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use dfs_chunkserver::store::ChunkStore;
use dfs_protocol::{ChunkHandle, ChunkVersion};

const CHUNK: u64 = 64 << 20;
const PIECE: u64 = 1 << 20;

fn reads(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = ChunkStore::open(dir.path(), Some(1 << 32)).expect("store");
    let handle = ChunkHandle::random();
    let mut w = store.create(handle, ChunkVersion::FIRST).expect("create");
    let piece: Vec<u8> = (0..PIECE).map(|i| (i * 13 % 251) as u8).collect();
    for _ in 0..CHUNK / PIECE {
        w.write(&piece).expect("write");
    }
    w.commit().expect("commit");
    let path = store.chunk_path(handle);

    for cold in [false, true] {
        let evict = || {
            if cold {
                let f = File::open(&path).expect("open");
                f.sync_all().expect("sync");
                rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).expect("fadvise");
            }
        };
        let name = if cold {
            "chunk_read_64MiB_from_disk"
        } else {
            "chunk_read_64MiB_cached"
        };
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Bytes(CHUNK));
        group.sample_size(20);
        group.bench_function("unverified", |b| {
            b.iter_batched(
                evict,
                |()| {
                    let mut f = File::open(&path).expect("open");
                    let mut pos = 0;
                    while pos < CHUNK {
                        let mut buf = vec![0u8; PIECE as usize];
                        f.seek(SeekFrom::Start(pos)).expect("seek");
                        f.read_exact(&mut buf).expect("read");
                        black_box(&buf);
                        pos += PIECE;
                    }
                },
                BatchSize::PerIteration,
            )
        });
        group.bench_function("verified", |b| {
            b.iter_batched(
                evict,
                |()| {
                    let mut r = store
                        .open_reader(handle, ChunkVersion::FIRST)
                        .expect("open");
                    let mut pos = 0;
                    while pos < CHUNK {
                        black_box(r.read_blocks(pos, PIECE).expect("read"));
                        pos += PIECE;
                    }
                },
                BatchSize::PerIteration,
            )
        });
        group.finish();
    }
}

criterion_group!(benches, reads);
criterion_main!(benches);
