//! Access rules and their checks. A rule allows one principal (or `*`, anyone) one operation
//! on a topic, a group (by name, or `*` for every one) or the cluster. Once authorization is
//! on (`--authorization`), a request that no rule allows is refused with an authorization
//! error and has no effect; super users (`--super-users`) may do anything. A connection's
//! principal is its client certificate's common name under mutual TLS, else `ANONYMOUS`.
//!
//! | request | needs |
//! |---|---|
//! | Produce | Write on each topic |
//! | Fetch | Read on each topic |
//! | Metadata, ListOffsets, DescribeConfigs | Describe on each topic (Metadata lists only those) |
//! | CreateTopics / DeleteTopics / AlterConfigs | Create / Delete / Alter on each topic |
//! | FindCoordinator, DescribeGroup | Describe on the group |
//! | JoinGroup, Heartbeat, LeaveGroup, OffsetFetch | Read on the group |
//! | OffsetCommit, ResetOffsets | Read on the group and on each topic |
//! | ListGroups, DescribeCluster, ElectLeader, ReassignPartition, AlterAcls, DescribeAcls, ReplicaFetch, OffsetsForLeaderEpoch | Admin on the cluster |
//! | Handshake, InitProducerId | nothing |

use std::collections::{HashMap, HashSet};

use crate::protocol::{Acl, AclOperation, ResourceKind};

/// The principal of a connection that proved no identity.
pub const ANONYMOUS: &str = "ANONYMOUS";
/// The resource name of the cluster in a rule.
pub const CLUSTER_NAME: &str = "cluster";
/// Matches any principal, or any topic or group name.
pub const WILDCARD: &str = "*";

/// The operations that make sense on a kind of resource.
fn operations_of(kind: ResourceKind) -> &'static [AclOperation] {
    use AclOperation::*;
    match kind {
        ResourceKind::Topic => &[All, Read, Write, Create, Delete, Describe, Alter],
        ResourceKind::Group => &[All, Read, Describe],
        ResourceKind::Cluster => &[All, Admin],
    }
}

/// Whether a rule granting `granted` covers `wanted`.
fn implies(granted: AclOperation, wanted: AclOperation) -> bool {
    use AclOperation::*;
    granted == wanted
        || granted == All
        || (wanted == Describe && matches!(granted, Read | Write | Create | Delete | Alter))
}

/// Checks a rule and puts it in its one spelling (the cluster's name is `cluster`).
pub fn normalize(acl: &Acl) -> Result<Acl, String> {
    if acl.principal.is_empty() {
        return Err("an access rule needs a principal (or * for anyone)".into());
    }
    if !operations_of(acl.resource).contains(&acl.operation) {
        return Err(format!(
            "{:?} is not an operation on a {:?} (expected one of {:?})",
            acl.operation,
            acl.resource,
            operations_of(acl.resource)
        ));
    }
    let name = match acl.resource {
        ResourceKind::Cluster => CLUSTER_NAME.to_string(),
        _ if acl.name.is_empty() => {
            return Err(format!(
                "a {:?} rule needs a name (or * for every one)",
                acl.resource
            ))
        }
        _ => acl.name.clone(),
    };
    Ok(Acl {
        name,
        ..acl.clone()
    })
}

/// Parses an operation's name (case-insensitive).
pub fn parse_operation(text: &str) -> Result<AclOperation, String> {
    use AclOperation::*;
    Ok(match text.to_ascii_lowercase().as_str() {
        "all" => All,
        "read" => Read,
        "write" => Write,
        "create" => Create,
        "delete" => Delete,
        "describe" => Describe,
        "alter" => Alter,
        "admin" => Admin,
        other => {
            return Err(format!(
                "unknown operation '{other}' (expected all, read, write, create, delete, describe, alter or admin)"
            ))
        }
    })
}

/// The rules by resource, for checks on the request path. Built with each catalogue.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AclIndex {
    by_resource: HashMap<(ResourceKind, String), Vec<(String, AclOperation)>>,
    rules: Vec<Acl>,
}

