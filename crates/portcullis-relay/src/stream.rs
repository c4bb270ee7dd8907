//! One tunnelled TCP connection: the `Open` check, the dial, and the splice.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use portcullis_core::audit::{ActorRole, AuditDraft};
use portcullis_core::wire::{Frame, FrameDecoder, RefusalCode};
use portcullis_net::quic::read_tcp_chunk;
use quinn::{RecvStream, SendStream, VarInt};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep_until, timeout};

use crate::Shared;
use crate::frames::{read_frame, write_frame};
use crate::registry::{LiveSession, StreamSlot};

/// Bytes read from the device per write to the QUIC stream.
const CHUNK: usize = 64 * 1024;
/// QUIC stream error code sent when the relay cuts a stream.
const CUT: u32 = 1;

pub(crate) async fn handle(
    shared: Arc<Shared>,
    s: Arc<LiveSession>,
    mut send: SendStream,
    mut recv: RecvStream,
) {
    let cancel = s.cancel.child_token();
    let mut dec = FrameDecoder::new();
    let open = tokio::select! {
        () = cancel.cancelled() => return,
        f = timeout(shared.config.handshake_timeout, read_frame(&mut recv, &mut dec)) => f,
    };
    let (device, port) = match open {
        Ok(Ok(Some(Frame::Open { device, port }))) => (device, port),
        _ => {
            let _ = recv.stop(VarInt::from_u32(CUT));
            refuse(&mut send, RefusalCode::Internal, "expected an Open frame").await;
            return;
        }
    };
    let refusal = if s.end_reason().is_some() || shared.clock.now() >= s.grant.window_end {
        Some((RefusalCode::NotInWindow, "the grant's window has ended"))
    } else if device != s.grant.device || !s.grant.ports.iter().any(|p| p.get() == port) {
        Some((
            RefusalCode::TargetNotGranted,
            "this device and port are not part of the grant",
        ))
    } else if !shared.auditor.healthy() {
        Some((
            RefusalCode::AuditUnavailable,
            "the broker cannot record new connections right now; try again shortly",
        ))
    } else {
        None
    };
    if let Some((code, message)) = refusal {
        audit_refusal(&shared, &s, &device, port, code).await;
        refuse(&mut send, code, message).await;
        return;
    }
    if !shared
        .registry
        .acquire_stream(s.grant.id, shared.config.max_streams_per_grant)
    {
        let code = RefusalCode::ConnectionLimit;
        audit_refusal(&shared, &s, &device, port, code).await;
        let msg = format!(
            "the grant already has {} open connections, its limit",
            shared.config.max_streams_per_grant
        );
        refuse(&mut send, code, &msg).await;
        return;
    }
    let slot = StreamSlot {
        registry: shared.registry.clone(),
        grant: s.grant.id,
    };
    // The address comes from the inventory, read with the grant; never from the client.
    let dial = tokio::select! {
        () = cancel.cancelled() => return,
        d = timeout(shared.config.dial_timeout, TcpStream::connect((s.grant.address.as_str(), port))) => d,
    };
    let mut tcp = match dial {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            tracing::info!("dial {}:{port} failed: {e}", s.grant.address);
            let code = RefusalCode::DialFailed;
            audit_refusal(&shared, &s, &device, port, code).await;
            refuse(&mut send, code, "the device refused the connection").await;
            return;
        }
        Err(_) => {
            let code = RefusalCode::DialTimeout;
            audit_refusal(&shared, &s, &device, port, code).await;
            refuse(&mut send, code, "the device did not answer in time").await;
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    if write_frame(&mut send, &Frame::Opened).await.is_err() {
        return;
    }
    shared
        .metrics
        .streams_active
        .fetch_add(1, Ordering::Relaxed);
    shared.metrics.streams_total.fetch_add(1, Ordering::Relaxed);
    s.streams.fetch_add(1, Ordering::Relaxed);
    let leftover = dec.into_remainder();
    let idle = shared.config.idle_timeout;
    let activity = Activity::new();
    let outcome = tokio::select! {
        () = cancel.cancelled() => Outcome::Cut,
        () = activity.idle_for(idle) => Outcome::Idle,
        r = splice(&mut send, &mut recv, &mut tcp, leftover, &s, &shared, &activity) => r,
    };
    shared
        .metrics
        .streams_active
        .fetch_sub(1, Ordering::Relaxed);
    drop(slot);
    match outcome {
        Outcome::Done => {}
        Outcome::Cut | Outcome::Idle | Outcome::Failed => {
            // Close the device side first: it must see the connection end now.
            drop(tcp);
            let _ = send.reset(VarInt::from_u32(CUT));
            let _ = recv.stop(VarInt::from_u32(CUT));
        }
    }
    if outcome == Outcome::Idle {
        let draft = AuditDraft::new("relay", ActorRole::System, "relay.stream.idle_timeout")
            .target(format!("device:{device}:{port}"))
            .grant(s.grant.id)
            .details(serde_json::json!({ "session": s.id, "idle_secs": idle.as_secs() }));
        shared.auditor.event(draft).await;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Both directions finished (each side closed its half).
    Done,
    /// The session ended.
    Cut,
    /// No bytes for the idle timeout.
    Idle,
    /// A reset or IO error on either side.
    Failed,
}

/// Copies both ways until both directions are finished, passing half-closes along: the
/// client's FIN shuts down the device socket's write side, the device's FIN finishes the QUIC
/// stream.
async fn splice(
    send: &mut SendStream,
    recv: &mut RecvStream,
    tcp: &mut TcpStream,
    leftover: Vec<u8>,
    s: &LiveSession,
    shared: &Shared,
    activity: &Activity,
) -> Outcome {
    let (rd, mut wr) = tcp.split();
    let up = async {
        if !leftover.is_empty() {
            wr.write_all(&leftover).await.map_err(drop)?;
            count(
                activity,
                &s.bytes_up,
                &shared.metrics.bytes_up,
                leftover.len(),
            );
        }
        while let Some(chunk) = recv.read_chunk(CHUNK, true).await.map_err(drop)? {
            wr.write_all(&chunk.bytes).await.map_err(drop)?;
            count(
                activity,
                &s.bytes_up,
                &shared.metrics.bytes_up,
                chunk.bytes.len(),
            );
        }
        wr.shutdown().await.map_err(drop)
    };
    let down = async {
        let mut buf = BytesMut::new();
        while let Some(chunk) = read_tcp_chunk(&rd, &mut buf, CHUNK).await.map_err(drop)? {
            let n = chunk.len();
            send.write_chunk(chunk).await.map_err(drop)?;
            count(activity, &s.bytes_down, &shared.metrics.bytes_down, n);
        }
        send.finish().map_err(drop)
    };
    match tokio::try_join!(up, down) {
        Ok(_) => Outcome::Done,
        Err(()) => Outcome::Failed,
    }
}

fn count(activity: &Activity, session: &AtomicU64, total: &AtomicU64, n: usize) {
    let n = n as u64;
    session.fetch_add(n, Ordering::Relaxed);
    total.fetch_add(n, Ordering::Relaxed);
    activity.touch();
}

/// When a stream last moved a byte, either way (monotonic).
#[derive(Debug)]
struct Activity {
    start: Instant,
    /// Milliseconds after `start`.
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Completes once no byte has moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            sleep_until(self.last() + idle).await;
            if self.last() + idle <= Instant::now() {
                return;
            }
        }
    }
}

async fn refuse(send: &mut SendStream, code: RefusalCode, message: &str) {
    let frame = Frame::Refused {
        code,
        message: message.to_owned(),
    };
    if write_frame(send, &frame).await.is_ok() {
        let _ = send.finish();
    }
}

async fn audit_refusal(
    shared: &Shared,
    s: &LiveSession,
    device: &str,
    port: u16,
    code: RefusalCode,
) {
    shared.metrics.refused(code);
    s.refused.fetch_add(1, Ordering::Relaxed);
    // Bounded per session: a vendor looping over closed ports must not flood the log. The
    // session's end event has the total.
    let Some(suppressed_before) = s.refusal_audits.take() else {
        return;
    };
    // The device name is the client's text: kept as data in the details, not as the target.
    let mut details = serde_json::json!({
        "session": s.id, "code": code.as_str(), "device": device, "port": port,
    });
    if suppressed_before > 0 {
        details["suppressed_before"] = suppressed_before.into();
    }
    let draft = AuditDraft::new(
        s.grant.vendor.clone(),
        ActorRole::Vendor,
        "relay.stream.refuse",
    )
    .target(format!("device:{}", s.grant.device))
    .grant(s.grant.id)
    .details(details);
    shared.auditor.event(draft).await;
}
