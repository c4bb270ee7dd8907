//! Site connectors against the real relay over loopback QUIC: which connections are accepted,
//! how a stream for a device behind a site travels through its connector (and only through
//! it), and what a refusal, a lost connector or a revoked site does to the vendor's streams and
//! the audit log. The connector here is a small fake speaking the wire protocol; the real one is
//! tested in `portcullis-connector` and end to end across network namespaces in `tests/`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use portcullis_core::SiteName;
use tokio::sync::mpsc;

const SITE: &str = "plant-2";

/// What the fake connector does with a `Dial`.
#[derive(Debug, Clone)]
enum Answer {
    /// Dial the host and port it was told, and splice.
    Splice,
    Refuse(RefusalCode, &'static str),
}

/// A `Dial` the fake connector received.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Dialed {
    session_id: String,
    device: String,
    host: String,
    port: u16,
}

struct FakeConnector {
    conn: Connection,
    dials: mpsc::UnboundedReceiver<Dialed>,
}

/// A client identity and the site it is enrolled for.
struct Identity {
    cert: rustls::pki_types::CertificateDer<'static>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
}

impl Identity {
    fn new() -> Self {
        let (cert, key) = devca::ephemeral_client_identity(SITE).unwrap();
        Self { cert, key }
    }

    fn thumb(&self) -> String {
        thumbprint(self.cert.as_ref())
    }
}

fn site() -> SiteName {
    SiteName::parse(SITE).unwrap()
}

/// Registers the site and enrolls `id`'s certificate for it.
async fn enroll(w: &World, id: &Identity) {
    let token = match w.store.add_site(&admin(), &site()).await {
        Ok((_, token)) => token,
        Err(_) => w.store.new_site_token(&admin(), &site()).await.unwrap(),
    };
    w.store
        .enroll_site(&token.token, &id.thumb(), at(365 * 86400), None)
        .await
        .unwrap();
}

/// Connects as a connector and says hello; returns the relay's first answer on the control
/// stream with the connection.
async fn hello(w: &World, id: &Identity) -> (Connection, SendStream, RecvStream, Frame) {
    let config = quic::client_config(
        &w.ca,
        id.cert.clone(),
        id.key.clone_key(),
        &[wire::CONNECTOR_ALPN],
    )
    .unwrap();
    let mut ep = Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(config);
    let conn = ep
        .connect(w.relay_addr, "127.0.0.1")
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let hello = Frame::ConnectorHello {
        version: wire::VERSION,
        site: SITE.into(),
    };
    send.write_all(&hello.to_vec().unwrap()).await.unwrap();
    let mut dec = FrameDecoder::new();
    let first = read_frame(&mut recv, &mut dec).await.expect("an answer");
    (conn, send, recv, first)
}

/// A connector that is accepted, answers pings, and treats every `Dial` with `answer`.
async fn connector(w: &World, id: &Identity, answer: Answer) -> FakeConnector {
    let (conn, mut send, mut recv, first) = hello(w, id).await;
    assert!(matches!(first, Frame::Ping { .. }), "{first:?}");
    let Frame::Ping { nonce } = first else {
        unreachable!()
    };
    tokio::spawn(async move {
        let mut nonce = Some(nonce);
        let mut dec = FrameDecoder::new();
        loop {
            if let Some(n) = nonce.take() {
                let pong = Frame::Pong { nonce: n }.to_vec().unwrap();
                if send.write_all(&pong).await.is_err() {
                    return;
                }
            }
            match read_frame(&mut recv, &mut dec).await {
                Some(Frame::Ping { nonce: n }) => nonce = Some(n),
                _ => return,
            }
        }
    });
    let (tx, dials) = mpsc::unbounded_channel();
    let c = conn.clone();
    tokio::spawn(async move {
        while let Ok((send, recv)) = c.accept_bi().await {
            tokio::spawn(serve_dial(send, recv, answer.clone(), tx.clone()));
        }
    });
    FakeConnector { conn, dials }
}

