//! Bad input must be harmless. Each test starts its own broker, drives it over raw
//! `std::net::TcpStream`s with input a well-behaved client never sends (truncated frames,
//! lying lengths, garbage, unknown apis, bad batches, half-sent frames, a client that never
//! reads), and checks that the broker refuses exactly that input, with the documented error
//! and the documented fate of the connection (closed, or still usable), and then still
//! serves a normal produce-and-consume round trip through the Rust client on other
//! connections.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::{Rng, SeedableRng};
use shardline::client::{
    Admin, Cluster, Consumer, ConsumerConfig, Producer, ProducerConfig, StartFrom,
};
use shardline::constants::{
    BATCH_BYTES_MAX, BATCH_HEADER_BYTES, BODY_BYTES_MAX, FRAME_BYTES_MAX, FRAME_HEADER_BYTES,
};
use shardline::protocol::frame::{field, FLAG_RESPONSE};
use shardline::protocol::{
    decode_frame_header, decode_response, encode_request, supported_apis, Acks, ApiKey,
    CreatableTopic, CreateTopicsRequest, DecodedResponse, ErrorCode, FetchPartition, FetchRequest,
    Frame, FrameReader, HandshakeRequest, IsolationLevel, ListOffsetsPartition, ListOffsetsRequest,
    MetadataRequest, OffsetSpec, ProducePartition, ProduceRequest, Request, Response,
};
use shardline::record::header::{compute_crc, field as batch_field};
use shardline::record::reader::records;
use shardline::record::validate::validate_slice;
use shardline::record::{BatchBuilder, BatchError, BatchIter, Codec};
use tempfile::TempDir;

use crate::harness::{on_executor, profile_file, seed, Broker};

/// How long the broker may take to answer a request, or to close a connection it refused.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Slack on top of a broker timeout before the test calls it missed (a busy 2-core box).
const TIMEOUT_MARGIN: Duration = Duration::from_secs(5);
/// How early a timeout may fire and still count as that timeout (clock and scheduling).
const TIMEOUT_EARLY_SLACK: Duration = Duration::from_millis(500);
/// Messages each client round trip produces and consumes back.
const ROUND_TRIP_MESSAGES: usize = 40;
/// Partitions of each round-trip topic (so that both shards take part).
const ROUND_TRIP_PARTITIONS: u32 = 2;
/// A generous ceiling on the broker's resident memory while a client misbehaves.
const BROKER_RSS_BYTES_MAX: u64 = 500 * 1024 * 1024;
/// The timeout the tests' produce and create-topic requests give the broker.
const BROKER_TIMEOUT_MS: u32 = 10_000;
/// Garbage samples of random bytes in `garbage_bytes_get_one_error_and_a_close`.
const GARBAGE_SAMPLES: usize = 16;
/// Bytes of one record in the data the never-reading client fetches again and again.
const FIREHOSE_RECORD_BYTES: usize = 4000;
/// Records per batch of that data (about 1 MB a batch).
const FIREHOSE_RECORDS_PER_BATCH: usize = 250;
/// Batches of that data: about 12 MB, all in each fetch response, more than the socket
/// buffers of both ends hold (4 MiB send buffer at most, a receive buffer the client never
/// drains), so the broker's very first write to the never-reading client stalls.
const FIREHOSE_BATCHES: usize = 12;
/// Fetch requests the never-reading client writes per `write_all`.
const PIPELINE_CHUNK_REQUESTS: usize = 64;
/// The never-reading client counts as stalled once it could write nothing for this long.
const PIPELINE_STALL: Duration = Duration::from_secs(1);
/// The broker's frame completion timeout in these tests (set through the profile, so that
/// the tests need not wait out the default 10 s).
const FRAME_COMPLETION_TIMEOUT: Duration = Duration::from_secs(3);
/// The broker's write stall timeout in these tests (default 30 s).
const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(6);
/// Interval between the bytes of the drip-feeding slowloris client.
const DRIP_INTERVAL: Duration = Duration::from_millis(500);

/// A broker on its own temporary data directory (the broker is killed before the directory
/// is removed: fields drop in order).
struct TestBroker {
    broker: Broker,
    _dir: TempDir,
}

fn start_broker() -> TestBroker {
    let dir = tempfile::tempdir().expect("temporary data directory");
    let profile = profile_file(
        dir.path(),
        "short-timeouts",
        &format!(
            "[network]\nframe_completion_timeout_ms = {}\nwrite_stall_timeout_ms = {}\n",
            FRAME_COMPLETION_TIMEOUT.as_millis(),
            WRITE_STALL_TIMEOUT.as_millis()
        ),
    );
    let data = dir.path().join("data");
    let broker = Broker::start(&data, &["--profile", profile.to_str().expect("utf-8 path")]);
    TestBroker { broker, _dir: dir }
}

// Raw connections ---------------------------------------------------------------------------

/// A client speaking the wire protocol by hand over a blocking socket.
struct RawConnection {
    stream: TcpStream,
    frames: FrameReader,
}

/// How waiting for the next frame on a raw connection ended.
#[derive(Debug)]
enum Received {
    Frame(Frame),
    /// The broker closed the connection (end of stream, or a reset), `buffered` bytes into
    /// a frame (0: at a frame boundary).
    Closed {
        buffered: usize,
    },
    /// Nothing arrived in time and the connection is still open.
    Silent,
}

