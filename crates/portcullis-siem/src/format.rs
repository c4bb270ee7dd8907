//! One audit event as an RFC 5424 syslog message:
//!
//! ```text
//! <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [portcullis@32473 seq="N" hash="..."] MSG
//! ```
//!
//! - PRI = facility x 8 + severity. Facility: `authpriv` (10) unless configured. Severity comes
//!   from the action by [`severity_of`], whose table is the one place to change it.
//! - TIMESTAMP is the event's own commit time (UTC, microseconds), not the send time: a
//!   collector that was away sees when things happened.
//! - MSGID is the action, cut to the 32 printable ASCII characters RFC 5424 allows.
//! - The structured data element carries `seq` (a collector dedupes and orders by it) and the
//!   chain `hash`. 32473 is the enterprise number RFC 5612 reserves for documentation; a plant
//!   that wants its own registers one, nothing parses the number.
//! - MSG is the `audit export --format jsonl` line of the event (no BOM), or a CEF line.

use portcullis_core::audit::{AuditEvent, ExportRecord};

/// A syslog facility code (0..23).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facility(pub u8);

impl Facility {
    pub const AUTHPRIV: Facility = Facility(10);

    const NAMES: [&'static str; 24] = [
        "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
        "authpriv", "ftp", "ntp", "security", "console", "clock", "local0", "local1", "local2",
        "local3", "local4", "local5", "local6", "local7",
    ];

    /// A facility by its usual name (`authpriv`, `local3`) or number.
    pub fn parse(text: &str) -> Option<Facility> {
        let t = text.trim().to_ascii_lowercase();
        if let Ok(n) = t.parse::<u8>() {
            return (n < 24).then_some(Facility(n));
        }
        let i = Self::NAMES.iter().position(|n| *n == t)?;
        u8::try_from(i).ok().map(Facility)
    }
}

/// Syslog severities (RFC 5424 table 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Emergency = 0,
    Alert = 1,
    Critical = 2,
    Error = 3,
    Warning = 4,
    Notice = 5,
    Informational = 6,
    Debug = 7,
}

impl Severity {
    /// CEF's 0..10 scale: Alert 9, Warning 6, Notice 4, Informational 2.
    pub fn cef(self) -> u8 {
        match self {
            Severity::Emergency => 10,
            Severity::Alert => 9,
            Severity::Critical => 8,
            Severity::Error => 7,
            Severity::Warning => 6,
            Severity::Notice => 4,
            Severity::Informational => 2,
            Severity::Debug => 0,
        }
    }
}

/// Actions that are Warning: someone was stopped, or the broker's own safety is at stake.
const WARNING: &[&str] = &[
    "login.locked",
    "mfa.replay",
    "clock.anomaly",
    "relay.session.refuse",
    "relay.stream.refuse",
    "relay.modbus.refuse",
    "relay.connector.refuse",
];

/// Actions that are Notice: worth a look, normal in small numbers.
const NOTICE: &[&str] = &[
    "login.fail",
    "mfa.fail",
    "request.deny",
    "grant.revoke",
    "user.disable",
    "site.revoke",
    "clock.unsynchronised",
    "disk.usage",
    "relay.stream.connector_lost",
    "service.stop",
];

/// The severity of an action. `alert.*` (the alerts of issue 15) are Alert; the [`WARNING`]
/// list and any other `*.refuse` are Warning; the [`NOTICE`] list is Notice; everything
/// else (logins, requests, approvals, sessions, configuration changes) is Informational.
pub fn severity_of(action: &str) -> Severity {
    if action.starts_with("alert.") {
        Severity::Alert
    } else if WARNING.contains(&action) || action.ends_with(".refuse") {
        Severity::Warning
    } else if NOTICE.contains(&action) {
        Severity::Notice
    } else {
        Severity::Informational
    }
}

/// What MSG holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageFormat {
    /// The `audit export --format jsonl` line.
    Json,
    /// ArcSight Common Event Format.
    Cef,
}

/// The fixed parts of every message.
#[derive(Debug, Clone)]
pub struct Formatter {
    pub format: MessageFormat,
    pub facility: Facility,
    pub hostname: String,
    pub app_name: String,
    pub procid: String,
}

/// RFC 5424 allows 32 characters of MSGID.
const MSGID_MAX: usize = 32;

