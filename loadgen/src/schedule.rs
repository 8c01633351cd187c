//! Time: one clock shared by every thread of the run, and the open-loop send schedule.
//!
//! Latency is measured from a message's *intended* send time, not from the moment `send`
//! was called: when the client or the broker stalls, the messages that should have been
//! sent during the stall still count their full wait (no coordinated omission).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// Unix-epoch nanoseconds from one monotonic anchor, so that every thread of the run reads
/// the same clock and a wall-clock step cannot bend a latency. Copied into every thread.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    anchor: Instant,
    anchor_unix_ns: u64,
}

impl Clock {
    pub fn new() -> Clock {
        let anchor_unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        Clock {
            anchor: Instant::now(),
            anchor_unix_ns,
        }
    }

    pub fn now_unix_ns(&self) -> u64 {
        let elapsed = u64::try_from(self.anchor.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.anchor_unix_ns.saturating_add(elapsed)
    }

    /// How long from now until `unix_ns` (zero when it has passed).
    pub fn until(&self, unix_ns: u64) -> Duration {
        Duration::from_nanos(unix_ns.saturating_sub(self.now_unix_ns()))
    }

    /// How long a producer whose next message is due at `due_unix_ns` sleeps: `None` when
    /// it is due, else until then but at least `pace` (`--pace-us`), so that it wakes once
    /// for every message that comes due within `pace` instead of once per message. Never
    /// less than the time left: no message leaves early.
    pub fn pace_wait(&self, due_unix_ns: u64, pace: Duration) -> Option<Duration> {
        pace_wait_at(self.now_unix_ns(), due_unix_ns, pace)
    }
}

/// `Clock::pace_wait` at the time `now_unix_ns`.
fn pace_wait_at(now_unix_ns: u64, due_unix_ns: u64, pace: Duration) -> Option<Duration> {
    let wait = Duration::from_nanos(due_unix_ns.saturating_sub(now_unix_ns));
    (!wait.is_zero()).then(|| wait.max(pace))
}

/// When each message of one producer is due. The producers share one total rate: message
/// `index` of producer `producer` (of `producers`) is the run's message number
/// `index * producers + producer`, due at `start + number / rate`. Computed from the index
/// every time (never by adding intervals), so it does not drift.
#[derive(Debug, Clone, Copy)]
pub struct RateSchedule {
    pub start_unix_ns: u64,
    pub rate_per_second: f64,
    pub producer: u32,
    pub producers: u32,
}

impl RateSchedule {
    pub fn new(start_unix_ns: u64, rate_per_second: f64, producer: u32, producers: u32) -> Self {
        assert!(
            rate_per_second > 0.0 && rate_per_second.is_finite(),
            "rate {rate_per_second}"
        );
        assert!(producer < producers, "producer {producer} of {producers}");
        RateSchedule {
            start_unix_ns,
            rate_per_second,
            producer,
            producers,
        }
    }

    pub fn intended_unix_ns(&self, index: u64) -> u64 {
        let number = index as f64 * f64::from(self.producers) + f64::from(self.producer);
        // f64 keeps integer nanoseconds exact up to 2^53 ns (104 days) after the start.
        let offset_ns = (number * NANOS_PER_SECOND as f64 / self.rate_per_second).round();
        self.start_unix_ns.saturating_add(offset_ns as u64)
    }

