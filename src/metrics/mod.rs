//! Metrics: what each shard reports about itself and its partitions, and their encoding in
//! the Prometheus text format (through `prometheus-client`). The numbers are gathered at
//! scrape time from the shards (plain data, no shared counters on the produce path); the
//! server serves them over HTTP (`server::metrics`).
//!
//! Names follow Prometheus conventions: `shardline_` prefix, base units, `_total` on
//! counters. Histograms (`histogram`) are recorded by each shard without locks and sent
//! as snapshots.

pub mod histogram;

use prometheus_client::encoding::{EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// One partition, as its owning shard sees it at scrape time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionStats {
    pub topic: String,
    pub partition: u32,
    pub log_start_offset: u64,
    pub log_end_offset: u64,
    pub high_watermark: u64,
    pub size_bytes: u64,
    pub writes: u64,
    pub bytes_written: u64,
    pub syncs: u64,
    pub write_rounds: u64,
    pub slow_flush_rounds: u64,
    pub segments_rolled: u64,
    pub producers: usize,
    /// Appended bytes not yet written to the segment file.
    pub pending_bytes: usize,
    pub traffic: PartitionTraffic,
    /// Set when this shard leads the partition.
    pub leader: Option<LeaderStats>,
}

/// What clients asked of one partition on this shard (counted since the broker started).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartitionTraffic {
    pub produce_requests: u64,
    pub produce_messages: u64,
    pub produce_bytes: u64,
    pub fetch_requests: u64,
    pub fetch_messages: u64,
    pub fetch_bytes: u64,
}

/// A partition this shard leads: its replicas as the leader sees them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderStats {
    pub replicas: usize,
    pub in_sync: usize,
    pub min_in_sync: usize,
    /// Each follower and how many messages it is behind the leader's log end.
    pub follower_lag: Vec<(u32, u64)>,
}

/// Responses one entity's quota delayed on this shard.
#[derive(Debug, Clone, PartialEq)]
pub struct Throttling {
    pub entity: String,
    pub direction: &'static str,
    pub responses: u64,
    pub waited_seconds: f64,
}

/// A committed offset of a group this shard coordinates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOffset {
    pub group: String,
    pub topic: String,
    pub partition: u32,
    pub committed: u64,
}

/// One shard at scrape time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShardStats {
    pub shard: usize,
    pub open_connections: usize,
    pub requests_in_flight: usize,
    pub cache_bytes: usize,
    pub open_files: usize,
    pub partitions: Vec<PartitionStats>,
    /// Request latency by api name, from the request's arrival to its encoded response.
    pub request_latency: Vec<(&'static str, histogram::HistogramSnapshot)>,
    /// Write, fdatasync and flush-round measurements of the shard's logs.
    pub io: Option<crate::log::LogShardSnapshot>,
    pub connections_accepted: u64,
    /// Connections closed at once: the shard was stopping or at its connection limit.
    pub connections_refused: u64,
    /// Times the reactor watchdog interrupted the shard's sleep (its timers were late).
    pub reactor_nudges: u64,
    /// Connections closed because their TLS handshake failed (or timed out).
    pub tls_handshakes_failed: u64,
    /// SCRAM exchanges that failed (wrong password, unknown user, bad message).
    pub authentications_failed: u64,
    pub throttling: Vec<Throttling>,
    pub group_offsets: Vec<GroupOffset>,
}

