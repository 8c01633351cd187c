//! Command-line flags of `shardline-loadgen` and their checks.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use shardline::client::ProducerConfig;
use shardline::protocol::Acks;

use crate::driver::System;
use crate::topics::TOPICS_MAX;

/// `--drain-s` by default: a minute for each stage of the drain.
pub const DRAIN_S_DEFAULT: f64 = 60.0;
/// The longest `--drain-s`: a day.
pub const DRAIN_S_MAX: f64 = 86_400.0;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "shardline-loadgen",
    about = "Drives a shardline broker (or a peer: Kafka, NATS JetStream, Redis Streams) with \
             producers and consumers; reports throughput, produce-ack and end-to-end latency (corrected for coordinated omission), and \
             checks that every acknowledged message is consumed once and in order"
)]
pub struct Args {
    /// The system to drive: shardline, or a peer broker through its standard client
    /// (kafka, nats, redis: built only with the cargo feature `peers`).
    #[arg(long, value_enum, default_value = "shardline")]
    pub system: System,
    /// The broker's main address, HOST:PORT; for shardline and kafka, several bootstrap
    /// brokers of a cluster may be given, comma separated (redis and nats: one).
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub broker: String,
    /// TLS to shardline brokers that listen with it.
    #[command(flatten)]
    pub tls: shardline::cli::SecurityArgs,
    /// The topic to use (created when missing); with --topics, the topics' name prefix.
    #[arg(long, default_value = "loadgen")]
    pub topic: String,
    /// Spread the load over N topics named <topic>-0 .. <topic>-<N-1> (each with
    /// --partitions), created when missing in batched admin requests. Producers rotate over
    /// the topics message by message; consumers split the topic-partitions (or share them
    /// through --consumer-group). Loss, duplicate and order checks hold per topic-partition.
    #[arg(long, value_name = "N")]
    pub topics: Option<u32>,
    /// Partitions of each topic when it is created.
    #[arg(long, default_value_t = 8)]
    pub partitions: u32,
    /// Producers, each on its own unpinned glommio executor thread.
    #[arg(long, default_value_t = 1)]
    pub producers: u32,
    /// Consumers, each on its own unpinned glommio executor thread; they split the
    /// partitions among them (0: no consumers, no end-to-end latency, no loss check).
    #[arg(long, default_value_t = 1)]
    pub consumers: u32,
    /// Consumers join consumer group G (the broker's coordinator hands out the partitions,
    /// cooperative sticky, and moves them when a member comes or goes) instead of splitting
    /// the partitions among themselves. Offsets are committed every second, before a
    /// partition is given back and on leaving. Producers start once the group is stable.
    /// A message a member processed but had not committed when its partition moved is
    /// delivered again to the next owner and counted as duplicated (reported with the
    /// number of ownership changes); without failures there are none. Shardline only.
    #[arg(long, value_name = "G")]
    pub consumer_group: Option<String>,
    /// Bytes in every message's value: a size (`1024`) or a range whose sizes are equally
    /// likely (`100-4096`); at least the payload header.
    #[arg(long, default_value = "1024")]
    pub message_bytes: crate::sizes::MessageSize,
    /// How messages are keyed.
    #[arg(long, value_enum, default_value = "round-robin")]
    pub keys: KeyMode,
    /// Distinct keys for round-robin, random and zipf keys.
    #[arg(long, default_value_t = 1024)]
    pub key_count: u32,
    #[arg(long, value_enum, default_value = "all")]
    pub acks: AcksArg,
    /// Producer batch size (default: the profile's `[client]`, else the client's default).
    #[arg(long)]
    pub batch_bytes: Option<usize>,
    /// Producer linger (default: the profile's `[client]`, else the client's default).
    #[arg(long)]
    pub linger_us: Option<u64>,
    /// Producer batches in flight per partition, 1 to 5 (default: the profile's, else 5).
    #[arg(long)]
    pub max_in_flight: Option<usize>,
    /// A tuning profile (`tuning/NAME.toml`) whose `[client]` section sets the producer's
    /// batch size, linger and buffer (flags given explicitly win).
    #[arg(long)]
    pub profile: Option<std::path::PathBuf>,
    /// The `[client]` section of `--profile`, once loaded (`load_profile`).
    #[arg(skip)]
    pub client_profile: Option<shardline::client::ClientTuning>,
    /// Total messages per second across all producers (open loop), or `max` (closed loop
    /// with `--outstanding`).
    #[arg(long, default_value = "max")]
    pub rate: Rate,
    /// Closed loop only: messages each producer keeps sent and not yet acknowledged.
    #[arg(long, default_value_t = 1024)]
    pub outstanding: u64,
    /// Open loop only: the shortest sleep of a producer ahead of its schedule, in µs. It
    /// then sends every message that came due meanwhile. A message never leaves before its
    /// due time and its latency counts from that time, so what a longer pace delays is in
    /// the figures; 0 sleeps until each message's own due time (one wake-up per message at
    /// low rates, each a park and a wake of the producer's thread).
    #[arg(
        long,
        default_value_t = crate::producer::PACE_US_DEFAULT,
        value_parser = clap::value_parser!(u64).range(0..=crate::producer::PACE_US_MAX)
    )]
    pub pace_us: u64,
    /// shardline consumers: the bytes a fetch waits for before the broker answers (at most
    /// `--fetch-max-wait-ms`). 1 answers as soon as anything is there; more means fewer,
    /// larger fetches, for less CPU per message at the cost of end-to-end latency.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub fetch_min_bytes: u32,
    /// shardline consumers: how long the broker may hold a fetch that has less than
    /// `--fetch-min-bytes` (milliseconds).
    #[arg(
        long,
        default_value_t = crate::consumer::FETCH_WAIT_MAX_MS,
        value_parser = clap::value_parser!(u32).range(0..=10_000)
    )]
    pub fetch_max_wait_ms: u32,
    /// Seconds of load before measuring (not in the histograms or the throughput).
    #[arg(long, default_value_t = 1.0)]
    pub warmup_s: f64,
    /// Seconds of measured load after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    pub duration_s: f64,
    /// Seconds the run may go on past its end for each of: shardline's open-loop producers
    /// still sending messages that were due before the end (their buffer was full; what is
    /// not sent then counts among the produce errors), the wait for the last answers, and
    /// consumers reading up to the log end. What is left then counts as failed. (A peer
    /// system's producers send what was due however late; the other two limits hold.)
    #[arg(long, default_value_t = DRAIN_S_DEFAULT)]
    pub drain_s: f64,
    /// Send every request through the broker's main port instead of the owning shard's.
    #[arg(long)]
    pub no_shard_routing: bool,
    /// Write parameters, machine and results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write each histogram's percentile distribution (HdrHistogram text format) here.
    #[arg(long)]
    pub hdr_dir: Option<PathBuf>,
    /// Print the systems this binary can drive (`--system`), one per line, and exit: the
    /// peers (kafka, nats, redis) appear only in a build with the cargo feature `peers`.
    /// The bench harness asks before it starts a peer.
    #[arg(long)]
    pub list_systems: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KeyMode {
    None,
    RoundRobin,
    Random,
    Zipf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AcksArg {
    None,
    Leader,
    All,
}

impl AcksArg {
    pub fn to_acks(self) -> Acks {
        match self {
            AcksArg::None => Acks::None,
            AcksArg::Leader => Acks::Leader,
            AcksArg::All => Acks::All,
        }
    }
}

/// The target send rate: open loop at a total rate, or closed loop as fast as acked.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rate {
    PerSecond(f64),
    Max,
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Rate, String> {
        if text.eq_ignore_ascii_case("max") {
            return Ok(Rate::Max);
        }
        match text.parse::<f64>() {
            Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(Rate::PerSecond(rate)),
            _ => Err(format!(
                "'{text}' is neither 'max' nor a positive messages/s"
            )),
        }
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rate::PerSecond(rate) => write!(f, "{rate}"),
            Rate::Max => write!(f, "max"),
        }
    }
}

