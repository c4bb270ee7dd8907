//! The access request -> grant state machine.
//!
//! ```text
//!             approve (enough distinct approvers)         window starts
//! requested ------------------------------------> approved -----------> active
//!     |  \                                            |                  |
//!     |   deny                               revoke   |         revoke   |  window ends
//!     v    \-> denied                                 v                  v
//!  expired <-- window ends (any non-final state) -- revoked           expired
//! ```
//! A request that has enough approvals is a grant. Every transition takes `now` and re-checks the
//! device's policy, so a policy tightened after the request was made still applies when deciding.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::access::Access;
use crate::{
    DeviceName, DevicePolicy, OrgName, Port, Role, Timestamp, Username, ValidationError, Window,
};

/// How far ahead a vendor may book a window.
pub const MAX_LEAD_TIME: Duration = Duration::from_secs(30 * 24 * 3600);
const MAX_REASON_CHARS: usize = 1000;
const MAX_TICKET_CHARS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestState {
    Requested,
    Approved,
    Denied,
    Active,
    Expired,
    Revoked,
}

impl RequestState {
    pub const ALL: [RequestState; 6] = [
        RequestState::Requested,
        RequestState::Approved,
        RequestState::Denied,
        RequestState::Active,
        RequestState::Expired,
        RequestState::Revoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Requested => "requested",
            RequestState::Approved => "approved",
            RequestState::Denied => "denied",
            RequestState::Active => "active",
            RequestState::Expired => "expired",
            RequestState::Revoked => "revoked",
        }
    }

    /// Final states never change again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RequestState::Denied | RequestState::Expired | RequestState::Revoked
        )
    }
}

impl fmt::Display for RequestState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RequestState {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, ValidationError> {
        RequestState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| ValidationError::new("state", format!("'{s}' is not a request state")))
    }
}

/// Who is acting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub username: Username,
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub by: Username,
    pub at: Timestamp,
}

