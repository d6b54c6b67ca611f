//! Every message type: arbitrary bytes as a request or response header behind a
//! valid prelude, so the fuzzer spends its time in the bincode decoding of each
//! message rather than in the prelude checks.
#![no_main]

use bytes::{BufMut, BytesMut};
use dfs_protocol::frame::{FRAME_MAGIC, FRAME_VERSION};
use dfs_protocol::{Body, FrameCodec, Limits};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, Encoder};

fuzz_target!(|data: &[u8]| {
    let Some((kind, header)) = data.split_first() else {
        return;
    };
    let kind = 1 + (kind & 1);
    let mut buf = BytesMut::new();
    buf.put_u16(FRAME_MAGIC);
    buf.put_u8(FRAME_VERSION);
    buf.put_u8(kind);
    buf.put_u64(7);
    buf.put_u32(header.len() as u32);
    buf.put_u32(0);
    buf.extend_from_slice(header);
    let mut codec = FrameCodec::new(Limits::default());
    if let Ok(Some(frame)) = codec.decode(&mut buf) {
        // Names are total, and what decoded encodes to the same header.
        let _ = match &frame.body {
            Body::Request(r) => r.name(),
            Body::Response(r) => r.name(),
        };
        // bincode accepts non-minimal varints, so the input bytes may differ from
        // the encoding; the encoding itself must be stable: encoding what it
        // decodes to gives the same bytes (floats may be NaN, so compare bytes).
        let mut first = BytesMut::new();
        codec.encode(frame, &mut first).expect("re-encode");
        let bytes = first.clone();
        let again = codec.decode(&mut first).expect("decode again").expect("a whole frame");
        let mut second = BytesMut::new();
        codec.encode(again, &mut second).expect("encode again");
        assert_eq!(bytes, second, "encode(decode(encode(frame))) == encode(frame)");
    }
});
