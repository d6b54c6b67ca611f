//! Codec properties: round trips, garbage never panics, limits apply before allocation,
//! and golden bytes pin the encoding.

use bytes::{BufMut, Bytes, BytesMut};
use dfs_protocol::frame::{encode_head, FRAME_MAGIC, FRAME_VERSION, PRELUDE_LEN};
use dfs_protocol::*;
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};
use uuid::Uuid;

fn handle() -> impl Strategy<Value = ChunkHandle> {
    any::<u128>().prop_map(|v| ChunkHandle(Uuid::from_u128(v)))
}

fn token() -> impl Strategy<Value = ChunkToken> {
    (
        handle(),
        any::<u64>(),
        any::<u8>(),
        any::<u64>(),
        any::<[u8; 32]>(),
    )
        .prop_map(|(handle, v, ops, expires, mac)| ChunkToken {
            handle,
            version: ChunkVersion(v),
            ops,
            expires,
            mac,
        })
}

fn report() -> impl Strategy<Value = ChunkReport> {
    (handle(), any::<u64>(), any::<u64>()).prop_map(|(handle, v, size)| ChunkReport {
        handle,
        version: ChunkVersion(v),
        size,
    })
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u32>()).prop_map(|(magic, version)| Request::Hello {
            magic,
            version,
            peer: PeerKind::Client
        }),
        (".*", any::<bool>())
            .prop_map(|(path, parents)| Request::Master(ClientToMaster::Mkdir { path, parents })),
        ".*".prop_map(|path| Request::Master(ClientToMaster::List { path })),
        ".*".prop_map(|path| Request::Master(ClientToMaster::Stat { path })),
        (".*", any::<bool>(), any::<bool>()).prop_map(|(path, recursive, skip_trash)| {
            Request::Master(ClientToMaster::Delete {
                path,
                recursive,
                skip_trash,
            })
        }),
        (".*", ".*").prop_map(|(src, dst)| Request::Master(ClientToMaster::Rename { src, dst })),
        Just(Request::Master(ClientToMaster::TrashList)),
        ".*".prop_map(|path| Request::Master(ClientToMaster::Fsck { path })),
        (
            any::<u128>(),
            handle(),
            proptest::collection::vec(".*", 0..3)
        )
            .prop_map(|(u, handle, failed)| {
                Request::Master(ClientToMaster::RetryChunk {
                    upload: UploadId(Uuid::from_u128(u)),
                    handle,
                    failed,
                })
            }),
        (".*", any::<u32>()).prop_map(|(path, replication)| Request::Master(
            ClientToMaster::SetReplication { path, replication }
        )),
        (".*", any::<bool>())
            .prop_map(|(addr, on)| Request::Master(ClientToMaster::Decommission { addr, on })),
        proptest::option::of(any::<u32>()).prop_map(|threshold_percent| Request::Master(
            ClientToMaster::Balance { threshold_percent }
        )),
        ".*".prop_map(|path| Request::Master(ClientToMaster::TrashRestore { path })),
        (".*", proptest::option::of(any::<u32>()), any::<bool>()).prop_map(
            |(path, replication, overwrite)| Request::Master(ClientToMaster::BeginPut {
                path,
                replication,
                overwrite
            })
        ),
        any::<u128>().prop_map(|u| Request::Master(ClientToMaster::AllocateChunk {
            upload: UploadId(Uuid::from_u128(u))
        })),
        (
            any::<u128>(),
            proptest::collection::vec((handle(), any::<u64>()), 0..20)
        )
            .prop_map(|(u, chunks)| Request::Master(ClientToMaster::CommitPut {
                upload: UploadId(Uuid::from_u128(u)),
                chunks: chunks
                    .into_iter()
                    .map(|(handle, size)| CommittedChunk { handle, size })
                    .collect()
            })),
        Just(Request::Master(ClientToMaster::Status)),
        (
            any::<u128>(),
            ".*",
            any::<u64>(),
            proptest::collection::vec(report(), 0..20)
        )
            .prop_map(|(id, addr, capacity, chunks)| Request::Report(
                ChunkserverToMaster::Register {
                    server: ServerId(Uuid::from_u128(id)),
                    addr,
                    capacity,
                    used: capacity / 2,
                    chunks,
                    id_key: [3; 32],
                }
            )),
        (
            handle(),
            any::<u64>(),
            proptest::collection::vec(".*", 0..3),
            token()
        )
            .prop_map(|(handle, v, downstream, token)| Request::Chunk(
                ChunkRequest::WriteChunk {
                    handle,
                    version: ChunkVersion(v),
                    downstream,
                    token
                }
            )),
        any::<bool>().prop_map(|last| Request::Chunk(ChunkRequest::WritePacket { last })),
        (handle(), any::<u64>(), any::<u64>(), any::<u64>(), token()).prop_map(
            |(handle, v, offset, len, token)| Request::Chunk(ChunkRequest::ReadChunk {
                handle,
                version: ChunkVersion(v),
                offset,
                len,
                token
            })
        ),
        (".*", any::<[u8; 32]>()).prop_map(|(name, nonce)| Request::Auth {
            credential: Credential::Key { name },
            nonce
        }),
        any::<[u8; 32]>().prop_map(|proof| Request::Proof { proof }),
        (".*", any::<bool>()).prop_map(|(name, admin)| Request::Master(
            ClientToMaster::CreateKey {
                name,
                role: if admin { Role::Admin } else { Role::ReadOnly }
            }
        )),
        Just(Request::Master(ClientToMaster::ListKeys)),
        ".*".prop_map(|name| Request::Master(ClientToMaster::RemoveKey { name })),
        ".*".prop_map(|path| Request::Master(ClientToMaster::Touch { path })),
        (".*", proptest::option::of(".*"), any::<u32>()).prop_map(|(path, after, limit)| {
            Request::Master(ClientToMaster::ListPage { path, after, limit })
        }),
        (proptest::option::of(any::<u64>()), any::<u32>())
            .prop_map(|(after, limit)| Request::Master(ClientToMaster::TrashPage { after, limit })),
        (".*", proptest::option::of(".*"), any::<u32>()).prop_map(|(path, after, limit)| {
            Request::Master(ClientToMaster::FsckPage { path, after, limit })
        }),
        (proptest::option::of(".*"), any::<u32>()).prop_map(|(after, limit)| Request::Master(
            ClientToMaster::StatusPage { after, limit }
        )),
        (
            ".*",
            any::<bool>(),
            handle(),
            any::<u64>(),
            proptest::option::of(".*")
        )
            .prop_map(|(path, create, handle, v, addr)| Request::Master(
                ClientToMaster::AppendTarget {
                    path,
                    create,
                    replication: None,
                    report: Some(AppendReport::Failed {
                        handle,
                        version: ChunkVersion(v),
                        addr
                    }),
                }
            )),
        (
            handle(),
            any::<u64>(),
            proptest::collection::vec(".*", 0..3),
            token()
        )
            .prop_map(|(handle, v, secondaries, token)| Request::Order(
                MasterOrder::GrantLease(LeaseGrant {
                    handle,
                    from: Some(ChunkVersion(v)),
                    version: ChunkVersion(v.wrapping_add(1)),
                    secondaries,
                    lease_ms: v,
                    chunk_size: 64 << 20,
                    max_append: 16 << 20,
                    token,
                })
            )),
        (handle(), any::<u64>(), any::<u64>(), token()).prop_map(|(handle, v, len, token)| {
            Request::Chunk(ChunkRequest::Append {
                handle,
                version: ChunkVersion(v),
                len,
                token,
            })
        }),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        ".*".prop_map(|path| Response::Error(ErrorCode::NotFound { path })),
        (handle(), any::<u64>(), any::<u64>()).prop_map(|(handle, a, b)| Response::Error(
            ErrorCode::StaleVersion {
                handle,
                have: ChunkVersion(a),
                want: ChunkVersion(b)
            }
        )),
        any::<u32>().prop_map(|version| Response::HelloOk { version }),
        Just(Response::Ok),
        proptest::collection::vec((".*", any::<bool>(), any::<u64>()), 0..10).prop_map(|es| {
            Response::Listing {
                entries: es
                    .into_iter()
                    .map(|(name, dir, size)| DirEntry {
                        name,
                        kind: if dir { FileKind::Dir } else { FileKind::File },
                        size,
                        mtime: size / 3,
                        replication: (size % 5) as u32,
                    })
                    .collect(),
            }
        }),
        (
            ".*",
            any::<u64>(),
            proptest::collection::vec((handle(), ".*", token()), 0..5)
        )
            .prop_map(|(path, size, chunks)| Response::Stat(FileStat {
                path,
                kind: FileKind::File,
                size,
                replication: 3,
                mtime: 7,
                chunks: chunks
                    .into_iter()
                    .map(|(handle, addr, token)| ChunkInfo {
                        handle,
                        version: ChunkVersion(1),
                        size,
                        replicas: vec![addr.clone()],
                        open: size % 2 == 0,
                        primary: (size % 3 == 0).then_some(addr),
                        token,
                    })
                    .collect(),
                mode: (size % 0o7777) as u32,
                uid: (size >> 8) as u32,
                gid: (size >> 16) as u32,
                atime: size / 5,
            })),
        (handle(), proptest::collection::vec(".*", 0..4), token()).prop_map(
            |(handle, replicas, token)| {
                Response::ChunkAllocated(ChunkAllocation {
                    handle,
                    version: ChunkVersion::FIRST,
                    replicas,
                    token,
                })
            }
        ),
        (any::<[u8; 32]>(), any::<[u8; 32]>())
            .prop_map(|(nonce, proof)| Response::Challenge { nonce, proof }),
        (
            proptest::collection::vec(".*", 0..4),
            proptest::option::of(".*")
        )
            .prop_map(|(names, next)| Response::ListingPage {
                entries: names
                    .into_iter()
                    .map(|name| DirEntry {
                        name,
                        kind: FileKind::Dir,
                        size: 0,
                        mtime: 1,
                        replication: 0,
                    })
                    .collect(),
                next
            }),
        Just(Response::Authenticated {
            role: Some(Role::ReadWrite)
        }),
        (".*", any::<[u8; 32]>()).prop_map(|(name, sealed)| Response::KeyCreated {
            name,
            role: Role::Admin,
            sealed
        }),
        proptest::collection::vec((".*", any::<u64>()), 0..4).prop_map(|keys| Response::Keys {
            keys: keys
                .into_iter()
                .map(|(name, created)| KeyInfo {
                    name,
                    role: Role::ReadOnly,
                    created
                })
                .collect()
        }),
        (
            any::<bool>(),
            proptest::collection::vec(handle(), 0..10),
            proptest::collection::vec((handle(), any::<u64>(), ".*", token()), 0..4),
            proptest::option::of((any::<u64>(), proptest::collection::vec(".*", 0..3)))
        )
            .prop_map(
                |(reregister, delete, orders, keys)| Response::HeartbeatAck {
                    reregister,
                    delete,
                    replicate: orders
                        .into_iter()
                        .map(|(handle, size, source, token)| ReplicateOrder {
                            handle,
                            version: ChunkVersion(3),
                            size,
                            source,
                            token
                        })
                        .collect(),
                    extended: Vec::new(),
                    keys: keys.map(|(epoch, names)| KeyTable {
                        epoch,
                        keys: names
                            .into_iter()
                            .map(|name| dfs_protocol::auth::SealedKey {
                                name,
                                role: Role::ReadWrite,
                                sealed: [7; 32]
                            })
                            .collect()
                    }),
                }
            ),
        (handle(), any::<u64>()).prop_map(|(handle, size)| Response::ChunkWritten { handle, size }),
        (
            any::<bool>(),
            any::<u64>(),
            proptest::collection::vec(any::<[u8; 32]>(), 0..17)
        )
            .prop_map(|(last, offset, checksums)| Response::ReadData {
                last,
                offset,
                checksums
            }),
        (".*", any::<u64>(), any::<bool>()).prop_map(|(path, n, safe_mode)| Response::Fsck(
            FsckReport {
                path: path.clone(),
                files: n,
                chunks: n,
                missing: 0,
                under_replicated: 1,
                corrupt: 2,
                stale: 3,
                over_replicated: 4,
                safe_mode,
                problems: vec![FileHealth {
                    path,
                    chunks: n,
                    missing: 0,
                    under_replicated: 1,
                    corrupt: 2,
                    stale: 3
                }],
            }
        )),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    (
        any::<u64>(),
        prop_oneof![
            request().prop_map(Body::Request),
            response().prop_map(Body::Response)
        ],
        proptest::collection::vec(any::<u8>(), 0..4096),
    )
        .prop_map(|(id, body, payload)| Frame {
            request_id: RequestId(id),
            body,
            payload: Bytes::from(payload),
        })
}

