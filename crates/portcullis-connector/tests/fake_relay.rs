//! The connector against a scripted relay in the same process: a real quinn server with a test
//! CA, speaking the connector frames of docs/wire-protocol.md, and a TCP echo server standing in
//! for a device. Everything from the TLS handshake (ALPN, client certificate) to half-close and
//! reconnects runs for real. Nothing here sleeps for timing: every wait is for an event, bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use portcullis_connector::{Allowlist, Connector, ConnectorConfig, StateDir};
use portcullis_core::wire::{CONNECTOR_ALPN, Frame, FrameDecoder, RefusalCode};
use quinn::{Connection, ConnectionError, Endpoint, RecvStream, SendStream, VarInt};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

const SITE: &str = "plant-1";
/// Generous bound for anything that should happen "at once" on loopback.
const SOON: Duration = Duration::from_secs(5);

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    timeout(SOON, f)
        .await
        .unwrap_or_else(|_| panic!("{what} within {SOON:?}"))
}

// ---- frames, as the relay reads and writes them ----

async fn read_frame(recv: &mut RecvStream, dec: &mut FrameDecoder) -> Option<Frame> {
    portcullis_net::frames::read_frame(recv, dec).await.unwrap()
}

async fn write_frame(send: &mut SendStream, frame: &Frame) {
    portcullis_net::frames::write_frame(send, frame)
        .await
        .unwrap();
}

// ---- the device: a TCP echo server that reports accepts and closes ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closed {
    /// The connector half-closed (FIN): the echo server closed its side too.
    Eof,
    /// The connection was reset (the connector dropped it at once).
    Reset,
}

struct Echo {
    addr: SocketAddr,
    accepted: mpsc::UnboundedReceiver<SocketAddr>,
    closed: mpsc::UnboundedReceiver<(SocketAddr, Closed)>,
}

impl Echo {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (acc_tx, accepted) = mpsc::unbounded_channel();
        let (closed_tx, closed) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((tcp, peer)) = listener.accept().await {
                let _ = acc_tx.send(peer);
                let closed_tx = closed_tx.clone();
                tokio::spawn(async move {
                    let (mut r, mut w) = tcp.into_split();
                    let mut buf = vec![0u8; 64 * 1024];
                    let how = loop {
                        match r.read(&mut buf).await {
                            Ok(0) => {
                                let _ = w.shutdown().await;
                                break Closed::Eof;
                            }
                            Ok(n) => {
                                if w.write_all(&buf[..n]).await.is_err() {
                                    break Closed::Reset;
                                }
                            }
                            Err(_) => break Closed::Reset,
                        }
                    };
                    let _ = closed_tx.send((peer, how));
                });
            }
        });
        Echo {
            addr,
            accepted,
            closed,
        }
    }

    async fn next_accepted(&mut self) -> SocketAddr {
        within("the device to be dialed", self.accepted.recv())
            .await
            .unwrap()
    }

    /// Waits until the connection from `peer` is closed, and says how.
    async fn closed(&mut self, peer: SocketAddr) -> Closed {
        within("the device connection to close", async {
            loop {
                let (p, how) = self.closed.recv().await.unwrap();
                if p == peer {
                    return how;
                }
            }
        })
        .await
    }
}

// ---- the relay ----

struct FakeRelay {
    endpoint: Endpoint,
    /// SHA-256 of the certificate issued to the connector.
    fingerprint: String,
    state: StateDir,
    _tmp: tempfile::TempDir,
}

/// One accepted connector connection, after `ConnectorHello`.
struct Accepted {
    conn: Connection,
    control: SendStream,
    control_recv: RecvStream,
    dec: FrameDecoder,
}

