//! Start-up recovery: the store, then the operation log records after what it holds.

use std::path::Path;

use crate::error::MasterError;
use crate::mutation::Mutation;
use crate::namespace::Namespace;
use crate::oplog::{self, OpLog};
use crate::store::Store;

/// Opens the store under `data_dir/meta`, replays the log in `data_dir/oplog` after the
/// store's applied sequence number, makes the result durable (a checkpoint), starts a
/// new log segment and drops the old ones. Blocking.
pub fn recover(data_dir: &Path) -> Result<(Namespace, OpLog), MasterError> {
    let meta_dir = data_dir.join("meta");
    let log_dir = data_dir.join("oplog");
    std::fs::create_dir_all(&meta_dir).map_err(|source| MasterError::Io {
        context: format!("create {}", meta_dir.display()),
        source,
    })?;
    let store = Store::open(&meta_dir)?;
    let mut ns = Namespace::open(store.clone())?;
    let recovered = oplog::recover(&log_dir)?;
    let from = ns.applied();
    let mut replayed = 0u64;
    for (seq, payload) in &recovered.records {
        if *seq <= ns.applied() {
            continue;
        }
        if *seq != ns.applied() + 1 {
            return Err(MasterError::BadRecord {
                seq: *seq,
                reason: format!(
                    "the store holds the log up to {} but the next record is {seq}: records are missing",
                    ns.applied()
                ),
            });
        }
        let m = Mutation::decode(payload)
            .map_err(|reason| MasterError::BadRecord { seq: *seq, reason })?;
        ns.apply(*seq, &m)?;
        replayed += 1;
    }
    // Checkpoint: everything replayed is now in the store, durably; the old segments go.
    ns.writer().wait_applied(ns.applied())?;
    store.flush_blocking()?;
    let log = OpLog::start(&log_dir, ns.applied() + 1)?;
    log.compact(ns.applied())?;
    tracing::info!(
        store_seq = from,
        replayed,
        torn_bytes = recovered.truncated,
        seq = ns.applied(),
        "metadata recovered"
    );
    Ok((ns, log))
}