proptest! {
    #[test]
    fn every_frame_round_trips(frames in proptest::collection::vec(frame(), 1..6)) {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        for f in &frames {
            codec.encode(f.clone(), &mut buf).expect("encode");
        }
        for f in &frames {
            let got = codec.decode(&mut buf).expect("decode").expect("a whole frame");
            prop_assert_eq!(&got, f);
        }
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn a_frame_split_anywhere_decodes_once_whole(f in frame(), cut in any::<prop::sample::Index>()) {
        let mut codec = FrameCodec::default();
        let mut all = BytesMut::new();
        codec.encode(f.clone(), &mut all).expect("encode");
        let cut = cut.index(all.len());
        let mut buf = BytesMut::from(&all[..cut]);
        if cut < all.len() {
            prop_assert!(codec.decode(&mut buf).expect("partial is fine").is_none());
        }
        buf.extend_from_slice(&all[cut..]);
        prop_assert_eq!(codec.decode(&mut buf).expect("decode"), Some(f));
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::from(&bytes[..]);
        // Errors are fine; panics and unbounded allocation are not.
        while let Ok(Some(_)) = codec.decode(&mut buf) {}
        prop_assert!(buf.capacity() <= bytes.len().max(64) + (DEFAULT_LIMITS_TOTAL));
    }

    #[test]
    fn valid_prelude_with_garbage_header_never_panics(
        kind in 1u8..=2,
        header in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut buf = BytesMut::new();
        buf.put_u16(FRAME_MAGIC);
        buf.put_u8(FRAME_VERSION);
        buf.put_u8(kind);
        buf.put_u64(9);
        buf.put_u32(header.len() as u32);
        buf.put_u32(0);
        buf.put_slice(&header);
        let _ = FrameCodec::default().decode(&mut buf);
    }
}

const DEFAULT_LIMITS_TOTAL: usize = dfs_protocol::frame::DEFAULT_MAX_HEADER as usize
    + dfs_protocol::frame::DEFAULT_MAX_PAYLOAD as usize;

fn prelude(header_len: u32, payload_len: u32) -> BytesMut {
    let mut buf = BytesMut::with_capacity(PRELUDE_LEN);
    buf.put_u16(FRAME_MAGIC);
    buf.put_u8(FRAME_VERSION);
    buf.put_u8(1);
    buf.put_u64(1);
    buf.put_u32(header_len);
    buf.put_u32(payload_len);
    buf
}

#[test]
fn oversized_payload_is_refused_before_allocating() {
    let mut codec = FrameCodec::new(Limits {
        max_header: 1024,
        max_payload: 4096,
    });
    let mut buf = prelude(10, u32::MAX);
    let before = buf.capacity();
    let err = codec.decode(&mut buf).expect_err("must refuse");
    assert!(matches!(err, CodecError::PayloadTooLarge { .. }), "{err}");
    assert_eq!(buf.capacity(), before, "nothing was reserved for the frame");
}

#[test]
fn oversized_header_is_refused_before_allocating() {
    let mut codec = FrameCodec::new(Limits {
        max_header: 1024,
        max_payload: 4096,
    });
    let mut buf = prelude(1025, 0);
    let before = buf.capacity();
    let err = codec.decode(&mut buf).expect_err("must refuse");
    assert!(matches!(err, CodecError::HeaderTooLarge { .. }), "{err}");
    assert_eq!(buf.capacity(), before);
}

#[test]
fn a_large_frame_does_not_keep_its_buffer() {
    // A connection's read buffer grows to hold its largest frame; it must not stay
    // that large afterwards (a master with 300 connections of 2 MB reports kept
    // 690 MB that way). The buffer's own handle is what FramedRead keeps.
    let mut codec = FrameCodec::new(Limits::default());
    let reports: Vec<ChunkReport> = (0..100_000u128)
        .map(|i| ChunkReport {
            handle: ChunkHandle(Uuid::from_u128(i)),
            version: ChunkVersion(1),
            size: 1,
        })
        .collect();
    let big = Frame::request(
        RequestId(1),
        Request::Master(ClientToMaster::List {
            path: format!("{reports:?}"),
        }),
    );
    let small = Frame::request(RequestId(2), Request::Master(ClientToMaster::TrashList));
    let mut wire = BytesMut::new();
    codec.encode(big.clone(), &mut wire).expect("encode");
    codec.encode(small.clone(), &mut wire).expect("encode");
    let big_len = wire.len();
    assert!(big_len > 1 << 20, "the frame is large: {big_len}");
    // As FramedRead does: the prelude first, then the rest into the reserved space.
    let mut buf = BytesMut::with_capacity(16 << 10);
    buf.extend_from_slice(&wire[..PRELUDE_LEN]);
    assert!(codec.decode(&mut buf).expect("prelude").is_none());
    buf.extend_from_slice(&wire[PRELUDE_LEN..]);
    let first = codec.decode(&mut buf).expect("decode").expect("a frame");
    assert_eq!(first, big);
    assert!(
        buf.capacity() <= 64 << 10,
        "the buffer kept {} bytes after a {big_len}-byte frame",
        buf.capacity()
    );
    let second = codec.decode(&mut buf).expect("decode").expect("a frame");
    assert_eq!(second, small, "what followed the large frame is intact");
    assert!(buf.is_empty());
}

#[test]
fn encoder_refuses_a_payload_over_the_limit() {
    let limits = Limits {
        max_header: 1024,
        max_payload: 16,
    };
    let f = Frame::request(
        RequestId(1),
        Request::Chunk(ChunkRequest::WritePacket { last: true }),
    )
    .with_payload(Bytes::from(vec![0u8; 17]));
    assert!(matches!(
        encode_head(&f, limits),
        Err(CodecError::PayloadTooLarge { .. })
    ));
}

#[test]
fn wrong_magic_and_version_are_named() {
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..]);
    assert!(matches!(
        codec.decode(&mut buf),
        Err(CodecError::BadMagic(_))
    ));
    let mut buf = prelude(0, 0);
    buf[2] = 99;
    assert!(matches!(
        codec.decode(&mut buf),
        Err(CodecError::UnsupportedVersion(99))
    ));
}

