//! Small chunks in pack files, on a real temp dir: they read back across a reopen,
//! go away when deleted, move out to files of their own before an append, lose to a
//! newer version in either form, are quarantined when damaged, and compaction gives
//! back dead records' space without losing a live one.

use bytes::Bytes;
use dfs_chunkserver::store::{find_packed, ChunkStore, Compaction};
use dfs_chunkserver::StoreError;
use dfs_protocol::{ChunkHandle, ChunkVersion, ErrorCode};

const CAPACITY: u64 = 1 << 30;
const PACK_BELOW: u64 = 256 << 10;

fn open(dir: &std::path::Path) -> ChunkStore {
    ChunkStore::open(dir, Some(CAPACITY))
        .expect("open")
        .with_pack_below(PACK_BELOW)
}

fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
        .collect()
}

fn put(store: &ChunkStore, h: ChunkHandle, version: u64, bytes: &[u8]) -> Result<u64, StoreError> {
    let mut w = store.create(h, ChunkVersion(version))?;
    for p in bytes.chunks(40_000) {
        w.write(p)?;
    }
    w.commit()
}

fn read(store: &ChunkStore, h: ChunkHandle) -> Result<Vec<u8>, StoreError> {
    let (version, len) = store.get(&h).ok_or(ErrorCode::UnknownChunk { handle: h })?;
    let mut r = store.open_reader(h, version)?;
    Ok(r.read(0, len)?.to_vec())
}

fn reported(store: &ChunkStore, h: ChunkHandle) -> Option<(ChunkVersion, u64)> {
    store
        .full_report()
        .into_iter()
        .find(|r| r.handle == h)
        .map(|r| (r.version, r.size))
}

#[test]
fn small_chunks_are_packed_and_read_back_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let chunks: Vec<(ChunkHandle, Vec<u8>)> = [1usize, 65_536, 100_000, PACK_BELOW as usize]
        .into_iter()
        .enumerate()
        .map(|(i, n)| (ChunkHandle::random(), data(n, i as u8)))
        .collect();
    let big = (ChunkHandle::random(), data(PACK_BELOW as usize + 1, 9));
    {
        let store = open(dir.path());
        for (h, d) in chunks.iter().chain([&big]) {
            put(&store, *h, 1, d).unwrap();
        }
        for (h, d) in &chunks {
            assert!(store.is_packed(h));
            assert_eq!(&read(&store, *h).unwrap(), d);
        }
        assert!(
            !store.is_packed(&big.0),
            "one byte over the limit gets files"
        );
        // None of the packed ones made files of their own.
        let files = std::fs::read_dir(dir.path().join("chunks"))
            .unwrap()
            .count();
        assert_eq!(files, 2, "the big chunk's data and meta only");
    }
    let store = open(dir.path());
    for (h, d) in chunks.iter().chain([&big]) {
        assert_eq!(&read(&store, *h).unwrap(), d);
        assert_eq!(
            reported(&store, *h),
            Some((ChunkVersion(1), d.len() as u64))
        );
    }
    let used: u64 = chunks
        .iter()
        .chain([&big])
        .map(|(_, d)| d.len() as u64)
        .sum();
    assert_eq!(store.used(), used);
}

#[test]
fn a_deleted_packed_chunk_stays_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (ChunkHandle::random(), ChunkHandle::random());
    {
        let store = open(dir.path());
        put(&store, a, 1, &data(5000, 1)).unwrap();
        put(&store, b, 1, &data(6000, 2)).unwrap();
        assert!(store.delete(a).unwrap());
        assert!(read(&store, a).is_err());
        assert_eq!(read(&store, b).unwrap(), data(6000, 2));
    }
    let store = open(dir.path());
    assert_eq!(store.get(&a), None);
    assert!(find_packed(dir.path(), &a).unwrap().is_none());
    assert_eq!(read(&store, b).unwrap(), data(6000, 2));
}

#[test]
fn an_append_moves_a_packed_chunk_out_first() {
    let dir = tempfile::tempdir().unwrap();
    let h = ChunkHandle::random();
    let first = data(70_000, 1);
    let more = data(50_000, 2);
    {
        let store = open(dir.path());
        put(&store, h, 1, &first).unwrap();
        assert!(store.is_packed(&h));
        store
            .bump(h, Some(ChunkVersion(1)), ChunkVersion(2))
            .unwrap();
        assert!(!store.is_packed(&h), "a bump changes the chunk in place");
        let end = store
            .append(
                h,
                ChunkVersion(2),
                first.len() as u64,
                &[Bytes::from(more.clone())],
            )
            .unwrap();
        assert_eq!(end, (first.len() + more.len()) as u64);
    }
    let store = open(dir.path());
    assert!(
        !store.is_packed(&h),
        "the files win over the old packed copy"
    );
    assert!(
        find_packed(dir.path(), &h).unwrap().is_none(),
        "the packed copy is dead"
    );
    let mut want = first;
    want.extend(more);
    assert_eq!(read(&store, h).unwrap(), want);
    assert_eq!(
        reported(&store, h),
        Some((ChunkVersion(2), want.len() as u64))
    );
}

