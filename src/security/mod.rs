//! Security beyond TLS (`crate::tls`): who a connection is (its principal) and what it may
//! do (`acl`). The rules live in the metadata log, so every broker enforces the same ones.

pub mod acl;
pub mod quota;
pub mod scram;

pub use acl::{AclIndex, Authorizer, ANONYMOUS};

/// A client's SCRAM user name and password.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Whether a name may be a principal: not empty, not `ANONYMOUS` (the unauthenticated) and
/// not `*` (the wildcard of access rules). A certificate with such a name gives none.
pub fn is_usable_principal(name: &str) -> bool {
    !name.is_empty() && name != ANONYMOUS && name != acl::WILDCARD
}
