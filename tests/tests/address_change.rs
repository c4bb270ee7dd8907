//! Issue 16, point 3: the vendor's address changes (Wi-Fi to LTE, a VPN reconnecting) while a
//! tunnelled TCP connection is open, and the same TCP connection carries on. QUIC connections
//! are named by connection IDs, not addresses: the relay validates the new path and moves the
//! session to it (connection migration, RFC 9000 section 9). Through `ssh -L` the SSH TCP
//! connection would be bound to the old address and die with it.
//!
//! The zones of `common/zones.rs`: the broker and the device in `dmz`, the vendor's
//! `portcullis connect` and the local client in `it`. The move: a second address on the vendor's
//! interface, then the first removed with `promote_secondaries` set, so the new one becomes
//! primary and keeps the subnet's route instead of going with the old one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::zones::{self, DMZ, IT, Zones, ip};
use common::{Placement, Plant};
use portcullis_testkit::devices::EchoDevice;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The vendor's address after the move, on the same subnet as [`IT`].
const MOVED: &str = "10.61.1.3";

/// Only so a broken build fails instead of hanging.
const DEADLINE: Duration = Duration::from_secs(20);

/// Sends `msg` and reads it back from the echo device.
async fn echo(conn: &mut TcpStream, msg: &[u8]) {
    let round = async {
        conn.write_all(msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        conn.read_exact(&mut back).await.unwrap();
        assert_eq!(back, msg);
    };
    tokio::time::timeout(DEADLINE, round)
        .await
        .expect("no echo through the tunnel within 20 s");
}

/// The IPv4 addresses on the vendor's interface.
fn vendor_addresses(z: &Zones) -> String {
    let out = Command::new("ip")
        .args(["-n", &z.it, "-4", "-brief", "addr", "show", "dev", "it0"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_tunnelled_connection_survives_the_vendors_address_change() {
    let Some(z) = zones::zones_or_skip("mv") else {
        return;
    };
    let dmz = z.dmz.clone();
    zones::run_in_zone(&dmz, || async move {
        let device = EchoDevice::start().await;
        let port = device.addr().port();
        let at = Placement {
            listen_ip: DMZ.parse::<IpAddr>().unwrap(),
            vendor_prefix: Zones::exec(&z.it),
        };
        let plant = Plant::placed(None, false, &[port], &[], &at).await;
        let grant = plant.grant(&port.to_string(), "+10m").await;
        let tunnel = plant.vera.connect(grant, &[], 1).await;
        let mut conn = zones::connect_from(&z.it, tunnel.local(port)).unwrap();
        echo(&mut conn, b"on the first address").await;

        let sysctl = "net.ipv4.conf.it0.promote_secondaries=1";
        let out = Command::new("ip")
            .args(["netns", "exec", &z.it, "sysctl", "-qw", sysctl])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        ip(&[
            "-n",
            &z.it,
            "addr",
            "add",
            &format!("{MOVED}/24"),
            "dev",
            "it0",
        ])
        .unwrap();
        ip(&[
            "-n",
            &z.it,
            "addr",
            "del",
            &format!("{IT}/24"),
            "dev",
            "it0",
        ])
        .unwrap();
        let now = vendor_addresses(&z);
        assert!(
            now.contains(MOVED) && !now.contains(IT),
            "the vendor did not move: {now}"
        );

        // The same TCP connection, whose tunnel now leaves from the new address: the old one no
        // longer exists in the vendor's zone, so nothing can come from it.
        let moved = Instant::now();
        echo(&mut conn, b"on the second address").await;
        eprintln!(
            "first echo after the move: {:.0} ms",
            moved.elapsed().as_secs_f64() * 1e3
        );
        // And it keeps working, both ways, with more than one packet's worth.
        let big = vec![b'x'; 256 * 1024];
        echo(&mut conn, &big).await;
        drop(conn);

        // No reconnect happened behind the scenes: the vendor stops and nothing was lost.
        let pid = tunnel.child.0.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let (status, lines) = tunnel.exit().await;
        assert!(status.success(), "{lines:?}");
        assert!(
            lines
                .iter()
                .all(|l| !l.contains("lost") && !l.contains("reconnect") && !l.contains("ended:")),
            "{lines:?}"
        );
    });
}
