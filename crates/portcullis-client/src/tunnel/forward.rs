//! Which local ports listen for which granted target: `-L` specifications and the default plan.
//! Pure: no sockets, so every rule is unit-tested.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

use portcullis_core::wire::WireTarget;

/// One `-L [addr:]local_port:remote_port`: listen on `bind:local_port` and carry each
/// connection to the granted target whose port is `remote_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardSpec {
    /// Local address to listen on; default 127.0.0.1 (never all addresses unless asked for:
    /// anyone who can reach the listener can reach the device).
    pub bind: IpAddr,
    /// Local port; 0 lets the system pick one (the bound port is printed).
    pub local_port: u16,
    /// The device port, one of the grant's.
    pub remote_port: u16,
}

/// Why a `-L` value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("-L {spec}: {reason}")]
pub struct ForwardError {
    spec: String,
    reason: String,
}

impl ForwardError {
    fn new(spec: &str, reason: impl Into<String>) -> Self {
        Self {
            spec: crate::printable(spec, 100),
            reason: reason.into(),
        }
    }
}

const SHAPE: &str = "expected [ADDR:]LOCAL_PORT:REMOTE_PORT, e.g. 8502:502 or 127.0.0.1:0:502";

impl FromStr for ForwardSpec {
    type Err = ForwardError;

    fn from_str(s: &str) -> Result<Self, ForwardError> {
        let t = s.trim();
        let (rest, remote) = t
            .rsplit_once(':')
            .ok_or_else(|| ForwardError::new(s, SHAPE))?;
        let (addr, local) = match rest.rsplit_once(':') {
            Some((addr, local)) => (Some(addr), local),
            None => (None, rest),
        };
        let port = |text: &str, which: &str| {
            text.parse::<u16>().map_err(|_| {
                ForwardError::new(
                    s,
                    format!("{which} '{text}' is not a port (0 to 65535); {SHAPE}"),
                )
            })
        };
        let local_port = port(local, "local port")?;
        let remote_port = port(remote, "remote port")?;
        if remote_port == 0 {
            return Err(ForwardError::new(
                s,
                "the remote port must be one of the grant's ports, not 0",
            ));
        }
        let bind = match addr {
            None => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Some(a) => parse_addr(a).ok_or_else(|| {
                ForwardError::new(
                    s,
                    format!("'{a}' is not a local IP address (e.g. 127.0.0.1, [::1] or localhost)"),
                )
            })?,
        };
        Ok(ForwardSpec {
            bind,
            local_port,
            remote_port,
        })
    }
}

fn parse_addr(a: &str) -> Option<IpAddr> {
    if a.eq_ignore_ascii_case("localhost") {
        return Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    let bare = a
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(a);
    bare.parse().ok()
}

impl fmt::Display for ForwardSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}",
            SocketAddr::new(self.bind, self.local_port),
            self.remote_port
        )
    }
}

/// One listener to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenPlan {
    pub bind: SocketAddr,
    pub target: WireTarget,
    /// When `bind` is taken (or not ours to bind, like a port below 1024), listen on an
    /// ephemeral port instead of failing. True for the default plan, false for `-L`.
    pub fallback_to_ephemeral: bool,
}

