//! Group administration: list, describe, read and reset a group's offsets.

use super::admin::Admin;
use super::error::ClientError;
use crate::protocol::{
    CommittedOffset, DescribeGroupRequest, DescribeGroupResponse, ErrorCode, GroupListing,
    ListGroupsRequest, OffsetFetchRequest, Request, ResetOffsetsRequest, ResetResult, ResetTo,
    Response,
};

fn refused(code: ErrorCode, message: String) -> ClientError {
    ClientError::from_code(code, message)
}

fn unexpected(what: &str, response: &Response) -> ClientError {
    ClientError::Protocol(format!("{what} answered with {:?}", response.api_key()))
}

impl Admin {
    /// Every group the broker coordinates.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>, ClientError> {
        match self.call(Request::ListGroups(ListGroupsRequest {})).await? {
            Response::ListGroups(list) if list.error == ErrorCode::None => Ok(list.groups),
            Response::ListGroups(list) => Err(refused(list.error, "list groups".into())),
            Response::Error(error) => Err(refused(error.error, error.message)),
            other => Err(unexpected("list groups", &other)),
        }
    }

    /// A group's state, members, assignments, committed offsets and lag.
    pub async fn describe_group(&self, group: &str) -> Result<DescribeGroupResponse, ClientError> {
        let request = Request::DescribeGroup(DescribeGroupRequest {
            group: group.to_string(),
        });
        match self.call(request).await? {
            Response::DescribeGroup(described) if described.error == ErrorCode::None => {
                Ok(described)
            }
            Response::DescribeGroup(described) => Err(refused(described.error, described.message)),
            Response::Error(error) => Err(refused(error.error, error.message)),
            other => Err(unexpected("describe group", &other)),
        }
    }

    /// A group's committed offsets (all of them).
    pub async fn group_offsets(&self, group: &str) -> Result<Vec<CommittedOffset>, ClientError> {
        let request = Request::OffsetFetch(OffsetFetchRequest {
            group: group.to_string(),
            partitions: None,
        });
        match self.call(request).await? {
            Response::OffsetFetch(fetched) if fetched.error == ErrorCode::None => {
                Ok(fetched.offsets)
            }
            Response::OffsetFetch(fetched) => Err(refused(fetched.error, fetched.message)),
            Response::Error(error) => Err(refused(error.error, error.message)),
            other => Err(unexpected("offset fetch", &other)),
        }
    }

    /// Moves a group's offsets of a topic (all partitions when `partitions` is `None`).
    /// Refused with `GroupNotEmpty` while the group has members.
    pub async fn reset_offsets(
        &self,
        group: &str,
        topic: &str,
        partitions: Option<Vec<u32>>,
        to: ResetTo,
        dry_run: bool,
    ) -> Result<Vec<ResetResult>, ClientError> {
        let request = Request::ResetOffsets(ResetOffsetsRequest {
            group: group.to_string(),
            topic: topic.to_string(),
            partitions,
            to,
            dry_run,
        });
        match self.call(request).await? {
            Response::ResetOffsets(reset) if reset.error == ErrorCode::None => Ok(reset.partitions),
            Response::ResetOffsets(reset) => Err(refused(reset.error, reset.message)),
            Response::Error(error) => Err(refused(error.error, error.message)),
            other => Err(unexpected("reset offsets", &other)),
        }
    }
}
