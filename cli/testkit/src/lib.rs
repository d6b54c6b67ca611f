//! The dfs test kit: what every integration test and cluster bench builds on.
//!
//! Real parts only: real TCP on 127.0.0.1, real sled, real files in temp dirs, and
//! real masters and chunkservers, as tasks in the test's process or as `dfs`
//! processes. On top of them, knobs per node:
//! - [`cluster`]: an in-process cluster (`cluster`, `cluster_with`), with graceful
//!   stop and restart of each node, a controllable [`Clock`] and a [`SyncGate`] on
//!   the master's log;
//! - [`procs`]: masters and chunkservers as processes: kill -9, SIGTERM, restart,
//!   freeze (SIGSTOP) and thaw; `dfs up` as a user runs it;
//! - [`netns`]: hosts as network namespaces on one machine, with partitions, loss
//!   and slow links between them;
//! - [`proxy`]: a fault proxy between any two nodes, or the client and a node:
//!   partition (both ways or one way), delay, dropped connections, resets;
//! - [`disk`]: corrupt, truncate or remove a replica on a chunkserver's disk;
//! - [`http`]: a raw HTTP GET, for the status page and `/metrics`;
//! - [`browser`]: headless Chromium over WebDriver, for the status page;
//! - [`mount`]: `dfs mount` as a process, unmounted when dropped, and programs run
//!   in it;
//! - [`wait`]: `wait_until(deadline, condition)` and a time bound for whole tests;
//! - [`requests`]: requests a test sends by hand, as a misbehaving peer would;
//! - [`seeds`]: the seeds a randomized test runs, from the environment;
//! - [`verbs`]: the built `dfs` binary's verbs run as a user would, and checks of
//!   their exit status and one-line errors.
//!
//! Loops are bounded and waits are for conditions; nothing is left behind: temp dirs
//! are removed, processes are killed when dropped, proxies stop with their owner.

pub mod browser;
pub mod cluster;
pub mod data;
pub mod disk;
pub mod http;
pub mod mount;
pub mod netns;
pub mod procs;
pub mod proxy;
pub mod requests;
pub mod seeds;
pub mod verbs;
pub mod wait;

pub use cluster::{cluster, cluster_in, cluster_with, free_addr, master_conn, runtime_cluster};
pub use data::{data, CHUNK};
pub use dfs_cli::cluster::{ClusterOptions, LocalCluster};
pub use dfs_master::clock::Clock;
pub use dfs_master::oplog::SyncGate;
pub use disk::{
    corrupt_replica, has_replica, on_disk, remove_replica, replica_bytes, replica_path,
    truncate_replica,
};
pub use http::{http_get, metric_sample};
pub use mount::{run_ok, Mount};
pub use procs::{dfs_bin, dfs_up, freeze, master_process, signal, thaw, MasterProc, Procs, Up};
pub use proxy::{Direction, FaultProxy};
pub use requests::chunk_read;
pub use seeds::seeds;
pub use wait::{bounded, bounded_for, wait_until};
