//! The tunnel against a scripted relay in the same process: a real quinn server with the
//! development CA, speaking the frames of docs/wire-protocol.md, so everything from the TLS
//! handshake to half-close runs for real. The real relay (portcullis-relay) is tested on its own
//! and end to end through the binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Mutex;

use portcullis_core::wire::{self, FrameDecoder};
use quinn::{Endpoint, RecvStream, SendStream};
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use super::*;
use crate::api::RelayTicket;
use portcullis_net::frames::write_frame;

const DEVICE: &str = "plc-7";

/// Tokens `tok-1`, `tok-2`, ... for the relay at `relay`, remembering each certificate
/// thumbprint they were asked for.
struct FakeTokens {
    relay: String,
    relay_ca: Option<String>,
    issued: Arc<Mutex<Vec<(String, String)>>>,
}

impl TokenSource for FakeTokens {
    async fn relay_token(
        &mut self,
        _grant_id: i64,
        cert_sha256: &str,
    ) -> Result<RelayTicket, TokenError> {
        let mut issued = self.issued.lock().unwrap();
        let token = format!("tok-{}", issued.len() + 1);
        issued.push((token.clone(), cert_sha256.to_owned()));
        Ok(RelayTicket {
            token,
            expires_at: portcullis_core::Timestamp::from_unix_micros(0).unwrap(),
            relay: self.relay.clone(),
            relay_ca: self.relay_ca.clone(),
            modes: Default::default(),
        })
    }
}

struct FakeRelay {
    endpoint: Endpoint,
    ca_pem: String,
    issued: Arc<Mutex<Vec<(String, String)>>>,
    _dir: tempfile::TempDir,
}

/// One accepted session, after `Hello`.
struct Accepted {
    conn: Connection,
    control: SendStream,
    _control_recv: RecvStream,
    token: String,
}

impl FakeRelay {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let files =
            portcullis_net::ensure_dev_pki(&dir.path().join("tls"), &["127.0.0.1".into()]).unwrap();
        let (certs, key) = portcullis_net::load_certified_key(&files.cert, &files.key).unwrap();
        let config = portcullis_net::quic::relay_server_config(certs, key, &[wire::ALPN]).unwrap();
        let endpoint = Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
        FakeRelay {
            endpoint,
            ca_pem: std::fs::read_to_string(&files.ca_cert).unwrap(),
            issued: Arc::default(),
            _dir: dir,
        }
    }

    fn tokens(&self) -> FakeTokens {
        FakeTokens {
            relay: self.endpoint.local_addr().unwrap().to_string(),
            relay_ca: None,
            issued: self.issued.clone(),
        }
    }

    fn options(&self, forwards: &[&str]) -> TunnelOptions {
        TunnelOptions {
            grant_id: 7,
            forwards: forwards.iter().map(|f| f.parse().unwrap()).collect(),
            roots: crate::trust::roots_from_pem(&self.ca_pem, "ca").unwrap(),
            broker_host: None,
            congestion: Congestion::default(),
        }
    }

    /// Accepts a connection and its `Hello`, checking the token is bound to the certificate the
    /// client presented (what the real relay checks against the token's `cnf`).
    async fn accept(&self) -> Accepted {
        let conn = self.endpoint.accept().await.unwrap().await.unwrap();
        let (send, mut recv) = conn.accept_bi().await.unwrap();
        let mut dec = FrameDecoder::new();
        let Frame::Hello { version, token } = expect_frame(&mut recv, &mut dec).await.unwrap()
        else {
            panic!("the first frame must be Hello");
        };
        assert_eq!(version, wire::VERSION);
        let certs = conn
            .peer_identity()
            .unwrap()
            .downcast::<Vec<CertificateDer<'static>>>()
            .unwrap();
        let thumb = portcullis_net::sha256_fingerprint(&certs[0]);
        let issued = self.issued.lock().unwrap().clone();
        assert!(
            issued.contains(&(token.as_str().to_owned(), thumb)),
            "the token must be the one minted for this connection's certificate"
        );
        Accepted {
            conn,
            control: send,
            _control_recv: recv,
            token: token.into_string(),
        }
    }
}

impl Accepted {
    async fn welcome(&mut self, ports: &[u16], remaining_ms: u64) {
        let frame = Frame::Welcome {
            session_id: "s-1".into(),
            grant_id: portcullis_core::GrantId::new(7),
            targets: ports
                .iter()
                .map(|&port| WireTarget {
                    device: DEVICE.into(),
                    port,
                })
                .collect(),
            window_end_unix_ms: 1_800_000_000_000,
            remaining_ms,
        };
        write_frame(&mut self.control, &frame).await.unwrap();
    }

    async fn send(&mut self, frame: Frame) {
        write_frame(&mut self.control, &frame).await.unwrap();
    }

