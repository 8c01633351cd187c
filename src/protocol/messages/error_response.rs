//! ErrorResponse (response-only key `0xFFFF`): the answer to a request whose body could not
//! be used at all (unknown api, unsupported version, invalid body, a broken limit), sent with
//! the request's correlation id. The client matches it by correlation id and fails that one
//! request; the connection goes on.

use rkyv::{Archive, Deserialize, Serialize};

use super::super::error::ProtocolError;
use super::super::error_code::ErrorCode;
use super::super::limits::{self, CheckArchived};
use crate::constants::ERROR_MESSAGE_BYTES_MAX;

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ErrorResponse {
    pub error: ErrorCode,
    /// What was wrong, for humans (at most `ERROR_MESSAGE_BYTES_MAX` bytes).
    pub message: String,
}

impl ErrorResponse {
    /// An error response whose message is cut, at a character boundary, to
    /// `ERROR_MESSAGE_BYTES_MAX` bytes.
    pub fn new(error: ErrorCode, message: &str) -> ErrorResponse {
        let mut end = message.len().min(ERROR_MESSAGE_BYTES_MAX);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        ErrorResponse {
            error,
            message: message[..end].to_owned(),
        }
    }
}

impl CheckArchived for ArchivedErrorResponse {
    fn check(&self) -> Result<(), ProtocolError> {
        limits::message(&self.message)
    }
}
