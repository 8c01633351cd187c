//! Group administration: list, describe, read and reset a group's offsets.

use super::admin::Admin;
use super::error::ClientError;
use crate::protocol::{
    CommittedOffset, DescribeGroupRequest, DescribeGroupResponse, ErrorCode, GroupListing,
    ListGroupsRequest, OffsetFetchRequest, Request, ResetOffsetsRequest, ResetResult, ResetTo,
    Response,
};

/// Attempts at a group request while its coordinator moves or loads.
const COORDINATOR_ATTEMPTS: u32 = 50;
const COORDINATOR_RETRY_BACKOFF: std::time::Duration = std::time::Duration::from_millis(200);

fn refused(code: ErrorCode, message: String) -> ClientError {
    ClientError::from_code(code, message)
}

fn unexpected(what: &str, response: &Response) -> ClientError {
    ClientError::Protocol(format!("{what} answered with {:?}", response.api_key()))
}

impl Admin {
    /// Sends a group request to the group's coordinator (found first), retrying while the
    /// coordinator moves or loads.
    async fn call_coordinator(
        &self,
        group: &str,
        request: Request,
    ) -> Result<Response, ClientError> {
        let mut attempt = 0;
        loop {
            let answer = async {
                let address = super::group::coordinator_address(self.cluster(), group).await?;
                let connection = self.cluster().connection(address).await?;
                Ok::<_, ClientError>(connection.request(&request, &[]).await?.response)
            }
            .await;
            let retriable = match &answer {
                Err(error) => error.is_retriable(),
                Ok(Response::Error(error)) => matches!(
                    error.error,
                    ErrorCode::NotCoordinator | ErrorCode::CoordinatorLoading
                ),
                Ok(_) => false,
            };
            if !retriable || attempt >= COORDINATOR_ATTEMPTS {
                return answer;
            }
            attempt += 1;
            glommio::timer::sleep(COORDINATOR_RETRY_BACKOFF).await;
        }
    }

    /// Every group the cluster's brokers coordinate (each broker is asked).
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>, ClientError> {
        let metadata = self.cluster().refresh_metadata().await?;
        let mut groups = Vec::new();
        for broker in &metadata.brokers {
            let address = self.cluster().broker_address(broker);
            let connection = self.cluster().connection(address).await?;
            let response = connection
                .request(&Request::ListGroups(ListGroupsRequest {}), &[])
                .await?
                .response;
            match response {
                Response::ListGroups(list) if list.error == ErrorCode::None => {
                    groups.extend(list.groups)
                }
                Response::ListGroups(list) => {
                    return Err(refused(list.error, "list groups".into()))
                }
                Response::Error(error) => return Err(refused(error.error, error.message)),
                other => return Err(unexpected("list groups", &other)),
            }
        }
        groups.sort_by(|a, b| a.group.cmp(&b.group));
        Ok(groups)
    }

    /// A group's state, members, assignments, committed offsets and lag.
    pub async fn describe_group(&self, group: &str) -> Result<DescribeGroupResponse, ClientError> {
        let request = Request::DescribeGroup(DescribeGroupRequest {
            group: group.to_string(),
        });
        match self.call_coordinator(group, request).await? {
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
        match self.call_coordinator(group, request).await? {
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
        match self.call_coordinator(group, request).await? {
            Response::ResetOffsets(reset) if reset.error == ErrorCode::None => Ok(reset.partitions),
            Response::ResetOffsets(reset) => Err(refused(reset.error, reset.message)),
            Response::Error(error) => Err(refused(error.error, error.message)),
            other => Err(unexpected("reset offsets", &other)),
        }
    }
}
