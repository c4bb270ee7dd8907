//! What a notice says: an e-mail's subject and plain-text body, and a webhook's JSON document.
//!
//! Messages carry links, never secrets or tokens (SECURITY.md): a link opens the page, and
//! approving from it still takes a login and a step-up.

use jiff::tz::TimeZone;
use portcullis_core::Timestamp;
use portcullis_core::audit::AuditEvent;
use portcullis_core::notify::Notice;
use portcullis_store::{RequestRecord, UserRecord};
use serde_json::Value;

/// What a message is about: the event (or, for a window notice, the facts) and its request.
#[derive(Debug)]
pub struct Subject<'a> {
    pub notice: Notice,
    pub action: &'a str,
    pub event: Option<&'a AuditEvent>,
    pub details: Value,
    pub facts: &'a Value,
    pub request: Option<&'a RequestRecord>,
}

/// Where a reader's times and links come from.
#[derive(Debug, Clone)]
pub struct Reader {
    pub tz: TimeZone,
    pub tz_name: String,
    pub public_url: String,
}

impl Reader {
    /// The plant's zone unless the person chose one.
    pub fn for_user(plant: &Reader, user: Option<&UserRecord>) -> Reader {
        match user.and_then(|u| u.time_zone.as_ref()) {
            Some(tz) => Reader {
                tz: tz.zone(),
                tz_name: tz.as_str().to_owned(),
                public_url: plant.public_url.clone(),
            },
            None => plant.clone(),
        }
    }

    pub fn show(&self, t: Timestamp) -> String {
        jiff::Timestamp::from_microsecond(t.unix_micros())
            .map(|ts| {
                ts.to_zoned(self.tz.clone())
                    .strftime("%Y-%m-%d %H:%M %Z")
                    .to_string()
            })
            .unwrap_or_else(|_| t.to_rfc3339())
    }

    fn link(&self, path: &str) -> String {
        format!("{}{path}", self.public_url.trim_end_matches('/'))
    }
}

fn s<'v>(v: &'v Value, key: &str) -> &'v str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn ports(r: &RequestRecord) -> String {
    r.request
        .ports
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

