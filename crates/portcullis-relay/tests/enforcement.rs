//! The relay over real QUIC on loopback, against a real store and real TCP devices: every way a
//! handshake or stream is refused, and every way a live session is cut, with what the device
//! side and the audit log see. The broker's wall clock is a `ManualClock`; session timers run
//! on tokio's monotonic clock from what that clock said at the handshake.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

#[tokio::test]
async fn a_granted_stream_echoes_and_the_session_end_is_audited_with_bytes() {
    let w = world(RelayConfig::default()).await;
    let g = w.grant(-60, 3600).await;
    let c = w.client(g);
    let (conn, _cs, _cr, _d, welcome) = w.hello(&c).await;
    let Frame::Welcome {
        targets,
        remaining_ms,
        grant_id,
        ..
    } = welcome
    else {
        panic!("{welcome:?}")
    };
    assert_eq!(grant_id.to_string(), g.to_string());
    assert_eq!(remaining_ms, 3600 * 1000);
    let ports: Vec<u16> = targets.iter().map(|t| t.port).collect();
    assert!(ports.contains(&w.port()) && ports.contains(&1));
    let (f, mut send, mut recv) = open(&conn, "plc-7", w.port()).await;
    assert_eq!(f, Frame::Opened);
    send.write_all(b"hello device").await.unwrap();
    send.finish().unwrap();
    let echoed = recv.read_to_end(1 << 20).await.unwrap();
    assert_eq!(echoed, b"hello device");
    assert_eq!(w.relay.metrics().sessions_active(), 1);
    conn.close(0u32.into(), b"done");
    // The relay notices the client left and writes the end.
    let end = w.wait_audit("relay.session.end", 1).await.remove(0);
    let d = &end["details"];
    assert_eq!(d["reason"], "client_closed");
    assert_eq!(d["bytes_up"], 12);
    assert_eq!(d["bytes_down"], 12);
    assert_eq!(d["streams"], 1);
    let start = w.audit("relay.session.start").await;
    assert_eq!(start.len(), 1);
    assert_eq!(start[0]["details"]["session"], d["session"]);
}

#[tokio::test]
async fn refused_targets_are_never_dialed_and_are_audited() {
    let w = world(RelayConfig::default()).await;
    let g = w.grant(-60, 3600).await;
    let (conn, ..) = w.hello(&w.client(g)).await;
    for (device, port) in [("plc-7", 80), ("plc-8", w.port()), ("127.0.0.1", w.port())] {
        let (f, ..) = open(&conn, device, port).await;
        assert_eq!(
            refused(&f),
            RefusalCode::TargetNotGranted,
            "{device}:{port}"
        );
    }
    // Granted, but nothing listens: dialed, and the failure is said as such.
    let (f, ..) = open(&conn, "plc-7", 1).await;
    assert_eq!(refused(&f), RefusalCode::DialFailed);
    assert_eq!(w.device.accepted(), 0, "the device never saw a connection");
    let refusals = w.audit("relay.stream.refuse").await;
    assert_eq!(refusals.len(), 4);
    assert_eq!(refusals[0]["details"]["code"], "target_not_granted");
    assert_eq!(w.relay.metrics().refusals(RefusalCode::TargetNotGranted), 3);
}

#[tokio::test]
async fn refusal_audits_are_bounded_and_the_rest_are_counted() {
    let w = world(RelayConfig {
        anonymous_refusal_audits: (2, Duration::from_secs(3600)),
        stream_refusal_audits: (3, Duration::from_secs(3600)),
        ..RelayConfig::default()
    })
    .await;
    let g = w.grant(-60, 3600).await;

    // Anyone with a TLS client can send a token that does not verify: refused every time,
    // audited only up to the budget, counted in the metrics all the same.
    for _ in 0..5 {
        let garbage = Client {
            token: "not.a.token".into(),
            ..w.client(g)
        };
        let (_, _, _, _, f) = w.hello(&garbage).await;
        assert_eq!(refused(&f), RefusalCode::BadToken);
    }
    let anonymous = w.audit("relay.session.refuse").await;
    assert_eq!(anonymous.len(), 2);
    assert_eq!(anonymous[0]["actor"], "unknown");
    assert_eq!(w.relay.metrics().refusals(RefusalCode::BadToken), 5);

    // A vendor's own token that verifies is always audited, whatever the anonymous budget.
    let thief = Client {
        token: w.client(g).token,
        ..w.client(g)
    };
    let (_, _, _, _, f) = w.hello(&thief).await;
    assert_eq!(refused(&f), RefusalCode::BindingMismatch);
    assert_eq!(w.audit("relay.session.refuse").await.len(), 3);

    // Inside a session: five refused streams, three audited, all five in the session's end.
    let (conn, ..) = w.hello(&w.client(g)).await;
    for _ in 0..5 {
        let (f, ..) = open(&conn, "plc-7", 80).await;
        assert_eq!(refused(&f), RefusalCode::TargetNotGranted);
    }
    assert_eq!(w.audit("relay.stream.refuse").await.len(), 3);
    assert_eq!(w.relay.metrics().refusals(RefusalCode::TargetNotGranted), 5);
    conn.close(0u32.into(), b"done");
    let end = w.wait_audit("relay.session.end", 1).await;
    assert_eq!(end[0]["details"]["refused_streams"], 5);
    assert_eq!(w.device.accepted(), 0);
}

