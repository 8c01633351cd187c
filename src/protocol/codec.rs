//! Whole frames to and from typed messages.
//!
//! Encoding: `encode_request` / `encode_response` append one frame (header, rkyv body,
//! trailer) to a `Vec<u8>`, so several frames can share one buffer and one write. The
//! `_head` variants append only header and body, for a caller that writes the trailer's
//! batches itself (a vectored write of cached buffers). Before anything is kept, the encoder
//! runs on the body it wrote the very checks the receiver will run, so what would be refused
//! is never sent; on error `out` is left as it was.
//!
//! Decoding a whole `Frame`: direction, api key and version first (`UnsupportedApi`,
//! `UnsupportedVersion`), then rkyv's checked access of the body (never unchecked: the bytes
//! come from outside), then the semantic limits on the archived view (before anything is
//! allocated), then the split of the trailer into per-partition shares that must add up to
//! exactly the trailer length, and last the deserialization into owned messages. The
//! decoders take the frame by value and cut its trailer into the shares (a request's as
//! writable `BytesMut`, a response's as `Bytes`): batches are never copied.

use bytes::{Bytes, BytesMut};
use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::{Archive, Deserialize, Serialize};

use super::api::ApiKey;
use super::error::{EncodeError, ProtocolError};
use super::error_code::ErrorCode;
use super::frame::{decode_frame_header, Frame, FrameHeader, FRAME_LENGTH_MIN};
use super::limits::CheckArchived;
use super::messages::{
    ErrorResponse, FetchPartitionResponse, FetchRequestV0, FetchResponseV0, ProducePartition,
    Request, Response,
};
use crate::constants::{BODY_BYTES_MAX, FRAME_BYTES_MAX, FRAME_HEADER_BYTES};

/// A request decoded from a frame. Owned; the batches share the frame's buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedRequest {
    pub header: FrameHeader,
    pub request: Request,
    /// For a produce request: the batches of each entry of `partitions`, in the same order,
    /// each exactly that entry's `batch_bytes` long; writable views of the frame's buffer
    /// (the broker stamps its header fields in them). Empty for every other api.
    pub partition_batches: Vec<BytesMut>,
}

impl DecodedRequest {
    pub fn correlation_id(&self) -> u32 {
        self.header.correlation_id
    }

    pub fn api_version(&self) -> u16 {
        self.header.api_version
    }

    /// For a produce request, each partition entry with its batches.
    pub fn produce_partitions(
        &self,
    ) -> Option<impl Iterator<Item = (&ProducePartition, &BytesMut)> + '_> {
        match &self.request {
            Request::Produce(produce) => {
                Some(produce.partitions.iter().zip(&self.partition_batches))
            }
            _ => None,
        }
    }
}

/// A response decoded from a frame. Owned; the batches share the frame's buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedResponse {
    pub header: FrameHeader,
    pub response: Response,
    /// For a fetch response: the batches of each entry of `partitions`, in the same order,
    /// each exactly that entry's `batch_bytes` long (possibly empty). Empty for every other
    /// api.
    pub partition_batches: Vec<Bytes>,
}

impl DecodedResponse {
    pub fn correlation_id(&self) -> u32 {
        self.header.correlation_id
    }

    /// For a fetch response, each partition entry with its batches.
    pub fn fetch_partitions(
        &self,
    ) -> Option<impl Iterator<Item = (&FetchPartitionResponse, &Bytes)> + '_> {
        match &self.response {
            Response::Fetch(fetch) => Some(fetch.partitions.iter().zip(&self.partition_batches)),
            Response::ReplicaFetch(fetch) => {
                Some(fetch.partitions.iter().zip(&self.partition_batches))
            }
            _ => None,
        }
    }
}

/// What rkyv and the protocol need of a body type; every message struct has it.
trait WireMessage:
    Sized
    + Archive<
        Archived: CheckArchived
                      + for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
                      + Deserialize<Self, HighDeserializer<rancor::Error>>,
    > + for<'a, 'w> Serialize<HighSerializer<&'w mut Vec<u8>, ArenaHandle<'a>, rancor::Error>>
{
}

