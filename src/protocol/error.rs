//! Why a frame's body was refused (`ProtocolError`) or could not be encoded (`EncodeError`).
//!
//! A `ProtocolError` leaves the connection usable: the frame was whole, only its content was
//! wrong, so the server answers with an `ErrorResponse` carrying `error_code()` and the
//! error's text, and reads the next frame. (A `FrameError` is different: see `frame`.)

use super::api::{ApiKey, VersionRange};
use super::error_code::ErrorCode;

/// Why a topic name is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicNameError {
    #[error("topic name is empty")]
    Empty,
    #[error("topic name of {len} bytes exceeds {max}")]
    TooLong { len: usize, max: usize },
    #[error("topic name may not be \".\" or \"..\"")]
    Reserved,
    #[error("topic name has byte {byte:#04x} at {index}, outside [a-zA-Z0-9._-]")]
    InvalidCharacter { byte: u8, index: usize },
}

/// Why the body of a whole frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("api key {api_key} is not supported")]
    UnsupportedApi { api_key: u16 },
    #[error("{api} version {version} is not supported (supported: {supported})")]
    UnsupportedVersion {
        api: ApiKey,
        version: u16,
        supported: VersionRange,
    },
    #[error("expected a {} frame, got the other kind", if *.expected_response { "response" } else { "request" })]
    WrongDirection { expected_response: bool },
    #[error("{api} body is not a valid archive: {reason}")]
    InvalidBody { api: ApiKey, reason: String },
    #[error(transparent)]
    InvalidTopicName(#[from] TopicNameError),
    #[error("{what} has {count} entries, more than {max}")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
    #[error("{what} of {len} bytes exceeds {max}")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{what} is invalid: {reason}")]
    InvalidValue { what: &'static str, reason: String },
    #[error("partition count {0} is outside 1..=PARTITIONS_PER_TOPIC_MAX")]
    InvalidPartitionCount(u32),
    #[error("replication factor {0} is above REPLICAS_PER_PARTITION_MAX")]
    InvalidReplicationFactor(u16),
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    #[error("the body claims {claimed} trailer bytes, the frame carries {actual}")]
    TrailerMismatch { claimed: u64, actual: usize },
    #[error("invalid group id: {0}")]
    InvalidGroupId(String),
    #[error("{what} {value_ms} ms is outside {min_ms}..={max_ms}")]
    InvalidTimeout {
        what: &'static str,
        value_ms: u32,
        min_ms: u32,
        max_ms: u32,
    },
}

impl ProtocolError {
    /// The code a server answers this error with.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            ProtocolError::UnsupportedApi { .. } => ErrorCode::UnsupportedApi,
            ProtocolError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            ProtocolError::InvalidTopicName(_) => ErrorCode::InvalidTopicName,
            ProtocolError::InvalidPartitionCount(_) => ErrorCode::InvalidPartitionCount,
            ProtocolError::InvalidReplicationFactor(_) => ErrorCode::InvalidReplicationFactor,
            ProtocolError::InvalidConfig(_) => ErrorCode::InvalidConfig,
            ProtocolError::InvalidGroupId(_) => ErrorCode::InvalidGroupId,
            ProtocolError::InvalidTimeout { .. } => ErrorCode::InvalidSessionTimeout,
            ProtocolError::WrongDirection { .. }
            | ProtocolError::InvalidBody { .. }
            | ProtocolError::TooMany { .. }
            | ProtocolError::TooLong { .. }
            | ProtocolError::InvalidValue { .. }
            | ProtocolError::TrailerMismatch { .. } => ErrorCode::InvalidRequest,
        }
    }
}

/// Why a message could not be encoded. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The message breaks a rule its receiver checks (the same checks `decode_*` runs), or
    /// names a version this build does not speak.
    #[error("message would be refused by its receiver: {0}")]
    Invalid(#[from] ProtocolError),
    #[error("body of {len} bytes exceeds BODY_BYTES_MAX")]
    BodyTooLarge { len: usize },
    #[error("frame of {frame_length} bytes (after the length field) exceeds FRAME_BYTES_MAX")]
    FrameTooLarge { frame_length: usize },
    #[error("rkyv could not serialize the body: {0}")]
    Serialize(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_their_codes() {
        let cases = [
            (
                ProtocolError::UnsupportedApi { api_key: 9 },
                ErrorCode::UnsupportedApi,
            ),
            (
                ProtocolError::UnsupportedVersion {
                    api: ApiKey::Fetch,
                    version: 3,
                    supported: ApiKey::Fetch.versions(),
                },
                ErrorCode::UnsupportedVersion,
            ),
            (
                ProtocolError::InvalidTopicName(TopicNameError::Empty),
                ErrorCode::InvalidTopicName,
            ),
            (
                ProtocolError::InvalidPartitionCount(0),
                ErrorCode::InvalidPartitionCount,
            ),
            (
                ProtocolError::InvalidConfig("x".into()),
                ErrorCode::InvalidConfig,
            ),
            (
                ProtocolError::TrailerMismatch {
                    claimed: 1,
                    actual: 0,
                },
                ErrorCode::InvalidRequest,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(error.error_code(), code, "{error}");
        }
    }
}
