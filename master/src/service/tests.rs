//! Upkeep decisions on a real master state (real sled, real log in a temp dir), with
//! chunkserver reports fed in directly, for schedules the black-box tests cannot aim.

use std::time::{Duration, Instant};

use dfs_protocol::{
    ChunkHandle, ChunkReport, ChunkVersion, ClusterSecret, CommittedChunk, ServerId,
};
use tokio_util::sync::CancellationToken;

use super::chunkservers::note_reports;
use super::replication::order_copy;
use super::Master;
use crate::config::MasterConfig;
use crate::mutation::Mutation;

fn master(dir: &std::path::Path) -> Master {
    let (ns, log) = crate::recovery::recover(dir).expect("recover");
    let config = MasterConfig::new(dir);
    Master::new(
        config,
        ClusterSecret::generate(),
        ns,
        log,
        CancellationToken::new(),
    )
}

fn report(handle: ChunkHandle, version: u64) -> ChunkReport {
    ChunkReport {
        handle,
        version: ChunkVersion(version),
        size: 10,
    }
}

/// A file of one chunk at version 3 on `holders`, with `others` registered empty.
fn setup(m: &Master, holders: &[ServerId], others: &[ServerId]) -> ChunkHandle {
    let mut st = m.lock();
    let now = Instant::now();
    for (i, s) in holders.iter().chain(others).enumerate() {
        st.map.register(
            *s,
            format!("127.0.0.1:{}", 7000 + i),
            1 << 30,
            0,
            vec![],
            now,
        );
    }
    let (upload, begin) = st.ns.plan_begin_upload("/f", 3, false, 1).expect("begin");
    m.log_apply(&mut st, begin).expect("apply");
    let h = ChunkHandle::random();
    let alloc = st
        .ns
        .plan_allocate(upload, h, holders.to_vec(), 1)
        .expect("allocate");
    m.log_apply(&mut st, alloc).expect("apply");
    let commit = st
        .ns
        .plan_commit(
            upload,
            &[CommittedChunk {
                handle: h,
                size: 10,
            }],
            1 << 20,
            1,
        )
        .expect("commit");
    m.log_apply(&mut st, commit).expect("apply");
    m.log_apply(
        &mut st,
        Mutation::SetChunk {
            handle: h,
            version: ChunkVersion(3),
            size: 10,
            open: None,
            mtime: 1,
        },
    )
    .expect("apply");
    for s in holders {
        st.map
            .heartbeat(*s, 1 << 30, 0, 0, vec![report(h, 3)], vec![], now);
    }
    h
}

/// Issue 11, hole 6: a copy (here a balancing move) counts as done only when its
/// target reports the version ordered. A target reporting an older replica is stale,
/// not the copy, and the move's source is not queued for trimming on its account.
#[tokio::test]
async fn a_copy_is_done_only_at_the_version_ordered() {
    let dir = tempfile::tempdir().expect("temp dir");
    let m = master(dir.path());
    let holders: Vec<ServerId> = (0..3).map(|_| ServerId::random()).collect();
    let target = ServerId::random();
    let h = setup(&m, &holders, &[target]);
    let now = Instant::now();
    let mut st = m.lock();
    let meta = *st.ns.chunk(&h).expect("chunk");
    assert_eq!(meta.version, ChunkVersion(3));

    let source = (
        holders[0],
        st.map.addr(&holders[0]).expect("addr").to_string(),
    );
    order_copy(&mut st, &m.tokens, h, meta, source.clone(), target, now);
    st.moves.insert(h, holders[0]);
    // The target turns up holding the chunk at an old version.
    let adopt = note_reports(&mut st, target, &[report(h, 2)]);
    assert!(adopt.is_empty());
    assert!(
        !st.trims.contains(&(holders[0], h)),
        "the move's source must not be trimmed for a stale copy"
    );
    assert!(st.stale.contains(&(target, h)), "the old replica is stale");
    assert!(!st.copying.contains_key(&h), "the copy is looked at afresh");

    // Ordered again, the copy at the ordered version completes the move.
    order_copy(&mut st, &m.tokens, h, meta, source, target, now);
    st.moves.insert(h, holders[0]);
    note_reports(&mut st, target, &[report(h, 3)]);
    assert!(!st.copying.contains_key(&h));
    assert!(st.trims.contains(&(holders[0], h)));
}

/// A copy whose source died is ordered again at once, from a live replica, rather
/// than after the copy timeout: the target cannot copy from a dead server and does
/// not report a failed copy. (Servers killed together are declared dead over a
/// second or so, and repairs had waited a minute for copies from the later ones.)
#[tokio::test]
async fn a_copy_from_a_source_that_died_is_ordered_again_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let m = master(dir.path());
    let holders: Vec<ServerId> = (0..3).map(|_| ServerId::random()).collect();
    let target = ServerId::random();
    let h = setup(&m, &holders, &[target]);
    let start = Instant::now();
    let mut st = m.lock();
    let meta = *st.ns.chunk(&h).expect("chunk");
    let source = (
        holders[0],
        st.map.addr(&holders[0]).expect("addr").to_string(),
    );
    order_copy(&mut st, &m.tokens, h, meta, source, target, start);

    // Long enough for the source's silence to count as death, far short of the
    // copy timeout; everyone but the source has kept heartbeating.
    let later = start + st.map.dead_after() + Duration::from_secs(1);
    for s in holders[1..].iter().chain([&target]) {
        st.map.heartbeat(*s, 1 << 30, 0, 0, vec![], vec![], later);
    }
    assert!(!st.map.is_alive(&holders[0], later));
    super::attention::refresh(&mut st, later);
    super::replication::schedule_repairs(&mut st, &m.tokens, later);
    let copy = st.copying.get(&h).expect("a copy of the chunk, now short");
    assert_ne!(
        copy.source, holders[0],
        "the copy from the dead source was kept"
    );
    assert!(holders[1..].contains(&copy.source));
}
