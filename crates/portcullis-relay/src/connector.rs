//! Site connectors: the connections plants' connectors dial out to the relay (ALPN
//! `portcullis-connector/1`), from their `ConnectorHello` to their end. The live ones are in
//! `connectors.rs`.
//!
//! A connector is accepted when its client certificate is exactly the one the broker issued to
//! a site that is not revoked (the SHA-256 recorded at enrollment) and its `ConnectorHello` names
//! that site. The relay then pings it on the control stream ([`RelayConfig::connector_ping`];
//! the first ping tells the connector it is in) and drops it when it stops answering, when its
//! QUIC connection dies, when a newer connection of the same site replaces it, when its site is
//! revoked or re-enrolled, or at shutdown. Ending a connector cancels every stream it carries.
//!
//! [`RelayConfig::connector_ping`]: crate::RelayConfig::connector_ping

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis_core::audit::{ActorRole, AuditDraft};
use portcullis_core::wire::{Frame, FrameDecoder, RefusalCode, VERSION};
use portcullis_store::ConnectorPresence;
use quinn::{Connection, RecvStream, SendStream, VarInt};
use rand::RngCore;
use tokio::time::{Instant, timeout_at};

use crate::Shared;
use crate::conn::{CLOSE_ENDED, CLOSE_PROTOCOL, client_thumbprint};
use crate::connectors::{ConnectorEnd, LiveConnector};
use portcullis_net::frames::{read_frame, write_frame};

/// A refused connector, and the site it claimed when it sent a `ConnectorHello`. Always audited
/// when the certificate is one the broker issued (a revoked site still trying).
type Refusal = crate::refusal::Refusal<Option<String>>;

/// Serves one connector connection from its `ConnectorHello` to its end.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    conn: Connection,
    source: SocketAddr,
    deadline: Instant,
) {
    let Some(thumb) = client_thumbprint(&conn) else {
        conn.close(
            VarInt::from_u32(CLOSE_PROTOCOL),
            b"client certificate required",
        );
        return;
    };
    let hello = timeout_at(deadline, async {
        let (send, recv) = conn.accept_bi().await.ok()?;
        Some((send, recv))
    })
    .await;
    let Ok(Some((mut send, mut recv))) = hello else {
        conn.close(
            VarInt::from_u32(CLOSE_PROTOCOL),
            b"no ConnectorHello in time",
        );
        return;
    };
    let mut dec = FrameDecoder::new();
    let frame = match timeout_at(deadline, read_frame(&mut recv, &mut dec)).await {
        Ok(Ok(Some(f))) => f,
        _ => {
            let r = Refusal::new(RefusalCode::BadVersion, "expected a ConnectorHello frame");
            refuse(&shared, &conn, &mut send, source, &thumb, r).await;
            return;
        }
    };
    let site = match check_hello(&shared, frame, &thumb).await {
        Ok(site) => site,
        Err(r) => {
            refuse(&shared, &conn, &mut send, source, &thumb, r).await;
            return;
        }
    };
    let live = Arc::new(LiveConnector::new(connection_id(), site, thumb, conn));
    if let Some(old) = shared.connectors.insert(live.clone()) {
        old.end(ConnectorEnd::Replaced);
    }
    let connected_at = shared.clock.now();
    let presence = ConnectorPresence {
        connection_id: live.id.clone(),
        relay: shared.config.name.clone(),
        source: source.ip().to_string(),
        connected_at,
        last_seen_at: connected_at,
    };
    if let Err(e) = shared.store.connector_online(&live.site, &presence).await {
        tracing::warn!("cannot record site {} as online: {e}", live.site);
    }
    shared
        .auditor
        .event(
            draft(&live, "relay.connector.connect")
                .source(source.ip().to_string())
                .details(serde_json::json!({
                    "connection": live.id, "relay": shared.config.name,
                    "fingerprint": live.fingerprint,
                })),
        )
        .await;
    tracing::info!(
        "site {} connector connected from {source} ({})",
        live.site,
        live.id
    );
    let started = Instant::now();
    control_loop(&shared, &live, send, recv, dec).await;

    let reason = live.end_reason().unwrap_or(ConnectorEnd::Lost);
    live.cancel.cancel();
    shared.connectors.remove(&live);
    live.conn
        .close(VarInt::from_u32(CLOSE_ENDED), reason.as_str().as_bytes());
    if let Err(e) = shared.store.connector_offline(&live.site, &live.id).await {
        tracing::warn!("cannot record site {} as offline: {e}", live.site);
    }
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    shared
        .auditor
        .event(
            draft(&live, "relay.connector.disconnect").details(serde_json::json!({
                "connection": live.id, "reason": reason.as_str(), "duration_ms": duration_ms,
                "streams": live.streams.load(Ordering::Relaxed),
            })),
        )
        .await;
    tracing::info!(
        "site {} connector {} ended: {}",
        live.site,
        live.id,
        reason.as_str()
    );
}

fn draft(c: &LiveConnector, action: &str) -> AuditDraft {
    AuditDraft::new(format!("site:{}", c.site), ActorRole::System, action)
        .target(format!("site:{}", c.site))
}

