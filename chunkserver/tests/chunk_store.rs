//! The chunk store on a real temp dir: round trips across reopen, crash leftovers,
//! corruption never returned as data, capacity.

use dfs_chunkserver::failpoint::Step;
use dfs_chunkserver::store::ChunkStore;
use dfs_chunkserver::StoreError;
use dfs_protocol::{ChunkHandle, ChunkVersion, ErrorCode};
use proptest::prelude::*;

fn write(store: &ChunkStore, data: &[u8], packet: usize) -> ChunkHandle {
    let h = ChunkHandle::random();
    let mut w = store.create(h, ChunkVersion::FIRST).expect("create");
    for p in data.chunks(packet.max(1)) {
        w.write(p).expect("write");
    }
    assert_eq!(w.commit().expect("commit"), data.len() as u64);
    h
}

fn read_all(store: &ChunkStore, h: ChunkHandle) -> Result<Vec<u8>, StoreError> {
    let mut r = store.open_reader(h, ChunkVersion::FIRST)?;
    let len = r.len();
    Ok(r.read(0, len)?.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn ranges_read_back_exactly_across_reopen(
        len in 0usize..300_000,
        packet in 1usize..200_000,
        ranges in proptest::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 1..8),
        // Packed when at most this long (0: never), else in files of its own.
        pack_below in prop::sample::select(vec![0u64, 150_000]),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let h = {
            let store = ChunkStore::open(dir.path(), Some(1 << 30)).unwrap().with_pack_below(pack_below);
            write(&store, &data, packet)
        };
        let store = ChunkStore::open(dir.path(), Some(1 << 30)).unwrap();
        prop_assert_eq!(store.is_packed(&h), len > 0 && len as u64 <= pack_below);
        prop_assert_eq!(store.get(&h), Some((ChunkVersion::FIRST, len as u64)));
        let mut r = store.open_reader(h, ChunkVersion::FIRST).unwrap();
        for (a, b) in ranges {
            let (a, b) = (a.index(len + 1), b.index(len + 1));
            let (lo, hi) = (a.min(b), a.max(b));
            let got = r.read(lo as u64, (hi - lo) as u64).unwrap();
            prop_assert_eq!(&got[..], &data[lo..hi]);
        }
        prop_assert!(r.read(len as u64, 1).is_err());
    }
}

/// An empty read anywhere inside a chunk is empty, not a panic (proptest found one
/// at an offset that is not a block boundary).
#[test]
fn an_empty_read_inside_a_block_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path(), Some(1 << 30)).unwrap();
    let data = vec![5u8; 100_000];
    let h = write(&store, &data, 65_536);
    let mut r = store.open_reader(h, ChunkVersion::FIRST).unwrap();
    for offset in [0u64, 1, 57_062, 65_536, 99_999, 100_000] {
        assert!(r.read(offset, 0).unwrap().is_empty(), "at {offset}");
    }
}

#[test]
fn a_flipped_byte_is_an_error_never_data() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path(), Some(1 << 30)).unwrap();
    let data = vec![7u8; 200_000];
    let h = write(&store, &data, 65_536);
    let path = store.chunk_path(h);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[150_000] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    match read_all(&store, h) {
        Err(StoreError::Refused(ErrorCode::ChecksumMismatch { offset, .. })) => {
            assert_eq!(offset, 131_072)
        }
        other => panic!("expected a checksum error, got {other:?}"),
    }
    // blocks before the damage still read
    let mut r = store.open_reader(h, ChunkVersion::FIRST).unwrap();
    assert_eq!(r.read(0, 100_000).unwrap().len(), 100_000);
}

