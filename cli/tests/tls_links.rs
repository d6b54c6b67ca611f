//! TLS on every link: a cluster whose master, chunkservers and clients all talk TLS
//! with certificates from `dfs tls init`; what crosses the wire is not readable; a
//! plain client or one trusting another CA is refused; `dfs up --tls` needs no flags.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use dfs_client::{Client, Identity, PutOptions};
use dfs_protocol::net::{dial, Tls};
use dfs_protocol::PeerKind;
use dfs_testkit::{bounded, data};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn tls_init(dir: &Path) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dfs"))
        .args(["tls", "init"])
        .arg(dir)
        .output()
        .expect("dfs tls init");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A relay to `upstream` that records what the client sends; returns its address.
async fn recording_relay(upstream: String, seen: Arc<Mutex<Vec<u8>>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        while let Ok((mut down, _)) = listener.accept().await {
            let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let (mut dr, mut dw) = down.split();
                let (mut ur, mut uw) = up.split();
                let to_server = async {
                    let mut buf = vec![0u8; 64 << 10];
                    loop {
                        let n = match dr.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if let Ok(mut s) = seen.lock() {
                            s.extend_from_slice(&buf[..n]);
                        }
                        if uw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                };
                let to_client = tokio::io::copy(&mut ur, &mut dw);
                let _ = tokio::join!(to_server, to_client);
            });
        }
    });
    addr
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_serves_and_hides_what_it_carries() {
    bounded(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let tls_dir = dir.path().join("tls");
        tls_init(&tls_dir);
        let o = dir.path().join("o");
        let again = std::process::Command::new(env!("CARGO_BIN_EXE_dfs"))
            .args(["tls", "init"])
            .arg(&tls_dir)
            .output()
            .expect("dfs tls init");
        assert!(!again.status.success(), "an existing CA is never replaced");
        let cluster =
            dfs_testkit::cluster_in(&o, |options| options.tls = Some(tls_dir.clone())).await;

        // Writes go through the three-replica pipeline (chunkserver to chunkserver),
        // appends through the primary to its secondaries: all TLS.
        let c = cluster.client();
        let content = data(3 << 20, 9);
        c.put("/f", &content[..], PutOptions::default())
            .await
            .expect("put over TLS");
        let mut back = Vec::new();
        c.get("/f", &mut back).await.expect("get over TLS");
        assert!(back == content);
        c.append_record("/log", Bytes::from_static(b"over tls"), Default::default())
            .await
            .expect("append over TLS");
        assert!(c.fsck("/").await.expect("fsck").healthy());

        // What a listener on the wire sees: no names, no data.
        let master = cluster.master_addr().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let relay = recording_relay(master.clone(), seen.clone()).await;
        let ca = std::fs::read(tls_dir.join("ca.pem")).expect("ca");
        let via_relay = Client::new(
            relay.clone(),
            Identity::cluster_admin(cluster.secret()).with_tls(Tls::client(&ca).expect("ca")),
        );
        via_relay
            .mkdir("/marker-zebra-7f3a", false)
            .await
            .expect("mkdir through the relay");
        let captured = seen.lock().expect("lock").clone();
        assert!(!captured.is_empty(), "the relay saw the traffic");
        assert!(
            !contains(&captured, b"marker-zebra-7f3a"),
            "a path crossed the wire in the clear"
        );

        // A client without TLS, and one trusting another CA, get nowhere.
        let admin = Identity::cluster_admin(cluster.secret());
        let r = dial(&master, PeerKind::Client, &admin, Duration::from_secs(5)).await;
        assert!(r.is_err(), "plain TCP to a TLS port");
        let other = dir.path().join("other");
        tls_init(&other);
        let other_ca = std::fs::read(other.join("ca.pem")).expect("ca");
        let stranger = admin.clone().with_tls(Tls::client(&other_ca).expect("ca"));
        let r = dial(&master, PeerKind::Client, &stranger, Duration::from_secs(5)).await;
        let err = r.expect_err("a server the client's CA did not sign");
        assert!(err.to_string().contains("certificate"), "{err}");
        cluster.shutdown().await.expect("shutdown");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tls_the_same_relay_reads_everything() {
    bounded(async {
        let (_dir, cluster) = dfs_testkit::cluster().await;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let relay = recording_relay(cluster.master_addr().to_string(), seen.clone()).await;
        let c = Client::new(relay, Identity::cluster_admin(cluster.secret()));
        c.mkdir("/marker-zebra-7f3a", false).await.expect("mkdir");
        let captured = seen.lock().expect("lock").clone();
        // The control for the test above: its relay would have seen the name.
        assert!(contains(&captured, b"marker-zebra-7f3a"));
        cluster.shutdown().await.expect("shutdown");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dfs_up_tls_then_client_verbs_with_no_flags() {
    bounded(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut up = dfs_testkit::dfs_up(dir.path(), 2, &["--tls"]).await;
        let (master, home) = (up.master.clone(), up.home.clone());
        let verb = |args: &[&str]| {
            std::process::Command::new(env!("CARGO_BIN_EXE_dfs"))
                .args(args)
                .env("DFS_MASTER", &master)
                .env_remove("DFS_SECRET")
                .env_remove("DFS_KEY")
                .env_remove("DFS_TLS_CA")
                .env("HOME", &home)
                .env("XDG_CONFIG_HOME", home.join("config"))
                .output()
                .expect("dfs")
        };
        let local = dir.path().join("hello.txt");
        std::fs::write(&local, b"hello over tls\n").expect("write");
        let out = verb(&["put", local.to_str().expect("utf-8"), "/hello.txt"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = verb(&["cat", "/hello.txt"]);
        assert_eq!(out.stdout, b"hello over tls\n");
        // Turning TLS off for a verb that expects it fails clearly.
        let out = verb(&["--tls-ca", "/nonexistent/ca.pem", "ls", "/"]);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("/nonexistent/ca.pem"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = up.child.start_kill();
        let _ = up.child.wait().await;
    })
    .await
}

/// A frame over TLS arrives whole even when the socket was full as it was written:
/// the TLS stream then keeps the frame's end in its own buffer, and only a flush
/// sends it (before the fix, a 1 GiB put over TLS hung now and then, each end
/// waiting for the other). Tiny socket buffers make that the common case here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_over_tls_arrive_whole_through_full_sockets() {
    use dfs_protocol::net::{accept, wrap_dialed};
    use dfs_protocol::{Frame, Request, RequestId, Response};
    use tokio::net::TcpSocket;

    bounded(async {
        let dir = tempfile::tempdir().expect("temp dir");
        tls_init(dir.path());
        let read = |name: &str| std::fs::read(dir.path().join(name)).expect("tls file");
        let server_tls = Tls::server(&read("ca.pem"), &read("server.pem"), &read("server.key"))
            .expect("server tls");
        let client_tls = Tls::client(&read("ca.pem")).expect("client tls");

        let listen = TcpSocket::new_v4().expect("socket");
        listen.set_recv_buffer_size(4096).expect("rcvbuf");
        listen
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let listener = listen.listen(4).expect("listen");
        let addr = listener.local_addr().expect("addr");
        let dialer = TcpSocket::new_v4().expect("socket");
        dialer.set_send_buffer_size(4096).expect("sndbuf");
        let (accepted, dialed) = tokio::join!(
            async {
                let (s, _) = listener.accept().await.expect("accept");
                accept(s, Some(&server_tls)).await.expect("tls accept")
            },
            async {
                let s = dialer.connect(addr).await.expect("connect");
                wrap_dialed(s, &addr.to_string(), Some(&client_tls))
                    .await
                    .expect("tls connect")
            }
        );
        let (mut server, mut client) = (accepted, dialed);

        const ROUNDS: u64 = 20;
        let payload = data(1 << 20, 3);
        let echo = tokio::spawn(async move {
            for _ in 0..ROUNDS {
                let frame = tokio::time::timeout(Duration::from_secs(10), server.recv())
                    .await
                    .expect("the whole frame within 10 s")
                    .expect("recv")
                    .expect("a frame");
                let len = frame.payload.len();
                server
                    .send(&Frame::response(frame.request_id, Response::Ok))
                    .await
                    .expect("reply");
                assert_eq!(len, 1 << 20);
            }
        });
        for round in 0..ROUNDS {
            let id = RequestId(round + 1);
            let frame = Frame::request(id, Request::Proof { proof: [7; 32] })
                .with_payload(Bytes::from(payload.clone()));
            client.send(&frame).await.expect("send");
            let reply = tokio::time::timeout(Duration::from_secs(10), client.recv())
                .await
                .expect("the reply within 10 s")
                .expect("recv")
                .expect("a reply");
            assert_eq!(reply.request_id, id);
        }
        echo.await.expect("the receiving end");
    })
    .await
}
