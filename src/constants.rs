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

/// One sparse index entry per this many bytes of log.
pub const INDEX_INTERVAL_BYTES: u32 = 4096;

/// Default retention by time (30 days).
pub const RETENTION_MS_DEFAULT: u64 = 30 * 24 * 3600 * 1000;

/// Bytes of appended-but-unwritten data per partition before appends must wait.
pub const PARTITION_PENDING_BYTES_MAX: usize = 8 * 1024 * 1024;

/// The largest single direct-IO write the writer issues.
pub const WRITE_BYTES_MAX: usize = 1024 * 1024;

/// Default byte budget of a shard's cache of recent batches.
pub const BATCH_CACHE_BYTES_DEFAULT: usize = 64 * 1024 * 1024;

/// Default number of segment files a shard keeps open at once.
pub const OPEN_SEGMENT_FILES_DEFAULT: usize = 1024;

/// How much a read from disk fetches beyond the requested bytes at most (to find batch ends).
pub const READ_BYTES_MAX: usize = 8 * 1024 * 1024;

const _: () = assert!(SEGMENT_BYTES_MIN % IO_ALIGNMENT_BYTES == 0);
const _: () = assert!(SEGMENT_PREALLOCATE_BYTES % IO_ALIGNMENT_BYTES == 0);
const _: () = assert!(WRITE_BYTES_MAX as u64 % IO_ALIGNMENT_BYTES == 0);
const _: () = assert!(BATCH_BYTES_MAX < WRITE_BYTES_MAX * 8);
const _: () = assert!(PARTITION_PENDING_BYTES_MAX >= 2 * BATCH_BYTES_MAX);
const _: () = assert!(READ_BYTES_MAX >= 2 * BATCH_BYTES_MAX);
const _: () = assert!(BATCH_HEADER_BYTES % 8 == 0);

/// glommio io memory (registered buffers) of a command-line executor; memlock is often 8 MiB.
pub const CLI_IO_MEMORY_BYTES: usize = 2 * 1024 * 1024;