#[test]
fn crash_leftovers_are_removed_and_uncommitted_writes_vanish() {
    let dir = tempfile::tempdir().unwrap();
    let h;
    {
        let store = ChunkStore::open(dir.path(), Some(1 << 30)).unwrap();
        h = write(&store, b"kept", 2);
        let mut w = store
            .create(ChunkHandle::random(), ChunkVersion::FIRST)
            .unwrap();
        w.write(b"never committed").unwrap();
        std::mem::forget(w); // as if the process died mid-write
        std::fs::remove_file(dir.path().join("chunks").join(format!("{h}.meta"))).unwrap();
    }
    let store = ChunkStore::open(dir.path(), Some(1 << 30)).unwrap();
    assert!(
        store.is_empty(),
        "a chunk without its meta is not committed"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path().join("chunks"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "temp and orphan files removed: {left:?}");
}

#[test]
fn capacity_is_enforced_and_a_failed_write_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path(), Some(100_000)).unwrap();
    let mut w = store
        .create(ChunkHandle::random(), ChunkVersion::FIRST)
        .unwrap();
    w.write(&[1u8; 60_000]).unwrap();
    let err = w.write(&[1u8; 60_000]).expect_err("over capacity");
    assert!(
        matches!(err, StoreError::Refused(ErrorCode::NoSpace { .. })),
        "{err}"
    );
    drop(w);
    assert_eq!(
        std::fs::read_dir(dir.path().join("chunks"))
            .unwrap()
            .count(),
        0
    );
    write(&store, &[2u8; 90_000], 10_000);
    assert_eq!(store.used(), 90_000);
}

#[test]
fn wrong_version_is_stale() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path(), Some(1 << 20)).unwrap();
    let h = write(&store, b"abc", 3);
    assert!(matches!(
        store.open_reader(h, ChunkVersion(2)),
        Err(StoreError::Refused(ErrorCode::StaleVersion { .. }))
    ));
}

#[derive(Clone, Debug)]
enum Op {
    Write(usize, usize, u64),
    Delete(usize),
    Quarantine(usize),
    Read(usize, prop::sample::Index, prop::sample::Index),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..5, 0usize..200_000, any::<u64>()).prop_map(|(k, n, s)| Op::Write(k, n, s)),
        2 => (0usize..5).prop_map(Op::Delete),
        1 => (0usize..5).prop_map(Op::Quarantine),
        3 => (0usize..5, any::<prop::sample::Index>(), any::<prop::sample::Index>()).prop_map(|(k, a, b)| Op::Read(k, a, b)),
        1 => Just(Op::Reopen),
    ]
}

fn bytes(n: usize, seed: u64) -> Vec<u8> {
    (0..n)
        .map(|i| (seed.wrapping_mul(31).wrapping_add(i as u64 * 7) >> 3) as u8)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    /// The store against a BTreeMap of chunk contents, across reopens.
    #[test]
    fn store_matches_a_map_across_reopen(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let handles: Vec<ChunkHandle> = (0..5).map(|_| ChunkHandle::random()).collect();
        let mut store = ChunkStore::open(dir.path(), Some(1 << 30)).unwrap();
        let mut model: std::collections::BTreeMap<usize, Vec<u8>> = Default::default();
        for op in ops {
            match op {
                Op::Write(k, n, seed) => {
                    let data = bytes(n, seed);
                    match store.create(handles[k], ChunkVersion::FIRST) {
                        Ok(mut w) => {
                            prop_assert!(!model.contains_key(&k), "created over an existing chunk");
                            for p in data.chunks(70_000) {
                                w.write(p).unwrap();
                            }
                            w.commit().unwrap();
                            model.insert(k, data);
                        }
                        Err(_) => prop_assert!(model.contains_key(&k)),
                    }
                }
                Op::Delete(k) => prop_assert_eq!(store.delete(handles[k]).unwrap(), model.remove(&k).is_some()),
                Op::Quarantine(k) => prop_assert_eq!(store.quarantine(handles[k]).unwrap(), model.remove(&k).is_some()),
                Op::Read(k, a, b) => match (store.open_reader(handles[k], ChunkVersion::FIRST), model.get(&k)) {
                    (Ok(mut r), Some(want)) => {
                        let (a, b) = (a.index(want.len() + 1), b.index(want.len() + 1));
                        let (lo, hi) = (a.min(b), a.max(b));
                        let got = r.read(lo as u64, (hi - lo) as u64).unwrap();
                        prop_assert_eq!(&got[..], &want[lo..hi]);
                    }
                    (Err(_), None) => {}
                    (r, m) => prop_assert!(false, "store {:?} vs model {:?}", r.is_ok(), m.is_some()),
                },
                Op::Reopen => {
                    drop(store);
                    store = ChunkStore::open(dir.path(), Some(1 << 30)).unwrap();
                }
            }
            prop_assert_eq!(store.len(), model.len());
            prop_assert_eq!(store.used(), model.values().map(|v| v.len() as u64).sum::<u64>());
        }
    }
}

