//! A request as typed on the command line, checked before anything is sent: ports, times and
//! text. The broker checks again (policy, window length, lead time); these checks only make
//! the common mistakes fail at once, in plain words.

use time::OffsetDateTime;

use crate::api::NewRequest;
use crate::when;

/// What `portcullis request` was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInput<'a> {
    pub device: &'a str,
    pub ports: &'a str,
    pub from: &'a str,
    pub until: &'a str,
    pub reason: &'a str,
    pub ticket: Option<&'a str>,
    /// `read` or `write`, already checked by the command line.
    pub access: Option<&'a str>,
}

/// `502` or `502,80` (spaces allowed, duplicates dropped, order kept).
pub fn parse_ports(text: &str) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for part in text.split(',') {
        let p = part.trim();
        let port = p.parse::<u16>().ok().filter(|&n| n != 0).ok_or_else(|| {
            format!(
                "--port: '{}' is not a TCP port (1 to 65535); give one port or several \
                     separated by commas, e.g. 502,80",
                crate::printable(p, 32)
            )
        })?;
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    Ok(ports)
}

/// The API body for `input`, with times resolved against `now`.
pub fn build(input: &RequestInput<'_>, now: OffsetDateTime) -> Result<NewRequest, String> {
    let device = input.device.trim();
    if device.is_empty() {
        return Err("--device: name a device (see `portcullis devices`)".into());
    }
    let ports = parse_ports(input.ports)?;
    let start = when::parse(input.from, now).map_err(|e| format!("--from: {e}"))?;
    let end = when::parse(input.until, now).map_err(|e| format!("--until: {e}"))?;
    if end <= start {
        return Err(format!(
            "--until ({}) must be after --from ({})",
            when::rfc3339(end),
            when::rfc3339(start)
        ));
    }
    if end <= now {
        return Err(format!("--until ({}) is in the past", when::rfc3339(end)));
    }
    let reason = input.reason.trim();
    if reason.is_empty() {
        return Err("--reason: say why you need access; the approvers read it".into());
    }
    Ok(NewRequest {
        device: device.to_owned(),
        ports,
        start: when::rfc3339(start),
        end: when::rfc3339(end),
        reason: reason.to_owned(),
        ticket: input
            .ticket
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned),
        access: input.access.map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-05-01 08:00:30.5 UTC);

    fn input<'a>(from: &'a str, until: &'a str) -> RequestInput<'a> {
        RequestInput {
            device: "plc-7",
            ports: "502, 80,502",
            from,
            until,
            reason: " firmware update ",
            ticket: Some("CHG-1"),
            access: None,
        }
    }

    #[test]
    fn a_request_resolves_times_and_ports() {
        let r = build(&input("now", "+1h"), NOW).unwrap();
        assert_eq!(r.ports, vec![502, 80]);
        assert_eq!(r.start, "2026-05-01T08:00:30Z");
        assert_eq!(r.end, "2026-05-01T09:00:30Z");
        assert_eq!(r.reason, "firmware update");
        assert_eq!(r.ticket.as_deref(), Some("CHG-1"));
    }

    #[test]
    fn mistakes_are_named_by_their_option() {
        for (from, until, says) in [
            ("tomorrow", "+1h", "--from: 'tomorrow' is not a time"),
            ("now", "later", "--until: 'later' is not a time"),
            ("+2h", "+1h", "must be after --from"),
            (
                "2026-04-01T08:00:00Z",
                "2026-04-01T09:00:00Z",
                "is in the past",
            ),
        ] {
            let e = build(&input(from, until), NOW).unwrap_err();
            assert!(e.contains(says), "{from} {until}: {e}");
        }
        let mut bad = input("now", "+1h");
        bad.reason = "  ";
        assert!(build(&bad, NOW).unwrap_err().starts_with("--reason"));
        bad = input("now", "+1h");
        bad.device = "";
        assert!(build(&bad, NOW).unwrap_err().starts_with("--device"));
    }

    #[test]
    fn ports_are_one_to_65535() {
        assert_eq!(parse_ports("502").unwrap(), vec![502]);
        for bad in ["0", "70000", "502,,80", "http", "", "-1"] {
            let e = parse_ports(bad).unwrap_err();
            assert!(
                e.starts_with("--port:") && e.contains("1 to 65535"),
                "{bad}: {e}"
            );
        }
    }
}
