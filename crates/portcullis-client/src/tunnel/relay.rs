//! One session with the relay: a fresh identity and token, the QUIC connection, and the
//! `Hello` / `Welcome` handshake on the control stream.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use portcullis_core::GrantId;
use portcullis_core::wire::{self, Frame, FrameDecoder, RefusalCode, Token, WireTarget};
use quinn::{Connection, Endpoint, RecvStream, SendStream};
use rustls::RootCertStore;
use time::OffsetDateTime;

use portcullis_net::frames::{FrameError, expect_frame, write_frame};
use portcullis_net::quic::Congestion;
use portcullis_net::split_host_port;

use super::tokens::{TokenError, TokenSource};
use crate::printable;

/// The QUIC handshake and the `Welcome` must each arrive within this. The relay's own
/// handshake timeout is shorter; this only bounds a relay that accepts and then says nothing.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// Common name of the per-connection client certificate. It says nothing about the vendor: the
/// token names the account, the certificate only proves possession of the key.
const CLIENT_CN: &str = "portcullis vendor client";

/// What the relay granted this session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    pub session_id: String,
    pub grant_id: GrantId,
    pub targets: Vec<WireTarget>,
    /// The window's end by the relay's clock, for display. None if out of range.
    pub window_end: Option<OffsetDateTime>,
    /// Time left when the relay sent `Welcome`: the countdown, on the local monotonic clock.
    pub remaining: Duration,
    /// What the decoded ports run under (`modbus-read`, `modbus-write`), as the broker said
    /// with the token; ports not listed are raw TCP. For display only.
    pub modes: std::collections::BTreeMap<u16, String>,
}

/// An established session: the connection, its control stream, and what was granted.
#[derive(Debug)]
pub(crate) struct Live {
    pub conn: Connection,
    /// Kept open for the session: finishing it would tell the relay the client is done.
    pub _control_send: SendStream,
    pub control_recv: RecvStream,
    /// Bytes after `Welcome` (a `Warning` may share its packet).
    pub decoder: FrameDecoder,
    pub welcome: Welcome,
    pub relay: String,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum EstablishError {
    #[error("cannot get a relay token: {0}")]
    Token(TokenError),
    #[error("cannot reach the relay at {relay}: {detail}")]
    Unreachable { relay: String, detail: String },
    #[error("the relay refused the connection: {message} ({code})")]
    Refused { code: RefusalCode, message: String },
    #[error("the relay at {relay} broke the protocol: {detail}")]
    Protocol { relay: String, detail: String },
    #[error("cannot set up the connection to the relay: {0}")]
    Local(String),
}

impl EstablishError {
    /// Worth another try with a fresh token: the network or the broker hiccuped, or the relay
    /// had a passing fault. A refusal about the grant or the token is final.
    pub fn is_transient(&self) -> bool {
        match self {
            EstablishError::Token(e) => e.transient,
            EstablishError::Unreachable { .. } => true,
            EstablishError::Refused { code, .. } => {
                matches!(code, RefusalCode::Internal | RefusalCode::AuditUnavailable)
            }
            EstablishError::Protocol { .. } | EstablishError::Local(_) => false,
        }
    }
}

/// Makes sessions: one UDP endpoint per address family for the whole run, and a new identity,
/// token and connection per session.
#[derive(Debug)]
pub(crate) struct Dialer {
    roots: RootCertStore,
    broker_host: Option<String>,
    congestion: Congestion,
    endpoint: Option<(Endpoint, bool)>,
}

impl Dialer {
    pub fn new(roots: RootCertStore, broker_host: Option<String>, congestion: Congestion) -> Self {
        Self {
            roots,
            broker_host,
            congestion,
            endpoint: None,
        }
    }

    fn endpoint(&mut self, v6: bool) -> Result<Endpoint, EstablishError> {
        if let Some((e, family)) = &self.endpoint
            && *family == v6
        {
            return Ok(e.clone());
        }
        let bind = if v6 {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0)
        } else {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
        };
        let e = portcullis_net::quic::endpoint(bind, None)
            .map_err(|e| EstablishError::Local(format!("cannot open a UDP socket: {e}")))?;
        self.endpoint = Some((e.clone(), v6));
        Ok(e)
    }

    /// Waits (bounded) for connections closed on this endpoint to say goodbye to the relay.
    pub async fn wait_idle(&self, limit: Duration) {
        if let Some((e, _)) = &self.endpoint {
            let _ = tokio::time::timeout(limit, e.wait_idle()).await;
        }
    }