fn read_at(store: &ChunkStore, h: ChunkHandle, v: ChunkVersion) -> Result<Vec<u8>, StoreError> {
    let mut r = store.open_reader(h, v)?;
    let len = r.len();
    Ok(r.read(0, len)?.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]
    /// Appends in any sizes, with cuts back in between, read back as the model says,
    /// across reopen; the bytes before each append are never rewritten. With
    /// `O_DIRECT` appends (the default) and with buffered ones.
    #[test]
    fn appends_and_cuts_keep_the_prefix(
        steps in proptest::collection::vec((0usize..150_000, any::<bool>(), any::<prop::sample::Index>()), 1..8),
        direct in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let h = ChunkHandle::random();
        let v = ChunkVersion(2);
        let mut model: Vec<u8> = Vec::new();
        {
            let store = ChunkStore::open(dir.path(), Some(1 << 30)).unwrap().with_direct_io(direct);
            prop_assert_eq!(store.bump(h, None, v).unwrap(), 0);
            for (i, (n, cut, at)) in steps.iter().enumerate() {
                if *cut && !model.is_empty() {
                    let to = at.index(model.len());
                    prop_assert_eq!(store.truncate(h, v, to as u64).unwrap(), to as u64);
                    model.truncate(to);
                }
                let piece = bytes(*n, i as u64);
                let halves = [bytes::Bytes::copy_from_slice(&piece[..n / 2]), bytes::Bytes::copy_from_slice(&piece[n / 2..])];
                let end = store.append(h, v, model.len() as u64, &halves).unwrap();
                model.extend_from_slice(&piece);
                prop_assert_eq!(end, model.len() as u64);
                prop_assert_eq!(read_at(&store, h, v).unwrap(), model.clone());
            }
        }
        let store = ChunkStore::open(dir.path(), Some(1 << 30)).unwrap();
        prop_assert_eq!(store.get(&h), Some((v, model.len() as u64)));
        prop_assert_eq!(read_at(&store, h, v).unwrap(), model);
    }
}

#[test]
fn bumps_move_versions_forward_only_and_appends_check_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = ChunkStore::open(dir.path(), Some(1 << 30)).expect("open");
    let data = bytes(100_000, 9);
    let h = write(&store, &data, 40_000);
    let (v1, v2, v3) = (ChunkVersion::FIRST, ChunkVersion(2), ChunkVersion(3));
    assert_eq!(store.bump(h, Some(v1), v2).expect("bump"), 100_000);
    assert_eq!(
        store.bump(h, Some(v1), v2).expect("again"),
        100_000,
        "idempotent"
    );
    assert!(matches!(
        store.bump(h, Some(v3), ChunkVersion(4)),
        Err(StoreError::Refused(ErrorCode::StaleVersion { .. }))
    ));
    assert!(
        matches!(store.bump(h, None, v2), Ok(100_000)),
        "already there"
    );
    let stale = store.append(h, v1, 100_000, &[bytes::Bytes::from_static(b"x")]);
    assert!(matches!(
        stale,
        Err(StoreError::Refused(ErrorCode::StaleVersion { .. }))
    ));
    let gap = store.append(h, v2, 100_001, &[bytes::Bytes::from_static(b"x")]);
    assert!(matches!(
        gap,
        Err(StoreError::Refused(ErrorCode::BadRequest { .. }))
    ));
    assert_eq!(
        store
            .append(h, v2, 100_000, &[bytes::Bytes::from_static(b"tail")])
            .expect("append"),
        100_004
    );
    let mut want = data.clone();
    want.extend_from_slice(b"tail");
    assert_eq!(read_at(&store, h, v2).expect("read"), want);
    // The report tells the master about the new version and length.
    let changes = store.take_changes();
    assert!(changes
        .added
        .iter()
        .any(|r| r.handle == h && r.version == v2 && r.size == 100_004));
}

#[test]
fn an_append_over_a_damaged_last_block_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = ChunkStore::open(dir.path(), Some(1 << 30)).expect("open");
    let data = bytes(70_000, 3);
    let h = write(&store, &data, 70_000);
    // Damage a byte of the partial last block: the new checksum must not bless it.
    let path = store.chunk_path(h);
    let mut raw = std::fs::read(&path).expect("read chunk file");
    raw[68_000] ^= 1;
    std::fs::write(&path, &raw).expect("write chunk file");
    let r = store.append(
        h,
        ChunkVersion::FIRST,
        70_000,
        &[bytes::Bytes::from_static(b"more")],
    );
    assert!(
        matches!(
            r,
            Err(StoreError::Refused(ErrorCode::ChecksumMismatch { .. }))
        ),
        "{r:?}"
    );
    assert_eq!(store.get(&h), Some((ChunkVersion::FIRST, 70_000)));
}

