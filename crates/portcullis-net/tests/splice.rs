//! The splice over real sockets: loopback TCP and a real QUIC connection (dev PKI). One test per
//! way a splice ends, each checking what both sides see (docs/wire-protocol.md, "How a data
//! stream ends"): a clean close is a FIN each way; every other end is an RST on a TCP side and
//! RESET_STREAM on a QUIC side, the device side first.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::io::ErrorKind;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use portcullis_core::wire::{Frame, RefusalCode};
use portcullis_net::splice::{
    CUT, Inspector, Meter, Peer, Side, Splice, SpliceEnd, Spliced, Verdict,
};
use portcullis_net::{ensure_dev_pki, ephemeral_client_identity, load_certified_key, quic};
use quinn::{Connection, ReadError, RecvStream, SendStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A connected loopback TCP pair: (ours, the splice's).
async fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ours = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (theirs, _) = l.accept().await.unwrap();
    (ours, theirs)
}

/// A QUIC connection over loopback; the first end opens streams, the second accepts them.
struct Quic {
    opener: Connection,
    acceptor: Connection,
    _dir: tempfile::TempDir,
    _endpoints: (quinn::Endpoint, quinn::Endpoint),
}

async fn quic_pair() -> Quic {
    let dir = tempfile::tempdir().unwrap();
    let files = ensure_dev_pki(&dir.path().join("tls"), &[]).unwrap();
    let (certs, key) = load_certified_key(&files.cert, &files.key).unwrap();
    let server = quic::relay_server_config(certs, key, &["t"]).unwrap();
    let server_ep = quic::endpoint("127.0.0.1:0".parse().unwrap(), Some(server)).unwrap();
    let (cert, key) = ephemeral_client_identity("splice-test").unwrap();
    let client = quic::client_config(&files.ca_cert, cert, key, &["t"]).unwrap();
    let mut client_ep = quic::endpoint("127.0.0.1:0".parse().unwrap(), None).unwrap();
    client_ep.set_default_client_config(client);
    let connecting = client_ep
        .connect(server_ep.local_addr().unwrap(), "localhost")
        .unwrap();
    let (opener, acceptor) = tokio::join!(connecting, async {
        server_ep.accept().await.unwrap().await.unwrap()
    });
    Quic {
        opener: opener.unwrap(),
        acceptor,
        _dir: dir,
        _endpoints: (client_ep, server_ep),
    }
}

/// A bidirectional stream: (the opener's halves, the acceptor's halves). The opener writes a
/// byte so that the acceptor sees the stream; the acceptor reads it.
async fn stream(q: &Quic) -> ((SendStream, RecvStream), (SendStream, RecvStream)) {
    let (mut send, recv) = q.opener.open_bi().await.unwrap();
    send.write_all(b"!").await.unwrap();
    let (s2, mut r2) = q.acceptor.accept_bi().await.unwrap();
    let mut one = [0u8; 1];
    r2.read_exact(&mut one).await.unwrap();
    ((send, recv), (s2, r2))
}

/// Reads to the end of a TCP side: the bytes, and whether it ended with an RST.
async fn tcp_drain(tcp: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf).await {
            Ok(0) => return (got, false),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (got, true),
            Err(e) => panic!("{e}"),
        }
    }
}

/// Reads to the end of a QUIC side: the bytes, and whether it ended with a reset of code [`CUT`].
async fn quic_drain(recv: &mut RecvStream) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    loop {
        match recv.read_chunk(64 * 1024, true).await {
            Ok(Some(c)) => got.extend_from_slice(&c.bytes),
            Ok(None) => return (got, false),
            Err(ReadError::Reset(code)) => {
                assert_eq!(code, CUT);
                return (got, true);
            }
            Err(e) => panic!("{e}"),
        }
    }
}

fn spawn(splice: Splice<'static>, until: oneshot::Receiver<()>) -> JoinHandle<Spliced> {
    tokio::spawn(splice.run(async move {
        let _ = until.await;
    }))
}

