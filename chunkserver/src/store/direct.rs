//! Sequential chunk files written with `O_DIRECT`, through one reused aligned buffer.
//!
//! Why: a buffered `write(2)` copies every byte into freshly allocated page-cache
//! pages. Profiling a replication-3 put on this project's VMs put half of all
//! chunkserver CPU in that one kernel copy (`copy_folio_from_iter_atomic`), and the
//! pages are only written back at the chunk's fsync anyway. With `O_DIRECT` the disk
//! reads our buffer itself; the only copy left is into that buffer, which stays warm
//! because it is reused for the whole chunk.
//!
//! `O_DIRECT` wants the buffer address, the length and the file offset aligned to the
//! device's logical block size. Full buffers are always aligned; the last piece is
//! padded with zeros to [`ALIGN`] and the file cut back to its true length, which the
//! commit's fsync makes durable with the data. File systems that refuse `O_DIRECT`
//! (tmpfs, some FUSE and network mounts) get the same interface over plain buffered
//! writes.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Alignment for address, length and offset: 4 KiB covers every logical block size
/// Linux file systems use for `O_DIRECT` on common devices.
pub const ALIGN: usize = 4096;
/// Bytes gathered before one write reaches the device.
const BUFFER: usize = 4 << 20;

/// A new file written front to back.
#[derive(Debug)]
pub struct SequentialFile {
    file: File,
    /// `Some` while writing with `O_DIRECT`: the buffer and where its aligned part
    /// starts; `None` for buffered writes.
    direct: Option<Aligned>,
    written: u64,
}

/// The write buffer: `raw[start..]` is the data gathered, `start` the first
/// aligned address. Only capacity is allocated up front, never zeroed: a chunk of
/// 64 KiB touches 64 KiB of it (zeroing 4 MiB per chunk was 12% of a small-file
/// put's chunkserver CPU).
#[derive(Debug)]
struct Aligned {
    raw: Vec<u8>,
    start: usize,
}

impl Aligned {
    fn new() -> Aligned {
        let mut raw: Vec<u8> = Vec::with_capacity(BUFFER + ALIGN);
        let start = raw.as_ptr().align_offset(ALIGN);
        raw.resize(start, 0);
        Aligned { raw, start }
    }

    fn filled(&self) -> usize {
        self.raw.len() - self.start
    }
}

impl SequentialFile {
    /// Creates `path` (which must not exist), with `O_DIRECT` when `direct` is asked
    /// for and the file system accepts it.
    pub fn create(path: &Path, direct: bool) -> std::io::Result<SequentialFile> {
        let open = |flags: i32| {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(flags)
                .open(path)
        };
        if direct {
            let flags = rustix::fs::OFlags::DIRECT.bits() as i32;
            match open(flags) {
                Ok(file) => {
                    return Ok(SequentialFile {
                        file,
                        direct: Some(Aligned::new()),
                        written: 0,
                    })
                }
                // EINVAL: this file system has no O_DIRECT; nothing was created.
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(SequentialFile {
            file: open(0)?,
            direct: None,
            written: 0,
        })
    }

    /// Whether writes bypass the page cache.
    #[cfg(test)]
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    pub fn write_all(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        let Some(buf) = self.direct.as_mut() else {
            self.written += data.len() as u64;
            return self.file.write_all(data);
        };
        while !data.is_empty() {
            let n = (BUFFER - buf.filled()).min(data.len());
            // Within capacity: the buffer never moves, so `start` stays aligned.
            buf.raw.extend_from_slice(&data[..n]);
            data = &data[n..];
            if buf.filled() == BUFFER {
                self.file.write_all(&buf.raw[buf.start..])?;
                buf.raw.truncate(buf.start);
                self.written += BUFFER as u64;
            }
        }
        Ok(())
    }

    /// Writes what is buffered and fsyncs data and metadata; the file is closed.
    pub fn finish(mut self) -> std::io::Result<()> {
        if let Some(buf) = self.direct.as_mut() {
            let tail = buf.filled();
            if tail > 0 {
                let padded = tail.div_ceil(ALIGN) * ALIGN;
                buf.raw.resize(buf.start + padded, 0);
                self.file.write_all(&buf.raw[buf.start..])?;
                let len = self.written + tail as u64;
                if padded != tail {
                    self.file.set_len(len)?;
                }
                self.written = len;
            }
        }
        self.file.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    /// Every length class: empty, under one block, exactly aligned, a full buffer,
    /// and past it with a ragged tail; pieces of odd sizes.
    #[test]
    fn writes_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        for (i, len) in [0, 1, 4095, 4096, 5000, BUFFER, BUFFER + 1, 3 * BUFFER + 777]
            .into_iter()
            .enumerate()
        {
            for direct in [true, false] {
                let path = dir.path().join(format!("f{i}-{direct}"));
                let data = pattern(len);
                let mut f = SequentialFile::create(&path, direct).unwrap();
                if !direct {
                    assert!(!f.is_direct());
                }
                for piece in data.chunks(1_000_003) {
                    f.write_all(piece).unwrap();
                }
                f.finish().unwrap();
                assert_eq!(
                    std::fs::read(&path).unwrap(),
                    data,
                    "len {len} direct {direct}"
                );
            }
        }
    }

    #[test]
    fn refuses_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"x").unwrap();
        assert!(SequentialFile::create(&path, true).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"x");
    }
}
