//! A topic's configuration: the keys an operator may set, their defaults, their validation.
//!
//! | key | meaning | default |
//! |---|---|---|
//! | `retention.ms` | delete closed segments whose newest record is older; `-1` keeps forever | 2592000000 (30 days) |
//! | `retention.bytes` | delete oldest closed segments while a partition is larger; `-1` no limit | -1 |
//! | `segment.bytes` | roll the active segment before it passes this size | 1073741824 |
//! | `segment.ms` | roll the active segment once its first batch is this old | 604800000 (7 days) |
//! | `flush.mode` | `default` (the broker's tuning profile), `every-batch`, `bytes`, `interval`, `never` | default |
//! | `flush.bytes` | with `flush.mode=bytes`: pending bytes that start a write and fdatasync | 1048576 |
//! | `flush.interval.us` | with `interval`: the interval; with `bytes`/`never`: the longest delay | 1000 |
//! | `min.insync.replicas` | in-sync replicas (the leader included) an `acks=all` write needs; below it such writes are refused and the high watermark stands still | 1 |
//! | `replica.lag.time.max.ms` | a follower not caught up with the leader for this long leaves the in-sync set | 10000 |
//! | `unclean.leader.election.enable` | when no in-sync replica is live, elect any live replica (it may lack acknowledged writes: they are lost) | false |
//!
//! Every key applies live: a change reaches the open partitions at once (flush, segment and
//! retention keys through the log's reconfiguration; the replication keys are read on each
//! write and each in-sync check).

use std::collections::BTreeMap;

use crate::constants::{
    RETENTION_MS_DEFAULT, SEGMENT_AGE_MS_DEFAULT, SEGMENT_BYTES_DEFAULT, SEGMENT_BYTES_MAX,
    SEGMENT_BYTES_MIN,
};
use crate::log::{FlushPolicy, LogConfig};

const FLUSH_BYTES_DEFAULT: u64 = 1024 * 1024;
const FLUSH_INTERVAL_US_DEFAULT: u64 = 1000;
const MIN_INSYNC_REPLICAS_DEFAULT: u64 = 1;
const REPLICA_LAG_TIME_MAX_MS_DEFAULT: u64 = 10_000;

/// Why a configuration entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown topic config key '{0}'")]
    UnknownKey(String),
    #[error("topic config '{key}' = '{value}': {reason}")]
    BadValue {
        key: String,
        value: String,
        reason: String,
    },
}

/// A topic's configuration; every partition of the topic uses it. Plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    pub retention_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
    pub segment_bytes: u64,
    pub segment_ms: u64,
    /// `None`: the broker's tuning profile decides.
    pub flush_mode: Option<FlushMode>,
    pub flush_bytes: u64,
    pub flush_interval_us: u64,
    pub min_insync_replicas: u64,
    pub replica_lag_time_max_ms: u64,
    pub unclean_leader_election: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushMode {
    EveryBatch,
    Bytes,
    Interval,
    Never,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            retention_ms: Some(RETENTION_MS_DEFAULT),
            retention_bytes: None,
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            segment_ms: SEGMENT_AGE_MS_DEFAULT,
            flush_mode: None,
            flush_bytes: FLUSH_BYTES_DEFAULT,
            flush_interval_us: FLUSH_INTERVAL_US_DEFAULT,
            min_insync_replicas: MIN_INSYNC_REPLICAS_DEFAULT,
            replica_lag_time_max_ms: REPLICA_LAG_TIME_MAX_MS_DEFAULT,
            unclean_leader_election: false,
        }
    }
}

/// Every key, in display order.
pub const KEYS: [&str; 10] = [
    "retention.ms",
    "retention.bytes",
    "segment.bytes",
    "segment.ms",
    "flush.mode",
    "flush.bytes",
    "flush.interval.us",
    "min.insync.replicas",
    "replica.lag.time.max.ms",
    "unclean.leader.election.enable",
];