impl RawConnection {
    fn open(broker: &Broker) -> RawConnection {
        let stream = TcpStream::connect(broker.address).expect("connect to the broker");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        RawConnection {
            stream,
            frames: FrameReader::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send to the broker");
    }

    /// Half-closes: the broker sees the end of the stream, the test can still read.
    fn finish_sending(&self) {
        self.stream
            .shutdown(Shutdown::Write)
            .expect("shut down the sending side");
    }

    fn receive_within(&mut self, timeout: Duration) -> Received {
        let deadline = Instant::now() + timeout;
        loop {
            match self.frames.next_frame() {
                Ok(Some(frame)) => return Received::Frame(frame),
                Ok(None) => {}
                Err(error) => panic!("the broker sent a broken frame: {error}"),
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Received::Silent;
            }
            self.stream
                .set_read_timeout(Some(remaining))
                .expect("read timeout");
            match self.stream.read(self.frames.buffer_to_fill()) {
                Ok(0) => {
                    return Received::Closed {
                        buffered: self.frames.buffered_bytes(),
                    }
                }
                Ok(count) => self.frames.filled(count),
                Err(error) => match error.kind() {
                    ErrorKind::WouldBlock | ErrorKind::TimedOut => return Received::Silent,
                    ErrorKind::Interrupted => {}
                    ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::BrokenPipe => {
                        return Received::Closed {
                            buffered: self.frames.buffered_bytes(),
                        }
                    }
                    _ => panic!("reading from the broker: {error}"),
                },
            }
        }
    }

    /// The next response, which must come within `RESPONSE_TIMEOUT`.
    fn receive(&mut self) -> DecodedResponse {
        match self.receive_within(RESPONSE_TIMEOUT) {
            Received::Frame(frame) => decode(&frame),
            other => panic!("expected a response, got {other:?}"),
        }
    }

    /// Sends one request and returns its response (checked to carry its correlation id).
    fn request(
        &mut self,
        correlation_id: u32,
        request: &Request,
        trailer: &[&[u8]],
    ) -> DecodedResponse {
        self.send(&request_frame(correlation_id, request, trailer));
        let response = self.receive();
        assert_eq!(response.correlation_id(), correlation_id, "{response:?}");
        response
    }

    /// Reads until the broker closes the connection, which it must do within `timeout`;
    /// returns the responses that came before.
    fn expect_closed_within(&mut self, timeout: Duration) -> Vec<DecodedResponse> {
        let deadline = Instant::now() + timeout;
        let mut responses = Vec::new();
        loop {
            match self.receive_within(deadline.saturating_duration_since(Instant::now())) {
                Received::Frame(frame) => responses.push(decode(&frame)),
                Received::Closed { buffered } => {
                    assert_eq!(buffered, 0, "closed in the middle of a response");
                    return responses;
                }
                Received::Silent => panic!(
                    "the broker kept the connection open for {timeout:?}, after {responses:?}"
                ),
            }
        }
    }

    /// The broker refused the stream: exactly one `ErrorResponse` with `code` (and
    /// `correlation_id`), then the connection was closed.
    fn expect_refused_and_closed(&mut self, code: ErrorCode, correlation_id: u32, what: &str) {
        let responses = self.expect_closed_within(RESPONSE_TIMEOUT);
        assert_eq!(responses.len(), 1, "{what}: {responses:?}");
        assert_eq!(error_code(&responses[0]), code, "{what}: {responses:?}");
        assert_eq!(
            responses[0].correlation_id(),
            correlation_id,
            "{what}: {responses:?}"
        );
    }
}

fn decode(frame: &Frame) -> DecodedResponse {
    decode_response(frame.clone()).unwrap_or_else(|error| panic!("bad response {frame:?}: {error}"))
}

/// The code of an `ErrorResponse` (anything else fails the test).
fn error_code(response: &DecodedResponse) -> ErrorCode {
    assert_eq!(
        response.header.api_key,
        ApiKey::Error.as_u16(),
        "{response:?}"
    );
    match &response.response {
        Response::Error(error) => error.error,
        other => panic!("expected an ErrorResponse, got {other:?}"),
    }
}

/// An ended stream may be answered with at most one `InvalidRequest` before the close.
fn assert_at_most_one_invalid_request(responses: &[DecodedResponse], what: &str) {
    assert!(responses.len() <= 1, "{what}: {responses:?}");
    for response in responses {
        assert_eq!(
            error_code(response),
            ErrorCode::InvalidRequest,
            "{what}: {response:?}"
        );
    }
}

// Frames ------------------------------------------------------------------------------------

fn request_frame(correlation_id: u32, request: &Request, trailer: &[&[u8]]) -> Vec<u8> {
    let version = request.api_key().versions().max;
    let mut out = Vec::new();
    encode_request(&mut out, correlation_id, version, request, trailer)
        .expect("a valid request encodes");
    out
}

fn metadata_request(topics: Option<&[&str]>) -> Request {
    Request::Metadata(MetadataRequest {
        topics: topics.map(|names| names.iter().map(|name| name.to_string()).collect()),
    })
}

/// A metadata request with a body long enough to be cut in the middle.
fn named_metadata_frame(correlation_id: u32) -> Vec<u8> {
    let topics = ["first-topic", "second-topic", "third-topic"];
    request_frame(correlation_id, &metadata_request(Some(&topics)), &[])
}

fn handshake_request() -> Request {
    Request::Handshake(HandshakeRequest {
        client_id: "bad-input-test".into(),
        client_software_version: "0".into(),
        supported: supported_apis(),
    })
}

fn put_u16(bytes: &mut [u8], at: usize, value: u16) {
    bytes[at..at + 2].copy_from_slice(&value.to_le_bytes());
}

fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("four bytes"))
}

/// A 20-byte request header with these raw field values.
fn raw_header(frame_length: u32, correlation_id: u32, flags: u16, body_length: u32) -> Vec<u8> {
    let mut header = vec![0u8; FRAME_HEADER_BYTES];
    put_u32(&mut header, field::FRAME_LENGTH, frame_length);
    put_u16(&mut header, field::API_KEY, ApiKey::Metadata.as_u16());
    put_u32(&mut header, field::CORRELATION_ID, correlation_id);
    put_u16(&mut header, field::FLAGS, flags);
    put_u32(&mut header, field::BODY_LENGTH, body_length);
    header
}

// Healthy traffic ----------------------------------------------------------------------------

/// A raw metadata request on a new connection is answered.
fn assert_metadata_answered(broker: &Broker) {
    let mut connection = RawConnection::open(broker);
    let response = connection.request(1, &metadata_request(None), &[]);
    assert!(
        matches!(response.response, Response::Metadata(_)),
        "{response:?}"
    );
}