/// Issue 11, hole 8: a meta file this build cannot read (here: a newer format, as
/// after a downgrade) is never a reason to delete a replica. At start both files go
/// to quarantine, where a newer build or a human can still use them.
#[test]
fn an_unreadable_meta_file_is_quarantined_at_start_never_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let data = vec![5u8; 100_000];
    let (h, chunk_bytes, meta_path, chunk_path) = {
        let store = ChunkStore::open(dir.path(), Some(1 << 30)).unwrap();
        let h = write(&store, &data, 65_536);
        let chunk_path = store.chunk_path(h);
        let meta_path = chunk_path.with_extension("meta");
        (
            h,
            std::fs::read(&chunk_path).unwrap(),
            meta_path,
            chunk_path,
        )
    };
    // Format 2, with a valid checksum: well-formed, just not ours.
    let meta = std::fs::read(&meta_path).unwrap();
    let mut body = meta[..meta.len() - 32].to_vec();
    body[0] = 2;
    let mut newer = body.clone();
    newer.extend_from_slice(blake3::hash(&body).as_bytes());
    std::fs::write(&meta_path, &newer).unwrap();

    let store = ChunkStore::open(dir.path(), Some(1 << 30)).unwrap();
    assert_eq!(store.get(&h), None, "not served");
    assert!(
        !chunk_path.exists() && !meta_path.exists(),
        "out of the chunk dir"
    );
    let kept: Vec<Vec<u8>> = std::fs::read_dir(store.quarantine_dir())
        .expect("a quarantine dir")
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(kept.contains(&chunk_bytes), "the chunk's bytes are kept");
    assert!(kept.contains(&newer), "its meta file too");
}

/// Hole 3: a reader or the scrubber that opens a chunk while a bump has renamed the
/// new meta file into place, but not yet moved the index, must not take the healthy
/// replica for a damaged one.
#[test]
fn a_read_or_scrub_racing_a_bump_never_quarantines_the_replica() {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    for scrub in [false, true] {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = ChunkStore::open(dir.path(), Some(1 << 30)).expect("open");
        let data = bytes(200_000, 5);
        let h = write(&store, &data, 65_536);
        let (tx, rx) = std::sync::mpsc::sync_channel::<String>(1);
        let rx = Arc::new(Mutex::new(rx));
        let early: Arc<Mutex<Option<String>>> = Arc::default();
        let (racer, hook_rx, hook_early) = (store.clone(), rx.clone(), early.clone());
        store.failpoints().set(Some(Arc::new(move |step| {
            if step == Step::MetaRenamed {
                let (racer, tx) = (racer.clone(), tx.clone());
                std::thread::spawn(move || {
                    let outcome = if scrub {
                        format!("{:?}", racer.verify(h))
                    } else {
                        match racer.open_reader(h, ChunkVersion::FIRST) {
                            Ok(_) => "opened".to_string(),
                            Err(e) => format!("{e:?}"),
                        }
                    };
                    let _ = tx.send(outcome);
                });
                // The racer either waits for the bump to finish or answers at once;
                // an answer now is what it saw between the rename and the index move.
                let got = hook_rx
                    .lock()
                    .expect("rx")
                    .recv_timeout(Duration::from_millis(300));
                *hook_early.lock().expect("early") = got.ok();
            }
            Ok(())
        })));
        store
            .bump(h, Some(ChunkVersion::FIRST), ChunkVersion(2))
            .expect("bump");
        store.failpoints().set(None);
        let outcome = early.lock().expect("early").take().unwrap_or_else(|| {
            rx.lock()
                .expect("rx")
                .recv_timeout(Duration::from_secs(30))
                .expect("the racer answers once the bump is done")
        });
        assert!(
            !outcome.contains("ChecksumMismatch") && !outcome.contains("Damaged"),
            "scrub={scrub}: {outcome}"
        );
        assert_eq!(store.get(&h), Some((ChunkVersion(2), 200_000)));
        assert_eq!(read_at(&store, h, ChunkVersion(2)).expect("read"), data);
        assert!(store.take_changes().corrupt.is_empty());
    }
}