#[tokio::test]
async fn a_clean_close_passes_each_fin_along_and_carries_early_bytes_first() {
    // Client side: QUIC (as at the relay), device side: TCP.
    let q = quic_pair().await;
    let ((mut vsend, mut vrecv), (rsend, rrecv)) = stream(&q).await;
    let (mut device, theirs) = tcp_pair().await;
    let (_stop, until) = oneshot::channel();
    let run = spawn(
        Splice::new(
            Peer::quic(rsend, rrecv, b"early-".to_vec()),
            Peer::Tcp(theirs),
        ),
        until,
    );
    vsend.write_all(b"request").await.unwrap();
    vsend.finish().unwrap();
    let (got, reset) = tcp_drain(&mut device).await;
    assert_eq!(got, b"early-request");
    assert!(!reset, "the client's FIN reaches the device as a FIN");
    // The device's direction is still open after the client's half-close.
    device.write_all(b"answer").await.unwrap();
    device.shutdown().await.unwrap();
    let (got, reset) = quic_drain(&mut vrecv).await;
    assert_eq!(got, b"answer");
    assert!(!reset);
    let s = run.await.unwrap();
    assert!(
        matches!(
            s.end,
            SpliceEnd::Closed {
                first: Side::Client
            }
        ),
        "{:?}",
        s.end
    );
    assert!(s.end.is_clean());
    assert_eq!((s.to_device, s.to_client), (13, 6));
}

#[tokio::test]
async fn the_device_closing_first_is_a_clean_close_too() {
    let (mut client, c) = tcp_pair().await;
    let (mut device, d) = tcp_pair().await;
    let (_stop, until) = oneshot::channel();
    let run = spawn(Splice::new(Peer::Tcp(c), Peer::Tcp(d)), until);
    device.write_all(b"banner").await.unwrap();
    device.shutdown().await.unwrap();
    let mut banner = [0u8; 6];
    client.read_exact(&mut banner).await.unwrap();
    assert_eq!(client.read(&mut banner).await.unwrap(), 0, "a FIN");
    client.write_all(b"bye").await.unwrap();
    client.shutdown().await.unwrap();
    let (got, reset) = tcp_drain(&mut device).await;
    assert_eq!((got.as_slice(), reset), (&b"bye"[..], false));
    let s = run.await.unwrap();
    assert!(
        matches!(
            s.end,
            SpliceEnd::Closed {
                first: Side::Device
            }
        ),
        "{:?}",
        s.end
    );
}

#[tokio::test]
async fn a_client_reset_cuts_the_device_with_an_rst() {
    let q = quic_pair().await;
    let ((mut vsend, _vrecv), (rsend, rrecv)) = stream(&q).await;
    let (mut device, d) = tcp_pair().await;
    let (_stop, until) = oneshot::channel();
    let run = spawn(
        Splice::new(Peer::quic(rsend, rrecv, Vec::new()), Peer::Tcp(d)),
        until,
    );
    vsend.write_all(b"half").await.unwrap();
    let mut half = [0u8; 4];
    device.read_exact(&mut half).await.unwrap();
    vsend.reset(CUT).unwrap();
    let s = run.await.unwrap();
    assert!(
        matches!(s.end, SpliceEnd::Reset(Side::Client)),
        "{:?}",
        s.end
    );
    let (_, reset) = tcp_drain(&mut device).await;
    assert!(reset, "the device sees an RST, not a clean close");
}

#[tokio::test]
async fn a_device_reset_resets_the_clients_stream() {
    // Client side: TCP (as at the vendor client), device side: QUIC (the relay).
    let q = quic_pair().await;
    let ((csend, crecv), (mut rsend, _rrecv)) = stream(&q).await;
    let (mut client, c) = tcp_pair().await;
    let (_stop, until) = oneshot::channel();
    let run = spawn(
        Splice::new(Peer::Tcp(c), Peer::quic(csend, crecv, Vec::new())),
        until,
    );
    rsend.write_all(b"hi").await.unwrap();
    let mut hi = [0u8; 2];
    client.read_exact(&mut hi).await.unwrap();
    rsend.reset(CUT).unwrap();
    let s = run.await.unwrap();
    assert!(
        matches!(s.end, SpliceEnd::Reset(Side::Device)),
        "{:?}",
        s.end
    );
    let (_, reset) = tcp_drain(&mut client).await;
    assert!(reset, "the local connection sees an RST");
}

#[tokio::test]
async fn a_tcp_rst_from_the_device_is_a_device_reset() {
    let q = quic_pair().await;
    let ((_vsend, mut vrecv), (rsend, rrecv)) = stream(&q).await;
    let (device, d) = tcp_pair().await;
    let (_stop, until) = oneshot::channel();
    let run = spawn(
        Splice::new(Peer::quic(rsend, rrecv, Vec::new()), Peer::Tcp(d)),
        until,
    );
    socket2::SockRef::from(&device)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(device);
    let s = run.await.unwrap();
    assert!(
        matches!(s.end, SpliceEnd::Reset(Side::Device)),
        "{:?}",
        s.end
    );
    let (_, reset) = quic_drain(&mut vrecv).await;
    assert!(reset, "the vendor's stream is reset");
}