#[tokio::test]
async fn tokens_that_do_not_hold_are_refused_and_audited() {
    let w = world(RelayConfig::default()).await;
    let g = w.grant(-60, 3600).await;

    // Bound to another certificate: a stolen token on the thief's own key.
    let victim = w.client(g);
    let thief = Client {
        token: victim.token.clone(),
        ..w.client(g)
    };
    let (_, _, _, _, f) = w.hello(&thief).await;
    assert_eq!(refused(&f), RefusalCode::BindingMismatch);
    let audited = w.audit("relay.session.refuse").await;
    assert_eq!(
        audited.last().unwrap()["details"]["code"],
        "binding_mismatch"
    );

    // Tampered: one character of the payload changed.
    let mut tampered = w.client(g);
    let mut parts: Vec<String> = tampered.token.split('.').map(String::from).collect();
    let flipped = if parts[1].ends_with('A') { 'B' } else { 'A' };
    parts[1].pop();
    parts[1].push(flipped);
    tampered.token = parts.join(".");
    let (_, _, _, _, f) = w.hello(&tampered).await;
    assert_eq!(refused(&f), RefusalCode::BadToken);

    // Wrong audience, and an unknown key.
    let (cert, key) = devca::ephemeral_client_identity("vera").unwrap();
    let thumb = thumbprint(cert.as_ref());
    let other_aud = TokenSigner::new(
        "k1",
        ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng),
        ISSUER,
        "another-relay",
    );
    let token = w.token(&other_aud, g, &thumb);
    let c = Client {
        config: quic::client_config(&w.ca, cert, key, &[wire::ALPN]).unwrap(),
        token,
    };
    let (_, _, _, _, f) = w.hello(&c).await;
    assert_eq!(refused(&f), RefusalCode::BadToken);

    // Expired: minted, then the clock moves past its exp.
    let late = w.client(g);
    w.clock.advance(Duration::from_secs(301));
    let (_, _, _, _, f) = w.hello(&late).await;
    assert_eq!(refused(&f), RefusalCode::TokenExpired);

    // Used twice: the second connection with the same token is refused.
    let once = w.client(g);
    let (_c1, _, _, _, f) = w.hello(&once).await;
    assert!(matches!(f, Frame::Welcome { .. }), "{f:?}");
    let (_, _, _, _, f) = w.hello(&once).await;
    assert_eq!(refused(&f), RefusalCode::BadToken);
    assert_eq!(w.device.accepted(), 0);
}

#[tokio::test]
async fn grants_outside_their_window_or_of_disabled_users_are_refused() {
    let w = world(RelayConfig::default()).await;
    let later = w.grant(600, 3600).await;
    let (_, _, _, _, f) = w.hello(&w.client(later)).await;
    assert_eq!(refused(&f), RefusalCode::NotInWindow);

    let g = w.grant(-60, 3600).await;
    w.store
        .disable_user(&admin(), &Username::parse("vera").unwrap())
        .await
        .unwrap();
    let (_, _, _, _, f) = w.hello(&w.client(g)).await;
    assert_eq!(refused(&f), RefusalCode::GrantInactive);
}

