//! Read-only Modbus tied to the approval (issue 14), through the real binary with clients nobody
//! on the project wrote: pymodbus (tests/modbus/client.py) and `mbpoll` reach a Modbus device
//! through `portcullis connect`. The device is the test kit's tokio-modbus server, whose
//! registers and received function codes are asserted on the device itself, not on the relay.
//!
//! - `read` (the default on a Modbus port): reads work; writes, FC 8 sub-function 4 and FC 90
//!   come back as exception 01 and never reach the device; every refusal is audited; a
//!   malformed frame ends that connection as `protocol_violation`.
//! - `write`: the write lands, and the audit event carries the register and the value.
//! - A supervisor narrows `write` to `read` at approval: the session is read-only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Plant, admin};
use portcullis_testkit::devices::ModbusDevice;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// pymodbus and mbpoll, or a skip (CI sets `PORTCULLIS_REQUIRE_MODBUS_CLIENTS` and installs
/// them).
fn clients_or_skip() -> bool {
    let pymodbus = Command::new("python3")
        .args(["-c", "import pymodbus"])
        .output()
        .is_ok_and(|o| o.status.success());
    let mbpoll = Command::new("mbpoll").arg("-V").output().is_ok();
    if pymodbus && mbpoll {
        return true;
    }
    assert!(
        std::env::var_os("PORTCULLIS_REQUIRE_MODBUS_CLIENTS").is_none(),
        "pymodbus (pip) and mbpoll (apt) are required here: pymodbus {pymodbus}, mbpoll {mbpoll}"
    );
    eprintln!(
        "skipped: pymodbus (pip install pymodbus) or mbpoll (apt-get install mbpoll) is missing"
    );
    false
}

