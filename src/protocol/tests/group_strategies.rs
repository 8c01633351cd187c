//! proptest strategies for valid values of the consumer-group messages.

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;

use super::super::*;
use super::strategies::topic;

fn group() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._-]{1,40}"
}

fn member_id() -> impl Strategy<Value = String> {
    "[a-z0-9-]{0,40}"
}

fn text(chars: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("\\PC{{0,{chars}}}")).expect("valid regex")
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    select(ErrorCode::ALL.to_vec())
}

fn strategy() -> impl Strategy<Value = AssignmentStrategy> {
    select(vec![
        AssignmentStrategy::Range,
        AssignmentStrategy::RoundRobin,
        AssignmentStrategy::CooperativeSticky,
    ])
}

fn state() -> impl Strategy<Value = GroupState> {
    select(vec![
        GroupState::Empty,
        GroupState::Rebalancing,
        GroupState::Stable,
    ])
}

fn topic_partitions() -> impl Strategy<Value = Vec<TopicPartitions>> {
    vec(
        (topic(), vec(any::<u32>(), 0..6))
            .prop_map(|(topic, partitions)| TopicPartitions { topic, partitions }),
        0..4,
    )
}

fn join_request() -> impl Strategy<Value = JoinGroupRequest> {
    (
        group(),
        member_id(),
        option::of("[a-z0-9-]{1,20}"),
        vec(topic(), 0..4),
        strategy(),
        500u32..=300_000,
        500u32..=600_000,
    )
        .prop_map(
            |(group, member_id, instance_id, topics, strategy, session, rebalance)| {
                JoinGroupRequest {
                    group,
                    member_id,
                    instance_id,
                    client_id: "client".into(),
                    topics,
                    strategy,
                    session_timeout_ms: session,
                    rebalance_timeout_ms: rebalance,
                }
            },
        )
}

fn commit_request() -> impl Strategy<Value = OffsetCommitRequest> {
    let offset = (topic(), any::<u32>(), any::<u64>(), text(20)).prop_map(
        |(topic, partition, offset, metadata)| CommitOffset {
            topic,
            partition,
            offset,
            metadata,
        },
    );
    (group(), member_id(), any::<u32>(), vec(offset, 0..5)).prop_map(
        |(group, member_id, generation, offsets)| OffsetCommitRequest {
            group,
            member_id,
            generation,
            offsets,
        },
    )
}

fn reset_to() -> impl Strategy<Value = ResetTo> {
    prop_oneof![
        Just(ResetTo::Spec(OffsetSpec::Earliest)),
        Just(ResetTo::Spec(OffsetSpec::Latest)),
        any::<i64>().prop_map(|ms| ResetTo::Spec(OffsetSpec::Timestamp(ms))),
        any::<u64>().prop_map(ResetTo::Offset),
    ]
}

pub fn group_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        group().prop_map(|group| Request::from(FindCoordinatorRequest { group })),
        join_request().prop_map(Request::from),
        (group(), member_id(), any::<u32>(), topic_partitions()).prop_map(
            |(group, member_id, generation, owned)| Request::from(HeartbeatRequest {
                group,
                member_id,
                generation,
                owned,
                acked_assignment: generation / 2,
            })
        ),
        (group(), member_id())
            .prop_map(|(group, member_id)| Request::from(LeaveGroupRequest { group, member_id })),
        commit_request().prop_map(Request::from),
        (group(), option::of(topic_partitions())).prop_map(|(group, partitions)| Request::from(
            OffsetFetchRequest { group, partitions }
        )),
        Just(Request::from(ListGroupsRequest {})),
        group().prop_map(|group| Request::from(DescribeGroupRequest { group })),
        (
            group(),
            topic(),
            option::of(vec(any::<u32>(), 0..5)),
            reset_to(),
            any::<bool>()
        )
            .prop_map(|(group, topic, partitions, to, dry_run)| Request::from(
                ResetOffsetsRequest {
                    group,
                    topic,
                    partitions,
                    to,
                    dry_run,
                }
            )),
    ]
}

