//! AlterQuotas (api 50): set or remove byte-rate quotas; DescribeQuotas (api 51): list them.
//! A quota limits the produce and the fetch bytes per second of one principal or one client
//! id; brokers enforce it by delaying responses (`crate::security::quota`).

use rkyv::{Archive, Deserialize, Serialize};

use super::super::error::ProtocolError;
use super::super::error_code::ErrorCode;
use super::super::limits::{self, CheckArchived};
use crate::constants::{ACL_NAME_BYTES_MAX, QUOTAS_PER_REQUEST_MAX};

/// Whom a quota limits.
#[derive(
    Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[rkyv(derive(Debug))]
pub enum QuotaEntityKind {
    /// An authenticated principal (certificate common name or SCRAM user).
    Principal,
    /// The client id a client gives in its handshake.
    ClientId,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[rkyv(derive(Debug))]
pub struct QuotaEntity {
    pub kind: QuotaEntityKind,
    pub name: String,
}

/// The limits of one entity; `None` is no limit, both `None` removes the quota.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Quota {
    pub entity: QuotaEntity,
    pub produce_bytes_per_s: Option<u64>,
    pub fetch_bytes_per_s: Option<u64>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct AlterQuotasRequest {
    pub set: Vec<Quota>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct AlterQuotasResponse {
    pub error: ErrorCode,
    pub message: String,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct DescribeQuotasRequest {}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct DescribeQuotasResponse {
    pub error: ErrorCode,
    pub message: String,
    pub quotas: Vec<Quota>,
}

impl CheckArchived for ArchivedAlterQuotasRequest {
    fn check(&self) -> Result<(), ProtocolError> {
        limits::count("quotas", self.set.len(), QUOTAS_PER_REQUEST_MAX)?;
        self.set.iter().try_for_each(|quota| {
            limits::string("quota entity", &quota.entity.name, ACL_NAME_BYTES_MAX)
        })
    }
}

impl CheckArchived for ArchivedAlterQuotasResponse {
    fn check(&self) -> Result<(), ProtocolError> {
        limits::message(&self.message)
    }
}

impl CheckArchived for ArchivedDescribeQuotasRequest {
    fn check(&self) -> Result<(), ProtocolError> {
        Ok(())
    }
}

impl CheckArchived for ArchivedDescribeQuotasResponse {
    fn check(&self) -> Result<(), ProtocolError> {
        limits::message(&self.message)?;
        limits::count("quotas", self.quotas.len(), crate::constants::QUOTAS_MAX)?;
        self.quotas.iter().try_for_each(|quota| {
            limits::string("quota entity", &quota.entity.name, ACL_NAME_BYTES_MAX)
        })
    }
}
