//! Metadata requests pipelined on one connection: the master starts them in the
//! order they arrive and answers in that order; one `Client` sends its concurrent
//! calls down one connection without waiting for each answer.

use std::time::Duration;

use dfs_protocol::{ClientToMaster, Frame, Request, Response};
use dfs_testkit::{bounded, cluster};
use futures::{StreamExt, TryStreamExt};

/// Written back to back before any answer is read: `mkdir /a`, `mkdir /a/b` (which
/// needs the first applied), a failing `mkdir /a`, and a `stat` of `/a/b`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_s_requests_start_and_answer_in_order() {
    bounded(async {
        let (_dir, cluster) = cluster().await;
        let mut conn = dfs_testkit::master_conn(&cluster).await;
        let mkdir = |path: &str| {
            Request::Master(ClientToMaster::Mkdir {
                path: path.into(),
                parents: false,
            })
        };
        let requests = [
            mkdir("/a"),
            mkdir("/a/b"),
            mkdir("/a"),
            Request::Master(ClientToMaster::Stat {
                path: "/a/b".into(),
            }),
        ];
        let mut ids = Vec::new();
        for r in requests {
            let id = conn.next_request_id();
            conn.send(&Frame::request(id, r)).await.expect("send");
            ids.push(id);
        }
        let mut answers = Vec::new();
        for id in ids {
            answers.push(conn.recv_response(id, "pipelined").await);
        }
        assert!(
            matches!(answers[0], Ok((Response::Ok, _))),
            "{:?}",
            answers[0]
        );
        assert!(
            matches!(answers[1], Ok((Response::Ok, _))),
            "{:?}",
            answers[1]
        );
        assert!(
            matches!(
                answers[2],
                Err(dfs_protocol::ProtocolError::Remote(
                    dfs_protocol::ErrorCode::AlreadyExists { .. }
                ))
            ),
            "{:?}",
            answers[2]
        );
        assert!(
            matches!(answers[3], Ok((Response::Stat(_), _))),
            "{:?}",
            answers[3]
        );
    })
    .await;
}

/// One client, 300 calls in flight at once: every one answered, each with its own
/// answer (a mix of successes and typed errors), on one connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_s_concurrent_calls_share_one_connection() {
    bounded(async {
        let (_dir, cluster) = cluster().await;
        let c = cluster.client();
        c.mkdir("/m", false).await.expect("mkdir");
        let before = established_to(cluster.master_addr().port());
        let results: Vec<(u64, bool)> = futures::stream::iter(0..300u64)
            .map(|i| {
                let c = &c;
                async move {
                    // Every third one names a missing parent and must fail alone.
                    let path = if i % 3 == 0 {
                        format!("/missing/{i}")
                    } else {
                        format!("/m/{i}")
                    };
                    Ok::<_, dfs_client::ClientError>((i, c.mkdir(&path, false).await.is_ok()))
                }
            })
            .buffer_unordered(64)
            .try_collect()
            .await
            .expect("calls");
        assert_eq!(results.len(), 300);
        for (i, ok) in &results {
            assert_eq!(*ok, i % 3 != 0, "call {i}");
        }
        let listed = c.list("/m").await.expect("list");
        assert_eq!(listed.len(), 200);
        // This client added no connection to the master for its 300 calls.
        assert!(
            established_to(cluster.master_addr().port()) <= before,
            "one connection carried them all"
        );
    })
    .await;
}

/// Established TCP connections from this process's side to `port` on loopback.
fn established_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let want = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            // remote address ends with the port, state 01 is ESTABLISHED
            cols.len() > 3 && cols[2].ends_with(&want) && cols[3] == "01"
        })
        .count()
}

/// Calls dropped before they were sent or while waiting for their answer (a caller's
/// timeout, Ctrl-C in the shell) never leave the link answering the wrong call: the
/// answer of a dropped call is discarded and every later call gets its own. (A call
/// dropped halfway through writing its frame breaks the link instead; the socket
/// buffer never fills here, so that path is not reached by this test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_dropped_midway_do_not_confuse_later_ones() {
    bounded(async {
        let (_dir, cluster) = cluster().await;
        let c = cluster.client();
        c.mkdir("/kept", false).await.expect("mkdir");
        for i in 0..200u64 {
            // From "dropped before anything was sent" to "already answered".
            let cut = Duration::from_micros(i * 7 % 400);
            let _ = tokio::time::timeout(cut, c.mkdir(&format!("/cut-{i}"), false)).await;
            let stat = c.stat("/kept").await.expect("a call after a dropped one");
            assert_eq!(stat.kind, dfs_protocol::FileKind::Dir, "round {i}");
            let missing = c.stat(&format!("/nothing-{i}")).await;
            assert!(missing.is_err(), "round {i}: {missing:?}");
        }
    })
    .await;
}
