//! Test data: deterministic, different per seed.

use rand::{Rng, SeedableRng};

/// The chunk size of test clusters.
pub const CHUNK: usize = 1 << 20;

/// Deterministic pseudo-random bytes, different per seed.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    v
}
