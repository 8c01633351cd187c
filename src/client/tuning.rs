//! The producer settings a tuning profile suggests (its `[client]` section). The broker
//! ignores them; clients given the profile (the load generator, the bench harness) apply
//! them. Defaults are the producer's own (`ProducerConfig::default`), defined there once.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::producer::ProducerConfig;
use crate::constants::{BATCH_BYTES_MAX, PRODUCER_BATCHES_REMEMBERED};

/// The longest linger a profile may ask of producers.
pub const CLIENT_LINGER_US_MAX: u64 = 1_000_000;
/// The smallest producer batch a profile may ask for.
pub const CLIENT_BATCH_BYTES_MIN: usize = 1024;

/// A profile's `[client]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientTuning {
    /// How long a producer batch waits for more messages.
    pub linger_us: u64,
    /// A producer batch is sent once it reaches this size.
    pub batch_bytes: usize,
    /// Bytes a producer holds accepted and not yet acknowledged.
    pub buffer_bytes: usize,
    /// Batches in flight per partition (1 to 5).
    pub max_in_flight: usize,
}

impl Default for ClientTuning {
    fn default() -> Self {
        let producer = ProducerConfig::default();
        ClientTuning {
            linger_us: u64::try_from(producer.linger.as_micros()).unwrap_or(u64::MAX),
            batch_bytes: producer.batch_bytes,
            buffer_bytes: producer.buffer_bytes,
            max_in_flight: producer.max_in_flight,
        }
    }
}

/// The part of a profile file a client reads; every other section is the broker's.
#[derive(Deserialize)]
struct ClientSection {
    #[serde(default)]
    client: ClientTuning,
}

impl ClientTuning {
    /// Reads the `[client]` section of a tuning profile file (and checks it).
    pub fn from_profile_file(path: &Path) -> Result<ClientTuning, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read profile {}: {e}", path.display()))?;
        let section: ClientSection =
            toml::from_str(&text).map_err(|e| format!("bad profile {}: {e}", path.display()))?;
        section
            .client
            .check()
            .map_err(|e| format!("bad profile {}: {e}", path.display()))?;
        Ok(section.client)
    }

    pub fn check(&self) -> Result<(), String> {
        if !(CLIENT_BATCH_BYTES_MIN..=BATCH_BYTES_MAX).contains(&self.batch_bytes) {
            return Err(format!(
                "client.batch_bytes {} is outside {CLIENT_BATCH_BYTES_MIN}..={BATCH_BYTES_MAX}",
                self.batch_bytes
            ));
        }
        if self.buffer_bytes < self.batch_bytes {
            return Err("client.buffer_bytes must be at least client.batch_bytes".into());
        }
        if !(1..=PRODUCER_BATCHES_REMEMBERED).contains(&self.max_in_flight) {
            return Err(format!(
                "client.max_in_flight {} is outside 1..={PRODUCER_BATCHES_REMEMBERED}",
                self.max_in_flight
            ));
        }
        if self.linger_us > CLIENT_LINGER_US_MAX {
            return Err(format!(
                "client.linger_us {} is above {CLIENT_LINGER_US_MAX}",
                self.linger_us
            ));
        }
        Ok(())
    }

    /// `config` with these settings in place of its batching ones.
    pub fn apply(&self, mut config: ProducerConfig) -> ProducerConfig {
        config.linger = Duration::from_micros(self.linger_us);
        config.batch_bytes = self.batch_bytes;
        config.buffer_bytes = self.buffer_bytes;
        config.max_in_flight = self.max_in_flight;
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_producer_s_and_a_profile_s_section_is_read_and_checked() {
        let producer = ProducerConfig::default();
        let defaults = ClientTuning::default();
        assert_eq!(defaults.batch_bytes, producer.batch_bytes);
        assert_eq!(Duration::from_micros(defaults.linger_us), producer.linger);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(
            &path,
            "name = \"x\"\n[storage]\nflush = { mode = \"every-batch\" }\n[client]\nlinger_us = 5\nbatch_bytes = 4096\n",
        )
        .unwrap();
        let tuning = ClientTuning::from_profile_file(&path).unwrap();
        assert_eq!((tuning.linger_us, tuning.batch_bytes), (5, 4096));
        assert_eq!(tuning.buffer_bytes, producer.buffer_bytes);
        std::fs::write(&path, "[client]\nbatch_bytes = 1\n").unwrap();
        assert!(ClientTuning::from_profile_file(&path)
            .unwrap_err()
            .contains("batch_bytes"));
        std::fs::write(&path, "[client]\nlinger = 1\n").unwrap();
        assert!(
            ClientTuning::from_profile_file(&path).is_err(),
            "unknown key"
        );
    }
}
