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
//!   on a LAN or loopback; the numbers and why are in `docs/BENCHMARKS.md`. Its congestion
//!   controller is a setting ([`Congestion`], `--congestion`), BBR by default: decision 0018.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, MtuDiscoveryConfig, TransportConfig, VarInt};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use crate::NetError;
use crate::short_queue::ShortQueueFactory;
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
/// Flow-control windows: one stream may have [`STREAM_WINDOW`] in flight and the connection
/// [`CONNECTION_WINDOW`]. The connection's window is twice a stream's, so one bulk transfer
/// cannot take all the credit from an interactive stream beside it (a Modbus poll next to a file
/// copy). The connection's window is also what bounds a burst arriving at the receiver's UDP
/// socket: at 32 MiB, eight busy streams overflowed the socket's buffer on loopback ([`UDP_BUFFER`])
/// (thousands of drops per run, each a congestion back-off); at 6 MiB there were none and
/// throughput was unchanged (docs/BENCHMARKS.md). The windows are limits, not allocations: an
/// idle stream holds no buffer.
pub fn transport_config() -> Arc<TransportConfig> {
    transport_config_for(Congestion::default())
}

/// [`transport_config`] with another congestion controller.
pub fn transport_config_for(congestion: Congestion) -> Arc<TransportConfig> {
    transport_config_with(IDLE_TIMEOUT, KEEP_ALIVE, congestion)
}

/// [`transport_config`] with another idle timeout and keep-alive (the site connector notices a
/// dead link faster). An idle timeout beyond QUIC's range (~146 years in ms) cannot be meant:
/// it becomes [`IDLE_TIMEOUT`] rather than no timeout at all.
pub fn transport_config_with(
    idle: Duration,
    keep_alive: Duration,
    congestion: Congestion,
) -> Arc<TransportConfig> {
    let mut t = TransportConfig::default();
    t.congestion_controller_factory(congestion.factory());
    t.max_concurrent_bidi_streams(VarInt::from_u32(MAX_STREAMS));
    t.max_concurrent_uni_streams(VarInt::from_u32(0));
    t.stream_receive_window(VarInt::from_u32(STREAM_WINDOW));
    t.receive_window(VarInt::from_u32(CONNECTION_WINDOW));
    t.send_window(u64::from(CONNECTION_WINDOW));
    let fallback = IdleTimeout::from(VarInt::from_u32(30_000));
    t.max_idle_timeout(Some(IdleTimeout::try_from(idle).unwrap_or(fallback)));
    t.keep_alive_interval(Some(keep_alive));
    t.datagram_receive_buffer_size(None);
    let mut mtu = MtuDiscoveryConfig::default();
    mtu.upper_bound(MAX_PACKET_PAYLOAD);
    t.mtu_discovery_config(Some(mtu));
    Arc::new(t)
}

/// The congestion controller of a QUIC connection: `--congestion bbr|cubic|newreno` on the relay,
/// the vendor's client and the site connector. Each end controls what it sends, so the relay's
/// setting governs downloads and the client's uploads.
///
/// BBR is the default (decision 0018): it sizes its window from the bottleneck's measured rate
/// instead of filling the queue until loss, so random loss (Wi-Fi, LTE) does not collapse it;
/// with its window capped at 1.5 x the measured BDP ([`crate::short_queue`]), a deep buffer does
/// not hold an interactive connection behind a bulk one. Cubic (quinn's own
/// default) and NewReno stay for paths where BBR misbehaves, and for comparing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Congestion {
    #[default]
    Bbr,
    Cubic,
    NewReno,
}

impl Congestion {
    pub const ALL: [Congestion; 3] = [Congestion::Bbr, Congestion::Cubic, Congestion::NewReno];

    pub fn as_str(self) -> &'static str {
        match self {
            Congestion::Bbr => "bbr",
            Congestion::Cubic => "cubic",
            Congestion::NewReno => "newreno",
        }
    }

    fn factory(self) -> Arc<dyn quinn::congestion::ControllerFactory + Send + Sync> {
        use quinn::congestion::{BbrConfig, CubicConfig, NewRenoConfig};
        match self {
            Congestion::Bbr => Arc::new(ShortQueueFactory(Arc::new(BbrConfig::default()))),
            Congestion::Cubic => Arc::new(CubicConfig::default()),
            Congestion::NewReno => Arc::new(NewRenoConfig::default()),
        }
    }
}

impl fmt::Display for Congestion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Congestion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase();
        Congestion::ALL
            .into_iter()
            .find(|c| c.as_str() == wanted)
            .ok_or_else(|| {
                format!("'{s}' is not a congestion controller: choose bbr, cubic or newreno")
            })
    }
}

/// Flow-control window of one stream: at 50 ms round trip, ~500 Mbit/s per tunnelled TCP
/// connection; on loopback or a LAN, more than the CPU can fill.
pub const STREAM_WINDOW: u32 = 3 * 1024 * 1024;
/// Flow-control window of a whole connection (one vendor session).
pub const CONNECTION_WINDOW: u32 = 2 * STREAM_WINDOW;