impl FakeRelay {
    /// A relay with a test CA, and a connector state directory enrolled for it (certificate
    /// issued by the same test CA, as the broker's site CA would). `allowlist`: the allowlist
    /// file's text, or None for no file.
    fn start(allowlist: Option<&str>) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let tls = tmp.path().join("tls");
        let files = portcullis_net::ensure_dev_pki(&tls, &["127.0.0.1".into()]).unwrap();
        let (certs, key) = portcullis_net::load_certified_key(&files.cert, &files.key).unwrap();
        let config =
            portcullis_net::quic::relay_server_config(certs, key, &[CONNECTOR_ALPN]).unwrap();
        let endpoint = Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
        let port = endpoint.local_addr().unwrap().port();

        let ca = portcullis_net::DevCa::load(&tls).unwrap();
        let (cert_pem, key_pem) = portcullis_net::issue_client_cert(&ca, SITE, 30).unwrap();
        let state = StateDir::new(tmp.path().join("connector"));
        let dir = state.path();
        std::fs::create_dir(dir).unwrap();
        write(&state.key_file(), &key_pem, 0o600);
        write(&state.cert_file(), &cert_pem, 0o644);
        write(&state.relay_ca_file(), ca.cert_pem(), 0o644);
        write(
            &state.config_file(),
            &format!(
                "site = \"{SITE}\"\nrelay = \"127.0.0.1:{port}\"\nserver_name = \"127.0.0.1\"\n"
            ),
            0o644,
        );
        if let Some(text) = allowlist {
            write(&state.default_allowlist(), text, 0o644);
        }
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        FakeRelay {
            endpoint,
            fingerprint: portcullis_net::sha256_fingerprint(&cert_der),
            state,
            _tmp: tmp,
        }
    }

    /// Starts the connector on the state directory, as `portcullis connector run` does.
    fn run_connector(&self, config: ConnectorConfig) -> (CancellationToken, JoinHandle<()>) {
        let identity = self.state.load_identity().unwrap();
        let allowlist = Allowlist::load(&self.state.default_allowlist()).unwrap();
        let connector = Connector::new(identity, allowlist, config, None).unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(connector.run(stop.clone()));
        (stop, task)
    }

    /// Accepts the connector's connection and its `ConnectorHello`, checking what the real
    /// relay checks: the ALPN, the pinned certificate, the protocol version and the site.
    async fn accept(&self) -> Accepted {
        let conn = within("the connector to connect", async {
            self.endpoint.accept().await.unwrap().await.unwrap()
        })
        .await;
        let alpn = conn
            .handshake_data()
            .unwrap()
            .downcast::<quinn::crypto::rustls::HandshakeData>()
            .unwrap()
            .protocol;
        assert_eq!(alpn.as_deref(), Some(CONNECTOR_ALPN.as_bytes()));
        let certs = conn
            .peer_identity()
            .unwrap()
            .downcast::<Vec<CertificateDer<'static>>>()
            .unwrap();
        assert_eq!(
            portcullis_net::sha256_fingerprint(&certs[0]),
            self.fingerprint,
            "the connector presents its enrolled certificate"
        );
        let (control, mut control_recv) = within("the control stream", conn.accept_bi())
            .await
            .unwrap();
        let mut dec = FrameDecoder::new();
        let hello = within("ConnectorHello", read_frame(&mut control_recv, &mut dec)).await;
        assert_eq!(
            hello,
            Some(Frame::ConnectorHello {
                version: 1,
                site: SITE.into()
            })
        );
        Accepted {
            conn,
            control,
            control_recv,
            dec,
        }
    }
}

