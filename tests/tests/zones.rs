//! The site connector across real network zones (Linux network namespaces made by the test; see
//! `common/zones.rs`): the vendor's `it` zone and the plant's `ot` zone each reach only the
//! `dmz`, where the broker runs. The connector and a Modbus/TCP device sit in `ot`; the connector
//! dials out to the relay, nothing dials in.
//!
//! Shown here, with the real binary and a real Modbus client:
//! - the vendor cannot reach the device directly, but can through Portcullis inside an approved
//!   window, and loses it at the window's end;
//! - a port the connector's own allowlist lacks is refused by the connector, and the vendor and
//!   the audit log both say so;
//! - when the plant's link drops, open streams are cut and audited, the connector is back within
//!   5 s of the link returning, and new streams work.
//!
//! Skipped (with a message) where namespaces cannot be made; `.ci/run` requires them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::zones::{self, DMZ, OT, Zones};
use common::{Placement, Plant, Reaped, admin};
use portcullis_testkit::devices::ModbusDevice;
use portcullis_testkit::portcullis_bin;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_modbus::prelude::*;

const SITE: &str = "plant-2";
const MODBUS: u16 = 502;
/// Granted to the vendor and on the device's policy, but not on the connector's allowlist.
const UNLISTED: u16 = 503;

/// A running `portcullis connector run` in the ot zone, its output lines collected.
struct Connector {
    _child: Reaped,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Connector {
    async fn wait_for(&mut self, text: &str) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.contains(text)) {
            return l.clone();
        }
        loop {
            let line = self.lines.recv().await.unwrap_or_else(|| {
                panic!(
                    "the connector ended without printing {text:?}: {:?}",
                    self.seen
                )
            });
            self.seen.push(line.clone());
            if line.contains(text) {
                return line;
            }
        }
    }
}

/// The plant: zones, broker in the dmz, vendor in it, device and enrolled connector in ot.
struct Site {
    plant: Plant,
    device: ModbusDevice,
    connector: Connector,
}

fn in_ot(z: &Zones, args: &[&str]) -> Command {
    let prefix = Zones::exec(&z.ot);
    let mut c = Command::new(&prefix[0]);
    c.args(&prefix[1..]).arg(portcullis_bin()).args(args);
    c
}

