//! An attacker's view of a real cluster: missing, wrong, removed and replayed
//! credentials on every port; clients sending server-only messages; forged,
//! tampered, expired and cross-chunk tokens; a chunkserver registering under
//! another's id. Every attempt is refused with a clear error, and the cluster goes
//! on serving.

use std::time::Duration;

use bytes::Bytes;
use dfs_client::{ClientKey, ClusterSecret, Identity, PutOptions, Role};
use dfs_protocol::auth::{self, ops, SecretBytes, Side};
use dfs_protocol::net::{dial, framed, TcpConn};
use dfs_protocol::{
    ChunkHandle, ChunkToken, ChunkVersion, Credential, ErrorCode, Frame, PeerKind, ProtocolError,
    Request, Response, ServerId, HANDSHAKE_MAGIC, PROTOCOL_VERSION,
};
use dfs_protocol::{
    ChunkRequest, ChunkserverToMaster, ClientToMaster, LeaseGrant, MasterOrder, PeerOrder,
};
use dfs_testkit::{bounded, cluster, data, wait_until};

const LIMIT: Duration = Duration::from_secs(10);

fn refused_auth<T: std::fmt::Debug>(r: Result<T, ProtocolError>, what: &str) -> String {
    match r {
        Err(ProtocolError::Remote(ErrorCode::AuthFailed { reason })) => reason,
        other => panic!("{what}: expected an authentication failure, got {other:?}"),
    }
}

fn forbidden<T: std::fmt::Debug>(r: Result<T, ProtocolError>, what: &str) {
    assert!(
        matches!(r, Err(ProtocolError::Remote(ErrorCode::Forbidden { .. }))),
        "{what}: expected permission denied, got {r:?}"
    );
}

fn token_refused<T: std::fmt::Debug>(r: Result<T, ProtocolError>, what: &str) -> String {
    match r {
        Err(ProtocolError::Remote(ErrorCode::TokenRefused { reason, .. })) => reason,
        other => panic!("{what}: expected a refused token, got {other:?}"),
    }
}

async fn raw(addr: &str) -> TcpConn {
    framed(tokio::net::TcpStream::connect(addr).await.expect("connect"))
}

async fn hello(conn: &mut TcpConn) {
    let r = conn
        .call(Request::Hello {
            magic: HANDSHAKE_MAGIC,
            version: PROTOCOL_VERSION,
            peer: PeerKind::Client,
        })
        .await
        .expect("hello");
    assert!(matches!(r, Response::HelloOk { .. }), "{r:?}");
}

/// A handshake that answers the challenge with a proof recorded for another nonce.
async fn replay(addr: &str, key: &ClientKey) -> Result<Response, ProtocolError> {
    let mut conn = raw(addr).await;
    hello(&mut conn).await;
    let credential = Credential::Key {
        name: key.name.clone(),
    };
    let nonce = [1u8; 32];
    let Response::Challenge { nonce: fresh, .. } = conn
        .call(Request::Auth {
            credential: credential.clone(),
            nonce,
        })
        .await?
    else {
        panic!("no challenge");
    };
    let recorded = [2u8; 32];
    assert_ne!(fresh, recorded);
    let proof = auth::proof(
        key.secret.as_bytes(),
        Side::Client,
        &auth::transcript(&credential, &nonce, &recorded),
    );
    conn.call(Request::Proof { proof }).await
}

fn ports(cluster: &dfs_cli::cluster::LocalCluster) -> Vec<String> {
    let mut out = vec![cluster.master_addr().to_string()];
    out.extend(cluster.chunkserver_addrs().iter().map(|a| a.to_string()));
    out
}

