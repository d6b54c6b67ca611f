//! A fault proxy: a TCP listener on 127.0.0.1 that forwards every connection to one
//! target, with faults a test switches on and off at any time:
//! - a partition, both ways or one way: bytes in a blocked direction are held (not
//!   read further, so the sender's buffers fill), as a link that drops every packet
//!   would look to TCP, and flow again once healed, as retransmissions would;
//! - a delay on every piece forwarded;
//! - dropped connections: new ones are closed as soon as they arrive;
//! - swallowed connections: the next few are accepted and then answered nothing,
//!   as a dial whose every packet is lost looks to the dialer at its timeout;
//! - resets: every open connection is cut with a RST.
//!
//! It also counts the bytes it forwarded each way, so a test can tell what crossed.
//!
//! Put one between any two nodes by handing its address to the side that dials: a
//! client's `Routes`, a chunkserver's `--master`, a master address given to clients.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Which way bytes are blocked, from the dialing side's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Nothing gets through.
    Both,
    /// What the dialing side sends is held; answers still come back.
    ToTarget,
    /// Answers are held; what the dialing side sends still arrives.
    FromTarget,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Faults {
    to_target: bool,
    from_target: bool,
    delay: Duration,
    drop_new: bool,
}

/// One proxy; stops (and cuts its connections) when dropped or `stop`ped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: String,
    target: String,
    faults: watch::Sender<Faults>,
    /// Cancelling this resets every open connection (a new token replaces it).
    resets: Arc<Mutex<CancellationToken>>,
    stop: CancellationToken,
    tasks: TaskTracker,
    /// Bytes forwarded: [to the target, from the target].
    forwarded: Arc<[AtomicU64; 2]>,
    /// How many of the next connections to swallow.
    swallow: Arc<AtomicU32>,
}

const PIECE: usize = 64 << 10;

impl FaultProxy {
    /// A proxy on a free loopback port, forwarding to `target`.
    pub async fn start(target: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address").to_string();
        let (faults, _) = watch::channel(Faults::default());
        let proxy = FaultProxy {
            addr,
            target: target.to_string(),
            faults,
            resets: Arc::new(Mutex::new(CancellationToken::new())),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
            forwarded: Arc::new([AtomicU64::new(0), AtomicU64::new(0)]),
            swallow: Arc::new(AtomicU32::new(0)),
        };
        proxy.tasks.spawn(accept_loop(
            listener,
            Accepting {
                target: proxy.target.clone(),
                faults: proxy.faults.subscribe(),
                resets: proxy.resets.clone(),
                stop: proxy.stop.clone(),
                tasks: proxy.tasks.clone(),
                forwarded: proxy.forwarded.clone(),
                swallow: proxy.swallow.clone(),
            },
        ));
        proxy
    }

    /// Bytes forwarded so far: (to the target, from the target).
    pub fn forwarded(&self) -> (u64, u64) {
        (
            self.forwarded[0].load(Ordering::Relaxed),
            self.forwarded[1].load(Ordering::Relaxed),
        )
    }

    /// Where to dial to go through the proxy.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    /// Blocks bytes going `direction` (in addition to what is blocked already).
    pub fn partition(&self, direction: Direction) {
        self.faults.send_modify(|f| match direction {
            Direction::Both => {
                f.to_target = true;
                f.from_target = true;
            }
            Direction::ToTarget => f.to_target = true,
            Direction::FromTarget => f.from_target = true,
        });
    }

    /// Lifts every partition, delay and dropping of connections.
    pub fn heal(&self) {
        self.faults.send_replace(Faults::default());
    }

    /// Holds every piece forwarded for `delay` (zero to stop).
    pub fn delay(&self, delay: Duration) {
        self.faults.send_modify(|f| f.delay = delay);
    }

    /// Closes new connections as soon as they arrive (`false` to stop).
    pub fn drop_new(&self, on: bool) {
        self.faults.send_modify(|f| f.drop_new = on);
    }

    /// Accepts the next `n` connections and holds them open, reading nothing and
    /// forwarding nothing, until the proxy stops; later ones are served as before.
    pub fn swallow_next(&self, n: u32) {
        self.swallow.store(n, Ordering::Relaxed);
    }

    /// How many of the connections `swallow_next` asked for are still to come.
    pub fn to_swallow(&self) -> u32 {
        self.swallow.load(Ordering::Relaxed)
    }

    /// Cuts every open connection with a RST; new ones are served as before.
    pub fn reset(&self) {
        let mut token = self
            .resets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        token.cancel();
        *token = CancellationToken::new();
    }

    /// Stops listening, cuts every connection and waits for the proxy's tasks.
    pub async fn stop(self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// What the accept loop shares with the proxy's handle.
struct Accepting {
    target: String,
    faults: watch::Receiver<Faults>,
    resets: Arc<Mutex<CancellationToken>>,
    stop: CancellationToken,
    tasks: TaskTracker,
    forwarded: Arc<[AtomicU64; 2]>,
    swallow: Arc<AtomicU32>,
}

async fn accept_loop(listener: TcpListener, shared: Accepting) {
    let Accepting {
        target,
        faults,
        resets,
        stop,
        tasks,
        forwarded,
        swallow,
    } = shared;
    loop {
        let (inbound, _) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => continue,
            },
        };
        if faults.borrow().drop_new {
            drop(inbound);
            continue;
        }
        let swallowed = swallow
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if swallowed {
            let stop = stop.clone();
            tasks.spawn(async move {
                stop.cancelled().await;
                drop(inbound);
            });
            continue;
        }
        let reset = resets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        tasks.spawn(connection(
            inbound,
            target.clone(),
            faults.clone(),
            reset,
            stop.clone(),
            forwarded.clone(),
        ));
    }
}

async fn connection(
    inbound: TcpStream,
    target: String,
    faults: watch::Receiver<Faults>,
    reset: CancellationToken,
    stop: CancellationToken,
    forwarded: Arc<[AtomicU64; 2]>,
) {
    let outbound = tokio::select! {
        _ = stop.cancelled() => return,
        _ = reset.cancelled() => return rst(inbound),
        r = TcpStream::connect(&target) => match r {
            Ok(s) => s,
            Err(_) => return rst(inbound),
        },
    };
    let (mut in_read, mut in_write) = inbound.into_split();
    let (mut out_read, mut out_write) = outbound.into_split();
    let cut = tokio::select! {
        _ = stop.cancelled() => true,
        _ = reset.cancelled() => true,
        _ = async {
            tokio::join!(
                pump(&mut in_read, &mut out_write, faults.clone(), |f| f.to_target, &forwarded[0]),
                pump(&mut out_read, &mut in_write, faults, |f| f.from_target, &forwarded[1]),
            )
        } => false,
    };
    if cut {
        // Both ends see a RST, not an orderly close.
        let _ = in_read.as_ref().set_zero_linger();
        let _ = out_read.as_ref().set_zero_linger();
    }
}

fn rst(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Copies one direction, holding bytes while `blocked` says so and delaying each piece.
async fn pump(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    mut faults: watch::Receiver<Faults>,
    blocked: fn(&Faults) -> bool,
    count: &AtomicU64,
) {
    let mut buf = vec![0u8; PIECE];
    loop {
        // While blocked nothing more is read: the sender's buffers fill, as behind a
        // link that drops every packet.
        if faults.wait_for(|f| !blocked(f)).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        let delay = faults.borrow().delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        // A piece read before a partition began is held until it heals.
        if faults.wait_for(|f| !blocked(f)).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        count.fetch_add(n as u64, Ordering::Relaxed);
    }
}
