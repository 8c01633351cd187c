//! The group requests a coordinator serves, and what can go wrong in the group code.

use std::path::PathBuf;

use crate::protocol::{
    DescribeGroupRequest, ErrorCode, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest,
    OffsetCommitRequest, OffsetFetchRequest, ResetOffsetsRequest,
};

/// A request for one group's coordinator. FindCoordinator and ListGroups are answered by
/// whichever shard gets them, so they are not here.
#[derive(Debug)]
pub enum GroupRequest {
    Join(JoinGroupRequest),
    Heartbeat(HeartbeatRequest),
    Leave(LeaveGroupRequest),
    Commit(OffsetCommitRequest),
    FetchOffsets(OffsetFetchRequest),
    Describe(DescribeGroupRequest),
    Reset(ResetOffsetsRequest),
}

impl GroupRequest {
    /// The group this request is for.
    pub fn group(&self) -> &str {
        match self {
            GroupRequest::Join(r) => &r.group,
            GroupRequest::Heartbeat(r) => &r.group,
            GroupRequest::Leave(r) => &r.group,
            GroupRequest::Commit(r) => &r.group,
            GroupRequest::FetchOffsets(r) => &r.group,
            GroupRequest::Describe(r) => &r.group,
            GroupRequest::Reset(r) => &r.group,
        }
    }
}

/// Why an offsets partition could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OffsetLogError {
    #[error("opening offsets log {dir}: {reason}")]
    Open { dir: PathBuf, reason: String },
    #[error("replaying offsets log {dir} at offset {offset}: {reason}")]
    Replay {
        dir: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("building an offsets batch for {dir}: {reason}")]
    Build { dir: PathBuf, reason: String },
    #[error("appending to offsets log {dir}: {reason}")]
    Append { dir: PathBuf, reason: String },
    #[error("syncing offsets log {dir}: {reason}")]
    Sync { dir: PathBuf, reason: String },
    #[error("dropping offsets segments of {dir} below {offset}: {reason}")]
    Compact {
        dir: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("closing offsets log {dir}: {reason}")]
    Close { dir: PathBuf, reason: String },
    #[error("offsets log {dir} is closed")]
    Closed { dir: PathBuf },
}

/// Why a coordinator could not serve a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoordinatorError {
    #[error("the coordinator is loading offsets")]
    Loading,
    #[error("this shard does not coordinate group {group}")]
    NotCoordinator { group: String },
    #[error("group {group} has members: stop them first")]
    GroupNotEmpty { group: String },
    #[error("group {group}: {source}")]
    Storage {
        group: String,
        source: OffsetLogError,
    },
    #[error("closing the offsets logs: {0:?}")]
    Close(Vec<OffsetLogError>),
}

impl CoordinatorError {
    /// The wire error code a client gets for it.
    pub fn code(&self) -> ErrorCode {
        match self {
            CoordinatorError::Loading => ErrorCode::CoordinatorLoading,
            CoordinatorError::NotCoordinator { .. } => ErrorCode::NotCoordinator,
            CoordinatorError::GroupNotEmpty { .. } => ErrorCode::GroupNotEmpty,
            CoordinatorError::Storage { .. } | CoordinatorError::Close(_) => {
                ErrorCode::StorageError
            }
        }
    }
}