impl<T> WireMessage for T where
    T: Sized
        + Archive<
            Archived: CheckArchived
                          + for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
                          + Deserialize<T, HighDeserializer<rancor::Error>>,
        > + for<'a, 'w> Serialize<HighSerializer<&'w mut Vec<u8>, ArenaHandle<'a>, rancor::Error>>
{
}

/// The header fields an encoder is given.
#[derive(Clone, Copy, Debug)]
struct Head {
    api: ApiKey,
    api_version: u16,
    correlation_id: u32,
    is_response: bool,
    trailer_length: usize,
}

/// Appends a request frame: header, body, then the trailer pieces in order. For a produce
/// request the pieces (however they are cut) must add up to the sum of the partitions'
/// `batch_bytes`; for every other api there must be none.
pub fn encode_request(
    out: &mut Vec<u8>,
    correlation_id: u32,
    api_version: u16,
    request: &Request,
    trailer: &[&[u8]],
) -> Result<(), EncodeError> {
    let start = out.len();
    let trailer_length = trailer.iter().map(|piece| piece.len()).sum();
    encode_request_head(out, correlation_id, api_version, request, trailer_length)?;
    append_trailer(out, start, trailer);
    Ok(())
}

/// Appends the header and body of a request frame whose `trailer_length` trailer bytes the
/// caller writes right after.
pub fn encode_request_head(
    out: &mut Vec<u8>,
    correlation_id: u32,
    api_version: u16,
    request: &Request,
    trailer_length: usize,
) -> Result<(), EncodeError> {
    let head = Head {
        api: request.api_key(),
        api_version,
        correlation_id,
        is_response: false,
        trailer_length,
    };
    match request {
        Request::Handshake(body) => encode_frame(out, head, body),
        Request::Metadata(body) => encode_frame(out, head, body),
        Request::Produce(body) => encode_frame(out, head, body),
        Request::Fetch(body) if api_version == 0 => {
            encode_frame(out, head, &FetchRequestV0::try_from(body)?)
        }
        Request::Fetch(body) => encode_frame(out, head, body),
        Request::ListOffsets(body) => encode_frame(out, head, body),
        Request::CreateTopics(body) => encode_frame(out, head, body),
        Request::DeleteTopics(body) => encode_frame(out, head, body),
        Request::DescribeConfigs(body) => encode_frame(out, head, body),
        Request::AlterConfigs(body) => encode_frame(out, head, body),
        Request::InitProducerId(body) => encode_frame(out, head, body),
        Request::FindCoordinator(body) => encode_frame(out, head, body),
        Request::JoinGroup(body) => encode_frame(out, head, body),
        Request::Heartbeat(body) => encode_frame(out, head, body),
        Request::LeaveGroup(body) => encode_frame(out, head, body),
        Request::OffsetCommit(body) => encode_frame(out, head, body),
        Request::OffsetFetch(body) => encode_frame(out, head, body),
        Request::ListGroups(body) => encode_frame(out, head, body),
        Request::DescribeGroup(body) => encode_frame(out, head, body),
        Request::ResetOffsets(body) => encode_frame(out, head, body),
        Request::ReplicaFetch(body) => encode_frame(out, head, body),
        Request::DescribeCluster(body) => encode_frame(out, head, body),
        Request::ElectLeader(body) => encode_frame(out, head, body),
        Request::OffsetsForLeaderEpoch(body) => encode_frame(out, head, body),
        Request::ReassignPartition(body) => encode_frame(out, head, body),
        Request::AlterAcls(body) => encode_frame(out, head, body),
        Request::DescribeAcls(body) => encode_frame(out, head, body),
        Request::SaslAuthenticate(body) => encode_frame(out, head, body),
        Request::AlterUsers(body) => encode_frame(out, head, body),
        Request::DescribeUsers(body) => encode_frame(out, head, body),
        Request::AlterQuotas(body) => encode_frame(out, head, body),
        Request::DescribeQuotas(body) => encode_frame(out, head, body),
    }
}

