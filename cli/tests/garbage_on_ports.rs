//! Servers survive garbage, half frames, wrong versions and oversized lengths on their
//! ports, and keep serving real clients afterwards.

use dfs_client::PutOptions;
use dfs_protocol::{ChunkRequest, LeaseGrant, MasterOrder, PeerOrder};
use dfs_testkit::{bounded, cluster, data};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn throw(addr: std::net::SocketAddr, bytes: &[u8]) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let _ = s.write_all(bytes).await;
    let _ = s.shutdown().await;
    let mut sink = Vec::new();
    // The server closes on us (possibly after an error frame); it must not hang.
    let _ =
        tokio::time::timeout(std::time::Duration::from_secs(15), s.read_to_end(&mut sink)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_survive_garbage() {
    bounded(async {
        let (_dir, cluster) = cluster().await;
        let mut targets = cluster.chunkserver_addrs();
        targets.push(cluster.master_addr());
        let mut oversized = vec![0xDF, 0x5A, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        oversized.extend_from_slice(&u32::MAX.to_be_bytes());
        oversized.extend_from_slice(&u32::MAX.to_be_bytes());
        let mut wrong_version = oversized.clone();
        wrong_version[2] = 200;
        let mut garbage_header = vec![
            0xDF, 0x5A, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 64, 0, 0, 0, 0,
        ];
        garbage_header.extend(data(64, 3));
        for addr in targets {
            throw(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
            throw(addr, &data(100_000, 1)).await;
            throw(addr, &oversized).await;
            throw(addr, &wrong_version).await;
            throw(addr, &garbage_header).await;
            throw(addr, &[0xDF]).await;
            throw(addr, &[]).await;
        }
        let client = cluster.client();
        let content = data(3 << 20, 2);
        client
            .put("/after", &content[..], PutOptions::default())
            .await
            .expect("still serving");
        let mut back = Vec::new();
        client.get("/after", &mut back).await.unwrap();
        assert!(back == content);
        cluster.shutdown().await.unwrap();
    })
    .await
}

/// Well-formed but hostile append traffic from authenticated peers with valid
/// tokens: a forwarded batch too large to hold, a record for a lease nobody granted,
/// lengths of unknown chunks, a grant out of bounds. Each is answered with a clear
/// error and the chunkserver goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_append_requests_are_refused() {
    use bytes::Bytes;
    use dfs_protocol::auth::ops;
    use dfs_protocol::{
        ChunkHandle, ChunkToken, ChunkVersion, ErrorCode, Frame, Identity, PeerKind, Request,
        ServerId,
    };
    bounded(async {
        let (_dir, cluster) = cluster().await;
        let addr = cluster.chunkserver_addrs()[0].to_string();
        let limit = std::time::Duration::from_secs(10);
        let secret = cluster.secret().clone();
        let key = secret.token_key();
        let handle = ChunkHandle::random();
        let version = ChunkVersion::FIRST;
        let token = |version, op| {
            ChunkToken::sign(
                &key,
                handle,
                version,
                op,
                dfs_protocol::auth::unix_now() + 60,
            )
        };
        let as_peer = Identity::chunkserver(ServerId::random(), &secret);
        let mut peer = dfs_protocol::net::dial(&addr, PeerKind::Chunkserver, &as_peer, limit)
            .await
            .expect("dial as a peer");
        let admin = Identity::cluster_admin(&secret);
        let mut conn = dfs_protocol::net::dial(&addr, PeerKind::Client, &admin, limit)
            .await
            .expect("dial as a client");
        for (conn, head) in [
            (
                &mut peer,
                Request::Peer(PeerOrder::AppendForward {
                    handle,
                    version,
                    offset: 0,
                    len: u64::MAX,
                    token: token(version, ops::ORDER),
                }),
            ),
            (
                &mut conn,
                Request::Chunk(ChunkRequest::Append {
                    handle,
                    version,
                    len: 5,
                    token: token(version, ops::APPEND),
                }),
            ),
        ] {
            let id = conn.next_request_id();
            conn.send(&Frame::request(id, head)).await.expect("send");
            let packet =
                Frame::request(id, Request::Chunk(ChunkRequest::WritePacket { last: true }))
                    .with_payload(Bytes::from_static(b"hello"));
            conn.send(&packet).await.expect("send packet");
            let answer = conn.recv_response(id, "append").await;
            assert!(
                matches!(
                    answer,
                    Err(dfs_protocol::ProtocolError::Remote(
                        ErrorCode::BadRequest { .. } | ErrorCode::NotPrimary { .. }
                    ))
                ),
                "{answer:?}"
            );
        }
        let answer = conn
            .call(Request::Chunk(ChunkRequest::ChunkLength {
                handle,
                version,
                token: token(version, ops::READ),
            }))
            .await;
        assert!(
            matches!(
                answer,
                Err(dfs_protocol::ProtocolError::Remote(
                    ErrorCode::UnknownChunk { .. }
                ))
            ),
            "{answer:?}"
        );
        let grant = Request::Order(MasterOrder::GrantLease(LeaseGrant {
            handle,
            from: Some(version),
            version: ChunkVersion(2),
            secondaries: vec!["127.0.0.1:1".into()],
            lease_ms: 1000,
            chunk_size: 1 << 20,
            max_append: 0,
            token: token(ChunkVersion(2), ops::ORDER),
        }));
        let as_master = Identity::master(&secret);
        let mut master = dfs_protocol::net::dial(&addr, PeerKind::Client, &as_master, limit)
            .await
            .expect("dial as the master");
        assert!(master.call(grant).await.is_err(), "no such chunk to lease");
        let c = cluster.client();
        c.append_record("/still", Bytes::from_static(b"serving"), Default::default())
            .await
            .expect("still serving appends");
        let mut back = Vec::new();
        c.get("/still", &mut back).await.expect("get");
        assert_eq!(back, b"serving");
        cluster.shutdown().await.expect("shutdown");
    })
    .await
}
