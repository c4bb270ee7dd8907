//! Which audit events a person hears of, how a webhook proves it came from us, and how long a
//! failed delivery waits before the next try. The delivery itself is `portcullis-notify`.
//!
//! A notification is caused by an audit event (or, for a window about to end, by the clock): the
//! store writes the outbox row in the transaction of the event, choosing by [`Notice::of`], so a
//! message exists exactly when its event does. Who receives it is decided when it is routed.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What a person is told, and so who is told it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Notice {
    /// `request.create`: the supervisors who may approve it.
    NewRequest,
    /// `request.approve` that leaves the request waiting: the other supervisors.
    SecondApproval,
    /// `request.approve` that grants it, or `request.deny`: the vendor.
    Decision,
    /// `relay.session.start`: supervisors who ask for session notices.
    SessionStarted,
    /// `relay.session.end`: the same.
    SessionEnded,
    /// `grant.revoke`: the vendor.
    Revoked,
    /// `session.end` (a supervisor ended one session): the vendor.
    EndedBySupervisor,
    /// `login.locked`: the account's owner and the admins.
    Lockout,
    /// `window.ending` (15 and 5 minutes before the end; from the clock, not the log): the vendor.
    WindowEnding,
    /// `alert.*`: the admins, and whoever asks for alerts.
    Alert,
}

/// The pseudo-action of a window-ending notice (it is not an audit event: nothing was done).
pub const WINDOW_ENDING: &str = "window.ending";

/// Minutes before a window's end at which its vendor is told, latest last.
pub const WINDOW_NOTICES: [u32; 2] = [15, 5];

impl Notice {
    /// The notice an event causes, if any. `state` is the request's state after the event
    /// (`request.approve` details carry it).
    pub fn of(action: &str, state: Option<&str>) -> Option<Notice> {
        Some(match action {
            "request.create" => Notice::NewRequest,
            "request.approve" if state == Some("requested") => Notice::SecondApproval,
            "request.approve" | "request.deny" => Notice::Decision,
            "relay.session.start" => Notice::SessionStarted,
            "relay.session.end" => Notice::SessionEnded,
            "grant.revoke" => Notice::Revoked,
            "session.end" => Notice::EndedBySupervisor,
            "login.locked" => Notice::Lockout,
            WINDOW_ENDING => Notice::WindowEnding,
            a if a.starts_with("alert.") => Notice::Alert,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Notice::NewRequest => "new_request",
            Notice::SecondApproval => "second_approval",
            Notice::Decision => "decision",
            Notice::SessionStarted => "session_started",
            Notice::SessionEnded => "session_ended",
            Notice::Revoked => "revoked",
            Notice::EndedBySupervisor => "ended_by_supervisor",
            Notice::Lockout => "lockout",
            Notice::WindowEnding => "window_ending",
            Notice::Alert => "alert",
        }
    }
}

/// Whether a subscription's event patterns take `action`: an exact name (`request.create`), a
/// family (`alert.*`, `request.*`), or everything (`*`).
pub fn matches(patterns: &[String], action: &str) -> bool {
    patterns.iter().any(|p| {
        let p = p.trim();
        p == "*"
            || p == action
            || p.strip_suffix(".*").is_some_and(|family| {
                action
                    .strip_prefix(family)
                    .is_some_and(|r| r.starts_with('.'))
            })
    })
}

/// A pattern a subscription may list: a name of lowercase words joined by dots, optionally
/// ending in `.*`, or `*` alone.
pub fn check_pattern(p: &str) -> Result<(), String> {
    let body = p.strip_suffix(".*").unwrap_or(p);
    let word = |w: &str| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c == '_');
    if p == "*" || body.split('.').all(word) {
        Ok(())
    } else {
        Err(format!(
            "'{p}' is not an event pattern such as request.create, alert.* or *"
        ))
    }
}

/// Webhook signatures: `X-Portcullis-Signature: v1=<hex HMAC-SHA256(secret, "<ts>.<body>")>`
/// beside `X-Portcullis-Timestamp: <unix seconds>`. The timestamp is inside the MAC, so a
/// receiver that refuses stale timestamps refuses replays.
pub mod signature {
    use super::*;

    pub const SIGNATURE_HEADER: &str = "x-portcullis-signature";
    pub const TIMESTAMP_HEADER: &str = "x-portcullis-timestamp";
    /// How far a receiver should let a timestamp be from its own clock.
    pub const TOLERANCE_SECS: i64 = 300;

    fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        // HMAC takes a key of any length.
        #[allow(clippy::expect_used)]
        let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
        m.update(timestamp.to_string().as_bytes());
        m.update(b".");
        m.update(body);
        m
    }

    pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
        format!(
            "v1={}",
            hex::encode(mac(secret, timestamp, body).finalize().into_bytes())
        )
    }

    /// What a receiver checks: the signature (in constant time) and the timestamp's age.
    pub fn verify(
        secret: &[u8],
        timestamp: i64,
        body: &[u8],
        header: &str,
        now_unix: i64,
    ) -> Result<(), &'static str> {
        if (now_unix - timestamp).abs() > TOLERANCE_SECS {
            return Err("timestamp too far from now (a replay?)");
        }
        let given = header
            .strip_prefix("v1=")
            .and_then(|h| hex::decode(h).ok())
            .ok_or("signature is not v1=<hex>")?;
        mac(secret, timestamp, body)
            .verify_slice(&given)
            .map_err(|_| "signature does not match")
    }
}

/// How deliveries are retried: the first retry after `first`, doubling to at most `max`, and
/// given up (marked failed, shown to admins) after `attempts` tries in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub first: Duration,
    pub max: Duration,
    pub attempts: u32,
}

impl Default for RetryPolicy {
    /// 30 s, 1, 2, 4, 8, 16, 32 min, then hourly: ten tries over about five hours.
    fn default() -> Self {
        Self {
            first: Duration::from_secs(30),
            max: Duration::from_secs(3600),
            attempts: 10,
        }
    }
}

impl RetryPolicy {
    /// The wait after the `attempt`-th failed try (1-based), or `None` when it was the last.
    pub fn after_failure(&self, attempt: u32) -> Option<Duration> {
        if attempt >= self.attempts {
            return None;
        }
        let doubled = self
            .first
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        Some(doubled.min(self.max))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn events_cause_the_notices_the_issue_lists() {
        assert_eq!(Notice::of("request.create", None), Some(Notice::NewRequest));
        assert_eq!(
            Notice::of("request.approve", Some("requested")),
            Some(Notice::SecondApproval)
        );
        assert_eq!(
            Notice::of("request.approve", Some("approved")),
            Some(Notice::Decision)
        );
        assert_eq!(Notice::of("request.deny", None), Some(Notice::Decision));
        assert_eq!(Notice::of("grant.revoke", None), Some(Notice::Revoked));
        assert_eq!(
            Notice::of("session.end", None),
            Some(Notice::EndedBySupervisor)
        );
        assert_eq!(Notice::of("login.locked", None), Some(Notice::Lockout));
        assert_eq!(Notice::of("alert.lockout", None), Some(Notice::Alert));
        assert_eq!(Notice::of("alertness", None), None);
        assert_eq!(Notice::of("login.fail", None), None);
        assert_eq!(Notice::of("relay.modbus.write", None), None);
    }

    #[test]
    fn patterns_match_names_families_and_everything() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(matches(&p(&["request.create"]), "request.create"));
        assert!(!matches(&p(&["request.create"]), "request.approve"));
        assert!(matches(&p(&["alert.*"]), "alert.lockout"));
        assert!(!matches(&p(&["alert.*"]), "alerts.x"));
        assert!(!matches(&p(&["alert.*"]), "alert"));
        assert!(matches(&p(&["*"]), "grant.revoke"));
        assert!(!matches(&[], "grant.revoke"));
        assert!(check_pattern("alert.*").is_ok());
        assert!(check_pattern("request.create").is_ok());
        assert!(check_pattern("*").is_ok());
        assert!(check_pattern("Request.Create").is_err());
        assert!(check_pattern("request.").is_err());
        assert!(check_pattern("*.create").is_err());
    }

    #[test]
    fn a_signature_covers_timestamp_and_body() {
        use signature::{sign, verify};
        let s = sign(b"k", 1_700_000_000, b"{\"a\":1}");
        assert!(s.starts_with("v1=") && s.len() == 3 + 64);
        assert!(verify(b"k", 1_700_000_000, b"{\"a\":1}", &s, 1_700_000_010).is_ok());
        assert!(verify(b"k", 1_700_000_000, b"{\"a\":2}", &s, 1_700_000_010).is_err());
        assert!(verify(b"x", 1_700_000_000, b"{\"a\":1}", &s, 1_700_000_010).is_err());
        // The same body and signature under another timestamp is refused: it is in the MAC.
        assert!(verify(b"k", 1_700_000_001, b"{\"a\":1}", &s, 1_700_000_010).is_err());
        assert!(verify(b"k", 1_700_000_000, b"{\"a\":1}", &s, 1_700_009_000).is_err());
    }

    #[test]
    fn retries_back_off_exponentially_then_give_up() {
        let p = RetryPolicy::default();
        let waits: Vec<_> = (1..=10).map(|a| p.after_failure(a)).collect();
        assert_eq!(waits[0], Some(Duration::from_secs(30)));
        assert_eq!(waits[1], Some(Duration::from_secs(60)));
        assert_eq!(waits[6], Some(Duration::from_secs(1920)));
        assert_eq!(waits[7], Some(Duration::from_secs(3600)));
        assert_eq!(waits[9], None);
    }
}