#[tokio::test]
async fn no_client_certificate_or_a_wrong_alpn_fails_the_tls_handshake() {
    let w = world(RelayConfig::default()).await;
    let roots = {
        let mut r = rustls::RootCertStore::empty();
        let pem = std::fs::read(&w.ca).unwrap();
        for c in
            <rustls_pki_types::CertificateDer as rustls_pki_types::pem::PemObject>::pem_slice_iter(
                &pem,
            )
        {
            r.add(c.unwrap()).unwrap();
        }
        r
    };
    // Without a certificate.
    let mut tls = rustls::ClientConfig::builder_with_provider(portcullis_net::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    tls.alpn_protocols = vec![wire::ALPN.as_bytes().to_vec()];
    let config = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap(),
    ));
    let mut ep = Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(config);
    let result = async {
        let conn = ep.connect(w.relay_addr, "127.0.0.1").unwrap().await?;
        // TLS 1.3: the server's verdict on the client certificate may arrive after the
        // client considers the handshake done; any use of the connection then fails.
        let (mut s, mut r) = conn.open_bi().await?;
        s.write_all(b"x")
            .await
            .map_err(|_| quinn::ConnectionError::LocallyClosed)?;
        r.read_chunk(10, true)
            .await
            .map_err(|_| quinn::ConnectionError::LocallyClosed)?
            .ok_or(quinn::ConnectionError::LocallyClosed)?;
        Ok::<_, quinn::ConnectionError>(())
    }
    .await;
    assert!(
        result.is_err(),
        "a connection without a client certificate must fail"
    );

    // A certificate but the wrong ALPN.
    let (cert, key) = devca::ephemeral_client_identity("vera").unwrap();
    let config = quic::client_config_with_roots(roots, cert, key, &["h3"]).unwrap();
    let mut ep = Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(config);
    assert!(
        ep.connect(w.relay_addr, "127.0.0.1")
            .unwrap()
            .await
            .is_err()
    );
}

/// Opens a stream to the echo device, proves it works, and returns it with the time the
/// session's window ends by the relay's countdown.
async fn live_stream(
    w: &World,
    grant: i64,
) -> (
    Connection,
    SendStream,
    RecvStream,
    SendStream,
    RecvStream,
    Instant,
) {
    let (conn, cs, cr, _, welcome) = w.hello(&w.client(grant)).await;
    let Frame::Welcome { remaining_ms, .. } = welcome else {
        panic!("{welcome:?}")
    };
    let ends = Instant::now() + Duration::from_millis(remaining_ms);
    let (f, mut send, mut recv) = open(&conn, "plc-7", w.port()).await;
    assert_eq!(f, Frame::Opened);
    send.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    recv.read_exact(&mut buf).await.unwrap();
    (conn, cs, cr, send, recv, ends)
}

#[tokio::test]
async fn the_window_end_closes_live_streams_on_time_and_tells_the_client() {
    let w = world(RelayConfig::default()).await;
    // The window ends 2 s after the handshake, by the relay's clock.
    let g = w.grant(-60, 2).await;
    let (_conn, _cs, mut cr, _s, _r, ends) = live_stream(&w, g).await;
    let closed = w.device.next_close().await;
    let late = closed.at.saturating_duration_since(ends.into_std());
    let early = ends.into_std().saturating_duration_since(closed.at);
    // `ends` is when the client learnt the time left, one network delay after the relay armed
    // its deadline: the close may come before it by that delay, never by more.
    assert!(
        early < Duration::from_millis(250),
        "closed {early:?} before the end"
    );
    assert!(
        late < Duration::from_secs(1),
        "closed {late:?} after the end"
    );
    let mut dec = FrameDecoder::new();
    let f = read_frame(&mut cr, &mut dec).await.unwrap();
    assert!(
        matches!(
            f,
            Frame::Ending {
                reason: EndReason::WindowEnd,
                ..
            }
        ),
        "{f:?}"
    );
    let end = w.wait_audit("relay.session.end", 1).await.remove(0);
    assert_eq!(end["details"]["reason"], "window_end");
    assert_eq!(end["details"]["bytes_up"], 4);
}

#[tokio::test]
async fn a_warning_comes_before_the_end() {
    let config = RelayConfig {
        warnings: vec![Duration::from_secs(60), Duration::from_secs(1)],
        ..RelayConfig::default()
    };
    let w = world(config).await;
    let g = w.grant(-60, 2).await;
    let (_conn, _cs, mut cr, _s, _r, ends) = live_stream(&w, g).await;
    let mut dec = FrameDecoder::new();
    // Only the 1 s warning is still ahead at the handshake.
    let f = read_frame(&mut cr, &mut dec).await.unwrap();
    let Frame::Warning { remaining_ms } = f else {
        panic!("{f:?}")
    };
    assert!((900..=1000).contains(&remaining_ms), "{remaining_ms}");
    assert!(Instant::now() < ends);
    let f = read_frame(&mut cr, &mut dec).await.unwrap();
    assert!(matches!(f, Frame::Ending { .. }), "{f:?}");
}

