//! Crash tests of the chunk store: a child process runs one store operation and is
//! killed (SIGKILL, so nothing is cleaned up) at a named step of it; the store is then
//! reopened as a restarted chunkserver would, and must hold a replica that verifies
//! against its own checksums and is one of the states the operation allows: the old
//! one or the new one (or, where the protocol allows it, nothing for a stale version
//! being replaced, or the acknowledged prefix for a tail being rewritten).
//!
//! Runs without the libtest harness: the same binary is the parent (no environment
//! variable) and the child (`DFS_STORE_CRASH` set to `DIR|OP|STEP|NTH|HANDLE`: killed at
//! the NTH time it reaches STEP).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use dfs_chunkserver::failpoint::Step;
use dfs_chunkserver::store::ChunkStore;
use dfs_protocol::{ChunkHandle, ChunkVersion};

const CHILD: &str = "DFS_STORE_CRASH";
const CAPACITY: u64 = 1 << 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// Write a chunk that is not held here.
    CommitNew,
    /// Write version 2 of a chunk held at version 1 (a write retried on a new chain).
    CommitOver,
    /// Append at the end.
    Append,
    /// Append over an unacknowledged tail (offset below the replica's length).
    AppendOverTail,
    /// Move to version 2 for a new lease.
    Bump,
    /// Cut back to the acknowledged length.
    Truncate,
    /// Write a small chunk that is not held here, into a pack file.
    CommitPacked,
    /// Write version 2, packed, of a chunk held at version 1 in files of its own.
    CommitPackedOver,
    /// Append at the end of a packed chunk (moved to files of its own first).
    AppendPacked,
}

const OPS: [Op; 9] = [
    Op::CommitNew,
    Op::CommitOver,
    Op::Append,
    Op::AppendOverTail,
    Op::Bump,
    Op::Truncate,
    Op::CommitPacked,
    Op::CommitPackedOver,
    Op::AppendPacked,
];

