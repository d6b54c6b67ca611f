//! Chunk files written with `O_DIRECT`: new ones front to back ([`SequentialFile`]),
//! and appends in place ([`InPlace`]), through reused aligned buffers.
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
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Mutex;

use bytes::Bytes;

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
    /// With `O_DIRECT`: bytes written to the file so far (where the buffer goes).
    written: u64,
    /// With `O_DIRECT`: aligned pieces held as they came, to be written in one
    /// vectored write without copying (see [`SequentialFile::write_bytes`]). They
    /// come before anything in the buffer.
    held: Vec<Bytes>,
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

    /// Gathers `data`, writing each full buffer to `file` at `*at` (then advanced).
    fn push(&mut self, file: &File, at: &mut u64, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let n = (BUFFER - self.filled()).min(data.len());
            // Within capacity: the buffer never moves, so `start` stays aligned.
            self.raw.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.filled() == BUFFER {
                file.write_all_at(&self.raw[self.start..], *at)?;
                self.raw.truncate(self.start);
                *at += BUFFER as u64;
            }
        }
        Ok(())
    }

    /// Writes what is gathered at `at`, padded with zeros to [`ALIGN`]: where the
    /// bytes end, and where the padding does (the file may need cutting back).
    fn flush_padded(&mut self, file: &File, at: u64) -> std::io::Result<(u64, u64)> {
        let tail = self.filled();
        if tail == 0 {
            return Ok((at, at));
        }
        let padded = tail.div_ceil(ALIGN) * ALIGN;
        self.raw.resize(self.start + padded, 0);
        file.write_all_at(&self.raw[self.start..], at)?;
        self.raw.truncate(self.start);
        Ok((at + tail as u64, at + padded as u64))
    }
}

/// Aligned buffers kept for the next in-place write, so their pages stay mapped:
/// a buffer allocated per append faults in fresh pages, the very cost `O_DIRECT`
/// avoids. At most [`POOLED`] are kept; more writers at once allocate their own.
#[derive(Debug, Default)]
pub struct BufferPool {
    free: Mutex<Vec<Aligned>>,
}

/// Buffers a pool keeps (4 MiB each).
const POOLED: usize = 4;

impl BufferPool {
    fn take(&self) -> Aligned {
        let mut buf = self
            .free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop()
            .unwrap_or_else(Aligned::new);
        buf.raw.truncate(buf.start);
        buf
    }

    fn give(&self, buf: Aligned) {
        let mut free = self
            .free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if free.len() < POOLED {
            free.push(buf);
        }
    }
}

fn direct_flags() -> i32 {
    rustix::fs::OFlags::DIRECT.bits() as i32
}

fn refused_direct(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error())
}

/// Bytes written in place at an offset of an existing file with `O_DIRECT`, as they
/// come ([`InPlace::write`]), then handed back for the caller's fsync
/// ([`InPlace::finish`]).
///
/// The block the offset falls in is read back and written again whole, and the last
/// block is padded with zeros; the file is then cut back so that it ends where it
/// did or at the new end, whichever is later. Bytes before the offset keep their
/// values, so a reader of the committed prefix never sees them change; bytes past
/// the new end in its last block may be zeroed (they were never acknowledged).
#[derive(Debug)]
pub struct InPlace<'a> {
    file: File,
    buf: Aligned,
    pool: &'a BufferPool,
    /// File offset of the buffer's first byte (always aligned).
    at: u64,
    old_size: u64,
    end: u64,
}

