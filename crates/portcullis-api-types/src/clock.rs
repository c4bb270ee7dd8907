//! The broker's clock health (admins; issue 12).

use portcullis_core::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::schema::Time;

/// `GET /api/v1/admin/clock` and `POST /api/v1/admin/clock/ack`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClockStatus {
    /// False in a process that runs no monitor.
    pub monitored: bool,
    pub state: ClockHealth,
    pub tolerance_ms: u64,
    /// The wall clock's distance from where the monotonic clock says it should be.
    pub deviation_ms: i64,
    /// The step that started the current anomaly.
    #[schema(required = true)]
    pub anomaly: Option<ClockReadings>,
    /// The `seq` of its `clock.anomaly` event, once written.
    #[schema(required = true)]
    pub anomaly_seq: Option<i64>,
    /// Whether the machine's clock was synchronised, as found at start.
    #[schema(required = true)]
    pub time_sync: Option<TimeSync>,
    /// The broker's wall clock now.
    #[schema(value_type = Time)]
    pub wall_clock: Timestamp,
    /// The `seq` of the `clock.ack` event: in the answer to the acknowledgement only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub ack_seq: Option<i64>,
}

/// `unknown` (no sample yet), `ok` or `anomaly`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClockHealth {
    Unknown,
    Ok,
    Anomaly,
}

/// Both readings around a clock step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClockReadings {
    #[schema(value_type = Time)]
    pub wall_before: Timestamp,
    #[schema(value_type = Time)]
    pub wall_after: Timestamp,
    pub monotonic_elapsed_ms: u64,
    /// Negative when the wall clock was stepped back.
    pub step_ms: i64,
    pub tolerance_ms: u64,
}

/// Whether this machine's clock is synchronised, as found at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TimeSync {
    /// Null: could not be found out.
    #[schema(required = true)]
    pub synchronised: Option<bool>,
    /// What said so: `timedatectl`, `chronyc`, `systemd-timesyncd`, or `none`.
    pub source: String,
    /// What it answered, or why nothing could.
    pub detail: String,
}