/// Runs the pymodbus client against `addr` with `steps`; one JSON result per step.
fn pymodbus(addr: std::net::SocketAddr, steps: &[&str]) -> Vec<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("modbus/client.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .args(steps)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pymodbus client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `mbpoll` once against holding registers from 1-based `reference`: reads `count` of them, or
/// writes `values` when there are any.
fn mbpoll(
    addr: std::net::SocketAddr,
    reference: u16,
    count: u16,
    values: &[&str],
) -> (bool, String) {
    let count = count.to_string();
    let count: &[&str] = if values.is_empty() {
        &["-c", &count]
    } else {
        &[]
    };
    let out = Command::new("mbpoll")
        .args(["-m", "tcp", "-a", "1", "-t", "4", "-1", "-o", "5"])
        .args(["-r", &reference.to_string()])
        .args(count)
        .args(["-p", &addr.port().to_string(), &addr.ip().to_string()])
        .args(values)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The device's port named Modbus in plc-7's policy, through the CLI contract.
fn modbus_policy(plant: &Plant, port: u16, writes: &str) {
    admin(
        &plant.broker.data,
        &[
            "admin",
            "device",
            "set-policy",
            "plc-7",
            "--protocol",
            &format!("{port}=modbus"),
            "--writes",
            writes,
        ],
    );
}

/// Audit events with `action` once at least `n` exist (the relay writes them as streams run).
async fn audited(plant: &Plant, action: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let events = plant.broker.audit(action);
        if events.len() >= n {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "{n} {action} events expected, got {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One raw request ADU; returns the answer's PDU (or `None` if the connection ended).
async fn raw(stream: &mut TcpStream, transaction: u16, pdu: &[u8]) -> Option<Vec<u8>> {
    let mut adu = transaction.to_be_bytes().to_vec();
    adu.extend_from_slice(&[0, 0]);
    adu.extend_from_slice(&u16::try_from(pdu.len() + 1).unwrap().to_be_bytes());
    adu.push(1);
    adu.extend_from_slice(pdu);
    stream.write_all(&adu).await.ok()?;
    let mut head = [0u8; 7];
    stream.read_exact(&mut head).await.ok()?;
    assert_eq!(head[..2], transaction.to_be_bytes(), "the same transaction");
    assert_eq!(head[6], 1, "the same unit");
    let len = usize::from(u16::from_be_bytes([head[4], head[5]])) - 1;
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await.ok()?;
    Some(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_access_passes_reads_and_answers_everything_else_itself() {
    if !clients_or_skip() {
        return;
    }
    let device = ModbusDevice::start().await;
    let port = device.addr().port();
    let plant = Plant::new(&[port], &[]).await;
    modbus_policy(&plant, port, "allowed");
    let grant = plant.grant(&port.to_string(), "+1h").await;
    let mut tunnel = plant.vera.connect(grant, &[], 1).await;
    let header = tunnel.wait_for(&format!("access {port}:")).await;
    assert!(header.contains("modbus, read-only"), "{header}");
    let local = tunnel.local(port);
    let before = device.registers();

    // pymodbus: reads answer with the device's data; writes are exception 01.
    let results = pymodbus(
        local,
        &[
            "input:0:3",
            "write:3:4242",
            "writes:10:1,2",
            "coil:5:1",
            "read:0:10",
        ],
    );
    assert_eq!(
        results[0]["values"],
        json!([1000, 1001, 1002]),
        "{results:?}"
    );
    for r in &results[1..4] {
        assert_eq!(r["ok"], false, "{r}");
        assert_eq!(r["exception"], 1, "illegal function: {r}");
    }
    assert_eq!(results[4]["values"], json!(vec![0; 10]), "{results:?}");

    // mbpoll: a read works, a write fails with the exception.
    let (ok, text) = mbpoll(local, 1, 4, &[]);
    assert!(ok, "mbpoll read: {text}");
    let (ok, text) = mbpoll(local, 4, 1, &["4242"]);
    assert!(!ok, "mbpoll's write was not refused: {text}");
    assert!(text.to_lowercase().contains("illegal function"), "{text}");

    // FC 8 sub-function 4 (force listen-only) and FC 90 (UMAS programming) are refused by the
    // relay: the answer comes, with the same transaction and unit, and the device never saw them.
    let mut s = TcpStream::connect(local).await.unwrap();
    assert_eq!(
        raw(&mut s, 7, &[8, 0, 4, 0, 0]).await.unwrap(),
        [0x88, 0x01]
    );
    assert_eq!(raw(&mut s, 8, &[90, 0, 1]).await.unwrap(), [0xda, 0x01]);
    // A malformed frame (protocol id 1) ends the connection.
    s.write_all(&[0, 10, 0, 1, 0, 6, 1, 3, 0, 0, 0, 1])
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let end = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .unwrap();
    assert!(
        matches!(end, Ok(0) | Err(_)),
        "the connection stayed up: {end:?}"
    );

    assert_eq!(device.registers(), before, "no write reached the device");
    assert!(!device.coils()[5], "no coil write reached the device");
    let seen = device.functions_seen();
    assert!(
        seen.iter().all(|f| [3, 4].contains(f)),
        "only reads reached the device: {seen:?}"
    );

    // Every refusal is on the record, with function, unit and address.
    let refused = audited(&plant, "relay.modbus.refuse", 6).await;
    let write = refused
        .iter()
        .find(|e| e["details"]["function"] == 6)
        .unwrap();
    assert_eq!(write["actor"], "vera");
    assert_eq!(write["grant_id"], grant);
    assert_eq!(write["details"]["address"], 3);
    assert_eq!(write["details"]["reason"], "read_only");
    assert!(refused.iter().any(|e| e["details"]["function"] == 90));
    let ends = audited(&plant, "relay.modbus.stream_end", 4).await;
    assert!(
        ends.iter()
            .any(|e| e["details"]["end"] == "protocol_violation"),
        "{ends:?}"
    );
}

/// Vera's `portcullis request --access write` for `port` of plc-7, as a script would run it.
fn request_write(plant: &Plant, port: u16) -> std::process::Output {
    let port = port.to_string();
    plant
        .vera
        .cmd(&[
            "request",
            "--device",
            "plc-7",
            "--port",
            &port,
            "--access",
            "write",
            "--from",
            "now",
            "--until",
            "+1h",
            "--reason",
            "recipe CHG-7",
            "--format",
            "json",
        ])
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn write_access_lands_on_the_record_and_narrowing_makes_it_read_only() {
    if !clients_or_skip() {
        return;
    }
    let device = ModbusDevice::start().await;
    let port = device.addr().port();
    let plant = Plant::new(&[port], &[]).await;
    modbus_policy(&plant, port, "allowed");
    let ask_write = || {
        let out = request_write(&plant, port);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["access"], "write");
        v["id"].as_i64().unwrap()
    };

    // Approved as asked: the write lands and the record names register and value.
    let grant = ask_write();
    plant.broker.approve(&plant.sam, grant).await;
    let mut tunnel = plant.vera.connect(grant, &[], 1).await;
    let header = tunnel.wait_for(&format!("access {port}:")).await;
    assert!(header.contains("read and write"), "{header}");
    let results = pymodbus(tunnel.local(port), &["write:3:4242", "read:3:1"]);
    assert_eq!(results[0]["ok"], true, "{results:?}");
    assert_eq!(results[1]["values"], json!([4242]));
    assert_eq!(device.registers()[3], 4242, "the write reached the device");
    let writes = audited(&plant, "relay.modbus.write", 1).await;
    let d = &writes[0]["details"];
    assert_eq!(
        (d["function"].clone(), d["address"].clone()),
        (json!(6), json!(3))
    );
    assert_eq!(d["values"], json!([4242]));
    assert_eq!(d["response"], "ok");
    assert_eq!(writes[0]["actor"], "vera");
    drop(tunnel);

    // Narrowed to read at approval: the same vendor's write is refused.
    let narrowed = ask_write();
    let (status, body) = plant
        .broker
        .post(
            &format!("/api/v1/requests/{narrowed}/approve"),
            json!({ "access": "read" }),
            Some(&plant.sam),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["access"], "read", "{body}");
    let approval = audited(&plant, "request.approve", 2).await;
    assert_eq!(approval[1]["details"]["access_requested"], "write");
    let mut tunnel = plant.vera.connect(narrowed, &[], 1).await;
    let header = tunnel.wait_for(&format!("access {port}:")).await;
    assert!(header.contains("read-only"), "{header}");
    let results = pymodbus(tunnel.local(port), &["write:4:1", "read:4:1"]);
    assert_eq!(results[0]["exception"], 1, "{results:?}");
    assert_eq!(results[1]["values"], json!([0]));
    assert_eq!(device.registers()[4], 0, "the narrowed grant wrote nothing");

    // A device whose policy never grants writes refuses the request itself.
    modbus_policy(&plant, port, "never");
    let out = request_write(&plant, port);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("never grants writes"), "{err}");
}