impl Args {
    pub fn check(&self) -> Result<(), String> {
        if self.partitions == 0 {
            return Err("--partitions must be positive".into());
        }
        if let Some(topics) = self.topics {
            if topics == 0 || topics > TOPICS_MAX {
                return Err(format!("--topics must be between 1 and {TOPICS_MAX}"));
            }
        }
        if self.consumer_group.as_deref().is_some_and(str::is_empty) {
            return Err("--consumer-group needs a group name".into());
        }
        if self.system != System::Shardline
            && (self.topics.is_some() || self.consumer_group.is_some())
        {
            return Err(format!(
                "--topics and --consumer-group are for --system shardline only, not {}",
                self.system.name()
            ));
        }
        let fetch_default = self.fetch_min_bytes == 1
            && self.fetch_max_wait_ms == crate::consumer::FETCH_WAIT_MAX_MS;
        if self.system != System::Shardline && !fetch_default {
            return Err(format!(
                "--fetch-min-bytes and --fetch-max-wait-ms are for --system shardline only, not {}",
                self.system.name()
            ));
        }
        if self.producers == 0 {
            return Err("--producers must be positive".into());
        }
        self.message_bytes.check()?;
        if self.key_count == 0 {
            return Err("--key-count must be positive".into());
        }
        if self
            .max_in_flight
            .is_some_and(|n| !(1..=shardline::constants::PRODUCER_BATCHES_REMEMBERED).contains(&n))
        {
            return Err("--max-in-flight must be 1 to 5".into());
        }
        if self.outstanding == 0 {
            return Err("--outstanding must be positive".into());
        }
        if !(self.warmup_s >= 0.0 && self.warmup_s.is_finite()) {
            return Err("--warmup-s must be a non-negative number".into());
        }
        if !(self.duration_s > 0.0 && self.duration_s.is_finite()) {
            return Err("--duration-s must be a positive number".into());
        }
        if !(self.drain_s > 0.0 && self.drain_s <= DRAIN_S_MAX) {
            return Err(format!(
                "--drain-s must be a positive number of seconds, at most {DRAIN_S_MAX}"
            ));
        }
        crate::driver::client_settings(self)?;
        Ok(())
    }