/// Hole 7: a commit of a newer version that fails before its files are in place
/// leaves the older replica whole (the error path used to remove `<handle>.chunk`,
/// whoever had put it there).
#[test]
fn a_failed_commit_never_destroys_the_older_replica() {
    use std::sync::Arc;
    for fail_at in [Step::CommitDataSynced, Step::CommitMetaWritten] {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = ChunkStore::open(dir.path(), Some(1 << 30)).expect("open");
        let old = bytes(150_000, 7);
        let h = write(&store, &old, 65_536);
        let mut w = store.create(h, ChunkVersion(2)).expect("create v2");
        w.write(&bytes(120_000, 8)).expect("write");
        store.failpoints().set(Some(Arc::new(move |step| {
            if step == fail_at {
                Err(std::io::Error::other("injected disk error"))
            } else {
                Ok(())
            }
        })));
        assert!(w.commit().is_err(), "{fail_at:?}");
        store.failpoints().set(None);
        assert_eq!(store.get(&h), Some((ChunkVersion::FIRST, 150_000)));
        assert_eq!(read_all(&store, h).expect("old replica"), old);
        let reopened = ChunkStore::open(dir.path(), Some(1 << 30)).expect("reopen");
        assert_eq!(
            read_all(&reopened, h).expect("old replica after restart"),
            old
        );
    }
}

/// Runs `f` on another thread and waits for it at most 10 s: a store call that
/// waited on a lock the caller holds would hang instead of failing.
fn elsewhere<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(10))
        .expect("the store call blocked on the append in progress")
}

/// An append fed as its bytes arrive: a sender that stops early commits nothing;
/// while bytes are awaited no lock is held, a second append to the chunk is
/// refused, and a bump in between fails the first one's commit.
#[test]
fn an_append_fed_as_it_arrives_commits_whole_or_not_at_all() {
    for direct in [true, false] {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = ChunkStore::open(dir.path(), Some(1 << 30))
            .expect("open")
            .with_direct_io(direct);
        let data = bytes(70_000, 3);
        let h = write(&store, &data, 70_000);
        let v = ChunkVersion::FIRST;

        // Stops after one of two pieces: refused, nothing changes.
        let mut pieces = vec![bytes::Bytes::from(bytes(5_000, 4))].into_iter();
        let short = store.append_from(h, v, 70_000, 10_000, || pieces.next());
        assert!(
            matches!(
                short,
                Err(StoreError::Refused(ErrorCode::BadRequest { .. }))
            ),
            "{short:?}"
        );
        assert_eq!(store.get(&h), Some((v, 70_000)));
        assert_eq!(read_all(&store, h).expect("read"), data);

        // A second append while the first waits for bytes: refused at once.
        let mut asked = false;
        let other = store.clone();
        let mut second = None;
        let tail = bytes::Bytes::from(bytes(10_000, 5));
        let t = tail.clone();
        let end = store
            .append_from(h, v, 70_000, 10_000, || {
                if asked {
                    return None;
                }
                asked = true;
                let s = other.clone();
                second = Some(elsewhere(move || {
                    s.append(h, v, 70_000, &[bytes::Bytes::from_static(b"x")])
                }));
                Some(t.clone())
            })
            .expect("the first append");
        assert_eq!(end, 80_000);
        assert!(
            matches!(
                second,
                Some(Err(StoreError::Refused(ErrorCode::Unavailable { .. })))
            ),
            "{second:?}"
        );
        let mut want = data.clone();
        want.extend_from_slice(&tail);
        assert_eq!(read_all(&store, h).expect("read"), want);

        // A bump while the bytes arrive: the append fails, the bump stands.
        let other = store.clone();
        let mut bumped = None;
        let mut fed = false;
        let r = store.append_from(h, v, 80_000, 3, || {
            if fed {
                return None;
            }
            fed = true;
            let s = other.clone();
            bumped = Some(elsewhere(move || s.bump(h, Some(v), ChunkVersion(2))));
            Some(bytes::Bytes::from_static(b"abc"))
        });
        assert!(r.is_err(), "{r:?}");
        assert_eq!(bumped.map(|b| b.ok()), Some(Some(80_000)));
        assert_eq!(store.get(&h), Some((ChunkVersion(2), 80_000)));
    }
}
