//! What the cluster benches share: the test kit's real loopback cluster in a temp dir,
//! with a runtime to drive it from criterion.

pub use dfs_testkit::runtime_cluster as start;
