//! The machine's ceilings, measured where dfs runs (`dfs bench ceiling`):
//! - durable sequential writes as chunkservers make them: 64 MiB files, each
//!   written with `O_DIRECT` where the file system allows it and fsynced. One
//!   writer; three at once (replication 3, in user MiB/s: each user byte is on disk
//!   3 times); and 3 x 2 and 3 x 4 at once, because a put keeps two chunks in flight
//!   on every replica and a disk behind a virtual machine's queue may give more to
//!   more writers. The best of these is the put's disk ceiling;
//! - durable writes as one appender's batches make them: three chunk stores in
//!   step (the primary answers a batch once every replica has it), each appending
//!   8 MiB batches to 64 MiB replicas through the chunkserver's own
//!   `ChunkStore::append` (data with `O_DIRECT` and `fdatasync`, then the meta file
//!   replaced). The append's disk ceiling: a disk that
//!   flushes slowly holds appends back further than puts, which sync once per
//!   chunk;
//! - cold sequential reads (cached pages dropped with `posix_fadvise(DONTNEED)`,
//!   which needs no privilege), by one reader and by four at once;
//! - loopback TCP through dfs's own framing (1 MiB payloads, as chunk packets go);
//! - blake3 on one core, over 64 KiB blocks as chunk checksums are.
//!
//! Each disk run starts after a rest (`rest`, `dfs bench --rest`): on this
//! project's VMs a disk just after gigabytes of writes wrote slower for a while, so
//! a run that followed another measured the one before it too. A put or get held
//! against the probe rests as long before it starts.
//!
//! From them: a put is bounded by the disk's best durable write rate, by loopback
//! carried three times (client to the head, and two forwards), and by three
//! hashings per byte spread over the cores; a get by the better cold read, one
//! loopback crossing, and two hashings per byte (chunkserver and client).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dfs_chunkserver::error::StoreError;
use dfs_chunkserver::store::direct::SequentialFile;
use dfs_chunkserver::store::ChunkStore;
use dfs_protocol::frame::Limits;
use dfs_protocol::{
    ChunkHandle, ChunkRequest, ChunkVersion, Connection, Frame, Request, RequestId,
};
use serde::Serialize;

use super::stats::mib_per_s;

/// What the probe measured, in MiB/s, and the ceilings that follow.
#[derive(Debug, Clone, Serialize)]
pub struct Ceiling {
    pub bytes: u64,
    pub disk_write_one: f64,
    /// User MiB/s with three writers at once (`bytes` x 3 written in all).
    pub disk_write_three: f64,
    /// User MiB/s with `disk_write_depth` writers per replica (3 x depth at once),
    /// the best depth tried; equal to `disk_write_three` at depth 1.
    pub disk_write_deep: f64,
    pub disk_write_depth: usize,
    pub disk_read_cold: f64,
    /// Four cold readers at once, each on its own files.
    pub disk_read_cold_parallel: f64,
    pub loopback: f64,
    pub blake3_one_core: f64,
    pub cores: usize,
    /// min(best writers, loopback / 3, blake3 x cores / 3).
    pub put: f64,
    /// The put ceiling with three writers only, as issue targets are stated:
    /// min(three writers, loopback / 3, blake3 x cores / 3).
    pub put_three: f64,
    /// User MiB/s of three writers in step, each synced every 8 MiB as an append
    /// batch is (data, then its meta file replaced).
    pub disk_append_three: f64,
    /// min(three writers in step, loopback / 3, blake3 x cores / 3): one
    /// appender's ceiling, against which `dfs bench append` gives `ratio`.
    pub append: f64,
    /// Seconds of rest before each disk run.
    pub rest_s: f64,
    /// min(best cold read, loopback, blake3 x cores): a read crosses loopback once
    /// and is hashed once, by the client (chunkservers send clients blocks as stored).
    pub get: f64,
}