impl<'a> InPlace<'a> {
    /// Opens `path` to write at `offset`; `None` when the file system refuses
    /// `O_DIRECT` (nothing was read or written).
    pub fn open(
        path: &Path,
        offset: u64,
        pool: &'a BufferPool,
    ) -> std::io::Result<Option<InPlace<'a>>> {
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(direct_flags())
            .open(path)
        {
            Ok(f) => f,
            Err(e) if refused_direct(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let old_size = file.metadata()?.len();
        let mut buf = pool.take();
        let align = ALIGN as u64;
        let at = offset / align * align;
        let head = (offset - at) as usize;
        if head > 0 {
            buf.raw.resize(buf.start + ALIGN, 0);
            let mut got = 0;
            while got < head {
                let n = match file.read_at(&mut buf.raw[buf.start + got..], at + got as u64) {
                    Ok(n) => n,
                    Err(e) => {
                        pool.give(buf);
                        return Err(e);
                    }
                };
                if n == 0 {
                    pool.give(buf);
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("{} ends before {offset}", path.display()),
                    ));
                }
                got += n;
            }
            buf.raw.truncate(buf.start + head);
        }
        Ok(Some(InPlace {
            file,
            buf,
            pool,
            at,
            old_size,
            end: offset,
        }))
    }

    pub fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.end += data.len() as u64;
        self.buf.push(&self.file, &mut self.at, data)
    }

    /// Writes what is buffered and fixes the file's length; the file is not synced.
    /// (Dropped without it, the buffer is freed, not pooled.)
    pub fn finish(self) -> std::io::Result<File> {
        let InPlace {
            file,
            mut buf,
            pool,
            at,
            old_size,
            end,
        } = self;
        let result = buf.flush_padded(&file, at).and_then(|(_, padded_end)| {
            let keep = old_size.max(end);
            if padded_end > keep {
                file.set_len(keep)?;
            }
            Ok(())
        });
        pool.give(buf);
        result.map(|()| file)
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
            match open(direct_flags()) {
                Ok(file) => {
                    return Ok(SequentialFile {
                        file,
                        direct: Some(Aligned::new()),
                        written: 0,
                        held: Vec::new(),
                    })
                }
                // EINVAL: this file system has no O_DIRECT; nothing was created.
                Err(e) if refused_direct(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(SequentialFile {
            file: open(0)?,
            direct: None,
            written: 0,
            held: Vec::new(),
        })
    }

    /// Whether writes bypass the page cache.
    #[cfg(test)]
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    pub fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.write_held()?;
        match self.direct.as_mut() {
            Some(buf) => buf.push(&self.file, &mut self.written, data),
            None => self.file.write_all(data),
        }
    }

    /// [`SequentialFile::write_all`] for bytes the caller owns. With `O_DIRECT`, a
    /// piece whose address and length are multiples of [`ALIGN`] (as the frame
    /// codec lays out large payloads) is kept as it is and written from where it
    /// lies, a buffer's worth at a time, instead of being copied into the aligned
    /// buffer: that copy was 19% of the servers' CPU samples in a replication-3 put.
    pub fn write_bytes(&mut self, data: Bytes) -> std::io::Result<()> {
        let fits = |b: &Bytes| {
            !b.is_empty()
                && (b.as_ptr() as usize).is_multiple_of(ALIGN)
                && b.len().is_multiple_of(ALIGN)
        };
        match self.direct.as_ref() {
            Some(buf) if buf.filled() == 0 && fits(&data) => {
                self.held.push(data);
                if self.held_len() >= BUFFER {
                    self.write_held()?;
                }
                Ok(())
            }
            _ => self.write_all(&data),
        }
    }

    /// Bytes held for the next vectored write (a handful of pieces).
    fn held_len(&self) -> usize {
        self.held.iter().map(Bytes::len).sum()
    }

    /// Writes the held pieces at the end of the file, in one vectored write when the
    /// device takes it whole.
    fn write_held(&mut self) -> std::io::Result<()> {
        let total = self.held_len();
        let mut at = self.written;
        let mut skip = 0usize;
        while skip < total {
            let slices = unwritten(&self.held, skip);
            let n = rustix::io::pwritev(&self.file, &slices, at)?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            skip += n;
            at += n as u64;
        }
        self.written = at;
        self.held.clear();
        Ok(())
    }

    /// Writes what is buffered and fsyncs data and metadata; the file is closed.
    pub fn finish(mut self) -> std::io::Result<()> {
        self.write_held()?;
        if let Some(buf) = self.direct.as_mut() {
            let (end, padded_end) = buf.flush_padded(&self.file, self.written)?;
            if padded_end != end {
                self.file.set_len(end)?;
            }
        }
        self.file.sync_all()
    }
}