    /// `--drain-s` (see there).
    pub fn drain(&self) -> Duration {
        Duration::from_secs_f64(self.drain_s)
    }

    /// Reads `--profile`'s `[client]` section (the whole profile is checked).
    pub fn load_profile(&mut self) -> Result<(), String> {
        if let Some(path) = &self.profile {
            self.client_profile = Some(shardline::client::ClientTuning::from_profile_file(path)?);
        }
        Ok(())
    }

    pub fn producer_config(&self) -> ProducerConfig {
        let mut defaults = ProducerConfig::default();
        if let Some(client) = &self.client_profile {
            defaults = client.apply(defaults);
        }
        ProducerConfig {
            acks: self.acks.to_acks(),
            linger: self
                .linger_us
                .map_or(defaults.linger, Duration::from_micros),
            batch_bytes: self.batch_bytes.unwrap_or(defaults.batch_bytes),
            max_in_flight: self.max_in_flight.unwrap_or(defaults.max_in_flight),
            ..defaults
        }
    }

    pub fn shard_routing(&self) -> bool {
        !self.no_shard_routing
    }

    /// The shardline cluster behind `--broker` (over TLS when asked).
    pub fn cluster(&self) -> Result<std::rc::Rc<shardline::client::Cluster>, String> {
        let tls = self.tls.client_tls()?;
        let login = self.tls.login()?;
        shardline::client::Cluster::with_security(
            &self.broker,
            crate::stats::CLIENT_ID,
            self.shard_routing(),
            tls,
            login,
        )
        .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Args, String> {
        let mut all = vec!["shardline-loadgen"];
        all.extend_from_slice(extra);
        let args = Args::try_parse_from(all).map_err(|e| e.to_string())?;
        args.check()?;
        Ok(args)
    }

    #[test]
    fn topics_and_consumer_group_are_optional_and_checked() {
        let plain = parse(&[]).expect("defaults");
        assert_eq!(
            (plain.topics, plain.consumer_group.as_deref()),
            (None, None)
        );
        let many =
            parse(&["--topics", "20", "--topic", "m", "--consumer-group", "g"]).expect("valid");
        assert_eq!(many.topics, Some(20));
        assert_eq!(many.consumer_group.as_deref(), Some("g"));
        for (bad, reason) in [
            (vec!["--topics", "0"], "--topics"),
            (vec!["--topics", "100001"], "--topics"),
            (vec!["--consumer-group", ""], "group name"),
            (vec!["--system", "kafka", "--topics", "2"], "shardline only"),
            (
                vec!["--system", "redis", "--consumer-group", "g"],
                "shardline only",
            ),
        ] {
            let error = parse(&bad).expect_err(reason);
            assert!(error.contains(reason), "{bad:?}: {error}");
        }
        assert!(parse(&["--topics", "many"]).is_err());
    }

    #[test]
    fn the_pace_defaults_to_100_us_and_is_bounded() {
        assert_eq!(parse(&[]).expect("defaults").pace_us, 100);
        assert_eq!(parse(&["--pace-us", "0"]).expect("valid").pace_us, 0);
        assert_eq!(parse(&["--pace-us", "5000"]).expect("valid").pace_us, 5000);
        let error = parse(&["--pace-us", "100001"]).expect_err("too long");
        assert!(error.contains("pace-us"), "{error}");
    }

    #[test]
    fn fetch_settings_reach_the_consumer_config_and_are_checked() {
        let plain = crate::consumer::consumer_config(&parse(&[]).expect("defaults"));
        assert_eq!(plain.min_bytes, 1);
        assert_eq!(plain.max_wait, Duration::from_millis(100));
        let args = parse(&["--fetch-min-bytes", "65536", "--fetch-max-wait-ms", "20"]).unwrap();
        let config = crate::consumer::consumer_config(&args);
        assert_eq!(config.min_bytes, 65536);
        assert_eq!(config.max_wait, Duration::from_millis(20));
        for (bad, reason) in [
            (vec!["--fetch-min-bytes", "0"], "fetch-min-bytes"),
            (vec!["--fetch-max-wait-ms", "10001"], "fetch-max-wait-ms"),
            (
                vec!["--system", "kafka", "--fetch-min-bytes", "4096"],
                "shardline only",
            ),
        ] {
            let error = parse(&bad).expect_err(reason);
            assert!(error.contains(reason), "{bad:?}: {error}");
        }
    }

    #[test]
    fn a_profile_sets_the_producer_defaults_and_flags_still_win() {
        let profile = concat!(env!("CARGO_MANIFEST_DIR"), "/../tuning/throughput.toml");
        let mut args = parse(&["--profile", profile]).expect("parses");
        args.load_profile().expect("the throughput profile loads");
        let config = args.producer_config();
        assert_eq!(config.batch_bytes, 1024 * 1024);
        assert_eq!(config.linger, Duration::from_millis(1));
        assert_eq!(config.buffer_bytes, 128 * 1024 * 1024);
        let mut args = parse(&["--profile", profile, "--batch-bytes", "65536"]).expect("parses");
        args.load_profile().expect("loads");
        assert_eq!(args.producer_config().batch_bytes, 65536);
        let mut missing = parse(&["--profile", "/nonexistent/profile.toml"]).expect("parses");
        assert!(missing.load_profile().is_err());
    }
}