impl Ceiling {
    /// The arithmetic, one line per ceiling.
    pub fn explain(&self) -> String {
        format!(
            "put ceiling = min(disk, best of 3 writers {:.0} and 3 x {} writers {:.0}; loopback {:.0} / 3 = {:.0}; blake3 {:.0} x {} cores / 3 = {:.0}) = {:.0} MiB/s\n\
             put ceiling with three writers only = {:.0} MiB/s\n\
             append ceiling = min(disk, 3 writers in step, each synced every {} MiB with its meta file replaced {:.0}; loopback and blake3 as for the put) = {:.0} MiB/s\n\
             get ceiling = min(disk, best of 1 reader {:.0} and {READERS} readers {:.0}; loopback {:.0}; blake3 {:.0} x {} cores = {:.0}) = {:.0} MiB/s\n\
             each disk run started after {:.0} s at rest, and so does each put and get held against it\n",
            self.disk_write_three,
            self.disk_write_depth,
            self.disk_write_deep,
            self.loopback,
            self.loopback / 3.0,
            self.blake3_one_core,
            self.cores,
            self.blake3_one_core * self.cores as f64 / 3.0,
            self.put,
            self.put_three,
            BATCH >> 20,
            self.disk_append_three,
            self.append,
            self.disk_read_cold,
            self.disk_read_cold_parallel,
            self.loopback,
            self.blake3_one_core,
            self.cores,
            self.blake3_one_core * self.cores as f64,
            self.get,
            self.rest_s,
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CeilingError {
    #[error("{path}: {source}")]
    Disk {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("loopback probe: {0}")]
    Loopback(String),
    /// A probe thread or task that panicked or was cancelled.
    #[error("ceiling probe: {0}")]
    Task(String),
}

/// Measures every ceiling with files of `bytes` in `dir` (removed afterwards).
pub async fn probe(dir: &Path, bytes: u64, rest: Duration) -> Result<Ceiling, CeilingError> {
    let check = dir.to_path_buf();
    blocking(move || writable(&check)).await?;
    let disk = disk(dir, bytes, rest).await?;
    let loopback = loopback((bytes / 4).max(64 << 20)).await?;
    let hash = blocking(|| Ok(blake3_rate(256 << 20))).await?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let others = (loopback / 3.0).min(hash * cores as f64 / 3.0);
    let put = disk.three.max(disk.deep).min(others);
    let get = disk
        .cold
        .max(disk.cold_parallel)
        .min(loopback)
        .min(hash * cores as f64);
    Ok(Ceiling {
        bytes,
        disk_write_one: disk.one,
        disk_write_three: disk.three,
        disk_write_deep: disk.deep,
        disk_write_depth: disk.depth,
        disk_read_cold: disk.cold,
        disk_read_cold_parallel: disk.cold_parallel,
        loopback,
        blake3_one_core: hash,
        cores,
        put,
        put_three: disk.three.min(others),
        disk_append_three: disk.append,
        append: disk.append.min(others),
        rest_s: rest.as_secs_f64(),
        get,
    })
}

/// Fails unless a file can be made in `dir`: a wrong directory is reported at
/// once, not after the first rest.
fn writable(dir: &Path) -> Result<(), CeilingError> {
    let path = dir.join(format!(".dfs-bench-ceiling-{}-check", std::process::id()));
    std::fs::File::create_new(&path).map_err(|source| CeilingError::Disk {
        path: dir.display().to_string(),
        source,
    })?;
    let _ = std::fs::remove_file(&path);
    Ok(())
}

/// `work` on the blocking pool.
async fn blocking<R: Send + 'static>(
    work: impl FnOnce() -> Result<R, CeilingError> + Send + 'static,
) -> Result<R, CeilingError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| CeilingError::Task(e.to_string()))?
}

/// Probe files are chunk-sized, each fsynced when written, as chunkservers do.
const FILE: u64 = 64 << 20;

/// Removes the probe's files, and the directories of its chunk stores, even when a
/// step fails.
struct Files(Vec<PathBuf>, Vec<PathBuf>);

impl Drop for Files {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = std::fs::remove_file(f);
        }
        for d in &self.1 {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// What the disk part of the probe measured.
struct Disk {
    one: f64,
    three: f64,
    deep: f64,
    depth: usize,
    append: f64,
    cold: f64,
    cold_parallel: f64,
}

/// Writers at once per replica in the deep runs: a put keeps two chunks in flight on
/// each of three chunkservers, and the disk may do better deeper still.
const DEPTHS: [usize; 2] = [2, 4];
/// Readers at once for the parallel cold read: a get reads four ranges at once.
const READERS: usize = 4;

/// The files one writer of a run writes: its share of the run's bytes, in files of
/// at most a chunk. One writer writes `bytes`; several share `bytes` x 3 replicas.
fn plan(dir: &Path, tag: &str, writers: usize, bytes: u64) -> Vec<Vec<(PathBuf, u64)>> {
    let replicas = if writers == 1 { 1 } else { 3 };
    let share = bytes * replicas / writers as u64;
    (0..writers)
        .map(|w| {
            let mut left = share;
            let mut files = Vec::new();
            while left > 0 {
                let n = left.min(FILE);
                let name = format!(
                    ".dfs-bench-ceiling-{}-{tag}-{w}-{}",
                    std::process::id(),
                    files.len()
                );
                files.push((dir.join(name), n));
                left -= n;
            }
            files
        })
        .collect()
}

/// Runs `work` on one thread per item of `items`, all at once; the first error wins.
fn on_threads<T: Sync, R: Send>(
    items: &[T],
    work: impl Fn(&T) -> Result<R, CeilingError> + Sync,
) -> Result<Vec<R>, CeilingError> {
    std::thread::scope(|s| {
        let handles: Vec<_> = items.iter().map(|i| s.spawn(|| work(i))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(CeilingError::Task("a probe thread panicked".into())))
            })
            .collect()
    })
}

