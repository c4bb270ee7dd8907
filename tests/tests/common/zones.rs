//! Network zones for the site-connector tests: three Linux network namespaces the test makes and
//! removes itself, joined by veth pairs through the middle one.
//!
//! ```text
//!   it (vendor)                     dmz (broker: web + relay)                   ot (connector + device)
//!   10.61.1.2 it0 <--- veth ---> dmz-it 10.61.1.1    10.61.2.1 dmz-ot <--- veth ---> ot0 10.61.2.2
//! ```
//!
//! `it` and `ot` each have a route to the other's subnet through `dmz`, but `dmz` does not
//! forward (`net.ipv4.ip_forward = 0`): each outer zone reaches the dmz's addresses and nothing
//! else, so a packet from the vendor's zone to the device is dropped in the dmz, as a firewall
//! between the business network and the shop floor would.

use std::future::Future;
use std::os::fd::AsFd;
use std::process::Command;

pub const IT: &str = "10.61.1.2";
pub const DMZ: &str = "10.61.1.1";
pub const DMZ_OT_SIDE: &str = "10.61.2.1";
pub const OT: &str = "10.61.2.2";

/// The three namespaces; removed (with their veths) when dropped.
pub struct Zones {
    pub it: String,
    pub dmz: String,
    pub ot: String,
}

/// Runs `ip <args>`; the error is what `ip` said.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Zones {
    /// Makes the zones, named `pc<pid><tag>-{it,dmz,ot}` so parallel tests do not meet.
    pub fn create(tag: &str) -> Result<Zones, String> {
        let base = format!("pc{}{tag}", std::process::id());
        let z = Zones {
            it: format!("{base}-it"),
            dmz: format!("{base}-dmz"),
            ot: format!("{base}-ot"),
        };
        z.remove();
        let result = z.build();
        result.map(|()| z)
    }

    fn build(&self) -> Result<(), String> {
        let (it, dmz, ot) = (self.it.as_str(), self.dmz.as_str(), self.ot.as_str());
        for ns in [it, dmz, ot] {
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        ip(&[
            "link", "add", "it0", "netns", it, "type", "veth", "peer", "name", "dmz-it", "netns",
            dmz,
        ])?;
        ip(&[
            "link", "add", "ot0", "netns", ot, "type", "veth", "peer", "name", "dmz-ot", "netns",
            dmz,
        ])?;
        for (ns, dev, addr) in [
            (it, "it0", "10.61.1.2/24"),
            (dmz, "dmz-it", "10.61.1.1/24"),
            (dmz, "dmz-ot", "10.61.2.1/24"),
            (ot, "ot0", "10.61.2.2/24"),
        ] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        ip(&["-n", it, "route", "add", "10.61.2.0/24", "via", DMZ])?;
        ip(&["-n", ot, "route", "add", "10.61.1.0/24", "via", DMZ_OT_SIDE])?;
        // A new namespace does not forward unless told to; say so rather than rely on it.
        let out = Command::new("ip")
            .args(["netns", "exec", dmz, "sh", "-c"])
            .arg("echo 0 > /proc/sys/net/ipv4/ip_forward")
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(())
    }

    fn remove(&self) {
        for ns in [&self.it, &self.dmz, &self.ot] {
            let _ = ip(&["netns", "del", ns]);
        }
    }

    /// `ip netns exec <ns>`: the prefix that runs a command in zone `ns`.
    pub fn exec(ns: &str) -> Vec<String> {
        ["ip", "netns", "exec", ns]
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    }

    /// Takes the dmz's end of the ot link down or up (the plant's uplink failing).
    pub fn ot_link(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.dmz, "link", "set", "dmz-ot", state]).unwrap();
    }
}

impl Drop for Zones {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Makes the zones, or says why not. Where `PORTCULLIS_REQUIRE_NETNS` is set (`.ci/run`, which
/// runs as root) not being able to is a failure; elsewhere the test is skipped, loudly.
pub fn zones_or_skip(tag: &str) -> Option<Zones> {
    match Zones::create(tag) {
        Ok(z) => Some(z),
        Err(why) if std::env::var_os("PORTCULLIS_REQUIRE_NETNS").is_some() => {
            panic!("network namespaces are required here (PORTCULLIS_REQUIRE_NETNS) but: {why}")
        }
        Err(why) => {
            eprintln!(
                "SKIPPED: this zone test needs Linux network namespaces (root): {why}. \
                 CI runs it as root with PORTCULLIS_REQUIRE_NETNS=1."
            );
            None
        }
    }
}

/// Moves the calling thread into namespace `ns` (only this thread; sockets it makes stay there).
pub fn enter(ns: &str) {
    let path = format!("/run/netns/{ns}");
    let f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    rustix::thread::move_into_link_name_space(
        f.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .unwrap_or_else(|e| panic!("setns into {path}: {e}"));
}

/// Runs `f` on a new thread inside zone `ns` and returns its result.
pub fn in_zone<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(ns);
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Runs the async `body` on a fresh single-threaded runtime on a thread inside zone `ns`: every
/// socket the body makes (its HTTP client included) and every process it starts is in `ns`.
pub fn run_in_zone<F: Future<Output = ()>>(ns: &str, body: impl FnOnce() -> F + Send) {
    in_zone(ns, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(body())
    });
}

/// A TCP connection made from inside zone `ns`, handed to the caller's runtime.
pub fn connect_from(ns: &str, to: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let s = in_zone(ns, || {
        std::net::TcpStream::connect_timeout(&to, std::time::Duration::from_secs(2))
    })?;
    s.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(s)
}
