//! Checks a request against the access rules (`crate::security::acl`) before it runs: a
//! request any part of which is not allowed is refused whole, with an authorization error
//! naming what was missing, and has no effect. Metadata is the exception: it lists only the
//! topics the principal may describe.

use super::context::ShardContext;
use crate::protocol::{AclOperation, ErrorCode, ErrorResponse, Request, ResourceKind};
use crate::security::acl::CLUSTER_NAME;

/// What one request needs: (resource kind, name, operation) each.
fn topics(names: Vec<&str>, operation: AclOperation) -> Vec<(ResourceKind, &str, AclOperation)> {
    let mut names = names;
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .map(|name| (ResourceKind::Topic, name, operation))
        .collect()
}

fn needs(request: &Request) -> Vec<(ResourceKind, &str, AclOperation)> {
    use AclOperation::*;
    use ResourceKind::*;
    let cluster = || vec![(Cluster, CLUSTER_NAME, Admin)];
    match request {
        Request::Handshake(_)
        | Request::InitProducerId(_)
        | Request::Metadata(_)
        | Request::SaslAuthenticate(_) => Vec::new(),
        Request::Produce(r) => topics(
            r.partitions.iter().map(|p| p.topic.as_str()).collect(),
            Write,
        ),
        Request::Fetch(r) => topics(
            r.partitions.iter().map(|p| p.topic.as_str()).collect(),
            Read,
        ),
        Request::ListOffsets(r) => topics(
            r.partitions.iter().map(|p| p.topic.as_str()).collect(),
            Describe,
        ),
        Request::DescribeConfigs(r) => {
            topics(r.topics.iter().map(String::as_str).collect(), Describe)
        }
        Request::CreateTopics(r) => {
            topics(r.topics.iter().map(|t| t.name.as_str()).collect(), Create)
        }
        Request::DeleteTopics(r) => topics(r.names.iter().map(String::as_str).collect(), Delete),
        Request::AlterConfigs(r) => {
            topics(r.topics.iter().map(|t| t.name.as_str()).collect(), Alter)
        }
        Request::FindCoordinator(r) => vec![(Group, r.group.as_str(), Describe)],
        Request::DescribeGroup(r) => vec![(Group, r.group.as_str(), Describe)],
        Request::JoinGroup(r) => vec![(Group, r.group.as_str(), Read)],
        Request::Heartbeat(r) => vec![(Group, r.group.as_str(), Read)],
        Request::LeaveGroup(r) => vec![(Group, r.group.as_str(), Read)],
        Request::OffsetCommit(r) => {
            let mut needs = vec![(Group, r.group.as_str(), Read)];
            needs.extend(topics(
                r.offsets.iter().map(|o| o.topic.as_str()).collect(),
                Read,
            ));
            needs
        }
        Request::OffsetFetch(r) => vec![(Group, r.group.as_str(), Read)],
        Request::ResetOffsets(r) => vec![
            (Group, r.group.as_str(), Read),
            (Topic, r.topic.as_str(), Read),
        ],
        Request::ListGroups(_)
        | Request::DescribeCluster(_)
        | Request::ElectLeader(_)
        | Request::ReassignPartition(_)
        | Request::AlterAcls(_)
        | Request::DescribeAcls(_)
        | Request::AlterUsers(_)
        | Request::DescribeUsers(_)
        | Request::AlterQuotas(_)
        | Request::DescribeQuotas(_)
        | Request::ReplicaFetch(_)
        | Request::OffsetsForLeaderEpoch(_) => cluster(),
    }
}

fn refusal_code(kind: ResourceKind) -> ErrorCode {
    match kind {
        ResourceKind::Topic => ErrorCode::TopicAuthorizationFailed,
        ResourceKind::Group => ErrorCode::GroupAuthorizationFailed,
        ResourceKind::Cluster => ErrorCode::ClusterAuthorizationFailed,
    }
}

/// `Ok` when `principal` may send `request`; else the error to answer with.
pub fn check(
    context: &ShardContext,
    principal: &str,
    request: &Request,
) -> Result<(), ErrorResponse> {
    let authorizer = &context.authorizer;
    if !authorizer.enabled() {
        return Ok(());
    }
    let catalog = context.catalog();
    let acls = catalog.acls();
    for (kind, name, operation) in needs(request) {
        if !authorizer.allows(acls, principal, kind, name, operation) {
            return Err(ErrorResponse::new(
                refusal_code(kind),
                &format!("{principal} may not {operation:?} {kind:?} {name}"),
            ));
        }
    }
    Ok(())
}

/// Whether `principal` may see `topic` in metadata.
pub fn may_describe_topic(context: &ShardContext, principal: &str, topic: &str) -> bool {
    let catalog = context.catalog();
    context.authorizer.allows(
        catalog.acls(),
        principal,
        ResourceKind::Topic,
        topic,
        AclOperation::Describe,
    )
}