fn describe_response() -> impl Strategy<Value = DescribeGroupResponse> {
    let member = (
        member_id(),
        option::of("[a-z0-9-]{1,20}"),
        vec(topic(), 0..3),
        topic_partitions(),
        topic_partitions(),
        any::<u64>(),
    )
        .prop_map(
            |(member_id, instance_id, topics, target, owned, ago)| MemberDescription {
                member_id,
                instance_id,
                client_id: "c".into(),
                topics,
                target,
                owned,
                last_heartbeat_ms_ago: ago,
            },
        );
    let lag = (
        topic(),
        any::<u32>(),
        option::of(any::<u64>()),
        any::<i64>(),
        any::<i64>(),
        option::of(member_id()),
    )
        .prop_map(
            |(topic, partition, committed, high_watermark, lag, owner)| PartitionLag {
                topic,
                partition,
                committed,
                high_watermark,
                lag,
                owner,
            },
        );
    (
        error_code(),
        group(),
        state(),
        any::<u32>(),
        option::of(strategy()),
        vec(member, 0..3),
        vec(lag, 0..4),
    )
        .prop_map(
            |(error, group, state, generation, strategy, members, partitions)| {
                DescribeGroupResponse {
                    error,
                    message: String::new(),
                    group,
                    state,
                    generation,
                    strategy,
                    coordinator_shard: 0,
                    members,
                    partitions,
                }
            },
        )
}

pub fn group_response() -> impl Strategy<Value = Response> {
    prop_oneof![
        (error_code(), any::<u32>(), any::<u16>(), any::<u16>()).prop_map(
            |(error, broker_id, shard, port)| Response::from(FindCoordinatorResponse {
                error,
                broker_id,
                host: "localhost".into(),
                port,
                shard,
                shard_port: port,
            })
        ),
        (error_code(), member_id(), any::<u32>(), any::<u32>()).prop_map(
            |(error, member_id, generation, interval)| Response::from(JoinGroupResponse {
                error,
                message: String::new(),
                member_id,
                generation,
                heartbeat_interval_ms: interval,
            })
        ),
        (
            error_code(),
            any::<u32>(),
            topic_partitions(),
            any::<bool>()
        )
            .prop_map(|(error, generation, assignment, settled)| Response::from(
                HeartbeatResponse {
                    error,
                    message: String::new(),
                    generation,
                    assignment,
                    assignment_seq: generation / 3,
                    settled,
                    heartbeat_interval_ms: 100,
                }
            )),
        (error_code(), text(30))
            .prop_map(|(error, message)| Response::from(LeaveGroupResponse { error, message })),
        (
            error_code(),
            vec((topic(), any::<u32>(), error_code()), 0..4)
        )
            .prop_map(|(error, results)| Response::from(OffsetCommitResponse {
                error,
                message: String::new(),
                partitions: results
                    .into_iter()
                    .map(|(topic, partition, error)| CommitResult {
                        topic,
                        partition,
                        error,
                    })
                    .collect(),
            })),
        vec(
            (
                topic(),
                any::<u32>(),
                option::of(any::<u64>()),
                any::<i64>()
            ),
            0..4
        )
        .prop_map(|offsets| Response::from(OffsetFetchResponse {
            error: ErrorCode::None,
            message: String::new(),
            offsets: offsets
                .into_iter()
                .map(
                    |(topic, partition, offset, commit_time_ms)| CommittedOffset {
                        topic,
                        partition,
                        offset,
                        metadata: String::new(),
                        commit_time_ms,
                    }
                )
                .collect(),
        })),
        vec(
            (group(), state(), any::<u32>(), option::of(strategy())),
            0..4
        )
        .prop_map(|groups| Response::from(ListGroupsResponse {
            error: ErrorCode::None,
            groups: groups
                .into_iter()
                .map(|(group, state, members, strategy)| GroupListing {
                    group,
                    state,
                    members,
                    strategy,
                })
                .collect(),
        })),
        describe_response().prop_map(Response::from),
        (
            error_code(),
            vec((any::<u32>(), error_code(), any::<u64>()), 0..4)
        )
            .prop_map(|(error, results)| Response::from(ResetOffsetsResponse {
                error,
                message: String::new(),
                partitions: results
                    .into_iter()
                    .map(|(partition, error, offset)| ResetResult {
                        partition,
                        error,
                        offset,
                    })
                    .collect(),
            })),
    ]
}