/// The listeners for a session whose `Welcome` granted `targets`.
///
/// Without `-L`: one listener per target on 127.0.0.1 with the target's port number, falling
/// back to an ephemeral port when that is taken. With `-L`: exactly the listeners asked for;
/// each remote port must be one of the targets' (the first target with that port is used).
pub fn plan_listeners(
    targets: &[WireTarget],
    forwards: &[ForwardSpec],
) -> Result<Vec<ListenPlan>, ForwardError> {
    if targets.is_empty() {
        return Err(ForwardError::new("", "the relay granted no targets"));
    }
    if forwards.is_empty() {
        return Ok(targets
            .iter()
            .map(|t| ListenPlan {
                bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), t.port),
                target: t.clone(),
                fallback_to_ephemeral: true,
            })
            .collect());
    }
    forwards
        .iter()
        .map(|f| {
            let target = targets
                .iter()
                .find(|t| t.port == f.remote_port)
                .ok_or_else(|| {
                    let granted: Vec<String> = targets
                        .iter()
                        .map(|t| format!("{}:{}", crate::printable(&t.device, 64), t.port))
                        .collect();
                    ForwardError::new(
                        &f.to_string(),
                        format!(
                            "port {} is not granted; this grant allows {}",
                            f.remote_port,
                            granted.join(", ")
                        ),
                    )
                })?;
            Ok(ListenPlan {
                bind: SocketAddr::new(f.bind, f.local_port),
                target: target.clone(),
                fallback_to_ephemeral: false,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> ForwardSpec {
        s.parse().unwrap()
    }

    fn target(device: &str, port: u16) -> WireTarget {
        WireTarget {
            device: device.into(),
            port,
        }
    }

    #[test]
    fn specs_read_with_and_without_an_address() {
        assert_eq!(
            spec("8502:502"),
            ForwardSpec {
                bind: "127.0.0.1".parse().unwrap(),
                local_port: 8502,
                remote_port: 502
            }
        );
        assert_eq!(
            spec("0.0.0.0:0:80").bind,
            "0.0.0.0".parse::<IpAddr>().unwrap()
        );
        assert_eq!(spec("0.0.0.0:0:80").local_port, 0);
        assert_eq!(spec("[::1]:8080:80").bind, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(spec("::1:8080:80").bind, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(
            spec("localhost:1:2").bind,
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(spec(" 1:2 ").remote_port, 2);
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        for (bad, says) in [
            ("502", "expected [ADDR:]LOCAL_PORT:REMOTE_PORT"),
            ("", "expected"),
            ("x:502", "local port 'x' is not a port"),
            ("8502:70000", "remote port '70000' is not a port"),
            ("8502:0", "not 0"),
            ("8502:", "remote port '' is not a port"),
            ("plc.example:1:2", "'plc.example' is not a local IP address"),
            ("[::1:1:2", "is not a local IP address"),
            ("-1:2", "local port '-1'"),
        ] {
            let e = bad.parse::<ForwardSpec>().unwrap_err().to_string();
            assert!(e.starts_with("-L "), "{bad}: {e}");
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn specs_print_back_in_their_own_syntax() {
        assert_eq!(spec("8502:502").to_string(), "127.0.0.1:8502:502");
        assert_eq!(spec("[::1]:0:80").to_string(), "[::1]:0:80");
    }

    #[test]
    fn the_default_plan_listens_on_loopback_with_the_same_port_numbers() {
        let targets = [target("plc-7", 502), target("plc-7", 80)];
        let plan = plan_listeners(&targets, &[]).unwrap();
        assert_eq!(plan.len(), 2);
        assert_eq!(plan[0].bind, "127.0.0.1:502".parse().unwrap());
        assert_eq!(plan[1].target, target("plc-7", 80));
        assert!(plan.iter().all(|p| p.fallback_to_ephemeral));
    }

    #[test]
    fn forwards_pick_the_listeners_and_must_name_granted_ports() {
        let targets = [target("plc-7", 502), target("plc-7", 80)];
        let plan = plan_listeners(&targets, &[spec("0:80"), spec("9000:502")]).unwrap();
        assert_eq!(plan[0].bind, "127.0.0.1:0".parse().unwrap());
        assert_eq!(plan[0].target, target("plc-7", 80));
        assert_eq!(plan[1].target, target("plc-7", 502));
        assert!(plan.iter().all(|p| !p.fallback_to_ephemeral));

        let e = plan_listeners(&targets, &[spec("9000:22")])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "-L 127.0.0.1:9000:22: port 22 is not granted; this grant allows plc-7:502, plc-7:80"
        );
        assert!(plan_listeners(&[], &[]).is_err());
    }
}
