//! A master's namespace and operation log on real sled in a temp dir, driven the
//! way the service drives them: plan, log, apply. Shared by the integration tests
//! that need a tree built without a running server.

use std::path::Path;

use dfs_master::mutation::Mutation;
use dfs_master::namespace::Namespace;
use dfs_master::oplog::OpLog;
use dfs_master::recovery;
use dfs_protocol::{ChunkHandle, CommittedChunk};

pub struct Real {
    pub ns: Namespace,
    pub log: OpLog,
}

impl Real {
    /// Opens the master's state in `dir`. Right after a close, sled's own
    /// background threads may still hold the previous handle's file lock for a
    /// moment: that is waited out, for at most 10 s.
    pub fn open(dir: &Path) -> Real {
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
    pub fn exec(&mut self, m: Mutation) -> Vec<ChunkHandle> {
        let seq = self.ns.applied() + 1;
        self.log
            .append(seq, &m.encode().expect("encode"))
            .expect("append");
        self.ns.apply(seq, &m).expect("apply").freed
    }

    /// A stop as after a crash of the process: what sled holds, plus the log.
    #[allow(dead_code)] // not every test restarts
    pub fn close(self) {
        self.log.close().expect("close the log");
        drop(self.ns);
    }

    /// `mkdir -p path`.
    pub fn mkdir(&mut self, path: &str) {
        if let Some(m) = self.ns.plan_mkdir(path, true, 1).expect("plan mkdir") {
            self.exec(m);
        }
    }

    /// The put of a file of one chunk of `size` bytes at `path`; its chunk.
    pub fn file(&mut self, path: &str, size: u64) -> ChunkHandle {
        let (upload, m) = self.ns.plan_begin_upload(path, 3, false, 1).expect("begin");
        self.exec(m);
        let handle = ChunkHandle::random();
        let m = self
            .ns
            .plan_allocate(upload, handle, vec![], 1)
            .expect("allocate");
        self.exec(m);
        let m = self
            .ns
            .plan_commit(upload, &[CommittedChunk { handle, size }], 1 << 20, 1)
            .expect("commit");
        self.exec(m);
        handle
    }
}
