//! May this grant start a session now, and what may its streams reach? One pure decision, made
//! from one snapshot of what the store holds, used by the web service before it mints a relay
//! token and by the relay at every handshake and re-check. No I/O here: every reason a grant is
//! refused is unit-tested below without sockets.

use std::collections::{BTreeMap, BTreeSet};

use crate::access::{Mode, WriteScope};
use crate::device::{Device, Port};
use crate::request::{AccessRequest, RequestState};
use crate::timestamp::Timestamp;
use crate::wire::{EndReason, RefusalCode};

/// What the decision reads: the grant, its vendor's account, the device as the inventory has it
/// now, and the site connector the device's `site` names, if one is registered.
#[derive(Debug, Clone)]
pub struct GrantSnapshot {
    pub request: AccessRequest,
    /// `None`: the vendor's account is gone.
    pub vendor: Option<VendorAccount>,
    /// `None`: the device was removed from the inventory.
    pub device: Option<Device>,
    /// The registered site named by the device's `site` field (revoked or not: once routed
    /// through a site, a device never falls back to a direct dial). `None`: no such site.
    pub site: Option<String>,
}

/// The parts of the vendor's account the decision needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VendorAccount {
    pub disabled: bool,
    pub not_before: NotBefore,
}

/// Not-befores moved by a logout, "log out everywhere" or a reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NotBefore {
    /// Relay tokens issued before this are refused.
    pub tokens: Option<Timestamp>,
    /// Live relay sessions started before this end.
    pub sessions: Option<Timestamp>,
}

/// What a live grant allows right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    /// The device's address from the inventory: the only address the relay ever dials.
    pub address: String,
    /// Granted ports the device's current policy still allows (never empty).
    pub ports: BTreeSet<Port>,
    /// What each of `ports` runs under, by the current policy and the grant's access. Ports not
    /// in it are raw TCP.
    pub modes: BTreeMap<Port, Mode>,
    /// Where writes may go on the Modbus ports granted `write`.
    pub write_scope: WriteScope,
    pub window_end: Timestamp,
    /// The registered site whose connector carries the device's streams; `None`: the relay
    /// dials the device itself.
    pub site: Option<String>,
    pub not_before: NotBefore,
}

/// Why a grant allows nothing, as a refusal (for a new token, session or stream) or as an end
/// reason (for a live session).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dead {
    NotStarted,
    WindowOver,
    Revoked,
    /// Requested, denied, or not found.
    Inactive,
    UserDisabled,
    /// The device is gone, or its policy no longer allows the vendor's organisation or any of
    /// the granted ports.
    PolicyChanged,
}

impl Dead {
    pub fn refusal(self) -> (RefusalCode, &'static str) {
        match self {
            Dead::NotStarted => (
                RefusalCode::NotInWindow,
                "the grant's window has not started yet",
            ),
            Dead::WindowOver => (RefusalCode::NotInWindow, "the grant's window has ended"),
            Dead::Revoked => (RefusalCode::GrantInactive, "the grant was revoked"),
            Dead::Inactive => (RefusalCode::GrantInactive, "the grant is not approved"),
            Dead::UserDisabled => (RefusalCode::GrantInactive, "your account is disabled"),
            Dead::PolicyChanged => (
                RefusalCode::GrantInactive,
                "the device's policy no longer allows this grant",
            ),
        }
    }

    pub fn end_reason(self) -> EndReason {
        match self {
            Dead::NotStarted | Dead::WindowOver | Dead::Inactive => EndReason::WindowEnd,
            Dead::Revoked => EndReason::Revoked,
            Dead::UserDisabled => EndReason::UserDisabled,
            Dead::PolicyChanged => EndReason::PolicyChanged,
        }
    }
}

/// The decision. A grant that does not exist is [`Dead::Inactive`], as one never approved.
pub fn decide(s: &GrantSnapshot, now: Timestamp) -> Result<Allowed, Dead> {
    let r = &s.request;
    match r.state_at(now) {
        RequestState::Active => {}
        RequestState::Approved => return Err(Dead::NotStarted),
        RequestState::Expired => return Err(Dead::WindowOver),
        RequestState::Revoked => return Err(Dead::Revoked),
        RequestState::Requested | RequestState::Denied => return Err(Dead::Inactive),
    }
    let vendor = match s.vendor {
        Some(v) if !v.disabled => v,
        _ => return Err(Dead::UserDisabled),
    };
    let device = s.device.as_ref().ok_or(Dead::PolicyChanged)?;
    let policy = &device.policy;
    if !policy.allowed_orgs.contains(&r.org) {
        return Err(Dead::PolicyChanged);
    }
    let ports: BTreeSet<Port> = r
        .ports
        .intersection(&policy.allowed_ports)
        .copied()
        .collect();
    if ports.is_empty() {
        return Err(Dead::PolicyChanged);
    }
    let modes = ports
        .iter()
        .map(|p| (*p, policy.mode(*p, r.access)))
        .filter(|(_, mode)| *mode != Mode::Raw)
        .collect();
    Ok(Allowed {
        address: device.address.as_str().to_owned(),
        ports,
        modes,
        write_scope: policy.write_scope.clone(),
        window_end: r.window.end,
        site: s.site.clone(),
        not_before: vendor.not_before,
    })
}

impl Allowed {
    /// What a stream to `port` runs under.
    pub fn mode(&self, port: Port) -> Mode {
        self.modes.get(&port).copied().unwrap_or(Mode::Raw)
    }
}

/// Whether a token issued at `iat` (Unix seconds) may have been issued before `not_before`.
///
/// `iat` is whole seconds, rounded down: the token was minted somewhere in `[iat, iat + 1)`.
/// When `not_before` falls inside that second the order cannot be told, and the token is
/// refused: a token wrongly refused costs the vendor one fresh token a second later, a token
/// wrongly accepted would carry a session past the logout that was meant to end it.
pub fn issued_before(iat: u64, not_before: Option<Timestamp>) -> bool {
    let Some(nb) = not_before else { return false };
    match i64::try_from(iat)
        .ok()
        .and_then(|s| s.checked_mul(1_000_000))
    {
        Some(iat_micros) => iat_micros < nb.unix_micros(),
        // Beyond any representable time: later than any not-before.
        None => false,
    }
}

#[cfg(test)]
mod tests;