fn write(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A dial stream as the relay sees it.
struct Dialed {
    send: SendStream,
    recv: RecvStream,
    dec: FrameDecoder,
}

impl Accepted {
    /// Sends `Ping{nonce}` and expects the `Pong`.
    async fn ping(&mut self, nonce: u64) {
        write_frame(&mut self.control, &Frame::Ping { nonce }).await;
        let pong = within("Pong", read_frame(&mut self.control_recv, &mut self.dec)).await;
        assert_eq!(pong, Some(Frame::Pong { nonce }));
    }

    /// Opens a dial stream with `Dial` and, in the same write, `early` bytes for the device.
    /// Returns the connector's answer frame.
    async fn dial(&self, device: &str, host: &str, port: u16, early: &[u8]) -> (Frame, Dialed) {
        self.dial_in(portcullis_core::Mode::Raw, device, host, port, early)
            .await
    }

    /// [`Self::dial`] with the grant's `mode` in the `Dial`.
    async fn dial_in(
        &self,
        mode: portcullis_core::Mode,
        device: &str,
        host: &str,
        port: u16,
        early: &[u8],
    ) -> (Frame, Dialed) {
        let (mut send, mut recv) = self.conn.open_bi().await.unwrap();
        let mut bytes = Frame::Dial {
            session_id: "s-1".into(),
            device: device.into(),
            host: host.into(),
            port,
            mode,
        }
        .to_vec()
        .unwrap();
        bytes.extend_from_slice(early);
        send.write_all(&bytes).await.unwrap();
        let mut dec = FrameDecoder::new();
        let answer = within("the answer to Dial", read_frame(&mut recv, &mut dec))
            .await
            .expect("a frame");
        (answer, Dialed { send, recv, dec })
    }
}

impl Dialed {
    /// Reads exactly `n` bytes of device data (starting with what came behind `Opened`).
    async fn read_exactly(&mut self, n: usize) -> Vec<u8> {
        let mut out = std::mem::replace(&mut self.dec, FrameDecoder::new()).into_remainder();
        within("device bytes", async {
            while out.len() < n {
                let chunk = self.recv.read_chunk(64 * 1024, true).await.unwrap();
                out.extend_from_slice(&chunk.expect("more bytes").bytes);
            }
        })
        .await;
        assert_eq!(out.len(), n, "no more than asked for");
        out
    }
}

fn allowlist_for(echo: &Echo, closed_port: u16) -> String {
    format!(
        "# Devices this connector may dial.\n[[allow]]\nhost = \"127.0.0.1\"\nports = [{}, {closed_port}]\n",
        echo.addr.port()
    )
}

/// A port with nothing listening on it.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn config() -> ConnectorConfig {
    ConnectorConfig {
        // These tests ping only when they choose to.
        relay_silence: Duration::from_secs(60),
        ..ConnectorConfig::default()
    }
}