/// Waits until every chunkserver knows `key` (keys reach them with heartbeats).
async fn known_everywhere(cluster: &dfs_cli::cluster::LocalCluster, key: &ClientKey) {
    for addr in ports(cluster) {
        wait_until(
            Duration::from_secs(10),
            "the key to reach chunkservers",
            || {
                let (addr, id) = (addr.clone(), Identity::key(key));
                async move { dial(&addr, PeerKind::Client, &id, LIMIT).await.is_ok() }
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_wrong_replayed_and_removed_credentials_on_every_port() {
    bounded(async {
        let (_dir, cluster) = cluster().await;
        let admin = cluster.client();
        let writer = admin
            .create_key("writer", Role::ReadWrite)
            .await
            .expect("create key");
        known_everywhere(&cluster, &writer).await;
        let forged = ClientKey {
            name: "writer".into(),
            secret: SecretBytes::generate(),
        };
        let stranger = ClientKey::generate("nobody").expect("key");
        for addr in ports(&cluster) {
            // Missing: a request right after Hello, or before it.
            let mut conn = raw(&addr).await;
            hello(&mut conn).await;
            refused_auth(
                conn.call(Request::Master(ClientToMaster::Status)).await,
                "request before Auth",
            );
            let mut conn = raw(&addr).await;
            assert!(
                conn.call(Request::Master(ClientToMaster::Status))
                    .await
                    .is_err(),
                "before Hello"
            );

            // Wrong: unknown key, right name with a wrong secret, a wrong cluster secret.
            let why = refused_auth(
                dial(&addr, PeerKind::Client, &Identity::key(&stranger), LIMIT).await,
                "unknown key",
            );
            assert!(why.contains("unknown key 'nobody'"), "{why}");
            refused_auth(
                dial(&addr, PeerKind::Client, &Identity::key(&forged), LIMIT).await,
                "forged key",
            );
            let other = ClusterSecret::generate();
            refused_auth(
                dial(
                    &addr,
                    PeerKind::Client,
                    &Identity::cluster_admin(&other),
                    LIMIT,
                )
                .await,
                "wrong cluster secret",
            );
            refused_auth(
                dial(
                    &addr,
                    PeerKind::Chunkserver,
                    &Identity::chunkserver(ServerId::random(), &other),
                    LIMIT,
                )
                .await,
                "chunkserver with a wrong secret",
            );

            // Replayed: a proof for another challenge.
            refused_auth(replay(&addr, &writer).await, "replayed proof");

            // The real key works.
            dial(&addr, PeerKind::Client, &Identity::key(&writer), LIMIT)
                .await
                .expect("the real key is accepted");
        }

        // Removed: open connections fail on their next request, new ones at once.
        admin
            .put("/f", &data(1000, 1)[..], PutOptions::default())
            .await
            .expect("put");
        let chunk = admin.stat("/f").await.expect("stat").chunks[0].clone();
        let master = cluster.master_addr().to_string();
        let cs = chunk.replicas[0].clone();
        let id = Identity::key(&writer);
        let mut on_master = dial(&master, PeerKind::Client, &id, LIMIT)
            .await
            .expect("dial");
        let mut on_cs = dial(&cs, PeerKind::Client, &id, LIMIT).await.expect("dial");
        let length = Request::Chunk(ChunkRequest::ChunkLength {
            handle: chunk.handle,
            version: chunk.version,
            token: chunk.token,
        });
        on_master
            .call(Request::Master(ClientToMaster::Status))
            .await
            .expect("works");
        on_cs.call(length.clone()).await.expect("works");
        admin.remove_key("writer").await.expect("remove key");
        let why = refused_auth(
            on_master
                .call(Request::Master(ClientToMaster::Status))
                .await,
            "removed key",
        );
        assert!(why.contains("removed"), "{why}");
        let mut refused = false;
        for _ in 0..100 {
            match on_cs.call(length.clone()).await {
                Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => {
                    refused_auth::<()>(Err(e), "removed key on a chunkserver");
                    refused = true;
                    break;
                }
            }
        }
        assert!(refused, "the chunkserver learns of the removal within 5 s");
        for addr in ports(&cluster) {
            wait_until(
                Duration::from_secs(10),
                "the removal to reach every port",
                || {
                    let (addr, id) = (addr.clone(), id.clone());
                    async move { dial(&addr, PeerKind::Client, &id, LIMIT).await.is_err() }
                },
            )
            .await;
        }
        let mut back = Vec::new();
        admin.get("/f", &mut back).await.expect("still serving");
        assert_eq!(back, data(1000, 1));
        cluster.shutdown().await.expect("shutdown");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_cannot_send_server_messages_nor_take_a_chunkserver_id() {
    bounded(async {
        let (_dir, cluster) = cluster().await;
        let admin = cluster.client();
        admin
            .put("/f", &data(5000, 2)[..], PutOptions::default())
            .await
            .expect("put");
        let chunk = admin.stat("/f").await.expect("stat").chunks[0].clone();
        let secret = cluster.secret().clone();
        let key = secret.token_key();
        let order = |v: ChunkVersion| {
            ChunkToken::sign(&key, chunk.handle, v, ops::ORDER, auth::unix_now() + 60)
        };
        let next = ChunkVersion(chunk.version.0 + 1);
        // The most a client can be: an admin. Even with valid order tokens, the
        // orders of the master and of primaries are not a client's to give.
        let as_admin = Identity::cluster_admin(&secret);
        let cs = chunk.replicas[0].clone();
        let mut conn = dial(&cs, PeerKind::Client, &as_admin, LIMIT)
            .await
            .expect("dial");
        for request in [
            Request::Order(MasterOrder::GrantLease(LeaseGrant {
                handle: chunk.handle,
                from: Some(chunk.version),
                version: next,
                secondaries: Vec::new(),
                lease_ms: 1000,
                chunk_size: 1 << 20,
                max_append: 1 << 18,
                token: order(next),
            })),
            Request::Peer(PeerOrder::BumpVersion {
                handle: chunk.handle,
                from: Some(chunk.version),
                version: next,
                token: order(next),
            }),
            Request::Peer(PeerOrder::TruncateChunk {
                handle: chunk.handle,
                version: chunk.version,
                size: 0,
                token: order(chunk.version),
            }),
        ] {
            let name = request.name();
            forbidden(conn.call(request).await, name);
        }
        // A rewrite of the sealed chunk at offset 0, data and all.
        let id = conn.next_request_id();
        let head = Request::Peer(PeerOrder::AppendForward {
            handle: chunk.handle,
            version: chunk.version,
            offset: 0,
            len: 5,
            token: order(chunk.version),
        });
        conn.send(&Frame::request(id, head)).await.expect("send");
        let packet = Frame::request(id, Request::Chunk(ChunkRequest::WritePacket { last: true }))
            .with_payload(Bytes::from_static(b"owned"));
        conn.send(&packet).await.expect("send");
        forbidden(
            conn.recv_response(id, "AppendForward").await,
            "AppendForward",
        );

        // To the master: registering, heartbeating, data requests.
        let master = cluster.master_addr().to_string();
        let mut conn = dial(&master, PeerKind::Client, &as_admin, LIMIT)
            .await
            .expect("dial");
        let victim = admin.status().await.expect("status").chunkservers[0].clone();
        let register = |server: ServerId, id_key: [u8; 32]| {
            Request::Report(ChunkserverToMaster::Register {
                server,
                addr: "127.0.0.1:9".into(),
                capacity: 1 << 40,
                used: 0,
                chunks: vec![dfs_protocol::ChunkReport {
                    handle: chunk.handle,
                    version: ChunkVersion(chunk.version.0 + 100),
                    size: 0,
                }],
                id_key,
            })
        };
        forbidden(
            conn.call(register(victim.id, [0; 32])).await,
            "a client registering",
        );
        let heartbeat = |server| {
            Request::Report(ChunkserverToMaster::Heartbeat {
                server,
                capacity: 1,
                used: 0,
                added: Vec::new(),
                removed: vec![chunk.handle],
                corrupt: vec![chunk.handle],
                load: 0,
                leases: Vec::new(),
                keys_epoch: 0,
            })
        };
        forbidden(conn.call(heartbeat(victim.id)).await, "a client heartbeat");
        let r = conn
            .call(Request::Chunk(ChunkRequest::ReadChunk {
                handle: chunk.handle,
                version: chunk.version,
                offset: 0,
                len: 10,
                token: chunk.token,
            }))
            .await;
        assert!(
            matches!(r, Err(ProtocolError::Remote(ErrorCode::BadRequest { .. }))),
            "{r:?}"
        );

        // A chunkserver with the cluster secret cannot take another's id: it proves
        // the id, but not the key the real one enrolled with.
        let as_victim = Identity::chunkserver(victim.id, &secret);
        let (mut conn, session) =
            dfs_protocol::net::dial_session(&master, PeerKind::Chunkserver, &as_victim, LIMIT)
                .await
                .expect("the id itself is proven with the cluster secret");
        forbidden(
            conn.call(heartbeat(victim.id)).await,
            "heartbeat without registering",
        );
        let sealed = auth::seal(&session.key, 0, "server key", &auth::random_bytes());
        let why = refused_auth(
            conn.call(register(victim.id, sealed)).await,
            "registering under another's id",
        );
        assert!(why.contains("enrolled"), "{why}");
        let as_other = Identity::chunkserver(ServerId::random(), &secret);
        let mut conn = dial(&master, PeerKind::Chunkserver, &as_other, LIMIT)
            .await
            .expect("dial");
        forbidden(
            conn.call(register(victim.id, [0; 32])).await,
            "registering for an id not proven",
        );

        // Nothing changed: the victim still serves, the chunk reads back.
        let status = admin.status().await.expect("status");
        let still = status
            .chunkservers
            .iter()
            .find(|s| s.id == victim.id)
            .expect("victim listed");
        assert!(still.alive && still.addr == victim.addr, "{still:?}");
        let mut back = Vec::new();
        admin.get("/f", &mut back).await.expect("get");
        assert_eq!(back, data(5000, 2));
        assert!(admin.fsck("/").await.expect("fsck").healthy());
        cluster.shutdown().await.expect("shutdown");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tampered_expired_and_cross_chunk_tokens_are_refused() {
    bounded(async {
        let (_dir, cluster) = cluster().await;
        let admin = cluster.client();
        let reader = admin
            .create_key("reader", Role::ReadOnly)
            .await
            .expect("key");
        let writer = admin
            .create_key("writer", Role::ReadWrite)
            .await
            .expect("key");
        known_everywhere(&cluster, &reader).await;
        known_everywhere(&cluster, &writer).await;
        admin
            .put("/a", &data(3000, 3)[..], PutOptions::default())
            .await
            .expect("put");
        admin
            .put("/b", &data(3000, 4)[..], PutOptions::default())
            .await
            .expect("put");
        let ro = cluster.client_as(Identity::key(&reader));
        let a = ro.stat("/a").await.expect("stat").chunks[0].clone();
        let b = ro.stat("/b").await.expect("stat").chunks[0].clone();
        let addr = a.replicas[0].clone();
        let mut conn = dial(&addr, PeerKind::Client, &Identity::key(&reader), LIMIT)
            .await
            .expect("dial");
        let length = |handle: ChunkHandle, version: ChunkVersion, token: ChunkToken| {
            Request::Chunk(ChunkRequest::ChunkLength {
                handle,
                version,
                token,
            })
        };
        // The genuine token works.
        let r = conn
            .call(length(a.handle, a.version, a.token))
            .await
            .expect("own token");
        assert!(matches!(r, Response::ChunkSize { size: 3000 }), "{r:?}");
        // A's token for B.
        let why = token_refused(
            conn.call(length(b.handle, b.version, a.token)).await,
            "cross-chunk",
        );
        assert!(why.contains("another chunk"), "{why}");
        // Another version.
        token_refused(
            conn.call(length(a.handle, ChunkVersion(a.version.0 + 1), a.token))
                .await,
            "another version",
        );
        // Tampered: more rights, a later expiry.
        let mut t = a.token;
        t.ops |= ops::WRITE;
        let why = token_refused(conn.call(length(a.handle, a.version, t)).await, "tampered");
        assert!(why.contains("signature"), "{why}");
        let mut t = a.token;
        t.expires += 3600;
        token_refused(conn.call(length(a.handle, a.version, t)).await, "extended");
        // Forged with a key that is not the cluster's.
        let forged = ChunkToken::sign(
            &ClusterSecret::generate().token_key(),
            a.handle,
            a.version,
            ops::READ | ops::WRITE,
            auth::unix_now() + 60,
        );
        token_refused(
            conn.call(length(a.handle, a.version, forged)).await,
            "forged",
        );
        // Expired, though signed by the cluster.
        let key = cluster.secret().token_key();
        let old = ChunkToken::sign(&key, a.handle, a.version, ops::READ, auth::unix_now() - 1);
        let why = token_refused(conn.call(length(a.handle, a.version, old)).await, "expired");
        assert!(why.contains("expired"), "{why}");

        // A read token cannot write, even for a read-write key; a read-only key
        // cannot write even with a write token.
        let write = |conn: &mut TcpConn, token: ChunkToken| {
            let id = conn.next_request_id();
            let head = Request::Chunk(ChunkRequest::WriteChunk {
                handle: a.handle,
                version: a.version,
                downstream: Vec::new(),
                token,
            });
            (id, head)
        };
        let mut rw = dial(&addr, PeerKind::Client, &Identity::key(&writer), LIMIT)
            .await
            .expect("dial");
        for (conn, token, what) in [
            (&mut rw, a.token, "a read token to write"),
            (
                &mut conn,
                ChunkToken::sign(&key, a.handle, a.version, ops::WRITE, auth::unix_now() + 60),
                "a read-only key to write",
            ),
        ] {
            let (id, head) = write(conn, token);
            conn.send(&Frame::request(id, head)).await.expect("send");
            let packet =
                Frame::request(id, Request::Chunk(ChunkRequest::WritePacket { last: true }))
                    .with_payload(Bytes::from_static(b"overwritten"));
            conn.send(&packet).await.expect("send");
            let r = conn.recv_response(id, "WriteChunk").await;
            assert!(
                matches!(
                    r,
                    Err(ProtocolError::Remote(
                        ErrorCode::TokenRefused { .. } | ErrorCode::Forbidden { .. }
                    ))
                ),
                "{what}: {r:?}"
            );
        }
        // And the read-only key's connection still serves reads.
        conn.call(length(a.handle, a.version, a.token))
            .await
            .expect("still serving");
        let mut back = Vec::new();
        ro.get("/a", &mut back).await.expect("get");
        assert_eq!(back, data(3000, 3));
        cluster.shutdown().await.expect("shutdown");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_dead_chunkservers_are_forgotten() {
    bounded(async {
        let (_dir, mut cluster) = dfs_testkit::cluster_with(|o| {
            o.chunkservers = 4;
            o.dead_after = Duration::from_millis(500);
            o.forget_dead_after = Duration::from_secs(2);
        })
        .await;
        let c = cluster.client();
        cluster.stop_chunkserver(3).await.expect("stop");
        wait_until(Duration::from_secs(20), "the dead server to be forgotten", || async {
            matches!(c.status().await, Ok(s) if s.chunkservers.len() == 3)
        })
        .await;
        cluster.restart_chunkserver(3).await.expect("restart");
        wait_until(Duration::from_secs(20), "it to register afresh", || async {
            matches!(c.status().await, Ok(s) if s.chunkservers.iter().filter(|s| s.alive).count() == 4)
        })
        .await;
        cluster.shutdown().await.expect("shutdown");
    })
    .await
}
