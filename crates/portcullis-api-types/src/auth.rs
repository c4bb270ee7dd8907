//! Enrollment and login.

use std::fmt;

use portcullis_core::{Timestamp, Username};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::schema::Time;
use crate::{Redacted, RoleName};

/// `POST /api/v1/enroll`: the new TOTP secret, shown this once.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct TotpEnrollment {
    pub otpauth_uri: String,
    pub secret: String,
    /// The `otpauth_uri` as a QR code (SVG).
    pub qr_svg: String,
}

impl fmt::Debug for TotpEnrollment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TotpEnrollment").finish_non_exhaustive()
    }
}

/// `POST /api/v1/auth/login`: a token good only for the TOTP step.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct PendingMfa {
    pub mfa_token: String,
    #[schema(value_type = Time)]
    pub expires_at: Timestamp,
}

impl fmt::Debug for PendingMfa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingMfa")
            .field("mfa_token", &Redacted(self.mfa_token.len()))
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// `POST /api/v1/auth/mfa`: the session.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct Session {
    /// For `Authorization: Bearer`.
    pub session_token: String,
    /// The session's absolute end.
    #[schema(value_type = Time)]
    pub expires_at: Timestamp,
    /// For the pages' forms; bearer requests need none.
    pub csrf_token: String,
    #[schema(value_type = String)]
    pub username: Username,
    pub role: RoleName,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("session_token", &Redacted(self.session_token.len()))
            .field("expires_at", &self.expires_at)
            .field("csrf_token", &Redacted(self.csrf_token.len()))
            .field("username", &self.username)
            .field("role", &self.role)
            .finish()
    }
}

/// `POST /api/v1/auth/logout-everywhere`: how many web and CLI sessions ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SessionsEnded {
    pub sessions_ended: u64,
}
