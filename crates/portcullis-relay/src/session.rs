//! One vendor connection: the handshake on the control stream, then the session's life until
//! its window ends, it is cut, or the client goes away. Site connectors' connections (their
//! own ALPN id) are handed to [`connector`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis_auth::token::{RelayClaims, TokenError};
use portcullis_core::audit::{ActorRole, AuditDraft};
use portcullis_core::wire::{
    CONNECTOR_ALPN, EndReason, Frame, FrameDecoder, RefusalCode, VERSION, WireTarget,
};
use portcullis_store::{RelaySessionEnd, RelaySessionStart};
use quinn::{Connection, SendStream, VarInt};
use rand::RngCore;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::task::TaskTracker;

use crate::Shared;
use crate::auditor::StartError;
use crate::conn::{CLOSE_ENDED, CLOSE_PROTOCOL, alpn, client_thumbprint};
use crate::connector;
use crate::grant::{self, LiveGrant};
use crate::registry::LiveSession;
use crate::stream;
use portcullis_net::frames::{read_frame, write_frame};

/// A refused handshake, and who the token said the client was, when it could be read at all.
type Refusal = crate::refusal::Refusal<Option<RelayClaims>>;

#[tracing::instrument(name = "relay_connection", skip_all, fields(source = %incoming.remote_address()))]
pub(crate) async fn handle(shared: Arc<Shared>, incoming: quinn::Incoming) {
    let source = incoming.remote_address();
    let started = Instant::now();
    let limit = shared.config.handshake_timeout;
    // TLS failures (no client certificate, wrong ALPN, bad certificate) end here: the client
    // never got a connection, so there is no session to refuse or audit.
    let conn = match timeout(limit, incoming).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::debug!("handshake from {source} failed: {e}");
            return;
        }
        Err(_) => return,
    };
    if alpn(&conn).as_deref() == Some(CONNECTOR_ALPN.as_bytes()) {
        connector::handle(shared, conn, source, started + limit).await;
        return;
    }
    let Some(thumb) = client_thumbprint(&conn) else {
        conn.close(
            VarInt::from_u32(CLOSE_PROTOCOL),
            b"client certificate required",
        );
        return;
    };
    let left = limit.saturating_sub(started.elapsed());
    let hello = timeout(left, async {
        let (send, mut recv) = conn.accept_bi().await.ok()?;
        let mut dec = FrameDecoder::new();
        let frame = read_frame(&mut recv, &mut dec).await;
        Some((send, frame))
    })
    .await;
    let (mut control, frame) = match hello {
        Ok(Some((send, Ok(Some(frame))))) => (send, frame),
        Ok(Some((mut send, Ok(None) | Err(_)))) => {
            let r = Refusal::new(RefusalCode::BadVersion, "expected a Hello frame");
            refuse(&shared, &conn, &mut send, source, r).await;
            return;
        }
        _ => {
            conn.close(VarInt::from_u32(CLOSE_PROTOCOL), b"no Hello in time");
            return;
        }
    };
    let (live, claims) = match check_hello(&shared, frame, &thumb).await {
        Ok(ok) => ok,
        Err(r) => {
            refuse(&shared, &conn, &mut control, source, r).await;
            return;
        }
    };
    let session = Arc::new(LiveSession::new(
        session_id(),
        live,
        shared.clock.now(),
        claims.iat,
        shared.config.stream_refusal_audits,
    ));
    let start = RelaySessionStart {
        id: session.id.clone(),
        relay: shared.config.name.clone(),
        grant: session.grant.id,
        username: claims.sub.to_string(),
        device: session.grant.device.clone(),
        jti: claims.jti.clone(),
        cnf: thumb.clone(),
        source: source.ip().to_string(),
        targets: targets(&session.grant)
            .iter()
            .map(|t| format!("{}:{}", t.device, t.port))
            .collect(),
        window_end: session.grant.window_end,
        site: session.grant.site.clone(),
    };
    if let Err(e) = shared.auditor.session_start(&start).await {
        let r = match e {
            StartError::Reused => Refusal {
                who: Some(claims),
                ..Refusal::new(
                    RefusalCode::BadToken,
                    "this relay token was already used; the client fetches a fresh one",
                )
            },
            StartError::Unavailable(e) => Refusal {
                detail: format!("audit log unavailable: {e}"),
                who: Some(claims),
                ..Refusal::new(
                    RefusalCode::AuditUnavailable,
                    "the broker cannot record the session right now, so it is not started; try again shortly",
                )
            },
        };
        refuse(&shared, &conn, &mut control, source, r).await;
        return;
    }
    run(shared, conn, control, session).await;
}