async fn site(z: &Zones) -> Site {
    // The broker listens on its it-side address; the ot zone reaches it through its route.
    let at = Placement {
        listen_ip: DMZ.parse::<IpAddr>().unwrap(),
        vendor_prefix: Zones::exec(&z.it),
    };
    let plant = Plant::placed(None, false, &[1], &[], &at).await;
    let data = plant.broker.data.clone();
    let out = admin(&data, &["admin", "site", "add", SITE, "--format", "json"]);
    let token = serde_json::from_str::<Value>(&out).unwrap()["enrollment_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let added = admin(
        &data,
        &[
            "admin",
            "device",
            "add",
            "plc-9",
            "--address",
            OT,
            "--ports",
            &format!("{MODBUS},{UNLISTED}"),
            "--site",
            SITE,
            "--orgs",
            "acme",
        ],
    );
    assert!(
        added.contains(SITE),
        "device add says how it is reached: {added}"
    );

    // The device listens on its own address in the ot zone.
    let listener = zones::in_zone(&z.ot, || {
        std::net::TcpListener::bind(SocketAddr::new(OT.parse().unwrap(), MODBUS)).unwrap()
    });
    let device = ModbusDevice::start_on(listener).await;

    let state = plant.dir.path().join("connector");
    let enrolled = in_ot(
        z,
        &[
            "connector",
            "enroll",
            "--url",
            &plant.broker.base,
            "--token",
            &token,
            "--ca",
            plant.broker.ca().to_str().unwrap(),
            "--dir",
            state.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    assert!(
        enrolled.status.success(),
        "connector enroll: {}",
        String::from_utf8_lossy(&enrolled.stderr)
    );
    std::fs::write(
        state.join("allowlist.toml"),
        format!("[[allow]]\nhost = \"{OT}\"\nports = [{MODBUS}]\n"),
    )
    .unwrap();
    let connector = start_connector(z, &state);
    Site {
        plant,
        device,
        connector,
    }
}

#[allow(clippy::zombie_processes)] // reaped by `Reaped`
fn start_connector(z: &Zones, state: &Path) -> Connector {
    let mut child = in_ot(z, &["connector", "run", "--dir", state.to_str().unwrap()])
        .env("PORTCULLIS_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::unbounded_channel();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
    }
    Connector {
        _child: Reaped(child),
        lines,
        seen: Vec::new(),
    }
}

impl Site {
    /// Waits until the relay has accepted `n` connector connections in all; returns the last.
    async fn connected(&self, n: usize, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let events = self.plant.broker.audit("relay.connector.connect");
            if events.len() >= n {
                return events[n - 1].clone();
            }
            assert!(
                Instant::now() < deadline,
                "connector connection {n} not there within {within:?}: {:?}",
                self.connector.seen
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn audited(&self, action: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let events = self.plant.broker.audit(action);
            if events.len() >= n {
                return events;
            }
            if Instant::now() >= deadline {
                let all = self.plant.broker.audit_all();
                let tail: Vec<String> = all
                    .iter()
                    .rev()
                    .filter(|e| e["action"] != "audit.export")
                    .take(12)
                    .map(|e| format!("{} {}", e["action"], e["details"]))
                    .collect();
                panic!(
                    "no {n} {action} events; latest first: {tail:#?}; connector said: {:#?}",
                    self.connector.seen
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Vera requests plc-9 until `until`; Sam approves.
    async fn grant(&self, ports: &str, until: &str) -> i64 {
        let id = self.plant.vera.request("plc-9", ports, until);
        self.plant.broker.approve(&self.plant.sam, id).await;
        id
    }
}

/// A Modbus/TCP client from the it zone to `local` (the vendor's `connect` listener there).
async fn modbus_from_it(z: &Zones, local: SocketAddr) -> client::Context {
    let stream = zones::connect_from(&z.it, local).unwrap();
    tcp::attach(stream)
}

#[test]
fn the_vendor_reaches_the_ot_device_only_through_portcullis_and_only_in_its_window() {
    let Some(z) = zones::zones_or_skip("w") else {
        return;
    };
    let z = &z;
    zones::run_in_zone(&z.dmz, move || async move {
        let mut s = site(z).await;
        s.connector.wait_for("connected to relay").await;
        let connect = s.connected(1, Duration::from_secs(30)).await;
        assert_eq!(connect["target"], format!("site:{SITE}"));

        // The device is up (the ot zone reaches it), yet the vendor's zone cannot.
        let device = SocketAddr::new(OT.parse().unwrap(), MODBUS);
        drop(zones::connect_from(&z.ot, device).expect("the device listens in the ot zone"));
        s.device.next_close().await;
        let direct = zones::connect_from(&z.it, device);
        assert!(direct.is_err(), "the it zone reached the device directly");

        let grant = s.grant(&format!("{MODBUS},{UNLISTED}"), "+40s").await;
        let mut tunnel = s.plant.vera.connect(grant, &[], 2).await;
        let mut plc = modbus_from_it(z, tunnel.local(MODBUS)).await;
        plc.write_multiple_registers(10, &[7, 8, 9])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(s.device.registers()[10..13], [7, 8, 9]);
        let read = plc.read_input_registers(0, 3).await.unwrap().unwrap();
        assert_eq!(read, [1000, 1001, 1002]);

        // Granted and on the device's policy, but not on the plant's own allowlist.
        let refused = zones::connect_from(&z.it, tunnel.local(UNLISTED)).unwrap();
        let line = tunnel.wait_for("refused").await;
        assert!(
            line.contains("allowlist does not permit") && line.contains("connector_refused"),
            "{line}"
        );
        drop(refused);
        let refusals = s.audited("relay.stream.refuse", 1).await;
        assert_eq!(refusals[0]["details"]["code"], "connector_refused");
        assert_eq!(refusals[0]["details"]["site"], SITE);
        s.connector.wait_for("allowlist").await;

        // The window ends: the device sees the connection close, the vendor's tunnel ends.
        let closed = tokio::time::timeout(Duration::from_secs(90), s.device.next_close())
            .await
            .expect("the device saw the close at the window end");
        assert!(closed.bytes_in > 0);
        assert!(plc.read_input_registers(0, 1).await.is_err());
        tunnel.wait_for("window").await;
        let (status, lines) = tunnel.exit().await;
        assert!(status.success(), "{lines:?}");

        let start = &s.plant.broker.audit("relay.session.start")[0];
        assert_eq!(start["details"]["site"], SITE);
        let end = &s.audited("relay.session.end", 1).await[0];
        assert_eq!(end["details"]["reason"], "window_end");
        assert_eq!(
            end["details"]["connectors"],
            serde_json::json!([connect["details"]["connection"]])
        );
    });
}

#[test]
fn a_dropped_plant_link_cuts_open_streams_and_the_connector_is_back_within_5_s() {
    let Some(z) = zones::zones_or_skip("r") else {
        return;
    };
    let z = &z;
    zones::run_in_zone(&z.dmz, move || async move {
        let mut s = site(z).await;
        s.connector.wait_for("connected to relay").await;
        let first = s.connected(1, Duration::from_secs(30)).await;
        let grant = s.grant(&MODBUS.to_string(), "+10m").await;
        let tunnel = s.plant.vera.connect(grant, &[], 1).await;
        let mut plc = modbus_from_it(z, tunnel.local(MODBUS)).await;
        plc.write_single_register(1, 42).await.unwrap().unwrap();

        z.ot_link(false);
        // Both ends notice within the connector's 5 s idle timeout; the open stream is cut.
        let lost = s.audited("relay.stream.connector_lost", 1).await;
        assert_eq!(
            lost[0]["details"]["connector"],
            first["details"]["connection"]
        );
        assert_eq!(lost[0]["grant_id"], grant);
        let gone = s.audited("relay.connector.disconnect", 1).await;
        assert_eq!(
            gone[0]["details"]["connection"],
            first["details"]["connection"]
        );
        assert!(
            plc.read_holding_registers(1, 1).await.is_err(),
            "a stream through the lost connector was resumed"
        );
        s.connector.wait_for("lost").await;

        let up = Instant::now();
        z.ot_link(true);
        let second = s.connected(2, Duration::from_secs(5)).await;
        let back = up.elapsed();
        assert_ne!(
            second["details"]["connection"],
            first["details"]["connection"]
        );
        eprintln!("connector back {back:?} after the link returned");

        // The vendor's session survived (its own link was fine); a new stream works.
        let mut plc = modbus_from_it(z, tunnel.local(MODBUS)).await;
        let read = plc.read_holding_registers(1, 1).await.unwrap().unwrap();
        assert_eq!(read, [42]);
    });
}