#[test]
fn a_vector_length_claiming_more_than_the_limit_is_refused() {
    // A Listing header that claims 2^62 entries in its first bytes.
    let mut header = BytesMut::new();
    header.put_u8(3); // Response::Listing variant index (varint)
    header.put_u8(253); // bincode varint marker for a u64
    header.put_u64_le(1 << 62);
    let mut buf = prelude(header.len() as u32, 0);
    buf[3] = 2;
    buf.put_slice(&header);
    assert!(matches!(
        FrameCodec::default().decode(&mut buf),
        Err(CodecError::Decode(_))
    ));
}

/// Pins the encoding: a change here breaks every deployed peer.
#[test]
fn golden_bytes_of_a_hello() {
    let f = Frame::request(
        RequestId(7),
        Request::Hello {
            magic: HANDSHAKE_MAGIC,
            version: 1,
            peer: PeerKind::Client,
        },
    )
    .with_payload(Bytes::from_static(b"xy"));
    let mut buf = BytesMut::new();
    FrameCodec::default().encode(f, &mut buf).expect("encode");
    let expected: &[u8] = &[
        0xDF, 0x5A, 1, 1, // magic, frame version, kind=request
        0, 0, 0, 0, 0, 0, 0, 7, // request id
        0, 0, 0, 7, // header length
        0, 0, 0, 2, // payload length
        0, // Request::Hello
        b'D', b'F', b'S', 0, // magic
        1, // version (varint)
        0, // PeerKind::Client
        b'x', b'y',
    ];
    assert_eq!(&buf[..], expected);
}

