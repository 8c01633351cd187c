//! Every limit shardline enforces, named in one place.
//!
//! A bare number in logic is a question waiting to be asked; the answer lives here.
//! Relations that must hold between limits are checked at compile time.

/// Alignment of every direct-IO write and read: the logical block size we assume.
pub const IO_ALIGNMENT_BYTES: u64 = 4096;

/// Size of the fixed record-batch header (see `record::header`).
pub const BATCH_HEADER_BYTES: usize = 80;

/// The largest record batch accepted anywhere (wire, log, replication).
pub const BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;

/// The largest uncompressed record-batch body a compressed batch may expand to.
pub const BATCH_UNCOMPRESSED_BYTES_MAX: usize = 16 * 1024 * 1024;

/// The most records one batch may hold.
pub const BATCH_RECORDS_MAX: u32 = 1 << 20;

/// The longest record key.
pub const RECORD_KEY_BYTES_MAX: usize = 64 * 1024;

/// The most headers one record may carry.
pub const RECORD_HEADERS_MAX: usize = 64;

/// The longest record-header key.
pub const RECORD_HEADER_KEY_BYTES_MAX: usize = 1024;

/// Default size at which the active segment rolls.
pub const SEGMENT_BYTES_DEFAULT: u64 = 1024 * 1024 * 1024;

/// The smallest segment size a topic may configure.
pub const SEGMENT_BYTES_MIN: u64 = 64 * 1024;

/// The largest segment size: positions inside a segment are stored as `u32`.
pub const SEGMENT_BYTES_MAX: u64 = u32::MAX as u64 - BATCH_BYTES_MAX as u64;

/// Default age at which the active segment rolls even if it is not full (7 days).
pub const SEGMENT_AGE_MS_DEFAULT: u64 = 7 * 24 * 3600 * 1000;

/// Space reserved on disk ahead of the writer, in one `fallocate`.
pub const SEGMENT_PREALLOCATE_BYTES: u64 = 16 * 1024 * 1024;

/// The smallest step by which space is reserved ahead of a segment's writer.
pub const PREALLOCATE_STEP_MIN_BYTES: u64 = 64 * 1024;

/// One sparse index entry per this many bytes of log.
pub const INDEX_INTERVAL_BYTES: u32 = 4096;

/// Default retention by time (30 days).
pub const RETENTION_MS_DEFAULT: u64 = 30 * 24 * 3600 * 1000;

/// Bytes of appended-but-unwritten data per partition before appends must wait.
pub const PARTITION_PENDING_BYTES_MAX: usize = 8 * 1024 * 1024;

/// The largest single direct-IO write the writer issues.
pub const WRITE_BYTES_MAX: usize = 1024 * 1024;

/// With a shard journal: a partition writes its journaled batches to its segment once they
/// add up to this many bytes, or once the oldest is `JOURNALED_WRITE_DELAY_MS` old.
pub const JOURNALED_WRITE_BYTES: usize = 1024 * 1024;
pub const JOURNALED_WRITE_DELAY_MS: u64 = 50;

/// With a shard journal: a partition with at least this many bytes to flush writes and
/// syncs its own segment instead (in the shard's flush round), as without a journal.
pub const JOURNAL_BYPASS_BYTES: usize = 64 * 1024;

/// Partitions whose segments a journal checkpoint writes and fdatasyncs at the same time:
/// enough for the device and the filesystem to serve their syncs together, few enough to
/// bound the write buffers in flight (each partition's unwritten batches, usually under
/// `JOURNALED_WRITE_BYTES`).
pub const JOURNAL_CHECKPOINT_CONCURRENCY: usize = 32;

/// Default byte budget of a shard's cache of recent batches.
pub const BATCH_CACHE_BYTES_DEFAULT: usize = 64 * 1024 * 1024;

/// Default number of segment files a shard keeps open at once.
pub const OPEN_SEGMENT_FILES_DEFAULT: usize = 1024;

/// The smallest read from disk a fetch issues.
pub const READ_WINDOW_MIN_BYTES: usize = 64 * 1024;

