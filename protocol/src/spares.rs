//! Read buffers of large frames, taken back once every payload cut from them is gone.
//!
//! The codec reads each large frame (a data packet, a chunk report) into a buffer of
//! its own, and hands the payload out as `Bytes` that share it. Freed, such a buffer
//! went back to the system: glibc trims big free blocks, so the next frame's buffer
//! was fresh memory, and the kernel faulted in and zeroed every page the socket
//! copied into: in a client's get, a third of the client's CPU samples.
//!
//! So the codec keeps a handle on each large frame's buffer here. Once the receiver
//! has dropped every payload cut from it, the handle is its only owner, and
//! [`BytesMut::try_reclaim`] takes the whole allocation back with its pages still
//! mapped. A buffer whose payload is still alive is never handed out: the handle
//! only waits. Buffers that nothing uses are let go past [`IDLE_BYTES`] whenever a
//! frame comes in, and all the buffers held, in use or not, past [`HELD_BYTES`]; so
//! once the traffic stops, a process holds at most `HELD_BYTES` of them.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use bytes::BytesMut;

/// Buffers smaller than this are neither kept nor handed out: a small buffer is
/// cheap to make, and a small payload must not pin a large one.
pub const MIN_SIZE: usize = 256 << 10;
/// At most this many handles are kept.
const MAX_HANDLES: usize = 256;
/// Buffers held, in use or not, at most this many bytes. A client's get keeps 32 MiB
/// of payloads in flight at the defaults (4 ranges of 8 MiB), and a chunkserver a
/// few packets per write; the pool must reach past those to the buffers freed
/// meanwhile.
pub const HELD_BYTES: usize = 96 << 20;
/// Buffers that nothing uses any more, at most this many bytes each time one is
/// kept: a connection frees about as fast as it receives.
pub const IDLE_BYTES: usize = 32 << 20;

/// The buffers of one process's large frames (or of one test's codec).
#[derive(Debug, Default)]
pub struct Spares {
    held: Mutex<VecDeque<Held>>,
}

/// A handle on a large frame's buffer.
#[derive(Debug)]
struct Held {
    buf: BytesMut,
    /// The whole allocation's size (while the payload lives, `buf` sees only its tail).
    size: usize,
    /// Reclaimed: nothing else shares the allocation, and `buf` spans all of it.
    /// Stays so, since nobody else can reach a handle in the pool.
    free: bool,
}

impl Held {
    /// Whether nothing else shares the buffer's allocation any more.
    fn free(&mut self) -> bool {
        // More than the handle's own view can hold: only a buffer with no other
        // owner can grow into the rest of its allocation without allocating.
        self.free = self.free || self.buf.try_reclaim(self.buf.capacity().saturating_add(1));
        self.free
    }
}

/// The pool every codec uses unless a test gives it its own.
pub static SHARED: Spares = Spares::new();

