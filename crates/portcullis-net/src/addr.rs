//! `host:port` as people and the broker write it, parsed one way everywhere (the vendor client's
//! relay address, the site connector's enrollment and state).

/// `host:port` or `[v6]:port` split into the bare host and the port. An unbracketed IPv6
/// address (`::1:4433`) is refused: whether its last group is the port cannot be told.
pub fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = match s.strip_prefix('[') {
        Some(rest) => {
            let (host, after) = rest.split_once(']')?;
            (host, after.strip_prefix(':')?)
        }
        None => {
            let (host, port) = s.rsplit_once(':')?;
            if host.contains(':') {
                return None;
            }
            (host, port)
        }
    };
    if host.is_empty() {
        return None;
    }
    Some((host, port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_split_one_way() {
        assert_eq!(split_host_port("127.0.0.1:4433"), Some(("127.0.0.1", 4433)));
        assert_eq!(split_host_port("[::1]:4433"), Some(("::1", 4433)));
        assert_eq!(
            split_host_port("relay.example:443"),
            Some(("relay.example", 443))
        );
        for bad in [
            "relay",
            ":4433",
            "relay:x",
            "[::1]4433",
            "relay:70000",
            "::1:4433",
            "[]:4433",
            "[::1]:",
        ] {
            assert_eq!(split_host_port(bad), None, "{bad}");
        }
    }
}
