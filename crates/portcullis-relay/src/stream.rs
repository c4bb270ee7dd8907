//! One tunnelled TCP connection: the `Open` check, the dial (direct, or through the device's
//! site connector), and the splice.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use portcullis_core::Port;
use portcullis_core::audit::{ActorRole, AuditDraft};
use portcullis_core::wire::{Frame, FrameDecoder, RefusalCode};
use portcullis_net::modbus_filter::ModbusFilter;
use portcullis_net::splice::{CUT, Meter, Peer, Side, Splice, SpliceEnd};
use quinn::{RecvStream, SendStream};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::Shared;
use crate::connectors::ConnectorEnd;
use crate::modbus::{self, StreamRecord};
use crate::registry::{LiveSession, StreamSlot};
use crate::via::{self, ConnectorStream};
use portcullis_net::frames::{read_frame, refuse, write_frame};

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
            let _ = recv.stop(CUT);
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
    let upstream = match dialed {
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
    s.open_streams.fetch_add(1, Ordering::Relaxed);
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
    let until = async {
        tokio::select! {
            () = cancel.cancelled() => {}
            () = connector_gone => {}
        }
    };
    let idle = shared.config.idle_timeout;
    let meter = Counters {
        s: &s,
        shared: &shared,
    };
    let client = Peer::quic(send, recv, dec.into_remainder());
    // A Modbus port gets the filter: the grant's access decides what reaches the device.
    let modbus = Port::new(u32::from(port))
        .ok()
        .and_then(|p| s.grant.modbus_rules(p))
        .map(|rules| {
            let (record, writer) = StreamRecord::start(&shared, s.clone(), port);
            (ModbusFilter::new(rules, record.clone()), record, writer)
        });
    let mut splice = Splice::new(client, upstream.into_peer())
        .idle_timeout(idle)
        .meter(&meter);
    if let Some((filter, ..)) = &modbus {
        splice = filter.attach(splice);
    }
    let spliced = splice.run(until).await;
    if let Some((filter, record, writer)) = modbus {
        filter.finish();
        modbus::finish(&shared, record, writer, &spliced.end).await;
    }
    tracing::debug!(
        end = %spliced.end,
        to_device = spliced.to_device,
        to_client = spliced.to_client,
        "stream ended"
    );
    // A dead connector connection fails its streams' reads at the moment the connector task
    // learns of it; whether the stream saw the failure or the cancellation first, the cause is
    // the same.
    let connector_lost = !spliced.end.is_clean()
        && via
            .as_ref()
            .is_some_and(|c| c.cancel.is_cancelled() || c.conn.close_reason().is_some());
    shared
        .metrics
        .streams_active
        .fetch_sub(1, Ordering::Relaxed);
    s.open_streams.fetch_sub(1, Ordering::Relaxed);
    drop(slot);
    let target = format!("device:{device}:{port}");
    match (&spliced.end, &via) {
        (SpliceEnd::Idle(_), _) => {
            let draft = AuditDraft::new("relay", ActorRole::System, "relay.stream.idle_timeout")
                .target(target)
                .grant(s.grant.id)
                .details(serde_json::json!({ "session": s.id, "idle_secs": idle.as_secs() }));
            shared.auditor.event(draft).await;
        }
        // A connector that ends because the whole relay shuts down is not a lost connector.
        (_, Some(c))
            if connector_lost
                && s.end_reason().is_none()
                && c.end_reason() != Some(ConnectorEnd::Shutdown) =>
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
    /// The splice's device side.
    fn into_peer(self) -> Peer {
        match self {
            Upstream::Device(tcp) => Peer::Tcp(tcp),
            Upstream::Connector(cs) => Peer::quic(cs.send, cs.recv, cs.leftover),
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
        let mode = Port::new(u32::from(port))
            .map(|p| s.grant.mode(p))
            .unwrap_or_default();
        return via::dial(shared, s, site, device, address, port, mode)
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

/// Where a stream's bytes are counted: the session's and the relay's totals.
#[derive(Debug, Clone, Copy)]
struct Counters<'a> {
    s: &'a LiveSession,
    shared: &'a Shared,
}

impl Meter for Counters<'_> {
    fn moved(&self, to: Side, n: usize) {
        let n = n as u64;
        let (session, total) = match to {
            Side::Device => (&self.s.bytes_up, &self.shared.metrics.bytes_up),
            Side::Client => (&self.s.bytes_down, &self.shared.metrics.bytes_down),
        };
        session.fetch_add(n, Ordering::Relaxed);
        total.fetch_add(n, Ordering::Relaxed);
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