/// One end of an in-memory pipe.
type PipeEnd = Connection<
    tokio::io::ReadHalf<tokio::io::DuplexStream>,
    tokio::io::WriteHalf<tokio::io::DuplexStream>,
>;

/// Two connected ends of an in-memory pipe.
fn pipe() -> (PipeEnd, PipeEnd) {
    let (a, b) = tokio::io::duplex(64 << 10);
    let (ar, aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    (
        Connection::new(ar, aw, Limits::default()),
        Connection::new(br, bw, Limits::default()),
    )
}

/// The listener's lookup for tests: one key `alice` (read-write) and the secret.
fn lookup(
    secret: &ClusterSecret,
    alice: &ClientKey,
) -> impl FnOnce(&Credential) -> Result<([u8; 32], Peer), ErrorCode> {
    let secret = secret.clone();
    let alice = alice.clone();
    move |c: &Credential| match c {
        Credential::Key { name } if *name == alice.name => Ok((
            *alice.secret.as_bytes(),
            Peer::Client {
                key: Some(name.clone()),
                role: Role::ReadWrite,
                fingerprint: [0; 32],
            },
        )),
        Credential::Key { name } => Err(ErrorCode::AuthFailed {
            reason: format!("unknown key '{name}'"),
        }),
        Credential::ClusterSecret => Ok((
            secret.admin_key(),
            Peer::Client {
                key: None,
                role: Role::Admin,
                fingerprint: [0; 32],
            },
        )),
        Credential::Chunkserver { id } => Ok((secret.server_key(), Peer::Chunkserver { id: *id })),
        Credential::Master => Ok((secret.server_key(), Peer::Master)),
    }
}

#[tokio::test]
async fn handshake_proves_both_sides_and_agrees_on_a_session() {
    let secret = ClusterSecret::generate();
    let alice = ClientKey::generate("alice").expect("key");
    for identity in [
        Identity::key(&alice),
        Identity::cluster_admin(&secret),
        Identity::chunkserver(ServerId::random(), &secret),
        Identity::master(&secret),
    ] {
        let (mut client, mut server) = pipe();
        let (c, s) = tokio::join!(
            client.handshake(PeerKind::Client, &identity),
            server.accept_handshake(lookup(&secret, &alice))
        );
        let (c, s) = (c.expect("client side"), s.expect("server side"));
        assert_eq!(c.key, s.session, "{identity:?}");
        assert_eq!(c.role, s.peer.client_role());
    }
}

#[tokio::test]
async fn wrong_unknown_and_replayed_credentials_are_refused() {
    let secret = ClusterSecret::generate();
    let alice = ClientKey::generate("alice").expect("key");

    // A key the server does not know.
    let bob = ClientKey::generate("bob").expect("key");
    let (mut client, mut server) = pipe();
    let as_bob = Identity::key(&bob);
    let (c, s) = tokio::join!(
        client.handshake(PeerKind::Client, &as_bob),
        server.accept_handshake(lookup(&secret, &alice))
    );
    let c = c.expect_err("unknown key");
    assert!(c.to_string().contains("unknown key 'bob'"), "{c}");
    assert!(s.is_err());

    // The right name with the wrong secret; and a wrong cluster secret.
    let forged = ClientKey {
        name: "alice".into(),
        secret: dfs_protocol::auth::SecretBytes::generate(),
    };
    for identity in [
        Identity::key(&forged),
        Identity::cluster_admin(&ClusterSecret::generate()),
        Identity::chunkserver(ServerId::random(), &ClusterSecret::generate()),
    ] {
        let (mut client, mut server) = pipe();
        let (c, s) = tokio::join!(
            client.handshake(PeerKind::Client, &identity),
            server.accept_handshake(lookup(&secret, &alice))
        );
        assert!(
            matches!(c, Err(ProtocolError::Remote(ErrorCode::AuthFailed { .. }))),
            "{c:?}"
        );
        assert!(
            matches!(s, Err(ProtocolError::Remote(ErrorCode::AuthFailed { .. }))),
            "{s:?}"
        );
    }

    // A proof recorded from one handshake does not open another: the listener's
    // nonce is fresh every time.
    let (mut client, mut server) = pipe();
    let as_alice = Identity::key(&alice);
    let (c, s) = tokio::join!(
        client.handshake(PeerKind::Client, &as_alice),
        server.accept_handshake(lookup(&secret, &alice))
    );
    c.expect("first handshake");
    s.expect("first handshake");
    let nonce = [5u8; 32];
    let credential = Credential::Key {
        name: "alice".into(),
    };
    let (mut attacker, mut server) = pipe();
    let replay = async {
        attacker
            .call(Request::Hello {
                magic: HANDSHAKE_MAGIC,
                version: PROTOCOL_VERSION,
                peer: PeerKind::Client,
            })
            .await?;
        let theirs = match attacker
            .call(Request::Auth {
                credential: credential.clone(),
                nonce,
            })
            .await?
        {
            Response::Challenge { nonce, .. } => nonce,
            other => panic!("{other:?}"),
        };
        // The proof for a transcript with some other listener nonce, as recorded.
        let recorded = dfs_protocol::auth::proof(
            alice.secret.as_bytes(),
            dfs_protocol::auth::Side::Client,
            &dfs_protocol::auth::transcript(&credential, &nonce, &[9; 32]),
        );
        assert_ne!(theirs, [9; 32]);
        attacker.call(Request::Proof { proof: recorded }).await
    };
    let (r, s) = tokio::join!(replay, server.accept_handshake(lookup(&secret, &alice)));
    assert!(
        matches!(r, Err(ProtocolError::Remote(ErrorCode::AuthFailed { .. }))),
        "{r:?}"
    );
    assert!(s.is_err());
}

#[tokio::test]
async fn requests_before_authentication_and_version_mismatch_are_refused() {
    let secret = ClusterSecret::generate();
    let alice = ClientKey::generate("alice").expect("key");
    let (mut client, mut server) = pipe();
    let early = async {
        client
            .call(Request::Hello {
                magic: HANDSHAKE_MAGIC,
                version: PROTOCOL_VERSION,
                peer: PeerKind::Client,
            })
            .await?;
        client.call(Request::Master(ClientToMaster::Status)).await
    };
    let (r, s) = tokio::join!(early, server.accept_handshake(lookup(&secret, &alice)));
    assert!(
        matches!(r, Err(ProtocolError::Remote(ErrorCode::AuthFailed { .. }))),
        "{r:?}"
    );
    assert!(s.is_err());

    let (mut client, mut server) = pipe();
    let id = client.next_request_id();
    client
        .send(&Frame::request(
            id,
            Request::Hello {
                magic: HANDSHAKE_MAGIC,
                version: 999,
                peer: PeerKind::Client,
            },
        ))
        .await
        .expect("send");
    let err = server
        .accept_handshake(lookup(&secret, &alice))
        .await
        .expect_err("mismatch");
    assert!(matches!(
        err,
        ProtocolError::Remote(ErrorCode::VersionMismatch { theirs: 999, .. })
    ));
    let err = client.recv_response(id, "Hello").await.expect_err("told");
    assert!(matches!(
        err,
        ProtocolError::Remote(ErrorCode::VersionMismatch { .. })
    ));
}

/// With alignment asked for, a large payload read as `FramedRead` reads (into the buffer's spare room, never
/// past it) starts at a multiple of `PAYLOAD_ALIGN`, whatever the header's length
/// and however the first read fell, so a chunkserver can write it with `O_DIRECT`
/// as it is; and the frame arrives whole.
#[test]
fn a_large_payload_lands_aligned() {
    use dfs_protocol::frame::PAYLOAD_ALIGN;
    let mut codec = FrameCodec::default().aligning_payloads(true);
    for (i, (payload_len, first_read)) in [
        (1usize << 20, 16usize << 10),
        (1 << 20, PRELUDE_LEN),
        ((1 << 20) + 17, 5000),
        (64 << 10, 100),
        (8 << 20, 16 << 10),
    ]
    .into_iter()
    .enumerate()
    {
        let payload: Bytes = (0..payload_len).map(|b| (b * 7 + i) as u8).collect();
        let path = "x".repeat(i * 13);
        let f = Frame::request(
            RequestId(i as u64),
            Request::Master(ClientToMaster::Stat { path }),
        )
        .with_payload(payload);
        let mut wire = BytesMut::new();
        codec.encode(f.clone(), &mut wire).expect("encode");
        let mut buf = BytesMut::with_capacity(16 << 10);
        let mut at = first_read.min(wire.len());
        buf.extend_from_slice(&wire[..at]);
        let mut got = None;
        for _ in 0..10_000 {
            if let Some(frame) = codec.decode(&mut buf).expect("decode") {
                got = Some(frame);
                break;
            }
            let room = buf.capacity() - buf.len();
            assert!(room > 0, "the codec left no room for the rest of the frame");
            let n = room.min(wire.len() - at).min(300_000);
            buf.extend_from_slice(&wire[at..at + n]);
            at += n;
        }
        let got = got.expect("the frame arrives");
        assert_eq!(
            got.payload.as_ptr() as usize % PAYLOAD_ALIGN,
            0,
            "payload of {payload_len} after a first read of {first_read}"
        );
        assert_eq!(got, f);
        assert!(buf.is_empty());
    }
}