/// The broker still runs, logged no panic, and serves a produce (acks = all) and consume
/// round trip through the Rust client on its own connections, on a new topic named after
/// `tag`.
fn assert_round_trip(broker: &mut Broker, tag: &str) {
    assert!(
        broker.is_running(),
        "{tag}: the broker died:\n{}",
        broker.log()
    );
    let log = broker.log();
    assert!(
        !log.contains("panicked"),
        "{tag}: the broker panicked:\n{log}"
    );
    let address = broker.broker_arg();
    let topic = format!("round-trip-{tag}");
    on_executor(move || async move {
        let cluster = Cluster::new(&address, "bad-input-round-trip", true).expect("cluster");
        Admin::new(cluster.clone())
            .create_topic(&topic, ROUND_TRIP_PARTITIONS, &[])
            .await
            .unwrap_or_else(|error| panic!("{topic}: create: {error}"));
        let producer = Producer::new(
            cluster.clone(),
            ProducerConfig {
                acks: Acks::All,
                ..ProducerConfig::default()
            },
        );
        let mut deliveries = Vec::new();
        for index in 0..ROUND_TRIP_MESSAGES {
            let key = format!("key-{index}");
            let value = format!("{topic}-value-{index}");
            let delivery = producer
                .send(&topic, Some(key.as_bytes()), value.as_bytes())
                .await
                .unwrap_or_else(|error| panic!("{topic}: send: {error}"));
            deliveries.push((value, delivery));
        }
        producer.flush().await;
        let mut stored = BTreeMap::new();
        for (value, delivery) in deliveries {
            let at = delivery
                .wait()
                .await
                .unwrap_or_else(|error| panic!("{topic}: not acknowledged: {error}"));
            assert!(stored.insert((at.partition, at.offset), value).is_none());
        }

        let config = ConsumerConfig {
            max_wait: Duration::from_millis(100),
            ..ConsumerConfig::default()
        };
        let mut consumer = Consumer::new(cluster, config);
        consumer
            .assign(&topic, None, StartFrom::Earliest)
            .await
            .unwrap_or_else(|error| panic!("{topic}: assign: {error}"));
        let mut consumed = BTreeMap::new();
        let deadline = Instant::now() + RESPONSE_TIMEOUT;
        while consumed.len() < stored.len() {
            assert!(
                Instant::now() < deadline,
                "{topic}: consumed {consumed:?} of {stored:?}"
            );
            let fetched = consumer
                .poll()
                .await
                .unwrap_or_else(|error| panic!("{topic}: poll: {error}"));
            fetched
                .for_each(|_, partition, record| {
                    let value = String::from_utf8_lossy(record.value).into_owned();
                    let again = consumed.insert((partition, record.offset), value);
                    assert!(again.is_none(), "{topic}: record delivered twice");
                })
                .expect("fetched batches decode");
        }
        assert_eq!(consumed, stored, "{topic}");
    });
}

// Raw admin, produce, fetch ------------------------------------------------------------------

fn create_topic(connection: &mut RawConnection, name: &str, partitions: u32) {
    let request = Request::CreateTopics(CreateTopicsRequest {
        topics: vec![CreatableTopic {
            name: name.to_string(),
            partitions,
            replication_factor: 1,
            configs: Vec::new(),
        }],
        validate_only: false,
        timeout_ms: BROKER_TIMEOUT_MS,
    });
    match connection.request(900, &request, &[]).response {
        Response::CreateTopics(response) => {
            assert_eq!(response.topics.len(), 1, "{response:?}");
            assert_eq!(response.topics[0].error, ErrorCode::None, "{response:?}");
        }
        other => panic!("create topic answered with {other:?}"),
    }
}

/// A produce request (acks = all) with one share of batches per listed partition.
fn produce_request(topic: &str, shares: &[(u32, &[u8])]) -> Request {
    Request::Produce(ProduceRequest {
        acks: Acks::All.as_i8(),
        timeout_ms: BROKER_TIMEOUT_MS,
        partitions: shares
            .iter()
            .map(|(partition, share)| ProducePartition {
                topic: topic.to_string(),
                partition: *partition,
                batch_bytes: share.len() as u32,
                leader_epoch: None,
            })
            .collect(),
    })
}

/// Produces, and returns per listed partition its error code and base offset.
fn produce(
    connection: &mut RawConnection,
    correlation_id: u32,
    topic: &str,
    shares: &[(u32, &[u8])],
) -> Vec<(ErrorCode, u64)> {
    let trailer: Vec<&[u8]> = shares.iter().map(|(_, share)| *share).collect();
    let request = produce_request(topic, shares);
    match connection
        .request(correlation_id, &request, &trailer)
        .response
    {
        Response::Produce(response) => {
            assert_eq!(response.partitions.len(), shares.len(), "{response:?}");
            response
                .partitions
                .iter()
                .zip(shares)
                .map(|(entry, (partition, _))| {
                    assert_eq!((entry.topic.as_str(), entry.partition), (topic, *partition));
                    (entry.error, entry.base_offset)
                })
                .collect()
        }
        other => panic!("produce answered with {other:?}"),
    }
}

fn latest_offsets(connection: &mut RawConnection, topic: &str, partitions: u32) -> Vec<u64> {
    let request = Request::ListOffsets(ListOffsetsRequest {
        partitions: (0..partitions)
            .map(|partition| ListOffsetsPartition {
                topic: topic.to_string(),
                partition,
                spec: OffsetSpec::Latest,
            })
            .collect(),
    });
    match connection.request(901, &request, &[]).response {
        Response::ListOffsets(response) => response
            .partitions
            .iter()
            .map(|entry| {
                assert_eq!(entry.error, ErrorCode::None, "{response:?}");
                entry.offset
            })
            .collect(),
        other => panic!("list offsets answered with {other:?}"),
    }
}

fn fetch_request(topic: &str, partition: u32, max_bytes: u32) -> Request {
    Request::Fetch(FetchRequest {
        max_wait_ms: 0,
        min_bytes: 0,
        max_bytes,
        isolation: IsolationLevel::HighWatermark,
        partitions: vec![FetchPartition {
            topic: topic.to_string(),
            partition,
            fetch_offset: 0,
            partition_max_bytes: max_bytes,
            leader_epoch: None,
        }],
        session_id: 0,
        session_epoch: shardline::protocol::SESSIONLESS_EPOCH,
        forgotten: Vec::new(),
    })
}

/// Every record value of a partition, fetched from offset 0 on the raw connection.
fn fetch_values(connection: &mut RawConnection, topic: &str, partition: u32) -> Vec<Vec<u8>> {
    let request = fetch_request(topic, partition, BATCH_BYTES_MAX as u32);
    let response = connection.request(902, &request, &[]);
    let mut values = Vec::new();
    let mut scratch = Vec::new();
    for (entry, batches) in response.fetch_partitions().expect("a fetch response") {
        assert_eq!(entry.error, ErrorCode::None, "{entry:?}");
        for item in BatchIter::new(batches) {
            let (_, batch) = item.expect("fetched batches are whole");
            let batch_records = records(batch, &mut scratch).expect("fetched records decode");
            values.extend(batch_records.iter().map(|record| record.value.to_vec()));
        }
    }
    values
}

