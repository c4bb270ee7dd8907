//! The connector's local allowlist: the devices this connector may dial, kept on the OT side.
//!
//! The relay names the device's `host` in every `Dial` (from the broker's inventory). The
//! allowlist is the plant's own, independent check of that host and port: a compromised broker
//! or relay still cannot reach a device the plant did not list here (docs/decisions/0007).
//!
//! The file is TOML (`<state dir>/allowlist.toml` unless `--allowlist` says otherwise):
//!
//! ```toml
//! # Devices this connector may dial. Anything not listed is refused.
//! [[allow]]
//! host = "10.20.0.5"        # an IP address, a CIDR block ("10.20.0.0/24"), or a host name (exact match)
//! ports = [502, "8000-8080"]
//!
//! [[allow]]
//! host = "hmi-3.line2.plant"
//! ports = [443]
//!
//! [[allow]]
//! host = "10.20.0.7"
//! ports = [502]
//! modbus = "read-only"      # this connector passes Modbus reads only, whatever was granted
//! ```
//!
//! Rules:
//! - `host` is one of
//!   - an IPv4 or IPv6 address: permits exactly that address;
//!   - a CIDR block (`10.20.0.0/24`, `fd00:20::/64`): permits the addresses in it. Bits after the
//!     prefix must be zero (`10.20.0.5/24` is refused as a likely typo);
//!   - a host name: permits the relay's `host` text when it is the same name, compared without
//!     regard to case (a trailing dot is ignored on both sides). No wildcards.
//! - A name never matches an address rule and an address never matches a name rule: the check is
//!   on the text the relay sent, before any DNS lookup, so a name is permitted only if the plant
//!   listed that name.
//! - An IPv4-mapped IPv6 host (`::ffff:10.20.0.5`) is checked as the IPv4 address it reaches.
//! - The unspecified addresses (`0.0.0.0`, `::`) are never permitted, whatever the rules say:
//!   dialing them reaches the connector's own machine.
//! - `ports` is a non-empty list of port numbers (1-65535) and ranges `"first-last"` (both ends
//!   included).
//! - `modbus` (optional) makes the connector filter Modbus/TCP itself on those ports, as a
//!   second line behind the relay's filter (issue 14):
//!   - `"read-only"`: reading function codes only, whatever the grant allows; other requests are
//!     answered with exception 01 and never reach the device;
//!   - `"as-granted"`: what the relay's `Dial` says the grant allows (read-only when it says
//!     nothing, as a relay that does not know the device speaks Modbus would).
//!
//!   Left out, the connector passes the bytes and the relay's filter is the only one. When
//!   several rules match a dial, the strictest `modbus` wins.
//! - Unknown keys are errors, so a misspelt `ports` cannot silently permit nothing or everything.
//!
//! A missing file permits nothing (the connector starts and refuses every dial, with a warning
//! at startup). A malformed file is an error naming the file, the line and the problem. The file
//! is read once at startup; a change needs a restart.

use std::fmt;
use std::io::Read as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

/// The largest allowlist file read. Thousands of rules fit in far less; the bound keeps a wrong
/// path (a log, a disk image) from being read whole.
const MAX_FILE_LEN: u64 = 1 << 20;

/// Why an allowlist could not be used. The connector does not start with one of these.
#[derive(Debug, thiserror::Error)]
pub enum AllowlistError {
    #[error("cannot read the allowlist {path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("the allowlist {path} is larger than {MAX_FILE_LEN} bytes")]
    TooLarge { path: PathBuf },
    #[error("the allowlist {path} is invalid{}: {problem}", line.map(|l| format!(", line {l}")).unwrap_or_default())]
    Invalid {
        path: PathBuf,
        /// 1-based line of the problem, when known.
        line: Option<usize>,
        problem: String,
    },
}

/// The parsed allowlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowlist {
    rules: Vec<Rule>,
    /// The file did not exist: every dial is refused.
    missing: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    host: HostRule,
    ports: Vec<RangeInclusive<u16>>,
    modbus: Option<ModbusRule>,
}

/// What a rule demands of Modbus traffic on its ports; ordered from the least strict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModbusRule {
    /// Filter by the mode the relay's `Dial` carries (read-only when it carries none).
    AsGranted,
    /// Reads only, whatever the grant allows.
    ReadOnly,
}

