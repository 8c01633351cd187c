//! One run's results as read from the load generator's JSON report, plus the broker's
//! CPU time and memory, in the shape `report.json` and `report.md` share.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::scenario::ClusterSpec;

/// Latency percentiles in µs, as the load generator reports them (`None`: no samples).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50_us: Option<u64>,
    pub p90_us: Option<u64>,
    pub p99_us: Option<u64>,
    pub p99_9_us: Option<u64>,
    pub p99_99_us: Option<u64>,
    pub max_us: Option<u64>,
}

impl Percentiles {
    /// Reads `produce_latency` or `end_to_end_latency` of the loadgen's `results`.
    pub fn from_loadgen(latency: &Value) -> Percentiles {
        let field = |name: &str| latency.get(name).and_then(Value::as_u64);
        Percentiles {
            count: field("count").unwrap_or(0),
            p50_us: field("p50_us"),
            p90_us: field("p90_us"),
            p99_us: field("p99_us"),
            p99_9_us: field("p99_9_us"),
            p99_99_us: field("p99_99_us"),
            max_us: field("max_us"),
        }
    }

    /// In table order: p50, p90, p99, p99.9, p99.99, max.
    pub fn in_order(&self) -> [Option<u64>; 6] {
        [
            self.p50_us,
            self.p90_us,
            self.p99_us,
            self.p99_9_us,
            self.p99_99_us,
            self.max_us,
        ]
    }
}

/// One second (about) of a run, from the load generator's `results.timeline`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TimelinePoint {
    /// Seconds since the producers started, at the end of the interval.
    pub elapsed_s: f64,
    /// `warm-up`, `measure` or `drain`.
    pub phase: String,
    pub produce_messages_per_s: f64,
    pub consume_messages_per_s: f64,
}

impl TimelinePoint {
    /// The points of a loadgen `timeline` array (entries without a time are skipped).
    pub fn from_loadgen(timeline: &Value) -> Vec<TimelinePoint> {
        let Some(samples) = timeline.as_array() else {
            return Vec::new();
        };
        samples
            .iter()
            .filter_map(|sample| {
                let rate = |name: &str| sample[name].as_f64().unwrap_or(0.0);
                Some(TimelinePoint {
                    elapsed_s: sample["elapsed_s"].as_f64()?,
                    phase: sample["phase"].as_str().unwrap_or("").to_string(),
                    produce_messages_per_s: rate("produce_messages_per_s"),
                    consume_messages_per_s: rate("consume_messages_per_s"),
                })
            })
            .collect()
    }
}

/// A run against a cluster: one started with `shardline cluster local`, or a peer's
/// (`kafka-cluster` in a replicated scenario; the result's `system` says which).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ClusterRun {
    /// The tuning profile of every broker (and the loadgen's `[client]` settings); empty
    /// for a peer's cluster.
    pub tuning_profile: String,
    /// The brokers, and the replication of the topic the harness created on them.
    pub spec: ClusterSpec,
    /// Shards of every shardline broker; 0 for a peer's cluster (no shards).
    pub cores_per_broker: usize,
    /// Where the loadgen connected: every broker's client address, comma separated.
    pub bootstrap: String,
    /// CPU seconds (user + system) of each broker during the load, in node order.
    pub node_cpu_s: Vec<f64>,
    /// CPU seconds of the load generator (its producers and consumers) during the load.
    pub loadgen_cpu_s: Option<f64>,
}

/// Everything measured in one (profile, run).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RunResult {
    /// The system driven: `shardline`, or a peer's loadgen `--system` (`kafka`, `nats`,
    /// `redis`; `kafka` for both Kafka peers).
    #[serde(default)]
    pub system: String,
    /// shardline: the tuning profile (`shardline-<profile>` in comparisons); a peer: its
    /// name.
    pub profile: String,
    /// The acks the loadgen asked for.
    #[serde(default)]
    pub acks: String,
    /// In a comparison: its durability class (`fsync`, `no-fsync`).
    #[serde(default)]
    pub durability: Option<String>,
    /// In a comparison: the settings by which this system meets the class.
    #[serde(default)]
    pub durability_setting: Option<String>,
    /// Why the run did not happen, when the system cannot meet the class.
    #[serde(default)]
    pub skipped: Option<String>,
    /// In a replicated scenario: the cluster the run went to (`profile` is then the
    /// cluster's label).
    #[serde(default)]
    pub cluster: Option<ClusterRun>,
    pub run: String,
    pub rate: String,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub topic: String,
    /// Measured, acknowledged messages per second.
    pub throughput_messages_per_s: f64,
    /// MB (10^6 bytes of values) per second.
    pub throughput_megabytes_per_s: f64,
    pub consume_messages_per_s: f64,
    pub produce_latency: Percentiles,
    pub end_to_end_latency: Percentiles,
    pub integrity_checked: bool,
    /// Nothing was consumed (Kafka's own ProducerPerformance): no end-to-end latency, no
    /// loss check, and success does not need one.
    #[serde(default)]
    pub produce_only: bool,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub produce_errors: u64,
    /// Broker CPU seconds (user + system) during this run (for phases sharing a broker:
    /// the difference between the readings before and after the phase; for a peer of
    /// several nodes, the sum over its nodes).
    pub broker_cpu_s: Option<f64>,
    /// The broker's peak RSS so far (VmHWM; for a peer of several nodes, the sum of each
    /// node's peak).
    pub broker_peak_rss_mib: Option<f64>,
    pub loadgen_exit_code: Option<i32>,
    /// Messages/s second by second (warm-up and drain included).
    #[serde(default)]
    pub timeline: Vec<TimelinePoint>,
    /// What went wrong, if anything (loadgen failure, broker exit status ...).
    pub errors: Vec<String>,
    /// Paths relative to the report directory.
    pub loadgen_json: String,
    pub produce_hgrm: String,
    pub end_to_end_hgrm: String,
    /// The load generator's whole JSON report.
    pub loadgen_report: Value,
}

