//! Seeds for randomized tests: a range a test runs by default, widened or moved by
//! environment variables, so a longer run or one failing seed needs no code change.

/// `$PREFIX_SEED` (first seed, default 1) and `$PREFIX_SEEDS` (how many, default
/// `count`): e.g. `DFS_SCHEDULE_SEED=17 DFS_SCHEDULE_SEEDS=1` reruns seed 17 alone.
pub fn seeds(prefix: &str, count: u64) -> std::ops::Range<u64> {
    let var = |k: String, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let first = var(format!("{prefix}_SEED"), 1);
    first..first.saturating_add(var(format!("{prefix}_SEEDS"), count))
}
