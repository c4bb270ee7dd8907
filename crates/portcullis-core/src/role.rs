//! Roles. Each account holds exactly one, so an admin account can never also approve or audit
//! (separation of duties, IEC 62443 SR 2.1).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ValidationError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A machine builder's engineer: requests access, connects inside a grant.
    Vendor,
    /// A plant supervisor: approves, denies, revokes.
    Supervisor,
    /// Reads, filters, exports and verifies the audit log; changes nothing.
    Auditor,
    /// Manages users, organisations, the inventory and policies.
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Vendor, Role::Supervisor, Role::Auditor, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Vendor => "vendor",
            Role::Supervisor => "supervisor",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, ValidationError> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s.trim())
            .ok_or_else(|| {
                ValidationError::new(
                    "role",
                    format!("'{s}' is not a role; use vendor, supervisor, auditor or admin"),
                )
            })
    }
}