// Batches -------------------------------------------------------------------------------------

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

fn batch<V: AsRef<[u8]>>(values: &[V]) -> Vec<u8> {
    let mut builder = BatchBuilder::new(Codec::None);
    let timestamp_ms = now_ms();
    for value in values {
        builder
            .push(timestamp_ms, None, value.as_ref(), &[])
            .expect("record fits");
    }
    builder.finish().expect("batch builds").to_vec()
}

/// A valid batch with one body byte flipped: its checksum no longer matches.
fn batch_with_bad_crc() -> Vec<u8> {
    let mut bytes = batch(&[b"corrupt-1", b"corrupt-2"]);
    let last = bytes.len() - 1;
    bytes[last] ^= 0x5A;
    assert!(
        matches!(validate_slice(&bytes), Err(BatchError::CrcMismatch { .. })),
        "{:?}",
        validate_slice(&bytes)
    );
    bytes
}

/// A batch of `BATCH_BYTES_MAX + 4 KiB` with a consistent header and checksum: refused only
/// for its size.
fn oversized_batch() -> Vec<u8> {
    let mut bytes = batch(&[b"big"]);
    bytes.truncate(BATCH_HEADER_BYTES);
    let length = BATCH_BYTES_MAX + 4096;
    bytes.resize(length, 0);
    put_u32(&mut bytes, batch_field::BATCH_LENGTH, length as u32);
    put_u32(
        &mut bytes,
        batch_field::BODY_LENGTH_UNCOMPRESSED,
        (length - BATCH_HEADER_BYTES) as u32,
    );
    let crc = compute_crc(&bytes);
    put_u32(&mut bytes, batch_field::CRC, crc);
    assert!(
        matches!(validate_slice(&bytes), Err(BatchError::TooLarge { .. })),
        "{:?}",
        validate_slice(&bytes)
    );
    bytes
}

/// A valid batch whose length field claims more bytes than the share holds.
fn batch_with_lying_length() -> Vec<u8> {
    let mut bytes = batch(&[b"liar"]);
    let claimed = bytes.len() as u32 + 100;
    put_u32(&mut bytes, batch_field::BATCH_LENGTH, claimed);
    bytes
}

// Memory ------------------------------------------------------------------------------------------

