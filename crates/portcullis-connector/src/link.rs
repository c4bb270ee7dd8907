//! The connection to the relay: connect, say `ConnectorHello`, answer `Ping`s, serve the relay's
//! dial streams, and reconnect with backoff whenever the connection is lost.
//!
//! ```text
//! connector                                            relay
//!   | QUIC + TLS 1.3, ALPN portcullis-connector/1, the site's certificate
//!   |=================================================>|  pins the certificate's SHA-256
//!   | bidi stream 0: ConnectorHello{version, site}     |
//!   |------------------------------------------------->|
//!   |                 Ping{n}  (accepted), every 2 s    |
//!   |<-------------------------------------------------|
//!   | Pong{n}                                          |
//!   |------------------------------------------------->|
//!   |        bidi stream: Dial{session, device, host, port}
//!   |<-------------------------------------------------|  allowlist, TCP connect, Opened/Refused
//! ```
//!
//! One attempt (resolve, handshake, hello, first `Ping`) gets `attempt_timeout`. When the
//! connection ends, every dial stream's TCP connection is cut at once (streams are never
//! resumed), and the next attempt waits a [`Backoff`] draw; a connection that lasted
//! `stable_after` resets the backoff. A relay that refuses this site's certificate is retried at
//! the backoff cap, with an error in the log saying the site must be re-enrolled.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use portcullis_core::wire::{CONNECTOR_ALPN, Frame, FrameDecoder, RefusalCode, VERSION};
use quinn::{Connection, ConnectionError, Endpoint, RecvStream, SendStream, VarInt};
use rand::SeedableRng as _;
use rand::rngs::StdRng;
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

use crate::allowlist::Allowlist;
use crate::backoff::Backoff;
use crate::config::ConnectorConfig;
use crate::dial::{self, DialContext};
use crate::state::Identity;
use crate::{printable, split_host_port};
use portcullis_net::frames::{FrameError, read_frame, write_frame};

/// QUIC application close codes the connector sends.
const CLOSE_SHUTDOWN: VarInt = VarInt::from_u32(0);
const CLOSE_PROTOCOL: VarInt = VarInt::from_u32(3);
/// The relay's close code for a refused handshake; the reason text is the refusal code's name
/// (docs/wire-protocol.md, "QUIC close codes").
const RELAY_REFUSED: VarInt = VarInt::from_u32(1);

/// A repeated identical connection failure is logged at warn the first time and every this many
/// attempts after (at debug in between), so a long outage does not fill the log.
const REPEAT_EVERY: u32 = 30;
/// Warn at startup when the certificate ends sooner than this.
const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("relay address {0:?} is not host:port")]
    RelayAddress(String),
    #[error("cannot use the connector's certificate for QUIC")]
    Tls(#[from] portcullis_net::NetError),
}

/// A configured connector, ready to [`run`](Connector::run).
pub struct Connector {
    site: String,
    relay: String,
    server_name: String,
    not_after_unix: Option<i64>,
    client: quinn::ClientConfig,
    allowlist: Arc<Allowlist>,
    config: ConnectorConfig,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("site", &self.site)
            .field("relay", &self.relay)
            .field("server_name", &self.server_name)
            .field("allowlist_entries", &self.allowlist.len())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// A connector for the enrolled `identity`. `relay` overrides the enrolled relay address
    /// (the TLS name to verify stays the enrolled one: the relay's certificate names it).
    pub fn new(
        identity: Identity,
        allowlist: Allowlist,
        config: ConnectorConfig,
        relay: Option<String>,
    ) -> Result<Self, SetupError> {
        let relay = relay.unwrap_or(identity.enrollment.relay);
        if split_host_port(&relay).is_none() {
            return Err(SetupError::RelayAddress(relay));
        }
        let mut client = portcullis_net::quic::client_config_with_roots(
            identity.roots,
            identity.cert,
            identity.key,
            &[CONNECTOR_ALPN],
        )?;
        client.transport_config(config.transport());
        Ok(Self {
            site: identity.enrollment.site,
            relay,
            server_name: identity.enrollment.server_name,
            not_after_unix: identity.not_after_unix,
            client,
            allowlist: Arc::new(allowlist),
            config,
        })
    }

