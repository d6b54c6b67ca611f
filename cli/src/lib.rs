//! The `dfs` binary's library half: what `dfs up`, the integration tests and the
//! benches share.
//!
//! Layout:
//! - [`bench`]: `dfs bench`: the machine's ceilings and the cluster's workloads.
//! - [`cluster`]: `LocalCluster`, a master and N chunkservers in one process.
//! - [`config`]: the config file (`config.toml`, `--config`).
//! - [`credentials`]: where client verbs and servers find keys and the cluster secret.
//! - [`settings`]: what a client verb runs with and where each value came from.
//! - [`tls`]: the cluster CA and certificates (`dfs tls init`), loading them.
//! - [`unchanged`]: a local file checked at its end to be the file it was at its start.
//! - [`units`]: parsing sizes (`64MiB`) and durations (`500ms`) from the command line.
//! - [`progress`]: a progress bar around a reader or writer, shown only on a terminal.
//! - [`output`]: plain and `--json` renderings of `ls`, `stat`, `status`.

pub mod bench;
pub mod cluster;
pub mod config;
pub mod credentials;
pub mod output;
pub mod progress;
pub mod settings;
pub mod tls;
pub mod unchanged;
pub mod units;