/// Appends a response frame: header, body, then the trailer pieces in order. For a fetch
/// response the pieces must add up to the sum of the partitions' `batch_bytes`; for every
/// other api there must be none. `api_version` is the request's.
pub fn encode_response(
    out: &mut Vec<u8>,
    correlation_id: u32,
    api_version: u16,
    response: &Response,
    trailer: &[&[u8]],
) -> Result<(), EncodeError> {
    let start = out.len();
    let trailer_length = trailer.iter().map(|piece| piece.len()).sum();
    encode_response_head(out, correlation_id, api_version, response, trailer_length)?;
    append_trailer(out, start, trailer);
    Ok(())
}

/// Appends the header and body of a response frame whose `trailer_length` trailer bytes the
/// caller writes right after.
pub fn encode_response_head(
    out: &mut Vec<u8>,
    correlation_id: u32,
    api_version: u16,
    response: &Response,
    trailer_length: usize,
) -> Result<(), EncodeError> {
    let head = Head {
        api: response.api_key(),
        api_version,
        correlation_id,
        is_response: true,
        trailer_length,
    };
    match response {
        Response::Handshake(body) => encode_frame(out, head, body),
        Response::Metadata(body) => encode_frame(out, head, body),
        Response::Produce(body) => encode_frame(out, head, body),
        Response::Fetch(body) if api_version == 0 => {
            encode_frame(out, head, &FetchResponseV0::try_from(body)?)
        }
        Response::Fetch(body) => encode_frame(out, head, body),
        Response::ListOffsets(body) => encode_frame(out, head, body),
        Response::CreateTopics(body) => encode_frame(out, head, body),
        Response::DeleteTopics(body) => encode_frame(out, head, body),
        Response::DescribeConfigs(body) => encode_frame(out, head, body),
        Response::AlterConfigs(body) => encode_frame(out, head, body),
        Response::InitProducerId(body) => encode_frame(out, head, body),
        Response::FindCoordinator(body) => encode_frame(out, head, body),
        Response::JoinGroup(body) => encode_frame(out, head, body),
        Response::Heartbeat(body) => encode_frame(out, head, body),
        Response::LeaveGroup(body) => encode_frame(out, head, body),
        Response::OffsetCommit(body) => encode_frame(out, head, body),
        Response::OffsetFetch(body) => encode_frame(out, head, body),
        Response::ListGroups(body) => encode_frame(out, head, body),
        Response::DescribeGroup(body) => encode_frame(out, head, body),
        Response::ResetOffsets(body) => encode_frame(out, head, body),
        Response::ReplicaFetch(body) => encode_frame(out, head, body),
        Response::DescribeCluster(body) => encode_frame(out, head, body),
        Response::ElectLeader(body) => encode_frame(out, head, body),
        Response::OffsetsForLeaderEpoch(body) => encode_frame(out, head, body),
        Response::ReassignPartition(body) => encode_frame(out, head, body),
        Response::AlterAcls(body) => encode_frame(out, head, body),
        Response::DescribeAcls(body) => encode_frame(out, head, body),
        Response::SaslAuthenticate(body) => encode_frame(out, head, body),
        Response::AlterUsers(body) => encode_frame(out, head, body),
        Response::DescribeUsers(body) => encode_frame(out, head, body),
        Response::AlterQuotas(body) => encode_frame(out, head, body),
        Response::DescribeQuotas(body) => encode_frame(out, head, body),
        Response::Error(body) => encode_frame(out, head, body),
    }
}

/// Appends an `ErrorResponse` (api `Error`, version 0) answering the request with this
/// correlation id. The message is cut to `ERROR_MESSAGE_BYTES_MAX`.
pub fn encode_error_response(
    out: &mut Vec<u8>,
    correlation_id: u32,
    error: ErrorCode,
    message: &str,
) {
    let response = Response::Error(ErrorResponse::new(error, message));
    encode_response(out, correlation_id, 0, &response, &[])
        .expect("an error response with a cut message always encodes");
}

