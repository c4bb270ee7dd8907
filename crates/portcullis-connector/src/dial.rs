//! One dial stream: the relay's `Dial`, the allowlist check, the TCP connect, and the splice
//! (docs/wire-protocol.md, "Site connector streams").
//!
//! - Not on the allowlist: `Refused{connector_refused}`; the device is never dialed.
//! - The TCP connect gets [`DialContext::dial_timeout`]: `Refused{dial_timeout}` or
//!   `Refused{dial_failed}`, else `Opened` and raw bytes both ways.
//! - Bytes the relay sent right behind `Dial` (already in the frame decoder) go to the device
//!   first. QUIC FIN -> TCP shutdown(write); TCP EOF -> QUIC finish. A reset or STOP_SENDING on
//!   the QUIC side, an error on the TCP side, or the end of the connection (the `cancel` token)
//!   drops the TCP socket at once with an RST, and resets the QUIC stream.
//!
//! Memory per stream: device-to-relay bytes are read into one buffer handed to quinn whole
//! ([`read_tcp_chunk`]); relay-to-device bytes are written straight from quinn's chunks. The
//! rest is bounded by QUIC flow control and the kernel's socket buffers.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use portcullis_core::wire::{Frame, FrameDecoder, RefusalCode};
use portcullis_net::quic::read_tcp_chunk;
use quinn::{RecvStream, SendStream, VarInt};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use crate::allowlist::Allowlist;
use crate::printable;
use portcullis_net::frames::{read_frame, write_frame};

/// Bytes read from the device per write to the QUIC stream.
const CHUNK: usize = 64 * 1024;
/// QUIC stream error code when the connector cuts a stream (the relay maps it to a reset
/// towards the vendor).
const CUT: VarInt = VarInt::from_u32(1);

/// What every dial stream of a connection shares.
#[derive(Debug)]
pub(crate) struct DialContext {
    pub allowlist: Arc<Allowlist>,
    pub dial_timeout: Duration,
}

/// The relay's words, made safe for a log line and bounded.
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
    let (session, device, host, port) = match first {
        Ok(Ok(Some(Frame::Dial {
            session_id,
            device,
            host,
            port,
        }))) => (session_id, device, host, port),
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
    let mut tcp = match dial {
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
    let leftover = dec.into_remainder();
    let mut moved = Moved::default();
    let outcome = tokio::select! {
        () = cancel.cancelled() => Outcome::Cut,
        r = splice(&mut send, &mut recv, &mut tcp, leftover, &mut moved) => r,
    };
    let how = match outcome {
        Outcome::Done => "closed",
        Outcome::Cut | Outcome::Failed => {
            // The device side first: it must see the connection end now.
            abort(tcp);
            let _ = send.reset(CUT);
            let _ = recv.stop(CUT);
            if outcome == Outcome::Cut {
                "cut (the relay connection ended)"
            } else {
                "reset"
            }
        }
    };
    tracing::info!(
        session = %shown.session,
        device = %shown.device,
        bytes_to_device = moved.up,
        bytes_from_device = moved.down,
        "{how} {}",
        shown.target
    );
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Both directions finished (each side closed its half).
    Done,
    /// The connection to the relay ended.
    Cut,
    /// A reset or an IO error on either side.
    Failed,
}

#[derive(Debug, Default)]
struct Moved {
    up: u64,
    down: u64,
}

/// Copies both ways until both directions are finished, passing half-closes along.
async fn splice(
    send: &mut SendStream,
    recv: &mut RecvStream,
    tcp: &mut TcpStream,
    leftover: Vec<u8>,
    moved: &mut Moved,
) -> Outcome {
    let (rd, mut wr) = tcp.split();
    let Moved { up, down } = moved;
    let to_device = async {
        if !leftover.is_empty() {
            wr.write_all(&leftover).await.map_err(drop)?;
            *up += leftover.len() as u64;
        }
        while let Some(chunk) = recv.read_chunk(CHUNK, true).await.map_err(drop)? {
            wr.write_all(&chunk.bytes).await.map_err(drop)?;
            *up += chunk.bytes.len() as u64;
        }
        wr.shutdown().await.map_err(drop)
    };
    let from_device = async {
        let mut buf = BytesMut::new();
        while let Some(chunk) = read_tcp_chunk(&rd, &mut buf, CHUNK).await.map_err(drop)? {
            let n = chunk.len() as u64;
            send.write_chunk(chunk).await.map_err(drop)?;
            *down += n;
        }
        send.finish().map_err(drop)
    };
    match tokio::try_join!(to_device, from_device) {
        Ok(_) => Outcome::Done,
        Err(()) => Outcome::Failed,
    }
}

/// Closes `tcp` with an RST (SO_LINGER 0), the TCP form of a stream reset.
fn abort(tcp: TcpStream) {
    // Linger 0 makes close() discard unsent data and send RST without blocking.
    let _ = socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO));
    drop(tcp);
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
        // 192.0.2.0/24 (TEST-NET-1) is never routed; with time paused, the 5 s limit passes at
        // once whether the SYN hangs or the network is unreachable fast (then: dial_failed).
        let e = connect("192.0.2.1", 502, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(e, DialError::Timeout | DialError::Refused(_)),
            "{e:?}"
        );
        if let DialError::Timeout = e {
            assert_eq!(e.code(), RefusalCode::DialTimeout);
            assert_eq!(e.message(), "the device did not answer in time");
        }
    }
}
