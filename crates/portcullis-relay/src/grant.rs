//! A grant's live state, read from the store at every handshake and after every grant-change
//! notification: one snapshot (the grant, its vendor's account, the device's current policy and
//! its site) and the one decision in `portcullis_core::liveness` that the web service's token
//! endpoint makes too.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

pub(crate) use portcullis_core::liveness::Dead;
use portcullis_core::liveness::{decide, issued_before};
use portcullis_core::modbus::Rules;
use portcullis_core::{Access, GrantId, Mode, Port, Timestamp, Username, WriteScope};
use portcullis_store::{NotBefore, Store, StoreError};

/// What a live grant allows right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LiveGrant {
    pub id: GrantId,
    pub vendor: Username,
    pub device: String,
    /// The device's address from the inventory: the only address the relay ever dials.
    pub address: String,
    /// Granted ports still allowed by the device's current policy.
    pub ports: BTreeSet<Port>,
    /// What each decoded port runs under (the rest are raw TCP).
    pub modes: BTreeMap<Port, Mode>,
    /// Where writes may go on the Modbus ports granted `write`.
    pub write_scope: WriteScope,
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

    /// What a stream to `port` runs under.
    pub fn mode(&self, port: Port) -> Mode {
        self.modes.get(&port).copied().unwrap_or(Mode::Raw)
    }

    /// The Modbus filter's rules for a stream to `port`; `None` for raw TCP.
    pub fn modbus_rules(&self, port: Port) -> Option<Rules> {
        match self.mode(port) {
            Mode::Raw => None,
            Mode::Modbus(Access::Read) => Some(Rules::read_only()),
            Mode::Modbus(Access::Write) => Some(Rules {
                access: Access::Write,
                scope: self.write_scope.clone(),
            }),
        }
    }

    pub fn remaining(&self, now: Timestamp) -> Duration {
        if now >= self.window_end {
            Duration::ZERO
        } else {
            self.window_end.duration_since(now)
        }
    }
}

/// Reads grant `id` and decides whether it allows access at `now`.
#[tracing::instrument(level = "debug", skip(store))]
pub(crate) async fn check(
    store: &Store,
    id: GrantId,
    now: Timestamp,
) -> Result<Result<LiveGrant, Dead>, StoreError> {
    let Some(snapshot) = store.grant_snapshot(id.get()).await? else {
        return Ok(Err(Dead::Inactive));
    };
    let allowed = match decide(&snapshot, now) {
        Ok(a) => a,
        Err(dead) => return Ok(Err(dead)),
    };
    let r = snapshot.request;
    Ok(Ok(LiveGrant {
        id,
        vendor: r.requester.clone(),
        device: r.device.as_str().to_owned(),
        address: allowed.address,
        ports: allowed.ports,
        modes: allowed.modes,
        write_scope: allowed.write_scope,
        window_end: allowed.window_end,
        site: allowed.site,
        not_before: allowed.not_before,
    }))
}
