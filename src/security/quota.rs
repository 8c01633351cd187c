//! Byte-rate quotas per principal or client id, enforced by delaying responses (as Kafka
//! does), never by dropping them. Each shard keeps a token bucket per entity and direction,
//! filled at the shard's share of the quota (the quota divided by the broker's shards, as
//! a client's partitions spread over them) and holding at most `QUOTA_BURST_S` seconds of
//! it. A response that takes the bucket below zero waits until the debt would be paid (at
//! most `QUOTA_THROTTLE_MS_MAX` per response; the debt itself is never forgiven): a client
//! over its quota slows to it, and one under it is never delayed. The delay is
//! reported in the response's `throttle_ms` and in the metrics.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::constants::{QUOTA_BURST_S, QUOTA_THROTTLE_MS_MAX};
use crate::protocol::{Quota, QuotaEntity};

/// Which bytes a quota counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Produce,
    Fetch,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::Produce => "produce",
            Direction::Fetch => "fetch",
        }
    }
}

/// Checks a quota someone asks to set.
pub fn check(quota: &Quota) -> Result<(), String> {
    if quota.entity.name.is_empty() {
        return Err("a quota names a principal or a client id".into());
    }
    for (what, rate) in [
        ("produce", quota.produce_bytes_per_s),
        ("fetch", quota.fetch_bytes_per_s),
    ] {
        if rate == Some(0) {
            return Err(format!(
                "a {what} quota of 0 bytes/s would stop the client: remove the quota or give a rate"
            ));
        }
    }
    Ok(())
}

#[derive(Debug)]
struct Bucket {
    /// Bytes that may pass now (negative: a debt).
    tokens: f64,
    updated: Instant,
}

/// One shard's buckets. Owned by the shard.
#[derive(Debug, Default)]
pub struct Throttle {
    buckets: RefCell<HashMap<(QuotaEntity, Direction), Bucket>>,
}

impl Throttle {
    /// Counts `bytes` of `entity` against `rate_bytes_per_s` (this shard's share); returns
    /// how long to delay the response.
    pub fn record(
        &self,
        entity: &QuotaEntity,
        direction: Direction,
        bytes: u64,
        rate_bytes_per_s: u64,
        now: Instant,
    ) -> Duration {
        let rate = rate_bytes_per_s.max(1) as f64;
        let capacity = rate * QUOTA_BURST_S as f64;
        let mut buckets = self.buckets.borrow_mut();
        let bucket = buckets
            .entry((entity.clone(), direction))
            .or_insert(Bucket {
                tokens: capacity,
                updated: now,
            });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(capacity) - bytes as f64;
        bucket.updated = now;
        if bucket.tokens >= 0.0 {
            return Duration::ZERO;
        }
        // The whole debt stays (pipelined requests cannot share one forgiven wait); one
        // response waits at most the cap, and the next ones keep paying.
        let max = Duration::from_millis(QUOTA_THROTTLE_MS_MAX);
        Duration::from_secs_f64((-bucket.tokens / rate).min(max.as_secs_f64()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::QuotaEntityKind;

    fn alice() -> QuotaEntity {
        QuotaEntity {
            kind: QuotaEntityKind::Principal,
            name: "alice".into(),
        }
    }

    #[test]
    fn a_client_over_its_rate_waits_and_one_under_it_does_not() {
        let throttle = Throttle::default();
        let start = Instant::now();
        // A burst of one second's worth passes at once.
        assert_eq!(
            throttle.record(&alice(), Direction::Produce, 1000, 1000, start),
            Duration::ZERO
        );
        // Beyond it, the debt sets the delay: 500 bytes over at 1000 B/s is half a second.
        let delay = throttle.record(&alice(), Direction::Produce, 500, 1000, start);
        assert_eq!(delay, Duration::from_millis(500));
        // Time pays the debt back.
        let later = start + Duration::from_secs(2);
        assert_eq!(
            throttle.record(&alice(), Direction::Produce, 100, 1000, later),
            Duration::ZERO
        );
        // Directions and entities have their own buckets.
        assert_eq!(
            throttle.record(&alice(), Direction::Fetch, 1000, 1000, start),
            Duration::ZERO
        );
        // A client far over waits at most the cap per response, and its debt stays.
        let capped = throttle.record(&alice(), Direction::Fetch, 100_000_000, 1000, start);
        assert_eq!(capped, Duration::from_millis(QUOTA_THROTTLE_MS_MAX));
        let later = start + Duration::from_secs(60);
        let still = throttle.record(&alice(), Direction::Fetch, 1, 1000, later);
        assert_eq!(
            still,
            Duration::from_millis(QUOTA_THROTTLE_MS_MAX),
            "debt kept"
        );
    }

    #[test]
    fn steady_sends_at_twice_the_rate_are_held_to_the_rate() {
        // Sends every 10 ms, each followed by its delay (one request in flight).
        let throttle = Throttle::default();
        let mut now = Instant::now();
        let start = now;
        let mut sent = 0u64;
        while now < start + Duration::from_secs(10) {
            sent += 20;
            now += Duration::from_millis(10);
            now += throttle.record(&alice(), Direction::Produce, 20, 1000, now);
        }
        let rate = sent as f64 / (now - start).as_secs_f64();
        assert!((rate - 1000.0).abs() < 150.0, "{rate} B/s against 1000");
        let bad = Quota {
            entity: alice(),
            produce_bytes_per_s: Some(0),
            fetch_bytes_per_s: None,
        };
        assert!(check(&bad).is_err());
    }
}