    pub fn site(&self) -> &str {
        &self.site
    }

    /// The relay address connected to (`host:port`).
    pub fn relay(&self) -> &str {
        &self.relay
    }

    /// Connects and reconnects until `stop` is cancelled; then closes the connection (reason
    /// `shutdown`) and returns.
    pub async fn run(self, stop: CancellationToken) {
        self.check_expiry();
        let cfg = &self.config;
        let mut backoff =
            Backoff::new(cfg.backoff_initial, cfg.backoff_max, StdRng::from_entropy());
        let mut failures = Repeats::default();
        loop {
            let attempt = tokio::select! {
                () = stop.cancelled() => return,
                a = timeout(cfg.attempt_timeout, self.attempt()) => a.unwrap_or_else(|_| {
                    Err(Failure::Lost(format!(
                        "no answer within {} ms",
                        cfg.attempt_timeout.as_millis()
                    )))
                }),
            };
            let wait = match attempt {
                Ok(link) => {
                    tracing::info!("connected to relay {} as site {}", self.relay, self.site);
                    failures = Repeats::default();
                    let started = Instant::now();
                    let end = self.serve(link, &stop).await;
                    if started.elapsed() >= cfg.stable_after {
                        backoff.reset();
                    }
                    match end {
                        Failure::Shutdown => return,
                        Failure::Refused { code, message } => {
                            self.log_refusal(code, &message, &mut failures);
                            self.refusal_wait(code, &mut backoff)
                        }
                        Failure::Lost(detail) => {
                            tracing::warn!(
                                "lost the connection to relay {}: {detail}; reconnecting",
                                self.relay
                            );
                            backoff.next_wait()
                        }
                    }
                }
                Err(Failure::Shutdown) => return,
                Err(Failure::Refused { code, message }) => {
                    self.log_refusal(code, &message, &mut failures);
                    self.refusal_wait(code, &mut backoff)
                }
                Err(Failure::Lost(detail)) => {
                    if failures.note(&detail) {
                        tracing::warn!(
                            "cannot connect to relay {}: {detail}{}; retrying",
                            self.relay,
                            failures.suffix()
                        );
                    } else {
                        tracing::debug!("cannot connect to relay {}: {detail}", self.relay);
                    }
                    backoff.next_wait()
                }
            };
            tracing::debug!("next attempt in {} ms", wait.as_millis());
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    fn check_expiry(&self) {
        let Some(end) = self.not_after_unix else {
            return;
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let warn_secs = i64::try_from(EXPIRY_WARNING.as_secs()).unwrap_or(i64::MAX);
        if end <= now {
            tracing::error!(
                "the site certificate of {} has expired; the relay will refuse it: re-enroll with a new token (`portcullis admin site token {}` on the broker, then `portcullis connector enroll --force`)",
                self.site,
                self.site
            );
        } else if end - now < warn_secs {
            tracing::warn!(
                "the site certificate of {} expires in {} days; re-enroll before then (`portcullis admin site token {}` on the broker, then `portcullis connector enroll --force`)",
                self.site,
                (end - now) / 86_400,
                self.site
            );
        }
    }

    /// Refusals about this site's certificate cannot be fixed by retrying soon: wait at the cap.
    fn refusal_wait(&self, code: RefusalCode, backoff: &mut Backoff<StdRng>) -> Duration {
        if certificate_refused(code) || code == RefusalCode::BadVersion {
            backoff.at_cap()
        } else {
            backoff.next_wait()
        }
    }

    fn log_refusal(&self, code: RefusalCode, message: &str, repeats: &mut Repeats) {
        let key = format!("{code}: {message}");
        if !repeats.note(&key) {
            tracing::debug!("the relay refused the connection again ({code})");
            return;
        }
        let said = if message.is_empty() {
            String::new()
        } else {
            format!(": {message}")
        };
        if certificate_refused(code) {
            tracing::error!(
                "the relay refused the certificate of site {} ({code}){said}{}. It was revoked or replaced by a newer enrollment: re-enrollment is needed (`portcullis admin site token {}` on the broker, then `portcullis connector enroll --force --url <web> --token <token>` here). Retrying every {} s meanwhile.",
                self.site,
                repeats.suffix(),
                self.site,
                self.config.backoff_max.as_secs_f32()
            );
        } else if code == RefusalCode::BadVersion {
            tracing::error!(
                "the relay does not speak this connector's protocol version ({code}){said}{}; upgrade the connector to the broker's version",
                repeats.suffix()
            );
        } else {
            tracing::error!(
                "the relay refused the connection ({code}){said}{}; retrying",
                repeats.suffix()
            );
        }
    }

    /// One attempt: resolve, QUIC handshake, `ConnectorHello`, and the relay's first `Ping`
    /// (answered), which says the relay accepted this site.
    async fn attempt(&self) -> Result<Link, Failure> {
        let lost = |e: &dyn std::fmt::Display| Failure::Lost(e.to_string());
        let (host, port) = split_host_port(&self.relay)
            .ok_or_else(|| lost(&"the relay address is not host:port"))?;
        let addr = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| Failure::Lost(format!("cannot resolve {host}: {e}")))?
            .next()
            .ok_or_else(|| Failure::Lost(format!("{host} has no address")))?;
        let bind = if addr.is_ipv6() {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0)
        } else {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
        };
        // A fresh UDP socket per attempt: after a link flap, no stale NAT or firewall state of
        // the old source port is reused.
        let endpoint = portcullis_net::quic::endpoint(bind, None)
            .map_err(|e| Failure::Lost(format!("cannot open a UDP socket: {e}")))?;
        let conn = endpoint
            .connect_with(self.client.clone(), addr, &self.server_name)
            .map_err(|e| lost(&e))?
            .await
            .map_err(|e| Failure::from_close(&e))?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| Failure::from_close(&e))?;
        let hello = Frame::ConnectorHello {
            version: VERSION,
            site: self.site.clone(),
        };
        write_frame(&mut send, &hello)
            .await
            .map_err(|e| Failure::from_frame(&conn, &e))?;
        let mut dec = FrameDecoder::new();
        match read_frame(&mut recv, &mut dec).await {
            Ok(Some(Frame::Ping { nonce })) => {
                write_frame(&mut send, &Frame::Pong { nonce })
                    .await
                    .map_err(|e| Failure::from_frame(&conn, &e))?;
                Ok(Link {
                    endpoint,
                    conn,
                    send,
                    recv,
                    dec,
                })
            }
            Ok(Some(Frame::Refused { code, message })) => {
                conn.close(CLOSE_SHUTDOWN, b"refused");
                Err(Failure::Refused {
                    code,
                    message: printable(&message, 300),
                })
            }
            Ok(Some(other)) => {
                conn.close(CLOSE_PROTOCOL, b"protocol_error");
                Err(Failure::Lost(format!(
                    "the relay answered ConnectorHello with {} instead of Ping",
                    other.name()
                )))
            }
            Ok(None) => Err(Failure::from_conn(
                &conn,
                "the relay closed the control stream",
            )),
            Err(e) => Err(Failure::from_frame(&conn, &e)),
        }
    }

