//! The frame format and its tokio-util codec.
//!
//! ```text
//! offset size field
//!      0    2 magic            0xDF5A, big-endian
//!      2    1 frame version    FRAME_VERSION
//!      3    1 kind             1 = request, 2 = response
//!      4    8 request id       big-endian u64
//!     12    4 header length    big-endian u32, <= limits.max_header
//!     16    4 payload length   big-endian u32, <= limits.max_payload
//!     20    … header           bincode (standard config, byte-limited) of Request or Response
//!      …    … payload          raw bytes, never through serde
//! ```
//!
//! Both lengths are checked against the limits as soon as the 20-byte prelude is in,
//! before anything is allocated for the frame.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::CodecError;
use crate::ids::RequestId;
use crate::message::{Request, Response};
use crate::spares::{self, Spares};

/// First two bytes of every frame.
pub const FRAME_MAGIC: u16 = 0xDF5A;
/// Layout version of the fixed prelude.
pub const FRAME_VERSION: u8 = 1;
/// Size of the fixed prelude in bytes.
pub const PRELUDE_LEN: usize = 20;
/// Default cap on the bincode header (directory listings are the largest headers).
pub const DEFAULT_MAX_HEADER: u32 = 16 << 20;
/// Default cap on a frame's payload; data packets are far smaller.
pub const DEFAULT_MAX_PAYLOAD: u32 = 8 << 20;

/// Read buffer a connection starts with and returns to after a large frame: small,
/// so idle connections cost little; the codec reserves a whole frame at once when
/// its prelude arrives.
pub const READ_BUFFER: usize = 16 << 10;
/// A frame at least this large is decoded out of a buffer reserved for it, which the
/// codec then lets go rather than keep for the connection's life (to the process's
/// pool of [`crate::spares`], from which it reads later large frames).
const RELEASE_AFTER: usize = crate::spares::MIN_SIZE;
/// Large payloads start at a multiple of this in memory (when the codec is asked
/// to: [`FrameCodec::aligning_payloads`]), so that a chunkserver can hand them to an
/// `O_DIRECT` write as they are instead of copying them into an
/// aligned buffer (4 KiB: the logical block size of common devices).
pub const PAYLOAD_ALIGN: usize = 4096;
/// Payloads of at least this many bytes are aligned (see [`PAYLOAD_ALIGN`]).
const ALIGN_FROM: usize = 64 << 10;

const KIND_REQUEST: u8 = 1;
const KIND_RESPONSE: u8 = 2;

/// What a frame's header carries.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    Request(Request),
    Response(Response),
}

/// One frame: a typed header plus an optional raw payload.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    pub request_id: RequestId,
    pub body: Body,
    pub payload: Bytes,
}

impl Frame {
    pub fn request(request_id: RequestId, request: Request) -> Frame {
        Frame {
            request_id,
            body: Body::Request(request),
            payload: Bytes::new(),
        }
    }

    pub fn response(request_id: RequestId, response: Response) -> Frame {
        Frame {
            request_id,
            body: Body::Response(response),
            payload: Bytes::new(),
        }
    }

    pub fn with_payload(mut self, payload: Bytes) -> Frame {
        self.payload = payload;
        self
    }
}

/// Size limits enforced by the codec in both directions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_header: u32,
    pub max_payload: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header: DEFAULT_MAX_HEADER,
            max_payload: DEFAULT_MAX_PAYLOAD,
        }
    }
}

fn bincode_config() -> impl bincode::config::Config {
    // The limit bounds every length the header claims (strings, vectors) so a hostile
    // header cannot make the decoder allocate more than a legitimate one could.
    bincode::config::standard().with_limit::<{ DEFAULT_MAX_HEADER as usize }>()
}

/// Encodes a frame's prelude and header; the payload is written after it as is.
pub fn encode_head(frame: &Frame, limits: Limits) -> Result<BytesMut, CodecError> {
    encode_head_for(frame, frame.payload.len(), limits)
}