/// The broker's resident set size, from /proc.
fn broker_rss_bytes(broker: &Broker) -> u64 {
    let pid = broker.pid().expect("the broker runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .expect("VmRSS in /proc status");
    kib * 1024
}

// Tests ---------------------------------------------------------------------------------------

#[test]
fn truncated_frames_then_close_are_dropped_without_an_answer() {
    let mut test = start_broker();
    let broker = &mut test.broker;
    let frame = named_metadata_frame(41);
    let cuts = [
        1,
        field::CORRELATION_ID,
        FRAME_HEADER_BYTES - 1,
        FRAME_HEADER_BYTES,
        FRAME_HEADER_BYTES + 5,
        frame.len() - 1,
    ];
    for cut in cuts {
        let what = format!("first {cut} of {} bytes, then end of stream", frame.len());
        let mut connection = RawConnection::open(broker);
        connection.send(&frame[..cut]);
        connection.finish_sending();
        // Closed at once on the end of the stream, not after FRAME_COMPLETION_TIMEOUT.
        let responses = connection.expect_closed_within(FRAME_COMPLETION_TIMEOUT / 2);
        assert_at_most_one_invalid_request(&responses, &what);
        assert_metadata_answered(broker);

        // The same cut after a complete request: the complete one is still answered.
        let mut connection = RawConnection::open(broker);
        let mut bytes = named_metadata_frame(40);
        bytes.extend_from_slice(&frame[..cut]);
        connection.send(&bytes);
        connection.finish_sending();
        let responses = connection.expect_closed_within(FRAME_COMPLETION_TIMEOUT / 2);
        assert!(
            !responses.is_empty(),
            "{what}: no answer to the whole frame"
        );
        assert_eq!(responses[0].correlation_id(), 40, "{what}: {responses:?}");
        assert!(
            matches!(responses[0].response, Response::Metadata(_)),
            "{what}: {responses:?}"
        );
        assert_at_most_one_invalid_request(&responses[1..], &what);

        // And a plain close (no half-close) of a truncated frame.
        let mut connection = RawConnection::open(broker);
        connection.send(&frame[..cut]);
        drop(connection);
    }
    assert_round_trip(broker, "truncated");
}

#[test]
fn lying_frame_lengths_are_refused_before_anything_is_allocated() {
    let mut test = start_broker();
    let broker = &mut test.broker;
    let three_gib = 3u32 << 30;
    let body_max = BODY_BYTES_MAX as u32;
    let frame_max = FRAME_BYTES_MAX as u32;
    // (what, header bytes, code of the one error response before the close)
    let refused_headers = [
        (
            "3 GiB frame",
            raw_header(three_gib, 71, 0, 0),
            ErrorCode::FrameTooLarge,
        ),
        (
            "frame one byte over FRAME_BYTES_MAX",
            raw_header(frame_max + 1, 72, 0, 0),
            ErrorCode::FrameTooLarge,
        ),
        (
            "frame shorter than its own header",
            raw_header(15, 73, 0, 0),
            ErrorCode::InvalidRequest,
        ),
        (
            "body longer than the frame",
            raw_header(16 + 10, 74, 0, 11),
            ErrorCode::FrameTooLarge,
        ),
        (
            "body over BODY_BYTES_MAX",
            raw_header(frame_max, 75, 0, body_max + 1),
            ErrorCode::FrameTooLarge,
        ),
        (
            "unknown flag bits",
            raw_header(16, 76, 0x0100, 0),
            ErrorCode::InvalidRequest,
        ),
    ];
    for (what, header, code) in refused_headers {
        let rss_before = broker_rss_bytes(broker);
        let mut connection = RawConnection::open(broker);
        connection.send(&header);
        let correlation_id = u32_at(&header, field::CORRELATION_ID);
        connection.expect_refused_and_closed(code, correlation_id, what);
        let rss_after = broker_rss_bytes(broker);
        assert!(
            rss_after < rss_before + FRAME_BYTES_MAX as u64 / 4,
            "{what}: the broker grew from {rss_before} to {rss_after} bytes"
        );
        assert_metadata_answered(broker);
    }

    let mut reserved = raw_header(16, 77, 0, 0);
    put_u16(&mut reserved, field::RESERVED, 1);
    let mut connection = RawConnection::open(broker);
    connection.send(&reserved);
    connection.expect_refused_and_closed(ErrorCode::InvalidRequest, 77, "reserved field set");
    assert_round_trip(broker, "refused-headers");

    // A length that claims more than is sent, then the client closes: dropped unanswered.
    let whole = named_metadata_frame(78);
    let mut lying = whole.clone();
    let frame_length = u32_at(&lying, field::FRAME_LENGTH) + 1000;
    put_u32(&mut lying, field::FRAME_LENGTH, frame_length);
    let mut connection = RawConnection::open(broker);
    connection.send(&lying);
    connection.finish_sending();
    let responses = connection.expect_closed_within(FRAME_COMPLETION_TIMEOUT / 2);
    assert_at_most_one_invalid_request(&responses, "length claims 1000 bytes more than sent");
    assert_round_trip(broker, "length-claims-more");

    // A length that claims 3 GiB, then a valid frame: the broker refuses at the header and
    // never treats the following bytes as the body of a 3 GiB frame.
    let mut connection = RawConnection::open(broker);
    let mut bytes = raw_header(three_gib, 79, 0, 0);
    bytes.extend_from_slice(&whole);
    connection.send(&bytes);
    connection.expect_refused_and_closed(ErrorCode::FrameTooLarge, 79, "3 GiB, then a frame");

    // A length (and body length) that claims less than the body: the frame is whole but its
    // body is cut, so it is answered with InvalidRequest under its correlation id; the
    // leftover bytes are then a truncated frame at the end of the stream.
    let mut short = whole.clone();
    let cut = 8;
    put_u32(
        &mut short,
        field::FRAME_LENGTH,
        u32_at(&whole, field::FRAME_LENGTH) - cut,
    );
    put_u32(
        &mut short,
        field::BODY_LENGTH,
        u32_at(&whole, field::BODY_LENGTH) - cut,
    );
    let mut connection = RawConnection::open(broker);
    connection.send(&short);
    connection.finish_sending();
    let responses = connection.expect_closed_within(FRAME_COMPLETION_TIMEOUT / 2);
    assert!(!responses.is_empty(), "length claims less: no answer");
    assert_eq!(error_code(&responses[0]), ErrorCode::InvalidRequest);
    assert_eq!(responses[0].correlation_id(), 78);
    assert_at_most_one_invalid_request(&responses[1..], "length claims less: leftover");
    assert_round_trip(broker, "length-claims-less");
}

#[test]
fn garbage_bytes_get_one_error_and_a_close() {
    let mut test = start_broker();
    let broker = &mut test.broker;
    let mut samples: Vec<(String, Vec<u8>)> = vec![
        (
            "an HTTP request".into(),
            b"GET / HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n".to_vec(),
        ),
        (
            "a TLS client hello".into(),
            [
                &[
                    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03, 0x03,
                ][..],
                &[0xAB; 64][..],
            ]
            .concat(),
        ),
        ("all ones".into(), vec![0xFF; 256]),
        ("all zeros".into(), vec![0x00; 256]),
    ];
    let mut random = rand::rngs::StdRng::seed_from_u64(seed("garbage_bytes"));
    while samples.len() < 4 + GARBAGE_SAMPLES {
        let length = random.gen_range(FRAME_HEADER_BYTES..=4096);
        let bytes: Vec<u8> = (0..length).map(|_| random.gen()).collect();
        // Random bytes that happen to form a valid header are not garbage to the framing.
        if decode_frame_header(&bytes).is_err() {
            samples.push((format!("{length} random bytes"), bytes));
        }
    }
    for (what, bytes) in &samples {
        let expected = decode_frame_header(bytes).expect_err("garbage breaks the header rules");
        let mut connection = RawConnection::open(broker);
        connection.send(bytes);
        let correlation_id = u32_at(bytes, field::CORRELATION_ID);
        connection.expect_refused_and_closed(expected.error_code(), correlation_id, what);
        assert_metadata_answered(broker);
    }
    assert_round_trip(broker, "garbage");

    // Garbage after a whole request: the request is answered first, then the refusal.
    let mut connection = RawConnection::open(broker);
    let mut bytes = named_metadata_frame(60);
    bytes.extend_from_slice(&samples[0].1);
    connection.send(&bytes);
    let responses = connection.expect_closed_within(RESPONSE_TIMEOUT);
    assert_eq!(responses.len(), 2, "{responses:?}");
    assert_eq!(responses[0].correlation_id(), 60);
    assert!(matches!(responses[0].response, Response::Metadata(_)));
    assert_eq!(error_code(&responses[1]), ErrorCode::FrameTooLarge);
    assert_round_trip(broker, "garbage-after-request");

    // Garbage after a fetch that waits for data: responses go out as they are ready, but a
    // refusal that closes the connection still waits for the answers to earlier requests.
    let mut connection = RawConnection::open(broker);
    create_topic(&mut connection, "garbage-waits", 1);
    let mut waiting = fetch_request("garbage-waits", 0, 1 << 20);
    if let Request::Fetch(fetch) = &mut waiting {
        fetch.max_wait_ms = 1_000;
        fetch.min_bytes = 1;
    }
    let mut bytes = request_frame(61, &waiting, &[]);
    bytes.extend_from_slice(&samples[0].1);
    let sent = Instant::now();
    connection.send(&bytes);
    let responses = connection.expect_closed_within(RESPONSE_TIMEOUT);
    assert_eq!(responses.len(), 2, "{responses:?}");
    assert_eq!(responses[0].correlation_id(), 61);
    assert!(matches!(responses[0].response, Response::Fetch(_)));
    assert!(
        sent.elapsed() >= Duration::from_millis(1_000),
        "the fetch waited for data"
    );
    assert_eq!(error_code(&responses[1]), ErrorCode::FrameTooLarge);
    assert_round_trip(broker, "garbage-after-waiting-fetch");
}

#[test]
fn unknown_apis_and_versions_are_answered_and_the_connection_goes_on() {
    let mut test = start_broker();
    let broker = &mut test.broker;
    let valid = named_metadata_frame(0);
    let with = |correlation_id: u32, patch: &dyn Fn(&mut Vec<u8>)| {
        let mut frame = valid.clone();
        put_u32(&mut frame, field::CORRELATION_ID, correlation_id);
        patch(&mut frame);
        frame
    };
    let body_length = u32_at(&valid, field::BODY_LENGTH) as usize;
    // (what, frame, the code of its ErrorResponse)
    let refused: Vec<(&str, Vec<u8>, ErrorCode)> = vec![
        (
            "unknown api key 0x1234",
            with(100, &|f| put_u16(f, field::API_KEY, 0x1234)),
            ErrorCode::UnsupportedApi,
        ),
        (
            "reserved api key 10",
            with(101, &|f| put_u16(f, field::API_KEY, 10)),
            ErrorCode::UnsupportedApi,
        ),
        (
            "the response-only Error api as a request",
            with(102, &|f| put_u16(f, field::API_KEY, ApiKey::Error.as_u16())),
            ErrorCode::UnsupportedApi,
        ),
        (
            "metadata version max + 1",
            with(103, &|f| {
                let version = ApiKey::Metadata.versions().max + 1;
                put_u16(f, field::API_VERSION, version)
            }),
            ErrorCode::UnsupportedVersion,
        ),
        (
            "metadata version 0xFFFF",
            with(104, &|f| put_u16(f, field::API_VERSION, 0xFFFF)),
            ErrorCode::UnsupportedVersion,
        ),
        (
            "a request flagged as a response",
            with(105, &|f| put_u16(f, field::FLAGS, FLAG_RESPONSE)),
            ErrorCode::InvalidRequest,
        ),
        (
            "a body that is not an archive",
            with(106, &|f| {
                f[field::BODY..field::BODY + body_length].fill(0xEE);
            }),
            ErrorCode::InvalidRequest,
        ),
    ];

    // One at a time, each followed by a valid request on the same connection.
    let mut connection = RawConnection::open(broker);
    for (index, (what, frame, code)) in refused.iter().enumerate() {
        let correlation_id = u32_at(frame, field::CORRELATION_ID);
        connection.send(frame);
        let response = connection.receive();
        assert_eq!(error_code(&response), *code, "{what}: {response:?}");
        assert_eq!(response.correlation_id(), correlation_id, "{what}");
        let follow_up = 200 + index as u32;
        let request = if index % 2 == 0 {
            metadata_request(None)
        } else {
            handshake_request()
        };
        let response = connection.request(follow_up, &request, &[]);
        assert_eq!(
            response.response.api_key(),
            request.api_key(),
            "{what}: {response:?}"
        );
    }

    // All at once, pipelined with valid requests: every one answered, in order.
    let mut bytes = Vec::new();
    let mut expected = Vec::new();
    for (index, (_, frame, code)) in refused.iter().enumerate() {
        let correlation_id = 300 + index as u32;
        let mut frame = frame.clone();
        put_u32(&mut frame, field::CORRELATION_ID, correlation_id);
        bytes.extend_from_slice(&frame);
        expected.push((correlation_id, Some(*code)));
        let correlation_id = 400 + index as u32;
        bytes.extend_from_slice(&request_frame(correlation_id, &handshake_request(), &[]));
        expected.push((correlation_id, None));
    }
    connection.send(&bytes);
    for (correlation_id, code) in expected {
        let response = connection.receive();
        assert_eq!(response.correlation_id(), correlation_id, "{response:?}");
        match code {
            Some(code) => assert_eq!(error_code(&response), code, "{response:?}"),
            None => assert!(
                matches!(response.response, Response::Handshake(_)),
                "{response:?}"
            ),
        }
    }
    let response = connection.request(500, &metadata_request(None), &[]);
    assert!(matches!(response.response, Response::Metadata(_)));
    assert_round_trip(broker, "unknown-apis");
}

#[test]
fn oversized_and_corrupt_batches_are_refused_and_nothing_is_appended() {
    let mut test = start_broker();
    let broker = &mut test.broker;
    let topic = "bad-batches";
    let partitions = 4;
    let mut connection = RawConnection::open(broker);
    create_topic(&mut connection, topic, partitions);

    let good = batch(&[b"good-1", b"good-2", b"good-3"]);
    let good_then_corrupt = [batch(&[b"kept-1", b"kept-2"]), batch_with_bad_crc()].concat();
    let oversized = oversized_batch();
    let lying_length = batch_with_lying_length();
    let shares: [(u32, &[u8]); 4] = [
        (0, &good),
        (1, &good_then_corrupt),
        (2, &oversized),
        (3, &lying_length),
    ];
    let results = produce(&mut connection, 10, topic, &shares);
    assert_eq!(results[0], (ErrorCode::None, 0), "{results:?}");
    assert_eq!(results[1].0, ErrorCode::CorruptBatch, "{results:?}");
    assert_eq!(results[2].0, ErrorCode::BatchTooLarge, "{results:?}");
    assert_eq!(results[3].0, ErrorCode::CorruptBatch, "{results:?}");
    // Only the good share was appended; a bad batch refuses its whole share.
    assert_eq!(
        latest_offsets(&mut connection, topic, partitions),
        [3, 0, 0, 0]
    );
    let good_values: Vec<Vec<u8>> =
        vec![b"good-1".to_vec(), b"good-2".to_vec(), b"good-3".to_vec()];
    assert_eq!(fetch_values(&mut connection, topic, 0), good_values);
    for partition in 1..partitions {
        assert!(fetch_values(&mut connection, topic, partition).is_empty());
    }

    // A body whose batch shares do not add up to the trailer: refused as a whole request.
    let mut frame = request_frame(11, &produce_request(topic, &[(0, &good)]), &[&good]);
    frame.extend_from_slice(&[0; 10]);
    let frame_length = u32_at(&frame, field::FRAME_LENGTH) + 10;
    put_u32(&mut frame, field::FRAME_LENGTH, frame_length);
    connection.send(&frame);
    let response = connection.receive();
    assert_eq!(
        error_code(&response),
        ErrorCode::InvalidRequest,
        "{response:?}"
    );
    assert_eq!(response.correlation_id(), 11);
    assert_eq!(
        latest_offsets(&mut connection, topic, partitions),
        [3, 0, 0, 0]
    );

    // The refused partitions take valid batches at offset 0: no offsets were used up.
    let next = batch(&[b"next-1", b"next-2"]);
    for partition in 1..partitions {
        let results = produce(
            &mut connection,
            20 + partition,
            topic,
            &[(partition, &next)],
        );
        assert_eq!(results, [(ErrorCode::None, 0)], "partition {partition}");
    }
    assert_eq!(
        latest_offsets(&mut connection, topic, partitions),
        [3, 2, 2, 2]
    );
    assert_eq!(
        fetch_values(&mut connection, topic, 1),
        [b"next-1".to_vec(), b"next-2".to_vec()]
    );
    assert_round_trip(broker, "bad-batches");
}

/// Sends `bytes` one at a time every `DRIP_INTERVAL` until the broker closes the connection;
/// returns how long after the first byte that was noticed.
fn drip_until_closed(mut stream: TcpStream, bytes: &[u8], give_up: Duration) -> Duration {
    let start = Instant::now();
    let mut reader = stream.try_clone().expect("clone the socket");
    reader
        .set_read_timeout(Some(DRIP_INTERVAL))
        .expect("read timeout");
    let mut sink = [0u8; 256];
    for byte in bytes.iter().cycle() {
        assert!(
            start.elapsed() < give_up,
            "a drip-feeding client was kept for {give_up:?}"
        );
        if stream.write_all(&[*byte]).is_err() {
            return start.elapsed();
        }
        match reader.read(&mut sink) {
            Ok(0) => return start.elapsed(),
            Ok(_) => {}
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return start.elapsed(),
        }
    }
    unreachable!("the drip cycles forever")
}

#[test]
fn half_sent_frames_are_closed_after_the_frame_completion_timeout() {
    let mut test = start_broker();
    let broker = &mut test.broker;
    // A quiet connection with a whole exchange behind it: idle, not half-way through a frame.
    let mut idle = RawConnection::open(broker);
    let response = idle.request(1, &metadata_request(None), &[]);
    assert!(matches!(response.response, Response::Metadata(_)));

    let frame = named_metadata_frame(2);
    let give_up = FRAME_COMPLETION_TIMEOUT + TIMEOUT_MARGIN;
    let elapsed = std::thread::scope(|scope| {
        let stalls: Vec<_> = [field::CORRELATION_ID, frame.len() - 1]
            .into_iter()
            .map(|cut| {
                let mut connection = RawConnection::open(broker);
                let frame = &frame;
                scope.spawn(move || {
                    let start = Instant::now();
                    connection.send(&frame[..cut]);
                    let responses = connection.expect_closed_within(give_up);
                    assert_at_most_one_invalid_request(&responses, "half a frame, then a stall");
                    (format!("stalled after {cut} bytes"), start.elapsed())
                })
            })
            .collect();
        let drip = {
            let stream = TcpStream::connect(broker.address).expect("connect");
            // A header that announces a frame long enough to never be finished by the drip.
            let mut header = raw_header(16 + 4096, 3, 0, 4096);
            header.extend_from_slice(&[0u8; 64]);
            scope.spawn(move || {
                let elapsed = drip_until_closed(stream, &header, give_up);
                ("drip-fed one byte per interval".to_string(), elapsed)
            })
        };

        // Meanwhile everyone else is served.
        assert_round_trip(broker, "during-stall");

        let mut elapsed: Vec<_> = stalls
            .into_iter()
            .map(|stall| stall.join().expect("stalled client"))
            .collect();
        elapsed.push(drip.join().expect("drip-feeding client"));
        elapsed
    });
    for (what, elapsed) in elapsed {
        assert!(
            elapsed + TIMEOUT_EARLY_SLACK >= FRAME_COMPLETION_TIMEOUT,
            "{what}: closed after {elapsed:?}, before FRAME_COMPLETION_TIMEOUT"
        );
        eprintln!("{what}: closed after {elapsed:?}");
    }

    // The idle connection was left alone.
    let response = idle.request(4, &handshake_request(), &[]);
    assert!(matches!(response.response, Response::Handshake(_)));
    assert_round_trip(broker, "after-stall");
}

/// Writes pipelined fetch requests until the broker stops taking them (or the connection
/// breaks); counts every request written in `sent`.
fn pipeline_fetches(mut stream: TcpStream, topic: &str, sent: &AtomicUsize) {
    let request = fetch_request(topic, 0, (FIREHOSE_BATCHES * BATCH_BYTES_MAX) as u32);
    let mut correlation_id = 0u32;
    loop {
        let mut chunk = Vec::new();
        for _ in 0..PIPELINE_CHUNK_REQUESTS {
            correlation_id += 1;
            chunk.extend_from_slice(&request_frame(correlation_id, &request, &[]));
        }
        if stream.write_all(&chunk).is_err() {
            return;
        }
        sent.fetch_add(PIPELINE_CHUNK_REQUESTS, Ordering::SeqCst);
    }
}

#[test]
fn a_client_that_never_reads_is_cut_off_without_starving_others() {
    let mut test = start_broker();
    let broker = &mut test.broker;
    let topic = "firehose";
    let mut connection = RawConnection::open(broker);
    create_topic(&mut connection, topic, 1);
    let value = vec![0x42u8; FIREHOSE_RECORD_BYTES];
    let values = vec![value.clone(); FIREHOSE_RECORDS_PER_BATCH];
    for index in 0..FIREHOSE_BATCHES {
        let results = produce(
            &mut connection,
            index as u32,
            topic,
            &[(0, &batch(&values))],
        );
        assert_eq!(results[0].0, ErrorCode::None);
    }
    let rss_start = broker_rss_bytes(broker);

    // The client that pipelines fetches of ~12 MB each and never reads a response.
    let stream = TcpStream::connect(broker.address).expect("connect");
    let mut reader = RawConnection {
        stream: stream.try_clone().expect("clone the socket"),
        frames: FrameReader::new(),
    };
    let sent = Arc::new(AtomicUsize::new(0));
    let (finished_sender, finished) = mpsc::channel();
    let pipeline_start = Instant::now();
    let writer = {
        let sent = sent.clone();
        std::thread::spawn(move || {
            pipeline_fetches(stream, topic, &sent);
            let _ = finished_sender.send(Instant::now());
        })
    };

    // The broker stops reading it (bounded in-flight requests): its writes stall.
    let stall_deadline = Instant::now() + RESPONSE_TIMEOUT;
    let mut last = (sent.load(Ordering::SeqCst), Instant::now());
    while last.1.elapsed() < PIPELINE_STALL {
        assert!(
            Instant::now() < stall_deadline,
            "the broker kept reading requests it cannot answer ({} sent)",
            last.0
        );
        std::thread::sleep(PIPELINE_STALL / 10);
        let now = sent.load(Ordering::SeqCst);
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
    let stalled_at = pipeline_start.elapsed();

    // Everyone else is fully served meanwhile, and memory stays bounded.
    assert_metadata_answered(broker);
    let mut other = RawConnection::open(broker);
    let fetched = fetch_values(&mut other, topic, 0);
    assert!(!fetched.is_empty() && fetched.iter().all(|v| *v == value));
    assert_round_trip(broker, "while-never-read");
    let rss_stalled = broker_rss_bytes(broker);
    assert!(
        rss_stalled < BROKER_RSS_BYTES_MAX,
        "broker RSS {rss_stalled} bytes (from {rss_start}) with a client that never reads"
    );

    // After WRITE_STALL_TIMEOUT the broker gives up on it and closes the connection.
    let cut_off = finished
        .recv_timeout(WRITE_STALL_TIMEOUT + TIMEOUT_MARGIN)
        .unwrap_or_else(|_| panic!("the never-reading client was not cut off ({} sent, stalled after {stalled_at:?}):\n{}", sent.load(Ordering::SeqCst), broker.log()));
    writer.join().expect("pipelining client");
    let cut_off_after = cut_off - pipeline_start;
    assert!(
        cut_off_after + TIMEOUT_EARLY_SLACK >= WRITE_STALL_TIMEOUT,
        "cut off after {cut_off_after:?}, before WRITE_STALL_TIMEOUT"
    );
    let sent = sent.load(Ordering::SeqCst);
    let mut answered = 0;
    loop {
        match reader.receive_within(RESPONSE_TIMEOUT) {
            Received::Frame(_) => answered += 1,
            // Cut off while a response was being written: it may end inside it.
            Received::Closed { .. } => break,
            Received::Silent => panic!("the cut-off connection is still open"),
        }
    }
    assert!(answered < sent, "{answered} of {sent} answered");
    eprintln!(
        "never-reading client: {sent} requests written, stalled after {stalled_at:?}, \
         cut off after {cut_off_after:?}, {answered} responses readable; \
         broker RSS {rss_start} -> {rss_stalled} bytes"
    );
    assert_round_trip(broker, "after-cut-off");
}

/// A connection that dies with requests queued behind a long-polling fetch: those requests
/// are dropped unfinished. They must be counted out of the broker's requests in flight, or
/// a graceful shutdown would wait out its whole drain timeout for requests that are gone.
#[test]
fn requests_dropped_with_their_connection_do_not_hold_up_shutdown() {
    let mut test = start_broker();
    let broker = &mut test.broker;
    let mut admin = RawConnection::open(broker);
    create_topic(&mut admin, "quiet", 1);
    drop(admin);

    // Fetches that each wait for data that never comes, pipelined on one connection.
    let mut long_poll = fetch_request("quiet", 0, 1024);
    if let Request::Fetch(fetch) = &mut long_poll {
        fetch.max_wait_ms = 1500;
        fetch.min_bytes = 1;
    }
    let mut doomed = RawConnection::open(broker);
    let frames: Vec<u8> = (1..=8)
        .flat_map(|correlation_id| request_frame(correlation_id, &long_poll, &[]))
        .collect();
    doomed.send(&frames);
    std::thread::sleep(Duration::from_millis(300));
    // A reset (SO_LINGER 0): the broker's write of the first answer fails, and the requests
    // queued behind it are dropped with the connection.
    socket2::SockRef::from(&doomed.stream)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER");
    drop(doomed);
    std::thread::sleep(Duration::from_secs(3));
    assert_round_trip(broker, "after-reset");

    assert!(broker.stop(), "graceful stop:\n{}", broker.log());
    let log = broker.log();
    assert!(
        !log.contains("still in flight"),
        "shutdown waited for requests that were dropped:\n{log}"
    );
    assert_eq!(
        log.matches("requests in flight drained").count(),
        2,
        "both shards drained:\n{log}"
    );
}

/// What a broker answered to a malformed replica fetch and to one for a partition it does
/// not lead (error names), for the cluster tests.
pub struct ReplicaFetchAnswers {
    pub malformed: String,
    pub not_leader: String,
}

/// Sends the two replica fetches to `address` on a raw connection.
pub fn replica_fetch_exchange(
    address: std::net::SocketAddr,
    topic: &str,
    partition: u32,
    epoch: u32,
) -> ReplicaFetchAnswers {
    use shardline::protocol::{ReplicaFetchPartition, ReplicaFetchRequest};
    let stream = TcpStream::connect(address).expect("connect to the broker");
    stream.set_nodelay(true).expect("TCP_NODELAY");
    let mut connection = RawConnection {
        stream,
        frames: FrameReader::new(),
    };
    let request = |fetch_offset: u64, durable_offset: u64| {
        Request::ReplicaFetch(ReplicaFetchRequest {
            replica: 99,
            max_wait_ms: 0,
            max_bytes: 1 << 20,
            partitions: vec![ReplicaFetchPartition {
                topic: topic.to_string(),
                partition,
                leader_epoch: epoch,
                fetch_offset,
                durable_offset,
                partition_max_bytes: 1 << 20,
            }],
        })
    };
    // A valid frame whose body starts with garbage (the topic name's bytes are no longer
    // UTF-8 and the archive no longer checks out).
    let mut malformed = request_frame(1, &request(0, 0), &[]);
    let honest = malformed.clone();
    let body_start = FRAME_HEADER_BYTES;
    for byte in &mut malformed[body_start..body_start + 8] {
        *byte = 0xFF;
    }
    assert_ne!(malformed, honest);
    connection.send(&malformed);
    let first = connection.receive();
    let malformed = match &first.response {
        Response::Error(error) => error.error.name().to_string(),
        other => format!("{other:?}"),
    };
    connection.send(&request_frame(2, &request(0, 0), &[]));
    let second = connection.receive();
    let not_leader = match &second.response {
        Response::ReplicaFetch(response) => response.partitions[0].error.name().to_string(),
        Response::Error(error) => error.error.name().to_string(),
        other => format!("{other:?}"),
    };
    ReplicaFetchAnswers {
        malformed,
        not_leader,
    }
}