    /// Serves data streams: `Refused` for `refuse`, otherwise `Opened` plus a `hi:` banner in
    /// the same write (the client must forward bytes that follow `Opened` in one read), then an
    /// echo until the client finishes, then FIN.
    fn serve_echo(&self, refuse: u16) {
        let conn = self.conn.clone();
        tokio::spawn(async move {
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                tokio::spawn(async move {
                    let mut dec = FrameDecoder::new();
                    let Ok(Frame::Open { device, port }) = expect_frame(&mut recv, &mut dec).await
                    else {
                        return;
                    };
                    assert_eq!(device, DEVICE);
                    if port == refuse {
                        let no = Frame::Refused {
                            code: RefusalCode::TargetNotGranted,
                            message: "not\nyours".into(),
                        };
                        let _ = write_frame(&mut send, &no).await;
                        let _ = send.finish();
                        return;
                    }
                    let mut first = Frame::Opened.to_vec().unwrap();
                    first.extend_from_slice(b"hi:");
                    // Payload the client sent right behind `Open`, before `Opened`.
                    first.extend_from_slice(&dec.into_remainder());
                    send.write_all(&first).await.unwrap();
                    while let Ok(Some(chunk)) = recv.read_chunk(64 * 1024, true).await {
                        if send.write_all(&chunk.bytes).await.is_err() {
                            return;
                        }
                    }
                    let _ = send.finish();
                });
            }
        });
    }
}

struct Running {
    events: mpsc::UnboundedReceiver<Event>,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<Result<Outcome, TunnelError>>,
}

fn start(relay: &FakeRelay, forwards: &[&str]) -> Running {
    start_with(relay.options(forwards), relay.tokens())
}

fn start_with(opts: TunnelOptions, mut tokens: FakeTokens) -> Running {
    let (tx, events) = mpsc::unbounded_channel();
    let report: Reporter = Arc::new(move |e: &Event| {
        let _ = tx.send(e.clone());
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(async move {
        run(opts, &mut tokens, report, async move {
            let _ = stopped.await;
        })
        .await
    });
    Running {
        events,
        stop: Some(stop),
        done,
    }
}

impl Running {
    async fn next_event(&mut self) -> Event {
        tokio::time::timeout(Duration::from_secs(10), self.events.recv())
            .await
            .expect("an event within 10 s")
            .expect("the tunnel is running")
    }

    async fn listening(&mut self) -> SocketAddr {
        loop {
            if let Event::Listening { local, .. } = self.next_event().await {
                return local;
            }
        }
    }

    async fn outcome(self) -> Result<Outcome, TunnelError> {
        tokio::time::timeout(Duration::from_secs(10), self.done)
            .await
            .expect("the tunnel ends within 10 s")
            .unwrap()
    }
}

/// Writes `msg` and half-closes while reading everything back.
async fn round_trip(local: SocketAddr, msg: &[u8]) -> Vec<u8> {
    let mut tcp = TcpStream::connect(local).await.unwrap();
    let (mut rx, mut tx) = tcp.split();
    let write = async {
        tx.write_all(msg).await.unwrap();
        tx.shutdown().await.unwrap();
    };
    let mut back = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), rx.read_to_end(&mut back));
    let ((), read) = tokio::join!(write, read);
    read.expect("the echo ends").unwrap();
    back
}

/// The local connection is closed by the client without a byte (a FIN, or a RST when the
/// close raced our own write).
async fn closed_without_data(local: SocketAddr) {
    let mut tcp = TcpStream::connect(local).await.unwrap();
    let mut back = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut back))
        .await
        .expect("closed within 10 s");
    match read {
        Ok(_) => assert!(back.is_empty()),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
    }
}

#[tokio::test]
async fn a_session_carries_bytes_both_ways_with_half_close_and_ends_on_window_end() {
    let relay = FakeRelay::start();
    let mut run = start(&relay, &["127.0.0.1:0:502"]);
    let mut session = relay.accept().await;
    assert_eq!(session.token, "tok-1");
    session.welcome(&[502, 80], 120_000).await;
    session.serve_echo(0);

    let Event::Connected {
        welcome,
        reconnected,
        ..
    } = run.next_event().await
    else {
        panic!("Connected comes first");
    };
    assert!(!reconnected);
    assert_eq!(welcome.remaining, Duration::from_secs(120));
    assert_eq!(
        welcome.window_end.map(|t| t.unix_timestamp()),
        Some(1_800_000_000)
    );
    let local = run.listening().await;
    assert_ne!(local.port(), 0, "the bound port is reported, not 0");

    assert_eq!(round_trip(local, b"ping").await, b"hi:ping");
    // Bigger than one buffer and one flow-control burst, in both directions at once.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let back = round_trip(local, &big).await;
    assert_eq!(&back[..3], b"hi:");
    assert!(back[3..] == big[..], "the echo is byte for byte");

    session
        .send(Frame::Warning {
            remaining_ms: 60_000,
        })
        .await;
    assert_eq!(
        run.next_event().await,
        Event::Warning {
            remaining: Duration::from_secs(60)
        }
    );
    session
        .send(Frame::Ending {
            reason: EndReason::WindowEnd,
            message: "the window is over".into(),
        })
        .await;
    let outcome = run.outcome().await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Ended {
            reason: EndReason::WindowEnd,
            message: "the window is over".into()
        }
    );
    assert_eq!(outcome.exit_code(), 0);
}

