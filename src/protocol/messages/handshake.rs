//! Handshake (api 0): the first request on every connection. The client announces itself and
//! the versions it speaks; the broker answers with its id and the versions it speaks. Both
//! sides then use `api::negotiate`. Version 0 of this api is never dropped.

use rkyv::{Archive, Deserialize, Serialize};

use super::super::api::{ApiKey, VersionRange};
use super::super::error::ProtocolError;
use super::super::error_code::ErrorCode;
use super::super::limits::{self, CheckArchived};
use crate::constants::{CLIENT_ID_BYTES_MAX, HANDSHAKE_APIS_MAX, SOFTWARE_VERSION_BYTES_MAX};

/// The versions of one api a peer speaks. The key is raw: a peer may list apis this build
/// does not know, and they are ignored.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ApiVersionRange {
    pub api_key: u16,
    pub min_version: u16,
    pub max_version: u16,
}

impl ApiVersionRange {
    pub fn new(api: ApiKey, versions: VersionRange) -> ApiVersionRange {
        ApiVersionRange {
            api_key: api.as_u16(),
            min_version: versions.min,
            max_version: versions.max,
        }
    }

    pub fn range(&self) -> VersionRange {
        VersionRange {
            min: self.min_version,
            max: self.max_version,
        }
    }
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct HandshakeRequest {
    /// Free-form name of the client application (for logs and metrics).
    pub client_id: String,
    /// Name and version of the client library, e.g. `shardline-client 0.1.0`.
    pub client_software_version: String,
    /// The versions the client speaks (`api::supported_apis()`).
    pub supported: Vec<ApiVersionRange>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct HandshakeResponse {
    pub error: ErrorCode,
    pub broker_id: u32,
    /// The versions the broker speaks.
    pub supported: Vec<ApiVersionRange>,
}

/// At most `HANDSHAKE_APIS_MAX` ranges, each with `min <= max`, no api listed twice.
fn check_ranges(ranges: &[ArchivedApiVersionRange]) -> Result<(), ProtocolError> {
    limits::count("api version list", ranges.len(), HANDSHAKE_APIS_MAX)?;
    let mut keys = Vec::with_capacity(ranges.len());
    for range in ranges {
        let (min, max) = (range.min_version.to_native(), range.max_version.to_native());
        if min > max {
            return Err(ProtocolError::InvalidValue {
                what: "api version range",
                reason: format!("api {} has min {min} > max {max}", range.api_key),
            });
        }
        keys.push(range.api_key.to_native());
    }
    keys.sort_unstable();
    if let Some(pair) = keys.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(ProtocolError::InvalidValue {
            what: "api version list",
            reason: format!("api {} is listed twice", pair[0]),
        });
    }
    Ok(())
}

impl CheckArchived for ArchivedHandshakeRequest {
    fn check(&self) -> Result<(), ProtocolError> {
        limits::string("client id", &self.client_id, CLIENT_ID_BYTES_MAX)?;
        limits::string(
            "client software version",
            &self.client_software_version,
            SOFTWARE_VERSION_BYTES_MAX,
        )?;
        check_ranges(&self.supported)
    }
}

impl CheckArchived for ArchivedHandshakeResponse {
    fn check(&self) -> Result<(), ProtocolError> {
        check_ranges(&self.supported)
    }
}
