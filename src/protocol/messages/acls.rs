//! AlterAcls (api 45): add and remove access rules; DescribeAcls (api 46): list them.
//! Both go through the controller, which keeps the rules in the metadata log.
//!
//! A rule allows one principal (or `*`, anyone) one operation on one resource: a topic or a
//! group by name (`*`: every one), or the cluster. There are no deny rules: once
//! authorization is on, what no rule allows is refused.

use rkyv::{Archive, Deserialize, Serialize};

use super::super::error::ProtocolError;
use super::super::error_code::ErrorCode;
use super::super::limits::{self, CheckArchived};
use crate::constants::{ACLS_PER_REQUEST_MAX, ACL_NAME_BYTES_MAX};

/// What a rule is about.
#[derive(
    Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[rkyv(derive(Debug))]
pub enum ResourceKind {
    Topic,
    Group,
    Cluster,
}

/// What a rule allows. `All` is every operation on its resource; `Read`, `Write`, `Create`,
/// `Delete` and `Alter` each include `Describe`.
#[derive(
    Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[rkyv(derive(Debug))]
pub enum AclOperation {
    All,
    Read,
    Write,
    Create,
    Delete,
    Describe,
    Alter,
    Admin,
}

/// One rule: `principal` may do `operation` on the resource.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[rkyv(derive(Debug))]
pub struct Acl {
    /// A principal's name, or `*` for anyone (the unauthenticated included).
    pub principal: String,
    pub resource: ResourceKind,
    /// A topic's or group's name, `*` for every one; `cluster` for the cluster.
    pub name: String,
    pub operation: AclOperation,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct AlterAclsRequest {
    pub add: Vec<Acl>,
    pub remove: Vec<Acl>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct AlterAclsResponse {
    pub error: ErrorCode,
    pub message: String,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct DescribeAclsRequest {}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct DescribeAclsResponse {
    pub error: ErrorCode,
    pub message: String,
    pub acls: Vec<Acl>,
}

fn check_acl(acl: &ArchivedAcl) -> Result<(), ProtocolError> {
    limits::string("principal", &acl.principal, ACL_NAME_BYTES_MAX)?;
    limits::string("resource name", &acl.name, ACL_NAME_BYTES_MAX)
}

impl CheckArchived for ArchivedAlterAclsRequest {
    fn check(&self) -> Result<(), ProtocolError> {
        limits::count(
            "acls",
            self.add.len() + self.remove.len(),
            ACLS_PER_REQUEST_MAX,
        )?;
        self.add
            .iter()
            .chain(self.remove.iter())
            .try_for_each(check_acl)
    }
}

impl CheckArchived for ArchivedAlterAclsResponse {
    fn check(&self) -> Result<(), ProtocolError> {
        limits::message(&self.message)
    }
}

impl CheckArchived for ArchivedDescribeAclsRequest {
    fn check(&self) -> Result<(), ProtocolError> {
        Ok(())
    }
}

impl CheckArchived for ArchivedDescribeAclsResponse {
    fn check(&self) -> Result<(), ProtocolError> {
        limits::message(&self.message)?;
        limits::count("acls", self.acls.len(), crate::constants::ACLS_MAX)?;
        self.acls.iter().try_for_each(check_acl)
    }
}
