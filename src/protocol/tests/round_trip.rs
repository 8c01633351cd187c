//! Every request and response survives encode → stream → `FrameReader` → decode unchanged,
//! its trailer split into the right shares without copying.

use bytes::Bytes;
use proptest::prelude::*;
use proptest::sample::Index;

use super::strategies::{request, response};
use super::{request_shares, response_shares, shares};
use crate::protocol::*;

/// The newest version of `api` this build speaks: what the round trips encode at.
fn newest(api: ApiKey) -> u16 {
    api.versions().max
}

/// Checks that each share is a slice of the frame's own buffer (`range`), not a copy.
fn assert_shared<P: std::ops::Deref<Target = [u8]>>(
    range: std::ops::Range<*const u8>,
    parts: &[P],
) {
    for part in parts.iter().filter(|part| !part.is_empty()) {
        assert!(range.contains(&part.as_ptr()), "a trailer share was copied");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_request_round_trips(
        request in request(),
        correlation_id in any::<u32>(),
        cut in any::<Index>(),
    ) {
        let trailer = request_shares(&request).concat();
        let at = cut.index(trailer.len() + 1);
        // Frames append to what is in the buffer already.
        let mut out = b"xyz".to_vec();
        encode_request(&mut out, correlation_id, newest(request.api_key()), &request, &[&trailer[..at], &trailer[at..]])
            .unwrap();
        prop_assert_eq!(&out[..3], b"xyz");
        let frame = Frame::parse(Bytes::copy_from_slice(&out[3..])).unwrap();
        let copy = frame.clone();
        let range = frame.as_bytes().as_ptr_range();
        let decoded = decode_request(frame).unwrap();
        prop_assert_eq!(decoded.correlation_id(), correlation_id);
        prop_assert_eq!(decoded.header.api(), Some(request.api_key()));
        prop_assert!(!decoded.header.is_response);
        prop_assert_eq!(&decoded.request, &request);
        prop_assert_eq!(&decoded.partition_batches, &request_shares(&request));
        assert_shared(range, &decoded.partition_batches);
        if let Some(partitions) = decoded.produce_partitions() {
            for (partition, batches) in partitions {
                prop_assert_eq!(partition.batch_bytes as usize, batches.len());
            }
        }
        // Decoding a request as a response is refused, not misread.
        prop_assert_eq!(
            decode_response(copy).unwrap_err(),
            ProtocolError::WrongDirection { expected_response: true }
        );
    }

    #[test]
    fn every_response_round_trips(response in response(), correlation_id in any::<u32>()) {
        let shares = response_shares(&response);
        let pieces: Vec<&[u8]> = shares.iter().map(Vec::as_slice).collect();
        let mut out = Vec::new();
        encode_response(&mut out, correlation_id, newest(response.api_key()), &response, &pieces).unwrap();
        let frame = Frame::parse(Bytes::from(out)).unwrap();
        let copy = frame.clone();
        let range = frame.as_bytes().as_ptr_range();
        let decoded = decode_response(frame).unwrap();
        prop_assert_eq!(decoded.correlation_id(), correlation_id);
        prop_assert_eq!(decoded.header.api(), Some(response.api_key()));
        prop_assert!(decoded.header.is_response);
        prop_assert_eq!(&decoded.response, &response);
        prop_assert_eq!(&decoded.partition_batches, &shares);
        assert_shared(range, &decoded.partition_batches);
        prop_assert!(decode_request(copy).is_err());
    }

    #[test]
    fn head_and_trailer_written_apart_make_the_same_frame(request in request()) {
        let trailer = request_shares(&request).concat();
        let mut whole = Vec::new();
        let version = newest(request.api_key());
        encode_request(&mut whole, 7, version, &request, &[&trailer]).unwrap();
        let mut apart = Vec::new();
        encode_request_head(&mut apart, 7, version, &request, trailer.len()).unwrap();
        apart.extend_from_slice(&trailer);
        prop_assert_eq!(whole, apart);
    }

    #[test]
    fn a_pipelined_stream_read_in_any_pieces_decodes_in_order(
        requests in proptest::collection::vec(request(), 1..6),
        sizes in proptest::collection::vec(1usize..200, 1..5),
    ) {
        let mut stream = Vec::new();
        for (index, request) in requests.iter().enumerate() {
            let trailer = request_shares(request).concat();
            let version = newest(request.api_key());
            encode_request(&mut stream, index as u32, version, request, &[&trailer]).unwrap();
        }
        let frames = super::read_frames(&stream, &sizes);
        prop_assert_eq!(frames.len(), requests.len());
        for (index, (frame, request)) in frames.into_iter().zip(&requests).enumerate() {
            let decoded = decode_request(frame).unwrap();
            prop_assert_eq!(decoded.correlation_id(), index as u32);
            prop_assert_eq!(&decoded.request, request);
        }
    }

    /// Whatever bytes arrive, the reader and decoders answer with values, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut reader = FrameReader::new();
        let mut input = &bytes[..];
        'stream: while !input.is_empty() {
            let n = reader.feed(input);
            input = &input[n..];
            loop {
                match reader.next_frame() {
                    Ok(Some(frame)) => {
                        let _ = decode_request(frame.clone());
                        let _ = decode_response(frame);
                    }
                    Ok(None) => break,
                    Err(_) => break 'stream,
                }
            }
        }
    }

    /// A valid frame with bytes of its body changed decodes or is refused, never panics.
    #[test]
    fn mutated_bodies_never_panic(
        request in request(),
        flips in proptest::collection::vec((any::<Index>(), any::<u8>()), 1..8),
    ) {
        let trailer = request_shares(&request).concat();
        let mut out = Vec::new();
        encode_request(&mut out, 1, newest(request.api_key()), &request, &[&trailer]).unwrap();
        let header = decode_frame_header(&out).unwrap();
        let body = header.body_range();
        // An empty body (ListGroups) has nothing to mutate.
        prop_assume!(!body.is_empty());
        for (index, value) in flips {
            out[body.start + index.index(body.len())] = value;
        }
        let frame = Frame::parse(Bytes::from(out)).unwrap();
        if let Ok(decoded) = decode_request(frame) {
            // Whatever passed the checks encodes again.
            let shares = request_shares(&decoded.request).concat();
            let mut again = Vec::new();
            let version = decoded.header.api_version;
            encode_request(&mut again, 1, version, &decoded.request, &[&shares]).unwrap();
        }
    }
}

