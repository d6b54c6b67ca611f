//! kill -9 the master binary at random moments while several clients mutate the
//! namespace, restart it, and check that every acknowledged mutation survived and that
//! every visible file reads back whole (no file without its chunks, no half file).

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dfs_client::{Client, ClientError, ErrorCode, PutOptions};
use dfs_testkit::{bounded, data, wait_until};
use rand::Rng;
use tokio::process::{Child, Command};

const ROUNDS: usize = 20;
const CLIENTS: u64 = 4;

/// The cluster secret every process of this test shares (through `$DFS_SECRET`).
fn secret() -> &'static dfs_client::ClusterSecret {
    static SECRET: std::sync::OnceLock<dfs_client::ClusterSecret> = std::sync::OnceLock::new();
    SECRET.get_or_init(dfs_client::ClusterSecret::generate)
}

fn client(addr: &str) -> Client {
    Client::new(addr, dfs_client::Identity::cluster_admin(secret()))
}

fn dfs() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dfs"));
    c.env("RUST_LOG", "error")
        .env("DFS_SECRET", secret().encode())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    c
}

fn start_master(addr: &str, dir: &std::path::Path) -> Child {
    dfs_testkit::master_process(
        addr,
        dir,
        secret(),
        &["--chunk-size", "1MiB", "--safe-start", "2s"],
    )
}

fn content(client: u64, i: u64) -> Vec<u8> {
    data((i % 5) as usize * 700_000 + 1234, client * 1_000_000 + i)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Acked,
    Unknown,
}

/// What one client did: op index -> outcome (ops are a fixed function of the index).
#[derive(Debug, Default)]
struct History {
    next: u64,
    done: HashMap<u64, Outcome>,
}

/// Op `i` of client `k`: mkdir d{i}, put f{i}, mv f{i-1} g{i-1}, rm d{i-3}.
async fn run_op(c: &Client, k: u64, i: u64) -> Result<(), ClientError> {
    let base = format!("/c{k}");
    match i % 4 {
        0 => c.mkdir(&format!("{base}/d{i}"), false).await,
        1 => c
            .put(
                &format!("{base}/f{i}"),
                &content(k, i)[..],
                PutOptions::default(),
            )
            .await
            .map(|_| ()),
        2 => {
            c.rename(&format!("{base}/f{}", i - 1), &format!("{base}/g{}", i - 1))
                .await
        }
        _ => c.remove(&format!("{base}/d{}", i - 3), false, false).await,
    }
}

async fn exists(c: &Client, path: &str) -> bool {
    match c.stat(path).await {
        Ok(_) => true,
        Err(ClientError::Remote(ErrorCode::NotFound { .. })) => false,
        Err(e) => panic!("stat {path}: {e}"),
    }
}

