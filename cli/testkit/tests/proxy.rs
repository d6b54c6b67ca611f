//! The fault proxy against a loopback echo server: bytes flow, are held while
//! partitioned and flow again once healed; resets cut; dropped connections close.

use std::time::Duration;

use dfs_testkit::{bounded, Direction, FaultProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn echo_server() -> (String, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, task)
}

async fn round_trip(s: &mut TcpStream, msg: &[u8], within: Duration) -> Option<Vec<u8>> {
    s.write_all(msg).await.ok()?;
    let mut got = vec![0u8; msg.len()];
    tokio::time::timeout(within, s.read_exact(&mut got))
        .await
        .ok()?
        .ok()?;
    Some(got)
}

#[tokio::test]
async fn partitions_hold_bytes_until_healed_and_resets_cut() {
    bounded(async {
        let (target, server) = echo_server().await;
        let proxy = FaultProxy::start(&target).await;
        let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert_eq!(
            round_trip(&mut s, b"hello", Duration::from_secs(5))
                .await
                .as_deref(),
            Some(&b"hello"[..])
        );

        for direction in [Direction::Both, Direction::ToTarget, Direction::FromTarget] {
            proxy.partition(direction);
            assert_eq!(
                round_trip(&mut s, b"held", Duration::from_millis(300)).await,
                None,
                "{direction:?} lets nothing round-trip"
            );
            proxy.heal();
            // What was held arrives once healed, in order.
            let mut got = vec![0u8; 4];
            tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got))
                .await
                .expect("held bytes arrive")
                .expect("read");
            assert_eq!(&got, b"held");
        }

        proxy.reset();
        let mut buf = [0u8; 1];
        let after = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("the reset is seen");
        assert!(matches!(after, Ok(0) | Err(_)), "{after:?}");

        proxy.drop_new(true);
        let mut dropped = TcpStream::connect(proxy.addr()).await.expect("connect");
        let n = tokio::time::timeout(Duration::from_secs(5), dropped.read(&mut buf))
            .await
            .expect("closed at once");
        assert!(matches!(n, Ok(0) | Err(_)));
        proxy.drop_new(false);

        proxy.delay(Duration::from_millis(200));
        let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
        let started = std::time::Instant::now();
        assert!(round_trip(&mut s, b"slow", Duration::from_secs(5))
            .await
            .is_some());
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "delayed both ways"
        );
        proxy.stop().await;
        server.abort();
    })
    .await
}