/// The store as `op` runs on it: packing chunks as small as the test's, or none.
fn open(dir: &Path, op: Op) -> ChunkStore {
    let store = ChunkStore::open(dir, Some(CAPACITY)).expect("open");
    match op {
        Op::CommitPacked | Op::CommitPackedOver | Op::AppendPacked => {
            store.with_pack_below(256 << 10)
        }
        _ => store,
    }
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Lengths chosen so offsets fall inside checksum blocks, not on their edges.
const OLD_LEN: usize = 150_000;
const CUT: usize = 100_000;
const ADDED: usize = 90_000;

fn old_data() -> Vec<u8> {
    pattern(OLD_LEN, 1)
}

fn new_data() -> Vec<u8> {
    pattern(OLD_LEN + 17, 2)
}

fn added() -> Vec<u8> {
    pattern(ADDED, 3)
}

fn v(n: u64) -> ChunkVersion {
    ChunkVersion(n)
}

/// The states (version, bytes) a replica may be in after a crash during `op`.
fn allowed(op: Op) -> Vec<Option<(ChunkVersion, Vec<u8>)>> {
    let old = Some((v(1), old_data()));
    match op {
        Op::CommitNew | Op::CommitPacked => vec![None, Some((v(1), new_data()))],
        // The packed version 2 is synced before version 1's files are touched.
        Op::CommitPackedOver => vec![old, Some((v(2), new_data()))],
        // The older version is stale once a newer one is written here, so the store
        // may retire it before the new one is in place.
        Op::CommitOver => vec![old, None, Some((v(2), new_data()))],
        Op::Append | Op::AppendPacked => {
            let mut all = old_data();
            all.extend(added());
            vec![old, Some((v(1), all))]
        }
        Op::AppendOverTail => {
            let mut all = old_data()[..CUT].to_vec();
            let prefix = all.clone();
            all.extend(added());
            vec![old, Some((v(1), prefix)), Some((v(1), all))]
        }
        Op::Bump => vec![old, Some((v(2), old_data()))],
        Op::Truncate => vec![old, Some((v(1), old_data()[..CUT].to_vec()))],
    }
}

fn write_chunk(store: &ChunkStore, h: ChunkHandle, version: ChunkVersion, data: &[u8]) {
    let mut w = store.create(h, version).expect("create");
    for piece in data.chunks(40_000) {
        w.write(piece).expect("write");
    }
    w.commit().expect("commit");
}

fn run(store: &ChunkStore, op: Op, h: ChunkHandle) {
    match op {
        Op::CommitNew | Op::CommitPacked => write_chunk(store, h, v(1), &new_data()),
        Op::CommitOver | Op::CommitPackedOver => write_chunk(store, h, v(2), &new_data()),
        Op::Append | Op::AppendPacked => {
            store
                .append(h, v(1), OLD_LEN as u64, &[Bytes::from(added())])
                .expect("append");
        }
        Op::AppendOverTail => {
            store
                .append(h, v(1), CUT as u64, &[Bytes::from(added())])
                .expect("append");
        }
        Op::Bump => {
            store.bump(h, Some(v(1)), v(2)).expect("bump");
        }
        Op::Truncate => {
            store.truncate(h, v(1), CUT as u64).expect("truncate");
        }
    }
}

fn child(spec: &str) {
    let parts: Vec<&str> = spec.split('|').collect();
    let [dir, op, step, nth, handle] = parts[..] else {
        panic!("bad {CHILD}: {spec}");
    };
    let op = OPS
        .into_iter()
        .find(|o| format!("{o:?}") == op)
        .expect("known op");
    let step = Step::ALL
        .into_iter()
        .find(|s| format!("{s:?}") == step)
        .expect("known step");
    let h: ChunkHandle = handle.parse().expect("handle");
    let nth: usize = nth.parse().expect("nth");
    let store = open(Path::new(dir), op);
    let seen = std::sync::atomic::AtomicUsize::new(0);
    store.failpoints().set(Some(Arc::new(move |at| {
        if at == step && seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == nth {
            // As kill -9 would: no destructor, no cleanup, files exactly as they are.
            let _ = rustix::process::kill_process(
                rustix::process::getpid(),
                rustix::process::Signal::KILL,
            );
        }
        Ok(())
    })));
    run(&store, op, h);
}

/// Runs `op` in a child killed the `nth` time it reaches `step`; returns whether the
/// child was killed there.
fn crash_at(dir: &Path, op: Op, step: Step, nth: usize, h: ChunkHandle) -> bool {
    let status = Command::new(std::env::current_exe().expect("own path"))
        .env(
            CHILD,
            format!("{}|{op:?}|{step:?}|{nth}|{h}", dir.display()),
        )
        .status()
        .expect("run the child");
    match status.code() {
        Some(0) => false,
        Some(c) => panic!("{op:?} at {step:?}: the child failed with exit code {c}"),
        None => true,
    }
}

fn check(dir: &Path, op: Op, step: Step, h: ChunkHandle) {
    let store = open(dir, op);
    let leftovers: Vec<String> = std::fs::read_dir(dir.join("chunks"))
        .expect("list")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp") || !n.starts_with(&h.to_string()))
        .collect();
    assert!(leftovers.is_empty(), "{op:?} at {step:?}: {leftovers:?}");
    let state = store.get(&h).map(|(version, len)| {
        let mut r = store
            .open_reader(h, version)
            .unwrap_or_else(|e| panic!("{op:?} at {step:?}: open {version}: {e}"));
        assert_eq!(r.len(), len);
        let bytes = r
            .read(0, len)
            .unwrap_or_else(|e| panic!("{op:?} at {step:?}: a replica that lacks its bytes: {e}"));
        (version, bytes.to_vec())
    });
    let ok = allowed(op);
    assert!(
        ok.contains(&state),
        "{op:?} at {step:?}: left {:?}",
        state.as_ref().map(|(v, b)| (v, b.len()))
    );
    // A held replica is also what the report to the master says.
    let reported = store.full_report();
    match &state {
        Some((version, bytes)) => assert!(reported
            .iter()
            .any(|r| r.handle == h && r.version == *version && r.size == bytes.len() as u64)),
        None => assert!(reported.iter().all(|r| r.handle != h)),
    }
}

fn setup(dir: &Path, op: Op, h: ChunkHandle) {
    // Version 1 is packed only where the operation starts from a packed chunk.
    let store = match op {
        Op::AppendPacked => open(dir, op),
        _ => ChunkStore::open(dir, Some(CAPACITY)).expect("open"),
    };
    if !matches!(op, Op::CommitNew | Op::CommitPacked) {
        write_chunk(&store, h, v(1), &old_data());
    }
    assert_eq!(store.is_packed(&h), op == Op::AppendPacked);
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD) {
        child(&spec);
        return;
    }
    let mut crashes = 0;
    for op in OPS {
        let mut hit = Vec::new();
        for step in Step::ALL {
            // Every time the operation reaches the step (an append over a tail writes
            // two meta files), up to a bound no operation comes near.
            for nth in 1..=4 {
                let dir = tempfile::tempdir().expect("temp dir");
                let h = ChunkHandle::random();
                setup(dir.path(), op, h);
                let killed = crash_at(dir.path(), op, step, nth, h);
                check(dir.path(), op, step, h);
                if !killed {
                    break;
                }
                hit.push(step);
            }
        }
        // Each operation's own durable steps are all crashed at, so the checks above
        // cover every intermediate state.
        let want: &[Step] = match op {
            Op::CommitNew => &[
                Step::CommitDataSynced,
                Step::CommitMetaWritten,
                Step::CommitChunkRenamed,
                Step::CommitMetaRenamed,
            ],
            Op::CommitOver => &[
                Step::CommitDataSynced,
                Step::CommitMetaWritten,
                Step::CommitOldRetired,
                Step::CommitChunkRenamed,
                Step::CommitMetaRenamed,
            ],
            Op::Append => &[
                Step::AppendDataWritten,
                Step::AppendDataSynced,
                Step::MetaTmpWritten,
                Step::MetaRenamed,
            ],
            // The tail is cut first (one meta), then the bytes and their meta.
            Op::AppendOverTail => &[
                Step::AppendDataWritten,
                Step::AppendDataSynced,
                Step::MetaTmpWritten,
                Step::MetaTmpWritten,
                Step::MetaRenamed,
                Step::MetaRenamed,
            ],
            Op::Bump | Op::Truncate => &[Step::MetaTmpWritten, Step::MetaRenamed],
            Op::CommitPacked | Op::CommitPackedOver => &[Step::PackSynced],
            // Moved out to files at version 1 first (nothing retired), then appended.
            Op::AppendPacked => &[
                Step::CommitDataSynced,
                Step::CommitMetaWritten,
                Step::CommitChunkRenamed,
                Step::CommitMetaRenamed,
                Step::AppendDataWritten,
                Step::AppendDataSynced,
                Step::MetaTmpWritten,
                Step::MetaRenamed,
            ],
        };
        assert_eq!(hit, want, "{op:?}: steps crashed at");
        crashes += hit.len();
        eprintln!("store_crash: {op:?}: old or new state after a kill at each of {hit:?}");
    }
    eprintln!("store_crash: {crashes} crashes, every replica left verified");
}
