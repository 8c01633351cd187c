//! Tuning profiles: the TOML files in `tuning/` that set how a broker trades latency,
//! throughput and durability. Every field is optional; what a profile leaves out keeps the
//! default shown in [`Profile::default`]. Unknown fields are an error, so a typo is never
//! silently ignored.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::error::ProfileError;
use crate::client::ClientTuning;
use crate::constants::{
    BATCH_CACHE_BYTES_DEFAULT, CONNECTION_IDLE_TIMEOUT_MS_DEFAULT,
    FRAME_COMPLETION_TIMEOUT_MS_DEFAULT, OPEN_SEGMENT_FILES_DEFAULT, PRODUCER_IDLE_MS_DEFAULT,
    SEGMENT_PREALLOCATE_BYTES, SHUTDOWN_DRAIN_TIMEOUT_MS_DEFAULT, WRITE_STALL_TIMEOUT_MS_DEFAULT,
};
use crate::log::FlushPolicy;

/// A broker tuning profile. Plain data, read once at start.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Profile {
    /// A name for logs and reports.
    pub name: String,
    pub storage: StorageProfile,
    pub runtime: RuntimeProfile,
    pub network: NetworkProfile,
    /// Producer settings that suit this profile. The broker does not use them; clients that
    /// are given the profile (the load generator, the bench harness) do.
    pub client: ClientTuning,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageProfile {
    /// The flush policy of topics that do not set `flush.mode`.
    pub flush: FlushPolicy,
    /// Per-shard byte budget of the cache of recent batches.
    pub cache_bytes: usize,
    /// Per-shard budget of open segment files.
    pub open_files_max: usize,
    /// Space reserved ahead of each partition's writer.
    pub preallocate_bytes: u64,
    /// An idempotent producer silent on a partition for this long is forgotten there (a
    /// retry after that may be stored twice).
    pub producer_idle_ms: u64,
    /// Whether a shard's partitions flush in shard-wide rounds (their writes together,
    /// then their fdatasyncs together); `false`: each partition flushes on its own.
    pub shard_flush_rounds: bool,
    /// Bytes of each shard's journal ring (`crate::log::journal`); 0 turns the journal off.
    /// With it, partitions whose policy syncs are made durable by one journal write and
    /// fdatasync per shard, and write their segments later.
    pub shard_journal_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeProfile {
    /// How long an idle shard spins before parking (waking a parked core costs ~100 µs).
    pub spin_before_park_us: u64,
    /// glommio io memory per shard (capped to fit the locked-memory limit).
    pub io_memory_bytes: usize,
    /// CPU shares of request handling against background work (flush, retention).
    pub request_shares: usize,
    pub background_shares: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkProfile {
    /// Socket send and receive buffers (0: the kernel's default).
    pub socket_send_buffer_bytes: usize,
    pub socket_receive_buffer_bytes: usize,
    /// Requests a connection may have in flight before the broker stops reading it.
    pub in_flight_requests_max: usize,
    /// A connection with nothing in flight is closed after this long without a request.
    pub idle_timeout_ms: u64,
    /// A client that has sent part of a frame must send the rest within this time.
    pub frame_completion_timeout_ms: u64,
    /// A client must accept response bytes within this time, or it is disconnected.
    pub write_stall_timeout_ms: u64,
    /// A graceful shutdown waits this long for requests in flight, then closes anyway.
    pub shutdown_drain_timeout_ms: u64,
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            name: "balanced".into(),
            storage: StorageProfile::default(),
            runtime: RuntimeProfile::default(),
            network: NetworkProfile::default(),
            client: ClientTuning::default(),
        }
    }
}

/// The default shard journal ring (64 MiB per shard).
pub const SHARD_JOURNAL_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;

impl Default for StorageProfile {
    fn default() -> Self {
        StorageProfile {
            flush: FlushPolicy::Interval { interval_us: 1000 },
            cache_bytes: BATCH_CACHE_BYTES_DEFAULT,
            open_files_max: OPEN_SEGMENT_FILES_DEFAULT,
            preallocate_bytes: SEGMENT_PREALLOCATE_BYTES,
            producer_idle_ms: PRODUCER_IDLE_MS_DEFAULT as u64,
            shard_flush_rounds: true,
            shard_journal_bytes: SHARD_JOURNAL_BYTES_DEFAULT,
        }
    }
}

impl Default for RuntimeProfile {
    fn default() -> Self {
        RuntimeProfile {
            spin_before_park_us: 50,
            io_memory_bytes: 2 * 1024 * 1024,
            request_shares: 800,
            background_shares: 200,
        }
    }
}

