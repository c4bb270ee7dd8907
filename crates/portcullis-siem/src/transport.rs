//! Getting messages to the collector.
//!
//! - `udp://host:port` (RFC 5426): one datagram per message, cut to [`UDP_MAX`] bytes on a
//!   character boundary. Nothing tells us a datagram was lost: UDP is best effort.
//! - `tcp://host:port` (RFC 6587) and `tcp+tls://host:port` (RFC 5425): octet-counting framing,
//!   `LEN SP MSG`, so a message may hold any byte and a receiver never guesses where it ends.
//!   TLS trusts the public web PKI plus an optional `ca_file`, and checks the certificate
//!   against the host of the URL.
//!
//! A syslog receiver never sends anything, so the only thing we can read is the end of the
//! connection. A task per connection reads (and, for TLS, processes alerts and tickets) and
//! flags EOF or an error; before every write we also ask the kernel (`recv` with `MSG_PEEK`)
//! whether the peer has closed or reset. A message is then not written into a connection the
//! receiver already left (the kernel would accept it and it would be lost). What cannot be
//! detected is a receiver that dies after our check, or with our data unread in its socket
//! buffer: see decision 0016 for the guarantee.

use std::fmt;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::AsFd as _;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{
    AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, BufWriter, WriteHalf,
};
use tokio::net::{TcpStream, UdpSocket};
use tokio::task::JoinHandle;

use crate::config::{ConfigError, SyslogConfig};

/// The largest datagram we send. rsyslog's default `maxMessageSize` is 8 KiB and RFC 5426
/// asks receivers for at least 2 KiB; longer messages (large `details`) are cut, so their JSON
/// will not parse, but `seq` and `hash` in the header survive.
pub const UDP_MAX: usize = 8192;
/// How long a connection (TCP connect plus TLS handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one write may block (a receiver that stopped reading): then we reconnect.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Udp,
    Tcp,
    Tls,
}

/// Where the collector listens: `udp://`, `tcp://` or `tcp+tls://` with a host and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub scheme: Scheme,
    /// A name or an address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Udp => "udp",
            Scheme::Tcp => "tcp",
            Scheme::Tls => "tcp+tls",
        };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for Endpoint {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, ConfigError> {
        let bad = |why: &str| {
            ConfigError::new(
                "server",
                format!(
                    "'{text}' {why}; write it as \"tcp+tls://host:6514\", \"tcp://host:601\" \
                     or \"udp://host:514\""
                ),
            )
        };
        let (scheme, rest) = text
            .trim()
            .split_once("://")
            .ok_or_else(|| bad("has no scheme"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "udp" => Scheme::Udp,
            "tcp" => Scheme::Tcp,
            "tcp+tls" | "tls" => Scheme::Tls,
            other => {
                return Err(bad(&format!(
                    "has the scheme '{other}', which is not supported"
                )));
            }
        };
        if rest.contains(['/', '?', '#', '@']) {
            return Err(bad("must be only scheme, host and port"));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, p) = v6
                .split_once(']')
                .ok_or_else(|| bad("has an unclosed '['"))?;
            (h, p.strip_prefix(':'))
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(bad("has no host"));
        }
        let port = port.ok_or_else(|| bad("has no port"))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad(&format!("has '{port}' for a port (1..65535)")))?;
        Ok(Endpoint {
            scheme,
            host: host.to_owned(),
            port,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("syslog.ca_file: cannot read {path}: {detail}")]
    CaFile { path: String, detail: String },
    #[error("the TLS settings for {endpoint} are unusable: {detail}")]
    TlsConfig { endpoint: String, detail: String },
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: std::io::Error,
    },
    #[error("connecting to {0} took longer than {CONNECT_TIMEOUT:?}")]
    ConnectTimeout(String),
    #[error("sending to {endpoint}: {source}")]
    Send {
        endpoint: String,
        source: std::io::Error,
    },
    #[error("a write to {0} blocked longer than {WRITE_TIMEOUT:?} (the collector stopped reading)")]
    WriteTimeout(String),
    #[error("the collector at {0} closed the connection")]
    PeerClosed(String),
}