/// The parts of `pieces` past their first `skip` bytes, as slices to write.
fn unwritten(pieces: &[Bytes], mut skip: usize) -> Vec<std::io::IoSlice<'_>> {
    let mut out = Vec::with_capacity(pieces.len());
    for p in pieces {
        if skip >= p.len() {
            skip -= p.len();
            continue;
        }
        out.push(std::io::IoSlice::new(&p[skip..]));
        skip = 0;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

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

    /// `data` at an address that is a multiple of `ALIGN`, as the frame codec
    /// places large payloads.
    fn aligned(data: &[u8]) -> Bytes {
        let mut v = vec![0u8; data.len() + ALIGN];
        let off = v.as_ptr().align_offset(ALIGN);
        v[off..off + data.len()].copy_from_slice(data);
        Bytes::from(v).slice(off..off + data.len())
    }

    /// Owned pieces, aligned and not, in every order: aligned ones are held and
    /// written from where they lie, the others copied, and the file reads back
    /// exactly either way.
    #[test]
    fn owned_pieces_aligned_or_not_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let mib = 1 << 20;
        let shapes: [&[(usize, bool)]; 5] = [
            &[
                (mib, true),
                (mib, true),
                (mib, true),
                (mib, true),
                (mib, true),
            ],
            &[(mib, true), (777, false), (mib, true), (mib, false)],
            &[(5000, false), (mib, true), (mib, true)],
            &[(mib, true), (mib, true), (4096 * 3, true), (100, true)],
            &[(BUFFER, true), (BUFFER * 2, true), (mib + 1, true)],
        ];
        for (i, shape) in shapes.iter().enumerate() {
            for direct in [true, false] {
                let path = dir.path().join(format!("o{i}-{direct}"));
                let mut f = SequentialFile::create(&path, direct).unwrap();
                let mut want = Vec::new();
                for (j, &(len, align)) in shape.iter().enumerate() {
                    let data: Vec<u8> = (0..len).map(|b| (b * 13 + j * 7 + i) as u8).collect();
                    want.extend_from_slice(&data);
                    let piece = if align {
                        aligned(&data)
                    } else {
                        Bytes::copy_from_slice(&data)
                    };
                    f.write_bytes(piece).unwrap();
                    if direct && i == 0 && j == 0 {
                        assert_eq!(f.held_len(), mib, "an aligned piece is held, not copied");
                    }
                }
                f.finish().unwrap();
                assert!(
                    std::fs::read(&path).unwrap() == want,
                    "shape {i} direct {direct}"
                );
            }
        }
    }

    fn write_at(
        path: &Path,
        offset: u64,
        pieces: &[Bytes],
        pool: &BufferPool,
    ) -> std::io::Result<Option<File>> {
        let Some(mut w) = InPlace::open(path, offset, pool)? else {
            return Ok(None);
        };
        for p in pieces {
            w.write(p)?;
        }
        w.finish().map(Some)
    }

    /// Appends at every kind of offset (block-aligned or not, past a buffer), and a
    /// rewrite of bytes past the offset that leaves the longer file's end in place.
    #[test]
    fn writes_in_place_keep_the_prefix_and_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let pool = BufferPool::default();
        let path = dir.path().join("f");
        std::fs::write(&path, b"").unwrap();
        let mut want: Vec<u8> = Vec::new();
        for (i, len) in [1, 4095, 4096, 5000, BUFFER + 3, 77]
            .into_iter()
            .enumerate()
        {
            let data = pattern(len + i);
            let pieces: Vec<Bytes> = data.chunks(300_007).map(Bytes::copy_from_slice).collect();
            let file = write_at(&path, want.len() as u64, &pieces, &pool).unwrap();
            assert!(file.is_some(), "tempdir refuses O_DIRECT");
            want.extend_from_slice(&data);
            assert!(std::fs::read(&path).unwrap() == want, "after {len}");
        }
        // Replace bytes past 10,000 with fewer: everything before the new end is
        // kept or written, and the file keeps its length (what lies past the new
        // end is no one's data any more).
        let short = Bytes::from_static(b"replaced");
        write_at(&path, 10_000, std::slice::from_ref(&short), &pool).unwrap();
        want[10_000..10_000 + short.len()].copy_from_slice(&short);
        let got = std::fs::read(&path).unwrap();
        assert_eq!(got.len(), want.len());
        assert!(got[..10_008] == want[..10_008]);
    }

    #[test]
    fn writing_past_the_end_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        let pool = BufferPool::default();
        let r = write_at(&path, 5000, &[Bytes::from_static(b"x")], &pool);
        assert!(r.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"abc");
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