/// Upper bound of path MTU discovery (UDP payload bytes per QUIC packet).
///
/// Packets start at quinn's safe 1200 and discovery probes upwards; on an Ethernet path it stops
/// at the path's MTU after a few lost probes. The bound is not the 64 KiB a loopback or jumbo path
/// could carry because of segmentation offload: quinn hands the kernel up to 10 packets in one
/// `sendmsg` (GSO), and Linux refuses a batch larger than one IP datagram (65,507 bytes of UDP
/// payload) with EMSGSIZE, which quinn counts as loss. With a 64 KiB bound, discovery reached
/// ~64 KiB, every batch was refused, the black-hole detector dropped the MTU back to 1200 for the
/// rest of the connection, and throughput halved. 6,550 bytes is the largest packet of which 10
/// fit in one batch; on loopback it carries 5.5x fewer packets per byte than 1200
/// (docs/BENCHMARKS.md, "Relay tunnel (issue 4)").
pub const MAX_PACKET_PAYLOAD: u16 = 6550;

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

/// Largest UDP payload our endpoints accept and advertise (`max_udp_payload_size`). quinn's
/// default (1472) would cap path MTU discovery at Ethernet size even where the path carries
/// more; what we send is bounded by [`MAX_PACKET_PAYLOAD`].
pub const MAX_UDP_PAYLOAD: u16 = 65527;
/// Socket buffers asked for on both ends: the default 208 KiB receive buffer drops bursts at
/// multi-Gbit/s rates, and each drop makes the congestion controller back off. The kernel
/// caps the request at `net.core.rmem_max`/`wmem_max`.
pub const UDP_BUFFER: usize = 4 * 1024 * 1024;

/// Binds a QUIC endpoint on `addr` (a server when `server` is given, else client-only) with the
/// payload size and socket buffers above, and a random stateless-reset key.
pub fn endpoint(
    addr: std::net::SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> std::io::Result<quinn::Endpoint> {
    bind(addr, server, quinn::EndpointConfig::default())
}

/// [`endpoint`] for a relay, with a stateless-reset key kept across restarts (issue 16,
/// decision 0007's lead). A relay that restarted answers its peers' next packets with a stateless
/// reset they can check, because the key, and so each connection's reset token, is the one they
/// were given before: clients and connectors notice at their next packet (within a keep-alive)
/// instead of at the idle timeout. The key never leaves the relay; a peer only ever sees tokens
/// derived from it.
pub fn relay_endpoint(
    addr: std::net::SocketAddr,
    server: quinn::ServerConfig,
    reset_key: &[u8; 32],
) -> std::io::Result<quinn::Endpoint> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, reset_key);
    let mut config = quinn::EndpointConfig::new(Arc::new(key));
    // quinn's default connection IDs carry a check keyed per process, so a restarted relay would
    // drop its peers' packets as "invalid CID" before it could reset them: random IDs are
    // accepted as unknown, and answered with the reset (at most one per `min_reset_interval`).
    config.cid_generator(|| Box::new(RandomCids));
    bind(addr, Some(server), config)
}

/// Random 8-byte connection IDs that any later process takes as unknown rather than invalid.
#[derive(Debug)]
struct RandomCids;

impl quinn::ConnectionIdGenerator for RandomCids {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        let mut id = [0u8; 8];
        // ring's system generator reads getrandom(2), which cannot fail once the kernel's pool
        // is initialised (long before a relay starts).
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id);
        quinn::ConnectionId::new(&id)
    }

    fn cid_len(&self) -> usize {
        8
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

fn bind(
    addr: std::net::SocketAddr,
    server: Option<quinn::ServerConfig>,
    mut config: quinn::EndpointConfig,
) -> std::io::Result<quinn::Endpoint> {
    let socket = std::net::UdpSocket::bind(addr)?;
    let sock = socket2::SockRef::from(&socket);
    // Best effort: an unprivileged process may get less than it asks for.
    let _ = sock.set_recv_buffer_size(UDP_BUFFER);
    let _ = sock.set_send_buffer_size(UDP_BUFFER);
    config
        .max_udp_payload_size(MAX_UDP_PAYLOAD)
        .map_err(|e| std::io::Error::other(format!("max_udp_payload_size: {e}")))?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no async runtime for the QUIC endpoint"))?;
    quinn::Endpoint::new(config, server, socket, runtime)
}

/// Waits for bytes on `tcp` and returns what is there as one chunk for
/// `quinn::SendStream::write_chunk`, or `None` at the end of the stream.
///
/// The chunk is cut from `buf` (at most `size` bytes are read at once) and handed to quinn whole,
/// so no copy of ours sits between the socket and the packet. Memory is taken only once bytes are
/// waiting, so an idle tunnelled connection holds no buffer; `buf`'s allocation is reused once
/// quinn has released every chunk cut from it (acknowledged by the peer).
pub async fn read_tcp_chunk(
    tcp: &tokio::net::tcp::ReadHalf<'_>,
    buf: &mut BytesMut,
    size: usize,
) -> std::io::Result<Option<Bytes>> {
    loop {
        tcp.readable().await?;
        buf.reserve(size);
        match tcp.try_read_buf(buf) {
            Ok(0) => return Ok(None),
            Ok(_) => return Ok(Some(buf.split().freeze())),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn congestion_names_parse_back_and_a_wrong_one_is_explained() {
        for c in Congestion::ALL {
            assert_eq!(c.as_str().parse::<Congestion>(), Ok(c));
            assert_eq!(c.to_string().to_uppercase().parse::<Congestion>(), Ok(c));
        }
        assert_eq!(Congestion::default(), Congestion::Bbr);
        assert_eq!(
            "vegas".parse::<Congestion>(),
            Err("'vegas' is not a congestion controller: choose bbr, cubic or newreno".into())
        );
    }
}
