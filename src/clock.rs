//! The clock seam: every "what time is it" in the log, the groups, the cluster and the client
//! goes through a [`Clock`], so that a test can drive time instead of waiting for it.
//!
//! Two readings: a monotonic [`Instant`] for deadlines, sessions and intervals, and the
//! wall clock in milliseconds since the Unix epoch for what is stamped into batches and
//! records (append times, commit times, creation times). [`SystemClock`] reads the real
//! clocks; [`ManualClock`] starts at the real ones and moves only when told to.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A source of time. Shared freely (`Send + Sync`); cheap to read.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Monotonic time, for deadlines and durations.
    fn now(&self) -> Instant;
    /// Wall-clock milliseconds since the Unix epoch.
    fn wall_ms(&self) -> i64;
}

/// The clock every component holds.
pub type ClockRef = Arc<dyn Clock>;

/// The real clocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn wall_ms(&self) -> i64 {
        system_wall_ms()
    }
}

/// The real clocks, as a [`ClockRef`].
pub fn system() -> ClockRef {
    Arc::new(SystemClock)
}

/// Wall-clock milliseconds since the Unix epoch, read from the system.
fn system_wall_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

/// A clock that starts at the real time and moves only by [`ManualClock::advance`].
#[derive(Debug)]
pub struct ManualClock {
    start: Instant,
    start_wall_ms: i64,
    advanced_ns: AtomicU64,
}

impl ManualClock {
    pub fn new() -> Arc<ManualClock> {
        Arc::new(ManualClock {
            start: Instant::now(),
            start_wall_ms: system_wall_ms(),
            advanced_ns: AtomicU64::new(0),
        })
    }

    /// Moves both readings forward by `by`.
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.advanced_ns.fetch_add(nanos, Ordering::SeqCst);
    }

    fn advanced(&self) -> Duration {
        Duration::from_nanos(self.advanced_ns.load(Ordering::SeqCst))
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + self.advanced()
    }

    fn wall_ms(&self) -> i64 {
        let advanced_ms = i64::try_from(self.advanced().as_millis()).unwrap_or(i64::MAX);
        self.start_wall_ms.saturating_add(advanced_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced() {
        let clock = ManualClock::new();
        let (now, wall) = (clock.now(), clock.wall_ms());
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(clock.now(), now);
        assert_eq!(clock.wall_ms(), wall);
        clock.advance(Duration::from_secs(90));
        assert_eq!(clock.now() - now, Duration::from_secs(90));
        assert_eq!(clock.wall_ms() - wall, 90_000);
    }

    #[test]
    fn the_system_clock_reads_the_epoch() {
        // 2020-01-01 in ms: any real machine is past it.
        assert!(system().wall_ms() > 1_577_836_800_000);
    }
}
