//! proptest strategies for valid values of every message.

use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;

use super::super::*;
use crate::constants::PARTITIONS_PER_TOPIC_MAX;

pub fn topic() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._-]{1,40}".prop_filter("reserved names", |name| name != "." && name != "..")
}

/// Printable text of at most `chars` characters (at most 4 bytes each).
fn text(chars: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("\\PC{{0,{chars}}}")).expect("valid regex")
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    select(ErrorCode::ALL.to_vec())
}

fn config_key() -> impl Strategy<Value = String> {
    "[a-z][a-z.]{0,30}"
}

fn config_entry() -> impl Strategy<Value = ConfigEntry> {
    (config_key(), text(20)).prop_map(|(key, value)| ConfigEntry { key, value })
}

fn api_ranges() -> impl Strategy<Value = Vec<ApiVersionRange>> {
    btree_map(any::<u16>(), (any::<u16>(), any::<u16>()), 0..12).prop_map(|ranges| {
        ranges
            .into_iter()
            .map(|(api_key, (a, b))| ApiVersionRange {
                api_key,
                min_version: a.min(b),
                max_version: a.max(b),
            })
            .collect()
    })
}

fn offset_spec() -> impl Strategy<Value = OffsetSpec> {
    prop_oneof![
        Just(OffsetSpec::Earliest),
        Just(OffsetSpec::Latest),
        any::<i64>().prop_map(OffsetSpec::Timestamp),
    ]
}

fn handshake_request() -> impl Strategy<Value = HandshakeRequest> {
    (text(30), text(16), api_ranges()).prop_map(|(client_id, version, supported)| {
        HandshakeRequest {
            client_id,
            client_software_version: version,
            supported,
        }
    })
}

fn produce_request() -> impl Strategy<Value = ProduceRequest> {
    let partition = (topic(), any::<u32>(), 80u32..400, any::<Option<u32>>()).prop_map(
        |(topic, partition, bytes, leader_epoch)| ProducePartition {
            topic,
            partition,
            batch_bytes: bytes,
            leader_epoch,
        },
    );
    (select(vec![-1i8, 0, 1]), any::<u32>(), vec(partition, 0..6)).prop_map(
        |(acks, timeout_ms, partitions)| ProduceRequest {
            acks,
            timeout_ms,
            partitions,
        },
    )
}

pub fn fetch_request() -> impl Strategy<Value = FetchRequest> {
    let partition = (
        topic(),
        any::<u32>(),
        any::<u64>(),
        any::<u32>(),
        any::<Option<u32>>(),
    )
        .prop_map(
            |(topic, partition, fetch_offset, partition_max_bytes, leader_epoch)| FetchPartition {
                topic,
                partition,
                fetch_offset,
                partition_max_bytes,
                leader_epoch,
            },
        );
    let forgotten = (topic(), any::<u32>())
        .prop_map(|(topic, partition)| ForgottenPartition { topic, partition });
    (
        any::<[u32; 3]>(),
        vec(partition, 0..6),
        any::<(u32, u32)>(),
        vec(forgotten, 0..3),
    )
        .prop_map(
            |([wait, min, max], partitions, (session_id, session_epoch), forgotten)| FetchRequest {
                max_wait_ms: wait,
                min_bytes: min,
                max_bytes: max,
                isolation: IsolationLevel::HighWatermark,
                partitions,
                session_id,
                session_epoch,
                forgotten,
            },
        )
}

fn create_topics_request() -> impl Strategy<Value = CreateTopicsRequest> {
    let topic = (
        topic(),
        1..=PARTITIONS_PER_TOPIC_MAX as u32,
        0u16..=16,
        vec(config_entry(), 0..4),
    )
        .prop_map(
            |(name, partitions, replication_factor, configs)| CreatableTopic {
                name,
                partitions,
                replication_factor,
                configs,
            },
        );
    (vec(topic, 0..5), any::<bool>(), any::<u32>()).prop_map(
        |(topics, validate_only, timeout_ms)| CreateTopicsRequest {
            topics,
            validate_only,
            timeout_ms,
        },
    )
}

fn alter_configs_request() -> impl Strategy<Value = AlterConfigsRequest> {
    let topic = (topic(), vec(config_entry(), 0..4), vec(config_key(), 0..4))
        .prop_map(|(name, set, delete)| AlterTopicConfigs { name, set, delete });
    (vec(topic, 0..4), any::<bool>()).prop_map(|(topics, validate_only)| AlterConfigsRequest {
        topics,
        validate_only,
    })
}

pub fn request() -> impl Strategy<Value = Request> {
    prop_oneof![base_request(), super::group_strategies::group_request()]
}

fn base_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        handshake_request().prop_map(Request::from),
        option::of(vec(topic(), 0..6)).prop_map(|topics| Request::from(MetadataRequest { topics })),
        produce_request().prop_map(Request::from),
        fetch_request().prop_map(Request::from),
        vec(
            (topic(), any::<u32>(), offset_spec()).prop_map(|(topic, partition, spec)| {
                ListOffsetsPartition {
                    topic,
                    partition,
                    spec,
                }
            }),
            0..6
        )
        .prop_map(|partitions| Request::from(ListOffsetsRequest { partitions })),
        create_topics_request().prop_map(Request::from),
        (vec(topic(), 0..6), any::<u32>()).prop_map(|(names, timeout_ms)| Request::from(
            DeleteTopicsRequest { names, timeout_ms }
        )),
        vec(topic(), 0..6).prop_map(|topics| Request::from(DescribeConfigsRequest { topics })),
        alter_configs_request().prop_map(Request::from),
        text(40).prop_map(|client_id| Request::from(InitProducerIdRequest { client_id })),
    ]
}

