//! Frames that break a rule are refused with the right error, by the decoder (frames built
//! here by hand, past the encoder's checks) and by the encoder.

use bytes::Bytes;
use rkyv::api::high::HighSerializer;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;

use crate::constants::{
    BODY_BYTES_MAX, CONFIG_ENTRIES_MAX, CONFIG_VALUE_BYTES_MAX, FRAME_BYTES_MAX,
    PARTITIONS_PER_REQUEST_MAX, PARTITIONS_PER_TOPIC_MAX, TOPICS_PER_REQUEST_MAX,
    TOPIC_NAME_BYTES_MAX,
};
use crate::protocol::*;

/// A frame with any body and trailer, whatever they say.
fn raw_frame(
    api_key: u16,
    api_version: u16,
    is_response: bool,
    body: &[u8],
    trailer: &[u8],
) -> Frame {
    let header = FrameHeader::new(
        api_key,
        api_version,
        5,
        is_response,
        body.len(),
        trailer.len(),
    );
    let mut bytes = header.encode().to_vec();
    bytes.extend_from_slice(body);
    bytes.extend_from_slice(trailer);
    Frame::parse(Bytes::from(bytes)).unwrap()
}

fn archive<T>(value: &T) -> Vec<u8>
where
    T: for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
{
    rkyv::to_bytes::<rancor::Error>(value).unwrap().to_vec()
}

/// The error decoding `body` as a request of `api`'s newest version.
fn request_error(api: ApiKey, body: &[u8], trailer: &[u8]) -> ProtocolError {
    let version = api.versions().max;
    decode_request(raw_frame(api.as_u16(), version, false, body, trailer)).unwrap_err()
}

fn produce(partitions: Vec<(&str, u32)>) -> ProduceRequest {
    ProduceRequest {
        acks: -1,
        timeout_ms: 1000,
        partitions: partitions
            .into_iter()
            .map(|(topic, batch_bytes)| ProducePartition {
                topic: topic.into(),
                partition: 0,
                batch_bytes,
                leader_epoch: None,
            })
            .collect(),
    }
}

fn fetch(count: usize, topic: &str) -> FetchRequest {
    FetchRequest {
        max_wait_ms: 0,
        min_bytes: 0,
        max_bytes: 1,
        isolation: IsolationLevel::HighWatermark,
        partitions: (0..count)
            .map(|partition| FetchPartition {
                topic: topic.into(),
                partition: partition as u32,
                fetch_offset: 0,
                partition_max_bytes: 1,
                leader_epoch: Some(3),
            })
            .collect(),
        session_id: 0,
        session_epoch: SESSIONLESS_EPOCH,
        forgotten: Vec::new(),
    }
}

fn assert_encode_refuses(request: Request, trailer: &[u8], expected: ProtocolError) {
    let mut out = b"keep".to_vec();
    let error = encode_request(&mut out, 1, 0, &request, &[trailer]).unwrap_err();
    assert_eq!(error, EncodeError::Invalid(expected));
    assert_eq!(out, b"keep", "a refused frame leaves the buffer as it was");
}

#[test]
fn a_too_long_topic_name_is_refused() {
    let long = "t".repeat(TOPIC_NAME_BYTES_MAX + 1);
    let expected = ProtocolError::InvalidTopicName(TopicNameError::TooLong {
        len: TOPIC_NAME_BYTES_MAX + 1,
        max: TOPIC_NAME_BYTES_MAX,
    });
    let body = archive(&produce(vec![(&long, 80)]));
    let error = request_error(ApiKey::Produce, &body, &[0; 80]);
    assert_eq!(error, expected);
    assert_eq!(error.error_code(), ErrorCode::InvalidTopicName);
    assert_encode_refuses(produce(vec![(&long, 80)]).into(), &[0; 80], expected);

    let body = archive(&MetadataRequest {
        topics: Some(vec!["ok".into(), "no way".into()]),
    });
    assert!(matches!(
        request_error(ApiKey::Metadata, &body, &[]),
        ProtocolError::InvalidTopicName(TopicNameError::InvalidCharacter { byte: b' ', .. })
    ));
    let body = archive(&DeleteTopicsRequest {
        names: vec!["..".into()],
        timeout_ms: 0,
    });
    assert_eq!(
        request_error(ApiKey::DeleteTopics, &body, &[]),
        ProtocolError::InvalidTopicName(TopicNameError::Reserved)
    );
}