/// What one rule's `host` matches.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostRule {
    /// Exactly this address.
    Addr(IpAddr),
    /// The addresses whose first `prefix` bits equal `net`'s (bits past the prefix are zero).
    Block { net: IpAddr, prefix: u8 },
    /// This host name: lowercase, no trailing dot.
    Name(String),
}

impl Allowlist {
    /// An allowlist that permits nothing.
    pub fn deny_all() -> Self {
        Self {
            rules: Vec::new(),
            missing: false,
        }
    }

    /// Reads the allowlist at `path`. A file that does not exist gives an allowlist that permits
    /// nothing, with [`Allowlist::is_missing`] set so the caller can warn about it.
    pub fn load(path: &Path) -> Result<Self, AllowlistError> {
        let io = |cause| AllowlistError::Io {
            path: path.to_owned(),
            cause,
        };
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self {
                    rules: Vec::new(),
                    missing: true,
                });
            }
            Err(e) => return Err(io(e)),
        };
        let mut text = String::new();
        file.take(MAX_FILE_LEN + 1)
            .read_to_string(&mut text)
            .map_err(io)?;
        if text.len() as u64 > MAX_FILE_LEN {
            return Err(AllowlistError::TooLarge {
                path: path.to_owned(),
            });
        }
        Self::parse(&text, path)
    }

    /// Parses allowlist TOML; `path` only names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, AllowlistError> {
        let file: File = toml::from_str(text).map_err(|e| AllowlistError::Invalid {
            path: path.to_owned(),
            line: e.span().map(|s| line_of(text, s.start)),
            problem: e.message().trim().to_owned(),
        })?;
        Ok(Self {
            rules: file
                .allow
                .into_iter()
                .map(|e| Rule {
                    host: e.host,
                    ports: e.ports.0,
                    modbus: e.modbus,
                })
                .collect(),
            missing: false,
        })
    }

    /// Whether the relay may have this connector dial `host:port`. `host` is the text from the
    /// relay's `Dial`: an address is matched against address and CIDR rules, anything else
    /// against name rules only.
    pub fn permits(&self, host: &str, port: u16) -> bool {
        self.matching(host, port).next().is_some()
    }

    /// The strictest `modbus` demand of the rules that permit `host:port`; `None`: the bytes
    /// pass unfiltered here.
    pub fn modbus(&self, host: &str, port: u16) -> Option<ModbusRule> {
        self.matching(host, port).filter_map(|r| r.modbus).max()
    }

    fn matching<'a>(&'a self, host: &'a str, port: u16) -> impl Iterator<Item = &'a Rule> + 'a {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let target = match bare.parse::<IpAddr>() {
            Ok(ip) => {
                let ip = canonical(ip);
                // Dialing the unspecified address reaches the connector's own machine.
                (!ip.is_unspecified()).then_some(Target::Addr(ip))
            }
            Err(_) => Some(Target::Name(host.strip_suffix('.').unwrap_or(host))),
        };
        self.rules.iter().filter(move |r| {
            target
                .as_ref()
                .is_some_and(|t| r.host.matches(t) && r.ports.iter().any(|p| p.contains(&port)))
        })
    }

    /// The file did not exist (so nothing is permitted).
    pub fn is_missing(&self) -> bool {
        self.missing
    }

    /// Number of `[[allow]]` entries.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// No entries: nothing is permitted.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// The relay's host, parsed once per check.
enum Target<'a> {
    Addr(IpAddr),
    Name(&'a str),
}

impl HostRule {
    fn matches(&self, target: &Target<'_>) -> bool {
        match (self, target) {
            (HostRule::Addr(a), Target::Addr(ip)) => a == ip,
            (HostRule::Block { net, prefix }, Target::Addr(ip)) => in_block(*ip, *net, *prefix),
            (HostRule::Name(n), Target::Name(name)) => n.eq_ignore_ascii_case(name),
            _ => false,
        }
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as the IPv4 address it reaches; others as
/// they are.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn in_block(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = mask_v4(prefix);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = mask_v6(prefix);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

fn mask_v4(prefix: u8) -> u32 {
    // `checked_shl` is None for a shift of 32 (prefix 0): then no bit is fixed.
    u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0)
}

fn mask_v6(prefix: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix.min(128)))
        .unwrap_or(0)
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