    /// How many of this producer's messages are due before `end_unix_ns`: the first index
    /// due at or after it (due times rise with the index).
    pub fn due_before(&self, end_unix_ns: u64) -> u64 {
        let mut high = 1u64;
        while self.intended_unix_ns(high) < end_unix_ns {
            high = high.saturating_mul(2);
        }
        let mut low = 0u64;
        // The answer lies in low..=high: every index below low is due before the end.
        while low < high {
            let middle = low + (high - low) / 2;
            if self.intended_unix_ns(middle) < end_unix_ns {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        low
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::Histogram;

    #[test]
    fn a_paced_producer_never_wakes_before_a_message_is_due() {
        let pace = Duration::from_micros(100);
        let now = 1_000_000_000_000u64;
        // Due already: no sleep at all.
        assert_eq!(pace_wait_at(now, now, pace), None);
        assert_eq!(pace_wait_at(now, now - 1_000_000, pace), None);
        // Due sooner than the pace: the pace.
        assert_eq!(pace_wait_at(now, now + 10_000, pace), Some(pace));
        // Due later than the pace: exactly the time left.
        assert_eq!(
            pace_wait_at(now, now + 5_000_000, pace),
            Some(Duration::from_millis(5))
        );
        // Without a pace: the time left, however short.
        assert_eq!(
            pace_wait_at(now, now + 10_000, Duration::ZERO),
            Some(Duration::from_micros(10))
        );
        // The clock's own: a message due in an hour is slept for, at most that long.
        let clock = Clock::new();
        let hour = Duration::from_secs(3600);
        let wait = clock.pace_wait(clock.now_unix_ns() + 3_600_000_000_000, pace);
        assert!(wait.is_some_and(|wait| wait <= hour && wait > hour / 2));
    }

    #[test]
    fn due_before_counts_the_messages_due_before_a_time() {
        for (rate, producer, producers) in [(20_000.0, 0, 1), (333.3, 1, 3), (1.5, 2, 4)] {
            let schedule = RateSchedule::new(1_000_000_000, rate, producer, producers);
            for end in [
                0,
                1_000_000_000,
                1_000_000_001,
                1_700_000_000,
                4_000_000_000,
            ] {
                let scanned = (0..)
                    .take_while(|&index| schedule.intended_unix_ns(index) < end)
                    .count() as u64;
                assert_eq!(schedule.due_before(end), scanned, "{schedule:?} end {end}");
            }
        }
    }

    #[test]
    fn schedule_due_times_are_index_over_rate_without_drift() {
        let start = 1_000_000_000_000;
        let schedule = RateSchedule::new(start, 3.0, 0, 1);
        assert_eq!(schedule.intended_unix_ns(0), start);
        assert_eq!(schedule.intended_unix_ns(1), start + 333_333_333);
        assert_eq!(schedule.intended_unix_ns(3), start + NANOS_PER_SECOND);
        // After ten million messages the schedule is still exactly on the second.
        assert_eq!(
            schedule.intended_unix_ns(30_000_000),
            start + 10_000_000 * NANOS_PER_SECOND
        );
        let fast = RateSchedule::new(start, 1_000_000.0, 0, 1);
        for index in [0, 1, 999_999, 1_000_000, 123_456_789] {
            assert_eq!(fast.intended_unix_ns(index), start + index * 1_000);
        }
    }

    #[test]
    fn producers_interleave_on_the_shared_rate() {
        let start = 5_000;
        let producers: Vec<RateSchedule> = (0..4)
            .map(|p| RateSchedule::new(start, 1_000.0, p, 4))
            .collect();
        let mut due: Vec<u64> = producers
            .iter()
            .flat_map(|s| (0..250).map(|i| s.intended_unix_ns(i)))
            .collect();
        due.sort_unstable();
        let expected: Vec<u64> = (0..1000).map(|n| start + n * 1_000_000).collect();
        assert_eq!(due, expected);
    }

    /// A 1 kHz open loop whose sends complete in 1 ms, except that the system stalls for
    /// one second at t = 5 s. Measured from the intended send time, every message due in
    /// the stall waits for it, so the stall dominates the tail; measured from the actual
    /// send call (coordinated omission) only one message would see it.
    #[test]
    fn stall_shows_in_percentiles_when_measured_from_intended_time() {
        let schedule = RateSchedule::new(0, 1_000.0, 0, 1);
        let service_ns = 1_000_000;
        let stall_from_ns = 5 * NANOS_PER_SECOND;
        let stall_until_ns = 6 * NANOS_PER_SECOND;
        let mut from_intended = Histogram::<u64>::new(3).expect("valid");
        let mut from_send_call = Histogram::<u64>::new(3).expect("valid");
        let mut free_at_ns = 0u64;
        for index in 0..10_000 {
            let intended = schedule.intended_unix_ns(index);
            // The sender cannot send before it is free again (the closed part of any client).
            let mut sent = intended.max(free_at_ns);
            if (stall_from_ns..stall_until_ns).contains(&sent) {
                sent = stall_until_ns;
            }
            let acked = sent + service_ns;
            free_at_ns = sent;
            from_intended
                .record((acked - intended) / 1_000)
                .expect("in range");
            from_send_call
                .record((acked - sent) / 1_000)
                .expect("in range");
        }
        // 1000 of 10000 messages were due inside the stall: p95 sits in it.
        assert!(from_intended.value_at_quantile(0.95) > 400_000, "µs");
        assert!(from_intended.max() >= 1_000_000, "µs");
        // The omitted view sees a flat 1 ms everywhere.
        assert_eq!(from_send_call.value_at_quantile(0.99), 1_000);
        assert!(from_send_call.max() < 1_100);
    }

    #[test]
    fn clock_moves_forward_from_the_unix_epoch() {
        let clock = Clock::new();
        let first = clock.now_unix_ns();
        assert!(first > 1_600_000_000 * NANOS_PER_SECOND);
        assert!(clock.now_unix_ns() >= first);
        assert_eq!(clock.until(first), Duration::ZERO);
    }
}