    /// Runs one accepted connection until it ends; every dial stream is cut before returning.
    async fn serve(&self, link: Link, stop: &CancellationToken) -> Failure {
        let Link {
            endpoint,
            conn,
            mut send,
            mut recv,
            mut dec,
        } = link;
        let cut = CancellationToken::new();
        let mut dials = JoinSet::new();
        let ctx = Arc::new(DialContext {
            allowlist: self.allowlist.clone(),
            dial_timeout: self.config.dial_timeout,
        });
        let (end, close) = tokio::select! {
            () = stop.cancelled() => (Failure::Shutdown, Some((CLOSE_SHUTDOWN, "shutdown"))),
            c = control(&conn, &mut send, &mut recv, &mut dec, self.config.relay_silence) => c,
            e = accept_dials(&conn, &mut dials, &ctx, &cut) => (Failure::from_close(&e), None),
        };
        // Cut every dial first (the devices see their connections end now), then close.
        cut.cancel();
        let _ = timeout(Duration::from_secs(1), async {
            while dials.join_next().await.is_some() {}
        })
        .await;
        dials.shutdown().await;
        if let Some((code, reason)) = close {
            conn.close(code, reason.as_bytes());
        }
        if matches!(end, Failure::Shutdown) {
            let _ = timeout(self.config.close_grace, endpoint.wait_idle()).await;
        }
        end
    }
}

