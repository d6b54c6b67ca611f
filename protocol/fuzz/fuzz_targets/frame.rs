//! The frame decoder on arbitrary bytes, fed in arbitrary pieces: it must never
//! panic, never allocate past the limits, and every frame it yields re-encodes.
#![no_main]

use bytes::BytesMut;
use dfs_protocol::{FrameCodec, Limits};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, Encoder};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_header: 1 << 16,
        max_payload: 1 << 16,
    };
    let mut codec = FrameCodec::new(limits);
    // The first byte picks how the input is split, as a socket would deliver it.
    let (step, data) = match data.split_first() {
        Some((s, rest)) => (usize::from(*s).max(1), rest),
        None => return,
    };
    let mut buf = BytesMut::new();
    for piece in data.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    let mut out = BytesMut::new();
                    codec
                        .encode(frame, &mut out)
                        .expect("a decoded frame encodes again");
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = codec.decode_eof(&mut buf);
});
