//! One tunnelled TCP connection: the `Open` check, the dial (direct, or through the device's
//! site connector), and the splice.

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
use crate::connectors::ConnectorEnd;
use crate::registry::{LiveSession, StreamSlot};
use crate::via::{self, ConnectorStream};
use portcullis_net::frames::{read_frame, refuse, write_frame};

/// Bytes read from the device per write to the QUIC stream.
const CHUNK: usize = 64 * 1024;
/// QUIC stream error code sent when the relay cuts a stream.
const CUT: u32 = 1;

#[tracing::instrument(name = "relay_stream", skip_all, fields(stream = %send.id()))]
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
    } else if !shared.auditor.ready().await {
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
    let dialed = tokio::select! {
        () = cancel.cancelled() => return,
        d = dial(&shared, &s, &device, port) => d,
    };
    let mut upstream = match dialed {
        Ok(u) => u,
        Err((code, message)) => {
            audit_refusal(&shared, &s, &device, port, code).await;
            refuse(&mut send, code, &message).await;
            return;
        }
    };
    if write_frame(&mut send, &Frame::Opened).await.is_err() {
        return;
    }
    shared
        .metrics
        .streams_active
        .fetch_add(1, Ordering::Relaxed);
    shared.metrics.streams_total.fetch_add(1, Ordering::Relaxed);
    s.streams.fetch_add(1, Ordering::Relaxed);
    let via = match &upstream {
        Upstream::Device(_) => None,
        Upstream::Connector(c) => {
            c.via.streams.fetch_add(1, Ordering::Relaxed);
            s.carried_by(&c.via.id);
            Some(c.via.clone())
        }
    };
    let connector_gone = async {
        match &via {
            Some(c) => c.cancel.cancelled().await,
            None => std::future::pending().await,
        }
    };
    let leftover = dec.into_remainder();
    let idle = shared.config.idle_timeout;
    let activity = Activity::new();
    let counters = Counters {
        s: &s,
        shared: &shared,
        activity: &activity,
    };
    let mut outcome = tokio::select! {
        () = cancel.cancelled() => Outcome::Cut,
        () = connector_gone => Outcome::ConnectorLost,
        () = activity.idle_for(idle) => Outcome::Idle,
        r = upstream.splice(&mut send, &mut recv, leftover, counters) => r,
    };
    // A dead connector connection fails its streams' reads at the moment the connector task
    // learns of it; whichever the stream saw first, the cause is the same.
    if outcome == Outcome::Failed
        && via
            .as_ref()
            .is_some_and(|c| c.cancel.is_cancelled() || c.conn.close_reason().is_some())
    {
        outcome = Outcome::ConnectorLost;
    }
    shared
        .metrics
        .streams_active
        .fetch_sub(1, Ordering::Relaxed);
    drop(slot);
    if outcome != Outcome::Done {
        // Close the device side first: it must see the connection end now.
        upstream.cut();
        let _ = send.reset(VarInt::from_u32(CUT));
        let _ = recv.stop(VarInt::from_u32(CUT));
    }
    let target = format!("device:{device}:{port}");
    match (outcome, &via) {
        (Outcome::Idle, _) => {
            let draft = AuditDraft::new("relay", ActorRole::System, "relay.stream.idle_timeout")
                .target(target)
                .grant(s.grant.id)
                .details(serde_json::json!({ "session": s.id, "idle_secs": idle.as_secs() }));
            shared.auditor.event(draft).await;
        }
        // A connector that ends because the whole relay shuts down is not a lost connector.
        (Outcome::ConnectorLost, Some(c))
            if s.end_reason().is_none() && c.end_reason() != Some(ConnectorEnd::Shutdown) =>
        {
            let reason = c
                .end_reason()
                .map_or("connection_lost", ConnectorEnd::as_str);
            let draft = AuditDraft::new("relay", ActorRole::System, "relay.stream.connector_lost")
                .target(target)
                .grant(s.grant.id)
                .details(serde_json::json!({
                    "session": s.id, "site": c.site, "connector": c.id, "reason": reason,
                }));
            shared.auditor.event(draft).await;
        }
        _ => {}
    }
}

/// Where a stream's bytes go: the device itself, or the site connector in front of it.
#[derive(Debug)]
enum Upstream {
    Device(TcpStream),
    Connector(ConnectorStream),
}

impl Upstream {
    /// Copies both ways until both directions are finished, passing half-closes along.
    async fn splice(
        &mut self,
        send: &mut SendStream,
        recv: &mut RecvStream,
        leftover: Vec<u8>,
        c: Counters<'_>,
    ) -> Outcome {
        let r = match self {
            Upstream::Device(tcp) => splice_tcp(send, recv, tcp, leftover, c).await,
            Upstream::Connector(cs) => splice_quic(send, recv, leftover, cs, c).await,
        };
        match r {
            Ok(()) => Outcome::Done,
            Err(()) => Outcome::Failed,
        }
    }

