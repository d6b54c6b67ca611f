//! Named points inside the chunk store's multi-step writes, where a test can inject a
//! disk error or kill the process, to show that every step leaves either the old
//! replica or the new one on disk, never one that claims bytes or checksums it lacks.
//!
//! No hook is installed outside tests; a point then costs one uncontended read lock.

use std::fmt;
use std::sync::{Arc, RwLock};

/// A point between two durable steps of a chunk store write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// A new chunk's data is written and fsynced under its temp name.
    CommitDataSynced,
    /// Its meta file is written and fsynced under its temp name.
    CommitMetaWritten,
    /// An older version held here has been retired (its meta removed, durably).
    CommitOldRetired,
    /// The data file has its final name; the meta file does not yet.
    CommitChunkRenamed,
    /// Both files have their final names; the directory is not yet fsynced.
    CommitMetaRenamed,
    /// An append's bytes are written into the chunk file, not yet fsynced.
    AppendDataWritten,
    /// An append's bytes are fsynced; the meta covering them is not yet written.
    AppendDataSynced,
    /// A replacement meta file (bump, truncate, append) is fsynced under its temp name.
    MetaTmpWritten,
    /// The replacement meta has its final name; the directory is not yet fsynced.
    MetaRenamed,
    /// A packed chunk's record is synced; the index does not list it yet, and an
    /// older version held here is not yet retired.
    PackSynced,
}

impl Step {
    /// Every step, for tests that go through them all.
    pub const ALL: [Step; 10] = [
        Step::CommitDataSynced,
        Step::CommitMetaWritten,
        Step::CommitOldRetired,
        Step::CommitChunkRenamed,
        Step::CommitMetaRenamed,
        Step::AppendDataWritten,
        Step::AppendDataSynced,
        Step::MetaTmpWritten,
        Step::MetaRenamed,
        Step::PackSynced,
    ];
}

/// What runs at each step: `Err` fails the step as a disk error would; a hook may
/// also end the process there.
pub type Hook = Arc<dyn Fn(Step) -> std::io::Result<()> + Send + Sync>;

/// The hook slot a store and its clones share.
#[derive(Clone, Default)]
pub struct Failpoints {
    hook: Arc<RwLock<Option<Hook>>>,
}

impl Failpoints {
    pub fn set(&self, hook: Option<Hook>) {
        *self
            .hook
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = hook;
    }

    pub(crate) fn hit(&self, step: Step) -> std::io::Result<()> {
        let hook = self
            .hook
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        match hook {
            Some(h) => h(step),
            None => Ok(()),
        }
    }
}

impl fmt::Debug for Failpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = self.hook.read().map(|h| h.is_some()).unwrap_or(false);
        f.debug_struct("Failpoints")
            .field("hook_set", &set)
            .finish()
    }
}
