//! The client's errors.

use crate::protocol::ErrorCode;

/// Why a client call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("io: {0}")]
    Io(String),
    #[error("connection lost: {0}")]
    Disconnected(String),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("broker error {code:?}: {message}")]
    Broker { code: ErrorCode, message: String },
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("unknown topic or partition: {0}")]
    UnknownTopic(String),
}

impl ClientError {
    /// Whether trying again (after a metadata refresh and a backoff) may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Io(_) | ClientError::Disconnected(_) | ClientError::Timeout(_) => true,
            ClientError::Broker { code, .. } => code.is_retriable(),
            _ => false,
        }
    }

    /// The error for a non-`None` code in a response entry.
    pub fn from_code(code: ErrorCode, message: impl Into<String>) -> ClientError {
        ClientError::Broker {
            code,
            message: message.into(),
        }
    }
}
