//! The run second by second: what the live line prints each second is also kept as a
//! sample, so the JSON report has the throughput over time (`results.timeline`) and the
//! bench harness can plot it. Owned by the main thread.

use std::time::Instant;

use serde_json::{json, Value};

use crate::report::Interval;
use crate::schedule::NANOS_PER_SECOND;
use crate::stats::{Live, Plan};

/// One interval of the run (about a second), as rates.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Seconds since the producers started, at the end of the interval.
    pub elapsed_s: f64,
    /// `warm-up`, `measure` or `drain`.
    pub phase: &'static str,
    /// The interval's length in seconds.
    pub seconds: f64,
    pub produce_messages_per_s: f64,
    pub consume_messages_per_s: f64,
    /// Produce-ack latency percentiles of the messages acknowledged in the interval (µs,
    /// `None` when none was).
    pub produce_p50_us: Option<u64>,
    pub produce_p99_us: Option<u64>,
}

impl Sample {
    pub fn from_interval(interval: &Interval) -> Sample {
        let rate = |count: u64| {
            if interval.seconds > 0.0 {
                count as f64 / interval.seconds
            } else {
                0.0
            }
        };
        let latency = &interval.produce_latency_us;
        let quantile = |q: f64| (!latency.is_empty()).then(|| latency.value_at_quantile(q));
        Sample {
            elapsed_s: interval.elapsed_s,
            phase: interval.phase,
            seconds: interval.seconds,
            produce_messages_per_s: rate(interval.acknowledged),
            consume_messages_per_s: rate(interval.consumed),
            produce_p50_us: quantile(0.5),
            produce_p99_us: quantile(0.99),
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "elapsed_s": round_to_millis(self.elapsed_s),
            "phase": self.phase,
            "seconds": round_to_millis(self.seconds),
            "produce_messages_per_s": self.produce_messages_per_s.round(),
            "consume_messages_per_s": self.consume_messages_per_s.round(),
            "produce_p50_us": self.produce_p50_us,
            "produce_p99_us": self.produce_p99_us,
        })
    }
}

fn round_to_millis(seconds: f64) -> f64 {
    (seconds * 1_000.0).round() / 1_000.0
}

/// Turns the live counters into one interval per tick: the counts since the last tick.
pub struct Ticker {
    last_tick: Instant,
    last_acknowledged: u64,
    last_consumed: u64,
    pub samples: Vec<Sample>,
    /// Each interval's produce-ack latency, for the HdrHistogram interval log.
    pub produce_intervals: Vec<IntervalHistogram>,
}

/// One interval of the HdrHistogram interval log.
#[derive(Debug, Clone)]
pub struct IntervalHistogram {
    /// When the interval began, in ns since the Unix epoch.
    pub start_unix_ns: u64,
    pub seconds: f64,
    pub latency_us: hdrhistogram::Histogram<u64>,
}

impl Ticker {
    pub fn new() -> Ticker {
        Ticker {
            last_tick: Instant::now(),
            last_acknowledged: 0,
            last_consumed: 0,
            samples: Vec::new(),
            produce_intervals: Vec::new(),
        }
    }

    /// Closes the interval since the last tick: keeps its sample and returns it.
    pub fn tick(&mut self, plan: &Plan, live: &Live) -> Interval {
        let now = plan.clock.now_unix_ns();
        let acknowledged = Live::get(&live.acknowledged);
        let consumed = Live::get(&live.consumed);
        let interval = Interval {
            elapsed_s: now.saturating_sub(plan.start_unix_ns) as f64 / NANOS_PER_SECOND as f64,
            phase: phase(plan, now),
            seconds: self.last_tick.elapsed().as_secs_f64(),
            acknowledged: acknowledged.saturating_sub(self.last_acknowledged),
            consumed: consumed.saturating_sub(self.last_consumed),
            errors: Live::get(&live.errors),
            produce_latency_us: live.take_produce_latency(),
        };
        self.samples.push(Sample::from_interval(&interval));
        let seconds_ns = (interval.seconds * NANOS_PER_SECOND as f64) as u64;
        self.produce_intervals.push(IntervalHistogram {
            start_unix_ns: now.saturating_sub(seconds_ns),
            seconds: interval.seconds,
            latency_us: interval.produce_latency_us.clone(),
        });
        self.last_tick = Instant::now();
        self.last_acknowledged = acknowledged;
        self.last_consumed = consumed;
        interval
    }
}

/// The phase of the run at `now_unix_ns`.
pub fn phase(plan: &Plan, now_unix_ns: u64) -> &'static str {
    if now_unix_ns < plan.measure_from_unix_ns {
        "warm-up"
    } else if now_unix_ns < plan.end_unix_ns {
        "measure"
    } else {
        "drain"
    }
}

/// The samples as the JSON report's `timeline` array.
pub fn timeline_json(samples: &[Sample]) -> Value {
    Value::Array(samples.iter().map(Sample::to_json).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::new_histogram;

    #[test]
    fn a_sample_is_the_interval_as_rates_with_its_latency() {
        let mut latency = new_histogram();
        for value_us in 1..=100 {
            latency.record(value_us).expect("in range");
        }
        let interval = Interval {
            elapsed_s: 3.0004,
            phase: "measure",
            seconds: 0.5,
            acknowledged: 1_000,
            consumed: 250,
            errors: 0,
            produce_latency_us: latency,
        };
        let sample = Sample::from_interval(&interval);
        assert_eq!(sample.produce_messages_per_s, 2_000.0);
        assert_eq!(sample.consume_messages_per_s, 500.0);
        assert_eq!(sample.produce_p50_us, Some(50));
        assert_eq!(sample.produce_p99_us, Some(99));
        let json = timeline_json(&[sample]);
        assert_eq!(json[0]["elapsed_s"], 3.0);
        assert_eq!(json[0]["phase"], "measure");
        assert_eq!(json[0]["produce_messages_per_s"], 2_000.0);
        let idle = Interval {
            acknowledged: 0,
            seconds: 0.0,
            produce_latency_us: new_histogram(),
            ..interval
        };
        let idle = Sample::from_interval(&idle);
        assert_eq!(idle.produce_messages_per_s, 0.0);
        assert_eq!(idle.produce_p50_us, None);
        assert!(timeline_json(&[idle])[0]["produce_p99_us"].is_null());
    }

    #[test]
    fn phases_follow_the_plan() {
        let args = <crate::args::Args as clap::Parser>::parse_from(["shardline-loadgen"]);
        let plan = Plan {
            args,
            topics: Vec::new(),
            partitions: 1,
            clock: crate::schedule::Clock::new(),
            start_unix_ns: 100,
            measure_from_unix_ns: 200,
            end_unix_ns: 300,
        };
        assert_eq!(phase(&plan, 150), "warm-up");
        assert_eq!(phase(&plan, 200), "measure");
        assert_eq!(phase(&plan, 300), "drain");
    }
}