impl RunResult {
    /// Whether the run happened and kept every promise (a skipped run did not fail).
    pub fn succeeded(&self) -> bool {
        self.skipped.is_none()
            && self.errors.is_empty()
            && self.loadgen_exit_code == Some(0)
            && (self.integrity_checked || self.produce_only)
            && self.lost == 0
            && self.duplicated == 0
            && self.out_of_order == 0
    }

    /// The lost/duplicated cell of the report tables.
    pub fn integrity_text(&self) -> String {
        if self.produce_only {
            "n/a: produce only".into()
        } else if self.integrity_checked {
            format!("{}/{}", self.lost, self.duplicated)
        } else {
            "unchecked".into()
        }
    }

    /// Fills the load generator's numbers from its JSON report.
    pub fn read_loadgen(&mut self, report: Value) {
        let results = &report["results"];
        let float = |name: &str| results[name].as_f64().unwrap_or(0.0);
        let count = |name: &str| results[name].as_u64().unwrap_or(0);
        self.throughput_messages_per_s = float("produce_messages_per_second");
        self.throughput_megabytes_per_s = float("produce_megabytes_per_second");
        self.consume_messages_per_s = float("consume_messages_per_second");
        self.produce_latency = Percentiles::from_loadgen(&results["produce_latency"]);
        self.end_to_end_latency = Percentiles::from_loadgen(&results["end_to_end_latency"]);
        self.integrity_checked = results["integrity_checked"].as_bool().unwrap_or(false);
        self.lost = count("lost");
        self.duplicated = count("duplicated");
        self.out_of_order = count("out_of_order");
        self.produce_errors = count("produce_errors");
        self.timeline = TimelinePoint::from_loadgen(&results["timeline"]);
        if let Some(errors) = results["errors"].as_array() {
            self.errors.extend(
                errors
                    .iter()
                    .filter_map(Value::as_str)
                    .map(|e| format!("loadgen: {e}")),
            );
        }
        self.loadgen_report = report;
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use serde_json::json;

    /// A loadgen JSON report with the given produce p50 (other numbers derived from it).
    pub fn loadgen_report(p50_us: u64) -> Value {
        let latency = json!({
            "count": 1000, "p50_us": p50_us, "p90_us": p50_us * 2, "p99_us": p50_us * 3,
            "p99_9_us": p50_us * 4, "p99_99_us": p50_us * 5, "max_us": p50_us * 6 + 1,
        });
        json!({"results": {
            "produce_messages_per_second": 19_876.4,
            "produce_megabytes_per_second": 20.353_433,
            "consume_messages_per_second": 19_870.0,
            "produce_latency": latency,
            "end_to_end_latency": latency,
            "integrity_checked": true,
            "lost": 0, "duplicated": 0, "out_of_order": 0, "produce_errors": 0,
            "errors": [],
            "timeline": [
                {"elapsed_s": 1.001, "phase": "warm-up", "seconds": 1.0,
                 "produce_messages_per_s": 19_000.0, "consume_messages_per_s": 18_000.0},
                {"elapsed_s": 2.002, "phase": "measure", "seconds": 1.0,
                 "produce_messages_per_s": 20_000.0, "consume_messages_per_s": 20_001.0},
                {"phase": "no time: skipped"},
            ],
        }})
    }

    pub fn run_result(profile: &str, run: &str, p50_us: u64) -> RunResult {
        let mut result = RunResult {
            system: "shardline".into(),
            profile: profile.into(),
            run: run.into(),
            rate: "20000".into(),
            warmup_s: 1.0,
            duration_s: 7.0,
            topic: "t".into(),
            broker_cpu_s: Some(3.456),
            broker_peak_rss_mib: Some(123.45),
            loadgen_exit_code: Some(0),
            loadgen_json: "runs/x/loadgen.json".into(),
            produce_hgrm: "runs/x/hdr/produce-ack.hgrm".into(),
            end_to_end_hgrm: "runs/x/hdr/end-to-end.hgrm".into(),
            ..RunResult::default()
        };
        result.read_loadgen(loadgen_report(p50_us));
        result
    }

    #[test]
    fn loadgen_numbers_are_read_into_the_result() {
        let result = run_result("latency", "rate-20000", 700);
        assert_eq!(result.produce_latency.p50_us, Some(700));
        assert_eq!(result.end_to_end_latency.max_us, Some(4201));
        assert_eq!(result.throughput_messages_per_s, 19_876.4);
        assert!(result.succeeded());
        let times: Vec<f64> = result.timeline.iter().map(|p| p.elapsed_s).collect();
        assert_eq!(times, [1.001, 2.002]);
        assert_eq!(result.timeline[1].phase, "measure");
        assert_eq!(result.timeline[1].consume_messages_per_s, 20_001.0);
    }

    #[test]
    fn a_latency_without_samples_has_no_percentiles() {
        let empty = Percentiles::from_loadgen(&json!({"count": 0}));
        assert_eq!(empty.in_order(), [None; 6]);
    }
}