/// Checks the `Hello`: version, token (offline), binding, and the grant's live state.
async fn check_hello(
    shared: &Shared,
    frame: Frame,
    thumb: &str,
) -> Result<(LiveGrant, RelayClaims), Refusal> {
    let Frame::Hello { version, token } = frame else {
        return Err(Refusal::new(
            RefusalCode::BadVersion,
            "the first frame must be Hello",
        ));
    };
    if version != VERSION {
        return Err(Refusal::new(
            RefusalCode::BadVersion,
            format!("protocol version {version} is not supported; this relay speaks {VERSION}"),
        ));
    }
    let now = shared.clock.now();
    let claims = shared
        .verifier
        .verify(token.as_str(), now, thumb)
        .map_err(|e| {
            let code = match e {
                TokenError::BindingMismatch => RefusalCode::BindingMismatch,
                TokenError::Expired | TokenError::NotYetValid => RefusalCode::TokenExpired,
                _ => RefusalCode::BadToken,
            };
            let mut r = Refusal::new(code, e.to_string());
            // The claims of a token that failed verification are not trusted, but a mismatch
            // is worth naming: which certificate presented whose token.
            if code == RefusalCode::BindingMismatch {
                r.detail = format!("{e}; presented certificate {thumb}");
            }
            r
        })?;
    // A wall clock stepped against the monotonic clock makes every window check doubtful:
    // nothing new starts until the clocks agree again or an admin acknowledges (issue 12).
    if let Some(step) = shared.store.clock_anomaly() {
        return Err(Refusal {
            detail: format!(
                "clock anomaly: the wall clock stepped {} ms against the monotonic clock \
                 (tolerance {} ms)",
                step.step_ms, step.tolerance_ms
            ),
            who: Some(claims),
            ..Refusal::new(
                RefusalCode::ClockAnomaly,
                "the broker's clock was stepped, so no new session starts until the clocks \
                 agree again or an admin confirms the time (`portcullis admin clock ack`)",
            )
        });
    }
    let live = match grant::check(&shared.store, claims.grant, now).await {
        Ok(Ok(live)) => live,
        Ok(Err(dead)) => {
            let (code, msg) = dead.refusal();
            return Err(Refusal {
                who: Some(claims),
                ..Refusal::new(code, msg)
            });
        }
        Err(e) => {
            shared.auditor.mark_unhealthy();
            return Err(Refusal {
                detail: format!("store unavailable: {e}"),
                who: Some(claims),
                ..Refusal::new(
                    RefusalCode::AuditUnavailable,
                    "the broker's database is unavailable; try again shortly",
                )
            });
        }
    };
    if live.vendor != claims.sub {
        return Err(Refusal {
            who: Some(claims),
            ..Refusal::new(
                RefusalCode::BadToken,
                "the token's user does not own the grant",
            )
        });
    }
    if live.token_revoked(claims.iat) {
        return Err(Refusal {
            who: Some(claims),
            ..Refusal::new(
                RefusalCode::SessionRevoked,
                "this token was issued before you logged out (or your account was reset); \
                 log in again with `portcullis login`",
            )
        });
    }
    Ok((live, claims))
}

/// Audits the refusal, tells the client, and closes the connection once the client has read
/// the answer (or after a second).
async fn refuse(
    shared: &Shared,
    conn: &Connection,
    send: &mut SendStream,
    source: SocketAddr,
    mut r: Refusal,
) {
    // A token that verified names who is refused, and a genuine token on the wrong key is a
    // theft to investigate: both always audited. Anything else: bounded.
    r.always_audited |= r.who.is_some() || r.code == RefusalCode::BindingMismatch;
    if let Some(suppressed_before) = r.audit_budget(shared) {
        let (actor, role) = match &r.who {
            Some(c) => (c.sub.to_string(), ActorRole::Vendor),
            None => ("unknown".to_owned(), ActorRole::System),
        };
        let mut details = serde_json::json!({
            "code": r.code.as_str(), "reason": r.detail,
            "jti": r.who.as_ref().map(|c| c.jti.clone()),
        });
        if suppressed_before > 0 {
            details["suppressed_before"] = suppressed_before.into();
        }
        let mut draft = AuditDraft::new(actor, role, "relay.session.refuse")
            .source(source.ip().to_string())
            .target("relay")
            .details(details);
        if let Some(c) = &r.who {
            draft = draft.grant(c.grant);
        }
        shared.auditor.event(draft).await;
    }
    r.tell_and_close(conn, send).await;
}