async fn serve_dial(
    mut send: SendStream,
    mut recv: RecvStream,
    answer: Answer,
    dials: mpsc::UnboundedSender<Dialed>,
) {
    let mut dec = FrameDecoder::new();
    let Some(Frame::Dial {
        session_id,
        device,
        host,
        port,
        ..
    }) = read_frame(&mut recv, &mut dec).await
    else {
        return;
    };
    let _ = dials.send(Dialed {
        session_id,
        device,
        host: host.clone(),
        port,
    });
    match answer {
        Answer::Refuse(code, message) => {
            let f = Frame::Refused {
                code,
                message: message.into(),
            };
            send.write_all(&f.to_vec().unwrap()).await.unwrap();
            let _ = send.finish();
        }
        Answer::Splice => {
            let mut tcp = tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .unwrap();
            send.write_all(&Frame::Opened.to_vec().unwrap())
                .await
                .unwrap();
            let mut quic = tokio::io::join(recv, send);
            // Either side failing (the relay resets the stream) drops the device socket.
            let _ = tokio::io::copy_bidirectional(&mut quic, &mut tcp).await;
        }
    }
}

/// A vendor session for plc-9 (at site plant-2) and its answer to `Open`.
async fn open_behind(w: &World, grant: i64) -> (Connection, String, Frame, SendStream, RecvStream) {
    let (conn, _cs, _cr, _d, welcome) = w.hello(&w.client(grant)).await;
    let Frame::Welcome { session_id, .. } = welcome else {
        panic!("{welcome:?}")
    };
    let (f, send, recv) = open(&conn, "plc-9", w.port()).await;
    (conn, session_id, f, send, recv)
}

async fn echo(send: &mut SendStream, recv: &mut RecvStream, bytes: &[u8]) {
    send.write_all(bytes).await.unwrap();
    let mut buf = vec![0u8; bytes.len()];
    recv.read_exact(&mut buf).await.unwrap();
    assert_eq!(buf, bytes);
}

#[tokio::test]
async fn a_stream_for_a_device_behind_a_site_goes_through_its_connector() {
    let w = world(RelayConfig::default()).await;
    let id = Identity::new();
    enroll(&w, &id).await;
    let mut c = connector(&w, &id, Answer::Splice).await;
    let connect = w.wait_audit("relay.connector.connect", 1).await.remove(0);
    assert_eq!(connect["details"]["fingerprint"], id.thumb());
    let connection = connect["details"]["connection"]
        .as_str()
        .unwrap()
        .to_owned();
    let rec = w.store.site(SITE).await.unwrap().unwrap();
    assert_eq!(
        rec.presence.as_ref().map(|p| p.connection_id.clone()),
        Some(connection.clone())
    );

    let g = w.grant_for("plc-9", -60, 3600).await;
    let (conn, session, f, mut send, mut recv) = open_behind(&w, g).await;
    assert_eq!(f, Frame::Opened);
    // The connector was told the inventory's address, not anything the vendor sent.
    let dialed = c.dials.recv().await.unwrap();
    assert_eq!(
        dialed,
        Dialed {
            session_id: session.clone(),
            device: "plc-9".into(),
            host: "127.0.0.1".into(),
            port: w.port(),
        }
    );
    echo(&mut send, &mut recv, b"through the plant").await;
    send.finish().unwrap();
    assert_eq!(recv.read_to_end(1024).await.unwrap(), b"");
    conn.close(0u32.into(), b"done");

    let start = w.audit("relay.session.start").await.remove(0);
    assert_eq!(start["details"]["site"], SITE);
    let end = w.wait_audit("relay.session.end", 1).await.remove(0);
    assert_eq!(
        end["details"]["connectors"],
        serde_json::json!([connection])
    );
    assert_eq!(end["details"]["bytes_up"], 17);
    assert_eq!(end["details"]["bytes_down"], 17);
}