#[tokio::test]
async fn cancelling_cuts_the_device_first_then_the_client() {
    let q = quic_pair().await;
    let ((_vsend, mut vrecv), (rsend, rrecv)) = stream(&q).await;
    let (mut device, d) = tcp_pair().await;
    let (stop, until) = oneshot::channel();
    let run = spawn(
        Splice::new(Peer::quic(rsend, rrecv, Vec::new()), Peer::Tcp(d)),
        until,
    );
    stop.send(()).unwrap();
    let s = run.await.unwrap();
    assert!(matches!(s.end, SpliceEnd::Cancelled), "{:?}", s.end);
    assert!(tcp_drain(&mut device).await.1, "an RST to the device");
    assert!(quic_drain(&mut vrecv).await.1, "a reset to the vendor");
}

#[tokio::test(start_paused = true)]
async fn no_byte_for_the_idle_timeout_ends_it_and_any_byte_restarts_the_clock() {
    let (mut client, c) = tcp_pair().await;
    let (mut device, d) = tcp_pair().await;
    let (_stop, until) = oneshot::channel();
    let idle = Duration::from_secs(30);
    let start = tokio::time::Instant::now();
    let run = spawn(
        Splice::new(Peer::Tcp(c), Peer::Tcp(d)).idle_timeout(idle),
        until,
    );
    tokio::time::sleep(Duration::from_secs(20)).await;
    client.write_all(b"x").await.unwrap();
    let mut x = [0u8; 1];
    device.read_exact(&mut x).await.unwrap();
    let s = run.await.unwrap();
    assert!(
        matches!(s.end, SpliceEnd::Idle(d) if d == idle),
        "{:?}",
        s.end
    );
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(50) && took < Duration::from_secs(51),
        "{took:?}"
    );
    assert!(tcp_drain(&mut device).await.1);
    assert!(tcp_drain(&mut client).await.1);
}

