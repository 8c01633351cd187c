//! Scenario files (`bench-harness/scenarios/*.toml`): which profiles, which workload, which
//! runs. The built-in scenarios are compiled into the binary, so `--scenario quick` works
//! from any directory; `--scenario path/to/file.toml` reads a file.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::peers::{Durability, Peer};

/// The scenarios that ship with the harness, by name.
pub const BUILT_IN: [(&str, &str); 7] = [
    ("quick", include_str!("../scenarios/quick.toml")),
    (
        "omb-1-topic-100-partitions-1kb",
        include_str!("../scenarios/omb-1-topic-100-partitions-1kb.toml"),
    ),
    ("spike", include_str!("../scenarios/spike.toml")),
    ("many-topics", include_str!("../scenarios/many-topics.toml")),
    ("peers", include_str!("../scenarios/peers.toml")),
    (
        "peers-100-partitions",
        include_str!("../scenarios/peers-100-partitions.toml"),
    ),
    ("replicated", include_str!("../scenarios/replicated.toml")),
];

/// The acks a peer cluster's producers ask for, and so a replicated scenario with peers.
pub const PEER_CLUSTER_ACKS: &str = "all";

/// A run's rate that is half of what the same system measured in the scenario's `max` run
/// (in the same comparison): where latency is compared.
pub const HALF_MAX_RATE: &str = "half-max";

/// Key modes and acks the load generator accepts (`--keys`, `--acks`).
const KEY_MODES: [&str; 4] = ["none", "round-robin", "random", "zipf"];
const ACKS: [&str; 3] = ["none", "leader", "all"];
/// The most topics a scenario may spread over (the loadgen's own limit).
const TOPICS_MAX: u32 = 100_000;
/// The cluster sizes `shardline cluster local --brokers` accepts (a controller quorum of
/// 1, 3 or 5 voters).
const CLUSTER_BROKERS_ALLOWED: [u32; 3] = [1, 3, 5];
/// The most shards per broker a replicated scenario may ask for.
const CORES_PER_BROKER_MAX: usize = 64;

/// One workload against every listed profile.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// When set, the scenario is defined but cannot run yet; this says why.
    #[serde(default)]
    pub not_runnable: Option<String>,
    /// Names of files in `tuning/` (without `.toml`).
    pub profiles: Vec<String>,
    pub topic: String,
    /// Topics the workload spreads over: 1 is `topic` itself; N > 1 are `<topic>-0` ..
    /// `<topic>-<N-1>` (the loadgen's `--topics N`), each with `partitions`.
    #[serde(default = "one")]
    pub topics: u32,
    /// When set, the consumers share the partitions as members of this consumer group
    /// (the loadgen's `--consumer-group`) instead of splitting them statically.
    #[serde(default)]
    pub consumer_group: Option<String>,
    pub partitions: u32,
    pub producers: u32,
    pub consumers: u32,
    pub message_bytes: usize,
    #[serde(default = "default_keys")]
    pub keys: String,
    #[serde(default = "default_acks")]
    pub acks: String,
    pub warmup_s: f64,
    pub duration_s: f64,
    /// One broker per profile for all runs in order (phases), instead of one per run.
    #[serde(default)]
    pub broker_per_profile: bool,
    pub runs: Vec<RunSpec>,
    /// Comparisons at equal durability with peer brokers. When present, the scenario runs
    /// each comparison instead of every profile: shardline with the comparison's profile
    /// and acks, then each peer of `peers` in the comparison's durability class.
    #[serde(default)]
    pub comparisons: Vec<Comparison>,
    /// The peers of the comparisons (kafka, kafka-cluster, nats, redis), in run order. In a
    /// replicated scenario: peer clusters run after shardline's clusters, each beside the
    /// shardline cluster of its shape (`kafka-cluster` beside 3 brokers, replication factor
    /// 3, `min.insync.replicas=2`).
    #[serde(default)]
    pub peers: Vec<String>,
    /// When present, every run goes to clusters started with `shardline cluster local`
    /// (each cluster in turn, a fresh one per run) instead of the embedded broker, and the
    /// report compares each cluster with the first, and shardline's cluster with each peer
    /// cluster of the same shape.
    #[serde(default)]
    pub replication: Option<Replication>,
}