/// What the broker as a whole reports (gathered on the controller shard at scrape time).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerStats {
    pub resident_bytes: u64,
    /// The io memory glommio was given, over every shard.
    pub io_memory_bytes: u64,
    /// From this broker's catalogue: partitions with fewer in-sync replicas than replicas,
    /// and partitions without a live leader.
    pub under_replicated_partitions: u64,
    pub offline_partitions: u64,
    /// (group, topic, partition, lag in messages) for the groups this broker coordinates.
    pub group_lag: Vec<(String, String, u32, u64)>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShardLabels {
    shard: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NoLabels {}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicaLabels {
    topic: String,
    partition: String,
    replica: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ThrottleLabels {
    shard: String,
    entity: String,
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    group: String,
    topic: String,
    partition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    topic: String,
    partition: String,
}

fn to_i64(value: impl TryInto<i64>) -> i64 {
    value.try_into().unwrap_or(i64::MAX)
}

/// Registers a gauge family and sets it from `values`.
fn gauges<
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    values: impl Iterator<Item = (L, i64)>,
) {
    let family = Family::<L, Gauge>::default();
    for (labels, value) in values {
        family.get_or_create(&labels).set(value);
    }
    registry.register(name, help, family);
}

/// Registers a counter family and sets it from `values` (totals kept by the shards).
fn counters<
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    values: impl Iterator<Item = (L, u64)>,
) {
    let family = Family::<L, Counter>::default();
    for (labels, value) in values {
        family.get_or_create(&labels).inc_by(value);
    }
    registry.register(name, help, family);
}

/// A metric read off a shard or a partition: name (after the `shardline_` prefix), help,
/// and how to read it.
type Reading<T> = (&'static str, &'static str, fn(&T) -> u64);

const SHARD_GAUGES: [Reading<ShardStats>; 5] = [
    (
        "shard_open_connections",
        "Client connections open on the shard",
        |s| s.open_connections as u64,
    ),
    (
        "shard_requests_in_flight",
        "Requests the shard is handling",
        |s| s.requests_in_flight as u64,
    ),
    (
        "shard_cache_bytes",
        "Bytes in the shard's cache of recent batches",
        |s| s.cache_bytes as u64,
    ),
    (
        "shard_open_files",
        "Segment files the shard holds open",
        |s| s.open_files as u64,
    ),
    ("shard_partitions", "Partitions the shard has open", |s| {
        s.partitions.len() as u64
    }),
];

const SHARD_COUNTERS: [Reading<ShardStats>; 13] = [
    (
        "shard_reactor_nudges",
        "Times the watchdog interrupted the shard's sleeping reactor because its timers were late",
        |s| s.reactor_nudges,
    ),
    (
        "shard_flush_rounds",
        "Shard-wide flush rounds started (partitions due together flush in one)",
        |s| s.io.as_ref().map_or(0, |io| io.flush_rounds),
    ),
    (
        "shard_flush_round_members",
        "Partition flushes held by the shard-wide flush rounds, over all rounds",
        |s| s.io.as_ref().map_or(0, |io| io.flush_round_members),
    ),
    (
        "shard_journal_commits",
        "Shard journal blocks written and fdatasynced (each made many partitions' batches durable)",
        |s| s.io.as_ref().map_or(0, |io| io.journal.commits),
    ),
    (
        "shard_journal_bytes",
        "Bytes written to the shard journal",
        |s| s.io.as_ref().map_or(0, |io| io.journal.bytes),
    ),
    (
        "shard_journal_checkpoints",
        "Shard journal checkpoints (segments synced, journal space freed)",
        |s| s.io.as_ref().map_or(0, |io| io.journal.checkpoints),
    ),
    (
        "shard_journal_waits_for_room",
        "Shard journal commits that waited for a checkpoint to free room in the ring",
        |s| s.io.as_ref().map_or(0, |io| io.journal.waits_for_room),
    ),
    (
        "shard_authentications_failed",
        "SCRAM exchanges that failed (a wrong password, an unknown user, a bad message)",
        |s| s.authentications_failed,
    ),
    (
        "shard_tls_handshakes_failed",
        "Client connections closed because their TLS handshake failed or timed out",
        |s| s.tls_handshakes_failed,
    ),
    (
        "shard_connections_accepted",
        "Client connections the shard accepted",
        |s| s.connections_accepted,
    ),
    (
        "shard_connections_refused",
        "Client connections the shard closed at once (stopping, or at its connection limit)",
        |s| s.connections_refused,
    ),
    (
        "shard_cache_hits",
        "Reads served from memory (unwritten batches or the recent-batch cache)",
        |s| s.io.as_ref().map_or(0, |io| io.cache_hits),
    ),
    (
        "shard_cache_misses",
        "Reads that went to a segment file",
        |s| s.io.as_ref().map_or(0, |io| io.cache_misses),
    ),
];

