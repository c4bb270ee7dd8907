//! Export shapes. An exported event is always exactly one line, whatever its fields contain, so
//! a crafted actor name or reason cannot forge a line in a CSV or JSONL file (log injection).

use serde::Serialize;

use super::event::AuditEvent;
use crate::GrantId;

/// One event as JSONL and CSV exports show it. JSON escapes every control character, so one
/// record is one line.
#[derive(Debug, Clone, Serialize)]
pub struct ExportRecord {
    pub seq: i64,
    pub ts: String,
    pub actor: String,
    pub role: String,
    pub action: String,
    pub target: String,
    pub grant_id: Option<GrantId>,
    pub session_id: Option<String>,
    pub source: Option<String>,
    /// The details object, or the raw text if it is not JSON.
    pub details: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

impl From<&AuditEvent> for ExportRecord {
    fn from(ev: &AuditEvent) -> Self {
        Self {
            seq: ev.seq,
            ts: ev.ts.to_rfc3339(),
            actor: ev.actor.clone(),
            role: ev.role.clone(),
            action: ev.action.clone(),
            target: ev.target.clone(),
            grant_id: ev.grant_id,
            session_id: ev.session_id.clone(),
            source: ev.source.clone(),
            details: serde_json::from_str(&ev.details)
                .unwrap_or_else(|_| serde_json::Value::String(ev.details.clone())),
            prev_hash: ev.prev_hash.to_hex(),
            hash: ev.hash.to_hex(),
        }
    }
}

impl ExportRecord {
    pub const CSV_HEADER: [&'static str; 12] = [
        "seq",
        "ts",
        "actor",
        "role",
        "action",
        "target",
        "grant_id",
        "session_id",
        "source",
        "details",
        "prev_hash",
        "hash",
    ];

    pub fn jsonl_line(&self) -> String {
        // Invariant: serialising plain strings, integers and a JSON value cannot fail.
        escape_line_breaks(serde_json::to_string(self).unwrap_or_default())
    }

    pub fn csv_row(&self) -> [String; 12] {
        let opt = |o: &Option<String>| csv_cell(o.as_deref().unwrap_or(""));
        [
            self.seq.to_string(),
            self.ts.clone(),
            csv_cell(&self.actor),
            csv_cell(&self.role),
            csv_cell(&self.action),
            csv_cell(&self.target),
            self.grant_id.map(|g| g.to_string()).unwrap_or_default(),
            opt(&self.session_id),
            opt(&self.source),
            csv_cell(&self.details.to_string()),
            self.prev_hash.clone(),
            self.hash.clone(),
        ]
    }
}

/// Makes free text safe for a CSV cell read by people and spreadsheets: control characters
/// (newlines and NEL U+0085 included) and the Unicode line and paragraph separators (U+2028,
/// U+2029) become visible `\n`, `\r`, `\t` or `\u{..}` escapes so a record stays on one
/// line, and a leading `=`, `+`, `-` or `@` gets a `'` so a spreadsheet never runs it as a formula.
pub fn csv_cell(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    if text.starts_with(['=', '+', '-', '@']) {
        out.push('\'');
    }
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // Not control characters to Unicode, but line breaks to many readers.
            '\u{2028}' | '\u{2029}' => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// JSON allows U+2028, U+2029 and U+0085 raw inside strings and serde_json writes them so, but
/// editors, log shippers and JavaScript line readers take them for line breaks: one event would
/// look like two lines, and a crafted field could forge the second one (issue 12). serde_json
/// emits them only inside string literals, where `\uXXXX` means the same character, so the
/// record parses back unchanged.
fn escape_line_breaks(json: String) -> String {
    if !json.contains(['\u{2028}', '\u{2029}', '\u{85}']) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 12);
    for c in json.chars() {
        match c {
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            '\u{85}' => out.push_str("\\u0085"),
            c => out.push(c),
        }
    }
    out
}