/// How much a read from disk fetches beyond the requested bytes at most (to find batch ends).
pub const READ_BYTES_MAX: usize = 8 * 1024 * 1024;

const _: () = assert!(SEGMENT_BYTES_MIN % IO_ALIGNMENT_BYTES == 0);
const _: () = assert!(SEGMENT_PREALLOCATE_BYTES % IO_ALIGNMENT_BYTES == 0);
const _: () = assert!(PREALLOCATE_STEP_MIN_BYTES % IO_ALIGNMENT_BYTES == 0);
const _: () = assert!(PREALLOCATE_STEP_MIN_BYTES <= SEGMENT_PREALLOCATE_BYTES);
const _: () = assert!(WRITE_BYTES_MAX as u64 % IO_ALIGNMENT_BYTES == 0);
const _: () = assert!(BATCH_BYTES_MAX < WRITE_BYTES_MAX * 8);
const _: () = assert!(PARTITION_PENDING_BYTES_MAX >= 2 * BATCH_BYTES_MAX);
const _: () = assert!(READ_BYTES_MAX >= 2 * BATCH_BYTES_MAX);
const _: () =
    assert!(READ_WINDOW_MIN_BYTES >= BATCH_HEADER_BYTES && READ_WINDOW_MIN_BYTES <= READ_BYTES_MAX);
const _: () = assert!(BATCH_HEADER_BYTES % 8 == 0);

/// glommio io memory (registered buffers) of a command-line executor; memlock is often 8 MiB.
pub const CLI_IO_MEMORY_BYTES: usize = 2 * 1024 * 1024;

// Protocol ------------------------------------------------------------------------------------
// Limits of the wire protocol (`protocol`). Every list and string a peer sends is checked
// against one of these before the message is used; the frame limits are checked before any
// buffer is allocated for the frame.

/// Size of the fixed frame header: the `u32` frame length, then 16 bytes it counts.
pub const FRAME_HEADER_BYTES: usize = 20;

/// The largest `frame_length` (bytes after the length field) a frame may declare.
pub const FRAME_BYTES_MAX: usize = 64 * 1024 * 1024;

/// The largest rkyv body of one frame (the trailer of record batches is not counted).
pub const BODY_BYTES_MAX: usize = 4 * 1024 * 1024;

/// The longest topic name (characters `[a-zA-Z0-9._-]`, and never `.` or `..`).
pub const TOPIC_NAME_BYTES_MAX: usize = 249;
/// The longest principal or resource name in an access rule.
pub const ACL_NAME_BYTES_MAX: usize = 256;
/// Access rules one AlterAcls request may add and remove together.
pub const ACLS_PER_REQUEST_MAX: usize = 1_000;
/// Quotas one AlterQuotas request may set together.
pub const QUOTAS_PER_REQUEST_MAX: usize = 1_000;
/// Quotas a cluster keeps.
pub const QUOTAS_MAX: usize = 100_000;
/// The longest a response is delayed for a quota: a client far over its quota waits this
/// long per request, and its debt is forgiven past it.
pub const QUOTA_THROTTLE_MS_MAX: u64 = 30_000;
/// The burst a quota allows: this many seconds of its rate.
pub const QUOTA_BURST_S: u64 = 1;
/// Users one AlterUsers request may store and remove together.
pub const USERS_PER_REQUEST_MAX: usize = 1_000;
/// Users a cluster keeps (and DescribeUsers returns).
pub const USERS_MAX: usize = 100_000;
/// Access rules a cluster keeps (and DescribeAcls returns).
pub const ACLS_MAX: usize = 100_000;

/// The most topics one request or response names.
pub const TOPICS_PER_REQUEST_MAX: usize = 10_000;

/// The most partitions one topic may have (and one metadata entry may list).
pub const PARTITIONS_PER_TOPIC_MAX: usize = 10_000;

/// The most partition entries one request or response carries, over all its topics.
pub const PARTITIONS_PER_REQUEST_MAX: usize = 100_000;

