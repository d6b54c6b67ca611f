//! The machine's ceilings, measured where dfs runs (`dfs bench ceiling`):
//! - sequential writes with an fdatasync every 64 MiB (a chunk, as chunkservers
//!   sync), by one writer and by three at once (the replication-3 write ceiling, in
//!   user MiB/s: each user byte is on disk 3 times);
//! - a cold sequential read (the file's cached pages dropped with
//!   `posix_fadvise(DONTNEED)` first, which needs no privilege);
//! - loopback TCP through dfs's own framing (1 MiB payloads, as chunk packets go);
//! - blake3 on one core, over 64 KiB blocks as chunk checksums are.
//!
//! From them: a put is bounded by the disk with three writers, by loopback carried
//! three times (client to the head, and two forwards), and by three hashings per
//! byte spread over the cores; a get by the cold read, one loopback crossing, and
//! two hashings per byte (chunkserver and client).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dfs_protocol::frame::Limits;
use dfs_protocol::{ChunkRequest, Connection, Frame, Request, RequestId};
use serde::Serialize;

use super::stats::mib_per_s;

/// What the probe measured, in MiB/s, and the ceilings that follow.
#[derive(Debug, Clone, Serialize)]
pub struct Ceiling {
    pub bytes: u64,
    pub disk_write_one: f64,
    /// User MiB/s with three writers at once (each wrote `bytes`).
    pub disk_write_three: f64,
    pub disk_read_cold: f64,
    pub loopback: f64,
    pub blake3_one_core: f64,
    pub cores: usize,
    /// min(three writers, loopback / 3, blake3 x cores / 3).
    pub put: f64,
    /// min(cold read, loopback, blake3 x cores / 2).
    pub get: f64,
}

impl Ceiling {
    /// The arithmetic, one line per ceiling.
    pub fn explain(&self) -> String {
        format!(
            "put ceiling = min(disk, 3 writers {:.0}; loopback {:.0} / 3 = {:.0}; blake3 {:.0} x {} cores / 3 = {:.0}) = {:.0} MiB/s\n\
             get ceiling = min(cold read {:.0}; loopback {:.0}; blake3 {:.0} x {} cores / 2 = {:.0}) = {:.0} MiB/s\n",
            self.disk_write_three,
            self.loopback,
            self.loopback / 3.0,
            self.blake3_one_core,
            self.cores,
            self.blake3_one_core * self.cores as f64 / 3.0,
            self.put,
            self.disk_read_cold,
            self.loopback,
            self.blake3_one_core,
            self.cores,
            self.blake3_one_core * self.cores as f64 / 2.0,
            self.get,
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
}

/// Measures every ceiling with files of `bytes` in `dir` (removed afterwards).
pub async fn probe(dir: &Path, bytes: u64) -> Result<Ceiling, CeilingError> {
    let dir = dir.to_path_buf();
    let (one, three, cold) = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || disk(&dir, bytes))
            .await
            .map_err(|e| CeilingError::Loopback(e.to_string()))??
    };
    let loopback = loopback((bytes / 4).max(64 << 20)).await?;
    let hash = tokio::task::spawn_blocking(|| blake3_rate(256 << 20))
        .await
        .map_err(|e| CeilingError::Loopback(e.to_string()))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let put = three.min(loopback / 3.0).min(hash * cores as f64 / 3.0);
    let get = cold.min(loopback).min(hash * cores as f64 / 2.0);
    Ok(Ceiling {
        bytes,
        disk_write_one: one,
        disk_write_three: three,
        disk_read_cold: cold,
        loopback,
        blake3_one_core: hash,
        cores,
        put,
        get,
    })
}

/// Writers fdatasync this often: a chunk's worth, as chunkservers do.
const SYNC_EVERY: u64 = 64 << 20;

/// Removes the probe's files even when a step fails.
struct Files(Vec<PathBuf>);

impl Drop for Files {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = std::fs::remove_file(f);
        }
    }
}

fn disk(dir: &Path, bytes: u64) -> Result<(f64, f64, f64), CeilingError> {
    let name = |i: usize| dir.join(format!(".dfs-bench-ceiling-{}-{i}", std::process::id()));
    let files = Files((0..4).map(name).collect());
    let start = Instant::now();
    write_file(&files.0[0], bytes)?;
    let one = mib_per_s(bytes, start.elapsed());
    let start = Instant::now();
    let results: Vec<Result<(), CeilingError>> = std::thread::scope(|s| {
        let handles: Vec<_> = files.0[1..4]
            .iter()
            .map(|p| s.spawn(move || write_file(p, bytes)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(CeilingError::Loopback("a writer panicked".into())))
            })
            .collect()
    });
    for r in results {
        r?;
    }
    let three = mib_per_s(bytes, start.elapsed());
    let cold = read_cold(&files.0[0])?;
    Ok((one, three, cold))
}

fn write_file(path: &Path, bytes: u64) -> Result<(), CeilingError> {
    let failed = |source| CeilingError::Disk {
        path: path.display().to_string(),
        source,
    };
    let mut f = std::fs::File::create(path).map_err(failed)?;
    let block = pattern(8 << 20);
    let mut left = bytes;
    let mut unsynced = 0u64;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n]).map_err(failed)?;
        left -= n as u64;
        unsynced += n as u64;
        // As a chunkserver does: durable at the end of every 64 MiB chunk.
        if unsynced >= SYNC_EVERY {
            f.sync_data().map_err(failed)?;
            unsynced = 0;
        }
    }
    f.sync_data().map_err(failed)
}

fn read_cold(path: &Path) -> Result<f64, CeilingError> {
    let failed = |source| CeilingError::Disk {
        path: path.display().to_string(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(failed)?;
    // Written and synced: DONTNEED drops every cached page of it.
    rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).map_err(|e| failed(e.into()))?;
    let mut buf = vec![0u8; 8 << 20];
    let mut total = 0u64;
    let start = Instant::now();
    loop {
        let n = f.read(&mut buf).map_err(failed)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    Ok(mib_per_s(total, start.elapsed()))
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

/// blake3 over `len` bytes in 64 KiB blocks, on this thread.
fn blake3_rate(len: usize) -> f64 {
    let data = pattern(len);
    let start = Instant::now();
    let mut acc = 0u8;
    for block in data.chunks(dfs_protocol::CHECKSUM_BLOCK as usize) {
        acc ^= blake3::hash(block).as_bytes()[0];
    }
    std::hint::black_box(acc);
    mib_per_s(len as u64, start.elapsed())
}