impl Formatter {
    /// One complete RFC 5424 message for `ev` (no framing, no trailing newline).
    pub fn message(&self, ev: &AuditEvent) -> String {
        let severity = severity_of(&ev.action);
        let pri = u16::from(self.facility.0) * 8 + severity as u16;
        let msgid = printable_ascii(&ev.action, MSGID_MAX);
        let msgid = if msgid.is_empty() { "-".into() } else { msgid };
        let record = ExportRecord::from(ev);
        let msg = match self.format {
            MessageFormat::Json => record.jsonl_line(),
            MessageFormat::Cef => cef(&record, severity),
        };
        format!(
            "<{pri}>1 {ts} {host} {app} {procid} {msgid} [portcullis@32473 seq=\"{seq}\" hash=\"{hash}\"] {msg}",
            ts = record.ts,
            host = self.hostname,
            app = self.app_name,
            procid = self.procid,
            seq = ev.seq,
            hash = sd_param_value(&record.hash),
        )
    }
}

/// The printable US-ASCII (33..=126) form of `text` for a header field: anything else becomes
/// `_`, and the result is cut to `max` characters.
pub fn printable_ascii(text: &str, max: usize) -> String {
    text.chars()
        .map(|c| if ('!'..='~').contains(&c) { c } else { '_' })
        .take(max)
        .collect()
}