/// Checks the `ConnectorHello` against the site's record; returns the site.
async fn check_hello(shared: &Shared, frame: Frame, thumb: &str) -> Result<String, Refusal> {
    let Frame::ConnectorHello { version, site } = frame else {
        return Err(Refusal::new(
            RefusalCode::BadVersion,
            "the first frame must be ConnectorHello",
        ));
    };
    if version != VERSION {
        return Err(Refusal::new(
            RefusalCode::BadVersion,
            format!("protocol version {version} is not supported; this relay speaks {VERSION}"),
        ));
    }
    let claimed = |r: Refusal| Refusal {
        who: Some(site.clone()),
        ..r
    };
    let record = match shared.store.site(&site).await {
        Ok(r) => r,
        Err(e) => {
            shared.auditor.mark_unhealthy();
            tracing::error!("cannot read site {site:?}: {e}");
            return Err(claimed(Refusal::new(
                RefusalCode::AuditUnavailable,
                "the broker's database is unavailable; the connector retries",
            )));
        }
    };
    // Whether the site exists is not told to a certificate the broker did not issue for it.
    let Some(record) = record.filter(|r| r.cert_fingerprint.as_deref() == Some(thumb)) else {
        return Err(claimed(Refusal::new(
            RefusalCode::BadToken,
            "this certificate is not the one enrolled for the site; enroll the connector again",
        )));
    };
    if record.revoked_at.is_some() {
        return Err(Refusal {
            always_audited: true,
            ..claimed(Refusal::new(
                RefusalCode::GrantInactive,
                format!("site {site} was revoked by an admin"),
            ))
        });
    }
    Ok(record.name)
}

async fn refuse(
    shared: &Shared,
    conn: &Connection,
    send: &mut SendStream,
    source: SocketAddr,
    thumb: &str,
    r: Refusal,
) {
    if let Some(suppressed_before) = r.audit_budget(shared) {
        let mut details = serde_json::json!({
            "code": r.code.as_str(), "reason": r.detail, "site": r.who, "fingerprint": thumb,
        });
        if suppressed_before > 0 {
            details["suppressed_before"] = suppressed_before.into();
        }
        let target = r
            .who
            .as_ref()
            .map_or("relay".to_owned(), |s| format!("site:{s}"));
        let draft = AuditDraft::new("unknown", ActorRole::System, "relay.connector.refuse")
            .source(source.ip().to_string())
            .target(target)
            .details(details);
        shared.auditor.event(draft).await;
    }
    tracing::info!(
        "refused a connector from {source} ({}): {}",
        r.code.as_str(),
        r.message
    );
    r.tell_and_close(conn, send).await;
}

/// Pings the connector and answers its pings until the connection ends for any reason.
async fn control_loop(
    shared: &Shared,
    live: &LiveConnector,
    mut send: SendStream,
    mut recv: RecvStream,
    mut dec: FrameDecoder,
) {
    let config = &shared.config;
    // The first tick is immediate: the connector's sign that it was accepted.
    let mut ping = tokio::time::interval(config.connector_ping);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut nonce = rand::rngs::OsRng.next_u64();
    let mut last_pong = Instant::now();
    let mut last_seen_written = Instant::now();
    while live.end_reason().is_none() {
        tokio::select! {
            () = live.cancel.cancelled() => {}
            _ = live.conn.closed() => live.end(ConnectorEnd::Lost),
            _ = ping.tick() => {
                if last_pong.elapsed() > config.connector_timeout {
                    live.end(ConnectorEnd::Unresponsive);
                } else {
                    nonce = nonce.wrapping_add(1);
                    if write_frame(&mut send, &Frame::Ping { nonce }).await.is_err() {
                        live.end(ConnectorEnd::Lost);
                    }
                }
            }
            f = read_frame(&mut recv, &mut dec) => match f {
                Ok(Some(Frame::Pong { .. })) => {
                    last_pong = Instant::now();
                    if last_seen_written.elapsed() >= config.connector_seen_every {
                        last_seen_written = last_pong;
                        let now = shared.clock.now();
                        if let Err(e) = shared.store.connector_seen(&live.site, &live.id, now).await {
                            tracing::warn!("cannot record site {} as seen: {e}", live.site);
                        }
                    }
                }
                Ok(Some(Frame::Ping { nonce })) => {
                    if write_frame(&mut send, &Frame::Pong { nonce }).await.is_err() {
                        live.end(ConnectorEnd::Lost);
                    }
                }
                Ok(Some(other)) => {
                    tracing::warn!(
                        "site {} connector sent {} on its control stream; dropping it",
                        live.site,
                        other.name()
                    );
                    live.end(ConnectorEnd::Unresponsive);
                }
                Ok(None) | Err(_) => live.end(ConnectorEnd::Lost),
            },
        }
    }
}

fn connection_id() -> String {
    let mut b = [0u8; 9];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!("cc_{}", URL_SAFE_NO_PAD.encode(b))
}
