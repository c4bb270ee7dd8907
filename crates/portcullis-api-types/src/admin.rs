//! Organisations and users (admins).

use std::fmt;

use portcullis_core::{OrgName, Timestamp, Username};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::schema::Time;
use crate::{Redacted, RoleName};

/// `GET /api/v1/admin/orgs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrgList {
    pub orgs: Vec<Org>,
}

/// A vendor organisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Org {
    #[schema(value_type = String)]
    pub name: OrgName,
    #[schema(value_type = Time)]
    pub created_at: Timestamp,
}

/// `GET /api/v1/admin/users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UserList {
    pub users: Vec<User>,
}

/// An account, as the admin's list and the disable and unlock actions answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub id: i64,
    #[schema(value_type = String)]
    pub username: Username,
    pub role: RoleName,
    #[schema(required = true, value_type = Option<String>)]
    pub org: Option<OrgName>,
    /// Password and TOTP are set and confirmed.
    pub enrolled: bool,
    pub failed_logins: i64,
    #[schema(required = true, value_type = Option<String>)]
    pub locked_until: Option<Timestamp>,
    #[schema(required = true, value_type = Option<String>)]
    pub disabled_at: Option<Timestamp>,
    #[schema(value_type = Time)]
    pub created_at: Timestamp,
    /// Where notifications go; null: this account gets no e-mail.
    #[serde(default)]
    #[schema(required = true, value_type = Option<String>)]
    pub email: Option<String>,
    /// The IANA zone of this person's pages and e-mails; null: the plant's.
    #[serde(default)]
    #[schema(required = true, value_type = Option<String>)]
    pub time_zone: Option<String>,
    /// Hears of every session's start and end.
    #[serde(default)]
    pub notify_sessions: bool,
    /// Receives alerts (every admin does).
    #[serde(default)]
    pub notify_alerts: bool,
    /// One word for lists: `disabled`, `locked`, `enrolling` or `active`. In the list only; the
    /// disable and unlock actions answer without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub status: Option<String>,
}

/// `POST /api/v1/admin/users`: the new account and its one-time enrollment code.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NewUser {
    #[schema(value_type = String)]
    pub username: Username,
    pub role: RoleName,
    #[schema(required = true, value_type = Option<String>)]
    pub org: Option<OrgName>,
    /// Shown this once.
    pub enrollment_code: String,
    #[schema(value_type = Time)]
    pub expires_at: Timestamp,
}

impl fmt::Debug for NewUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewUser")
            .field("username", &self.username)
            .field("role", &self.role)
            .field("org", &self.org)
            .field("enrollment_code", &Redacted(self.enrollment_code.len()))
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The `reset` and `reset-enrollment` actions: a new one-time enrollment code.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EnrollmentReset {
    #[schema(value_type = String)]
    pub username: Username,
    /// Shown this once.
    pub enrollment_code: String,
    #[schema(value_type = Time)]
    pub expires_at: Timestamp,
}

impl fmt::Debug for EnrollmentReset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollmentReset")
            .field("username", &self.username)
            .field("enrollment_code", &Redacted(self.enrollment_code.len()))
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// `POST /api/v1/admin/users/{name}/{action}`: the user (`disable`, `unlock`) or a new
/// enrollment code (`reset`, `reset-enrollment`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum UserAction {
    User(User),
    Reset(EnrollmentReset),
}

/// `PATCH /api/v1/admin/users/{name}` and `PATCH /api/v1/me`: fields not given keep their value;
/// an empty `email` or `time_zone` removes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactBody {
    #[serde(default)]
    #[schema(max_length = 254)]
    pub email: Option<String>,
    #[serde(default)]
    pub time_zone: Option<String>,
    #[serde(default)]
    pub notify_sessions: Option<bool>,
    #[serde(default)]
    pub notify_alerts: Option<bool>,
}

/// `GET /api/v1/admin/outbox`: notification deliveries, newest first, and the counts by state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OutboxList {
    pub counts: OutboxCounts,
    pub deliveries: Vec<Delivery>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OutboxCounts {
    /// Notices whose recipients are not decided yet (the worker takes them within a second).
    pub unrouted: i64,
    pub pending: i64,
    /// Pending after at least one failed try.
    pub retrying: i64,
    pub delivered: i64,
    /// Given up after the last try; an admin may retry them.
    pub failed: i64,
}

/// One message to one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Delivery {
    pub id: i64,
    /// The audit action that caused it (`window.ending` for a window notice).
    pub action: String,
    #[schema(required = true)]
    pub event_seq: Option<i64>,
    /// `email` or `webhook`.
    pub channel: String,
    /// An e-mail address or a webhook URL.
    pub recipient: String,
    #[schema(required = true)]
    pub recipient_user: Option<String>,
    pub subject: String,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    pub attempts: i64,
    #[schema(value_type = Time)]
    pub next_attempt_at: Timestamp,
    #[schema(required = true)]
    pub last_error: Option<String>,
    #[schema(value_type = Time)]
    pub created_at: Timestamp,
    #[schema(required = true, value_type = Option<String>)]
    pub delivered_at: Option<Timestamp>,
}
