//! What the threads of a run share or hand back: the run's plan, the live counters, the
//! sequence bitsets the loss check compares, and the latency histograms.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use hdrhistogram::Histogram;

use crate::args::Args;
use crate::schedule::Clock;

/// Latency histograms: 1 µs to 10 minutes at 3 significant digits.
pub const LATENCY_US_LOWEST: u64 = 1;
pub const LATENCY_US_HIGHEST: u64 = 600_000_000;
pub const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;
pub const NANOS_PER_MICRO: u64 = 1_000;
/// Client id every loadgen connection announces.
pub const CLIENT_ID: &str = "shardline-loadgen";

const _: () = assert!(LATENCY_US_LOWEST >= 1 && LATENCY_US_LOWEST < LATENCY_US_HIGHEST);

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(
        LATENCY_US_LOWEST,
        LATENCY_US_HIGHEST,
        LATENCY_SIGNIFICANT_DIGITS,
    )
    .expect("the latency histogram bounds are valid constants")
}

/// Everything a producer or consumer thread needs to know about the run. Cloned into each.
#[derive(Debug, Clone)]
pub struct Plan {
    pub args: Args,
    /// The topics of the run (`--topic`, or `--topic`-0 .. N-1 with `--topics N`).
    pub topics: Vec<String>,
    /// Partitions of each topic.
    pub partitions: u32,
    pub clock: Clock,
    /// Producers start sending here.
    pub start_unix_ns: u64,
    /// The warm-up ends here: only messages intended at or after it are measured.
    pub measure_from_unix_ns: u64,
    /// No message is intended at or after this.
    pub end_unix_ns: u64,
}

impl Plan {
    pub fn is_measured(&self, intended_unix_ns: u64) -> bool {
        (self.measure_from_unix_ns..self.end_unix_ns).contains(&intended_unix_ns)
    }
}

/// Counters every thread adds to and the main thread prints once a second.
#[derive(Debug)]
pub struct Live {
    pub acknowledged: AtomicU64,
    pub errors: AtomicU64,
    pub consumed: AtomicU64,
    /// Set once every producer has reported: consumers drain up to the log end and stop.
    pub producers_done: AtomicBool,
    /// The measured window, `[from, end)` in Unix ns; set before the producers start (the
    /// consumers start before it is known).
    pub measure_from_unix_ns: AtomicU64,
    pub end_unix_ns: AtomicU64,
    /// When the producers start (Unix ns; `u64::MAX` until known).
    pub start_unix_ns: AtomicU64,
    /// Produce-ack latency since the last live line.
    pub produce_latency_us: Mutex<Histogram<u64>>,
    /// With `--consumer-group`: what the members read, and when they stop.
    pub group: crate::group::GroupProgress,
}

impl Live {
    pub fn new() -> Live {
        Live {
            acknowledged: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            producers_done: AtomicBool::new(false),
            measure_from_unix_ns: AtomicU64::new(u64::MAX),
            end_unix_ns: AtomicU64::new(u64::MAX),
            start_unix_ns: AtomicU64::new(u64::MAX),
            produce_latency_us: Mutex::new(new_histogram()),
            group: crate::group::GroupProgress::default(),
        }
    }

    pub fn add(counter: &AtomicU64, value: u64) {
        counter.fetch_add(value, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// The measured window once it is set (`u64::MAX` bounds before: nothing is measured).
    pub fn window(&self) -> std::ops::Range<u64> {
        self.measure_from_unix_ns.load(Ordering::Acquire)..self.end_unix_ns.load(Ordering::Acquire)
    }

    pub fn record_produce_latency(&self, latency_us: u64) {
        if let Ok(mut histogram) = self.produce_latency_us.lock() {
            histogram.saturating_record(latency_us);
        }
    }

    /// The produce latency histogram since the last call, emptied.
    pub fn take_produce_latency(&self) -> Histogram<u64> {
        match self.produce_latency_us.lock() {
            Ok(mut histogram) => {
                let taken = histogram.clone();
                histogram.reset();
                taken
            }
            Err(_) => new_histogram(),
        }
    }
}

/// One bit per sequence number of one producer: acknowledged, or consumed.
#[derive(Debug, Clone, Default)]
pub struct Bitset {
    words: Vec<u64>,
}

impl Bitset {
    /// Sets bit `index`; returns whether it was set before.
    pub fn insert(&mut self, index: u64) -> bool {
        let word = (index / 64) as usize;
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let mask = 1u64 << (index % 64);
        let before = self.words[word] & mask != 0;
        self.words[word] |= mask;
        before
    }

    #[cfg(test)]
    pub fn contains(&self, index: u64) -> bool {
        let word = (index / 64) as usize;
        self.words
            .get(word)
            .is_some_and(|w| w & (1u64 << (index % 64)) != 0)
    }

    #[cfg(test)]
    pub fn count_set(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Bits set here and not in `other`.
    pub fn count_missing_from(&self, other: &Bitset) -> u64 {
        self.words
            .iter()
            .enumerate()
            .map(|(i, w)| u64::from((w & !other.words.get(i).copied().unwrap_or(0)).count_ones()))
            .sum()
    }

    /// Bits set both here and in `other`.
    pub fn count_common(&self, other: &Bitset) -> u64 {
        self.words
            .iter()
            .zip(&other.words)
            .map(|(a, b)| u64::from((a & b).count_ones()))
            .sum()
    }

    /// The smallest index set here and not in `other`.
    pub fn first_missing_from(&self, other: &Bitset) -> Option<u64> {
        self.words.iter().enumerate().find_map(|(i, w)| {
            let missing = w & !other.words.get(i).copied().unwrap_or(0);
            (missing != 0).then(|| i as u64 * 64 + u64::from(missing.trailing_zeros()))
        })
    }

    pub fn union_with(&mut self, other: &Bitset) {
        if other.words.len() > self.words.len() {
            self.words.resize(other.words.len(), 0);
        }
        for (mine, theirs) in self.words.iter_mut().zip(&other.words) {
            *mine |= theirs;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitset_counts_what_is_missing_and_common() {
        let mut acked = Bitset::default();
        let mut consumed = Bitset::default();
        for i in [0, 5, 63, 64, 200] {
            assert!(!acked.insert(i));
        }
        assert!(acked.insert(5), "second insert reports the duplicate");
        for i in [0, 63, 200, 300] {
            consumed.insert(i);
        }
        assert_eq!(acked.count_set(), 5);
        assert_eq!(acked.count_missing_from(&consumed), 2);
        assert_eq!(acked.first_missing_from(&consumed), Some(5));
        assert_eq!(consumed.count_missing_from(&acked), 1);
        assert_eq!(acked.count_common(&consumed), 3);
        assert!(consumed.contains(300) && !consumed.contains(301));
        let mut union = Bitset::default();
        union.union_with(&acked);
        union.union_with(&consumed);
        assert_eq!(union.count_set(), 6);
    }
}
