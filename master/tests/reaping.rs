//! Removing a tree too large for one record: it leaves the namespace at once, and is
//! reclaimed in pieces of at most `REAP_PIECE` entries, each its own logged mutation;
//! a restart in the middle (recovery from sled and the log) carries on where it was.
//! Real sled and a real operation log in a temp dir.

use std::path::Path;

use dfs_master::mutation::Mutation;
use dfs_master::namespace::{Namespace, REAP_PIECE};
use dfs_master::oplog::OpLog;
use dfs_master::recovery;
use dfs_protocol::{ChunkHandle, CommittedChunk};

struct Real {
    ns: Namespace,
    log: OpLog,
}

impl Real {
    /// Opens the master's state in `dir`. Right after a close, sled's own
    /// background threads may still hold the previous handle's file lock for a
    /// moment: that is waited out, for at most 10 s.
    fn open(dir: &Path) -> Real {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match recovery::recover(dir) {
                Ok((ns, log)) => return Real { ns, log },
                Err(e)
                    if format!("{e:?}").contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    // A plain test thread, no runtime to block.
                    #[allow(clippy::disallowed_methods)]
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("recover: {e}"),
            }
        }
    }

    /// Logs and applies `m`; returns the chunks it freed.
    fn exec(&mut self, m: Mutation) -> Vec<ChunkHandle> {
        let seq = self.ns.applied() + 1;
        self.log
            .append(seq, &m.encode().expect("encode"))
            .expect("append");
        self.ns.apply(seq, &m).expect("apply").freed
    }

    /// A stop as after a crash of the process: what sled holds, plus the log.
    fn close(self) {
        self.log.close().expect("close the log");
        drop(self.ns);
    }

    /// `/<top>` with `dirs` directories of `per_dir` empty directories each, and one
    /// file of one chunk in each of the first `files` directories; its chunks.
    fn tree(&mut self, top: &str, dirs: usize, per_dir: usize, files: usize) -> Vec<ChunkHandle> {
        let mut handles = Vec::new();
        for d in 0..dirs {
            for e in 0..per_dir {
                let m = self
                    .ns
                    .plan_mkdir(&format!("/{top}/d{d}/e{e}"), true, 1)
                    .expect("plan mkdir")
                    .expect("a new directory");
                self.exec(m);
            }
        }
        for d in 0..files {
            let (upload, m) = self
                .ns
                .plan_begin_upload(&format!("/{top}/d{d}/file"), 3, false, 1)
                .expect("begin");
            self.exec(m);
            let handle = ChunkHandle::random();
            let m = self
                .ns
                .plan_allocate(upload, handle, vec![], 1)
                .expect("allocate");
            self.exec(m);
            let chunk = CommittedChunk { handle, size: 100 };
            let m = self
                .ns
                .plan_commit(upload, &[chunk], 1 << 20, 1)
                .expect("commit");
            self.exec(m);
            handles.push(handle);
        }
        handles
    }
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
    let handles = real.tree("big", 12, 700, 5);
    real.tree("keep", 2, 3, 1);
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
    real.tree("big", 6, 800, 2);
    real.tree("small", 2, 5, 1);

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