#[tokio::test]
async fn a_device_of_a_registered_site_is_never_dialed_directly() {
    let w = world(RelayConfig::default()).await;
    // plc-9's site names no registered site yet: the relay dials it itself.
    let g = w.grant_for("plc-9", -60, 3600).await;
    let (_conn, _s, f, _send, _recv) = open_behind(&w, g).await;
    assert_eq!(f, Frame::Opened);
    w.store.add_site(&admin(), &site()).await.unwrap();
    // Registered, no connector: refused, even though the relay could reach the device.
    let accepted = w.device.accepted();
    let (_conn, _s, f, _send, _recv) = open_behind(&w, g).await;
    assert_eq!(refused(&f), RefusalCode::ConnectorOffline);
    let Frame::Refused { message, .. } = &f else {
        unreachable!()
    };
    assert!(message.contains("plant-2"), "{message}");
    assert_eq!(w.device.accepted(), accepted);
    let refusal = w.wait_audit("relay.stream.refuse", 1).await.remove(0);
    assert_eq!(refusal["details"]["code"], "connector_offline");
    assert_eq!(refusal["details"]["site"], SITE);
}

#[tokio::test]
async fn a_connector_refusal_reaches_the_vendor_with_its_message_and_is_audited() {
    let w = world(RelayConfig::default()).await;
    let id = Identity::new();
    enroll(&w, &id).await;
    let message = "the site connector's allowlist does not permit 127.0.0.1:9 (device plc-9)";
    let _c = connector(
        &w,
        &id,
        Answer::Refuse(RefusalCode::ConnectorRefused, message),
    )
    .await;
    let g = w.grant_for("plc-9", -60, 3600).await;
    let (_conn, _s, f, _send, _recv) = open_behind(&w, g).await;
    assert_eq!(
        f,
        Frame::Refused {
            code: RefusalCode::ConnectorRefused,
            message: message.into()
        }
    );
    let refusal = w.wait_audit("relay.stream.refuse", 1).await.remove(0);
    assert_eq!(refusal["details"]["code"], "connector_refused");
    assert_eq!(refusal["details"]["site"], SITE);
    assert_eq!(refusal["grant"], g);
}

#[tokio::test]
async fn losing_the_connector_cuts_its_streams_which_are_audited_and_never_resumed() {
    let w = world(RelayConfig::default()).await;
    let id = Identity::new();
    enroll(&w, &id).await;
    let c = connector(&w, &id, Answer::Splice).await;
    let g = w.grant_for("plc-9", -60, 3600).await;
    let (_conn, _s, f, mut send, mut recv) = open_behind(&w, g).await;
    assert_eq!(f, Frame::Opened);
    echo(&mut send, &mut recv, b"before").await;
    let first = w.wait_audit("relay.connector.connect", 1).await.remove(0);

    c.conn.close(0u32.into(), b"link down");
    // The vendor's stream is reset, not left hanging.
    let mut buf = [0u8; 1];
    assert!(recv.read(&mut buf).await.is_err());
    let lost = w
        .wait_audit("relay.stream.connector_lost", 1)
        .await
        .remove(0);
    assert_eq!(lost["details"]["connector"], first["details"]["connection"]);
    assert_eq!(lost["grant"], g);
    let gone = w
        .wait_audit("relay.connector.disconnect", 1)
        .await
        .remove(0);
    assert_eq!(gone["details"]["reason"], "connection_lost");
    assert!(
        w.store
            .site(SITE)
            .await
            .unwrap()
            .unwrap()
            .presence
            .is_none()
    );

    // Back again: the session is still valid, so a new stream works, through the new
    // connection.
    let _c2 = connector(&w, &id, Answer::Splice).await;
    let second = w.wait_audit("relay.connector.connect", 2).await.remove(1);
    assert_ne!(
        second["details"]["connection"],
        first["details"]["connection"]
    );
    let (_conn, _s, f, mut send, mut recv) = open_behind(&w, g).await;
    assert_eq!(f, Frame::Opened);
    echo(&mut send, &mut recv, b"after").await;
}

