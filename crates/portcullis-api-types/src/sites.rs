//! Sites and their connectors (docs/decisions/0007-site-connectors.md).

use std::fmt;

use portcullis_core::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Redacted;
use crate::schema::Time;

/// `GET /api/v1/sites` and `GET /api/v1/admin/sites`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SiteList {
    pub sites: Vec<Site>,
}

/// A site, its connector's certificate and whether the connector is online.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Site {
    pub name: String,
    #[schema(value_type = Time)]
    pub created_at: Timestamp,
    pub created_by: String,
    #[schema(required = true, value_type = Option<String>, format = DateTime)]
    pub enrolled_at: Option<Timestamp>,
    /// base64url SHA-256 of the enrolled certificate's DER: the certificate the relay accepts.
    #[schema(required = true)]
    pub cert_fingerprint: Option<String>,
    #[schema(required = true, value_type = Option<String>, format = DateTime)]
    pub cert_not_after: Option<Timestamp>,
    #[schema(required = true, value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<Timestamp>,
    /// The connector's live connection, if a relay holds one.
    #[schema(required = true)]
    pub presence: Option<Presence>,
    pub status: SiteStatus,
    /// The connector's last sign of life (`presence.last_seen_at`).
    #[schema(required = true, value_type = Option<String>, format = DateTime)]
    pub last_seen: Option<Timestamp>,
}

/// A connector's connection to a relay, as that relay records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Presence {
    pub connection_id: String,
    /// The relay's name (`--relay-name`).
    pub relay: String,
    /// The connector's address as the relay sees it.
    pub source: String,
    #[schema(value_type = Time)]
    pub connected_at: Timestamp,
    #[schema(value_type = Time)]
    pub last_seen_at: Timestamp,
}

/// One word (or two) for lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum SiteStatus {
    #[serde(rename = "not enrolled")]
    NotEnrolled,
    #[serde(rename = "online")]
    Online,
    #[serde(rename = "offline")]
    Offline,
    #[serde(rename = "revoked")]
    Revoked,
}

/// `POST /api/v1/admin/sites` and `.../{name}/token`: a one-time enrollment token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SiteEnrollment {
    pub site: String,
    /// Shown this once.
    pub enrollment_token: String,
    #[schema(value_type = Time)]
    pub expires_at: Timestamp,
    /// The command that enrolls the connector with this token.
    pub enroll_command: String,
}

impl fmt::Debug for SiteEnrollment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SiteEnrollment")
            .field("site", &self.site)
            .field("enrollment_token", &Redacted(self.enrollment_token.len()))
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// `POST /api/v1/connector/enroll`: the site's certificate and where the relay is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConnectorCertificate {
    pub site: String,
    /// PEM.
    pub certificate: String,
    /// PEM of the site CA.
    pub ca: String,
    /// The relay's UDP address, `host:port`.
    pub relay: String,
    /// PEM of the CA that signs the relay's certificate (development CA), or null.
    #[schema(required = true)]
    pub relay_ca: Option<String>,
    #[schema(value_type = Time)]
    pub not_after: Timestamp,
}
