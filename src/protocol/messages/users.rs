//! SaslAuthenticate (api 47): one step of a SCRAM-SHA-256 exchange on this connection
//! (`crate::security::scram`). AlterUsers (api 48) stores and removes users' salted
//! credentials (computed by the client: no password is ever sent), through the controller;
//! DescribeUsers (api 49) lists the users.

use rkyv::{Archive, Deserialize, Serialize};

use super::super::error::ProtocolError;
use super::super::error_code::ErrorCode;
use super::super::limits::{self, CheckArchived};
use crate::constants::{ACL_NAME_BYTES_MAX, USERS_PER_REQUEST_MAX};

/// A user's stored SCRAM-SHA-256 credential.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct UserCredential {
    pub name: String,
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct SaslAuthenticateRequest {
    /// `SCRAM-SHA-256`.
    pub mechanism: String,
    pub bytes: Vec<u8>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct SaslAuthenticateResponse {
    pub error: ErrorCode,
    pub message: String,
    pub bytes: Vec<u8>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct AlterUsersRequest {
    pub upsert: Vec<UserCredential>,
    pub delete: Vec<String>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct AlterUsersResponse {
    pub error: ErrorCode,
    pub message: String,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct DescribeUsersRequest {}

/// A user as listed: never its keys.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct UserListing {
    pub name: String,
    pub mechanism: String,
    pub iterations: u32,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct DescribeUsersResponse {
    pub error: ErrorCode,
    pub message: String,
    pub users: Vec<UserListing>,
}

const SCRAM_BYTES_MAX: usize = crate::security::scram::MESSAGE_BYTES_MAX;
const KEY_FIELD_BYTES_MAX: usize = 64;

impl CheckArchived for ArchivedSaslAuthenticateRequest {
    fn check(&self) -> Result<(), ProtocolError> {
        limits::string("mechanism", &self.mechanism, 32)?;
        limits::count("sasl bytes", self.bytes.len(), SCRAM_BYTES_MAX)
    }
}

impl CheckArchived for ArchivedSaslAuthenticateResponse {
    fn check(&self) -> Result<(), ProtocolError> {
        limits::message(&self.message)?;
        limits::count("sasl bytes", self.bytes.len(), SCRAM_BYTES_MAX)
    }
}

impl CheckArchived for ArchivedAlterUsersRequest {
    fn check(&self) -> Result<(), ProtocolError> {
        limits::count(
            "users",
            self.upsert.len() + self.delete.len(),
            USERS_PER_REQUEST_MAX,
        )?;
        for user in self.upsert.iter() {
            limits::string("user name", &user.name, ACL_NAME_BYTES_MAX)?;
            limits::count("salt bytes", user.salt.len(), KEY_FIELD_BYTES_MAX)?;
            limits::count(
                "stored key bytes",
                user.stored_key.len(),
                KEY_FIELD_BYTES_MAX,
            )?;
            limits::count(
                "server key bytes",
                user.server_key.len(),
                KEY_FIELD_BYTES_MAX,
            )?;
        }
        self.delete
            .iter()
            .try_for_each(|name| limits::string("user name", name, ACL_NAME_BYTES_MAX))
    }
}

impl CheckArchived for ArchivedAlterUsersResponse {
    fn check(&self) -> Result<(), ProtocolError> {
        limits::message(&self.message)
    }
}

impl CheckArchived for ArchivedDescribeUsersRequest {
    fn check(&self) -> Result<(), ProtocolError> {
        Ok(())
    }
}

impl CheckArchived for ArchivedDescribeUsersResponse {
    fn check(&self) -> Result<(), ProtocolError> {
        limits::message(&self.message)?;
        limits::count("users", self.users.len(), crate::constants::USERS_MAX)?;
        self.users.iter().try_for_each(|user| {
            limits::string("user name", &user.name, ACL_NAME_BYTES_MAX)?;
            limits::string("mechanism", &user.mechanism, 32)
        })
    }
}