/// The session after `Welcome`: accept streams until the session ends, then end everything and
/// audit it.
#[tracing::instrument(
    name = "relay_session",
    skip_all,
    fields(session = %s.id, grant = %s.grant.id, vendor = %s.grant.vendor)
)]
async fn run(shared: Arc<Shared>, conn: Connection, mut control: SendStream, s: Arc<LiveSession>) {
    shared.registry.insert(s.clone());
    shared
        .metrics
        .sessions_active
        .fetch_add(1, Ordering::Relaxed);
    shared
        .metrics
        .sessions_total
        .fetch_add(1, Ordering::Relaxed);
    let remaining = s.grant.remaining(shared.clock.now());
    // From here on the window end is a monotonic deadline: a wall-clock jump cannot extend it.
    let deadline = Instant::now() + remaining;
    let mut warnings: Vec<Instant> = shared
        .config
        .warnings
        .iter()
        .filter(|w| **w < remaining)
        .map(|w| deadline - *w)
        .collect();
    warnings.sort();
    warnings.reverse(); // pop() gives the earliest
    let welcome = Frame::Welcome {
        session_id: s.id.clone(),
        grant_id: s.grant.id,
        targets: targets(&s.grant),
        window_end_unix_ms: s.grant.window_end.unix_micros() / 1000,
        remaining_ms: millis(remaining),
    };
    if write_frame(&mut control, &welcome).await.is_err() {
        s.end(EndReason::ClientClosed);
    }
    let streams = TaskTracker::new();
    let mut window_timer_fired = false;
    while s.end_reason().is_none() {
        let next_warning = warnings.last().copied();
        tokio::select! {
            () = s.cancel.cancelled() => {}
            () = sleep_until(deadline) => {
                window_timer_fired = true;
                s.end(EndReason::WindowEnd);
            }
            () = sleep_until(next_warning.unwrap_or(deadline)), if next_warning.is_some() => {
                warnings.pop();
                let left = deadline.saturating_duration_since(Instant::now());
                let _ = write_frame(&mut control, &Frame::Warning { remaining_ms: millis(left) }).await;
            }
            bi = conn.accept_bi() => match bi {
                Ok((send, recv)) => {
                    streams.spawn(stream::handle(shared.clone(), s.clone(), send, recv));
                }
                Err(_) => s.end(EndReason::ClientClosed),
            },
        }
    }
    let reason = s.end_reason().unwrap_or(EndReason::ClientClosed);
    // Cancels every stream of the session: their device sockets close now.
    s.cancel.cancel();
    if window_timer_fired {
        // The window is over by the monotonic clock: persist the end (issue 12), so a wall
        // clock stepped back cannot make the grant live again. Best effort: the sweep and
        // every later read persist it too once the wall clock passes the end.
        if let Err(e) = shared
            .store
            .persist_end(s.grant.id.get(), portcullis_store::EndObserver::RelayTimer)
            .await
        {
            tracing::warn!("cannot persist the end of grant {} yet: {e}", s.grant.id);
        }
    }
    if reason != EndReason::ClientClosed {
        let ending = Frame::Ending {
            reason,
            message: ending_message(&s, reason),
        };
        if write_frame(&mut control, &ending).await.is_ok() {
            let _ = control.finish();
            let _ = timeout(Duration::from_millis(500), conn.closed()).await;
        }
    }
    conn.close(VarInt::from_u32(CLOSE_ENDED), reason.as_str().as_bytes());
    streams.close();
    streams.wait().await;
    shared.registry.remove(&s.id);
    shared
        .metrics
        .sessions_active
        .fetch_sub(1, Ordering::Relaxed);
    let end = RelaySessionEnd {
        id: s.id.clone(),
        grant: s.grant.id,
        username: s.grant.vendor.to_string(),
        device: s.grant.device.clone(),
        reason: reason.as_str().to_owned(),
        started_at: s.started_at,
        ended_at: shared.clock.now(),
        bytes_up: LiveSession::total(&s.bytes_up),
        bytes_down: LiveSession::total(&s.bytes_down),
        streams: LiveSession::total(&s.streams),
        refused_streams: LiveSession::total(&s.refused),
        modbus: s.modbus.to_json(),
        connectors: s.connectors(),
        ended_by: s.ended_by().cloned(),
    };
    let path = conn.stats().path;
    tracing::debug!(
        session = %s.id,
        mtu = path.current_mtu,
        rtt_us = path.rtt.as_micros(),
        lost_packets = path.lost_packets,
        congestion_events = path.congestion_events,
        "QUIC path at session end"
    );
    shared.auditor.session_end(end).await;
}

/// What the vendor reads after `session ended (<reason>): `.
fn ending_message(s: &LiveSession, reason: EndReason) -> String {
    if reason == EndReason::EndedBySupervisor {
        return s.ended_by().map_or_else(
            || "a supervisor ended this session".to_owned(),
            portcullis_store::EndRequest::message,
        );
    }
    fixed_ending_message(reason).to_owned()
}

fn fixed_ending_message(reason: EndReason) -> &'static str {
    match reason {
        EndReason::WindowEnd => "the approved time window has ended",
        EndReason::Revoked => "a supervisor revoked the grant",
        EndReason::UserDisabled => "your account was disabled",
        EndReason::PolicyChanged => {
            "the device's policy changed; reconnect to get what it allows now"
        }
        EndReason::Shutdown => "the relay is shutting down; reconnect in a moment",
        _ => "the session ended",
    }
}

fn targets(g: &LiveGrant) -> Vec<WireTarget> {
    g.ports
        .iter()
        .map(|p| WireTarget {
            device: g.device.clone(),
            port: p.get(),
        })
        .collect()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn session_id() -> String {
    let mut b = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!("rs_{}", URL_SAFE_NO_PAD.encode(b))
}
