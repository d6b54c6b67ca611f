//! Latency samples of one workload and what a report shows of them.

use std::time::Duration;

use serde::Serialize;

#[derive(Debug, Default, Clone)]
pub struct Samples {
    micros: Vec<u64>,
}

/// Percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Samples {
    pub fn add(&mut self, d: Duration) {
        self.micros
            .push(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn extend(&mut self, other: Samples) {
        self.micros.extend(other.micros);
    }

    pub fn len(&self) -> usize {
        self.micros.len()
    }

    pub fn is_empty(&self) -> bool {
        self.micros.is_empty()
    }

    pub fn latency(&self) -> Latency {
        let mut v = self.micros.clone();
        v.sort_unstable();
        let at = |q: f64| -> f64 {
            if v.is_empty() {
                return 0.0;
            }
            // Nearest rank.
            let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
            v[rank - 1] as f64 / 1000.0
        };
        Latency {
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

/// MiB per second.
pub fn mib_per_s(bytes: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    bytes as f64 / (1024.0 * 1024.0) / secs
}

/// Operations (or files) per second.
pub fn per_s(n: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    n as f64 / secs
}

/// The median of several runs by `key` (the lower one of an even count, so that
/// a report never rounds in its own favour), and every run's `key` in run order.
pub fn median_run<T>(runs: Vec<T>, key: impl Fn(&T) -> f64) -> Option<(T, Vec<f64>)> {
    let keys: Vec<f64> = runs.iter().map(&key).collect();
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by(|&a, &b| keys[a].total_cmp(&keys[b]));
    let at = *order.get(runs.len().checked_sub(1)? / 2)?;
    let chosen = runs.into_iter().nth(at)?;
    Some((chosen, keys))
}

/// The median of `values` (the lower one of an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    median_run(values.to_vec(), |v| *v).map(|(m, _)| m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut s = Samples::default();
        for ms in 1..=100u64 {
            s.add(Duration::from_millis(ms));
        }
        let l = s.latency();
        assert_eq!((l.p50_ms, l.p99_ms, l.max_ms), (50.0, 99.0, 100.0));
        assert_eq!(Samples::default().latency().p99_ms, 0.0);
        assert_eq!(mib_per_s(1 << 20, Duration::from_secs(2)), 0.5);
    }

    #[test]
    fn median_picks_the_middle_run_and_the_lower_of_two() {
        let (m, keys) =
            median_run(vec![("a", 3.0), ("b", 1.0), ("c", 2.0)], |r| r.1).expect("median of three");
        assert_eq!((m.0, keys), ("c", vec![3.0, 1.0, 2.0]));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.0));
        assert_eq!(median(&[7.0]), Some(7.0));
        assert_eq!(median(&[]), None);
    }
}