#[test]
fn too_many_partitions_are_refused() {
    let body = archive(&fetch(PARTITIONS_PER_REQUEST_MAX + 1, "t"));
    let error = request_error(ApiKey::Fetch, &body, &[]);
    assert_eq!(
        error,
        ProtocolError::TooMany {
            what: "fetch partitions",
            count: PARTITIONS_PER_REQUEST_MAX + 1,
            max: PARTITIONS_PER_REQUEST_MAX
        }
    );
    assert_eq!(error.error_code(), ErrorCode::InvalidRequest);
    // The limit itself is fine.
    let body = archive(&fetch(PARTITIONS_PER_REQUEST_MAX, "t"));
    decode_request(raw_frame(ApiKey::Fetch.as_u16(), 1, false, &body, &[])).unwrap();
    // Version 0's body has the same limit.
    let v0 = |count| archive(&FetchRequestV0::try_from(&fetch(count, "t")).unwrap());
    let frame = raw_frame(
        ApiKey::Fetch.as_u16(),
        0,
        false,
        &v0(PARTITIONS_PER_REQUEST_MAX + 1),
        &[],
    );
    assert!(matches!(
        decode_request(frame).unwrap_err(),
        ProtocolError::TooMany {
            what: "fetch partitions",
            ..
        }
    ));
    let frame = raw_frame(
        ApiKey::Fetch.as_u16(),
        0,
        false,
        &v0(PARTITIONS_PER_REQUEST_MAX),
        &[],
    );
    decode_request(frame).unwrap();
    // So has the list of forgotten partitions.
    let mut forgetting = fetch(0, "t");
    forgetting.session_id = 1;
    forgetting.session_epoch = 1;
    forgetting.forgotten = (0..=PARTITIONS_PER_REQUEST_MAX as u32)
        .map(|partition| ForgottenPartition {
            topic: "t".into(),
            partition,
        })
        .collect();
    assert_eq!(
        request_error(ApiKey::Fetch, &archive(&forgetting), &[]),
        ProtocolError::TooMany {
            what: "forgotten partitions",
            count: PARTITIONS_PER_REQUEST_MAX + 1,
            max: PARTITIONS_PER_REQUEST_MAX
        }
    );

    let create = |partitions: u32| CreateTopicsRequest {
        topics: vec![CreatableTopic {
            name: "t".into(),
            partitions,
            replication_factor: 0,
            configs: Vec::new(),
        }],
        validate_only: false,
        timeout_ms: 0,
    };
    for partitions in [0, PARTITIONS_PER_TOPIC_MAX as u32 + 1, u32::MAX] {
        let error = request_error(ApiKey::CreateTopics, &archive(&create(partitions)), &[]);
        assert_eq!(error, ProtocolError::InvalidPartitionCount(partitions));
        assert_eq!(error.error_code(), ErrorCode::InvalidPartitionCount);
    }
    // Many topics of many partitions: refused by the total.
    let many = CreateTopicsRequest {
        topics: (0..11)
            .map(|index| CreatableTopic {
                name: format!("t{index}"),
                partitions: PARTITIONS_PER_TOPIC_MAX as u32,
                replication_factor: 0,
                configs: Vec::new(),
            })
            .collect(),
        validate_only: false,
        timeout_ms: 0,
    };
    assert!(matches!(
        request_error(ApiKey::CreateTopics, &archive(&many), &[]),
        ProtocolError::TooMany { .. }
    ));
}