    /// A new session for `grant_id`.
    pub async fn establish<T: TokenSource>(
        &mut self,
        grant_id: i64,
        tokens: &mut T,
    ) -> Result<Live, EstablishError> {
        // A fresh key pair per connection: the token is bound to this certificate, so neither
        // a leaked token nor a leaked key outlives the connection it was made for.
        let (cert, key) = portcullis_net::ephemeral_client_identity(CLIENT_CN)
            .map_err(|e| EstablishError::Local(e.to_string()))?;
        let thumbprint = portcullis_net::sha256_fingerprint(&cert);
        let ticket = tokens
            .relay_token(grant_id, &thumbprint)
            .await
            .map_err(EstablishError::Token)?;
        let relay = ticket.relay.clone();
        let modes = ticket
            .modes
            .iter()
            .map(|(port, mode)| (port.get(), mode.clone()))
            .collect();
        let mut roots = self.roots.clone();
        if let Some(pem) = &ticket.relay_ca {
            let extra = crate::trust::roots_from_pem(pem, "the relay CA the broker sent")
                .map_err(|e| EstablishError::Local(e.to_string()))?;
            roots.roots.extend(extra.roots);
        }
        let unreachable = |detail: String| EstablishError::Unreachable {
            relay: printable(&relay, 200),
            detail,
        };
        let (addr, server_name) = resolve(&relay, self.broker_host.as_deref())
            .await
            .map_err(unreachable)?;
        let mut config =
            portcullis_net::quic::client_config_with_roots(roots, cert, key, &[wire::ALPN])
                .map_err(|e| EstablishError::Local(e.to_string()))?;
        config.transport_config(portcullis_net::quic::transport_config_for(self.congestion));
        let endpoint = self.endpoint(addr.is_ipv6())?;
        let connecting = endpoint
            .connect_with(config, addr, &server_name)
            .map_err(|e| unreachable(e.to_string()))?;
        let conn = tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting)
            .await
            .map_err(|_| unreachable("no QUIC handshake within 15 s".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let protocol = |detail: String| EstablishError::Protocol {
            relay: printable(&relay, 200),
            detail,
        };
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let hello = Frame::Hello {
            version: wire::VERSION,
            token: Token::new(ticket.token),
        };
        write_frame(&mut send, &hello)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let mut decoder = FrameDecoder::new();
        let answer = tokio::time::timeout(HANDSHAKE_TIMEOUT, expect_frame(&mut recv, &mut decoder))
            .await
            .map_err(|_| protocol("no answer to Hello within 15 s".into()))?;
        let welcome = match answer {
            Ok(Frame::Welcome {
                session_id,
                grant_id,
                targets,
                window_end_unix_ms,
                remaining_ms,
            }) => Welcome {
                session_id,
                grant_id,
                targets,
                window_end: OffsetDateTime::from_unix_timestamp_nanos(
                    i128::from(window_end_unix_ms) * 1_000_000,
                )
                .ok(),
                remaining: Duration::from_millis(remaining_ms),
                modes,
            },
            Ok(Frame::Refused { code, message }) => {
                return Err(EstablishError::Refused {
                    code,
                    message: printable(&message, 500),
                });
            }
            Ok(other) => {
                return Err(protocol(format!(
                    "expected Welcome or Refused, got {}",
                    other.name()
                )));
            }
            // The relay may close right after refusing; a lost connection is a network matter.
            Err(FrameError::Wire(e)) => return Err(protocol(e.to_string())),
            Err(e) => return Err(unreachable(e.to_string())),
        };
        Ok(Live {
            conn,
            _control_send: send,
            control_recv: recv,
            decoder,
            welcome,
            relay,
        })
    }
}

/// The relay's socket address and the TLS server name for `host:port` (or `[v6]:port`). A relay
/// announced on an unspecified address (`0.0.0.0`, `::`: "all addresses of the broker") is
/// reached at the broker's host.
pub(crate) async fn resolve(
    relay: &str,
    broker_host: Option<&str>,
) -> Result<(SocketAddr, String), String> {
    let (host, port) = split_host_port(relay)
        .ok_or_else(|| "the broker gave a relay address that is not host:port".to_owned())?;
    let host = match host.parse::<IpAddr>() {
        Ok(ip) if ip.is_unspecified() => broker_host
            .ok_or_else(|| "the broker gave no usable relay host".to_owned())?
            .to_owned(),
        _ => host.to_owned(),
    };
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))?;
    Ok((addr, host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unbracketed_v6_relay_address_is_refused() {
        // The client and the site connector once disagreed on this one (issue 13).
        assert!(resolve("::1:4433", None).await.is_err());
    }

    #[tokio::test]
    async fn an_unspecified_relay_host_means_the_brokers_host() {
        let (addr, name) = resolve("0.0.0.0:4433", Some("127.0.0.1")).await.unwrap();
        assert_eq!(addr, "127.0.0.1:4433".parse().unwrap());
        assert_eq!(name, "127.0.0.1");
        let (addr, name) = resolve("[::1]:4433", None).await.unwrap();
        assert_eq!((addr.port(), name.as_str()), (4433, "::1"));
        assert!(resolve("0.0.0.0:4433", None).await.is_err());
    }
}