/// The most configuration entries per topic in one request or response.
pub const CONFIG_ENTRIES_MAX: usize = 256;

/// The longest configuration key.
pub const CONFIG_KEY_BYTES_MAX: usize = 256;

/// The longest configuration value.
pub const CONFIG_VALUE_BYTES_MAX: usize = 4096;

/// The longest client id a client may announce in its handshake.
pub const CLIENT_ID_BYTES_MAX: usize = 256;

/// The longest software version string a handshake may carry.
pub const SOFTWARE_VERSION_BYTES_MAX: usize = 64;

/// The most api version ranges one handshake may list.
pub const HANDSHAKE_APIS_MAX: usize = 1024;

/// The longest host name in broker metadata.
pub const HOST_BYTES_MAX: usize = 255;

/// The most brokers one metadata response lists.
pub const BROKERS_PER_RESPONSE_MAX: usize = 1024;

/// The most shards (and so shard ports) one broker announces.
pub const SHARDS_PER_BROKER_MAX: usize = 1024;

/// The most replicas (and in-sync replicas) one partition lists.
pub const REPLICAS_PER_PARTITION_MAX: usize = 16;

/// The longest human-readable error message in a response.
pub const ERROR_MESSAGE_BYTES_MAX: usize = 1024;

/// Requests a client may have sent on one connection without their responses; the server
/// reads no further frames from a connection while this many are being processed.
pub const IN_FLIGHT_REQUESTS_MAX: usize = 64;

/// The most pieces (a response's head and its batches) one vectored `sendmsg` carries;
/// within Linux's `IOV_MAX` (1024). A response with more is sent in several calls.
pub const SEND_IOVECS_MAX: usize = 64;

/// What the socket did not take of a response is written through a buffer of this size:
/// smaller batches are gathered into one write (one TLS record holds up to 16 KiB), larger
/// ones go out as they are.
pub const RESPONSE_WRITE_GATHER_BYTES: usize = 16 * 1024;

/// The unit in which a frame reader allocates its receive buffer for small frames (a frame
/// larger than this gets one buffer of exactly its own size).
pub const FRAME_READ_CHUNK_BYTES: usize = 64 * 1024;

/// The most a frame reader lends for one read through a stream (`buffer_to_fill`): it
/// zero-fills what it lends the first time, so lending a large frame's whole region at
/// once would zero-fill all of it ahead of the data.
pub const FRAME_READ_WINDOW_BYTES: usize = 64 * 1024;

/// The most trailer bytes (record batches) a frame may carry whatever its body: a fetch
/// response keeps its batches within this. (`frame_length` does not count its own 4 bytes.)
pub const FRAME_TRAILER_BYTES_MAX: usize =
    FRAME_BYTES_MAX - (FRAME_HEADER_BYTES - 4) - BODY_BYTES_MAX;