#[test]
fn too_many_topics_are_refused() {
    let body = archive(&DescribeConfigsRequest {
        topics: vec!["t".into(); TOPICS_PER_REQUEST_MAX + 1],
    });
    assert!(matches!(
        request_error(ApiKey::DescribeConfigs, &body, &[]),
        ProtocolError::TooMany { count, .. } if count == TOPICS_PER_REQUEST_MAX + 1
    ));
}

#[test]
fn config_limits_are_refused_as_invalid_config() {
    let alter = |set: Vec<ConfigEntry>, delete: Vec<String>| AlterConfigsRequest {
        topics: vec![AlterTopicConfigs {
            name: "t".into(),
            set,
            delete,
        }],
        validate_only: true,
    };
    let cases = [
        alter(
            vec![ConfigEntry::new("k", "v"); CONFIG_ENTRIES_MAX + 1],
            vec![],
        ),
        alter(vec![ConfigEntry::new("", "v")], vec![]),
        alter(
            vec![ConfigEntry::new(
                "k",
                "v".repeat(CONFIG_VALUE_BYTES_MAX + 1),
            )],
            vec![],
        ),
        alter(vec![], vec![String::new()]),
    ];
    for request in cases {
        let error = request_error(ApiKey::AlterConfigs, &archive(&request), &[]);
        assert_eq!(error.error_code(), ErrorCode::InvalidConfig, "{error}");
    }
}

#[test]
fn trailer_shares_must_add_up_to_the_trailer() {
    let body = archive(&produce(vec![("a", 100), ("b", 80)]));
    for trailer_length in [0, 179, 181, 1000] {
        assert_eq!(
            request_error(ApiKey::Produce, &body, &vec![0; trailer_length]),
            ProtocolError::TrailerMismatch {
                claimed: 180,
                actual: trailer_length
            }
        );
    }
    assert_encode_refuses(
        produce(vec![("a", 100), ("b", 80)]).into(),
        &[0; 179],
        ProtocolError::TrailerMismatch {
            claimed: 180,
            actual: 179,
        },
    );
    // Claims that would overflow 32 bits are summed without overflowing.
    let body = archive(&produce(vec![("a", u32::MAX), ("b", u32::MAX)]));
    assert_eq!(
        request_error(ApiKey::Produce, &body, &[0; 100]),
        ProtocolError::TrailerMismatch {
            claimed: 2 * u64::from(u32::MAX),
            actual: 100
        }
    );
    // A share smaller than one batch header is refused.
    let body = archive(&produce(vec![("a", 79)]));
    assert!(matches!(
        request_error(ApiKey::Produce, &body, &[0; 79]),
        ProtocolError::InvalidValue {
            what: "batch_bytes",
            ..
        }
    ));
    // Apis without batches carry no trailer.
    let body = archive(&MetadataRequest { topics: None });
    assert_eq!(
        request_error(ApiKey::Metadata, &body, &[1]),
        ProtocolError::TrailerMismatch {
            claimed: 0,
            actual: 1
        }
    );
}

#[test]
fn invalid_acks_are_refused() {
    let mut request = produce(vec![("a", 80)]);
    request.acks = 2;
    assert!(matches!(
        request_error(ApiKey::Produce, &archive(&request), &[0; 80]),
        ProtocolError::InvalidValue { what: "acks", .. }
    ));
    for acks in [-1, 0, 1] {
        request.acks = acks;
        let decoded = decode_request(raw_frame(2, 0, false, &archive(&request), &[0; 80])).unwrap();
        let Request::Produce(produce) = decoded.request else {
            panic!()
        };
        assert_eq!(produce.acks().map(Acks::as_i8), Some(acks));
    }
}