/// Checks client `k`'s history against what the restarted master shows.
async fn verify(c: &Client, k: u64, h: &History) {
    let base = format!("/c{k}");
    let get = |i: u64| h.done.get(&i).copied();
    // Every file that is visible reads back whole and right.
    for e in c.list(&base).await.expect("list") {
        if let Some(n) = e
            .name
            .strip_prefix('f')
            .or_else(|| e.name.strip_prefix('g'))
        {
            let i: u64 = n.parse().expect("file index");
            let mut back = Vec::new();
            c.get(&format!("{base}/{}", e.name), &mut back)
                .await
                .expect("visible file reads");
            assert!(back == content(k, i), "{base}/{} has wrong content", e.name);
        }
    }
    for i in 0..h.next {
        match i % 4 {
            0 => {
                let d = exists(c, &format!("{base}/d{i}")).await;
                match (get(i), get(i + 3)) {
                    (_, Some(Outcome::Acked)) => assert!(!d, "acked rm of d{i} lost"),
                    (Some(Outcome::Acked), None) => assert!(d, "acked mkdir d{i} lost"),
                    _ => {}
                }
            }
            1 => {
                let f = exists(c, &format!("{base}/f{i}")).await;
                let g = exists(c, &format!("{base}/g{i}")).await;
                assert!(!(f && g), "f{i} and g{i} both exist");
                match (get(i), get(i + 1)) {
                    (_, Some(Outcome::Acked)) => assert!(g && !f, "acked mv of f{i} lost"),
                    (Some(Outcome::Acked), None) => assert!(f, "acked put f{i} lost"),
                    (Some(Outcome::Acked), Some(Outcome::Unknown)) => {
                        assert!(f || g, "acked put f{i} lost")
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
}

fn snapshot(h: &Mutex<History>) -> History {
    let h = h.lock().unwrap();
    History {
        next: h.next,
        done: h.done.clone(),
    }
}

async fn wait_ready(addr: &str) {
    let c = client(addr);
    wait_until(Duration::from_secs(30), "master up with 3 chunkservers", || async {
        matches!(c.status().await, Ok(s) if s.chunkservers.iter().filter(|s| s.alive).count() == 3)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_mutations_survive_kill_9_of_the_master() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string();
        let mut master = start_master(&addr, &dir.path().join("master"));
        let mut chunkservers: Vec<Child> = (0..3)
            .map(|i| {
                dfs()
                    .args([
                        "chunkserver",
                        "--listen",
                        "127.0.0.1:0",
                        "--master",
                        &addr,
                        "--heartbeat",
                        "100ms",
                    ])
                    .arg("--data")
                    .arg(dir.path().join(format!("cs{i}")))
                    .spawn()
                    .expect("spawn chunkserver")
            })
            .collect();
        wait_ready(&addr).await;
        let setup = client(&addr);
        for k in 0..CLIENTS {
            setup.mkdir(&format!("/c{k}"), false).await.unwrap();
        }
        let histories: Vec<Arc<Mutex<History>>> = (0..CLIENTS).map(|_| Arc::default()).collect();

        for round in 0..ROUNDS {
            let stop = Arc::new(AtomicBool::new(false));
            let mut tasks = tokio::task::JoinSet::new();
            for k in 0..CLIENTS {
                let (stop, hist, addr) =
                    (stop.clone(), histories[k as usize].clone(), addr.clone());
                tasks.spawn(async move {
                    let c = client(&addr);
                    while !stop.load(Ordering::Relaxed) {
                        let i = hist.lock().unwrap().next;
                        let outcome = match run_op(&c, k, i).await {
                            Ok(()) => Outcome::Acked,
                            Err(_) => Outcome::Unknown,
                        };
                        let mut h = hist.lock().unwrap();
                        h.done.insert(i, outcome);
                        h.next = i + 1;
                    }
                });
            }
            let wait = rand::rng().random_range(50..400);
            tokio::time::sleep(Duration::from_millis(wait)).await;
            master.start_kill().expect("kill -9");
            master.wait().await.expect("reap");
            stop.store(true, Ordering::Relaxed);
            while let Some(r) = tasks.join_next().await {
                r.expect("client task");
            }

            master = start_master(&addr, &dir.path().join("master"));
            wait_ready(&addr).await;
            let c = client(&addr);
            for k in 0..CLIENTS {
                verify(&c, k, &snapshot(&histories[k as usize])).await;
            }
            let acked: usize = histories
                .iter()
                .map(|h| {
                    h.lock()
                        .unwrap()
                        .done
                        .values()
                        .filter(|o| **o == Outcome::Acked)
                        .count()
                })
                .sum();
            assert!(acked > round, "clients make progress between crashes");
        }

        // Once safe mode is over and garbage collection has run, nothing visible is lost.
        let c = client(&addr);
        wait_until(Duration::from_secs(20), "safe mode to end", || async {
            matches!(c.status().await, Ok(s) if !s.safe_mode)
        })
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        for k in 0..CLIENTS {
            verify(&c, k, &snapshot(&histories[k as usize])).await;
        }
        for mut p in chunkservers.drain(..).chain(std::iter::once(master)) {
            let _ = p.start_kill();
            let _ = p.wait().await;
        }
    })
    .await
}