/// Opens connections to one collector.
pub struct Connector {
    endpoint: Endpoint,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("endpoint", &self.endpoint.to_string())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Connector {
    /// Reads the CA file (if any) and prepares TLS; errors say what to fix.
    pub fn new(config: &SyslogConfig) -> Result<Self, TransportError> {
        let endpoint = config.endpoint.clone();
        let tls = match endpoint.scheme {
            Scheme::Tls => Some(tls_for(&endpoint, config.ca_file.as_deref())?),
            Scheme::Udp | Scheme::Tcp => None,
        };
        Ok(Self { endpoint, tls })
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub async fn connect(&self) -> Result<Connection, TransportError> {
        let name = self.endpoint.to_string();
        tokio::time::timeout(CONNECT_TIMEOUT, self.connect_now())
            .await
            .map_err(|_| TransportError::ConnectTimeout(name))?
    }

    async fn connect_now(&self) -> Result<Connection, TransportError> {
        let name = self.endpoint.to_string();
        let io = |source| TransportError::Connect {
            endpoint: name.clone(),
            source,
        };
        let target = (self.endpoint.host.as_str(), self.endpoint.port);
        if self.endpoint.scheme == Scheme::Udp {
            let addr = tokio::net::lookup_host(target)
                .await
                .map_err(io)?
                .next()
                .ok_or_else(|| {
                    io(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "the host name has no address",
                    ))
                })?;
            let local: SocketAddr = if addr.is_ipv4() {
                (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let sock = UdpSocket::bind(local).await.map_err(io)?;
            sock.connect(addr).await.map_err(io)?;
            return Ok(Connection {
                endpoint: name,
                inner: Inner::Udp(sock),
            });
        }
        let tcp = TcpStream::connect(target).await.map_err(io)?;
        tcp.set_nodelay(true).map_err(io)?;
        // A second handle on the same socket, only to ask the kernel whether the peer left.
        let probe = socket2::Socket::from(tcp.as_fd().try_clone_to_owned().map_err(io)?);
        let stream: Box<dyn Duplex> = match &self.tls {
            None => Box::new(tcp),
            Some((connector, server)) => {
                Box::new(connector.connect(server.clone(), tcp).await.map_err(io)?)
            }
        };
        let (mut read, write) = tokio::io::split(stream);
        let closed = Arc::new(AtomicBool::new(false));
        let flag = closed.clone();
        // The collector sends nothing; reading only finds the end (and lets TLS process what
        // the server sends after the handshake). Whatever it reads is dropped.
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            loop {
                match read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            flag.store(true, Ordering::Release);
        });
        Ok(Connection {
            endpoint: name,
            inner: Inner::Stream {
                write: BufWriter::with_capacity(64 * 1024, write),
                closed,
                probe,
                reader,
            },
        })
    }
}

fn tls_for(
    endpoint: &Endpoint,
    ca_file: Option<&Path>,
) -> Result<(tokio_rustls::TlsConnector, ServerName<'static>), TransportError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        let shown = path.display().to_string();
        let text = std::fs::read(path).map_err(|e| TransportError::CaFile {
            path: shown.clone(),
            detail: e.to_string(),
        })?;
        let certs = CertificateDer::pem_slice_iter(&text)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TransportError::CaFile {
                path: shown.clone(),
                detail: format!("not PEM certificates ({e})"),
            })?;
        if certs.is_empty() {
            return Err(TransportError::CaFile {
                path: shown,
                detail: "it holds no certificate".into(),
            });
        }
        for cert in certs {
            roots.add(cert).map_err(|e| TransportError::CaFile {
                path: shown.clone(),
                detail: format!("a certificate is not a usable CA ({e})"),
            })?;
        }
    }
    let config_err = |detail: String| TransportError::TlsConfig {
        endpoint: endpoint.to_string(),
        detail,
    };
    let config = rustls::ClientConfig::builder_with_provider(portcullis_net::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| config_err(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server = ServerName::try_from(endpoint.host.clone())
        .map_err(|e| config_err(format!("'{}' is not a server name ({e})", endpoint.host)))?;
    Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), server))
}

trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

/// One open connection (or UDP socket) to the collector.
pub struct Connection {
    endpoint: String,
    inner: Inner,
}

enum Inner {
    Udp(UdpSocket),
    Stream {
        write: BufWriter<WriteHalf<Box<dyn Duplex>>>,
        closed: Arc<AtomicBool>,
        probe: socket2::Socket,
        reader: JoinHandle<()>,
    },
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Inner::Stream { reader, .. } = &self.inner {
            reader.abort();
        }
    }
}

impl Connection {
    /// Whether the collector has closed or reset the connection (never for UDP).
    pub fn peer_closed(&self) -> bool {
        match &self.inner {
            Inner::Udp(_) => false,
            Inner::Stream { closed, probe, .. } => {
                if closed.load(Ordering::Acquire) {
                    return true;
                }
                // The socket is non-blocking (tokio's): 0 is EOF, WouldBlock is "open, nothing
                // sent"; bytes waiting (a TLS record the reader has not taken yet) mean open.
                let mut one = [MaybeUninit::<u8>::uninit(); 1];
                match probe.peek(&mut one) {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => false,
                    Err(_) => true,
                }
            }
        }
    }