impl Spares {
    pub const fn new() -> Spares {
        Spares {
            held: Mutex::new(VecDeque::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Held>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An empty buffer with room for at least `need` bytes (and not more than
    /// twice that) that nothing else uses, if one is held.
    fn take(&self, need: usize) -> Option<BytesMut> {
        if need < MIN_SIZE {
            return None;
        }
        let most = need.saturating_mul(2);
        let mut held = self.lock();
        let at = held
            .iter_mut()
            .position(|h| h.free() && (need..=most).contains(&h.buf.capacity()))?;
        held.remove(at).map(|h| h.buf)
    }

    /// An empty buffer with room for `need` bytes: a free one when there is one,
    /// else a new one.
    pub fn room(&self, need: usize) -> BytesMut {
        self.take(need)
            .unwrap_or_else(|| BytesMut::with_capacity(need))
    }

    /// Keeps `buf` (what is left of a large frame's read buffer of `size` bytes,
    /// its payload handed out) until the payload is dropped and a later frame can
    /// use it.
    pub fn keep(&self, mut buf: BytesMut, size: usize) {
        if size < MIN_SIZE {
            return;
        }
        buf.clear();
        let mut held = self.lock();
        held.push_back(Held {
            buf,
            size,
            free: false,
        });
        // Newest first, so that the oldest are the ones let go.
        let (mut handles, mut all, mut idle) = (0usize, 0usize, 0usize);
        let mut i = held.len();
        while i > 0 {
            i -= 1;
            let h = &mut held[i];
            let free = h.free();
            let size = h.size;
            if handles == MAX_HANDLES
                || all.saturating_add(size) > HELD_BYTES
                || free && idle.saturating_add(size) > IDLE_BYTES
            {
                held.remove(i);
                continue;
            }
            handles += 1;
            all += size;
            if free {
                idle += size;
            }
        }
    }

    /// Bytes held in buffers nothing else uses.
    #[cfg(test)]
    fn idle_bytes(&self) -> usize {
        self.lock()
            .iter_mut()
            .filter_map(|h| h.free().then_some(h.buf.capacity()))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};
    use tokio_util::codec::{Decoder, Encoder};

    use super::{Spares, HELD_BYTES, IDLE_BYTES};
    use crate::frame::{Frame, FrameCodec, Limits, PAYLOAD_ALIGN, READ_BUFFER};
    use crate::ids::RequestId;
    use crate::message::{ChunkRequest, Request};

    fn pool() -> &'static Spares {
        Box::leak(Box::new(Spares::new()))
    }

    fn wire(fill: u8) -> BytesMut {
        let frame = Frame::request(
            RequestId(7),
            Request::Chunk(ChunkRequest::WritePacket { last: false }),
        )
        .with_payload(Bytes::from(vec![fill; 1 << 20]));
        let mut out = BytesMut::new();
        FrameCodec::new(Limits::default())
            .encode(frame, &mut out)
            .expect("encodes");
        out
    }

    /// Decodes one frame that arrives in two reads, as from a socket, into the read
    /// buffer `src` the connection carries from frame to frame.
    fn arrive(codec: &mut FrameCodec, src: &mut BytesMut, fill: u8) -> Frame {
        let wire = wire(fill);
        src.extend_from_slice(&wire[..100]);
        assert!(codec.decode(src).expect("decodes").is_none());
        src.extend_from_slice(&wire[100..]);
        codec.decode(src).expect("decodes").expect("a whole frame")
    }

    #[test]
    fn a_dropped_payload_s_buffer_serves_the_next_frame() {
        let spares = pool();
        let mut codec = FrameCodec::new(Limits::default()).with_spares(spares);
        let mut src = BytesMut::with_capacity(READ_BUFFER);
        let first = arrive(&mut codec, &mut src, 1);
        let at = first.payload.as_ptr();
        assert_eq!(spares.idle_bytes(), 0, "the payload still uses it");
        drop(first);
        assert!(spares.idle_bytes() >= 1 << 20);
        let second = arrive(&mut codec, &mut src, 2);
        assert_eq!(second.payload.as_ptr(), at, "the same memory, used again");
        assert!(second.payload.iter().all(|&b| b == 2));
        assert_eq!(spares.idle_bytes(), 0);
    }

    #[test]
    fn a_live_payload_s_buffer_is_never_reused() {
        let spares = pool();
        let mut codec = FrameCodec::new(Limits::default()).with_spares(spares);
        let mut src = BytesMut::with_capacity(READ_BUFFER);
        let first = arrive(&mut codec, &mut src, 1);
        let kept = first.payload.slice(10..20);
        drop(first);
        let second = arrive(&mut codec, &mut src, 2);
        assert!(kept.iter().all(|&b| b == 1), "a slice keeps its bytes");
        assert!(second.payload.iter().all(|&b| b == 2));
        drop(kept);
        drop(second);
        let third = arrive(&mut codec, &mut src, 3);
        assert!(third.payload.iter().all(|&b| b == 3));
    }

    #[test]
    fn aligned_payloads_reuse_buffers_and_stay_aligned() {
        let spares = pool();
        let mut codec = FrameCodec::new(Limits::default())
            .aligning_payloads(true)
            .with_spares(spares);
        let mut src = BytesMut::with_capacity(READ_BUFFER);
        let mut seen = Vec::new();
        for fill in 1..=4u8 {
            let frame = arrive(&mut codec, &mut src, fill);
            assert_eq!(frame.payload.as_ptr() as usize % PAYLOAD_ALIGN, 0);
            assert!(frame.payload.iter().all(|&b| b == fill));
            seen.push(frame.payload.as_ptr() as usize / PAYLOAD_ALIGN);
        }
        seen.dedup();
        assert_eq!(seen.len(), 1, "one buffer served every frame: {seen:?}");
    }

    /// A megabyte buffer as the codec leaves it: its first kilobyte handed out.
    fn cut() -> (BytesMut, Bytes) {
        let mut buf = BytesMut::with_capacity(1 << 20);
        buf.resize(1000, 0);
        let payload = buf.split_to(1000).freeze();
        (buf, payload)
    }

    #[test]
    fn buffers_held_are_bounded() {
        let spares = pool();
        // Freed before they are kept (a frame with no payload): bounded at once.
        for _ in 0..100 {
            let (buf, payload) = cut();
            drop(payload);
            spares.keep(buf, 1 << 20);
        }
        let idle = spares.idle_bytes();
        assert!(idle > IDLE_BYTES / 2 && idle <= IDLE_BYTES, "{idle}");
        assert!(spares
            .take(1 << 20)
            .is_some_and(|b| b.capacity() >= 1 << 20));
        assert!(spares.take(64 << 20).is_none(), "none that large");
        assert!(spares.take(300 << 10).is_none(), "none that small");
        assert!(
            spares.take(100 << 10).is_none(),
            "small ones are made afresh"
        );
        // Freed after they are kept, every one at once when the traffic stops.
        let live: Vec<Bytes> = (0..300)
            .map(|_| {
                let (buf, payload) = cut();
                spares.keep(buf, 1 << 20);
                payload
            })
            .collect();
        drop(live);
        let idle = spares.idle_bytes();
        assert!(idle > IDLE_BYTES && idle <= HELD_BYTES, "{idle}");
    }
}