impl Default for NetworkProfile {
    fn default() -> Self {
        NetworkProfile {
            socket_send_buffer_bytes: 0,
            socket_receive_buffer_bytes: 0,
            in_flight_requests_max: 64,
            idle_timeout_ms: CONNECTION_IDLE_TIMEOUT_MS_DEFAULT,
            frame_completion_timeout_ms: FRAME_COMPLETION_TIMEOUT_MS_DEFAULT,
            write_stall_timeout_ms: WRITE_STALL_TIMEOUT_MS_DEFAULT,
            shutdown_drain_timeout_ms: SHUTDOWN_DRAIN_TIMEOUT_MS_DEFAULT,
        }
    }
}

impl Profile {
    /// Reads and checks a profile file; the message names the file and the problem.
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let profile: Profile = toml::from_str(&text).map_err(|e| ProfileError::Parse {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        profile.check().map_err(|e| ProfileError::Invalid {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(profile)
    }

    pub fn check(&self) -> Result<(), ProfileError> {
        self.check_fields().map_err(ProfileError::Check)
    }

    fn check_fields(&self) -> Result<(), String> {
        if self.network.in_flight_requests_max == 0 {
            return Err("network.in_flight_requests_max must be positive".into());
        }
        let network = &self.network;
        if [
            network.idle_timeout_ms,
            network.frame_completion_timeout_ms,
            network.write_stall_timeout_ms,
        ]
        .contains(&0)
        {
            return Err("network timeouts must be positive".into());
        }
        if self.runtime.request_shares == 0 || self.runtime.background_shares == 0 {
            return Err("runtime shares must be positive".into());
        }
        if self.storage.open_files_max == 0 {
            return Err("storage.open_files_max must be positive".into());
        }
        let journal = self.storage.shard_journal_bytes;
        if journal != 0
            && (journal < crate::log::journal::JOURNAL_BYTES_MIN
                || journal % crate::constants::IO_ALIGNMENT_BYTES != 0)
        {
            return Err(format!(
                "storage.shard_journal_bytes must be 0 (off) or a multiple of 4096 of at least {}, not {journal}",
                crate::log::journal::JOURNAL_BYTES_MIN
            ));
        }
        if self.storage.preallocate_bytes % crate::constants::IO_ALIGNMENT_BYTES != 0 {
            return Err("storage.preallocate_bytes must be a multiple of 4096".into());
        }
        if let FlushPolicy::Interval { interval_us: 0 } | FlushPolicy::Bytes { bytes: 0, .. } =
            self.storage.flush
        {
            return Err("storage.flush needs a positive interval or byte count".into());
        }
        self.client.check()
    }
}

impl Profile {
    pub fn spin_before_park(&self) -> Duration {
        Duration::from_micros(self.runtime.spin_before_park_us)
    }
}

impl NetworkProfile {
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    pub fn frame_completion_timeout(&self) -> Duration {
        Duration::from_millis(self.frame_completion_timeout_ms)
    }

    pub fn write_stall_timeout(&self) -> Duration {
        Duration::from_millis(self.write_stall_timeout_ms)
    }

    pub fn shutdown_drain_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_drain_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_file_overrides_only_what_it_names() {
        let profile: Profile = toml::from_str(
            r#"
            name = "latency"
            [storage]
            flush = { mode = "every-batch" }
            [runtime]
            spin_before_park_us = 200
            "#,
        )
        .unwrap();
        assert_eq!(profile.storage.flush, FlushPolicy::EveryBatch);
        assert_eq!(profile.runtime.spin_before_park_us, 200);
        assert_eq!(profile.network, NetworkProfile::default());
        let bytes: Profile = toml::from_str(
            "[storage]\nflush = { mode = \"bytes\", bytes = 65536, max_delay_us = 500 }",
        )
        .unwrap();
        assert_eq!(
            bytes.storage.flush,
            FlushPolicy::Bytes {
                bytes: 65536,
                max_delay_us: 500
            }
        );
    }

    #[test]
    fn typos_and_bad_values_are_errors() {
        assert!(toml::from_str::<Profile>("[storage]\nflsh = 1").is_err());
        assert!(toml::from_str::<Profile>("[storage]\nflush = { mode = \"sometimes\" }").is_err());
        let zero: Profile = toml::from_str("[network]\nin_flight_requests_max = 0").unwrap();
        assert!(zero.check().is_err());
        let tiny: Profile = toml::from_str("[client]\nbatch_bytes = 10").unwrap();
        assert!(tiny.check().is_err());
        let starved: Profile =
            toml::from_str("[client]\nbatch_bytes = 1048576\nbuffer_bytes = 4096").unwrap();
        assert!(starved.check().is_err());
        assert!(toml::from_str::<Profile>("[client]\nlinger = 5").is_err());
    }
}
