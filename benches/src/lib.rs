//! benches live in benches/
