//! Through the real binary with real clients: a vendor logs in with the CLI, requests, gets
//! approved, runs `portcullis connect`, and real protocol clients reach the devices through the
//! QUIC tunnel: a Modbus/TCP client writes and reads registers, an HTTP client fetches pages,
//! and 100 MiB of random bytes come back byte-exact from an echo device. Then the enforcement
//! the vendor sees: a revoke ends `connect` with the reason, the window end too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::Plant;
use portcullis_testkit::devices::{EchoDevice, HttpDevice, ModbusDevice, http_body};
use rand::RngCore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_modbus::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn modbus_http_and_100_mib_reach_the_devices_through_connect() {
    let modbus = ModbusDevice::start().await;
    let http = HttpDevice::start().await;
    let echo = EchoDevice::start().await;
    let ports = [modbus.addr().port(), http.addr().port(), echo.addr().port()];
    let plant = Plant::new(&ports, &[]).await;
    let list = ports.map(|p| p.to_string()).join(",");
    let grant = plant.grant(&list, "+1h").await;
    let mut tunnel = plant.vera.connect(grant, &[], 3).await;
    tunnel.wait_for("left").await;

    // Modbus/TCP: a real client writes holding registers and a coil, and reads them back.
    let mut ctx = tcp::connect(tunnel.local(ports[0])).await.unwrap();
    ctx.write_multiple_registers(10, &[0xBEEF, 42, 7])
        .await
        .unwrap()
        .unwrap();
    ctx.write_single_coil(3, true).await.unwrap().unwrap();
    let regs = ctx.read_holding_registers(10, 3).await.unwrap().unwrap();
    assert_eq!(regs, vec![0xBEEF, 42, 7]);
    assert!(ctx.read_coils(3, 1).await.unwrap().unwrap()[0]);
    assert_eq!(
        modbus.registers()[10..13],
        [0xBEEF, 42, 7],
        "the device holds the writes"
    );
    ctx.disconnect().await.unwrap();

    // HTTP: a real client, through the local listener.
    let client = reqwest::Client::new();
    let base = format!("http://{}", tunnel.local(ports[1]));
    for path in ["/", "/line-3/recipe"] {
        let body = client
            .get(format!("{base}{path}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, http_body(path));
    }
    let status: serde_json::Value = client
        .get(format!("{base}/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["status"], "ok");

    // 100 MiB of random bytes, written and read concurrently, back byte-exact.
    const SIZE: usize = 100 * 1024 * 1024;
    let mut data = vec![0u8; SIZE];
    rand::thread_rng().fill_bytes(&mut data);
    let data = std::sync::Arc::new(data);
    let stream = TcpStream::connect(tunnel.local(ports[2])).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        for chunk in sent.chunks(256 * 1024) {
            wr.write_all(chunk).await.unwrap();
        }
        wr.shutdown().await.unwrap();
    });
    let mut back = Vec::with_capacity(SIZE);
    rd.read_to_end(&mut back).await.unwrap();
    writer.await.unwrap();
    assert_eq!(back.len(), SIZE);
    assert!(back == *data, "the echo came back byte-exact");

    // The relay counted it; the session end in the audit log carries the bytes.
    let metrics = plant.broker.metrics().await;
    assert!(
        metrics.contains("portcullis_relay_sessions_active 1"),
        "{metrics}"
    );
    let up: u64 = metric(&metrics, "portcullis_relay_bytes_up_total");
    assert!(up >= SIZE as u64, "{up}");

    plant.broker.revoke(&plant.sam, grant).await;
    let (status, lines) = tunnel.exit().await;
    assert!(!status.success(), "a revoke is not a normal end: {lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("revoked")),
        "connect says why it ended: {lines:?}"
    );
    let ends = plant.broker.audit("relay.session.end");
    assert_eq!(ends.len(), 1, "{ends:?}");
    let d = &ends[0]["details"];
    assert_eq!(d["reason"], "revoked");
    assert!(d["bytes_up"].as_u64().unwrap() >= SIZE as u64, "{d}");
    assert!(d["bytes_down"].as_u64().unwrap() >= SIZE as u64, "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_exits_cleanly_when_the_window_ends_and_the_device_sees_the_close() {
    let echo = EchoDevice::start().await;
    let plant = Plant::new(&[echo.addr().port()], &[]).await;
    // Long enough to log in, connect and open a stream on a slow machine; short enough to wait.
    let grant = plant.grant(&echo.addr().port().to_string(), "+20s").await;
    let mut tunnel = plant.vera.connect(grant, &[], 1).await;
    let mut s = TcpStream::connect(tunnel.local(echo.addr().port()))
        .await
        .unwrap();
    s.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(60), echo.next_close())
        .await
        .expect("the device saw the close when the window ended");
    assert_eq!(closed.bytes_in, 4);
    // The local connection ends too.
    let n = s.read(&mut buf).await.unwrap_or(0);
    assert_eq!(n, 0);
    tunnel.wait_for("window").await;
    let (status, lines) = tunnel.exit().await;
    assert!(
        status.success(),
        "the window end is a normal end: {lines:?}"
    );
    let ends = plant.broker.audit("relay.session.end");
    assert_eq!(ends[0]["details"]["reason"], "window_end");
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}