/// An accepted connection: the relay has sent its first `Ping`.
struct Link {
    endpoint: Endpoint,
    conn: Connection,
    /// Kept for the whole connection: finishing it would tell the relay the connector is done.
    send: SendStream,
    recv: RecvStream,
    /// Bytes after the first `Ping`.
    dec: FrameDecoder,
}

/// Why a connection (or an attempt) ended.
#[derive(Debug)]
enum Failure {
    /// The stop signal.
    Shutdown,
    /// The relay refused this connector.
    Refused { code: RefusalCode, message: String },
    /// Anything else: network, timeouts, the relay going away.
    Lost(String),
}

impl Failure {
    /// From a connection error: a relay close with code 1 and a refusal name is a refusal.
    fn from_close(e: &ConnectionError) -> Self {
        if let ConnectionError::ApplicationClosed(close) = e {
            let reason = String::from_utf8_lossy(&close.reason);
            if close.error_code == RELAY_REFUSED
                && let Ok(code) = reason.parse::<RefusalCode>()
            {
                return Failure::Refused {
                    code,
                    message: String::new(),
                };
            }
            let reason = printable(&reason, 200);
            if reason == "replaced" {
                return Failure::Lost(
                    "the relay replaced this connection with a newer one for the same site (is a second connector running with a copy of this state directory?)".into(),
                );
            }
            return Failure::Lost(format!(
                "the relay closed the connection (code {}, {reason})",
                close.error_code
            ));
        }
        Failure::Lost(printable(&e.to_string(), 300))
    }

    /// From a stream error: the connection's own close reason says more when there is one.
    fn from_frame(conn: &Connection, e: &FrameError) -> Self {
        Self::from_conn(conn, &e.to_string())
    }

    fn from_conn(conn: &Connection, otherwise: &str) -> Self {
        match conn.close_reason() {
            Some(e) => Self::from_close(&e),
            None => Failure::Lost(printable(otherwise, 300)),
        }
    }
}

/// Refusals that mean the relay does not accept this site's certificate (any more).
fn certificate_refused(code: RefusalCode) -> bool {
    matches!(
        code,
        RefusalCode::BadToken | RefusalCode::TokenExpired | RefusalCode::BindingMismatch
    )
}

