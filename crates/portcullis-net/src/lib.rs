//! Portcullis networking.
//!
//! - [`tls`]: rustls configurations on the `ring` provider: the HTTPS server (TLS 1.3 and 1.2,
//!   AEAD ECDHE suites only, ALPN `h2`/`http/1.1`), a client trusting one CA file (for the CLI and
//!   tests), loading a certificate chain and its key from PEM files, and SHA-256 certificate
//!   fingerprints (the value relay tokens are bound to).
//! - [`devca`]: the development CA that `portcullis serve` creates in a fresh data directory, the
//!   server certificate it issues (re-issued when the host names change or expiry nears), client
//!   certificates for site connectors, and the vendor client's in-memory ephemeral identity.
//! - [`frames`]: wire frames on QUIC streams (read, write, refuse), for relay, client,
//!   connector and their tests alike; [`addr`]: the one `host:port` parser.
//! - [`splice`]: the data path: one tunnelled TCP connection's bytes both ways, with half-close,
//!   byte counts, idle timeout, cancellation, optional per-direction inspectors, and why it
//!   ended. The relay, the vendor client and the site connector only drive it.
//! - [`siteca`]: the site CA (`<data dir>/keys/site-ca`) that signs site connectors' certificate
//!   requests at enrollment.
//!
//! Every error is a [`NetError`] whose message names the file involved and says what is wrong.
#![forbid(unsafe_code)]

use std::io;
use std::path::PathBuf;

pub mod addr;
pub mod devca;
pub mod frames;
pub mod modbus_filter;
pub mod quic;
pub mod short_queue;
pub mod siteca;
pub mod splice;
pub mod tls;

pub use addr::split_host_port;
pub use devca::{
    DevCa, TlsFiles, ensure_dev_pki, ensure_dev_pki_at, ephemeral_client_identity,
    issue_client_cert,
};
pub use siteca::{SITE_CA_COMMON_NAME, SignedSite, ensure_ca, sign_site_csr};
pub use tls::{
    HTTPS_ALPN, client_config_trusting, crypto_provider, https_server_config, load_certified_key,
    sha256_fingerprint,
};

/// Why a certificate, key or TLS configuration could not be loaded, made or checked. Messages
/// never contain key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("{path} is larger than {limit} bytes, too large for a PEM certificate or key file")]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{path} is not valid PEM: {source}")]
    Pem {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error(
        "no certificate found in {path} (expected PEM blocks starting with -----BEGIN CERTIFICATE-----)"
    )]
    NoCertificate { path: PathBuf },
    #[error(
        "no private key found in {path} (expected an unencrypted PEM key: BEGIN PRIVATE KEY, BEGIN EC PRIVATE KEY or BEGIN RSA PRIVATE KEY)"
    )]
    NoPrivateKey { path: PathBuf },
    #[error("the private key in {path} cannot be used for TLS: {source}")]
    UnusableKey {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("the first certificate in {path} cannot be used: {source}")]
    UnusableCertificate {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error(
        "key does not match certificate: {key} is not the private key of the first certificate in {cert}"
    )]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error(
        "{path} is accessible by group or others (mode {mode:04o}); run chmod {wanted:o} {path}"
    )]
    Permissions {
        path: PathBuf,
        mode: u32,
        wanted: u32,
    },
    #[error(
        "{hostname:?} is not a valid host name or IP address for a server certificate (wildcards are not supported)"
    )]
    InvalidHostname { hostname: String },
    #[error(
        "development CA certificate {cert} exists but its private key {key} does not; restore the key, or move {dir} aside to create a new CA (clients must then trust the new ca.pem)"
    )]
    CaKeyMissing {
        cert: PathBuf,
        key: PathBuf,
        dir: PathBuf,
    },
    #[error("{path} does not hold a usable CA: {reason}")]
    BadCa { path: PathBuf, reason: String },
    #[error(
        "development CA {path} expires {not_after} (less than 7 days from now, or already); move {dir} aside to create a new one (clients must then trust the new ca.pem)"
    )]
    CaExpired {
        path: PathBuf,
        not_after: time::OffsetDateTime,
        dir: PathBuf,
    },
    #[error(
        "the development CA in {dir} cannot issue a valid server certificate ({source}); move {dir} aside to create a new one (clients must then trust the new ca.pem)"
    )]
    CaCannotIssue {
        dir: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot create {what}: {source}")]
    Generate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("invalid certificate request: {reason}")]
    InvalidRequest { reason: String },
    #[error("the site CA in {dir} cannot be used: {reason}")]
    SiteCa { dir: PathBuf, reason: String },
    #[error("cannot build the TLS configuration: {source}")]
    Config {
        #[source]
        source: rustls::Error,
    },
    #[error("certificate {index} in {path} cannot be used as a trust anchor: {source}")]
    TrustAnchor {
        path: PathBuf,
        index: usize,
        #[source]
        source: rustls::Error,
    },
}

impl NetError {
    pub(crate) fn io(path: &std::path::Path, action: &'static str, source: io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            action,
            source,
        }
    }
}
