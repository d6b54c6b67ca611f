//! Removing a tree too large for one record: it leaves the namespace at once, and is
//! reclaimed in pieces of at most `REAP_PIECE` entries, each its own logged mutation;
//! a restart in the middle (recovery from sled and the log) carries on where it was.
//! Real sled and a real operation log in a temp dir.

use dfs_master::mutation::Mutation;
use dfs_master::namespace::REAP_PIECE;
use dfs_protocol::ChunkHandle;

mod common;
use common::Real;

/// `/<top>` with `dirs` directories of `per_dir` empty directories each, and one
/// file of one chunk in each of the first `files` directories; its chunks.
fn tree(real: &mut Real, top: &str, dirs: usize, per_dir: usize, files: usize) -> Vec<ChunkHandle> {
    for d in 0..dirs {
        for e in 0..per_dir {
            real.mkdir(&format!("/{top}/d{d}/e{e}"));
        }
    }
    (0..files)
        .map(|d| real.file(&format!("/{top}/d{d}/file"), 100))
        .collect()
}

fn reap(real: &mut Real) -> Option<(usize, Vec<ChunkHandle>)> {
    let piece = real.ns.reap_piece()?;
    let Mutation::Reap { inodes, .. } = &piece else {
        panic!("a piece is a Reap, not {}", piece.name());
    };
    let n = inodes.len();
    Some((n, real.exec(piece)))
}

#[test]
fn a_large_tree_is_detached_at_once_and_reclaimed_in_pieces_across_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut real = Real::open(dir.path());
    // 1 + 12 + 12 * 700 = 8,413 entries, and 5 files: over two pieces.
    let handles = tree(&mut real, "big", 12, 700, 5);
    tree(&mut real, "keep", 2, 3, 1);
    assert_eq!(real.ns.visible_files(), 6);
    let chunks_before = real.ns.chunks().count();

    let m = real
        .ns
        .plan_remove("/big", true, false, 2)
        .expect("plan rm");
    assert!(
        matches!(m, Mutation::Detach { .. }),
        "not detached: {}",
        m.name()
    );
    assert!(
        real.exec(m).is_empty(),
        "nothing freed before it is reclaimed"
    );
    assert!(real.ns.stat_ino("/big").is_err(), "/big is gone at once");
    assert_eq!(real.ns.visible_files(), 1, "its files no longer count");
    assert_eq!(real.ns.reaping(), 1);

    // One piece, then a restart in the middle of the reclaiming.
    let (n, mut freed) = reap(&mut real).expect("a first piece");
    assert_eq!(n, REAP_PIECE);
    real.close();
    let mut real = Real::open(dir.path());
    assert_eq!(real.ns.reaping(), 1, "the reclaiming survives a restart");
    assert_eq!(real.ns.visible_files(), 1);

    let mut pieces = 1;
    while let Some((n, f)) = reap(&mut real) {
        assert!(n <= REAP_PIECE, "a piece of {n}");
        freed.extend(f);
        pieces += 1;
        assert!(pieces <= 10, "reclaiming does not end");
    }
    assert_eq!(pieces, 3, "8,413 entries in pieces of {REAP_PIECE}");
    assert_eq!(real.ns.reaping(), 0);
    freed.sort();
    let mut expect = handles.clone();
    expect.sort();
    assert_eq!(freed, expect, "every chunk of the tree freed once");
    assert_eq!(real.ns.chunks().count(), chunks_before - handles.len());
    assert_eq!(real.ns.visible_files(), 1);
    assert!(
        real.ns.stat_ino("/keep/d1/e2").is_ok(),
        "the rest is untouched"
    );

    // The same state after another restart: every piece was logged.
    real.close();
    let real = Real::open(dir.path());
    assert_eq!(real.ns.reaping(), 0);
    assert_eq!(real.ns.chunks().count(), chunks_before - handles.len());
    assert_eq!(real.ns.list("/").expect("ls /").len(), 1);
}

#[test]
fn a_large_trash_entry_is_purged_in_pieces_and_a_small_removal_stays_one_record() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut real = Real::open(dir.path());
    tree(&mut real, "big", 6, 800, 2);
    tree(&mut real, "small", 2, 5, 1);

    let m = real
        .ns
        .plan_remove("/small", true, false, 2)
        .expect("plan rm");
    assert!(matches!(m, Mutation::Remove { .. }), "{}", m.name());
    assert_eq!(real.exec(m).len(), 1, "its chunk freed at once");

    let m = real
        .ns
        .plan_remove("/big", true, true, 2)
        .expect("plan rm to trash");
    real.exec(m);
    assert_eq!(real.ns.trash().count(), 1);
    let due = real.ns.expired_trash(u64::MAX, 0);
    assert_eq!(due.len(), 1);
    assert!(
        matches!(due[0], Mutation::DetachTrash { .. }),
        "{}",
        due[0].name()
    );
    for m in due {
        real.exec(m);
    }
    assert_eq!(real.ns.trash().count(), 0, "out of the trash at once");
    let mut freed = 0;
    let mut pieces = 0;
    while let Some((_, f)) = reap(&mut real) {
        freed += f.len();
        pieces += 1;
        assert!(pieces <= 10, "reclaiming does not end");
    }
    assert_eq!((pieces, freed), (2, 2));
    assert_eq!(real.ns.visible_files(), 0);
    assert!(real.ns.list("/").expect("ls /").is_empty());
}
