//! Codec throughput: a 1 MiB data packet through encode + decode, and a metadata frame.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dfs_protocol::frame::encode_head;
use dfs_protocol::ChunkRequest;
use dfs_protocol::*;
use tokio_util::codec::Decoder;

fn data_packet(c: &mut Criterion) {
    let payload = Bytes::from(vec![7u8; PACKET_SIZE]);
    let frame = Frame::request(
        RequestId(1),
        Request::Chunk(ChunkRequest::WritePacket { last: false }),
    )
    .with_payload(payload);
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Bytes(PACKET_SIZE as u64));
    // The receive side as a socket sees it: bytes land in the read buffer once (standing
    // in for the kernel copy) and the payload is split off without another copy.
    group.bench_function("decode_1MiB_packet", |b| {
        let head = encode_head(&frame, Limits::default()).expect("encode");
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::with_capacity(head.len() + PACKET_SIZE);
        b.iter(|| {
            buf.extend_from_slice(&head);
            buf.extend_from_slice(&frame.payload);
            let f = codec.decode(&mut buf).expect("decode").expect("whole");
            black_box(f.payload.len())
        })
    });
    group.bench_function("encode_head_1MiB_packet", |b| {
        b.iter(|| {
            black_box(
                encode_head(black_box(&frame), Limits::default())
                    .expect("encode")
                    .len(),
            )
        })
    });
    group.finish();
}

fn metadata_frame(c: &mut Criterion) {
    let stat = Response::Stat(FileStat {
        path: "/some/dir/file.bin".into(),
        kind: FileKind::File,
        size: 10 << 30,
        replication: 3,
        mtime: 1_800_000_000,
        chunks: (0..160)
            .map(|_| ChunkInfo {
                handle: ChunkHandle::random(),
                version: ChunkVersion::FIRST,
                size: 64 << 20,
                replicas: vec![
                    "10.0.0.1:7071".into(),
                    "10.0.0.2:7071".into(),
                    "10.0.0.3:7071".into(),
                ],
                open: false,
                primary: None,
                token: dfs_protocol::ChunkToken::sign(
                    &dfs_protocol::ClusterSecret::generate().token_key(),
                    ChunkHandle::random(),
                    ChunkVersion::FIRST,
                    dfs_protocol::auth::ops::READ,
                    1_800_000_000,
                ),
            })
            .collect(),
        mode: 0o644,
        uid: 1000,
        gid: 1000,
        atime: 1_800_000_000,
    });
    let frame = Frame::response(RequestId(9), stat);
    c.bench_function("codec/roundtrip_stat_160_chunks", |b| {
        let mut codec = FrameCodec::default();
        b.iter(|| {
            let mut buf = encode_head(&frame, Limits::default()).expect("encode");
            black_box(codec.decode(&mut buf).expect("decode").expect("whole"))
        })
    });
}

criterion_group!(benches, data_packet, metadata_frame);
criterion_main!(benches);