/// The clusters of a replicated scenario and what they share.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Replication {
    /// Shards of every broker (`cluster local --cores`), the same in every cluster so that
    /// only the broker count and the replication differ.
    pub cores_per_broker: usize,
    /// In run order; the first is the baseline of the ratios.
    pub clusters: Vec<ClusterSpec>,
}

/// One cluster: how many brokers, and the topic the harness creates on it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    pub brokers: u32,
    /// Replicas of every partition of the scenario's topic (`topic create
    /// --replication-factor`).
    pub replication_factor: u16,
    /// The topic's `min.insync.replicas`.
    pub min_insync_replicas: u16,
}

impl ClusterSpec {
    /// The cluster's label in tables, plots and file names, under tuning `profile`:
    /// `balanced-3-brokers-rf3`.
    pub fn label(&self, profile: &str) -> String {
        let brokers = if self.brokers == 1 {
            "broker"
        } else {
            "brokers"
        };
        format!(
            "{profile}-{}-{brokers}-rf{}",
            self.brokers, self.replication_factor
        )
    }

    fn check(&self) -> Result<(), String> {
        if !CLUSTER_BROKERS_ALLOWED.contains(&self.brokers) {
            return Err(format!(
                "a cluster of {} brokers: `cluster local` starts {CLUSTER_BROKERS_ALLOWED:?}",
                self.brokers
            ));
        }
        if self.replication_factor == 0 || u32::from(self.replication_factor) > self.brokers {
            return Err(format!(
                "replication factor {} on {} brokers: it must be 1 to the broker count",
                self.replication_factor, self.brokers
            ));
        }
        if self.min_insync_replicas == 0 || self.min_insync_replicas > self.replication_factor {
            return Err(format!(
                "min.insync.replicas {} with replication factor {}: it must be 1 to the factor",
                self.min_insync_replicas, self.replication_factor
            ));
        }
        Ok(())
    }
}

impl Replication {
    /// Whether `peer` can stand beside one of the clusters: it replicates, a cluster has
    /// its shape, and the producers ask for the acks it is measured with.
    fn check_peer(&self, peer: Peer, acks: &str) -> Result<(), String> {
        let Some(shape) = peer.cluster_spec() else {
            return Err(format!(
                "peer {} does not replicate: a replicated scenario compares shardline's \
                 clusters with a peer cluster of the same setting (kafka-cluster)",
                peer.name()
            ));
        };
        if acks != PEER_CLUSTER_ACKS {
            return Err(format!(
                "peer {} produces with acks={PEER_CLUSTER_ACKS}; the scenario's acks are {acks}",
                peer.name()
            ));
        }
        if !self.clusters.contains(&shape) {
            return Err(format!(
                "peer {} stands beside a shardline cluster of {} brokers, replication factor \
                 {}, min.insync.replicas {}; the scenario has none",
                peer.name(),
                shape.brokers,
                shape.replication_factor,
                shape.min_insync_replicas
            ));
        }
        Ok(())
    }

    fn check(&self, scenario: &Scenario) -> Result<(), String> {
        if self.clusters.is_empty() {
            return Err("replication lists no clusters".into());
        }
        if self.cores_per_broker == 0 || self.cores_per_broker > CORES_PER_BROKER_MAX {
            return Err(format!(
                "cores_per_broker must be 1 to {CORES_PER_BROKER_MAX}"
            ));
        }
        for cluster in &self.clusters {
            cluster.check()?;
        }
        let mut labels: Vec<String> = self.clusters.iter().map(|c| c.label("p")).collect();
        labels.sort();
        labels.dedup();
        if labels.len() != self.clusters.len() {
            return Err("two clusters have the same brokers and replication factor".into());
        }
        if !scenario.comparisons.is_empty() {
            return Err("replication and peer comparisons ([[comparisons]]) do not mix".into());
        }
        for name in &scenario.peers {
            self.check_peer(Peer::parse(name)?, &scenario.acks)?;
        }
        if scenario.broker_per_profile {
            return Err("replication starts a fresh cluster per run: no broker_per_profile".into());
        }
        Ok(())
    }
}