#[test]
fn an_error_response_round_trips_with_its_message_cut_at_a_character() {
    let long = "é".repeat(crate::constants::ERROR_MESSAGE_BYTES_MAX);
    let mut out = Vec::new();
    encode_error_response(&mut out, 42, ErrorCode::InvalidTopicName, &long);
    let frame = Frame::parse(Bytes::from(out)).unwrap();
    assert_eq!(frame.header().api_key, 0xFFFF);
    let decoded = decode_response(frame).unwrap();
    assert_eq!(decoded.correlation_id(), 42);
    let Response::Error(error) = decoded.response else {
        panic!("{decoded:?}")
    };
    assert_eq!(error.error, ErrorCode::InvalidTopicName);
    assert_eq!(
        error.message.len(),
        crate::constants::ERROR_MESSAGE_BYTES_MAX
    );
    assert!(long.starts_with(&error.message));
}

#[test]
fn fetch_partitions_pair_entries_with_their_batches() {
    let response = Response::Fetch(FetchResponse {
        throttle_ms: 0,
        partitions: (0..3)
            .map(|partition| FetchPartitionResponse {
                topic: "t".into(),
                partition,
                error: ErrorCode::None,
                high_watermark: 10,
                log_start_offset: 0,
                last_stable_offset: 10,
                batch_bytes: [5, 0, 7][partition as usize],
            })
            .collect(),
        error: ErrorCode::None,
        session_id: 0,
    });
    let shares = shares([5u32, 0, 7].into_iter());
    let pieces: Vec<&[u8]> = shares.iter().map(Vec::as_slice).collect();
    let mut out = Vec::new();
    encode_response(&mut out, 1, 0, &response, &pieces).unwrap();
    let decoded = decode_response(Frame::parse(Bytes::from(out)).unwrap()).unwrap();
    let pairs: Vec<(u32, Vec<u8>)> = decoded
        .fetch_partitions()
        .unwrap()
        .map(|(partition, batches)| (partition.partition, batches.to_vec()))
        .collect();
    assert_eq!(pairs, vec![(0, vec![1; 5]), (1, vec![]), (2, vec![3; 7])]);
}

proptest! {
    /// Fetch version 0 has no sessions: a request or answer without one round-trips through
    /// it unchanged, one with a session is refused by the encoder, not silently cut.
    #[test]
    fn fetch_version_0_carries_exactly_what_has_no_session(
        request in super::strategies::fetch_request(),
        response in super::strategies::fetch_response(),
        sessionless in any::<bool>(),
    ) {
        let mut request = request;
        let mut response = response;
        if sessionless {
            request.session_id = 0;
            request.session_epoch = SESSIONLESS_EPOCH;
            request.forgotten.clear();
            response.session_id = 0;
            response.error = ErrorCode::None;
        }
        let request = Request::Fetch(request);
        let mut out = Vec::new();
        let encoded = encode_request(&mut out, 3, 0, &request, &[]);
        let Request::Fetch(body) = &request else { unreachable!() };
        if body.uses_session() {
            let refused = matches!(
                encoded,
                Err(EncodeError::Invalid(ProtocolError::InvalidValue { what: "fetch session", .. }))
            );
            prop_assert!(refused, "{:?}", encoded);
            prop_assert!(out.is_empty());
        } else {
            encoded.unwrap();
            let decoded = decode_request(Frame::parse(Bytes::from(out)).unwrap()).unwrap();
            prop_assert_eq!(decoded.header.api_version, 0);
            prop_assert_eq!(&decoded.request, &request);
        }
        let with_session = response.session_id != 0 || response.error != ErrorCode::None;
        let response = Response::Fetch(response);
        let shares = response_shares(&response);
        let pieces: Vec<&[u8]> = shares.iter().map(Vec::as_slice).collect();
        let mut out = Vec::new();
        let encoded = encode_response(&mut out, 3, 0, &response, &pieces);
        if with_session {
            prop_assert!(encoded.is_err());
        } else {
            encoded.unwrap();
            let decoded = decode_response(Frame::parse(Bytes::from(out)).unwrap()).unwrap();
            prop_assert_eq!(&decoded.response, &response);
            prop_assert_eq!(&decoded.partition_batches, &shares);
        }
    }
}