#[tokio::test]
async fn dials_are_checked_spliced_and_cut_when_the_relay_goes_away() {
    let mut echo = Echo::start().await;
    let closed = closed_port();
    let relay = FakeRelay::start(Some(&allowlist_for(&echo, closed)));
    let (stop, task) = relay.run_connector(config());

    let mut first = relay.accept().await;
    // The first Ping is the "accepted" signal; every Ping is answered.
    first.ping(7).await;
    first.ping(8).await;

    // A permitted device: Opened, the bytes sent behind Dial reach the device first, and the
    // echo comes back.
    let (answer, mut a) = first
        .dial("plc-7", "127.0.0.1", echo.addr.port(), b"early:")
        .await;
    assert_eq!(answer, Frame::Opened);
    let a_peer = echo.next_accepted().await;
    a.send.write_all(b"hello").await.unwrap();
    assert_eq!(a.read_exactly(11).await, b"early:hello");

    // Not on the allowlist: refused with the allowlist's sentence; the device is never dialed.
    let (answer, _) = first.dial("plc-9", "10.99.0.1", 502, b"").await;
    assert_eq!(
        answer,
        Frame::Refused {
            code: RefusalCode::ConnectorRefused,
            message: "the site connector's allowlist does not permit 10.99.0.1:502 (device plc-9)"
                .into()
        }
    );
    // A permitted address on a port that is not listed, and a name for a listed address.
    let (answer, _) = first.dial("plc-7", "127.0.0.1", 1, b"").await;
    assert!(
        matches!(
            answer,
            Frame::Refused {
                code: RefusalCode::ConnectorRefused,
                ..
            }
        ),
        "{answer:?}"
    );
    let (answer, _) = first
        .dial("plc-7", "localhost", echo.addr.port(), b"")
        .await;
    assert!(
        matches!(
            answer,
            Frame::Refused {
                code: RefusalCode::ConnectorRefused,
                ..
            }
        ),
        "a name never matches an address rule: {answer:?}"
    );

    // Permitted, but nothing listens there.
    let (answer, _) = first.dial("plc-7", "127.0.0.1", closed, b"").await;
    assert_eq!(
        answer,
        Frame::Refused {
            code: RefusalCode::DialFailed,
            message: "the device refused the connection".into()
        }
    );

    // Half-close both ways: the relay's FIN reaches the device as a FIN, the device's FIN
    // comes back as the end of the QUIC stream.
    let (answer, mut b) = first
        .dial("plc-7", "127.0.0.1", echo.addr.port(), b"")
        .await;
    assert_eq!(answer, Frame::Opened);
    let b_peer = echo.next_accepted().await;
    b.send.write_all(b"bye").await.unwrap();
    b.send.finish().unwrap();
    assert_eq!(b.read_exactly(3).await, b"bye");
    let end = within("the end of the stream", b.recv.read_chunk(1024, true)).await;
    assert!(matches!(end, Ok(None)), "FIN after the echo: {end:?}");
    assert_eq!(echo.closed(b_peer).await, Closed::Eof);

    // A reset from the relay drops the device connection at once.
    let (answer, mut c) = first
        .dial("plc-7", "127.0.0.1", echo.addr.port(), b"x")
        .await;
    assert_eq!(answer, Frame::Opened);
    let c_peer = echo.next_accepted().await;
    assert_eq!(c.read_exactly(1).await, b"x");
    c.send.reset(VarInt::from_u32(1)).unwrap();
    assert_eq!(echo.closed(c_peer).await, Closed::Reset);

    // The relay goes away with stream `a` still open: the device connection is cut at once,
    // and the connector comes back (the first reconnect waits 125-250 ms).
    first.conn.close(VarInt::from_u32(2), b"test_restart");
    let lost_at = Instant::now();
    assert_eq!(echo.closed(a_peer).await, Closed::Reset);
    let mut second = relay.accept().await;
    assert!(
        lost_at.elapsed() < Duration::from_secs(3),
        "back within the first backoff plus one attempt: {:?}",
        lost_at.elapsed()
    );
    second.ping(1).await;
    let (answer, mut d) = second
        .dial("plc-7", "127.0.0.1", echo.addr.port(), b"again")
        .await;
    assert_eq!(answer, Frame::Opened);
    assert_eq!(d.read_exactly(5).await, b"again");
    let d_peer = echo.next_accepted().await;

    // SIGTERM: the connector closes the connection with a reason, cuts its streams and returns.
    stop.cancel();
    let reason = within("the connector's close", second.conn.closed()).await;
    match reason {
        ConnectionError::ApplicationClosed(close) => {
            assert_eq!(&close.reason[..], b"shutdown");
        }
        other => panic!("expected an application close, got {other:?}"),
    }
    assert_eq!(echo.closed(d_peer).await, Closed::Reset);
    within("the connector to stop", task).await.unwrap();
}