/// [`encode_head`] for a payload of `payload_len` bytes that is not in the frame:
/// its sender writes them after the head some other way (a chunkserver with
/// `sendfile`), and must write exactly that many.
pub fn encode_head_for(
    frame: &Frame,
    payload_len: usize,
    limits: Limits,
) -> Result<BytesMut, CodecError> {
    let (kind, header) = match &frame.body {
        Body::Request(r) => (
            KIND_REQUEST,
            bincode::serde::encode_to_vec(r, bincode_config())?,
        ),
        Body::Response(r) => (
            KIND_RESPONSE,
            bincode::serde::encode_to_vec(r, bincode_config())?,
        ),
    };
    let header_len = checked_len(header.len(), limits.max_header, true)?;
    let payload_len = checked_len(payload_len, limits.max_payload, false)?;
    let mut head = BytesMut::with_capacity(PRELUDE_LEN + header.len());
    head.put_u16(FRAME_MAGIC);
    head.put_u8(FRAME_VERSION);
    head.put_u8(kind);
    head.put_u64(frame.request_id.0);
    head.put_u32(header_len);
    head.put_u32(payload_len);
    head.put_slice(&header);
    Ok(head)
}

fn checked_len(len: usize, max: u32, header: bool) -> Result<u32, CodecError> {
    match u32::try_from(len) {
        Ok(l) if l <= max => Ok(l),
        _ => {
            let (len, max) = (len as u64, u64::from(max));
            Err(if header {
                CodecError::HeaderTooLarge { len, max }
            } else {
                CodecError::PayloadTooLarge { len, max }
            })
        }
    }
}

/// The codec: `decode` yields whole frames, `encode` appends one to a buffer.
///
/// Hot data paths write frames with [`crate::conn::write_frame`] instead of `encode`,
/// so the payload goes to the socket with a vectored write and is never copied.
#[derive(Clone, Copy, Debug)]
pub struct FrameCodec {
    limits: Limits,
    /// Whether large payloads are placed at aligned addresses (see
    /// [`FrameCodec::aligning_payloads`]).
    align: bool,
    /// Where large frames' buffers are kept for reuse (see [`crate::spares`]).
    spares: &'static Spares,
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new(Limits::default())
    }
}

impl FrameCodec {
    pub fn new(limits: Limits) -> Self {
        FrameCodec {
            limits,
            align: false,
            spares: &spares::SHARED,
        }
    }

    /// The codec with a pool of its own instead of the process's (for tests that
    /// look at what the pool holds).
    pub fn with_spares(mut self, spares: &'static Spares) -> Self {
        self.spares = spares;
        self
    }

    /// Places every payload of 64 KiB or more at a multiple of [`PAYLOAD_ALIGN`]
    /// in memory, for a receiver that writes payloads with `O_DIRECT` (a
    /// chunkserver). Off by default: a receiver that does not paid for it in
    /// fresh buffers, 9% more CPU in a client's get.
    pub fn aligning_payloads(mut self, on: bool) -> Self {
        self.align = on;
        self
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }
}

/// The validated fixed part of a frame.
struct Prelude {
    kind: u8,
    request_id: u64,
    header_len: usize,
    payload_len: usize,
}

impl Prelude {
    fn parse(mut b: &[u8], limits: Limits) -> Result<Prelude, CodecError> {
        let magic = b.get_u16();
        if magic != FRAME_MAGIC {
            return Err(CodecError::BadMagic(magic));
        }
        let version = b.get_u8();
        if version != FRAME_VERSION {
            return Err(CodecError::UnsupportedVersion(version));
        }
        let kind = b.get_u8();
        if kind != KIND_REQUEST && kind != KIND_RESPONSE {
            return Err(CodecError::BadKind(kind));
        }
        let request_id = b.get_u64();
        let header_len = b.get_u32();
        let payload_len = b.get_u32();
        if header_len > limits.max_header {
            return Err(CodecError::HeaderTooLarge {
                len: header_len.into(),
                max: limits.max_header.into(),
            });
        }
        if payload_len > limits.max_payload {
            return Err(CodecError::PayloadTooLarge {
                len: payload_len.into(),
                max: limits.max_payload.into(),
            });
        }
        Ok(Prelude {
            kind,
            request_id,
            // u32 always fits in usize on the 32- and 64-bit targets we build for.
            header_len: header_len as usize,
            payload_len: payload_len as usize,
        })
    }
}