/// A PARAM-VALUE of structured data: `"`, `\` and `]` escaped with `\` (RFC 5424 6.3.3).
pub fn sd_param_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A CEF header field: `\` and `|` escaped; a line break would end the record, so it becomes
/// a space.
pub fn cef_header(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            c if is_line_break(c) || c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A CEF extension value: `\` and `=` escaped, CR and LF written `\r` and `\n`; other control
/// characters and the Unicode line separators (which some readers take for line breaks)
/// become `\uXXXX` text so a record stays on one line.
pub fn cef_ext(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if is_line_break(c) || c.is_control() => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out
}

fn is_line_break(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

/// `CEF:0|Portcullis|Portcullis|VERSION|ACTION|ACTION|SEVERITY|extensions`.
fn cef(r: &ExportRecord, severity: Severity) -> String {
    let mut ext: Vec<(&str, String)> = Vec::with_capacity(16);
    // CEF's rt: milliseconds since the epoch, the form every CEF reader takes.
    let rt = portcullis_core::Timestamp::parse_rfc3339(&r.ts)
        .map(|t| (t.unix_micros() / 1000).to_string())
        .unwrap_or_else(|_| r.ts.clone());
    ext.push(("rt", rt));
    ext.push(("suser", r.actor.clone()));
    // `src` must be an IP address to CEF; `cli` and the like go to a labelled string.
    match &r.source {
        Some(s) if s.parse::<std::net::IpAddr>().is_ok() => ext.push(("src", s.clone())),
        Some(s) => {
            ext.push(("cs2Label", "source".into()));
            ext.push(("cs2", s.clone()));
        }
        None => {}
    }
    ext.push(("act", r.action.clone()));
    ext.push(("cs1Label", "target".into()));
    ext.push(("cs1", r.target.clone()));
    ext.push(("cs3Label", "role".into()));
    ext.push(("cs3", r.role.clone()));
    if let Some(g) = r.grant_id {
        ext.push(("cs4Label", "grant".into()));
        ext.push(("cs4", g.to_string()));
    }
    if let Some(s) = &r.session_id {
        ext.push(("cs5Label", "session".into()));
        ext.push(("cs5", s.clone()));
    }
    ext.push(("cs6Label", "hash".into()));
    ext.push(("cs6", r.hash.clone()));
    ext.push(("cn1Label", "seq".into()));
    ext.push(("cn1", r.seq.to_string()));
    ext.push(("msg", r.details.to_string()));
    let ext: Vec<String> = ext
        .into_iter()
        .map(|(k, v)| format!("{k}={}", cef_ext(&v)))
        .collect();
    let action = cef_header(&r.action);
    format!(
        "CEF:0|Portcullis|Portcullis|{}|{action}|{action}|{}|{}",
        cef_header(env!("CARGO_PKG_VERSION")),
        severity.cef(),
        ext.join(" ")
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use portcullis_core::Timestamp;
    use portcullis_core::audit::Digest;

    use super::*;

    fn event(action: &str) -> AuditEvent {
        AuditEvent {
            seq: 42,
            ts: Timestamp::parse_rfc3339("2026-12-01T08:00:00.123456Z").unwrap(),
            actor: "sam".into(),
            role: "supervisor".into(),
            action: action.into(),
            target: "request:7".into(),
            grant_id: None,
            session_id: None,
            source: Some("10.0.0.5".into()),
            details: r#"{"reason":"a=b|c\\d\nnext"}"#.into(),
            prev_hash: Digest([1; 32]),
            hash: Digest([0xab; 32]),
            mac: Digest([2; 32]),
        }
    }

    fn formatter(format: MessageFormat) -> Formatter {
        Formatter {
            format,
            facility: Facility::AUTHPRIV,
            hostname: "broker-1".into(),
            app_name: "portcullis".into(),
            procid: "4242".into(),
        }
    }

    #[test]
    fn a_json_message_is_the_export_line_behind_a_5424_header() {
        let ev = event("request.approve");
        let m = formatter(MessageFormat::Json).message(&ev);
        let hash = "ab".repeat(32);
        let line = ExportRecord::from(&ev).jsonl_line();
        // authpriv (10) x 8 + informational (6) = 86.
        assert_eq!(
            m,
            format!(
                "<86>1 2026-12-01T08:00:00.123456Z broker-1 portcullis 4242 request.approve \
                 [portcullis@32473 seq=\"42\" hash=\"{hash}\"] {line}"
            )
        );
        assert!(!m.contains('\n'));
        assert!(line.starts_with(r#"{"seq":42,"#), "{line}");
    }

    #[test]
    fn a_cef_message_golden() {
        let m = formatter(MessageFormat::Cef).message(&event("login.locked"));
        let hash = "ab".repeat(32);
        let v = env!("CARGO_PKG_VERSION");
        // authpriv x 8 + warning (4) = 84.
        assert_eq!(
            m,
            format!(
                "<84>1 2026-12-01T08:00:00.123456Z broker-1 portcullis 4242 login.locked \
                 [portcullis@32473 seq=\"42\" hash=\"{hash}\"] \
                 CEF:0|Portcullis|Portcullis|{v}|login.locked|login.locked|6|\
                 rt=1796112000123 suser=sam src=10.0.0.5 act=login.locked cs1Label=target \
                 cs1=request:7 cs3Label=role cs3=supervisor cs6Label=hash cs6={hash} \
                 cn1Label=seq cn1=42 msg={{\"reason\":\"a\\=b|c\\\\\\\\d\\\\nnext\"}}"
            )
        );
    }

    #[test]
    fn a_source_that_is_not_an_address_is_a_labelled_string() {
        let mut ev = event("user.add");
        ev.source = Some("cli".into());
        let m = formatter(MessageFormat::Cef).message(&ev);
        assert!(m.contains(" cs2Label=source cs2=cli "), "{m}");
        assert!(!m.contains(" src="), "{m}");
    }

    #[test]
    fn severities_follow_the_table() {
        assert_eq!(severity_of("alert.login_failures"), Severity::Alert);
        assert_eq!(severity_of("login.locked"), Severity::Warning);
        assert_eq!(severity_of("relay.something.refuse"), Severity::Warning);
        assert_eq!(severity_of("login.fail"), Severity::Notice);
        assert_eq!(severity_of("request.approve"), Severity::Informational);
        let m = formatter(MessageFormat::Json).message(&event("alert.lockout"));
        assert!(m.starts_with("<81>1 "), "{m}");
    }

    #[test]
    fn sd_param_values_escape_quote_backslash_and_bracket() {
        assert_eq!(sd_param_value(r#"a"b\c]d"#), r#"a\"b\\c\]d"#);
        assert_eq!(sd_param_value("plain"), "plain");
    }

    #[test]
    fn cef_escaping_keeps_fields_and_lines_apart() {
        assert_eq!(cef_header(r"a|b\c"), r"a\|b\\c");
        assert_eq!(cef_header("a\nb"), "a b");
        assert_eq!(cef_ext("k=v\\w\nx\ry"), r"k\=v\\w\nx\ry");
        assert_eq!(cef_ext("a\u{2028}b\u{1}"), r"a\u2028b\u0001");
        assert_eq!(cef_ext("pipes|stay"), "pipes|stay");
    }

    #[test]
    fn msgid_is_printable_and_at_most_32() {
        let long = "relay.a_very_long_action_name_that_goes_on";
        let m = formatter(MessageFormat::Json).message(&event(long));
        let msgid = m.split(' ').nth(5).unwrap();
        assert_eq!(msgid, &long[..32]);
        assert_eq!(printable_ascii("a b\u{e9}c", 32), "a_b_c");
    }

    #[test]
    fn facilities_by_name_or_number() {
        assert_eq!(Facility::parse("authpriv"), Some(Facility(10)));
        assert_eq!(Facility::parse("LOCAL7"), Some(Facility(23)));
        assert_eq!(Facility::parse("4"), Some(Facility(4)));
        assert_eq!(Facility::parse("24"), None);
        assert_eq!(Facility::parse("nope"), None);
    }
}