/// One run of `writers` writers at once, after `rest`: user MiB/s, and each
/// writer's files (recorded in `files` for removal before any is written).
async fn write_run(
    dir: &Path,
    tag: &str,
    writers: usize,
    bytes: u64,
    rest: Duration,
    files: &mut Files,
) -> Result<(f64, Vec<Vec<PathBuf>>), CeilingError> {
    let plan = plan(dir, tag, writers, bytes);
    files
        .0
        .extend(plan.iter().flatten().map(|(p, _)| p.clone()));
    tokio::time::sleep(rest).await;
    blocking(move || {
        let start = Instant::now();
        on_threads(&plan, |mine| {
            mine.iter().try_for_each(|(path, n)| write_file(path, *n))
        })?;
        let rate = mib_per_s(bytes, start.elapsed());
        let paths = plan
            .into_iter()
            .map(|w| w.into_iter().map(|(p, _)| p).collect())
            .collect();
        Ok((rate, paths))
    })
    .await
}

async fn disk(dir: &Path, bytes: u64, rest: Duration) -> Result<Disk, CeilingError> {
    let mut files = Files(Vec::new(), Vec::new());
    let (one, one_files) = write_run(dir, "one", 1, bytes, rest, &mut files).await?;
    let (three, three_files) = write_run(dir, "three", 3, bytes, rest, &mut files).await?;
    let mut deep = three;
    let mut depth = 1;
    for d in DEPTHS {
        let (rate, _) = write_run(dir, &format!("deep{d}"), 3 * d, bytes, rest, &mut files).await?;
        if rate > deep {
            deep = rate;
            depth = d;
        }
    }
    let append = append_run(dir, bytes, rest, &mut files).await?;
    // One reader through the single writer's files, in order.
    tokio::time::sleep(rest).await;
    let cold = blocking(move || {
        let start = Instant::now();
        let mut total = 0;
        for f in one_files.iter().flatten() {
            total += read_cold(f)?;
        }
        Ok(mib_per_s(total, start.elapsed()))
    })
    .await?;
    // `READERS` at once over the three writers' files, each reader a share of them.
    let all: Vec<PathBuf> = three_files.into_iter().flatten().collect();
    let shares: Vec<Vec<PathBuf>> = (0..READERS)
        .map(|r| all.iter().skip(r).step_by(READERS).cloned().collect())
        .collect();
    tokio::time::sleep(rest).await;
    let cold_parallel = blocking(move || {
        let start = Instant::now();
        let read = on_threads(&shares, |mine| {
            mine.iter().try_fold(0u64, |sum, f| Ok(sum + read_cold(f)?))
        })?;
        Ok(mib_per_s(read.iter().sum(), start.elapsed()))
    })
    .await?;
    Ok(Disk {
        one,
        three,
        deep,
        depth,
        append,
        cold,
        cold_parallel,
    })
}

/// Bytes an append batch holds at most, as the chunkserver batches them.
const BATCH: u64 = dfs_chunkserver::append::BATCH_BYTES;

/// Three writers in step, each a chunk store of its own in `dir` appending `bytes`
/// to chunk-sized replicas one batch at a time, through the store's own append
/// (data, `fdatasync`, then the meta file replaced), after `rest`: user MiB/s.
async fn append_run(
    dir: &Path,
    bytes: u64,
    rest: Duration,
    files: &mut Files,
) -> Result<f64, CeilingError> {
    let stores: Vec<PathBuf> = (0..3)
        .map(|w| {
            dir.join(format!(
                ".dfs-bench-ceiling-{}-append-{w}",
                std::process::id()
            ))
        })
        .collect();
    files.1.extend(stores.iter().cloned());
    tokio::time::sleep(rest).await;
    blocking(move || {
        let in_step = std::sync::Barrier::new(stores.len());
        let piece = Bytes::from(pattern(1 << 20));
        let start = Instant::now();
        on_threads(&stores, |store_dir| {
            let failed = |e: StoreError| CeilingError::Disk {
                path: store_dir.display().to_string(),
                source: std::io::Error::other(e.to_string()),
            };
            let mut result = ChunkStore::open(store_dir, None).map_err(failed);
            let mut handle = ChunkHandle::random();
            let mut done = 0;
            // Every writer passes the barrier once per batch, even after a failure,
            // so that a failed writer never leaves the others waiting for it.
            while done < bytes {
                let at = done % FILE;
                let len = BATCH.min(FILE - at).min(bytes - done);
                if let Ok(store) = &result {
                    if let Err(e) = append_batch(store, &mut handle, at, len, &piece) {
                        result = Err(failed(e));
                    }
                }
                in_step.wait();
                done += len;
            }
            result.map(|_| ())
        })?;
        Ok(mib_per_s(bytes, start.elapsed()))
    })
    .await
}