fn decode_body(kind: u8, header: &[u8]) -> Result<Body, CodecError> {
    fn exact<T: serde::de::DeserializeOwned>(header: &[u8]) -> Result<T, CodecError> {
        let (value, used) = bincode::serde::decode_from_slice(header, bincode_config())?;
        if used != header.len() {
            return Err(CodecError::Decode(
                bincode::error::DecodeError::OtherString(format!(
                    "{} trailing bytes after the header",
                    header.len() - used
                )),
            ));
        }
        Ok(value)
    }
    Ok(match kind {
        KIND_REQUEST => Body::Request(exact(header)?),
        _ => Body::Response(exact(header)?),
    })
}

/// Moves the start of a frame of `total` bytes, whose payload begins `head` bytes in,
/// to a buffer of its own where that payload starts at a multiple of
/// [`PAYLOAD_ALIGN`], with room for the whole frame. The rest of the frame is then
/// read straight into place. Copies what has arrived so far (usually at most one
/// read buffer's worth); a payload already aligned where it is stays put.
fn realign(src: &mut BytesMut, head: usize, total: usize, spares: &Spares) {
    let aligned = |b: &BytesMut| (b.as_ptr() as usize + head).is_multiple_of(PAYLOAD_ALIGN);
    if aligned(src) && src.capacity() >= total {
        return;
    }
    // A buffer kept from an earlier large frame when one is free: its pages are
    // already mapped.
    let mut fresh = spares.room(total + PAYLOAD_ALIGN);
    let pad = (PAYLOAD_ALIGN - (fresh.as_ptr() as usize + head) % PAYLOAD_ALIGN) % PAYLOAD_ALIGN;
    fresh.resize(pad, 0);
    fresh.advance(pad);
    fresh.extend_from_slice(src);
    debug_assert!(aligned(&fresh) && fresh.capacity() >= total);
    *src = fresh;
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        if src.len() < PRELUDE_LEN {
            return Ok(None);
        }
        let prelude = Prelude::parse(&src[..PRELUDE_LEN], self.limits)?;
        let total = PRELUDE_LEN + prelude.header_len + prelude.payload_len;
        if src.len() < total {
            if self.align && prelude.payload_len >= ALIGN_FROM {
                realign(src, PRELUDE_LEN + prelude.header_len, total, self.spares);
            } else if total >= RELEASE_AFTER && src.capacity() < total {
                // The frame gets a buffer of its own (let go below once it is in),
                // one kept from an earlier large frame when one is free.
                let mut fresh = self.spares.room(total);
                fresh.extend_from_slice(src);
                *src = fresh;
            } else {
                // Bounded by the limits checked above; one reservation instead of many
                // regrowths.
                src.reserve(total - src.len());
            }
            return Ok(None);
        }
        src.advance(PRELUDE_LEN);
        let header = src.split_to(prelude.header_len);
        let payload = src.split_to(prelude.payload_len).freeze();
        let body = decode_body(prelude.kind, &header);
        // Dropped before the buffer is kept: a frame without a payload leaves it free.
        drop(header);
        if total >= RELEASE_AFTER && src.len() <= READ_BUFFER {
            // `src` still shares the allocation reserved for this frame. Kept, every
            // connection would hold its largest frame for good: after 300 full chunk
            // reports of 2.3 MB each, 690 MB of a master's memory. What is left of
            // the read (at most a small buffer's worth) moves to a small buffer, and
            // the large one goes to the pool, bounded for the whole process, for a
            // later frame once its payload is dropped.
            let size = total.saturating_add(src.capacity());
            let mut fresh = BytesMut::with_capacity(READ_BUFFER);
            fresh.extend_from_slice(src);
            self.spares.keep(std::mem::replace(src, fresh), size);
        }
        Ok(Some(Frame {
            request_id: RequestId(prelude.request_id),
            body: body?,
            payload,
        }))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        match self.decode(buf)? {
            Some(frame) => Ok(Some(frame)),
            None if buf.is_empty() => Ok(None),
            None => Err(CodecError::Truncated),
        }
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        let head = encode_head(&frame, self.limits)?;
        dst.reserve(head.len() + frame.payload.len());
        dst.put(head);
        dst.put(frame.payload);
        Ok(())
    }
}
