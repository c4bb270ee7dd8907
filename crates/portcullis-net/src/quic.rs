//! QUIC endpoint configurations for the relay and its clients (quinn on rustls/`ring`).
//!
//! - TLS 1.3 only (QUIC cannot run over anything else), on [`crypto_provider`]'s suites.
//! - 0-RTT off on both sides: the server's `max_early_data_size` stays 0 and the client never
//!   enables early data, so nothing a client sends can be replayed.
//! - The relay requires a client certificate. For vendor clients it accepts any well-formed one
//!   inside its validity period ([`AnyClientCert`]): the TLS handshake proves the client holds the
//!   key, and the relay token's `cnf` says which key the broker minted the token for. Whoever
//!   presents a certificate the token does not name is refused by the relay, not by TLS.
//! - One transport configuration ([`transport_config`]) for both ends, tuned for bulk TCP tunnels
//!   on a LAN or loopback; the numbers and why are in `docs/BENCHMARKS.md`.

use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, MtuDiscoveryConfig, TransportConfig, VarInt};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use crate::NetError;
use crate::tls::{crypto_provider, load_roots};

/// How long a QUIC connection may be silent before either end drops it. Clients send keep-alives
/// at a third of this, so only a dead peer or path reaches it.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Keep-alive interval for both ends.
pub const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// Bidirectional streams a peer may have open at once on one connection (one per tunnelled TCP
/// connection, plus the control stream).
pub const MAX_STREAMS: u32 = 4096;

/// The transport settings both ends use.
///
/// Flow-control windows are sized for a fast LAN: one stream may have 8 MiB in flight and the
/// connection 32 MiB, so a single tunnelled TCP connection is not window-limited on loopback or
/// a 1 Gbit/s path with a few milliseconds of delay. The windows are limits, not allocations:
/// an idle stream holds no buffer.
pub fn transport_config() -> Arc<TransportConfig> {
    let mut t = TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(MAX_STREAMS));
    t.max_concurrent_uni_streams(VarInt::from_u32(0));
    t.stream_receive_window(VarInt::from_u32(8 * 1024 * 1024));
    t.receive_window(VarInt::from_u32(32 * 1024 * 1024));
    t.send_window(32 * 1024 * 1024);
    t.max_idle_timeout(Some(
        IdleTimeout::try_from(IDLE_TIMEOUT).unwrap_or(IdleTimeout::from(VarInt::from_u32(30_000))),
    ));
    t.keep_alive_interval(Some(KEEP_ALIVE));
    t.datagram_receive_buffer_size(None);
    // Let path MTU discovery search up to the largest UDP payload instead of quinn's 1452. The
    // search is also capped by the peer's `max_udp_payload_size` (quinn's `EndpointConfig`,
    // 1472 by default), so with default endpoints this only adds 20 bytes per packet; endpoints
    // built with a larger `max_udp_payload_size` get ~64 KiB packets on loopback (fewer packets
    // per byte: headers, ACKs and loss bookkeeping are per packet). On an Ethernet path the
    // search stops at the path's MTU after a few lost probes; packets start at quinn's safe
    // 1200 either way. docs/BENCHMARKS.md, "Relay tunnel (issue 4)", has the measurements.
    let mut mtu = MtuDiscoveryConfig::default();
    mtu.upper_bound(u16::MAX);
    t.mtu_discovery_config(Some(mtu));
    Arc::new(t)
}

/// The relay's server configuration: our certificate chain and key, ALPN `alpn`, TLS 1.3 only,
/// a client certificate required, no 0-RTT.
pub fn relay_server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    alpn: &[&str],
) -> Result<quinn::ServerConfig, NetError> {
    let provider = crypto_provider();
    let mut tls = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| NetError::Config { source })?
        .with_client_cert_verifier(Arc::new(AnyClientCert { provider }))
        .with_single_cert(certs, key)
        .map_err(|source| NetError::Config { source })?;
    tls.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    tls.max_early_data_size = 0;
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| NetError::InvalidRequest {
        reason: format!("the relay's TLS configuration cannot be used for QUIC: {e}"),
    })?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport_config());
    // Clients must prove they own their address before we spend a handshake on them.
    config.migration(true);
    Ok(config)
}

/// A client configuration that trusts exactly the CA certificates in `ca_pem`, presents
/// `client_cert`, and offers ALPN `alpn`.
pub fn client_config(
    ca_pem: &std::path::Path,
    client_cert: CertificateDer<'static>,
    client_key: PrivateKeyDer<'static>,
    alpn: &[&str],
) -> Result<quinn::ClientConfig, NetError> {
    client_config_with_roots(load_roots(ca_pem)?, client_cert, client_key, alpn)
}

/// As [`client_config`], with the trust anchors already loaded.
pub fn client_config_with_roots(
    roots: RootCertStore,
    client_cert: CertificateDer<'static>,
    client_key: PrivateKeyDer<'static>,
    alpn: &[&str],
) -> Result<quinn::ClientConfig, NetError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| NetError::Config { source })?
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![client_cert], client_key)
        .map_err(|source| NetError::Config { source })?;
    tls.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    tls.enable_early_data = false;
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| NetError::InvalidRequest {
        reason: format!("the client's TLS configuration cannot be used for QUIC: {e}"),
    })?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport_config());
    Ok(config)
}

/// Requires a client certificate and accepts any well-formed X.509 certificate inside its
/// validity period. The handshake signature is still verified, so the client proves it holds the
/// certificate's key; what that key may do is decided by the relay token bound to it.
#[derive(Debug)]
pub struct AnyClientCert {
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let (rest, cert) = x509_parser::parse_x509_certificate(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        if !rest.is_empty() {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::BadEncoding,
            ));
        }
        let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        let validity = cert.validity();
        if now < validity.not_before.timestamp() {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidYet,
            ));
        }
        if now > validity.not_after.timestamp() {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Expired,
            ));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Unreachable: the relay speaks TLS 1.3 only.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Largest UDP payload our endpoints accept and advertise. quinn's default (1472) caps path MTU
/// discovery at Ethernet size even on loopback; with this, discovery finds what the path carries
/// (64 KiB on loopback, 1500 - headers on Ethernet, where probes beyond it are simply lost).
pub const MAX_UDP_PAYLOAD: u16 = 65527;
/// Socket buffers asked for on both ends: the default 208 KiB receive buffer drops bursts at
/// multi-Gbit/s rates, and each drop makes the congestion controller back off. The kernel
/// caps the request at `net.core.rmem_max`/`wmem_max`.
pub const UDP_BUFFER: usize = 4 * 1024 * 1024;

/// Binds a QUIC endpoint on `addr` (a server when `server` is given, else client-only) with the
/// payload size and socket buffers above.
pub fn endpoint(
    addr: std::net::SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> std::io::Result<quinn::Endpoint> {
    let socket = std::net::UdpSocket::bind(addr)?;
    let sock = socket2::SockRef::from(&socket);
    // Best effort: an unprivileged process may get less than it asks for.
    let _ = sock.set_recv_buffer_size(UDP_BUFFER);
    let _ = sock.set_send_buffer_size(UDP_BUFFER);
    let mut config = quinn::EndpointConfig::default();
    config
        .max_udp_payload_size(MAX_UDP_PAYLOAD)
        .map_err(|e| std::io::Error::other(format!("max_udp_payload_size: {e}")))?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no async runtime for the QUIC endpoint"))?;
    quinn::Endpoint::new(config, server, socket, runtime)
}