#[tokio::test]
async fn an_allowlist_that_demands_it_filters_modbus_at_the_connector_too() {
    use portcullis_core::{Access, Mode};
    let echo = Echo::start().await;
    let allowlist = format!(
        "[[allow]]\nhost = \"127.0.0.1\"\nports = [{}]\nmodbus = \"as-granted\"\n",
        echo.addr.port()
    );
    let relay = FakeRelay::start(Some(&allowlist));
    let (stop, task) = relay.run_connector(config());
    let mut link = relay.accept().await;
    link.ping(1).await;
    // FC 3 (read 10 holding registers) and FC 6 (write 4242 to register 3), transaction 1 and 2.
    let read = [0, 1, 0, 0, 0, 6, 1, 3, 0, 0, 0, 10];
    let write = [0, 2, 0, 0, 0, 6, 1, 6, 0, 3, 0x10, 0x92];
    let refusal = [0, 2, 0, 0, 0, 3, 1, 0x86, 0x01];

    // A dial that names no mode (a relay that does not know the port speaks Modbus) is filtered
    // read-only: the write is answered by the connector and never reaches the device (the echo
    // would send it back); the read reaches it.
    let (answer, mut d) = link
        .dial_in(Mode::Raw, "plc-7", "127.0.0.1", echo.addr.port(), &write)
        .await;
    assert_eq!(answer, Frame::Opened);
    assert_eq!(d.read_exactly(refusal.len()).await, refusal);
    d.send.write_all(&read).await.unwrap();
    assert_eq!(
        d.read_exactly(read.len()).await,
        read,
        "the read reached the device"
    );

    // Write access granted: the write reaches the device.
    let (answer, mut d) = link
        .dial_in(
            Mode::Modbus(Access::Write),
            "plc-7",
            "127.0.0.1",
            echo.addr.port(),
            &write,
        )
        .await;
    assert_eq!(answer, Frame::Opened);
    assert_eq!(
        d.read_exactly(write.len()).await,
        write,
        "the write reached the device"
    );

    // Bytes that are not Modbus/TCP end the stream.
    let (answer, mut d) = link
        .dial_in(Mode::Raw, "plc-7", "127.0.0.1", echo.addr.port(), b"")
        .await;
    assert_eq!(answer, Frame::Opened);
    d.send.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let end = within("the stream to end", d.recv.read_chunk(1024, true)).await;
    assert!(end.is_err(), "a non-Modbus stream was carried: {end:?}");
    stop.cancel();
    within("the connector to stop", task).await.unwrap();
}

#[tokio::test]
async fn without_an_allowlist_file_every_dial_is_refused() {
    let echo = Echo::start().await;
    let relay = FakeRelay::start(None);
    let (stop, task) = relay.run_connector(config());
    let mut link = relay.accept().await;
    link.ping(1).await;
    let (answer, _) = link.dial("plc-7", "127.0.0.1", echo.addr.port(), b"").await;
    assert_eq!(
        answer,
        Frame::Refused {
            code: RefusalCode::ConnectorRefused,
            message: format!(
                "the site connector's allowlist does not permit 127.0.0.1:{} (device plc-7)",
                echo.addr.port()
            )
        }
    );
    stop.cancel();
    within("the connector to stop", task).await.unwrap();
}

#[tokio::test]
async fn a_relay_that_stops_pinging_is_left_and_reconnected() {
    let relay = FakeRelay::start(Some(""));
    let (stop, task) = relay.run_connector(ConnectorConfig {
        relay_silence: Duration::from_millis(300),
        ..ConnectorConfig::default()
    });
    let mut first = relay.accept().await;
    first.ping(1).await;
    // Say nothing more: the connector gives up on this connection and comes back.
    let reason = within("the connector to leave", first.conn.closed()).await;
    match reason {
        ConnectionError::ApplicationClosed(close) => {
            assert_eq!(&close.reason[..], b"relay_silent");
        }
        other => panic!("expected an application close, got {other:?}"),
    }
    let mut second = relay.accept().await;
    second.ping(2).await;
    stop.cancel();
    within("the connector to stop", task).await.unwrap();
}

#[tokio::test]
async fn a_refused_certificate_is_retried_at_the_backoff_cap() {
    let relay = FakeRelay::start(Some(""));
    let (stop, task) = relay.run_connector(config());
    let mut link = relay.accept().await;
    for _ in 0..2 {
        // Refused instead of the first Ping: the relay does not accept this certificate.
        write_frame(
            &mut link.control,
            &Frame::Refused {
                code: RefusalCode::BadToken,
                message: "this site's certificate was revoked".into(),
            },
        )
        .await;
        let refused_at = Instant::now();
        // The connector keeps trying (it never exits), at the cap: not sooner than half of it.
        link = relay.accept().await;
        let gap = refused_at.elapsed();
        assert!(
            gap >= Duration::from_millis(1000) && gap < Duration::from_secs(5),
            "a refused certificate waits 1-2 s between attempts: {gap:?}"
        );
    }
    assert!(!task.is_finished());
    stop.cancel();
    within("the connector to stop", task).await.unwrap();
}