const PARTITION_GAUGES: [Reading<PartitionStats>; 5] = [
    (
        "partition_log_start_offset",
        "The first offset still in the partition",
        |p| p.log_start_offset,
    ),
    (
        "partition_high_watermark",
        "The offset below which consumers may read",
        |p| p.high_watermark,
    ),
    (
        "partition_size_bytes",
        "Bytes of the partition's segments",
        |p| p.size_bytes,
    ),
    (
        "partition_producers",
        "Idempotent producers the partition remembers",
        |p| p.producers as u64,
    ),
    (
        "partition_pending_bytes",
        "Appended bytes not yet written to the segment file",
        |p| p.pending_bytes as u64,
    ),
];

const PARTITION_COUNTERS: [Reading<PartitionStats>; 13] = [
    (
        "partition_messages_appended",
        "Messages appended to the partition (its log end offset)",
        |p| p.log_end_offset,
    ),
    ("partition_writes", "Direct-IO writes issued", |p| p.writes),
    (
        "partition_written_bytes",
        "Bytes written to segment files",
        |p| p.bytes_written,
    ),
    ("partition_syncs", "fdatasyncs issued", |p| p.syncs),
    (
        "partition_flush_rounds",
        "Flush rounds that wrote at least one batch",
        |p| p.write_rounds,
    ),
    (
        "partition_slow_flush_rounds",
        "Flush rounds slower than the watchdog's threshold",
        |p| p.slow_flush_rounds,
    ),
    ("partition_segments_rolled", "Segments rolled", |p| {
        p.segments_rolled
    }),
    (
        "partition_produce_requests",
        "Produce requests for the partition (each partition of a request counts once)",
        |p| p.traffic.produce_requests,
    ),
    (
        "partition_produce_messages",
        "Messages produced to the partition and appended",
        |p| p.traffic.produce_messages,
    ),
    (
        "partition_produce_bytes",
        "Batch bytes produced to the partition and appended",
        |p| p.traffic.produce_bytes,
    ),
    (
        "partition_fetch_requests",
        "Client fetches that returned batches of the partition (each partition of a request counts once; a fetch that found nothing new does not count)",
        |p| p.traffic.fetch_requests,
    ),
    (
        "partition_fetch_messages",
        "Messages in the batches fetched from the partition by clients",
        |p| p.traffic.fetch_messages,
    ),
    (
        "partition_fetch_bytes",
        "Batch bytes fetched from the partition by clients",
        |p| p.traffic.fetch_bytes,
    ),
];

const LEADER_GAUGES: [Reading<LeaderStats>; 4] = [
    (
        "partition_replicas",
        "Replicas of a partition this broker leads",
        |l| l.replicas as u64,
    ),
    (
        "partition_in_sync_replicas",
        "In-sync replicas of a partition this broker leads",
        |l| l.in_sync as u64,
    ),
    (
        "partition_under_replicated",
        "1 when a partition this broker leads has fewer in-sync replicas than replicas",
        |l| u64::from(l.in_sync < l.replicas),
    ),
    (
        "partition_under_min_in_sync",
        "1 when a partition this broker leads has fewer in-sync replicas than min.insync.replicas (acks=all writes are refused)",
        |l| u64::from(l.in_sync < l.min_in_sync),
    ),
];

const BROKER_GAUGES: [Reading<BrokerStats>; 4] = [
    (
        "resident_memory_bytes",
        "Resident memory of the broker process",
        |b| b.resident_bytes,
    ),
    (
        "io_memory_bytes",
        "Registered io memory given to the shards' io_uring rings, over all shards",
        |b| b.io_memory_bytes,
    ),
    (
        "cluster_under_replicated_partitions",
        "Partitions with fewer in-sync replicas than replicas (this broker's catalogue)",
        |b| b.under_replicated_partitions,
    ),
    (
        "cluster_offline_partitions",
        "Partitions without a live leader (this broker's catalogue)",
        |b| b.offline_partitions,
    ),
];

