//! Latency distributions: nearest-rank percentiles, as `perf/export`'s summary uses.

use serde::Serialize;

/// A distribution of samples, in the run's unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub count: usize,
    pub min: u64,
    pub p10: u64,
    pub median: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

/// The nearest-rank `percent` percentile of sorted `values`: the smallest value with at
/// least `percent`% of the values at or below it.
pub fn percentile(sorted: &[u64], percent: usize) -> Option<u64> {
    let rank = (sorted.len() * percent).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

impl Summary {
    /// The distribution of `values`, or `None` if there are none.
    pub fn of(values: &[u64]) -> Option<Self> {
        let mut sorted = values.to_vec();
        sorted.sort_unstable();
        Some(Self {
            count: sorted.len(),
            min: *sorted.first()?,
            p10: percentile(&sorted, 10)?,
            median: percentile(&sorted, 50)?,
            p90: percentile(&sorted, 90)?,
            p99: percentile(&sorted, 99)?,
            max: *sorted.last()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<u64> = (1..=100).rev().collect();
        let summary = Summary::of(&values).unwrap();
        assert_eq!(
            (summary.count, summary.min, summary.p10, summary.median, summary.p90, summary.p99, summary.max),
            (100, 1, 10, 50, 90, 99, 100)
        );
        // Small sets: the rank rounds up, and never falls below the first value.
        assert_eq!(percentile(&[7], 10), Some(7));
        assert_eq!(percentile(&[1, 2, 3], 50), Some(2));
        assert_eq!(percentile(&[1, 2, 3], 99), Some(3));
        assert_eq!(percentile(&[1, 2, 3], 0), Some(1));
        assert_eq!(Summary::of(&[]), None);
    }

    #[test]
    fn identical_samples_give_one_value_everywhere() {
        let summary = Summary::of(&[423; 1000]).unwrap();
        assert_eq!((summary.min, summary.median, summary.p99, summary.max), (423, 423, 423, 423));
    }
}
