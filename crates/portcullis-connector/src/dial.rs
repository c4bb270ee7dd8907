//! One dial stream: the relay's `Dial`, the allowlist check, the TCP connect, and the splice
//! (docs/wire-protocol.md, "Site connector streams").
//!
//! - Not on the allowlist: `Refused{connector_refused}`; the device is never dialed.
//! - The TCP connect gets [`DialContext::dial_timeout`]: `Refused{dial_timeout}` or
//!   `Refused{dial_failed}`, else `Opened` and raw bytes both ways.
//! - Then [`portcullis_net::splice`] carries the bytes: those the relay sent right behind `Dial`
//!   (already in the frame decoder) go to the device first; FINs pass along; a reset or
//!   STOP_SENDING on the QUIC side, an error on the TCP side, or the end of the connection (the
//!   `cancel` token) cuts the device with an RST, then resets the QUIC stream.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use portcullis_core::modbus::{Judgement, Request, Rules};
use portcullis_core::wire::{Frame, FrameDecoder, RefusalCode};
use portcullis_core::{Access, Mode, WriteScope};
use portcullis_net::modbus_filter::{ModbusFilter, ModbusObserver, PendingWrite, WriteAnswer};
use portcullis_net::splice::{CUT, Peer, Splice, SpliceEnd};
use quinn::{RecvStream, SendStream};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use crate::allowlist::{Allowlist, ModbusRule};
use crate::printable;
use portcullis_net::frames::{read_frame, write_frame};

/// What every dial stream of a connection shares.
#[derive(Debug)]
pub(crate) struct DialContext {
    pub allowlist: Arc<Allowlist>,
    pub dial_timeout: Duration,
}

/// The relay's words, made safe for a log line and bounded.
#[derive(Clone)]
struct Shown {
    session: String,
    device: String,
    target: String,
}