fn metadata_response() -> impl Strategy<Value = MetadataResponse> {
    let broker = (
        any::<u32>(),
        "[a-z0-9.-]{1,30}",
        any::<u16>(),
        vec(any::<u16>(), 0..4),
    )
        .prop_map(|(broker_id, host, port, shard_ports)| BrokerMetadata {
            broker_id,
            host,
            port,
            shard_ports,
        });
    let partition = (
        any::<u32>(),
        error_code(),
        option::of(any::<u32>()),
        any::<u16>(),
        any::<u32>(),
        vec(any::<u32>(), 0..4),
        vec(any::<u32>(), 0..4),
    )
        .prop_map(
            |(partition, error, leader_broker, shard, leader_epoch, replicas, isr)| {
                PartitionMetadata {
                    partition,
                    error,
                    leader_broker,
                    shard,
                    leader_epoch,
                    replicas,
                    in_sync_replicas: isr,
                }
            },
        );
    let topic = (
        topic(),
        error_code(),
        vec(partition, 0..5),
        vec(config_entry(), 0..3),
    )
        .prop_map(|(name, error, partitions, configs)| TopicMetadata {
            name,
            error,
            partitions,
            configs,
        });
    (vec(broker, 0..4), any::<u16>(), vec(topic, 0..4)).prop_map(
        |(brokers, shard_count, topics)| MetadataResponse {
            brokers,
            shard_count,
            topics,
        },
    )
}

fn produce_response() -> impl Strategy<Value = ProduceResponse> {
    let partition = (
        topic(),
        any::<u32>(),
        error_code(),
        any::<u64>(),
        any::<i64>(),
        any::<u64>(),
        text(40),
    )
        .prop_map(
            |(topic, partition, error, base_offset, append_ms, log_start_offset, message)| {
                ProducePartitionResponse {
                    topic,
                    partition,
                    error,
                    base_offset,
                    log_append_time_ms: append_ms,
                    log_start_offset,
                    message,
                }
            },
        );
    (vec(partition, 0..6), any::<u32>()).prop_map(|(partitions, throttle_ms)| ProduceResponse {
        partitions,
        throttle_ms,
    })
}

pub fn fetch_response() -> impl Strategy<Value = FetchResponse> {
    let partition = (
        topic(),
        any::<u32>(),
        error_code(),
        any::<[u64; 3]>(),
        0u32..300,
    )
        .prop_map(
            |(topic, partition, error, [high, start, stable], batch_bytes)| {
                FetchPartitionResponse {
                    topic,
                    partition,
                    error,
                    high_watermark: high,
                    log_start_offset: start,
                    last_stable_offset: stable,
                    batch_bytes,
                }
            },
        );
    (
        any::<u32>(),
        vec(partition, 0..6),
        error_code(),
        any::<u32>(),
    )
        .prop_map(
            |(throttle_ms, partitions, error, session_id)| FetchResponse {
                throttle_ms,
                partitions,
                error,
                session_id,
            },
        )
}

fn list_offsets_response() -> impl Strategy<Value = ListOffsetsResponse> {
    let partition = (
        topic(),
        any::<u32>(),
        error_code(),
        any::<u64>(),
        any::<i64>(),
    )
        .prop_map(|(topic, partition, error, offset, timestamp_ms)| {
            ListOffsetsPartitionResponse {
                topic,
                partition,
                error,
                offset,
                timestamp_ms,
            }
        });
    vec(partition, 0..6).prop_map(|partitions| ListOffsetsResponse { partitions })
}

fn describe_configs_response() -> impl Strategy<Value = DescribeConfigsResponse> {
    let entry = (config_key(), text(20), any::<bool>()).prop_map(|(key, value, is_default)| {
        DescribedConfigEntry {
            key,
            value,
            is_default,
        }
    });
    let topic = (topic(), error_code(), vec(entry, 0..4)).prop_map(|(topic, error, entries)| {
        TopicConfigs {
            topic,
            error,
            entries,
        }
    });
    vec(topic, 0..4).prop_map(|topics| DescribeConfigsResponse { topics })
}

pub fn response() -> impl Strategy<Value = Response> {
    prop_oneof![base_response(), super::group_strategies::group_response()]
}

fn base_response() -> impl Strategy<Value = Response> {
    let result = || (topic(), error_code(), text(40));
    prop_oneof![
        (error_code(), any::<u32>(), api_ranges()).prop_map(|(error, broker_id, supported)| {
            Response::from(HandshakeResponse {
                error,
                broker_id,
                supported,
            })
        }),
        metadata_response().prop_map(Response::from),
        produce_response().prop_map(Response::from),
        fetch_response().prop_map(Response::from),
        list_offsets_response().prop_map(Response::from),
        vec(
            result().prop_map(|(name, error, message)| CreateTopicResult {
                name,
                error,
                message
            }),
            0..5
        )
        .prop_map(|topics| Response::from(CreateTopicsResponse { topics })),
        vec(
            result().prop_map(|(name, error, message)| DeleteTopicResult {
                name,
                error,
                message
            }),
            0..5
        )
        .prop_map(|topics| Response::from(DeleteTopicsResponse { topics })),
        describe_configs_response().prop_map(Response::from),
        vec(
            result().prop_map(|(topic, error, message)| AlterConfigsResult {
                topic,
                error,
                message
            }),
            0..5
        )
        .prop_map(|topics| Response::from(AlterConfigsResponse { topics })),
        (error_code(), text(60))
            .prop_map(|(error, message)| Response::from(ErrorResponse { error, message })),
        (error_code(), text(60), any::<i64>(), any::<i16>()).prop_map(
            |(error, message, producer_id, producer_epoch)| Response::from(
                InitProducerIdResponse {
                    error,
                    message,
                    producer_id,
                    producer_epoch
                }
            )
        ),
    ]
}