    /// Ends the upstream side at once (the device, or the connector's stream to it).
    fn cut(self) {
        match self {
            Upstream::Device(tcp) => drop(tcp),
            Upstream::Connector(mut cs) => {
                let _ = cs.send.reset(VarInt::from_u32(CUT));
                let _ = cs.recv.stop(VarInt::from_u32(CUT));
            }
        }
    }
}

/// Opens the upstream for `device:port`: a direct TCP connection to the inventory address, or a
/// `Dial` through the device's site connector.
async fn dial(
    shared: &Shared,
    s: &LiveSession,
    device: &str,
    port: u16,
) -> Result<Upstream, (RefusalCode, String)> {
    let address = s.grant.address.as_str();
    if let Some(site) = &s.grant.site {
        return via::dial(shared, s, site, device, address, port)
            .await
            .map(Upstream::Connector);
    }
    match timeout(
        shared.config.dial_timeout,
        TcpStream::connect((address, port)),
    )
    .await
    {
        Ok(Ok(tcp)) => {
            let _ = tcp.set_nodelay(true);
            Ok(Upstream::Device(tcp))
        }
        Ok(Err(e)) => {
            tracing::info!("dial {address}:{port} failed: {e}");
            Err((
                RefusalCode::DialFailed,
                "the device refused the connection".into(),
            ))
        }
        Err(_) => Err((
            RefusalCode::DialTimeout,
            "the device did not answer in time".into(),
        )),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Both directions finished (each side closed its half).
    Done,
    /// The session ended.
    Cut,
    /// The site connector carrying the stream went away.
    ConnectorLost,
    /// No bytes for the idle timeout.
    Idle,
    /// A reset or IO error on either side.
    Failed,
}

/// What a splice counts into: the session's and the relay's byte totals, and the stream's
/// activity clock.
#[derive(Debug, Clone, Copy)]
struct Counters<'a> {
    s: &'a LiveSession,
    shared: &'a Shared,
    activity: &'a Activity,
}

impl Counters<'_> {
    fn up(&self, n: usize) {
        count(
            self.activity,
            &self.s.bytes_up,
            &self.shared.metrics.bytes_up,
            n,
        );
    }

    fn down(&self, n: usize) {
        count(
            self.activity,
            &self.s.bytes_down,
            &self.shared.metrics.bytes_down,
            n,
        );
    }
}

/// The vendor's stream to a device socket. The client's FIN shuts down the socket's write side,
/// the device's FIN finishes the QUIC stream.
async fn splice_tcp(
    send: &mut SendStream,
    recv: &mut RecvStream,
    tcp: &mut TcpStream,
    leftover: Vec<u8>,
    c: Counters<'_>,
) -> Result<(), ()> {
    let (rd, mut wr) = tcp.split();
    let up = async {
        if !leftover.is_empty() {
            wr.write_all(&leftover).await.map_err(drop)?;
            c.up(leftover.len());
        }
        while let Some(chunk) = recv.read_chunk(CHUNK, true).await.map_err(drop)? {
            wr.write_all(&chunk.bytes).await.map_err(drop)?;
            c.up(chunk.bytes.len());
        }
        wr.shutdown().await.map_err(drop)
    };
    let down = async {
        let mut buf = BytesMut::new();
        while let Some(chunk) = read_tcp_chunk(&rd, &mut buf, CHUNK).await.map_err(drop)? {
            let n = chunk.len();
            send.write_chunk(chunk).await.map_err(drop)?;
            c.down(n);
        }
        send.finish().map_err(drop)
    };
    tokio::try_join!(up, down).map(drop)
}

/// The vendor's stream to the connector's stream (which the connector splices to the device),
/// FINs passed on both ways.
async fn splice_quic(
    send: &mut SendStream,
    recv: &mut RecvStream,
    leftover: Vec<u8>,
    cs: &mut ConnectorStream,
    c: Counters<'_>,
) -> Result<(), ()> {
    let up = async {
        if !leftover.is_empty() {
            c.up(leftover.len());
            cs.send.write_all(&leftover).await.map_err(drop)?;
        }
        while let Some(chunk) = recv.read_chunk(CHUNK, true).await.map_err(drop)? {
            let n = chunk.bytes.len();
            cs.send.write_chunk(chunk.bytes).await.map_err(drop)?;
            c.up(n);
        }
        cs.send.finish().map_err(drop)
    };
    let down = async {
        let early = std::mem::take(&mut cs.leftover);
        if !early.is_empty() {
            c.down(early.len());
            send.write_all(&early).await.map_err(drop)?;
        }
        while let Some(chunk) = cs.recv.read_chunk(CHUNK, true).await.map_err(drop)? {
            let n = chunk.bytes.len();
            send.write_chunk(chunk.bytes).await.map_err(drop)?;
            c.down(n);
        }
        send.finish().map_err(drop)
    };
    tokio::try_join!(up, down).map(drop)
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
    if let Some(site) = &s.grant.site {
        details["site"] = site.clone().into();
    }
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