#[tracing::instrument(name = "connector_dial", skip_all, fields(stream = %send.id()))]
pub(crate) async fn handle(
    mut send: SendStream,
    mut recv: RecvStream,
    ctx: Arc<DialContext>,
    cancel: CancellationToken,
) {
    let mut dec = FrameDecoder::new();
    let first = tokio::select! {
        () = cancel.cancelled() => return,
        f = timeout(ctx.dial_timeout, read_frame(&mut recv, &mut dec)) => f,
    };
    let (session, device, host, port, mode) = match first {
        Ok(Ok(Some(Frame::Dial {
            session_id,
            device,
            host,
            port,
            mode,
        }))) => (session_id, device, host, port, mode),
        Ok(Ok(None)) => return,
        other => {
            let what = match other {
                Ok(Ok(Some(f))) => format!("a {} frame", f.name()),
                Ok(Err(e)) => e.to_string(),
                _ => format!("no Dial frame within {:?}", ctx.dial_timeout),
            };
            tracing::warn!("dropped a stream from the relay that did not start with Dial: {what}");
            let _ = send.reset(CUT);
            let _ = recv.stop(CUT);
            return;
        }
    };
    let shown = Shown {
        session: printable(&session, 64),
        device: printable(&device, 64),
        target: format!("{}:{port}", printable(&host, 253)),
    };

    if !ctx.allowlist.permits(&host, port) {
        tracing::warn!(
            session = %shown.session,
            device = %shown.device,
            "refused a dial to {}: not on the allowlist",
            shown.target
        );
        let message = format!(
            "the site connector's allowlist does not permit {} (device {})",
            shown.target, shown.device
        );
        refuse(
            &mut send,
            &mut recv,
            RefusalCode::ConnectorRefused,
            &message,
        )
        .await;
        return;
    }

    let dial = tokio::select! {
        () = cancel.cancelled() => return,
        d = connect(&host, port, ctx.dial_timeout) => d,
    };
    let tcp = match dial {
        Ok(tcp) => tcp,
        Err(e) => {
            tracing::warn!(
                session = %shown.session,
                device = %shown.device,
                "dial to {} failed: {}",
                shown.target,
                e.detail()
            );
            refuse(&mut send, &mut recv, e.code(), e.message()).await;
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    if write_frame(&mut send, &Frame::Opened).await.is_err() {
        abort(tcp);
        return;
    }
    tracing::info!(
        session = %shown.session,
        device = %shown.device,
        "opened {}",
        shown.target
    );
    let relay = Peer::quic(send, recv, dec.into_remainder());
    let filter = ctx
        .allowlist
        .modbus(&host, port)
        .map(|demand| ModbusFilter::new(rules(demand, mode), Arc::new(Logged(shown.clone()))));
    let mut splice = Splice::new(relay, Peer::Tcp(tcp));
    if let Some(f) = &filter {
        splice = f.attach(splice);
    }
    let spliced = splice.run(cancel.cancelled()).await;
    if let Some(f) = filter {
        f.finish();
    }
    let how = match &spliced.end {
        SpliceEnd::Closed { .. } => "closed".to_owned(),
        SpliceEnd::Cancelled => "cut (the relay connection ended)".to_owned(),
        other => format!("cut ({other})"),
    };
    tracing::info!(
        session = %shown.session,
        device = %shown.device,
        bytes_to_device = spliced.to_device,
        bytes_from_device = spliced.to_client,
        "{how} {}",
        shown.target
    );
}

/// What this connector lets through on a Modbus port its allowlist filters: read-only when it
/// demands so, else what the relay's `Dial` says (read-only when it says nothing).
fn rules(demand: ModbusRule, mode: Mode) -> Rules {
    match (demand, mode) {
        (ModbusRule::AsGranted, Mode::Modbus(Access::Write)) => Rules {
            access: Access::Write,
            scope: WriteScope::default(),
        },
        _ => Rules::read_only(),
    }
}

/// The connector's record of a filtered stream: its log (the relay audits).
struct Logged(Shown);

impl ModbusObserver for Logged {
    fn request(&self, r: &Request, judgement: Judgement, values: &[u16]) {
        match judgement {
            Judgement::Read => {}
            Judgement::Write => tracing::info!(
                session = %self.0.session, device = %self.0.device,
                "Modbus write to {}: unit {} function {} address {:?} values {values:?}",
                self.0.target, r.unit, r.function, r.address
            ),
            Judgement::Refused(why) => tracing::warn!(
                session = %self.0.session, device = %self.0.device,
                "refused a Modbus request to {} ({}): unit {} function {} address {:?}",
                self.0.target, why.as_str(), r.unit, r.function, r.address
            ),
        }
    }

    fn write_answered(&self, _: &PendingWrite, _: WriteAnswer) {}
}

/// Closes `tcp` with an RST, the way the splice cuts a device (before any byte moved).
fn abort(tcp: TcpStream) {
    Peer::Tcp(tcp).cut();
}

async fn refuse(send: &mut SendStream, recv: &mut RecvStream, code: RefusalCode, message: &str) {
    portcullis_net::frames::refuse(send, code, message).await;
    // Whatever the relay sent behind `Dial` is discarded.
    let _ = recv.stop(CUT);
}

#[derive(Debug)]
enum DialError {
    Timeout,
    Resolve(String),
    Refused(std::io::Error),
}

impl DialError {
    fn code(&self) -> RefusalCode {
        match self {
            DialError::Timeout => RefusalCode::DialTimeout,
            DialError::Resolve(_) | DialError::Refused(_) => RefusalCode::DialFailed,
        }
    }

    /// The sentence for the vendor (no internals).
    fn message(&self) -> &'static str {
        match self {
            DialError::Timeout => "the device did not answer in time",
            DialError::Resolve(_) => "the site connector cannot resolve the device's address",
            DialError::Refused(_) => "the device refused the connection",
        }
    }

    /// The detail for the connector's log.
    fn detail(&self) -> String {
        match self {
            DialError::Timeout => "no answer in time".into(),
            DialError::Resolve(e) => format!("cannot resolve: {e}"),
            DialError::Refused(e) => e.to_string(),
        }
    }
}

/// Connects to `host:port` within `limit`: an address directly, a name through the resolver
/// (each address in turn).
async fn connect(host: &str, port: u16, limit: Duration) -> Result<TcpStream, DialError> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let attempt = async {
        let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((bare, port))
                .await
                .map_err(|e| DialError::Resolve(e.to_string()))?
                .collect(),
        };
        let mut last = DialError::Resolve("no address".into());
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(tcp) => return Ok(tcp),
                Err(e) => last = DialError::Refused(e),
            }
        }
        Err(last)
    };
    within(limit, attempt).await
}

/// `attempt`, or [`DialError::Timeout`] once `limit` has passed.
async fn within<T>(
    limit: Duration,
    attempt: impl Future<Output = Result<T, DialError>>,
) -> Result<T, DialError> {
    timeout(limit, attempt)
        .await
        .unwrap_or(Err(DialError::Timeout))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[tokio::test]
    async fn a_closed_port_is_dial_failed() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let e = connect("127.0.0.1", port, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(e.code(), RefusalCode::DialFailed);
        assert_eq!(e.message(), "the device refused the connection");
    }

    #[tokio::test]
    async fn an_open_port_connects_by_address_and_bracketed_address() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        connect("127.0.0.1", port, Duration::from_secs(5))
            .await
            .unwrap();
        let l6 = tokio::net::TcpListener::bind("[::1]:0").await;
        if let Ok(l6) = l6 {
            let port = l6.local_addr().unwrap().port();
            connect("[::1]", port, Duration::from_secs(5))
                .await
                .unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_device_that_never_answers_is_dial_timeout() {
        // A connect that never completes (a SYN nobody answers), with time paused: the 5 s
        // limit passes at once. No packet leaves the machine.
        let e = within(
            Duration::from_secs(5),
            std::future::pending::<Result<(), _>>(),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, DialError::Timeout), "{e:?}");
        assert_eq!(e.code(), RefusalCode::DialTimeout);
        assert_eq!(e.message(), "the device did not answer in time");
    }
}