#[tokio::test]
async fn revoke_and_user_disable_cut_live_streams_at_once() {
    let w = world(RelayConfig::default()).await;
    for cut in ["revoke", "disable"] {
        let g = w.grant(-60, 3600).await;
        let (_conn, _cs, mut cr, _s, _r, _) = live_stream(&w, g).await;
        let t = Instant::now();
        let expected = if cut == "revoke" {
            w.store
                .revoke_grant(&admin(), &w.sam, g, "job done")
                .await
                .unwrap();
            EndReason::Revoked
        } else {
            w.store
                .disable_user(&admin(), &Username::parse("vera").unwrap())
                .await
                .unwrap();
            EndReason::UserDisabled
        };
        let closed = w.device.next_close().await;
        let took = closed.at.saturating_duration_since(t.into_std());
        assert!(
            took < Duration::from_secs(1),
            "{cut}: device closed after {took:?}"
        );
        assert!(
            closed.reset,
            "{cut}: a cut reaches the device as an RST, not a FIN"
        );
        let mut dec = FrameDecoder::new();
        let f = read_frame(&mut cr, &mut dec).await.unwrap();
        assert!(
            matches!(f, Frame::Ending { reason, .. } if reason == expected),
            "{cut}: {f:?}"
        );
    }
    let ends = w.wait_audit("relay.session.end", 2).await;
    let reasons: Vec<&str> = ends
        .iter()
        .map(|e| e["details"]["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.contains(&"revoked") && reasons.contains(&"user_disabled"),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn a_policy_change_cuts_live_streams() {
    let w = world(RelayConfig::default()).await;
    let g = w.grant(-60, 3600).await;
    let (_conn, _cs, mut cr, _s, _r, _) = live_stream(&w, g).await;
    let mut d = w
        .store
        .device(&DeviceName::parse("plc-7").unwrap())
        .await
        .unwrap()
        .unwrap();
    d.policy.allowed_ports = [Port::new(1).unwrap()].into();
    let t = Instant::now();
    w.store
        .set_device_policy(&admin(), &d.name, &d.policy)
        .await
        .unwrap();
    let closed = w.device.next_close().await;
    assert!(closed.at.saturating_duration_since(t.into_std()) < Duration::from_secs(1));
    let mut dec = FrameDecoder::new();
    let f = read_frame(&mut cr, &mut dec).await.unwrap();
    assert!(
        matches!(
            f,
            Frame::Ending {
                reason: EndReason::PolicyChanged,
                ..
            }
        ),
        "{f:?}"
    );
}

#[tokio::test]
async fn the_connection_limit_and_the_idle_timeout_hold() {
    let config = RelayConfig {
        max_streams_per_grant: 2,
        idle_timeout: Duration::from_millis(500),
        ..RelayConfig::default()
    };
    let w = world(config).await;
    let g = w.grant(-60, 3600).await;
    let (conn, ..) = w.hello(&w.client(g)).await;
    // Each stream's idle clock starts after its `Open` arrives, so after this instant.
    let t = Instant::now();
    let (f1, _s1, _r1) = open(&conn, "plc-7", w.port()).await;
    let (f2, _s2, _r2) = open(&conn, "plc-7", w.port()).await;
    assert_eq!((f1, f2), (Frame::Opened, Frame::Opened));
    let (f3, ..) = open(&conn, "plc-7", w.port()).await;
    assert_eq!(refused(&f3), RefusalCode::ConnectionLimit);
    w.device.wait_open(2).await;
    // Both streams stay silent: each is closed after the idle timeout.
    let first = w.device.next_close().await;
    let second = w.device.next_close().await;
    for c in [first, second] {
        let after = c.at.saturating_duration_since(t.into_std());
        assert!(
            after >= Duration::from_millis(500),
            "closed after {after:?}"
        );
        assert!(after < Duration::from_secs(3), "closed after {after:?}");
    }
    // Once both ends are recorded, the slots are free again.
    w.wait_audit("relay.stream.idle_timeout", 2).await;
    let (f4, ..) = open(&conn, "plc-7", w.port()).await;
    assert_eq!(f4, Frame::Opened);
}

#[tokio::test]
async fn a_restarted_relay_closes_the_sessions_a_crash_left_open() {
    let w = world(RelayConfig::default()).await;
    let g = w.grant(-60, 3600).await;
    let (_conn, ..) = w.hello(&w.client(g)).await;
    // A second relay of the same name starting on the same database is what a restart after
    // `kill -9` looks like to the store: the first never wrote its session's end.
    let other = Relay::new(
        w.store.clone(),
        TokenVerifier::new(ISSUER, AUDIENCE),
        w.clock.clone(),
        RelayConfig::default(),
    );
    assert_eq!(other.close_orphans().await.unwrap(), 1);
    let ends = w.audit("relay.session.end").await;
    assert_eq!(ends.len(), 1);
    assert_eq!(ends[0]["details"]["reason"], "relay_restart");
    assert_eq!(other.close_orphans().await.unwrap(), 0, "closed once");
}