/// A supervisor's narrowing of what was asked for: fewer ports, a shorter window, `read` for
/// `write`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Narrowing {
    pub ports: Option<BTreeSet<Port>>,
    pub window: Option<Window>,
    pub access: Option<Access>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TransitionError {
    /// The actor's role may not do this.
    #[error("not allowed: {0}")]
    Forbidden(String),
    /// Nobody approves their own request.
    #[error("nobody may approve their own request")]
    SelfApproval,
    /// The request is not in a state where this can happen (already decided, expired, ...).
    #[error("conflict: {0}")]
    Conflict(String),
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRequest {
    pub requester: Username,
    pub org: OrgName,
    pub device: DeviceName,
    pub ports: BTreeSet<Port>,
    /// What the grant allows on the Modbus ports among `ports` (raw TCP ports pass bytes).
    #[serde(default)]
    pub access: Access,
    pub window: Window,
    pub reason: String,
    pub ticket: Option<String>,
    pub created_at: Timestamp,
    pub state: RequestState,
    pub approvals: Vec<Approval>,
    /// Why it was denied or revoked.
    pub closing_reason: Option<String>,
    pub closed_by: Option<Username>,
}

fn check_text(
    field: &'static str,
    text: &str,
    max: usize,
    required: bool,
) -> Result<String, ValidationError> {
    let t = text.trim();
    if required && t.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if t.chars().count() > max {
        return Err(ValidationError::new(
            field,
            format!("is longer than {max} characters"),
        ));
    }
    if t.chars().any(char::is_control) {
        return Err(ValidationError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(t.to_owned())
}

impl AccessRequest {
    /// A vendor asks for `ports` of `device` with `access` (read unless said) during `window`.
    #[allow(clippy::too_many_arguments)]
    pub fn submit(
        actor: &Actor,
        org: Option<&OrgName>,
        device: &DeviceName,
        policy: &DevicePolicy,
        ports: BTreeSet<Port>,
        access: Option<Access>,
        window: Window,
        reason: &str,
        ticket: Option<&str>,
        now: Timestamp,
    ) -> Result<Self, TransitionError> {
        if actor.role != Role::Vendor {
            return Err(TransitionError::Forbidden(format!(
                "only vendors request access; '{}' is {}",
                actor.username, actor.role
            )));
        }
        let org = org.ok_or_else(|| {
            TransitionError::Forbidden(format!(
                "vendor '{}' belongs to no organisation",
                actor.username
            ))
        })?;
        if window.has_ended(now) {
            return Err(ValidationError::new("window", "has already ended").into());
        }
        if window.start > now.saturating_add(MAX_LEAD_TIME) {
            return Err(ValidationError::new("window", "starts more than 30 days from now").into());
        }
        // A window that started a moment ago starts now: elapsed time is not granted.
        let window = Window::new(window.start.max(now), window.end)?;
        policy.check(org, &ports, &window)?;
        let access = access.unwrap_or_default();
        policy.check_access(&ports, access)?;
        let reason = check_text("reason", reason, MAX_REASON_CHARS, true)?;
        let ticket = match ticket {
            Some(t) if !t.trim().is_empty() => {
                Some(check_text("ticket", t, MAX_TICKET_CHARS, false)?)
            }
            _ => None,
        };
        Ok(Self {
            requester: actor.username.clone(),
            org: org.clone(),
            device: device.clone(),
            ports,
            access,
            window,
            reason,
            ticket,
            created_at: now,
            state: RequestState::Requested,
            approvals: Vec::new(),
            closing_reason: None,
            closed_by: None,
        })
    }

    /// The state as of `now`, taking the clock into account (approved -> active -> expired).
    pub fn state_at(&self, now: Timestamp) -> RequestState {
        match self.state {
            s if s.is_final() => s,
            _ if self.window.has_ended(now) => RequestState::Expired,
            RequestState::Approved | RequestState::Active if self.window.contains(now) => {
                RequestState::Active
            }
            s => s,
        }
    }

    /// True when the stored state is not final but the window has ended at `now`: the end
    /// must be persisted (state `expired` with when it was seen), so that no later reading of
    /// the wall clock, stepped back or not, can make the grant live again.
    pub fn ended_by_time(&self, now: Timestamp) -> bool {
        !self.state.is_final() && self.window.has_ended(now)
    }

    /// Moves the stored state forward to `state_at(now)`. Returns true when it changed.
    pub fn tick(&mut self, now: Timestamp) -> bool {
        let next = self.state_at(now);
        let changed = next != self.state;
        self.state = next;
        changed
    }

    /// True when traffic may flow for this grant at `now`.
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.state_at(now) == RequestState::Active
    }

    fn require_pending(&mut self, now: Timestamp, what: &str) -> Result<(), TransitionError> {
        self.tick(now);
        match self.state {
            RequestState::Requested => Ok(()),
            s => Err(TransitionError::Conflict(format!(
                "cannot {what} a request that is {s}"
            ))),
        }
    }

    /// A supervisor approves, optionally narrowing ports and window. Returns the new state: still
    /// `Requested` when the policy needs a second, different approver.
    pub fn approve(
        &mut self,
        actor: &Actor,
        policy: &DevicePolicy,
        narrowing: &Narrowing,
        now: Timestamp,
    ) -> Result<RequestState, TransitionError> {
        if actor.role != Role::Supervisor {
            return Err(TransitionError::Forbidden(
                "only supervisors approve".into(),
            ));
        }
        if actor.username == self.requester {
            return Err(TransitionError::SelfApproval);
        }
        self.require_pending(now, "approve")?;
        if self.approvals.iter().any(|a| a.by == actor.username) {
            return Err(TransitionError::Conflict(
                "you already approved this request; a second, different supervisor must approve"
                    .into(),
            ));
        }
        let ports = match &narrowing.ports {
            Some(p) if p.is_empty() => {
                return Err(ValidationError::new("ports", "name at least one port").into());
            }
            Some(p) if !p.is_subset(&self.ports) => {
                return Err(ValidationError::new(
                    "ports",
                    format!(
                        "approval may only narrow the requested ports ({})",
                        Port::join(&self.ports)
                    ),
                )
                .into());
            }
            Some(p) => p.clone(),
            None => self.ports.clone(),
        };
        let window = match narrowing.window {
            Some(w) if !w.within(&self.window) => {
                return Err(ValidationError::new(
                    "window",
                    format!(
                        "approval may only shorten the requested window ({} to {})",
                        self.window.start, self.window.end
                    ),
                )
                .into());
            }
            Some(w) if w.has_ended(now) => {
                return Err(ValidationError::new("window", "has already ended").into());
            }
            Some(w) => w,
            None => self.window,
        };
        let access = match narrowing.access {
            Some(Access::Write) if self.access == Access::Read => {
                return Err(ValidationError::new(
                    "access",
                    "approval may only narrow access (write to read); the vendor asked for read",
                )
                .into());
            }
            Some(a) => a,
            None => self.access,
        };
        policy.check(&self.org, &ports, &window)?;
        policy.check_access(&ports, access)?;
        self.ports = ports;
        self.access = access;
        self.window = window;
        self.approvals.push(Approval {
            by: actor.username.clone(),
            at: now,
        });
        if self.approvals.len() >= usize::from(policy.approvals_required) {
            self.state = RequestState::Approved;
            self.tick(now);
        }
        Ok(self.state)
    }

    pub fn deny(
        &mut self,
        actor: &Actor,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), TransitionError> {
        if actor.role != Role::Supervisor {
            return Err(TransitionError::Forbidden("only supervisors deny".into()));
        }
        let reason = check_text("reason", reason, MAX_REASON_CHARS, true)?;
        self.require_pending(now, "deny")?;
        self.state = RequestState::Denied;
        self.closing_reason = Some(reason);
        self.closed_by = Some(actor.username.clone());
        Ok(())
    }

    /// Ends a grant before its window does. Supervisors revoke; admins too (e.g. when disabling
    /// a vendor's account).
    pub fn revoke(
        &mut self,
        actor: &Actor,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), TransitionError> {
        if !matches!(actor.role, Role::Supervisor | Role::Admin) {
            return Err(TransitionError::Forbidden(
                "only supervisors and admins revoke".into(),
            ));
        }
        let reason = check_text("reason", reason, MAX_REASON_CHARS, true)?;
        self.tick(now);
        match self.state {
            RequestState::Approved | RequestState::Active => {
                self.state = RequestState::Revoked;
                self.closing_reason = Some(reason);
                self.closed_by = Some(actor.username.clone());
                Ok(())
            }
            s => Err(TransitionError::Conflict(format!(
                "cannot revoke a grant that is {s}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests;