    /// Queues one message (framed for TCP); [`Connection::flush`] sends what is queued.
    pub async fn send(&mut self, msg: &str) -> Result<(), TransportError> {
        if self.peer_closed() {
            return Err(TransportError::PeerClosed(self.endpoint.clone()));
        }
        let endpoint = &self.endpoint;
        let send_err = |source| TransportError::Send {
            endpoint: endpoint.clone(),
            source,
        };
        match &mut self.inner {
            Inner::Udp(sock) => {
                let datagram = truncate_utf8(msg, UDP_MAX);
                sock.send(datagram.as_bytes()).await.map_err(send_err)?;
                Ok(())
            }
            Inner::Stream { write, .. } => {
                let framed = frame(msg);
                tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&framed))
                    .await
                    .map_err(|_| TransportError::WriteTimeout(endpoint.clone()))?
                    .map_err(send_err)
            }
        }
    }

    /// Sends everything queued; checks once more that the collector is still there.
    pub async fn flush(&mut self) -> Result<(), TransportError> {
        if self.peer_closed() {
            return Err(TransportError::PeerClosed(self.endpoint.clone()));
        }
        let endpoint = &self.endpoint;
        if let Inner::Stream { write, .. } = &mut self.inner {
            tokio::time::timeout(WRITE_TIMEOUT, write.flush())
                .await
                .map_err(|_| TransportError::WriteTimeout(endpoint.clone()))?
                .map_err(|source| TransportError::Send {
                    endpoint: endpoint.clone(),
                    source,
                })?;
        }
        Ok(())
    }
}

/// Octet counting (RFC 6587 3.4.1, RFC 5425 4.3): the length in bytes, a space, the message.
pub fn frame(msg: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 8);
    out.extend_from_slice(msg.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(msg.as_bytes());
    out
}

/// `text` cut to at most `max` bytes without splitting a character.
pub fn truncate_utf8(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn servers_parse_and_bad_ones_say_why() {
        let e: Endpoint = "tcp+tls://siem.plant.example:6514".parse().unwrap();
        assert_eq!(
            (e.scheme, e.host.as_str(), e.port),
            (Scheme::Tls, "siem.plant.example", 6514)
        );
        let e: Endpoint = "udp://[::1]:514".parse().unwrap();
        assert_eq!(
            (e.scheme, e.host.as_str(), e.port),
            (Scheme::Udp, "::1", 514)
        );
        assert_eq!(e.to_string(), "udp://[::1]:514");
        let e: Endpoint = "tcp://10.0.0.9:601".parse().unwrap();
        assert_eq!(e.to_string(), "tcp://10.0.0.9:601");

        for (text, why) in [
            ("https://siem:443", "has the scheme 'https'"),
            ("tcp://siem", "has no port"),
            ("tcp://siem:", "has '' for a port"),
            ("udp://siem:99999", "has '99999' for a port"),
            ("siem:514", "has no scheme"),
            ("tcp://:601", "has no host"),
            ("tcp://siem:601/x", "must be only scheme, host and port"),
        ] {
            let err = text.parse::<Endpoint>().unwrap_err().to_string();
            assert!(err.starts_with("syslog.server: "), "{err}");
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn frames_count_bytes_not_characters() {
        assert_eq!(frame("abc"), b"3 abc");
        assert_eq!(frame("\u{e9}"), "2 \u{e9}".as_bytes());
        assert_eq!(frame(""), b"0 ");
    }

    #[test]
    fn datagrams_are_cut_on_a_character_boundary() {
        assert_eq!(truncate_utf8("abc", 8), "abc");
        assert_eq!(truncate_utf8("ab\u{e9}", 3), "ab");
        assert_eq!(truncate_utf8("ab\u{e9}", 4), "ab\u{e9}");
    }

    #[test]
    fn an_unreadable_or_empty_ca_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint: Endpoint = "tcp+tls://127.0.0.1:6514".parse().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = tls_for(&endpoint, Some(&missing))
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("syslog.ca_file: cannot read "), "{e}");
        assert!(e.contains("missing.pem"), "{e}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let e = tls_for(&endpoint, Some(&junk)).err().unwrap().to_string();
        assert!(e.contains("holds no certificate"), "{e}");
        assert!(tls_for(&endpoint, None).is_ok());
    }
}