/// One batch of `len` bytes at `at` of the replica `handle`, which a batch at 0
/// first makes anew, as a lease's first append does.
fn append_batch(
    store: &ChunkStore,
    handle: &mut ChunkHandle,
    at: u64,
    len: u64,
    piece: &Bytes,
) -> Result<(), StoreError> {
    let version = ChunkVersion::FIRST;
    if at == 0 {
        *handle = ChunkHandle::random();
        store.bump(*handle, None, version)?;
    }
    let pieces: Vec<Bytes> = (0..len)
        .step_by(piece.len())
        .map(|o| piece.slice(..(len - o).min(piece.len() as u64) as usize))
        .collect();
    store.append(*handle, version, at, &pieces).map(|_| ())
}

/// A new file of `bytes`, written and fsynced the way a chunkserver writes a chunk
/// (`O_DIRECT` where the file system allows it).
fn write_file(path: &Path, bytes: u64) -> Result<(), CeilingError> {
    let failed = |source| CeilingError::Disk {
        path: path.display().to_string(),
        source,
    };
    let mut f = SequentialFile::create(path, true).map_err(failed)?;
    let block = pattern(1 << 20);
    let mut left = bytes;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n]).map_err(failed)?;
        left -= n as u64;
    }
    f.finish().map_err(failed)?;
    Ok(())
}

/// Reads `path` whole after dropping its cached pages; returns the bytes read.
fn read_cold(path: &Path) -> Result<u64, CeilingError> {
    let failed = |source| CeilingError::Disk {
        path: path.display().to_string(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(failed)?;
    // Written and synced: DONTNEED drops every cached page of it.
    rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).map_err(|e| failed(e.into()))?;
    let mut buf = vec![0u8; 8 << 20];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(failed)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    Ok(total)
}

/// Bytes that do not compress or repeat within a block.
fn pattern(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// One connection on 127.0.0.1: `bytes` in 1 MiB frames through dfs's codec,
/// decoded on the other side.
async fn loopback(bytes: u64) -> Result<f64, CeilingError> {
    let err = |e: &dyn std::fmt::Display| CeilingError::Loopback(e.to_string());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| err(&e))?;
    let addr = listener.local_addr().map_err(|e| err(&e))?;
    let receiver = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let (r, w) = stream.into_split();
        let mut conn = Connection::new(r, w, Limits::default());
        let mut got = 0u64;
        while let Some(frame) = conn.recv().await.map_err(|e| e.to_string())? {
            got += frame.payload.len() as u64;
        }
        Ok::<u64, String>(got)
    });
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| err(&e))?;
    stream.set_nodelay(true).map_err(|e| err(&e))?;
    let (r, w) = stream.into_split();
    let mut conn = Connection::new(r, w, Limits::default());
    let payload = Bytes::from(pattern(1 << 20));
    let start = Instant::now();
    let mut sent = 0u64;
    let mut id = 0u64;
    while sent < bytes {
        id += 1;
        let frame = Frame::request(
            RequestId(id),
            Request::Chunk(ChunkRequest::WritePacket { last: false }),
        )
        .with_payload(payload.clone());
        conn.send(&frame).await.map_err(|e| err(&e))?;
        sent += payload.len() as u64;
    }
    drop(conn);
    let got = tokio::time::timeout(Duration::from_secs(60), receiver)
        .await
        .map_err(|e| err(&e))?
        .map_err(|e| err(&e))?
        .map_err(|e| err(&e))?;
    let elapsed = start.elapsed();
    if got != sent {
        return Err(CeilingError::Loopback(format!(
            "{got} of {sent} bytes arrived"
        )));
    }
    Ok(mib_per_s(sent, elapsed))
}

/// blake3 over `len` bytes in 64 KiB blocks, on this thread (16 MiB of data hashed
/// over and over, so the probe's own memory stays small).
fn blake3_rate(len: usize) -> f64 {
    let data = pattern(16 << 20);
    let start = Instant::now();
    let mut acc = 0u8;
    let mut done = 0;
    while done < len {
        for block in data.chunks(dfs_protocol::CHECKSUM_BLOCK as usize) {
            acc ^= blake3::hash(block).as_bytes()[0];
        }
        done += data.len();
    }
    std::hint::black_box(acc);
    mib_per_s(done as u64, start.elapsed())
}