/// One durability class, and how shardline meets it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Comparison {
    pub durability: Durability,
    /// The tuning profile shardline runs with.
    pub profile: String,
    /// The acks shardline's producers ask for.
    pub acks: String,
}

/// One loadgen run: a rate, optionally with its own name, warm-up and duration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    #[serde(default)]
    pub name: Option<String>,
    /// Messages per second in total, or `max`.
    pub rate: String,
    #[serde(default)]
    pub warmup_s: Option<f64>,
    #[serde(default)]
    pub duration_s: Option<f64>,
}

fn one() -> u32 {
    1
}

fn default_keys() -> String {
    "round-robin".into()
}

fn default_acks() -> String {
    "all".into()
}

impl RunSpec {
    /// The run's label in tables and file names: its name, else `rate-<rate>`.
    pub fn label(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("rate-{}", self.rate))
    }
}

impl Scenario {
    pub fn parse(text: &str, origin: &str) -> Result<Scenario, String> {
        let scenario: Scenario =
            toml::from_str(text).map_err(|e| format!("scenario {origin}: {e}"))?;
        scenario
            .check()
            .map_err(|e| format!("scenario {origin}: {e}"))?;
        Ok(scenario)
    }

    /// A built-in scenario by name, or a scenario file by path.
    pub fn load(name_or_path: &str) -> Result<Scenario, String> {
        if let Some((_, text)) = BUILT_IN.iter().find(|(name, _)| *name == name_or_path) {
            return Scenario::parse(text, name_or_path);
        }
        let path = Path::new(name_or_path);
        if path.exists() {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("reading scenario {}: {e}", path.display()))?;
            return Scenario::parse(&text, &path.display().to_string());
        }
        let names: Vec<&str> = BUILT_IN.iter().map(|(name, _)| *name).collect();
        Err(format!(
            "no scenario '{name_or_path}': neither a built-in ({}) nor a file",
            names.join(", ")
        ))
    }

    pub fn warmup_s(&self, run: &RunSpec) -> f64 {
        run.warmup_s.unwrap_or(self.warmup_s)
    }

    pub fn duration_s(&self, run: &RunSpec) -> f64 {
        run.duration_s.unwrap_or(self.duration_s)
    }

    fn check(&self) -> Result<(), String> {
        if self.profiles.is_empty() {
            return Err("lists no profiles".into());
        }
        if self.runs.is_empty() {
            return Err("lists no runs".into());
        }
        if self.partitions == 0 || self.producers == 0 || self.topics == 0 {
            return Err("partitions, producers and topics must be positive".into());
        }
        if self.message_bytes == 0 {
            return Err("message_bytes must be positive".into());
        }
        if !KEY_MODES.contains(&self.keys.as_str()) {
            return Err(format!("keys '{}' is not one of {KEY_MODES:?}", self.keys));
        }
        if !ACKS.contains(&self.acks.as_str()) {
            return Err(format!("acks '{}' is not one of {ACKS:?}", self.acks));
        }
        for (index, run) in self.runs.iter().enumerate() {
            if run.rate == HALF_MAX_RATE {
                if !self.runs[..index].iter().any(|r| r.rate == "max") {
                    return Err(format!(
                        "run {}: rate '{HALF_MAX_RATE}' needs an earlier run at 'max'",
                        run.label()
                    ));
                }
                continue;
            }
            let rate_ok = run.rate == "max"
                || run
                    .rate
                    .parse::<f64>()
                    .is_ok_and(|rate| rate > 0.0 && rate.is_finite());
            if !rate_ok {
                return Err(format!(
                    "run rate '{}' is neither 'max' nor a positive number",
                    run.rate
                ));
            }
            let warmup_s = self.warmup_s(run);
            let duration_s = self.duration_s(run);
            if !(warmup_s >= 0.0 && warmup_s.is_finite()) {
                return Err(format!("run {}: warm-up must be non-negative", run.label()));
            }
            if !(duration_s > 0.0 && duration_s.is_finite()) {
                return Err(format!("run {}: duration must be positive", run.label()));
            }
        }
        let mut labels: Vec<String> = self.runs.iter().map(RunSpec::label).collect();
        labels.sort();
        labels.dedup();
        if labels.len() != self.runs.len() {
            return Err("two runs have the same label (name them)".into());
        }
        for comparison in &self.comparisons {
            if !self.profiles.contains(&comparison.profile) {
                return Err(format!(
                    "comparison {}: profile '{}' is not in profiles",
                    comparison.durability.name(),
                    comparison.profile
                ));
            }
            if !ACKS.contains(&comparison.acks.as_str()) {
                return Err(format!("acks '{}' is not one of {ACKS:?}", comparison.acks));
            }
        }
        for peer in &self.peers {
            Peer::parse(peer)?;
        }
        if !self.peers.is_empty() && self.comparisons.is_empty() && self.replication.is_none() {
            return Err("peers need at least one [[comparisons]] entry, or [replication]".into());
        }
        if self.topics > TOPICS_MAX {
            return Err(format!("topics must be at most {TOPICS_MAX}"));
        }
        if self.consumer_group.as_deref().is_some_and(str::is_empty) {
            return Err("consumer_group must not be empty".into());
        }
        if !self.comparisons.is_empty() && (self.topics != 1 || self.consumer_group.is_some()) {
            return Err("comparisons with peers use one topic and no consumer group".into());
        }
        if let Some(replication) = &self.replication {
            replication.check(self)?;
            if self.topics != 1 {
                return Err("replication creates one topic: topics must be 1".into());
            }
        }
        Ok(())
    }

    /// Keeps only `wanted` profiles, in the scenario's order (and only the comparisons
    /// that use them); unknown names are an error.
    pub fn restrict_profiles(&mut self, wanted: &[String]) -> Result<(), String> {
        if let Some(missing) = wanted.iter().find(|name| !self.profiles.contains(name)) {
            return Err(format!(
                "profile '{missing}' is not in scenario {} ({})",
                self.name,
                self.profiles.join(", ")
            ));
        }
        self.profiles.retain(|name| wanted.contains(name));
        self.comparisons
            .retain(|comparison| wanted.contains(&comparison.profile));
        Ok(())
    }

    /// The peers to compare with.
    pub fn peer_list(&self) -> Result<Vec<Peer>, String> {
        self.peers.iter().map(|name| Peer::parse(name)).collect()
    }

    /// Keeps only `wanted` peers (which need not be in the scenario: `--peers` may add).
    pub fn set_peers(&mut self, wanted: &[String]) -> Result<(), String> {
        for name in wanted {
            Peer::parse(name)?;
        }
        if self.comparisons.is_empty() && self.replication.is_none() && !wanted.is_empty() {
            return Err(format!(
                "scenario {} has neither [[comparisons]] nor [replication]; peers run with \
                 the 'peers' scenario, a peer cluster beside shardline's with 'replicated'",
                self.name
            ));
        }
        if let Some(replication) = &self.replication {
            for name in wanted {
                replication
                    .check_peer(Peer::parse(name)?, &self.acks)
                    .map_err(|e| format!("scenario {}: {e}", self.name))?;
            }
        }
        self.peers = wanted.to_vec();
        Ok(())
    }

    /// Seconds of load the scenario asks for (warm-ups included, broker starts not).
    pub fn load_seconds(&self) -> f64 {
        let per_system: f64 = self
            .runs
            .iter()
            .map(|run| self.warmup_s(run) + self.duration_s(run))
            .sum();
        if let Some(replication) = &self.replication {
            // Every profile on every cluster, then each peer cluster once.
            per_system
                * (self.profiles.len() * replication.clusters.len() + self.peers.len()) as f64
        } else if self.comparisons.is_empty() {
            per_system * self.profiles.len() as f64
        } else {
            per_system * (self.comparisons.len() * (1 + self.peers.len())) as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_scenario_parses() {
        for (name, text) in BUILT_IN {
            let scenario = Scenario::parse(text, name).expect("parses");
            assert_eq!(scenario.name, name);
            if scenario.comparisons.is_empty() && scenario.replication.is_none() {
                assert_eq!(scenario.profiles.len(), 4, "{name}");
            }
        }
    }

    #[test]
    fn quick_runs_all_profiles_in_under_two_minutes_of_load() {
        let quick = Scenario::load("quick").expect("built in");
        assert_eq!(quick.partitions, 8);
        assert_eq!(quick.message_bytes, 1024);
        assert_eq!((quick.producers, quick.consumers), (1, 1));
        assert!(quick.runs.iter().any(|run| run.rate == "max"));
        assert!(quick.load_seconds() < 90.0, "{}", quick.load_seconds());
    }

    #[test]
    fn many_topics_is_runnable_with_ten_thousand_topics_in_a_few_minutes() {
        let scenario = Scenario::load("many-topics").expect("built in");
        assert_eq!(scenario.topics, 10_000);
        assert_eq!(scenario.partitions, 1);
        assert!(scenario.not_runnable.is_none());
        // Per profile at most a minute of load (topic creation comes on top).
        let per_profile = scenario.load_seconds() / scenario.profiles.len() as f64;
        assert!(per_profile <= 60.0, "{per_profile}");
    }

    #[test]
    fn topics_and_consumer_group_are_checked() {
        let grouped = TINY.replace(
            "topic = \"t\"",
            "topic = \"t\"\ntopics = 3\nconsumer_group = \"g\"",
        );
        let scenario = Scenario::parse(&grouped, "test").expect("parses");
        assert_eq!(
            (scenario.topics, scenario.consumer_group.as_deref()),
            (3, Some("g"))
        );
        let too_many = TINY.replace("topic = \"t\"", "topic = \"t\"\ntopics = 100001");
        let error = Scenario::parse(&too_many, "test").expect_err("too many");
        assert!(error.contains("topics"), "{error}");
        let empty = TINY.replace("topic = \"t\"", "topic = \"t\"\nconsumer_group = \"\"");
        assert!(Scenario::parse(&empty, "test").is_err());
    }

    #[test]
    fn spike_phases_share_a_broker_and_step_tenfold() {
        let spike = Scenario::load("spike").expect("built in");
        assert!(spike.broker_per_profile);
        let rates: Vec<f64> = spike
            .runs
            .iter()
            .map(|r| r.rate.parse().expect("rate"))
            .collect();
        assert_eq!(rates[1], rates[0] * 10.0);
        assert_eq!(rates[2], rates[0]);
        assert_eq!(spike.duration_s(&spike.runs[1]), 4.0);
        assert_eq!(spike.warmup_s(&spike.runs[0]), 1.0);
        assert_eq!(spike.warmup_s(&spike.runs[1]), 0.0);
    }

    const TINY: &str = r#"
        name = "tiny"
        profiles = ["latency", "balanced"]
        topic = "t"
        partitions = 2
        producers = 1
        consumers = 1
        message_bytes = 256
        warmup_s = 0.5
        duration_s = 2.0
        [[runs]]
        rate = "1000"
    "#;

    #[test]
    fn defaults_fill_keys_acks_and_topics() {
        let tiny = Scenario::parse(TINY, "test").expect("parses");
        assert_eq!(
            (tiny.keys.as_str(), tiny.acks.as_str()),
            ("round-robin", "all")
        );
        assert_eq!(tiny.topics, 1);
        assert_eq!(tiny.runs[0].label(), "rate-1000");
    }

    #[test]
    fn bad_scenarios_are_refused_with_the_reason() {
        let cases = [
            (TINY.replace("\"1000\"", "\"fast\""), "neither 'max'"),
            (TINY.replace("partitions = 2", "partitions = 0"), "positive"),
            (
                TINY.replace("warmup_s = 0.5", "warmup_s = 0.5\nacks = \"some\""),
                "acks",
            ),
            (
                TINY.replace("topic = \"t\"", "topic = \"t\"\ncolour = 1"),
                "colour",
            ),
            (format!("{TINY}\n[[runs]]\nrate = \"1000\"\n"), "same label"),
        ];
        for (text, reason) in cases {
            let error = Scenario::parse(&text, "test").expect_err(reason);
            assert!(error.contains(reason), "{error}");
        }
    }

    /// Each comparison's class, profile and acks.
    fn comparison_classes(scenario: &Scenario) -> Vec<(Durability, &str, &str)> {
        scenario
            .comparisons
            .iter()
            .map(|c| (c.durability, c.profile.as_str(), c.acks.as_str()))
            .collect()
    }

    #[test]
    fn peers_at_100_partitions_compares_with_kafka_in_both_classes() {
        let peers = Scenario::load("peers-100-partitions").expect("built in");
        assert_eq!(peers.partitions, 100);
        assert_eq!(peers.peer_list().expect("known"), [Peer::Kafka]);
        assert_eq!(
            comparison_classes(&peers),
            [
                (Durability::Fsync, "balanced", "all"),
                (Durability::NoFsync, "write-behind", "leader")
            ]
        );
        assert!(peers.load_seconds() < 200.0, "{}", peers.load_seconds());
    }

    #[test]
    fn peers_compares_at_equal_durability_with_a_half_max_run_in_minutes() {
        let peers = Scenario::load("peers").expect("built in");
        assert_eq!(
            peers.peer_list().expect("known"),
            [Peer::Redis, Peer::Nats, Peer::Kafka]
        );
        assert_eq!(
            comparison_classes(&peers),
            [
                (Durability::Fsync, "durable", "all"),
                (Durability::NoFsync, "write-behind", "leader")
            ]
        );
        let mut durable_only = peers.clone();
        durable_only
            .restrict_profiles(&["durable".into()])
            .expect("known");
        assert_eq!(durable_only.comparisons.len(), 1);
        assert_eq!(durable_only.comparisons[0].durability, Durability::Fsync);
        let rates: Vec<&str> = peers.runs.iter().map(|r| r.rate.as_str()).collect();
        assert_eq!(rates, ["max", HALF_MAX_RATE]);
        assert!(peers.load_seconds() < 300.0, "{}", peers.load_seconds());
    }

    #[test]
    fn half_max_needs_a_max_run_first_and_peers_need_a_comparison() {
        let half_first = TINY.replace("\"1000\"", "\"half-max\"");
        let error = Scenario::parse(&half_first, "test").expect_err("no max run");
        assert!(error.contains("earlier run"), "{error}");
        let peers_alone = TINY.replace("topic = \"t\"", "topic = \"t\"\npeers = [\"kafka\"]");
        let error = Scenario::parse(&peers_alone, "test").expect_err("no comparison");
        assert!(error.contains("comparisons"), "{error}");
        let mut tiny = Scenario::parse(TINY, "test").expect("parses");
        assert!(tiny.set_peers(&["redis".into()]).is_err());
    }

    #[test]
    fn replicated_runs_one_broker_then_three_at_max_and_half_max_in_minutes() {
        let scenario = Scenario::load("replicated").expect("built in");
        let replication = scenario.replication.as_ref().expect("clusters");
        let clusters: Vec<(u32, u16, u16)> = replication
            .clusters
            .iter()
            .map(|c| (c.brokers, c.replication_factor, c.min_insync_replicas))
            .collect();
        assert_eq!(clusters, [(1, 1, 1), (3, 3, 2)]);
        assert_eq!(replication.cores_per_broker, 1);
        assert_eq!(scenario.profiles, ["balanced"]);
        assert_eq!(
            (scenario.message_bytes, scenario.acks.as_str()),
            (1024, "all")
        );
        let rates: Vec<&str> = scenario.runs.iter().map(|r| r.rate.as_str()).collect();
        assert_eq!(rates, ["max", HALF_MAX_RATE]);
        // 2 clusters x 2 runs x (5 s + 10 s).
        assert_eq!(scenario.load_seconds(), 60.0);
        assert_eq!(
            replication.clusters[1].label("balanced"),
            "balanced-3-brokers-rf3"
        );
        assert_eq!(
            replication.clusters[0].label("durable"),
            "durable-1-broker-rf1"
        );
    }

    #[test]
    fn bad_replication_is_refused_with_the_reason() {
        let replicated = format!(
            "{TINY}\n[replication]\ncores_per_broker = 1\n\
             [[replication.clusters]]\nbrokers = 1\nreplication_factor = 1\n\
             min_insync_replicas = 1\n\
             [[replication.clusters]]\nbrokers = 3\nreplication_factor = 3\n\
             min_insync_replicas = 2\n"
        );
        let scenario = Scenario::parse(&replicated, "test").expect("parses");
        assert_eq!(scenario.load_seconds(), 2.5 * 2.0 * 2.0);
        let cases = [
            (
                replicated.replace("brokers = 3", "brokers = 2"),
                "`cluster local`",
            ),
            (
                replicated.replace("replication_factor = 3", "replication_factor = 4"),
                "replication factor 4 on 3 brokers",
            ),
            (
                replicated.replace("min_insync_replicas = 2", "min_insync_replicas = 4"),
                "min.insync.replicas 4 with replication factor 3",
            ),
            (
                replicated.replace("min_insync_replicas = 1", "min_insync_replicas = 0"),
                "min.insync.replicas 0",
            ),
            (
                replicated.replace("cores_per_broker = 1", "cores_per_broker = 0"),
                "cores_per_broker",
            ),
            (
                replicated.replace(
                    "brokers = 3\nreplication_factor = 3\nmin_insync_replicas = 2",
                    "brokers = 1\nreplication_factor = 1\nmin_insync_replicas = 1",
                ),
                "same brokers",
            ),
            (
                replicated.replace("topic = \"t\"", "topic = \"t\"\nbroker_per_profile = true"),
                "broker_per_profile",
            ),
            (
                replicated.replace("topic = \"t\"", "topic = \"t\"\ntopics = 2"),
                "topics must be 1",
            ),
            (
                format!(
                    "{replicated}\n[[comparisons]]\ndurability = \"fsync\"\n\
                     profile = \"latency\"\nacks = \"all\"\n"
                ),
                "do not mix",
            ),
        ];
        for (text, reason) in cases {
            let error = Scenario::parse(&text, "test").expect_err(reason);
            assert!(error.contains(reason), "{reason}: {error}");
        }
    }

    #[test]
    fn replicated_takes_the_kafka_cluster_beside_its_three_brokers_and_no_other_peer() {
        let mut scenario = Scenario::load("replicated").expect("built in");
        assert!(scenario.peers.is_empty(), "no peer unless asked");
        scenario
            .set_peers(&["kafka-cluster".into()])
            .expect("the 3-broker cluster has its shape");
        assert_eq!(scenario.peer_list(), Ok(vec![Peer::KafkaCluster]));
        // 2 clusters and the peer, each 2 runs x (5 s + 10 s).
        assert_eq!(scenario.load_seconds(), 90.0);
        for single in ["kafka", "nats", "redis"] {
            let error = scenario
                .clone()
                .set_peers(&[single.into()])
                .expect_err(single);
            assert!(error.contains("does not replicate"), "{error}");
        }
        scenario.set_peers(&[]).expect("none");
        assert!(scenario.peers.is_empty());
        let mut quick = Scenario::load("quick").expect("built in");
        let error = quick
            .set_peers(&["kafka-cluster".into()])
            .expect_err("no clusters, no comparisons");
        assert!(error.contains("'replicated'"), "{error}");
    }

    #[test]
    fn a_peer_cluster_needs_acks_all_and_a_shardline_cluster_of_its_shape() {
        let text = include_str!("../scenarios/replicated.toml");
        let with_peer = text.replace(
            "topic = \"replicated\"",
            "topic = \"replicated\"\npeers = [\"kafka-cluster\"]",
        );
        let scenario = Scenario::parse(&with_peer, "test").expect("parses");
        assert_eq!(scenario.peers, ["kafka-cluster"]);
        let cases = [
            (
                with_peer.replace("acks = \"all\"", "acks = \"leader\""),
                "produces with acks=all",
            ),
            (
                with_peer.replace("min_insync_replicas = 2", "min_insync_replicas = 3"),
                "stands beside a shardline cluster of 3 brokers, replication factor 3, \
                 min.insync.replicas 2",
            ),
            (
                with_peer.replace("kafka-cluster", "kafka"),
                "does not replicate",
            ),
        ];
        for (text, reason) in cases {
            let error = Scenario::parse(&text, "test").expect_err(reason);
            assert!(error.contains(reason), "{reason}: {error}");
        }
    }

    #[test]
    fn profiles_can_be_narrowed_but_not_invented() {
        let mut tiny = Scenario::parse(TINY, "test").expect("parses");
        tiny.restrict_profiles(&["balanced".into()]).expect("known");
        assert_eq!(tiny.profiles, ["balanced"]);
        let error = tiny
            .restrict_profiles(&["fast".into()])
            .expect_err("unknown");
        assert!(error.contains("fast"), "{error}");
    }
}