const _: () = assert!(FRAME_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(BODY_BYTES_MAX <= FRAME_BYTES_MAX - (FRAME_HEADER_BYTES - 4));
// A frame with a full body still has room for at least one batch of the largest size.
const _: () = assert!(FRAME_TRAILER_BYTES_MAX >= BATCH_BYTES_MAX);
/// A produced batch at least this large is stored where it arrived (a view of the
/// connection's receive buffer: no copy before the write to disk); a smaller one is copied
/// out first, so that a batch held in the log's cache keeps at most 4x its own size of
/// receive buffer alive (a frame smaller than a chunk shares the chunk with others).
pub const BATCH_ZERO_COPY_BYTES_MIN: usize = FRAME_READ_CHUNK_BYTES / 4;

const _: () = assert!(FRAME_READ_CHUNK_BYTES >= FRAME_HEADER_BYTES);
const _: () = assert!(PARTITIONS_PER_TOPIC_MAX <= PARTITIONS_PER_REQUEST_MAX);

// ---------------------------------------------------------------------------------------
// Consumer groups
// ---------------------------------------------------------------------------------------

/// The longest group id (characters `[a-zA-Z0-9._-]`, like topic names).
pub const GROUP_ID_BYTES_MAX: usize = 255;

/// The longest member id the coordinator hands out (and accepts back).
pub const MEMBER_ID_BYTES_MAX: usize = 64;

/// The longest static instance id a member may bring.
pub const INSTANCE_ID_BYTES_MAX: usize = 255;

/// The longest application metadata string stored with a committed offset.
pub const COMMIT_METADATA_BYTES_MAX: usize = 1024;

/// The most members one group may have; a join past it is refused.
pub const GROUP_MEMBERS_MAX: usize = 1000;

/// The most groups one response lists.
pub const GROUPS_PER_RESPONSE_MAX: usize = 100_000;

/// The most groups one coordinator shard keeps; joins and commits of new groups past it
/// are refused, so memory stays bounded.
pub const GROUPS_PER_SHARD_MAX: usize = 100_000;

/// The allowed range of a member's session timeout: missing heartbeats for this long
/// removes it.
pub const SESSION_TIMEOUT_MS_MIN: u32 = 500;
pub const SESSION_TIMEOUT_MS_MAX: u32 = 300_000;

/// The allowed range of a member's rebalance timeout: how long it may take to give back
/// partitions it was asked to give back before it is removed.
pub const REBALANCE_TIMEOUT_MS_MIN: u32 = 500;
pub const REBALANCE_TIMEOUT_MS_MAX: u32 = 600_000;

/// Heartbeats are asked for this many times per session timeout, and at least every
/// `HEARTBEAT_INTERVAL_MS_MAX`: a member learns of a rebalance at its next heartbeat, so
/// this interval bounds how long a rebalance waits for members to notice it.
pub const HEARTBEATS_PER_SESSION: u32 = 3;
pub const HEARTBEAT_INTERVAL_MS_MAX: u32 = 250;

/// The name the offsets log's partitions are placed under (and its directory).
pub const OFFSETS_TOPIC_NAME: &str = "__offsets";

/// The partitions of the internal offsets log (`<data>/__offsets/<n>`). A group's offsets
/// live in partition `crc32c(group) % OFFSETS_PARTITIONS`, and its coordinator is the shard
/// that owns that partition. Fixed: changing it would move every group.
pub const OFFSETS_PARTITIONS: u32 = 8;

/// Segment size of the offsets log: small, so that a snapshot lets old segments go soon.
pub const OFFSETS_SEGMENT_BYTES: u64 = 4 * 1024 * 1024;
/// The offsets log's segments roll by size (a snapshot then lets the old ones go), not age.
pub const OFFSETS_SEGMENT_AGE_MS: u64 = 7 * 24 * 3600 * 1000;

/// An offsets partition writes a snapshot of its live offsets (and drops the segments
/// below it) once it has appended this many commit records since the last one, or twice
/// its live entries if that is more.
pub const OFFSETS_SNAPSHOT_RECORDS_MIN: u64 = 20_000;

/// The most records in one batch of the offsets log (commits and snapshots).
pub const OFFSETS_RECORDS_PER_BATCH_MAX: usize = 1000;

const _: () = assert!(SESSION_TIMEOUT_MS_MIN <= SESSION_TIMEOUT_MS_MAX);
const _: () = assert!(REBALANCE_TIMEOUT_MS_MIN <= REBALANCE_TIMEOUT_MS_MAX);
const _: () = assert!(OFFSETS_SEGMENT_BYTES % 4096 == 0);
const _: () = assert!(GROUP_MEMBERS_MAX <= GROUPS_PER_RESPONSE_MAX);

// ---------------------------------------------------------------------------------------
// Shard runtime: the mesh between cores
// ---------------------------------------------------------------------------------------

/// Messages one shard-to-shard channel holds before its sender waits.
pub const MESH_CHANNEL_CAPACITY: usize = 1024;

/// Messages of ordinary work (appends, reads, group and catalogue changes) a shard runs at
/// once for one other shard; past it, it stops reading that shard's channel (backpressure).
pub const MESH_WORK_IN_FLIGHT_PER_SOURCE: usize = 256;

/// Long waits (fetches parked until data arrives) a shard holds at once for one other
/// shard. Apart from ordinary work, so that parked fetches never starve appends.
pub const MESH_WAITS_PER_SOURCE: usize = 4096;

// ---------------------------------------------------------------------------------------
// Timeouts and intervals (`_DEFAULT`: a tuning-profile field overrides it)
// ---------------------------------------------------------------------------------------

/// A client that has sent part of a frame must send the rest within this time.
pub const FRAME_COMPLETION_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// A connection with nothing in flight is closed after this long without a request.
pub const CONNECTION_IDLE_TIMEOUT_MS_DEFAULT: u64 = 600_000;
/// A client must accept response bytes within this time, or it is disconnected.
pub const WRITE_STALL_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// How long a graceful shutdown waits for requests in flight before it closes anyway.
pub const SHUTDOWN_DRAIN_TIMEOUT_MS_DEFAULT: u64 = 10_000;

/// Partitions a shard closes at once during a graceful shutdown.
pub const SHUTDOWN_CLOSE_CONCURRENCY: usize = 64;

/// The longest a produce may wait for its acknowledgement, whatever the client asks.
pub const PRODUCE_TIMEOUT_MS_MAX: u64 = 60_000;
/// The longest a fetch may wait for data, whatever the client asks.
pub const FETCH_WAIT_MS_MAX: u64 = 30_000;
/// Fetch sessions one connection may hold; opening one more evicts its least recently
/// used (`server::fetch_session`).
pub const FETCH_SESSIONS_PER_CONNECTION_MAX: usize = 8;
/// Session partitions one shard holds over all its connections (about 150 bytes each):
/// past it, fetches are answered without a session.
pub const FETCH_SESSION_PARTITIONS_PER_SHARD_MAX: usize = 200_000;

/// How often shards look at the shutdown flag.
pub const SHUTDOWN_POLL_MS: u64 = 50;
/// How long a graceful stop waits for the controller to move this broker's leaderships
/// (a controlled shutdown) before it stops anyway.
pub const CONTROLLED_SHUTDOWN_MS: u64 = 5_000;
/// How often retention runs over a shard's partitions.
pub const RETENTION_INTERVAL_MS: u64 = 300_000;
/// The shortest retention interval a broker accepts.
pub const RETENTION_INTERVAL_MS_MIN: u64 = 100;
/// How often a coordinator looks for group members past their timeouts.
pub const GROUP_SWEEP_INTERVAL_MS: u64 = 100;
/// How long an accept loop pauses after a failed accept (out of descriptors, say).
pub const ACCEPT_RETRY_MS: u64 = 10;
/// How often a starting shard looks whether the catalogue has arrived, and the controller
/// whether every shard is ready; and how often shutdown looks at requests in flight.
pub const STARTUP_POLL_MS: u64 = 1;
/// The latency a shard's request task queue asks of the scheduler.
pub const REQUEST_QUEUE_LATENCY_MS: u64 = 1;

/// A flush round slower than this is counted (`IoStats::slow_rounds`) and logged with where
/// its time went.
pub const SLOW_FLUSH_ROUND_MS: u64 = 1_000;
/// A partition's recovery point is written at most this often (after a sync).
pub const RECOVERY_POINT_INTERVAL_MS: u64 = 10_000;
/// How often an IO waiting for one of the shard's open-file slots looks again.
pub const OPEN_FILE_SLOT_RETRY_MS: u64 = 1;

/// How often a producer's batch that overtook earlier ones (and was refused as out of
/// sequence) looks whether they have settled, before it is sent again.
pub const PRODUCER_PREDECESSOR_POLL_MS: u64 = 1;

/// A produce request gathers the batches that leave for one broker address at about the same
/// time (`client::outbox`) up to this many bytes of batches.
pub const PRODUCE_REQUEST_BYTES_MAX: usize = 1024 * 1024;
/// A batch this large or larger is sent in a produce request of its own.
pub const PRODUCE_GATHER_BATCH_BYTES_MAX: usize = 64 * 1024;
/// How many passes over the client executor's ready tasks a produce request waits for more
/// batches to join it; it leaves sooner once a pass added none.
pub const PRODUCE_GATHER_PASSES_MAX: usize = 16;

/// Bytes read per step when a log is replayed at open (producer state, group offsets, the
/// metadata catalogue).
pub const LOG_REPLAY_READ_BYTES: usize = 1024 * 1024;

/// A metrics scrape must send its request within this time (and take the answer).
/// How long a scrape waits for the high watermarks behind the groups' lag (partitions led
/// elsewhere are asked of their leaders); past it, lag is left out of that scrape.
pub const METRICS_GROUP_LAG_TIMEOUT_MS: u64 = 2_000;
/// Client connections one shard holds at once; more are closed at accept (and counted).
pub const CONNECTIONS_PER_SHARD_MAX: usize = 50_000;
pub const METRICS_REQUEST_TIMEOUT_MS: u64 = 5_000;
/// The longest request head the metrics endpoint reads.
pub const METRICS_REQUEST_BYTES_MAX: usize = 8 * 1024;

/// The client's connection attempt gives up after this long.
pub const CLIENT_CONNECT_TIMEOUT_MS: u64 = 10_000;
/// How long past a request's own timeout (produce) or wait (fetch) a client waits for the
/// answer before it gives the connection up (a broker paused or cut off answers nothing).
pub const CLIENT_ANSWER_MARGIN_MS: u64 = 2_000;
/// How long a client waits for one bootstrap broker's metadata before it asks the next.
pub const CLIENT_METADATA_TIMEOUT_MS: u64 = 3_000;
/// How long an admin request (topic and group administration, offset lookups) may wait
/// for its answer before the connection is given up.
pub const ADMIN_REQUEST_TIMEOUT_MS: u64 = 15_000;

const _: () = assert!(FRAME_COMPLETION_TIMEOUT_MS_DEFAULT <= CONNECTION_IDLE_TIMEOUT_MS_DEFAULT);

// ---------------------------------------------------------------------------------------
// Idempotent producers
// ---------------------------------------------------------------------------------------

/// The most recent batches remembered per producer (and partition). A retry of one of
/// them is answered with its original offsets; a retry of an older one is out of order.
/// A producer keeps at most this many batches in flight per partition.
pub const PRODUCER_BATCHES_REMEMBERED: usize = 5;

/// How long a producer's message may take to be acknowledged, retries included, unless
/// `ProducerConfig::delivery_timeout` says otherwise (Kafka's `delivery.timeout.ms` is
/// also two minutes).
pub const PRODUCER_DELIVERY_TIMEOUT_S_DEFAULT: u64 = 120;

/// Producer ids the controller reserves in the metadata log at once (a restart skips what
/// was left of the block).
pub const PRODUCER_ID_BLOCK: u64 = 1000;

/// The most producers whose state one partition keeps. Past it, the least recently active
/// producer is forgotten (its next batch is accepted with any sequence).
pub const PRODUCERS_PER_PARTITION_MAX: usize = 10_000;

/// Default idle time after which a producer's state is dropped (1 day).
pub const PRODUCER_IDLE_MS_DEFAULT: i64 = 24 * 3600 * 1000;

// A snapshot stores a producer's batch count in one byte.
const _: () = assert!(PRODUCER_BATCHES_REMEMBERED >= 1 && PRODUCER_BATCHES_REMEMBERED <= 255);
const _: () =
    assert!(PRODUCERS_PER_PARTITION_MAX >= 1 && PRODUCERS_PER_PARTITION_MAX <= u32::MAX as usize);
// The remembered batches and one more, each at most a full batch of sequences, never go
// round the sequence space (2^31): a range that starts at the expected sequence cannot
// overlap a remembered batch.
const _: () = assert!(
    (PRODUCER_BATCHES_REMEMBERED as u64 + 1) * (BATCH_RECORDS_MAX as u64) < i32::MAX as u64
);

// ---- The cluster: controller (Raft) and replication ----

/// How often the controller's Raft node ticks.
pub const CONTROLLER_TICK_MS: u64 = 100;
/// Ticks without a leader's word before a follower campaigns (1 s; raft randomizes it up
/// to twice that).
pub const CONTROLLER_ELECTION_TICKS: usize = 10;
/// Ticks between the leader's heartbeats.
pub const CONTROLLER_HEARTBEAT_TICKS: usize = 2;
/// How long a proposal may take to be committed and applied.
pub const CONTROLLER_PROPOSAL_TIMEOUT_MS: u64 = 5_000;
/// Applied entries between two controller snapshots (each compacts the log).
pub const CONTROLLER_SNAPSHOT_EVERY_ENTRIES: u64 = 1_000;
/// How often each broker heartbeats the controller leader.
pub const BROKER_HEARTBEAT_INTERVAL_MS: u64 = 500;
/// A broker whose heartbeats stop for this long is fenced (shown dead).
pub const BROKER_SESSION_TIMEOUT_MS: u64 = 6_000;
/// The most Raft messages queued for one peer; more are dropped (Raft resends).
pub const CONTROLLER_PEER_QUEUE_MAX: usize = 4_096;
/// The largest frame on the internal (controller) listener.
pub const INTERNAL_FRAME_BYTES_MAX: usize = 64 * 1024 * 1024;
/// How long connecting to another voter's internal listener (TLS handshake included) may
/// take.
pub const INTERNAL_CONNECT_TIMEOUT_MS: u64 = 1_000;
/// How long a controller call forwarded to the leader may take.
pub const CONTROLLER_CALL_TIMEOUT_MS: u64 = 10_000;
/// Attempts a forwarded controller call makes while leadership settles.
pub const CONTROLLER_CALL_ATTEMPTS: usize = 20;
/// Pause between attempts of a forwarded controller call.
pub const CONTROLLER_CALL_RETRY_MS: u64 = 100;
/// How long the controller leader holds an observer's image request open waiting for a
/// change (a long poll); the observer asks again at once.
pub const OBSERVER_FETCH_WAIT_MS: u64 = 1_000;
const _: () = assert!(OBSERVER_FETCH_WAIT_MS < CONTROLLER_CALL_TIMEOUT_MS);
/// How long a follower's data fetch may wait at the leader for new batches.
pub const REPLICA_FETCH_WAIT_MS: u32 = 500;
/// The most trailer bytes one replica fetch asks for (bounds a session's memory).
pub const REPLICA_FETCH_BYTES_MAX: u32 = 8 * 1024 * 1024;
/// The most trailer bytes one partition of a replica fetch asks for.
pub const REPLICA_FETCH_PARTITION_BYTES_MAX: u32 = 4 * 1024 * 1024;
/// How long a follower leaves a partition alone after its leader refused it, and waits
/// before reconnecting.
pub const REPLICA_FETCH_BACKOFF_MS: u64 = 200;
/// Leader-epoch questions a follower asks per partition before it backs off (each round
/// cuts at least one epoch off its log, so a healthy reconciliation needs few).
pub const RECONCILE_ROUNDS_MAX: usize = 64;
/// How often a leader checks its followers' lag for the in-sync set.
pub const IN_SYNC_CHECK_INTERVAL_MS: u64 = 250;
/// How long a consumer waits before fetching again after a retriable error (a leader
/// moved, a broker away).
pub const CONSUMER_RETRY_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);
/// Replicas a shard opens (recovers) at once when a catalogue gives it new ones. One: each
/// recovery reads with DMA buffers from the shard's io memory (a few MiB under an 8 MiB
/// memlock), and 64 at once ran it out ("Operation not supported" reading a segment, the
/// broker then exiting) when 2,000 partitions restarted on 2 shards.
pub const REPLICAS_OPENED_AT_ONCE: usize = 1;