fn append_trailer(out: &mut Vec<u8>, frame_start: usize, trailer: &[&[u8]]) {
    for piece in trailer {
        out.extend_from_slice(piece);
    }
    let header =
        decode_frame_header(&out[frame_start..]).expect("the encoder wrote a valid header");
    assert_eq!(out.len() - frame_start, header.frame_bytes(), "{header:?}");
}

fn check_version(api: ApiKey, version: u16) -> Result<(), ProtocolError> {
    let supported = api.versions();
    if !supported.contains(version) {
        return Err(ProtocolError::UnsupportedVersion {
            api,
            version,
            supported,
        });
    }
    Ok(())
}

fn encode_frame<T: WireMessage>(
    out: &mut Vec<u8>,
    head: Head,
    body: &T,
) -> Result<(), EncodeError> {
    let start = out.len();
    let result = write_frame(out, head, body);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn write_frame<T: WireMessage>(out: &mut Vec<u8>, head: Head, body: &T) -> Result<(), EncodeError> {
    check_version(head.api, head.api_version)?;
    let start = out.len();
    out.resize(start + FRAME_HEADER_BYTES, 0);
    rkyv::api::high::to_bytes_in::<_, rancor::Error>(body, &mut *out)
        .map_err(|error| EncodeError::Serialize(error.to_string()))?;
    let body_start = start + FRAME_HEADER_BYTES;
    let body_length = out.len() - body_start;
    if body_length > BODY_BYTES_MAX {
        return Err(EncodeError::BodyTooLarge { len: body_length });
    }
    let frame_length = (FRAME_LENGTH_MIN + body_length).saturating_add(head.trailer_length);
    if frame_length > FRAME_BYTES_MAX {
        return Err(EncodeError::FrameTooLarge { frame_length });
    }
    let archived = access::<T>(head.api, &out[body_start..])?;
    let claimed = claimed_trailer_bytes(archived);
    if claimed != head.trailer_length as u64 {
        return Err(ProtocolError::TrailerMismatch {
            claimed,
            actual: head.trailer_length,
        }
        .into());
    }
    let header = FrameHeader::new(
        head.api.as_u16(),
        head.api_version,
        head.correlation_id,
        head.is_response,
        body_length,
        head.trailer_length,
    );
    out[start..body_start].copy_from_slice(&header.encode());
    Ok(())
}

/// rkyv's checked access, then the semantic limits.
fn access<T: WireMessage>(api: ApiKey, body: &[u8]) -> Result<&T::Archived, ProtocolError> {
    let archived = rkyv::access::<T::Archived, rancor::Error>(body).map_err(|error| {
        ProtocolError::InvalidBody {
            api,
            reason: error.to_string(),
        }
    })?;
    archived.check()?;
    Ok(archived)
}

fn claimed_trailer_bytes(archived: &impl CheckArchived) -> u64 {
    archived.trailer_lengths().map(u64::from).sum()
}

/// Checks direction, api and version of a frame about to be decoded.
fn check_frame(header: &FrameHeader, expect_response: bool) -> Result<ApiKey, ProtocolError> {
    if header.is_response != expect_response {
        return Err(ProtocolError::WrongDirection {
            expected_response: expect_response,
        });
    }
    let api = ApiKey::from_u16(header.api_key)
        .filter(|api| expect_response || api.is_request())
        .ok_or(ProtocolError::UnsupportedApi {
            api_key: header.api_key,
        })?;
    check_version(api, header.api_version)?;
    Ok(api)
}

/// Decodes a body and splits the trailer by the shares the body claims.
fn decode_body<T: WireMessage, M>(
    api: ApiKey,
    frame: &mut Frame,
    wrap: fn(T) -> M,
) -> Result<(M, Vec<BytesMut>), ProtocolError> {
    let archived = access::<T>(api, frame.body())?;
    let trailer_length = frame.header().trailer_length();
    let claimed = claimed_trailer_bytes(archived);
    if claimed != trailer_length as u64 {
        return Err(ProtocolError::TrailerMismatch {
            claimed,
            actual: trailer_length,
        });
    }
    let lengths: Vec<usize> = archived
        .trailer_lengths()
        .map(|length| length as usize)
        .collect();
    let message = rkyv::deserialize::<T, rancor::Error>(archived).map_err(|error| {
        ProtocolError::InvalidBody {
            api,
            reason: error.to_string(),
        }
    })?;
    let mut trailer = frame.take_trailer();
    let parts = lengths
        .into_iter()
        .map(|length| trailer.split_to(length))
        .collect();
    Ok((wrap(message), parts))
}

/// Decodes a request frame (see the module doc for the order of checks). Any error leaves
/// the connection usable: answer it with `encode_error_response`.
pub fn decode_request(mut frame: Frame) -> Result<DecodedRequest, ProtocolError> {
    let frame = &mut frame;
    let api = check_frame(frame.header(), false)?;
    let (request, partition_batches) = match api {
        ApiKey::Handshake => decode_body(api, frame, Request::Handshake)?,
        ApiKey::Metadata => decode_body(api, frame, Request::Metadata)?,
        ApiKey::Produce => decode_body(api, frame, Request::Produce)?,
        ApiKey::Fetch if frame.header().api_version == 0 => {
            decode_body(api, frame, |v0: FetchRequestV0| Request::Fetch(v0.into()))?
        }
        ApiKey::Fetch => decode_body(api, frame, Request::Fetch)?,
        ApiKey::ListOffsets => decode_body(api, frame, Request::ListOffsets)?,
        ApiKey::CreateTopics => decode_body(api, frame, Request::CreateTopics)?,
        ApiKey::DeleteTopics => decode_body(api, frame, Request::DeleteTopics)?,
        ApiKey::DescribeConfigs => decode_body(api, frame, Request::DescribeConfigs)?,
        ApiKey::AlterConfigs => decode_body(api, frame, Request::AlterConfigs)?,
        ApiKey::InitProducerId => decode_body(api, frame, Request::InitProducerId)?,
        ApiKey::FindCoordinator => decode_body(api, frame, Request::FindCoordinator)?,
        ApiKey::JoinGroup => decode_body(api, frame, Request::JoinGroup)?,
        ApiKey::Heartbeat => decode_body(api, frame, Request::Heartbeat)?,
        ApiKey::LeaveGroup => decode_body(api, frame, Request::LeaveGroup)?,
        ApiKey::OffsetCommit => decode_body(api, frame, Request::OffsetCommit)?,
        ApiKey::OffsetFetch => decode_body(api, frame, Request::OffsetFetch)?,
        ApiKey::ListGroups => decode_body(api, frame, Request::ListGroups)?,
        ApiKey::DescribeGroup => decode_body(api, frame, Request::DescribeGroup)?,
        ApiKey::ResetOffsets => decode_body(api, frame, Request::ResetOffsets)?,
        ApiKey::ReplicaFetch => decode_body(api, frame, Request::ReplicaFetch)?,
        ApiKey::DescribeCluster => decode_body(api, frame, Request::DescribeCluster)?,
        ApiKey::ElectLeader => decode_body(api, frame, Request::ElectLeader)?,
        ApiKey::OffsetsForLeaderEpoch => decode_body(api, frame, Request::OffsetsForLeaderEpoch)?,
        ApiKey::ReassignPartition => decode_body(api, frame, Request::ReassignPartition)?,
        ApiKey::AlterAcls => decode_body(api, frame, Request::AlterAcls)?,
        ApiKey::DescribeAcls => decode_body(api, frame, Request::DescribeAcls)?,
        ApiKey::SaslAuthenticate => decode_body(api, frame, Request::SaslAuthenticate)?,
        ApiKey::AlterUsers => decode_body(api, frame, Request::AlterUsers)?,
        ApiKey::DescribeUsers => decode_body(api, frame, Request::DescribeUsers)?,
        ApiKey::AlterQuotas => decode_body(api, frame, Request::AlterQuotas)?,
        ApiKey::DescribeQuotas => decode_body(api, frame, Request::DescribeQuotas)?,
        ApiKey::Error => unreachable!("check_frame refuses Error as a request"),
    };
    Ok(DecodedRequest {
        header: *frame.header(),
        request,
        partition_batches,
    })
}

/// Decodes a response frame, with the same checks as `decode_request`.
pub fn decode_response(mut frame: Frame) -> Result<DecodedResponse, ProtocolError> {
    let frame = &mut frame;
    let api = check_frame(frame.header(), true)?;
    let (response, partition_batches) = match api {
        ApiKey::Handshake => decode_body(api, frame, Response::Handshake)?,
        ApiKey::Metadata => decode_body(api, frame, Response::Metadata)?,
        ApiKey::Produce => decode_body(api, frame, Response::Produce)?,
        ApiKey::Fetch if frame.header().api_version == 0 => {
            decode_body(api, frame, |v0: FetchResponseV0| Response::Fetch(v0.into()))?
        }
        ApiKey::Fetch => decode_body(api, frame, Response::Fetch)?,
        ApiKey::ListOffsets => decode_body(api, frame, Response::ListOffsets)?,
        ApiKey::CreateTopics => decode_body(api, frame, Response::CreateTopics)?,
        ApiKey::DeleteTopics => decode_body(api, frame, Response::DeleteTopics)?,
        ApiKey::DescribeConfigs => decode_body(api, frame, Response::DescribeConfigs)?,
        ApiKey::AlterConfigs => decode_body(api, frame, Response::AlterConfigs)?,
        ApiKey::InitProducerId => decode_body(api, frame, Response::InitProducerId)?,
        ApiKey::FindCoordinator => decode_body(api, frame, Response::FindCoordinator)?,
        ApiKey::JoinGroup => decode_body(api, frame, Response::JoinGroup)?,
        ApiKey::Heartbeat => decode_body(api, frame, Response::Heartbeat)?,
        ApiKey::LeaveGroup => decode_body(api, frame, Response::LeaveGroup)?,
        ApiKey::OffsetCommit => decode_body(api, frame, Response::OffsetCommit)?,
        ApiKey::OffsetFetch => decode_body(api, frame, Response::OffsetFetch)?,
        ApiKey::ListGroups => decode_body(api, frame, Response::ListGroups)?,
        ApiKey::DescribeGroup => decode_body(api, frame, Response::DescribeGroup)?,
        ApiKey::ResetOffsets => decode_body(api, frame, Response::ResetOffsets)?,
        ApiKey::ReplicaFetch => decode_body(api, frame, Response::ReplicaFetch)?,
        ApiKey::DescribeCluster => decode_body(api, frame, Response::DescribeCluster)?,
        ApiKey::ElectLeader => decode_body(api, frame, Response::ElectLeader)?,
        ApiKey::OffsetsForLeaderEpoch => decode_body(api, frame, Response::OffsetsForLeaderEpoch)?,
        ApiKey::ReassignPartition => decode_body(api, frame, Response::ReassignPartition)?,
        ApiKey::AlterAcls => decode_body(api, frame, Response::AlterAcls)?,
        ApiKey::DescribeAcls => decode_body(api, frame, Response::DescribeAcls)?,
        ApiKey::SaslAuthenticate => decode_body(api, frame, Response::SaslAuthenticate)?,
        ApiKey::AlterUsers => decode_body(api, frame, Response::AlterUsers)?,
        ApiKey::DescribeUsers => decode_body(api, frame, Response::DescribeUsers)?,
        ApiKey::AlterQuotas => decode_body(api, frame, Response::AlterQuotas)?,
        ApiKey::DescribeQuotas => decode_body(api, frame, Response::DescribeQuotas)?,
        ApiKey::Error => decode_body(api, frame, Response::Error)?,
    };
    Ok(DecodedResponse {
        header: *frame.header(),
        response,
        partition_batches: partition_batches
            .into_iter()
            .map(BytesMut::freeze)
            .collect(),
    })
}
