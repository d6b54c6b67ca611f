//! Replays the fuzz corpora (`protocol/fuzz/corpus/`) through the decoders on the
//! stable toolchain, so every input the fuzzer kept stays a regression test in CI.

use std::path::PathBuf;

use bytes::BytesMut;
use dfs_protocol::{ChunkToken, ClientKey, ClusterSecret, FrameCodec, Limits};
use tokio_util::codec::{Decoder, Encoder};

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("entry").path();
        out.push(std::fs::read(&path).expect("read"));
    }
    assert!(!out.is_empty(), "the {target} corpus is empty");
    out
}

#[test]
fn frame_corpus_decodes_without_panics() {
    for input in corpus("frame") {
        let Some((step, data)) = input.split_first() else {
            continue;
        };
        let mut codec = FrameCodec::new(Limits {
            max_header: 1 << 16,
            max_payload: 1 << 16,
        });
        let mut buf = BytesMut::new();
        for piece in data.chunks(usize::from(*step).max(1)) {
            buf.extend_from_slice(piece);
            while let Ok(Some(frame)) = codec.decode(&mut buf) {
                let mut out = BytesMut::new();
                codec.encode(frame, &mut out).expect("re-encode");
            }
        }
    }
}

#[test]
fn message_corpus_encodes_stably() {
    use bytes::BufMut;
    for input in corpus("message") {
        let Some((kind, header)) = input.split_first() else {
            continue;
        };
        let mut buf = BytesMut::new();
        buf.put_u16(dfs_protocol::frame::FRAME_MAGIC);
        buf.put_u8(dfs_protocol::frame::FRAME_VERSION);
        buf.put_u8(1 + (kind & 1));
        buf.put_u64(7);
        buf.put_u32(header.len() as u32);
        buf.put_u32(0);
        buf.extend_from_slice(header);
        let mut codec = FrameCodec::new(Limits::default());
        if let Ok(Some(frame)) = codec.decode(&mut buf) {
            let mut first = BytesMut::new();
            codec.encode(frame, &mut first).expect("encode");
            let bytes = first.clone();
            let again = codec.decode(&mut first).expect("decode").expect("frame");
            let mut second = BytesMut::new();
            codec.encode(again, &mut second).expect("encode");
            assert_eq!(bytes, second);
        }
    }
}

#[test]
fn token_corpus_never_passes_a_forgery() {
    let secret = ClusterSecret::parse(&format!("dfs-secret:{}", "7f".repeat(32))).expect("secret");
    let key = secret.token_key();
    let config = bincode::config::standard().with_limit::<4096>();
    for input in corpus("token") {
        if let Ok((t, _)) = bincode::serde::decode_from_slice::<ChunkToken, _>(&input, config) {
            let genuine = ChunkToken::sign(&key, t.handle, t.version, t.ops, t.expires);
            assert_eq!(
                t.check(&key, t.handle, t.version, t.ops, 0).is_ok(),
                t == genuine
            );
        }
        if let Ok(text) = std::str::from_utf8(&input) {
            let _ = ClientKey::parse(text);
            let _ = ClusterSecret::parse(text);
        }
    }
}
