//! A grant's live state, read from the store at every handshake and after every grant-change
//! notification: the grant itself, its vendor's account and the device's current policy.

use std::collections::BTreeSet;
use std::time::Duration;

use portcullis_core::wire::{EndReason, RefusalCode};
use portcullis_core::{Port, RequestState, Timestamp};
use portcullis_store::{NotBefore, Store, StoreError};

/// What a live grant allows right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LiveGrant {
    pub id: i64,
    pub vendor: String,
    pub device: String,
    /// The device's address from the inventory: the only address the relay ever dials.
    pub address: String,
    /// Granted ports still allowed by the device's current policy.
    pub ports: BTreeSet<Port>,
    pub window_end: Timestamp,
    /// The registered site whose connector carries the device's streams; `None`: the relay
    /// dials the device itself (its `site` field names no registered site).
    pub site: Option<String>,
    /// The vendor's not-befores (logout, "log out everywhere", resets).
    pub not_before: NotBefore,
}

impl LiveGrant {
    /// Whether a token issued at `iat` (Unix seconds) predates the vendor's last logout or
    /// reset, and must be refused.
    pub fn token_revoked(&self, iat: u64) -> bool {
        issued_before(iat, self.not_before.tokens)
    }

    /// Whether a live session, started at `started` with a token issued at `iat`, predates
    /// the vendor's last "log out everywhere" or reset, and must end. The token's issue time
    /// counts too: a session whose handshake read the snapshot just before the change
    /// committed still carries a token minted before it.
    pub fn session_revoked(&self, started: Timestamp, iat: u64) -> bool {
        self.not_before.sessions.is_some_and(|nb| started < nb)
            || issued_before(iat, self.not_before.sessions)
    }

    pub fn remaining(&self, now: Timestamp) -> Duration {
        if now >= self.window_end {
            Duration::ZERO
        } else {
            self.window_end.duration_since(now)
        }
    }
}

/// Whether a token issued at `iat` may have been issued before `not_before`.
///
/// `iat` is whole seconds, rounded down: the token was minted somewhere in `[iat, iat + 1)`.
/// When `not_before` falls inside that second the order cannot be told, and the token is
/// refused: a token wrongly refused costs the vendor one fresh token a second later, a token
/// wrongly accepted would carry a session past the logout that was meant to end it.
fn issued_before(iat: u64, not_before: Option<Timestamp>) -> bool {
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

/// Why a grant no longer allows anything, as a refusal (for a new session or stream) or as an
/// end reason (for a live one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dead {
    NotStarted,
    WindowOver,
    Revoked,
    Inactive,
    UserDisabled,
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

/// Reads grant `id` and decides whether it allows access at `now`.
pub(crate) async fn check(
    store: &Store,
    id: i64,
    now: Timestamp,
) -> Result<Result<LiveGrant, Dead>, StoreError> {
    let Some(rec) = store.request(id).await? else {
        return Ok(Err(Dead::Inactive));
    };
    let r = &rec.request;
    match r.state_at(now) {
        RequestState::Active => {}
        RequestState::Approved => return Ok(Err(Dead::NotStarted)),
        RequestState::Expired => return Ok(Err(Dead::WindowOver)),
        RequestState::Revoked => return Ok(Err(Dead::Revoked)),
        RequestState::Requested | RequestState::Denied => return Ok(Err(Dead::Inactive)),
    }
    match store.user(&r.requester).await? {
        Some(u) if u.disabled_at.is_none() => {}
        _ => return Ok(Err(Dead::UserDisabled)),
    }
    let not_before = store.not_before(&r.requester).await?;
    let Some(device) = store.device(&r.device).await? else {
        return Ok(Err(Dead::PolicyChanged));
    };
    let policy = &device.policy;
    if !policy.allowed_orgs.contains(&r.org) {
        return Ok(Err(Dead::PolicyChanged));
    }
    let ports: BTreeSet<Port> = r
        .ports
        .intersection(&policy.allowed_ports)
        .copied()
        .collect();
    if ports.is_empty() {
        return Ok(Err(Dead::PolicyChanged));
    }
    // A device is behind a connector when its site field names a registered site (revoked or
    // not: once routed through a site, a device never falls back to a direct dial).
    let site = match device.profile.site.trim() {
        "" => None,
        name => store.site(name).await?.map(|rec| rec.name),
    };
    Ok(Ok(LiveGrant {
        id,
        vendor: r.requester.as_str().to_owned(),
        device: r.device.as_str().to_owned(),
        address: device.address.as_str().to_owned(),
        ports,
        window_end: r.window.end,
        site,
        not_before,
    }))
}