/// The control stream after the first `Ping`: answer `Ping`s; a `Refused`, the stream's end, a
/// malformed frame, or a relay silent for `silence` ends the connection. Returns why, and the
/// close to send (none when the relay already closed).
async fn control(
    conn: &Connection,
    send: &mut SendStream,
    recv: &mut RecvStream,
    dec: &mut FrameDecoder,
    silence: Duration,
) -> (Failure, Option<(VarInt, &'static str)>) {
    loop {
        let frame = match timeout(silence, read_frame(recv, dec)).await {
            Err(_) => {
                return (
                    Failure::Lost(format!(
                        "the relay sent no Ping for {} ms",
                        silence.as_millis()
                    )),
                    Some((CLOSE_PROTOCOL, "relay_silent")),
                );
            }
            Ok(Ok(Some(frame))) => frame,
            Ok(Ok(None)) => {
                return (
                    Failure::from_conn(conn, "the relay closed the control stream"),
                    Some((CLOSE_PROTOCOL, "control_stream_closed")),
                );
            }
            Ok(Err(e @ FrameError::Wire(_))) => {
                return (
                    Failure::Lost(format!("the relay broke the protocol: {e}")),
                    Some((CLOSE_PROTOCOL, "protocol_error")),
                );
            }
            Ok(Err(e)) => return (Failure::from_frame(conn, &e), None),
        };
        match frame {
            Frame::Ping { nonce } => {
                if let Err(e) = write_frame(send, &Frame::Pong { nonce }).await {
                    return (Failure::from_frame(conn, &e), None);
                }
            }
            Frame::Pong { .. } => {}
            Frame::Refused { code, message } => {
                return (
                    Failure::Refused {
                        code,
                        message: printable(&message, 300),
                    },
                    Some((CLOSE_SHUTDOWN, "refused")),
                );
            }
            other => {
                return (
                    Failure::Lost(format!(
                        "the relay sent {} on the control stream",
                        other.name()
                    )),
                    Some((CLOSE_PROTOCOL, "protocol_error")),
                );
            }
        }
    }
}

/// Accepts the relay's dial streams, one task each (reaping finished ones), until the
/// connection ends.
async fn accept_dials(
    conn: &Connection,
    dials: &mut JoinSet<()>,
    ctx: &Arc<DialContext>,
    cut: &CancellationToken,
) -> ConnectionError {
    loop {
        tokio::select! {
            accepted = conn.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    dials.spawn(dial::handle(send, recv, ctx.clone(), cut.child_token()));
                }
                Err(e) => return e,
            },
            Some(_) = dials.join_next(), if !dials.is_empty() => {}
        }
    }
}

/// Counts identical consecutive failures so that only the first and every
/// [`REPEAT_EVERY`]-th are logged loudly.
#[derive(Debug, Default)]
struct Repeats {
    last: Option<String>,
    count: u32,
}

impl Repeats {
    /// Records `what`; true when it should be logged loudly.
    fn note(&mut self, what: &str) -> bool {
        if self.last.as_deref() == Some(what) {
            self.count += 1;
            self.count.is_multiple_of(REPEAT_EVERY)
        } else {
            self.last = Some(what.to_owned());
            self.count = 1;
            true
        }
    }

    fn suffix(&self) -> String {
        if self.count > 1 {
            format!(" ({} attempts in a row)", self.count)
        } else {
            String::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_failures_are_logged_loudly_only_now_and_then() {
        let mut r = Repeats::default();
        assert!(r.note("timed out"));
        let loud: Vec<u32> = (2..=61).filter(|_| r.note("timed out")).collect();
        assert_eq!(loud.len(), 2, "at 30 and 60 attempts");
        assert_eq!(r.suffix(), " (61 attempts in a row)");
        assert!(r.note("refused"), "a different failure is logged at once");
        assert_eq!(r.suffix(), "");
    }

    #[test]
    fn a_relay_close_with_a_refusal_name_is_a_refusal() {
        let close = |code: u32, reason: &'static [u8]| {
            ConnectionError::ApplicationClosed(quinn::ApplicationClose {
                error_code: VarInt::from_u32(code),
                reason: bytes::Bytes::from_static(reason),
            })
        };
        assert!(matches!(
            Failure::from_close(&close(1, b"bad_token")),
            Failure::Refused {
                code: RefusalCode::BadToken,
                ..
            }
        ));
        let Failure::Lost(d) = Failure::from_close(&close(2, b"replaced")) else {
            panic!("replaced is a loss");
        };
        assert!(d.contains("second connector"), "{d}");
        let Failure::Lost(d) = Failure::from_close(&close(1, b"no\nsuch")) else {
            panic!("an unknown reason is a loss");
        };
        assert_eq!(d, "the relay closed the connection (code 1, no such)");
        assert!(certificate_refused(RefusalCode::BadToken));
        assert!(!certificate_refused(RefusalCode::Internal));
    }
}