#[test]
fn handshake_ranges_must_be_ordered_and_unique() {
    let handshake = |supported: Vec<ApiVersionRange>| HandshakeRequest {
        client_id: "c".into(),
        client_software_version: "v".into(),
        supported,
    };
    let range = |api_key, min_version, max_version| ApiVersionRange {
        api_key,
        min_version,
        max_version,
    };
    for bad in [vec![range(1, 2, 1)], vec![range(1, 0, 0), range(1, 0, 1)]] {
        assert!(matches!(
            request_error(ApiKey::Handshake, &archive(&handshake(bad)), &[]),
            ProtocolError::InvalidValue { .. }
        ));
    }
    let good = handshake(supported_apis());
    decode_request(raw_frame(0, 0, false, &archive(&good), &[])).unwrap();
}

#[test]
fn unknown_apis_versions_and_directions_are_refused() {
    let body = archive(&MetadataRequest { topics: None });
    for api_key in [10, 19, 29, 39, 0xFFFE, 0xFFFF] {
        let error = decode_request(raw_frame(api_key, 0, false, &body, &[])).unwrap_err();
        assert_eq!(error, ProtocolError::UnsupportedApi { api_key });
        assert_eq!(error.error_code(), ErrorCode::UnsupportedApi);
    }
    let error = decode_request(raw_frame(1, 1, false, &body, &[])).unwrap_err();
    assert_eq!(
        error,
        ProtocolError::UnsupportedVersion {
            api: ApiKey::Metadata,
            version: 1,
            supported: VersionRange { min: 0, max: 0 }
        }
    );
    assert_eq!(error.error_code(), ErrorCode::UnsupportedVersion);
    assert_eq!(
        decode_request(raw_frame(1, 0, true, &body, &[])).unwrap_err(),
        ProtocolError::WrongDirection {
            expected_response: false
        }
    );
    // The encoder speaks only versions it supports.
    let mut out = Vec::new();
    assert!(matches!(
        encode_request(
            &mut out,
            1,
            3,
            &MetadataRequest { topics: None }.into(),
            &[]
        ),
        Err(EncodeError::Invalid(ProtocolError::UnsupportedVersion {
            version: 3,
            ..
        }))
    ));
    assert!(out.is_empty());
}

#[test]
fn garbage_and_truncated_bodies_are_refused() {
    let body = archive(&produce(vec![("topic", 80)]));
    for cut in 0..body.len() {
        let error = request_error(ApiKey::Produce, &body[..cut], &[0; 80]);
        assert_eq!(error.error_code(), ErrorCode::InvalidRequest, "{error}");
    }
    for api in ApiKey::REQUESTS {
        for garbage in [&[][..], &[0xFF; 8][..], &[0x7F; 64][..], &body[..]] {
            // Never a panic; any answer but success for the wrong body is fine.
            let _ = decode_request(raw_frame(api.as_u16(), 0, false, garbage, &[]));
            let _ = decode_response(raw_frame(api.as_u16(), 0, true, garbage, &[]));
        }
    }
}

#[test]
fn oversized_frames_are_refused_by_the_encoder() {
    let mut out = b"keep".to_vec();
    let request: Request = produce(vec![("a", 80)]).into();
    let error = encode_request_head(&mut out, 1, 0, &request, FRAME_BYTES_MAX).unwrap_err();
    assert!(
        matches!(error, EncodeError::FrameTooLarge { .. }),
        "{error}"
    );
    assert_eq!(out, b"keep");

    // Five topics of full configs: more than a body may hold.
    let huge = CreateTopicsRequest {
        topics: (0..5)
            .map(|index| CreatableTopic {
                name: format!("t{index}"),
                partitions: 1,
                replication_factor: 0,
                configs: vec![
                    ConfigEntry::new("k", "v".repeat(CONFIG_VALUE_BYTES_MAX));
                    CONFIG_ENTRIES_MAX
                ],
            })
            .collect(),
        validate_only: false,
        timeout_ms: 0,
    };
    let error = encode_request(&mut out, 1, 0, &huge.into(), &[]).unwrap_err();
    assert!(
        matches!(error, EncodeError::BodyTooLarge { len } if len > BODY_BYTES_MAX),
        "{error}"
    );
    assert_eq!(out, b"keep");
}