#[tokio::test]
async fn revoking_a_site_drops_its_connector_at_once_and_refuses_its_certificate() {
    let w = world(RelayConfig::default()).await;
    let id = Identity::new();
    enroll(&w, &id).await;
    let c = connector(&w, &id, Answer::Splice).await;
    w.store.revoke_site(&admin(), &site()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(2), c.conn.closed())
        .await
        .expect("the relay closes a revoked site's connection at once");
    let gone = w
        .wait_audit("relay.connector.disconnect", 1)
        .await
        .remove(0);
    assert_eq!(gone["details"]["reason"], "revoked");

    let (_conn, _s, _r, answer) = hello(&w, &id).await;
    assert_eq!(refused(&answer), RefusalCode::GrantInactive);
    let refusal = w.wait_audit("relay.connector.refuse", 1).await.remove(0);
    assert_eq!(refusal["details"]["site"], SITE);
    assert_eq!(refusal["details"]["fingerprint"], id.thumb());
}

#[tokio::test]
async fn only_the_enrolled_certificate_is_accepted_and_the_newest_connection_wins() {
    let w = world(RelayConfig::default()).await;
    let id = Identity::new();
    // Not enrolled at all, then enrolled: a stranger's certificate is refused either way.
    let (_conn, _s, _r, answer) = hello(&w, &id).await;
    assert_eq!(refused(&answer), RefusalCode::BadToken);
    enroll(&w, &id).await;
    let stranger = Identity::new();
    let (_conn, _s, _r, answer) = hello(&w, &stranger).await;
    assert_eq!(refused(&answer), RefusalCode::BadToken);

    let first = connector(&w, &id, Answer::Splice).await;
    let _second = connector(&w, &id, Answer::Splice).await;
    tokio::time::timeout(Duration::from_secs(2), first.conn.closed())
        .await
        .expect("the older connection is closed");
    let gone = w
        .wait_audit("relay.connector.disconnect", 1)
        .await
        .remove(0);
    assert_eq!(gone["details"]["reason"], "replaced");
    // The replaced connection's end did not mark the site offline.
    let rec = w.store.site(SITE).await.unwrap().unwrap();
    let connects = w.audit("relay.connector.connect").await;
    assert_eq!(
        rec.presence.map(|p| p.connection_id),
        connects[1]["details"]["connection"]
            .as_str()
            .map(str::to_owned)
    );

    // Re-enrolling the site with a new key drops the connection holding the old certificate.
    let replacement = Identity::new();
    enroll(&w, &replacement).await;
    w.wait_audit("relay.connector.disconnect", 2).await;
    let _third = connector(&w, &replacement, Answer::Splice).await;
}

#[tokio::test]
async fn the_window_end_closes_a_stream_through_a_connector_end_to_end() {
    let w = world(RelayConfig::default()).await;
    let id = Identity::new();
    enroll(&w, &id).await;
    let _c = connector(&w, &id, Answer::Splice).await;
    let g = w.grant_for("plc-9", -60, 2).await;
    let (_conn, _s, f, mut send, mut recv) = open_behind(&w, g).await;
    assert_eq!(f, Frame::Opened);
    echo(&mut send, &mut recv, b"ping").await;
    // The relay resets the connector's stream; the connector drops the device's socket.
    let closed = tokio::time::timeout(Duration::from_secs(5), w.device.next_close())
        .await
        .expect("the device's connection is closed at the window end");
    assert_eq!(closed.bytes_in, 4);
    let end = w.wait_audit("relay.session.end", 1).await.remove(0);
    assert_eq!(end["details"]["reason"], "window_end");
    // Ended by the window, not by the connector: no connector_lost event.
    assert!(w.audit("relay.stream.connector_lost").await.is_empty());
}
