//! `dfs bench`: throughput and latency of a running cluster, and the machine's own
//! ceilings to hold them against, measured in the same run.
//!
//! - [`ceiling`]: what the disk, loopback TCP through our framing and blake3 can do
//!   here, and the put and get ceilings that follow from them;
//! - [`workloads`]: put and get of one large file, many small files, record append
//!   with several appenders, metadata operations;
//! - [`holders`]: chunkservers in name only that report holding what `load` wrote;
//! - [`load`]: many files of one chunk written into a stopped master's data dir, for
//!   measuring a large master;
//! - [`stats`]: latency samples and their percentiles;
//! - [`process`]: this process's CPU time and peak memory.

pub mod ceiling;
pub mod holders;
pub mod load;
pub mod process;
pub mod stats;
pub mod workloads;