#[tokio::test]
async fn a_refused_target_closes_only_that_local_connection() {
    let relay = FakeRelay::start();
    let mut run = start(&relay, &["127.0.0.1:0:502", "127.0.0.1:0:80"]);
    let mut session = relay.accept().await;
    session.welcome(&[502, 80], 120_000).await;
    session.serve_echo(80);
    let first = run.listening().await;
    let second = run.listening().await;

    closed_without_data(second).await;
    let refused = loop {
        if let e @ Event::StreamRefused { .. } = run.next_event().await {
            break e;
        }
    };
    let Event::StreamRefused {
        code,
        message,
        target,
        ..
    } = refused
    else {
        unreachable!()
    };
    assert_eq!(code, RefusalCode::TargetNotGranted);
    assert_eq!(message, "not yours", "relay text is made printable");
    assert_eq!(target.port, 80);
    // The session and the other listener are unaffected.
    assert_eq!(round_trip(first, b"still").await, b"hi:still");

    session
        .send(Frame::Ending {
            reason: EndReason::Revoked,
            message: "revoked by sam".into(),
        })
        .await;
    let outcome = run.outcome().await.unwrap();
    assert_eq!(outcome.exit_code(), 3);
}

#[tokio::test]
async fn a_refused_handshake_is_an_error_with_the_relays_words() {
    let relay = FakeRelay::start();
    let run = start(&relay, &[]);
    let mut session = relay.accept().await;
    session
        .send(Frame::Refused {
            code: RefusalCode::NotInWindow,
            message: "the window has not started".into(),
        })
        .await;
    let e = run.outcome().await.unwrap_err();
    assert!(
        matches!(
            e,
            TunnelError::Refused {
                code: RefusalCode::NotInWindow,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "the relay refused the connection: the window has not started (not_in_window)"
    );
}

#[tokio::test]
async fn a_connection_open_when_the_relay_connection_goes_is_closed_with_the_reason() {
    let relay = FakeRelay::start();
    let mut run = start(&relay, &["127.0.0.1:0:502"]);
    let mut first = relay.accept().await;
    first.welcome(&[502], 120_000).await;
    first.serve_echo(0);
    let local = run.listening().await;
    // A local connection that is open, and has carried bytes, when the relay goes.
    let mut tcp = TcpStream::connect(local).await.unwrap();
    tcp.write_all(b"up").await.unwrap();
    let mut hi = [0u8; 5];
    tcp.read_exact(&mut hi).await.unwrap();
    assert_eq!(&hi, b"hi:up");

    // As a restarted relay does to its old peers: the connection is reset under them.
    first.conn.close(VarInt::from_u32(9), b"gone");
    let mut said = None;
    while said.is_none() {
        match run.next_event().await {
            Event::StreamFailed { detail, .. } => said = Some(detail),
            Event::ConnectionLost { .. } | Event::Retrying { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let said = said.unwrap();
    assert!(
        said.starts_with("the connection to the relay was lost"),
        "{said}"
    );
    assert!(
        said.contains("open it again once `connect` has reconnected"),
        "{said}"
    );
    // And the local end is closed, not left hanging.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the local connection is closed");
}

#[tokio::test]
async fn a_lost_connection_is_replaced_with_a_fresh_token_and_identity_keeping_the_listeners() {
    let relay = FakeRelay::start();
    let mut run = start(&relay, &["127.0.0.1:0:502"]);
    let mut first = relay.accept().await;
    first.welcome(&[502], 120_000).await;
    first.serve_echo(0);
    let local = run.listening().await;
    assert_eq!(round_trip(local, b"one").await, b"hi:one");

    // No `Ending`: the connection just goes (as when the relay's host restarts).
    first.conn.close(VarInt::from_u32(9), b"gone");
    let mut second = relay.accept().await;
    assert_eq!(second.token, "tok-2", "a reconnect never reuses a token");
    second.welcome(&[502], 60_000).await;
    second.serve_echo(0);
    loop {
        match run.next_event().await {
            Event::Connected {
                reconnected: true, ..
            } => break,
            Event::ConnectionLost { .. } | Event::StreamFailed { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let issued = relay.issued.lock().unwrap().clone();
    assert_ne!(issued[0].1, issued[1].1, "a new certificate per connection");
    assert_eq!(round_trip(local, b"two").await, b"hi:two", "same listener");

    run.stop.take().unwrap().send(()).unwrap();
    assert_eq!(run.outcome().await.unwrap(), Outcome::Interrupted);
    // The client said goodbye rather than vanishing.
    let closed = second.conn.closed().await;
    assert!(
        matches!(closed, quinn::ConnectionError::ApplicationClosed(_)),
        "{closed:?}"
    );
}

#[tokio::test]
async fn a_connection_lost_after_the_window_end_is_not_replaced() {
    let relay = FakeRelay::start();
    let mut run = start(&relay, &["127.0.0.1:0:502"]);
    let mut session = relay.accept().await;
    session.welcome(&[502], 200).await;
    run.listening().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    session.conn.close(VarInt::from_u32(9), b"gone");
    let e = run.outcome().await.unwrap_err();
    assert!(matches!(e, TunnelError::WindowOver { .. }), "{e:?}");
    assert_eq!(
        relay.issued.lock().unwrap().len(),
        1,
        "no new token asked for"
    );
}

#[tokio::test]
async fn a_forward_to_a_port_not_granted_fails_before_listening() {
    let relay = FakeRelay::start();
    let mut run = start(&relay, &["127.0.0.1:0:22"]);
    let mut session = relay.accept().await;
    session.welcome(&[502], 120_000).await;
    assert!(matches!(run.next_event().await, Event::Connected { .. }));
    let e = run.outcome().await.unwrap_err().to_string();
    assert_eq!(
        e,
        "-L 127.0.0.1:0:22: port 22 is not granted; this grant allows plc-7:502"
    );
}

#[tokio::test]
async fn a_taken_default_port_falls_back_to_an_ephemeral_one() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = taken.local_addr().unwrap().port();
    let relay = FakeRelay::start();
    let mut run = start(&relay, &[]);
    let mut session = relay.accept().await;
    session.welcome(&[port], 120_000).await;
    session.serve_echo(0);
    let (local, wanted) = loop {
        if let Event::Listening { local, wanted, .. } = run.next_event().await {
            break (local, wanted);
        }
    };
    assert_eq!(wanted.port(), port);
    assert_ne!(local.port(), port);
    assert_eq!(round_trip(local, b"x").await, b"hi:x");
    run.stop.take().unwrap().send(()).unwrap();
    assert_eq!(run.outcome().await.unwrap(), Outcome::Interrupted);
}

#[tokio::test]
async fn the_relay_ca_sent_with_the_token_is_trusted_for_that_connection_only() {
    let relay = FakeRelay::start();
    // Logged in against a broker with a public certificate (no --ca): the relay's development
    // CA is not trusted...
    let mut opts = relay.options(&["127.0.0.1:0:502"]);
    opts.roots = crate::trust::roots(None).unwrap();
    let run = start_with(opts, relay.tokens());
    let incoming = relay.endpoint.accept().await.unwrap();
    assert!(incoming.await.is_err(), "the client drops the handshake");
    let e = run.outcome().await.unwrap_err();
    assert!(matches!(e, TunnelError::Unreachable(_)), "{e:?}");
    assert!(e.to_string().contains("certificate"), "{e}");

    // ...unless the broker names it with the token.
    let mut opts = relay.options(&["127.0.0.1:0:502"]);
    opts.roots = crate::trust::roots(None).unwrap();
    let mut tokens = relay.tokens();
    tokens.relay_ca = Some(relay.ca_pem.clone());
    let mut run = start_with(opts, tokens);
    let mut session = relay.accept().await;
    session.welcome(&[502], 120_000).await;
    session.serve_echo(0);
    let local = run.listening().await;
    assert_eq!(round_trip(local, b"ok").await, b"hi:ok");
    run.stop.take().unwrap().send(()).unwrap();
    assert_eq!(run.outcome().await.unwrap(), Outcome::Interrupted);
}

#[test]
fn only_the_window_end_and_a_stop_exit_zero() {
    for &reason in EndReason::ALL {
        let ended = Outcome::Ended {
            reason,
            message: String::new(),
        };
        let want = if reason == EndReason::WindowEnd { 0 } else { 3 };
        assert_eq!(ended.exit_code(), want, "{reason}");
    }
    // A supervisor ending the session takes access away, like a revoke (scripts tell them
    // apart by the reason printed).
    let ended = Outcome::Ended {
        reason: EndReason::EndedBySupervisor,
        message: "ended by sam: wrong PLC".into(),
    };
    assert_eq!(ended.exit_code(), 3);
    assert_eq!(Outcome::Interrupted.exit_code(), 0);
}