impl Subject<'_> {
    /// The page a reader opens.
    pub fn path(&self) -> String {
        match (self.notice, self.request) {
            (Notice::Lockout, _) => "/admin/users".into(),
            (Notice::Alert, _) => format!("/audit?action={}", self.action),
            (_, Some(r)) => format!("/requests/{}", r.id),
            _ => "/".into(),
        }
    }

    /// Subject line and body for one reader.
    pub fn email(&self, reader: &Reader) -> (String, String) {
        let link = reader.link(&self.path());
        let actor = self.event.map(|e| e.actor.as_str()).unwrap_or("portcullis");
        let window = |r: &RequestRecord| {
            format!(
                "{} to {} ({})",
                reader.show(r.request.window.start),
                reader.show(r.request.window.end),
                reader.tz_name
            )
        };
        let d = &self.details;
        let (subject, lines): (String, Vec<String>) = match (self.notice, self.request) {
            (Notice::NewRequest, Some(r)) => (
                format!(
                    "Request #{}: {} ({}) asks for {} port {}",
                    r.id,
                    r.request.requester,
                    r.request.org,
                    r.request.device,
                    ports(r)
                ),
                vec![
                    format!(
                        "{} of {} asks for access to {}.",
                        r.request.requester, r.request.org, r.request.device
                    ),
                    format!("Ports: {} ({} access)", ports(r), r.request.access.as_str()),
                    format!("Window: {}", window(r)),
                    format!("Reason: {}", r.request.reason),
                    r.request
                        .ticket
                        .as_ref()
                        .map(|t| format!("Ticket: {t}"))
                        .unwrap_or_default(),
                    String::new(),
                    "Review it (approving takes a login and a fresh authenticator code):".into(),
                ],
            ),
            (Notice::SecondApproval, Some(r)) => (
                format!("Request #{}: a second approval is needed", r.id),
                vec![
                    format!(
                        "{actor} approved {}'s request for {} port {}; the device's policy needs a second supervisor.",
                        r.request.requester,
                        r.request.device,
                        ports(r)
                    ),
                    format!("Window: {}", window(r)),
                    format!("Reason: {}", r.request.reason),
                    String::new(),
                    "Review it (you cannot be the supervisor who approved it first):".into(),
                ],
            ),
            (Notice::Decision, Some(r)) if self.action == "request.deny" => (
                format!("Request #{} for {} was denied", r.id, r.request.device),
                vec![
                    format!(
                        "{actor} denied your request for {} port {}.",
                        r.request.device,
                        ports(r)
                    ),
                    format!("Reason: {}", s(d, "reason")),
                ],
            ),
            (Notice::Decision, Some(r)) => {
                let narrowed = narrowing(self.facts);
                let verb = if narrowed.is_empty() {
                    "approved"
                } else {
                    "approved, narrowed"
                };
                let mut lines = vec![
                    format!(
                        "{actor} approved your request for {} port {}.",
                        r.request.device,
                        ports(r)
                    ),
                    format!("Window: {}", window(r)),
                    format!("Access: {}", r.request.access.as_str()),
                ];
                if !narrowed.is_empty() {
                    lines.push(format!(
                        "The supervisor narrowed it: {}.",
                        narrowed.join("; ")
                    ));
                }
                lines.push(String::new());
                lines.push(format!(
                    "Connect inside the window with: portcullis connect {}",
                    r.id
                ));
                (
                    format!("Request #{} for {} was {verb}", r.id, r.request.device),
                    lines,
                )
            }
            (Notice::SessionStarted, Some(r)) => (
                format!(
                    "Session started: {} on {}",
                    r.request.requester, r.request.device
                ),
                vec![
                    format!(
                        "{} started a session on {} (grant #{}) from {}.",
                        r.request.requester,
                        r.request.device,
                        r.id,
                        self.event.and_then(|e| e.source.as_deref()).unwrap_or("?")
                    ),
                    format!("Window: {}", window(r)),
                ],
            ),
            (Notice::SessionEnded, Some(r)) => (
                format!(
                    "Session ended: {} on {} ({})",
                    r.request.requester,
                    r.request.device,
                    s(d, "reason")
                ),
                vec![format!(
                    "{}'s session on {} (grant #{}) ended: {}.",
                    r.request.requester,
                    r.request.device,
                    r.id,
                    s(d, "reason")
                )],
            ),
            (Notice::Revoked, Some(r)) => (
                format!(
                    "Your access to {} was revoked (grant #{})",
                    r.request.device, r.id
                ),
                vec![
                    format!(
                        "{actor} revoked grant #{} for {}; its live connections were cut.",
                        r.id, r.request.device
                    ),
                    format!("Reason: {}", s(d, "reason")),
                ],
            ),
            (Notice::EndedBySupervisor, Some(r)) => (
                format!("A supervisor ended your session on {}", r.request.device),
                vec![
                    format!(
                        "{actor} ended your session on {} (grant #{}).",
                        r.request.device, r.id
                    ),
                    format!("Reason: {}", s(d, "reason")),
                    "The grant stays approved: you may connect again inside its window.".into(),
                ],
            ),
            (Notice::WindowEnding, Some(r)) => {
                let minutes = self
                    .facts
                    .get("minutes")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                (
                    format!(
                        "Your window on {} ends in {minutes} minutes",
                        r.request.device
                    ),
                    vec![
                        format!(
                            "Grant #{} for {} ends at {}; live connections are cut then.",
                            r.id,
                            r.request.device,
                            reader.show(r.request.window.end)
                        ),
                        "To go on, ask for a new window before it ends.".into(),
                    ],
                )
            }
            (Notice::Lockout, _) => {
                let who = self
                    .event
                    .map(|e| e.target.strip_prefix("user:").unwrap_or(&e.actor))
                    .unwrap_or("?");
                (
                    format!("Account '{who}' is locked after failed logins"),
                    vec![
                        format!(
                            "'{who}' was locked after {} failed logins, until {}.",
                            d.get("failures").and_then(Value::as_u64).unwrap_or(0),
                            s(d, "until")
                        ),
                        format!(
                            "Source: {}",
                            self.event.and_then(|e| e.source.as_deref()).unwrap_or("?")
                        ),
                        "If this was not you, tell your plant's admin.".into(),
                    ],
                )
            }
            (Notice::Alert, _) => (
                format!(
                    "Alert: {}",
                    d.get("summary")
                        .and_then(Value::as_str)
                        .unwrap_or(self.action)
                ),
                vec![
                    format!(
                        "{} at {}",
                        self.action,
                        self.event.map(|e| reader.show(e.ts)).unwrap_or_default()
                    ),
                    serde_json::to_string_pretty(d).unwrap_or_default(),
                ],
            ),
            (notice, None) => (
                format!("Portcullis: {}", self.action),
                vec![format!("{} ({})", self.action, notice.as_str())],
            ),
        };
        let mut body: Vec<String> = lines.into_iter().collect();
        body.push(link);
        body.push(String::new());
        body.push("-- ".into());
        body.push(format!(
            "Portcullis{}. Times are {}.",
            self.event
                .map(|e| format!(", audit event #{}", e.seq))
                .unwrap_or_default(),
            reader.tz_name
        ));
        (format!("[Portcullis] {subject}"), body.join("\n") + "\n")
    }

    /// The JSON a webhook receives: what happened, where to look, and the event as the audit
    /// log holds it (so a receiver can match it to `audit export`).
    pub fn webhook(&self, reader: &Reader) -> Value {
        let (summary, _) = self.email(reader);
        serde_json::json!({
            "notice": self.notice.as_str(),
            "action": self.action,
            "summary": summary.trim_start_matches("[Portcullis] "),
            "link": reader.link(&self.path()),
            "grant_id": self.request.map(|r| r.id),
            "event": self.event.map(|e| serde_json::json!({
                "seq": e.seq, "ts": e.ts, "actor": e.actor, "role": e.role, "action": e.action,
                "target": e.target, "grant_id": e.grant_id, "session_id": e.session_id,
                "source": e.source, "details": self.details, "hash": e.hash.to_hex(),
            })),
            "facts": self.facts,
        })
    }
}

/// What a supervisor narrowed, from `facts.narrowed` (the router compares the request as made
/// with the grant as approved).
fn narrowing(facts: &Value) -> Vec<String> {
    facts
        .get("narrowed")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