impl AclIndex {
    pub fn new<'a>(acls: impl IntoIterator<Item = &'a Acl>) -> AclIndex {
        let mut index = AclIndex::default();
        for acl in acls {
            index
                .by_resource
                .entry((acl.resource, acl.name.clone()))
                .or_default()
                .push((acl.principal.clone(), acl.operation));
            index.rules.push(acl.clone());
        }
        index
    }

    /// Every rule, in the order given.
    pub fn rules(&self) -> &[Acl] {
        &self.rules
    }

    /// Whether some rule lets `principal` do `operation` on the resource.
    pub fn allows(
        &self,
        principal: &str,
        kind: ResourceKind,
        name: &str,
        operation: AclOperation,
    ) -> bool {
        [name, WILDCARD].iter().any(|name| {
            self.by_resource
                .get(&(kind, name.to_string()))
                .is_some_and(|rules| {
                    rules.iter().any(|(who, granted)| {
                        (who == principal || who == WILDCARD) && implies(*granted, operation)
                    })
                })
        })
    }
}

/// A broker's authorization settings.
#[derive(Debug, Clone, Default)]
pub struct Authorizer {
    enabled: bool,
    super_users: HashSet<String>,
}

impl Authorizer {
    pub fn new(enabled: bool, super_users: impl IntoIterator<Item = String>) -> Authorizer {
        Authorizer {
            enabled,
            super_users: super_users.into_iter().collect(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn is_super_user(&self, principal: &str) -> bool {
        self.super_users.contains(principal)
    }

    /// Whether `principal` may do `operation` on the resource under `acls`.
    pub fn allows(
        &self,
        acls: &AclIndex,
        principal: &str,
        kind: ResourceKind,
        name: &str,
        operation: AclOperation,
    ) -> bool {
        !self.enabled
            || self.super_users.contains(principal)
            || acls.allows(principal, kind, name, operation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(principal: &str, resource: ResourceKind, name: &str, operation: AclOperation) -> Acl {
        Acl {
            principal: principal.into(),
            resource,
            name: name.into(),
            operation,
        }
    }

    #[test]
    fn rules_allow_what_they_name_and_nothing_else() {
        use AclOperation::*;
        use ResourceKind::*;
        let acls = [
            rule("alice", Topic, "orders", Read),
            rule("bob", Topic, "*", Write),
            rule("*", Group, "shared", Read),
            rule("ops", Cluster, "cluster", Admin),
        ];
        let index = AclIndex::new(&acls);
        let on = Authorizer::new(true, ["root".to_string()]);
        assert!(on.allows(&index, "alice", Topic, "orders", Read));
        assert!(
            on.allows(&index, "alice", Topic, "orders", Describe),
            "read implies describe"
        );
        assert!(!on.allows(&index, "alice", Topic, "orders", Write));
        assert!(!on.allows(&index, "alice", Topic, "other", Read));
        assert!(on.allows(&index, "bob", Topic, "anything", Write));
        assert!(!on.allows(&index, "bob", Topic, "anything", Read));
        assert!(on.allows(&index, ANONYMOUS, Group, "shared", Read));
        assert!(!on.allows(&index, ANONYMOUS, Group, "private", Read));
        assert!(on.allows(&index, "ops", Cluster, "cluster", Admin));
        assert!(!on.allows(&index, "alice", Cluster, "cluster", Admin));
        assert!(
            on.allows(&index, "root", Cluster, "cluster", Admin),
            "a super user"
        );
        let off = Authorizer::default();
        assert!(off.allows(&AclIndex::default(), ANONYMOUS, Topic, "x", Write));
        assert!(!on.allows(&AclIndex::default(), ANONYMOUS, Topic, "x", Describe));
    }

    #[test]
    fn rules_are_checked_and_normalized() {
        use AclOperation::*;
        use ResourceKind::*;
        assert!(normalize(&rule("a", Group, "g", Write)).is_err());
        assert!(normalize(&rule("a", Cluster, "", Read)).is_err());
        assert!(normalize(&rule("", Topic, "t", Read)).is_err());
        assert!(normalize(&rule("a", Topic, "", Read)).is_err());
        assert_eq!(
            normalize(&rule("a", Cluster, "whatever", Admin))
                .unwrap()
                .name,
            "cluster"
        );
        assert_eq!(parse_operation("READ"), Ok(Read));
        assert!(parse_operation("fly").is_err());
    }
}