/// Histograms of one metric, one series per label set.
#[derive(Debug)]
struct Histograms {
    name: &'static str,
    help: &'static str,
    unit: prometheus_client::registry::Unit,
    series: Vec<(Vec<(String, String)>, histogram::HistogramSnapshot)>,
}

impl prometheus_client::collector::Collector for Histograms {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        let mut metric = encoder.encode_descriptor(
            self.name,
            self.help,
            Some(&self.unit),
            prometheus_client::metrics::MetricType::Histogram,
        )?;
        for (labels, snapshot) in &self.series {
            metric
                .encode_family(labels)?
                .encode_histogram::<NoLabelSet>(
                    snapshot.sum_in_base_units(),
                    snapshot.count(),
                    &snapshot.buckets(),
                    None,
                )?;
        }
        Ok(())
    }
}

fn shard_series(
    shards: &[ShardStats],
    read: impl Fn(&ShardStats) -> Option<histogram::HistogramSnapshot>,
) -> Vec<(Vec<(String, String)>, histogram::HistogramSnapshot)> {
    shards
        .iter()
        .filter_map(|s| Some((vec![("shard".to_string(), s.shard.to_string())], read(s)?)))
        .collect()
}

/// The Prometheus text exposition of the broker's and every shard's numbers.
pub fn encode(broker: &BrokerStats, shards: &[ShardStats]) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("shardline");
    let shard_labels: Vec<(ShardLabels, &ShardStats)> = shards
        .iter()
        .map(|s| {
            let labels = ShardLabels {
                shard: s.shard.to_string(),
            };
            (labels, s)
        })
        .collect();
    let partition_labels: Vec<(PartitionLabels, &PartitionStats)> = shards
        .iter()
        .flat_map(|s| s.partitions.iter())
        .map(|p| {
            let labels = PartitionLabels {
                topic: p.topic.clone(),
                partition: p.partition.to_string(),
            };
            (labels, p)
        })
        .collect();
    for (name, help, read) in BROKER_GAUGES {
        let values = std::iter::once((NoLabels {}, to_i64(read(broker))));
        gauges(&mut registry, name, help, values);
    }
    for (name, help, read) in SHARD_GAUGES {
        let values = shard_labels
            .iter()
            .map(|(l, s)| (l.clone(), to_i64(read(s))));
        gauges(&mut registry, name, help, values);
    }
    for (name, help, read) in SHARD_COUNTERS {
        let values = shard_labels.iter().map(|(l, s)| (l.clone(), read(s)));
        counters(&mut registry, name, help, values);
    }
    for (name, help, read) in PARTITION_GAUGES {
        let values = partition_labels
            .iter()
            .map(|(l, p)| (l.clone(), to_i64(read(p))));
        gauges(&mut registry, name, help, values);
    }
    for (name, help, read) in PARTITION_COUNTERS {
        let values = partition_labels.iter().map(|(l, p)| (l.clone(), read(p)));
        counters(&mut registry, name, help, values);
    }
    for (name, help, read) in LEADER_GAUGES {
        let values = partition_labels
            .iter()
            .filter_map(|(l, p)| Some((l.clone(), to_i64(read(p.leader.as_ref()?)))));
        gauges(&mut registry, name, help, values);
    }
    let follower_lag = partition_labels.iter().flat_map(|(l, p)| {
        p.leader.iter().flat_map(move |leader| {
            leader.follower_lag.iter().map(move |&(replica, lag)| {
                let labels = ReplicaLabels {
                    topic: l.topic.clone(),
                    partition: l.partition.clone(),
                    replica: replica.to_string(),
                };
                (labels, to_i64(lag))
            })
        })
    });
    gauges(
        &mut registry,
        "partition_follower_lag_messages",
        "Messages a follower is behind the leader's log end (on the leader)",
        follower_lag,
    );
    let group_labels = |group: &str, topic: &str, partition: u32| GroupLabels {
        group: group.to_string(),
        topic: topic.to_string(),
        partition: partition.to_string(),
    };
    let committed = shards.iter().flat_map(|s| s.group_offsets.iter()).map(|g| {
        let labels = group_labels(&g.group, &g.topic, g.partition);
        (labels, to_i64(g.committed))
    });
    gauges(
        &mut registry,
        "group_committed_offset",
        "A consumer group's committed offset (on its coordinator)",
        committed,
    );
    let lag = broker
        .group_lag
        .iter()
        .map(|(group, topic, partition, lag)| {
            (group_labels(group, topic, *partition), to_i64(*lag))
        });
    gauges(
        &mut registry,
        "group_lag_messages",
        "Messages between a group's committed offset and the partition's high watermark (on the group's coordinator)",
        lag,
    );
    let throttle_labels = |s: &ShardStats, t: &Throttling| ThrottleLabels {
        shard: s.shard.to_string(),
        entity: t.entity.clone(),
        direction: t.direction.to_string(),
    };
    let delayed = shards.iter().flat_map(|s| {
        s.throttling
            .iter()
            .map(move |t| (throttle_labels(s, t), t.responses))
    });
    counters(
        &mut registry,
        "quota_throttled_responses",
        "Responses delayed for a produce or fetch quota",
        delayed,
    );
    let waited = Family::<ThrottleLabels, Counter<f64, std::sync::atomic::AtomicU64>>::default();
    for s in shards {
        for t in &s.throttling {
            waited
                .get_or_create(&throttle_labels(s, t))
                .inc_by(t.waited_seconds);
        }
    }
    registry.register(
        "quota_throttle_seconds",
        "Time responses waited for a produce or fetch quota",
        waited,
    );
    registry.register_collector(Box::new(Histograms {
        name: "request_latency",
        help: "From a request's arrival to its encoded response, by api",
        unit: prometheus_client::registry::Unit::Seconds,
        series: shards
            .iter()
            .flat_map(|s| {
                s.request_latency.iter().map(|(api, snapshot)| {
                    let labels = vec![
                        ("shard".to_string(), s.shard.to_string()),
                        ("api".to_string(), api.to_string()),
                    ];
                    (labels, snapshot.clone())
                })
            })
            .collect(),
    }));
    let io_histograms: [(&str, &str, prometheus_client::registry::Unit, IoRead); 3] = [
        (
            "log_write_latency",
            "How long a flush round's segment writes took",
            prometheus_client::registry::Unit::Seconds,
            |io| io.write_latency.clone(),
        ),
        (
            "log_sync_latency",
            "How long an fdatasync of a segment took",
            prometheus_client::registry::Unit::Seconds,
            |io| io.sync_latency.clone(),
        ),
        (
            "log_flush_round",
            "Bytes written by one flush round of a partition",
            prometheus_client::registry::Unit::Bytes,
            |io| io.flush_round_bytes.clone(),
        ),
    ];
    for (name, help, unit, read) in io_histograms {
        registry.register_collector(Box::new(Histograms {
            name,
            help,
            unit,
            series: shard_series(shards, |s| s.io.as_ref().map(read)),
        }));
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

type IoRead = fn(&crate::log::LogShardSnapshot) -> histogram::HistogramSnapshot;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_and_partitions_are_encoded_with_labels_and_totals() {
        let shards = vec![
            ShardStats {
                shard: 0,
                open_connections: 3,
                partitions: vec![PartitionStats {
                    topic: "orders".into(),
                    partition: 1,
                    log_end_offset: 42,
                    syncs: 7,
                    ..PartitionStats::default()
                }],
                ..ShardStats::default()
            },
            ShardStats {
                shard: 1,
                ..ShardStats::default()
            },
        ];
        let text = encode(&BrokerStats::default(), &shards).unwrap();
        assert!(
            text.contains("shardline_shard_open_connections{shard=\"0\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("shardline_shard_open_connections{shard=\"1\"} 0"),
            "{text}"
        );
        assert!(
            text.contains(
                "shardline_partition_messages_appended_total{topic=\"orders\",partition=\"1\"} 42"
            ),
            "{text}"
        );
        assert!(
            text.contains("shardline_partition_syncs_total{topic=\"orders\",partition=\"1\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE shardline_partition_syncs counter"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    /// A shard and a broker with one of everything.
    fn sample() -> (BrokerStats, Vec<ShardStats>) {
        let latency = histogram::Histogram::latency();
        latency.record(40);
        latency.record(3_000);
        let shards = vec![ShardStats {
            shard: 0,
            request_latency: vec![("Produce", latency.snapshot())],
            partitions: vec![PartitionStats {
                topic: "orders".into(),
                partition: 0,
                traffic: PartitionTraffic {
                    produce_messages: 9,
                    fetch_bytes: 100,
                    ..PartitionTraffic::default()
                },
                leader: Some(LeaderStats {
                    replicas: 3,
                    in_sync: 2,
                    min_in_sync: 2,
                    follower_lag: vec![(2, 17)],
                }),
                ..PartitionStats::default()
            }],
            group_offsets: vec![GroupOffset {
                group: "g".into(),
                topic: "orders".into(),
                partition: 0,
                committed: 5,
            }],
            io: Some(crate::log::LogShard::new(Default::default()).metrics()),
            ..ShardStats::default()
        }];
        let broker = BrokerStats {
            resident_bytes: 1 << 20,
            offline_partitions: 1,
            group_lag: vec![("g".into(), "orders".into(), 0, 4)],
            ..BrokerStats::default()
        };
        (broker, shards)
    }

    #[test]
    fn histograms_leaders_groups_and_the_broker_are_encoded() {
        let (broker, shards) = sample();
        let text = encode(&broker, &shards).unwrap();
        for expected in [
            "# TYPE shardline_request_latency_seconds histogram",
            "shardline_request_latency_seconds_bucket{le=\"0.00005\",shard=\"0\",api=\"Produce\"} 1",
            "shardline_request_latency_seconds_bucket{le=\"0.005\",shard=\"0\",api=\"Produce\"} 2",
            "shardline_request_latency_seconds_count{shard=\"0\",api=\"Produce\"} 2",
            "shardline_partition_produce_messages_total{topic=\"orders\",partition=\"0\"} 9",
            "shardline_partition_fetch_bytes_total{topic=\"orders\",partition=\"0\"} 100",
            "shardline_partition_under_replicated{topic=\"orders\",partition=\"0\"} 1",
            "shardline_partition_under_min_in_sync{topic=\"orders\",partition=\"0\"} 0",
            "shardline_partition_follower_lag_messages{topic=\"orders\",partition=\"0\",replica=\"2\"} 17",
            "shardline_group_committed_offset{group=\"g\",topic=\"orders\",partition=\"0\"} 5",
            "shardline_group_lag_messages{group=\"g\",topic=\"orders\",partition=\"0\"} 4",
            "shardline_resident_memory_bytes 1048576",
            "shardline_cluster_offline_partitions 1",
        ] {
            assert!(text.contains(expected), "missing {expected}:\n{text}");
        }
    }

    /// Every series the Grafana dashboard queries is one the encoder writes.
    #[test]
    fn the_dashboard_queries_only_metrics_that_exist() {
        let dashboard = include_str!("../../deploy/grafana/shardline.json");
        let (broker, shards) = sample();
        let text = encode(&broker, &shards).unwrap();
        let mut series: Vec<String> = Vec::new();
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let mut words = line.split(' ').skip(2);
            let (name, kind) = (words.next().unwrap(), words.next().unwrap());
            match kind {
                "counter" => series.push(format!("{name}_total")),
                "histogram" => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        series.push(format!("{name}{suffix}"));
                    }
                }
                _ => series.push(name.to_string()),
            }
        }
        let mut queried = 0;
        for (start, _) in dashboard.match_indices("shardline_") {
            let name: String = dashboard[start..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            queried += 1;
            assert!(
                series.contains(&name),
                "the dashboard queries {name}, which is not exported: {series:?}"
            );
        }
        assert!(queried > 20, "{queried}");
    }
}
