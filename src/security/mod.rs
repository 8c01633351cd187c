//! Security beyond TLS (`crate::tls`): who a connection is (its principal) and what it may
//! do (`acl`). The rules live in the metadata log, so every broker enforces the same ones.

pub mod acl;

pub use acl::{AclIndex, Authorizer, ANONYMOUS};
