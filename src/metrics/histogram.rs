//! Fixed-bucket histograms a shard records into without locks or atomics (each shard owns
//! its own), and the plain snapshots a scrape carries across the mesh.
//!
//! Bucket bounds are fixed per kind (`LATENCY_BOUNDS_US`, `SIZE_BOUNDS_BYTES`), so that
//! every shard's and every broker's histograms of one metric add up in Prometheus.

use std::cell::{Cell, RefCell};

/// Upper bounds of latency buckets, in microseconds (encoded in seconds): 50 µs to 10 s.
pub const LATENCY_BOUNDS_US: &[u64] = &[
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 10_000_000,
];

/// Upper bounds of size buckets, in bytes: 1 KiB to 64 MiB.
pub const SIZE_BOUNDS_BYTES: &[u64] = &[
    1 << 10,
    4 << 10,
    16 << 10,
    64 << 10,
    256 << 10,
    1 << 20,
    4 << 20,
    16 << 20,
    64 << 20,
];

/// What a histogram's values are, and so how they are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Recorded in microseconds, encoded in seconds.
    Microseconds,
    Bytes,
}

/// One shard's histogram. Not `Sync`: owned by the shard that records into it.
#[derive(Debug)]
pub struct Histogram {
    unit: Unit,
    bounds: &'static [u64],
    /// One count per bound, then the overflow (+Inf) bucket.
    counts: RefCell<Vec<u64>>,
    sum: Cell<u64>,
}

impl Histogram {
    pub fn latency() -> Histogram {
        Histogram::new(Unit::Microseconds, LATENCY_BOUNDS_US)
    }

    pub fn sizes() -> Histogram {
        Histogram::new(Unit::Bytes, SIZE_BOUNDS_BYTES)
    }

    fn new(unit: Unit, bounds: &'static [u64]) -> Histogram {
        assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{bounds:?}");
        Histogram {
            unit,
            bounds,
            counts: RefCell::new(vec![0; bounds.len() + 1]),
            sum: Cell::new(0),
        }
    }

    pub fn record(&self, value: u64) {
        let bucket = self.bounds.partition_point(|&bound| bound < value);
        self.counts.borrow_mut()[bucket] += 1;
        self.sum.set(self.sum.get().saturating_add(value));
    }

    pub fn record_duration(&self, duration: std::time::Duration) {
        debug_assert_eq!(self.unit, Unit::Microseconds);
        self.record(u64::try_from(duration.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            unit: self.unit,
            bounds: self.bounds,
            counts: self.counts.borrow().clone(),
            sum: self.sum.get(),
        }
    }
}

/// A histogram's state at scrape time: plain data, sent between shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    pub unit: Unit,
    pub bounds: &'static [u64],
    /// One count per bound, then +Inf; not cumulative.
    pub counts: Vec<u64>,
    pub sum: u64,
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds another snapshot of the same kind (shards of one broker, say).
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        assert_eq!(self.bounds, other.bounds, "histograms of one kind merge");
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.sum = self.sum.saturating_add(other.sum);
    }

    /// Values per base unit (divided by, so that bounds such as 50 µs come out exact).
    fn per_base_unit(&self) -> f64 {
        match self.unit {
            Unit::Microseconds => 1e6,
            Unit::Bytes => 1.0,
        }
    }

    /// Prometheus buckets: (upper bound in base units, count in that bucket alone).
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        let per = self.per_base_unit();
        self.bounds
            .iter()
            .map(|&bound| bound as f64 / per)
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.counts.iter().copied())
            .collect()
    }

    /// The sum in base units.
    pub fn sum_in_base_units(&self) -> f64 {
        self.sum as f64 / self.per_base_unit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_the_first_bucket_whose_bound_holds_them() {
        let histogram = Histogram::latency();
        for value in [0, 50, 51, 100, 9_999_999, 10_000_000, 10_000_001, u64::MAX] {
            histogram.record(value);
        }
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.counts[0], 2, "0 and 50 µs");
        assert_eq!(snapshot.counts[1], 2, "51 and 100 µs");
        let last = snapshot.counts.len() - 1;
        assert_eq!(snapshot.counts[last - 1], 2, "up to 10 s");
        assert_eq!(snapshot.counts[last], 2, "+Inf");
        assert_eq!(snapshot.count(), 8);
        assert_eq!(snapshot.sum, u64::MAX, "the sum saturates");
        let buckets = snapshot.buckets();
        assert_eq!(buckets[0], (50e-6, 2));
        assert!(buckets[last].0.is_infinite());
    }

    #[test]
    fn snapshots_of_one_kind_merge() {
        let (a, b) = (Histogram::sizes(), Histogram::sizes());
        a.record(1000);
        b.record(1000);
        b.record(1 << 30);
        let mut merged = a.snapshot();
        merged.merge(&b.snapshot());
        assert_eq!(merged.counts[0], 2);
        assert_eq!(*merged.counts.last().unwrap(), 1);
        assert_eq!(merged.sum, 2000 + (1 << 30));
        assert_eq!(merged.sum_in_base_units(), merged.sum as f64);
    }
}
