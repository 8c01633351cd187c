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

/// The Prometheus text exposition of every shard's numbers.
pub fn encode(shards: &[ShardStats]) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("shardline");
    let shard = |s: &ShardStats| ShardLabels {
        shard: s.shard.to_string(),
    };
    gauges(
        &mut registry,
        "shard_open_connections",
        "Client connections open on the shard",
        shards
            .iter()
            .map(|s| (shard(s), to_i64(s.open_connections))),
    );
    gauges(
        &mut registry,
        "shard_requests_in_flight",
        "Requests the shard is handling",
        shards
            .iter()
            .map(|s| (shard(s), to_i64(s.requests_in_flight))),
    );
    gauges(
        &mut registry,
        "shard_cache_bytes",
        "Bytes in the shard's cache of recent batches",
        shards.iter().map(|s| (shard(s), to_i64(s.cache_bytes))),
    );
    gauges(
        &mut registry,
        "shard_open_files",
        "Segment files the shard holds open",
        shards.iter().map(|s| (shard(s), to_i64(s.open_files))),
    );
    gauges(
        &mut registry,
        "shard_partitions",
        "Partitions the shard has open",
        shards
            .iter()
            .map(|s| (shard(s), to_i64(s.partitions.len()))),
    );

    let partitions: Vec<(PartitionLabels, &PartitionStats)> = shards
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
    let each = |f: fn(&PartitionStats) -> u64| {
        partitions
            .iter()
            .map(move |(labels, p)| (labels.clone(), f(p)))
    };
    counters(
        &mut registry,
        "partition_messages_appended",
        "Messages appended to the partition (its log end offset)",
        each(|p| p.log_end_offset),
    );
    gauges(
        &mut registry,
        "partition_log_start_offset",
        "The first offset still in the partition",
        each(|p| p.log_start_offset).map(|(l, v)| (l, to_i64(v))),
    );
    gauges(
        &mut registry,
        "partition_high_watermark",
        "The offset below which consumers may read",
        each(|p| p.high_watermark).map(|(l, v)| (l, to_i64(v))),
    );
    gauges(
        &mut registry,
        "partition_size_bytes",
        "Bytes of the partition's segments",
        each(|p| p.size_bytes).map(|(l, v)| (l, to_i64(v))),
    );
    counters(
        &mut registry,
        "partition_writes",
        "Direct-IO writes issued",
        each(|p| p.writes),
    );
    counters(
        &mut registry,
        "partition_written_bytes",
        "Bytes written to segment files",
        each(|p| p.bytes_written),
    );
    counters(
        &mut registry,
        "partition_syncs",
        "fdatasyncs issued",
        each(|p| p.syncs),
    );
    counters(
        &mut registry,
        "partition_flush_rounds",
        "Flush rounds that wrote at least one batch",
        each(|p| p.write_rounds),
    );
    counters(
        &mut registry,
        "partition_slow_flush_rounds",
        "Flush rounds slower than the watchdog's threshold",
        each(|p| p.slow_flush_rounds),
    );
    counters(
        &mut registry,
        "partition_segments_rolled",
        "Segments rolled",
        each(|p| p.segments_rolled),
    );
    gauges(
        &mut registry,
        "partition_producers",
        "Idempotent producers the partition remembers",
        each(|p| p.producers as u64).map(|(l, v)| (l, to_i64(v))),
    );
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