#[tokio::test]
async fn a_lost_connection_is_a_failure_with_its_cause() {
    let q = quic_pair().await;
    let ((_vsend, _vrecv), (rsend, rrecv)) = stream(&q).await;
    let (mut device, d) = tcp_pair().await;
    let (_stop, until) = oneshot::channel();
    let run = spawn(
        Splice::new(Peer::quic(rsend, rrecv, Vec::new()), Peer::Tcp(d)),
        until,
    );
    q.opener.close(7u32.into(), b"gone");
    let s = run.await.unwrap();
    match &s.end {
        SpliceEnd::Failed { side, error } => {
            assert_eq!(*side, Side::Client);
            assert!(error.to_string().contains("gone"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    assert!(tcp_drain(&mut device).await.1);
}

/// The vendor client's device side: `Open` is sent, the answer not yet read.
async fn awaiting_opened(answer: Frame, tail: &[u8]) -> (Spliced, Vec<u8>) {
    let q = quic_pair().await;
    let ((csend, crecv), (mut rsend, mut rrecv)) = stream(&q).await;
    let (mut client, c) = tcp_pair().await;
    let (_stop, until) = oneshot::channel();
    let run = spawn(
        Splice::new(Peer::Tcp(c), Peer::quic_awaiting_opened(csend, crecv)),
        until,
    );
    // The client's bytes go out before the answer arrives.
    client.write_all(b"first").await.unwrap();
    let mut first = [0u8; 5];
    rrecv.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"first");
    if matches!(answer, Frame::Refused { .. }) {
        // As the relay does: it reads no more of a stream it refuses. The client's next write
        // may see STOP_SENDING before its read sees `Refused`; the refusal is still the end.
        rrecv.stop(0u32.into()).unwrap();
        tokio::task::yield_now().await;
        let _ = client.write_all(b"more").await;
    }
    let mut bytes = answer.to_vec().unwrap();
    bytes.extend_from_slice(tail);
    rsend.write_all(&bytes).await.unwrap();
    rsend.finish().unwrap();
    let mut got = Vec::new();
    if matches!(answer, Frame::Opened) {
        client.shutdown().await.unwrap();
        got = tcp_drain(&mut client).await.0;
        let _ = quic_drain(&mut rrecv).await;
    }
    (run.await.unwrap(), got)
}

#[tokio::test]
async fn opened_lets_bytes_through_including_those_in_the_same_read() {
    let (s, got) = awaiting_opened(Frame::Opened, b"device-bytes").await;
    assert!(s.end.is_clean(), "{:?}", s.end);
    assert_eq!(got, b"device-bytes");
    assert_eq!((s.to_device, s.to_client), (5, 12));
}

#[tokio::test]
async fn refused_ends_with_the_relays_code_and_message() {
    let refused = Frame::Refused {
        code: RefusalCode::TargetNotGranted,
        message: "not part of the grant".into(),
    };
    let (s, _) = awaiting_opened(refused, b"").await;
    match s.end {
        SpliceEnd::Refused { code, message } => {
            assert_eq!(code, RefusalCode::TargetNotGranted);
            assert_eq!(message, "not part of the grant");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn another_frame_instead_of_opened_is_a_protocol_error() {
    let (s, _) = awaiting_opened(Frame::Ping { nonce: 1 }, b"").await;
    match s.end {
        SpliceEnd::Protocol(what) => assert!(what.contains("instead of Opened"), "{what}"),
        other => panic!("{other:?}"),
    }
}

/// Passes everything but a chunk starting with `w`, which it answers, and a chunk starting
/// with `x`, which drops the connection.
struct ReadOnly;

impl Inspector for ReadOnly {
    fn inspect(&mut self, chunk: &Bytes) -> Verdict {
        match chunk.first() {
            Some(b'w') => Verdict::Answer(Bytes::from_static(b"denied\n")),
            Some(b'x') => Verdict::Drop("forbidden function".into()),
            _ => Verdict::Pass,
        }
    }
}

#[derive(Default)]
struct Counted(AtomicU64, AtomicU64);

impl Meter for Counted {
    fn moved(&self, to: Side, n: usize) {
        let c = if to == Side::Device { &self.0 } else { &self.1 };
        c.fetch_add(n as u64, Ordering::Relaxed);
    }
}

#[tokio::test]
async fn an_inspector_answers_the_sender_itself_or_drops_the_connection() {
    let (mut client, c) = tcp_pair().await;
    let (mut device, d) = tcp_pair().await;
    let meter = Box::leak(Box::new(Counted::default()));
    let (_stop, until) = oneshot::channel::<()>();
    let splice = Splice::new(Peer::Tcp(c), Peer::Tcp(d))
        .inspect_to_device(Box::new(ReadOnly))
        .meter(&*meter);
    let run = tokio::spawn(splice.run(async move {
        let _ = until.await;
    }));
    client.write_all(b"read").await.unwrap();
    let mut read = [0u8; 4];
    device.read_exact(&mut read).await.unwrap();
    device.write_all(b"value\n").await.unwrap();
    let mut value = [0u8; 6];
    client.read_exact(&mut value).await.unwrap();
    assert_eq!(&value, b"value\n");
    // The write never reaches the device; the client gets the inspector's answer.
    client.write_all(b"write").await.unwrap();
    let mut denied = [0u8; 7];
    client.read_exact(&mut denied).await.unwrap();
    assert_eq!(&denied, b"denied\n");
    client.write_all(b"x").await.unwrap();
    let s = run.await.unwrap();
    match &s.end {
        SpliceEnd::Dropped { from, reason } => {
            assert_eq!(*from, Side::Client);
            assert_eq!(reason, "forbidden function");
        }
        other => panic!("{other:?}"),
    }
    let (rest, reset) = tcp_drain(&mut device).await;
    assert!(
        rest.is_empty(),
        "nothing the inspector held back reaches the device"
    );
    assert!(reset);
    assert_eq!((s.to_device, s.to_client), (4, 13));
    assert_eq!(meter.0.load(Ordering::Relaxed), 4);
    assert_eq!(meter.1.load(Ordering::Relaxed), 13);
}

#[tokio::test]
async fn a_quic_peer_that_stops_reading_is_a_reset_by_that_side() {
    let q = quic_pair().await;
    let ((vsend, _vrecv), (rsend, rrecv)) = stream(&q).await;
    let ((csend, crecv), (_dsend, mut drecv)) = stream(&q).await;
    let (_stop, until) = oneshot::channel();
    // Relay via a connector: QUIC on both sides. The "device" (connector) stops reading.
    let run = spawn(
        Splice::new(
            Peer::quic(rsend, rrecv, Vec::new()),
            Peer::quic(csend, crecv, Vec::new()),
        ),
        until,
    );
    drecv.stop(CUT).unwrap();
    // The vendor still sends: the write towards the connector fails as stopped.
    let mut vsend = vsend;
    while !run.is_finished() && vsend.write_all(&[0u8; 1024]).await.is_ok() {
        tokio::task::yield_now().await;
    }
    let s = run.await.unwrap();
    assert!(
        matches!(s.end, SpliceEnd::Reset(Side::Device)),
        "{:?}",
        s.end
    );
}