#[test]
fn a_newer_version_replaces_an_older_in_either_form() {
    let dir = tempfile::tempdir().unwrap();
    let (over_file, over_packed) = (ChunkHandle::random(), ChunkHandle::random());
    {
        // Version 1 of one in files (packing off), of the other packed.
        let files = ChunkStore::open(dir.path(), Some(CAPACITY)).unwrap();
        put(&files, over_file, 1, &data(300_000, 1)).unwrap();
    }
    {
        let store = open(dir.path());
        put(&store, over_packed, 1, &data(1000, 2)).unwrap();
        put(&store, over_file, 2, &data(2000, 3)).unwrap();
        put(&store, over_packed, 2, &data(3000, 4)).unwrap();
        let older = put(&store, over_packed, 1, &data(10, 5));
        assert!(
            older.is_err(),
            "an older version never replaces a newer one"
        );
    }
    let store = open(dir.path());
    assert!(store.is_packed(&over_file) && store.is_packed(&over_packed));
    assert_eq!(store.get(&over_file), Some((ChunkVersion(2), 2000)));
    assert_eq!(read(&store, over_file).unwrap(), data(2000, 3));
    assert_eq!(read(&store, over_packed).unwrap(), data(3000, 4));
    let leftovers = std::fs::read_dir(dir.path().join("chunks"))
        .unwrap()
        .count();
    assert_eq!(leftovers, 0, "version 1's files are gone");
    assert_eq!(store.used(), 5000);
}

#[test]
fn a_damaged_packed_chunk_is_quarantined_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let (bad, good) = (ChunkHandle::random(), ChunkHandle::random());
    {
        let store = open(dir.path());
        put(&store, bad, 1, &data(100_000, 1)).unwrap();
        put(&store, good, 1, &data(100_000, 2)).unwrap();
    }
    let at = find_packed(dir.path(), &bad).unwrap().unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&at.file)
        .unwrap();
    let mut byte = [0u8];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut byte, at.data_at + 70_000).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[byte[0] ^ 1], at.data_at + 70_000).unwrap();

    let store = open(dir.path());
    match read(&store, bad) {
        Err(StoreError::Refused(ErrorCode::ChecksumMismatch { offset, .. })) => {
            assert_eq!(offset, 65_536)
        }
        other => panic!("damage served: {other:?}"),
    }
    assert!(store
        .quarantine_damaged(bad, ChunkVersion(1), Some(100_000))
        .unwrap());
    assert_eq!(store.get(&bad), None);
    assert!(store.take_changes().corrupt.contains(&bad));
    let kept = std::fs::read_dir(store.quarantine_dir()).unwrap().count();
    assert_eq!(kept, 1, "a copy of the record is kept for a human");
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.get(&bad), None, "never back after a restart");
    assert_eq!(read(&store, good).unwrap(), data(100_000, 2));
}

#[test]
fn compaction_gives_back_dead_space_and_keeps_every_live_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).with_pack_file_max(1 << 20);
    let chunks: Vec<(ChunkHandle, Vec<u8>)> = (0..60)
        .map(|i| (ChunkHandle::random(), data(50_000 + i, i as u8)))
        .collect();
    for (h, d) in &chunks {
        put(&store, *h, 1, d).unwrap();
    }
    let before = store.pack_bytes();
    // Nothing dead yet: nothing to do.
    assert_eq!(store.compact_packs().unwrap(), Compaction::default());
    // Keep one in four; the others' records are dead.
    let (keep, gone): (Vec<_>, Vec<_>) = chunks.iter().enumerate().partition(|(i, _)| i % 4 == 0);
    for (_, (h, _)) in &gone {
        assert!(store.delete(*h).unwrap());
    }
    let done = store.compact_packs().unwrap();
    assert!(done.removed >= 2, "{done:?}");
    assert!(done.moved > 0, "{done:?}");
    // The file still open for appends (a third of them) is left as it is; the
    // closed ones keep only their live quarter, moved.
    assert!(
        store.pack_bytes() < before * 3 / 5,
        "{} of {before} bytes left",
        store.pack_bytes()
    );
    for (_, (h, d)) in &keep {
        assert_eq!(&read(&store, *h).unwrap(), d);
    }
    drop(store);
    let store = open(dir.path());
    for (_, (h, d)) in &keep {
        assert_eq!(&read(&store, *h).unwrap(), d);
    }
    for (_, (h, _)) in &gone {
        assert_eq!(store.get(h), None);
    }
    assert_eq!(store.len(), keep.len());
}

#[test]
fn commits_at_once_share_syncs_and_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let chunks: Vec<(ChunkHandle, Vec<u8>)> = (0..64)
        .map(|i| (ChunkHandle::random(), data(10_000 + i * 100, i as u8)))
        .collect();
    std::thread::scope(|s| {
        for part in chunks.chunks(8) {
            let store = store.clone();
            s.spawn(move || {
                for (h, d) in part {
                    put(&store, *h, 1, d).unwrap();
                }
            });
        }
    });
    drop(store);
    let store = open(dir.path());
    for (h, d) in &chunks {
        assert_eq!(&read(&store, *h).unwrap(), d);
    }
}
