//! Metrics: what each shard reports about itself and its partitions, and their encoding in
//! the Prometheus text format (through `prometheus-client`). The numbers are gathered at
//! scrape time from the shards (plain data, no shared counters on the produce path); the
//! server serves them over HTTP (`server::metrics`).
//!
//! Names follow Prometheus conventions: `shardline_` prefix, base units, `_total` on
//! counters.

use prometheus_client::encoding::EncodeLabelSet;
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
}

/// One shard at scrape time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardStats {
    pub shard: usize,
    pub open_connections: usize,
    pub requests_in_flight: usize,
    pub cache_bytes: usize,
    pub open_files: usize,
    pub partitions: Vec<PartitionStats>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShardLabels {
    shard: String,
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

const PARTITION_GAUGES: [Reading<PartitionStats>; 4] = [
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
];

const PARTITION_COUNTERS: [Reading<PartitionStats>; 7] = [
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
];

/// The Prometheus text exposition of every shard's numbers.
pub fn encode(shards: &[ShardStats]) -> Result<String, std::fmt::Error> {
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
    for (name, help, read) in SHARD_GAUGES {
        let values = shard_labels
            .iter()
            .map(|(l, s)| (l.clone(), to_i64(read(s))));
        gauges(&mut registry, name, help, values);
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
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

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
        let text = encode(&shards).unwrap();
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
}