fn bad(key: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::BadValue {
        key: key.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

fn parse_limit(key: &str, value: &str) -> Result<Option<u64>, ConfigError> {
    let number: i64 = value
        .parse()
        .map_err(|_| bad(key, value, "not an integer"))?;
    match number {
        -1 => Ok(None),
        n if n > 0 => Ok(Some(n as u64)),
        _ => Err(bad(key, value, "must be positive, or -1 for no limit")),
    }
}

fn parse_positive(key: &str, value: &str) -> Result<u64, ConfigError> {
    match value.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(bad(key, value, "must be a positive integer")),
    }
}

fn limit_text(limit: Option<u64>) -> String {
    limit.map_or_else(|| "-1".to_string(), |n| n.to_string())
}

impl TopicConfig {
    /// Applies one `key = value` entry.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        match key {
            "retention.ms" => self.retention_ms = parse_limit(key, value)?,
            "retention.bytes" => self.retention_bytes = parse_limit(key, value)?,
            "segment.bytes" => {
                let bytes = parse_positive(key, value)?;
                if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&bytes) {
                    let range =
                        format!("must be within [{SEGMENT_BYTES_MIN}, {SEGMENT_BYTES_MAX}]");
                    return Err(bad(key, value, range));
                }
                self.segment_bytes = bytes;
            }
            "segment.ms" => self.segment_ms = parse_positive(key, value)?,
            "flush.mode" => {
                self.flush_mode = match value {
                    "default" => None,
                    "every-batch" => Some(FlushMode::EveryBatch),
                    "bytes" => Some(FlushMode::Bytes),
                    "interval" => Some(FlushMode::Interval),
                    "never" => Some(FlushMode::Never),
                    _ => {
                        let choices = "one of default, every-batch, bytes, interval, never";
                        return Err(bad(key, value, choices));
                    }
                }
            }
            "flush.bytes" => self.flush_bytes = parse_positive(key, value)?,
            "flush.interval.us" => self.flush_interval_us = parse_positive(key, value)?,
            "min.insync.replicas" => self.min_insync_replicas = parse_positive(key, value)?,
            "replica.lag.time.max.ms" => self.replica_lag_time_max_ms = parse_positive(key, value)?,
            "unclean.leader.election.enable" => {
                self.unclean_leader_election = match value {
                    "true" => true,
                    "false" => false,
                    _ => return Err(bad(key, value, "true or false")),
                }
            }
            _ => return Err(ConfigError::UnknownKey(key.into())),
        }
        Ok(())
    }

    /// Returns `key` to its default.
    pub fn reset(&mut self, key: &str) -> Result<(), ConfigError> {
        let default = TopicConfig::default();
        let value = default
            .get(key)
            .ok_or_else(|| ConfigError::UnknownKey(key.into()))?;
        self.set(key, &value)
    }

    /// The value of `key` as text, as `set` accepts it.
    pub fn get(&self, key: &str) -> Option<String> {
        Some(match key {
            "retention.ms" => limit_text(self.retention_ms),
            "retention.bytes" => limit_text(self.retention_bytes),
            "segment.bytes" => self.segment_bytes.to_string(),
            "segment.ms" => self.segment_ms.to_string(),
            "flush.mode" => match self.flush_mode {
                None => "default",
                Some(FlushMode::EveryBatch) => "every-batch",
                Some(FlushMode::Bytes) => "bytes",
                Some(FlushMode::Interval) => "interval",
                Some(FlushMode::Never) => "never",
            }
            .to_string(),
            "flush.bytes" => self.flush_bytes.to_string(),
            "flush.interval.us" => self.flush_interval_us.to_string(),
            "min.insync.replicas" => self.min_insync_replicas.to_string(),
            "replica.lag.time.max.ms" => self.replica_lag_time_max_ms.to_string(),
            "unclean.leader.election.enable" => self.unclean_leader_election.to_string(),
            _ => return None,
        })
    }

    /// Every entry as (key, value, is_default).
    pub fn entries(&self) -> Vec<(String, String, bool)> {
        let default = TopicConfig::default();
        KEYS.iter()
            .map(|&key| {
                let value = self.get(key).expect("known key");
                let is_default = default.get(key).as_deref() == Some(value.as_str());
                (key.to_string(), value, is_default)
            })
            .collect()
    }

    /// The entries that differ from the defaults, for storage.
    pub fn overrides(&self) -> BTreeMap<String, String> {
        self.entries()
            .into_iter()
            .filter(|e| !e.2)
            .map(|(k, v, _)| (k, v))
            .collect()
    }

    /// Builds a configuration from entries over the defaults.
    pub fn from_entries<'a>(
        entries: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<TopicConfig, ConfigError> {
        let mut config = TopicConfig::default();
        for (key, value) in entries {
            config.set(key, value)?;
        }
        Ok(config)
    }

    /// The log configuration of the topic's partitions; `profile_flush` applies when the
    /// topic leaves `flush.mode` at `default`.
    pub fn log_config(&self, profile_flush: FlushPolicy, preallocate_bytes: u64) -> LogConfig {
        let flush = match self.flush_mode {
            None => profile_flush,
            Some(FlushMode::EveryBatch) => FlushPolicy::EveryBatch,
            Some(FlushMode::Bytes) => FlushPolicy::Bytes {
                bytes: self.flush_bytes,
                max_delay_us: self.flush_interval_us,
            },
            Some(FlushMode::Interval) => FlushPolicy::Interval {
                interval_us: self.flush_interval_us,
            },
            Some(FlushMode::Never) => FlushPolicy::Never {
                write_delay_us: self.flush_interval_us,
            },
        };
        LogConfig {
            segment_bytes: self.segment_bytes,
            segment_age_ms: self.segment_ms,
            retention_ms: self.retention_ms,
            retention_bytes: self.retention_bytes,
            flush,
            preallocate_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_round_trips_through_text() {
        let mut config = TopicConfig::default();
        for (key, value) in [
            ("retention.ms", "-1"),
            ("retention.bytes", "1000000"),
            ("segment.bytes", "1048576"),
            ("segment.ms", "60000"),
            ("flush.mode", "bytes"),
            ("flush.bytes", "4096"),
            ("flush.interval.us", "250"),
        ] {
            config.set(key, value).unwrap();
            assert_eq!(config.get(key).as_deref(), Some(value));
        }
        let overrides = config.overrides();
        let again =
            TopicConfig::from_entries(overrides.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        assert_eq!(again.unwrap(), config);
        config.reset("flush.mode").unwrap();
        assert_eq!(config.flush_mode, None);
    }

    #[test]
    fn bad_entries_are_refused_with_the_key_and_value() {
        let mut config = TopicConfig::default();
        let cases = [
            ("retention.ms", "0"),
            ("retention.ms", "soon"),
            ("segment.bytes", "100"),
            ("segment.ms", "-5"),
            ("flush.mode", "sometimes"),
            ("flush.bytes", "0"),
        ];
        for (key, value) in cases {
            let error = config.set(key, value).unwrap_err().to_string();
            assert!(error.contains(key) && error.contains(value), "{error}");
        }
        assert_eq!(
            config.set("no.such.key", "1"),
            Err(ConfigError::UnknownKey("no.such.key".into()))
        );
        assert_eq!(
            config,
            TopicConfig::default(),
            "refused entries change nothing"
        );
    }

    #[test]
    fn the_flush_mode_maps_onto_the_log_policy() {
        let profile = FlushPolicy::Interval { interval_us: 5000 };
        let mut config = TopicConfig::default();
        assert_eq!(config.log_config(profile, 4096).flush, profile);
        config.set("flush.mode", "every-batch").unwrap();
        assert_eq!(
            config.log_config(profile, 4096).flush,
            FlushPolicy::EveryBatch
        );
        config.set("flush.mode", "never").unwrap();
        config.set("flush.interval.us", "300").unwrap();
        assert_eq!(
            config.log_config(profile, 4096).flush,
            FlushPolicy::Never {
                write_delay_us: 300
            }
        );
    }
}