// ---- The file's shape. Each value's own checks run inside the TOML deserializer, so an error
// ---- carries the span (and so the line) of the value at fault.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    allow: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    host: HostRule,
    ports: Ports,
    #[serde(default)]
    modbus: Option<ModbusRule>,
}

impl<'de> Deserialize<'de> for HostRule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_host(&text).map_err(de::Error::custom)
    }
}

fn parse_host(text: &str) -> Result<HostRule, String> {
    if text.trim() != text || text.is_empty() {
        return Err(format!(
            "host {text:?} must be an IP address, a CIDR block or a host name, without spaces"
        ));
    }
    if let Some((addr, prefix)) = text.split_once('/') {
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?}: {addr:?} before the / is not an IP address"))?;
        let max: u8 = if net.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix.parse().ok().filter(|p| *p <= max).ok_or_else(|| {
            format!("{text:?}: the prefix length must be a number from 0 to {max}")
        })?;
        check_not_mapped(net, text)?;
        let network = match net {
            IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask_v4(prefix))),
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask_v6(prefix))),
        };
        if network != net {
            return Err(format!(
                "{text:?} has bits set after the /{prefix} prefix; write the block as {network}/{prefix}, or the single address as {net}"
            ));
        }
        return Ok(HostRule::Block { net, prefix });
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        check_not_mapped(ip, text)?;
        if ip.is_unspecified() {
            return Err(format!(
                "{text:?} is not a device's address (it means this machine)"
            ));
        }
        return Ok(HostRule::Addr(ip));
    }
    if text.contains('*') {
        return Err(format!(
            "{text:?}: wildcards are not supported; list each host name, or use a CIDR block"
        ));
    }
    let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let numeric = name.chars().all(|c| c.is_ascii_digit() || c == '.');
    if name.len() > 253 || numeric || !name.split('.').all(label_ok) {
        return Err(format!(
            "{text:?} is neither an IP address, a CIDR block like 10.20.0.0/24, nor a host name"
        ));
    }
    Ok(HostRule::Name(name))
}

fn check_not_mapped(ip: IpAddr, text: &str) -> Result<(), String> {
    if let IpAddr::V6(v6) = ip
        && let Some(v4) = v6.to_ipv4_mapped()
    {
        return Err(format!(
            "{text:?} is an IPv4-mapped IPv6 address; write the IPv4 address ({v4}) instead"
        ));
    }
    Ok(())
}

/// A rule's `ports`: never empty.
struct Ports(Vec<RangeInclusive<u16>>);

impl<'de> Deserialize<'de> for Ports {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct List;
        impl<'de> Visitor<'de> for List {
            type Value = Ports;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of ports and port ranges, like [502, \"8000-8080\"]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Ports, A::Error> {
                let mut out = Vec::new();
                while let Some(PortItem(range)) = seq.next_element()? {
                    out.push(range);
                }
                if out.is_empty() {
                    return Err(de::Error::custom(
                        "ports is empty; list at least one port (a rule that permits no port is a mistake)",
                    ));
                }
                Ok(Ports(out))
            }
        }
        d.deserialize_seq(List)
    }
}

/// One element of `ports`: `502` or `"8000-8080"` (or `"502"`).
struct PortItem(RangeInclusive<u16>);

impl<'de> Deserialize<'de> for PortItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Item;
        impl Visitor<'_> for Item {
            type Value = PortItem;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number from 1 to 65535 or a range like \"8000-8080\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortItem, E> {
                let p = port_number(&v.to_string()).map_err(E::custom)?;
                Ok(PortItem(p..=p))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortItem, E> {
                let p = port_number(&v.to_string()).map_err(E::custom)?;
                Ok(PortItem(p..=p))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortItem, E> {
                parse_port_range(v).map(PortItem).map_err(E::custom)
            }
        }
        d.deserialize_any(Item)
    }
}

fn port_number(text: &str) -> Result<u16, String> {
    match text.trim().parse::<u32>() {
        Ok(p @ 1..=65535) => Ok(u16::try_from(p).unwrap_or(u16::MAX)),
        _ => Err(format!(
            "port {text:?} is not a port number from 1 to 65535"
        )),
    }
}

