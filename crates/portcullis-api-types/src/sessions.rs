//! Relay sessions (one per vendor `portcullis connect`), live and ended, and a supervisor's
//! request to end one.

use portcullis_core::{DeviceName, GrantId, Timestamp, Username};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::schema::Time;

/// `GET /api/v1/sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SessionList {
    pub sessions: Vec<RelaySession>,
}

/// One relay session, with the numbers its relay last reported (every couple of seconds while
/// it is live, and once more at its end).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RelaySession {
    /// `rs_` and 16 characters.
    #[schema(pattern = "^rs_[A-Za-z0-9_-]{16}$")]
    pub id: String,
    #[schema(value_type = i64)]
    pub grant: GrantId,
    #[schema(value_type = String)]
    pub vendor: Username,
    #[schema(value_type = String)]
    pub device: DeviceName,
    /// When the relay accepted it.
    #[schema(value_type = Time)]
    pub started_at: Timestamp,
    /// The vendor's address, as the relay saw it.
    #[schema(required = true)]
    pub source: Option<String>,
    /// The relay that carries it.
    pub relay: String,
    /// Tunnelled TCP connections open now (0 once ended).
    #[schema(minimum = 0)]
    pub open_streams: u64,
    /// Vendor to device.
    #[schema(minimum = 0)]
    pub bytes_up: u64,
    /// Device to vendor.
    #[schema(minimum = 0)]
    pub bytes_down: u64,
    /// What its Modbus/TCP connections did; null when it made no Modbus request.
    #[schema(required = true)]
    pub modbus: Option<ModbusActivity>,
    /// Streams (TCP connections) the relay refused.
    #[schema(minimum = 0)]
    pub refused: u64,
    /// When the relay last wrote these numbers; null before its first report. Much older than
    /// a few seconds on a live session: its relay is not reporting (stopped, or cut off from the
    /// database).
    #[schema(required = true, value_type = Option<Time>)]
    pub last_reported_at: Option<Timestamp>,
    /// Null while it is live.
    #[schema(required = true, value_type = Option<Time>)]
    pub ended_at: Option<Timestamp>,
    /// Why it ended (an end reason of the wire protocol, e.g. `ended_by_supervisor`); null
    /// while it is live.
    #[schema(required = true)]
    pub end_reason: Option<String>,
    /// A supervisor's request to end it, once made.
    #[schema(required = true)]
    pub end_requested: Option<EndRequested>,
}

/// Decoded Modbus requests of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ModbusActivity {
    #[schema(minimum = 0)]
    pub reads: u64,
    #[schema(minimum = 0)]
    pub writes: u64,
    /// Requests the grant does not allow: answered by the relay, never forwarded.
    #[schema(minimum = 0)]
    pub refused: u64,
    /// The last few operations, newest last.
    pub last: Vec<ModbusOp>,
}

/// One decoded Modbus request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ModbusOp {
    #[schema(value_type = Time)]
    pub at: Timestamp,
    /// `read`, `write` or `refused`.
    pub kind: String,
    pub unit: u8,
    /// The Modbus function code.
    pub function: u8,
    #[schema(required = true)]
    pub address: Option<u16>,
    #[schema(required = true)]
    pub quantity: Option<u16>,
}

/// Who asked for a session to end, why and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EndRequested {
    pub by: String,
    pub reason: String,
    #[schema(value_type = Time)]
    pub at: Timestamp,
}
