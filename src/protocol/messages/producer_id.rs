//! InitProducerId (api 9): a new idempotent producer asks for its id and epoch. Every batch
//! it sends then carries them and its per-partition sequence, so that a retried batch is
//! recognised and stored once.

use rkyv::{Archive, Deserialize, Serialize};

use super::super::error::ProtocolError;
use super::super::error_code::ErrorCode;
use super::super::limits::{self, CheckArchived};
use crate::constants::CLIENT_ID_BYTES_MAX;

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct InitProducerIdRequest {
    /// Free-form name of the producing application (for logs).
    pub client_id: String,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct InitProducerIdResponse {
    pub error: ErrorCode,
    pub message: String,
    /// Unique on the cluster, never handed out twice (`-1` with an error).
    pub producer_id: i64,
    pub producer_epoch: i16,
}

impl CheckArchived for ArchivedInitProducerIdRequest {
    fn check(&self) -> Result<(), ProtocolError> {
        limits::string("client_id", &self.client_id, CLIENT_ID_BYTES_MAX)
    }
}

impl CheckArchived for ArchivedInitProducerIdResponse {
    fn check(&self) -> Result<(), ProtocolError> {
        limits::string(
            "message",
            &self.message,
            crate::constants::ERROR_MESSAGE_BYTES_MAX,
        )
    }
}