fn parse_port_range(text: &str) -> Result<RangeInclusive<u16>, String> {
    let Some((first, last)) = text.split_once('-') else {
        let p = port_number(text)?;
        return Ok(p..=p);
    };
    let (first, last) = (port_number(first)?, port_number(last)?);
    if first > last {
        return Err(format!(
            "port range {text:?} runs backwards; write it as \"{last}-{first}\""
        ));
    }
    Ok(first..=last)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn list(text: &str) -> Allowlist {
        Allowlist::parse(text, Path::new("allowlist.toml")).unwrap()
    }

    fn error(text: &str) -> (Option<usize>, String) {
        match Allowlist::parse(text, Path::new("/etc/al.toml")).unwrap_err() {
            AllowlistError::Invalid { line, problem, .. } => (line, problem),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn one(host: &str, ports: &str) -> Allowlist {
        list(&format!("[[allow]]\nhost = \"{host}\"\nports = {ports}\n"))
    }

    #[test]
    fn the_strictest_modbus_demand_of_the_matching_rules_wins() {
        let a = list(
            r#"
[[allow]]
host = "10.20.0.0/24"
ports = [502, 80]
modbus = "as-granted"

[[allow]]
host = "10.20.0.7"
ports = [502]
modbus = "read-only"
"#,
        );
        assert_eq!(a.modbus("10.20.0.7", 502), Some(ModbusRule::ReadOnly));
        assert_eq!(a.modbus("10.20.0.8", 502), Some(ModbusRule::AsGranted));
        assert_eq!(a.modbus("10.20.0.7", 80), Some(ModbusRule::AsGranted));
        assert_eq!(one("10.20.0.7", "[502]").modbus("10.20.0.7", 502), None);
        assert_eq!(a.modbus("10.30.0.1", 502), None, "not permitted at all");
        let (_, problem) =
            error("[[allow]]\nhost = \"10.0.0.1\"\nports = [502]\nmodbus = \"rw\"\n");
        assert!(problem.contains("read-only"), "{problem}");
    }

    #[test]
    fn the_documented_example_parses_and_permits_what_it_says() {
        let a = list(
            r#"
# Devices this connector may dial. Anything not listed is refused.
[[allow]]
host = "10.20.0.5"        # an IP address, a CIDR block ("10.20.0.0/24"), or a host name (exact match)
ports = [502, "8000-8080"]
"#,
        );
        assert_eq!(a.len(), 1);
        assert!(a.permits("10.20.0.5", 502));
        assert!(a.permits("10.20.0.5", 8000));
        assert!(a.permits("10.20.0.5", 8080));
        assert!(!a.permits("10.20.0.5", 7999));
        assert!(!a.permits("10.20.0.5", 8081));
        assert!(!a.permits("10.20.0.5", 503));
        assert!(!a.permits("10.20.0.6", 502));
        assert!(!a.permits("10.20.0.50", 502));
    }

    #[test]
    fn an_empty_file_and_the_deny_all_list_permit_nothing() {
        for a in [list(""), list("# nothing yet\n"), Allowlist::deny_all()] {
            assert!(a.is_empty());
            assert!(!a.is_missing());
            assert!(!a.permits("10.20.0.5", 502));
            assert!(!a.permits("plc", 502));
        }
    }

    #[test]
    fn a_missing_file_permits_nothing_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let a = Allowlist::load(&dir.path().join("allowlist.toml")).unwrap();
        assert!(a.is_missing());
        assert!(a.is_empty());
        assert!(!a.permits("127.0.0.1", 22));
    }

    #[test]
    fn a_file_is_loaded_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("allowlist.toml");
        std::fs::write(&path, "[[allow]]\nhost = \"plc-7\"\nports = [502]\n").unwrap();
        let a = Allowlist::load(&path).unwrap();
        assert!(!a.is_missing());
        assert!(a.permits("plc-7", 502));
    }

    #[test]
    fn cidr_blocks_include_exactly_their_addresses() {
        let a = one("10.20.0.0/24", "[502]");
        assert!(a.permits("10.20.0.0", 502));
        assert!(a.permits("10.20.0.1", 502));
        assert!(a.permits("10.20.0.255", 502));
        assert!(!a.permits("10.20.1.0", 502));
        assert!(!a.permits("10.19.255.255", 502));
        assert!(!a.permits("10.20.0.7", 503));

        let a = one("10.20.0.8/29", "[502]");
        assert!(!a.permits("10.20.0.7", 502));
        assert!(a.permits("10.20.0.8", 502));
        assert!(a.permits("10.20.0.15", 502));
        assert!(!a.permits("10.20.0.16", 502));

        let a = one("10.20.0.5/32", "[502]");
        assert!(a.permits("10.20.0.5", 502));
        assert!(!a.permits("10.20.0.4", 502));

        let a = one("0.0.0.0/0", "[502]");
        assert!(a.permits("1.2.3.4", 502));
        assert!(a.permits("255.255.255.255", 502));
        assert!(!a.permits("::1", 502), "an IPv4 block never matches IPv6");
        assert!(
            !a.permits("0.0.0.0", 502),
            "the unspecified address is never permitted"
        );
    }

    #[test]
    fn ipv6_addresses_and_blocks_match() {
        let a = one("fd00:20::/64", "[502]");
        assert!(a.permits("fd00:20::1", 502));
        assert!(a.permits("fd00:20::ffff:ffff:ffff:ffff", 502));
        assert!(a.permits("[fd00:20::1]", 502), "brackets are accepted");
        assert!(!a.permits("fd00:20:0:1::", 502));
        assert!(!a.permits("fd00:1f:ffff:ffff:ffff:ffff:ffff:ffff", 502));
        assert!(!a.permits("10.0.0.1", 502));

        let a = one("fd00::7", "[502]");
        assert!(
            a.permits("fd00:0:0:0:0:0:0:7", 502),
            "compared as addresses"
        );
        assert!(!a.permits("fd00::8", 502));

        let a = one("::/0", "[502]");
        assert!(a.permits("2001:db8::1", 502));
        assert!(!a.permits("::", 502));
        assert!(
            !a.permits("::ffff:10.0.0.1", 502),
            "an IPv4-mapped host reaches IPv4 and is not covered by an IPv6 rule"
        );
    }

    #[test]
    fn an_ipv4_mapped_host_is_checked_as_its_ipv4_address() {
        let a = one("10.20.0.5", "[502]");
        assert!(a.permits("::ffff:10.20.0.5", 502));
        assert!(!a.permits("::ffff:10.20.0.6", 502));
    }

    #[test]
    fn names_match_exactly_without_regard_to_case() {
        let a = one("PLC-7.Line2.plant", "[502]");
        assert!(a.permits("plc-7.line2.plant", 502));
        assert!(a.permits("PLC-7.LINE2.PLANT", 502));
        assert!(a.permits("plc-7.line2.plant.", 502));
        assert!(!a.permits("plc-7.line2.plant.evil.example", 502));
        assert!(!a.permits("xplc-7.line2.plant", 502));
        assert!(!a.permits("plc-7", 502));
        assert!(!a.permits("plc-7.line2.plant ", 502));
        assert!(!a.permits("plc-7.line2.plant", 503));
    }

    #[test]
    fn a_name_never_matches_an_address_rule_nor_an_address_a_name_rule() {
        let a = one("127.0.0.0/8", "[502]");
        assert!(!a.permits("localhost", 502));
        let a = one("10.20.0.5", "[502]");
        assert!(!a.permits("plc.local", 502));
        // Text that some resolvers read as 10.20.0.5 (octal/short forms) is a name here, and
        // such a name cannot be listed.
        assert!(!a.permits("012.20.0.5", 502));
        assert!(!a.permits("10.20.5", 502));
        let a = one("localhost", "[502]");
        assert!(!a.permits("127.0.0.1", 502));
        assert!(!a.permits("::1", 502));
    }

    #[test]
    fn the_unspecified_address_is_never_permitted() {
        let a = list(
            "[[allow]]\nhost = \"0.0.0.0/0\"\nports = [\"1-65535\"]\n\
             [[allow]]\nhost = \"::/0\"\nports = [\"1-65535\"]\n",
        );
        assert!(!a.permits("0.0.0.0", 502));
        assert!(!a.permits("::", 502));
        assert!(!a.permits("::ffff:0.0.0.0", 502));
        assert!(a.permits("127.0.0.1", 502));
    }

    #[test]
    fn port_ranges_include_both_ends() {
        let a = one("plc", r#"[1, "100-102", "65535", "7-7"]"#);
        for p in [1, 100, 101, 102, 7, 65535] {
            assert!(a.permits("plc", p), "{p}");
        }
        for p in [0, 2, 6, 8, 99, 103, 65534] {
            assert!(!a.permits("plc", p), "{p}");
        }
    }

    #[test]
    fn several_rules_each_keep_their_own_ports() {
        let a = list(
            "[[allow]]\nhost = \"10.0.0.1\"\nports = [502]\n\
             [[allow]]\nhost = \"10.0.0.2\"\nports = [80]\n",
        );
        assert!(a.permits("10.0.0.1", 502));
        assert!(a.permits("10.0.0.2", 80));
        assert!(!a.permits("10.0.0.1", 80));
        assert!(!a.permits("10.0.0.2", 502));
    }

    #[test]
    fn an_empty_ports_list_is_refused_with_its_line() {
        let (line, problem) = error("# c\n[[allow]]\nhost = \"10.0.0.1\"\nports = []\n");
        assert_eq!(line, Some(4));
        assert!(problem.contains("ports is empty"), "{problem}");
    }

    #[test]
    fn bad_ports_are_refused_with_their_line() {
        for (ports, want) in [
            ("[0]", "not a port number"),
            ("[65536]", "not a port number"),
            ("[-1]", "not a port number"),
            ("[\"abc\"]", "not a port number"),
            ("[\"9000-8000\"]", "runs backwards"),
            ("[\"0-10\"]", "not a port number"),
            ("[1.5]", "port number from 1 to 65535"),
            ("502", "a list of ports"),
        ] {
            let (line, problem) = error(&format!("[[allow]]\nhost = \"plc\"\nports = {ports}\n"));
            assert_eq!(line, Some(3), "{ports}: {problem}");
            assert!(problem.contains(want), "{ports}: {problem}");
        }
    }

    #[test]
    fn bad_hosts_are_refused_with_their_line() {
        for (host, want) in [
            ("10.20.0.5/24", "write the block as 10.20.0.0/24"),
            ("10.20.0.0/33", "prefix length"),
            ("fd00::/129", "prefix length"),
            ("10.20.0/24", "not an IP address"),
            ("*.plant", "wildcards"),
            ("10.20.0.300", "neither an IP address"),
            ("plc 7", "neither an IP address"),
            ("", "without spaces"),
            (" plc", "without spaces"),
            ("0.0.0.0", "this machine"),
            ("::ffff:10.0.0.1", "write the IPv4 address (10.0.0.1)"),
            ("plc:502", "neither an IP address"),
        ] {
            let (line, problem) = error(&format!("\n[[allow]]\nhost = \"{host}\"\nports = [1]\n"));
            assert_eq!(line, Some(3), "{host}: {problem}");
            assert!(problem.contains(want), "{host}: {problem}");
        }
    }

    #[test]
    fn missing_and_unknown_keys_and_bad_syntax_are_refused() {
        let (line, problem) = error("[[allow]]\nhost = \"plc\"\n");
        assert_eq!(line, Some(1));
        assert!(problem.contains("missing field `ports`"), "{problem}");

        let (line, problem) = error("[[allow]]\nhost = \"plc\"\nport = [502]\nports = [502]\n");
        assert_eq!(line, Some(3));
        assert!(problem.contains("unknown field `port`"), "{problem}");

        let (_, problem) = error("[[allowed]]\nhost = \"plc\"\nports = [1]\n");
        assert!(problem.contains("unknown field `allowed`"), "{problem}");

        let (line, _) = error("[[allow]]\nhost = \"plc\nports = [1]\n");
        assert_eq!(line, Some(2));
    }

    #[test]
    fn the_error_names_the_file_and_line() {
        let e = Allowlist::parse(
            "[[allow]]\nhost = \"plc\"\nports = []\n",
            Path::new("/etc/a.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("the allowlist /etc/a.toml is invalid, line 3: ports is empty"),
            "{e}"
        );
    }
}
