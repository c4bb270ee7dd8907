//! rustls configurations and PEM loading.
//!
//! Everything here uses one [`CryptoProvider`], built from `ring` and narrowed on purpose (see
//! [`crypto_provider`]), rather than the process-wide default: a dependency that enables
//! another provider (aws-lc-rs) can then neither make our builders ambiguous nor widen our suites.

use std::fs::{self, File};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::crypto::ring::{cipher_suite, kx_group};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::NetError;

/// ALPN protocols of the HTTPS listener, in preference order.
pub const HTTPS_ALPN: &[&str] = &["h2", "http/1.1"];

/// Longest PEM file we read. A chain of a few certificates is a few KiB; the bound keeps a wrong
/// path (a log file, a disk image) from being read whole.
const MAX_PEM_LEN: u64 = 1 << 20;

/// TLS 1.3 and 1.2 only (SECURITY.md "Web hardening"). The QUIC relay narrows this to TLS 1.3
/// itself: QUIC cannot run over anything else.
static VERSIONS: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The `ring` provider restricted to AEAD suites with (EC)DHE key exchange: the three TLS 1.3
/// suites and, for TLS 1.2, ECDHE with AES-GCM or ChaCha20-Poly1305 (ECDSA or RSA certificates).
/// No CBC, no static RSA key exchange, no finite-field DH. These are the suites ring offers today;
/// listing them keeps a future rustls default from silently widening the set. Key exchange: X25519,
/// P-256, P-384.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ],
        kx_groups: vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1],
        ..rustls::crypto::ring::default_provider()
    })
}

/// Loads a PEM certificate chain (leaf first) and its private key. They may be the same file.
/// Checks that the key is usable by rustls and belongs to the first certificate, so a mistake shows
/// up at startup with both file names rather than as a failed handshake later.
///
/// Key file permissions are not checked here: operators' keys come from many places (ACME clients
/// keep them group-readable for a `ssl-cert` group). The development CA checks its own.
pub fn load_certified_key(
    cert_pem: &Path,
    key_pem: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), NetError> {
    let certs = load_certs(cert_pem)?;
    let key = load_private_key(key_pem)?;

    check_key_matches(&certs, key.clone_key(), cert_pem, key_pem)?;
    Ok((certs, key))
}

/// Checks that `key` is usable by rustls and is the key of the first certificate in `certs`.
pub(crate) fn check_key_matches(
    certs: &[CertificateDer<'static>],
    key: PrivateKeyDer<'static>,
    cert_path: &Path,
    key_path: &Path,
) -> Result<(), NetError> {
    let signing_key = crypto_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|source| NetError::UnusableKey {
            path: key_path.to_owned(),
            source,
        })?;
    match CertifiedKey::new(certs.to_vec(), signing_key).keys_match() {
        // `Unknown`: the key type cannot report its public key, so there is nothing to compare;
        // rustls accepts that too. ring's ECDSA, Ed25519 and RSA keys all can.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(()),
        Err(rustls::Error::InconsistentKeys(_)) => Err(NetError::KeyMismatch {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
        }),
        Err(source) => Err(NetError::UnusableCertificate {
            path: cert_path.to_owned(),
            source,
        }),
    }
}

/// The HTTPS server configuration: [`crypto_provider`], TLS 1.3 and 1.2, no client certificates
/// (people log in with password and TOTP), ALPN [`HTTPS_ALPN`]. 0-RTT stays off (rustls' default
/// `max_early_data_size` of 0): replayable early data has no place in front of a state-changing API.
pub fn https_server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, NetError> {
    let mut config = ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|source| NetError::Config { source })?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|source| NetError::Config { source })?;
    config.alpn_protocols = alpn(HTTPS_ALPN);
    Ok(Arc::new(config))
}

/// A client configuration that trusts exactly the CA certificates in `ca_pem` (not the system
/// roots), on [`crypto_provider`] with TLS 1.3 and 1.2, offering the ALPN protocols `alpn` in
/// order (empty: no ALPN extension).
pub fn client_config_trusting(ca_pem: &Path, alpn: &[&str]) -> Result<Arc<ClientConfig>, NetError> {
    let roots = load_roots(ca_pem)?;
    let mut config = ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|source| NetError::Config { source })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = self::alpn(alpn);
    Ok(Arc::new(config))
}

/// The CA certificates in `ca_pem` as trust anchors (every one must be usable as one).
pub(crate) fn load_roots(ca_pem: &Path) -> Result<RootCertStore, NetError> {
    let mut roots = RootCertStore::empty();
    for (index, cert) in load_certs(ca_pem)?.into_iter().enumerate() {
        roots.add(cert).map_err(|source| NetError::TrustAnchor {
            path: ca_pem.to_owned(),
            index: index + 1,
            source,
        })?;
    }
    Ok(roots)
}

/// SHA-256 of a DER certificate as 64 lowercase hex digits: how certificates are shown to people
/// and the form `portcullis_auth::token::parse_thumbprint` accepts for the `cnf` binding.
pub fn sha256_fingerprint(cert_der: &[u8]) -> String {
    hex::encode(Sha256::digest(cert_der))
}

fn alpn(protocols: &[&str]) -> Vec<Vec<u8>> {
    protocols.iter().map(|p| p.as_bytes().to_vec()).collect()
}

/// All certificates in a PEM file, in file order; other PEM sections (a key in a combined file)
/// are skipped. At least one is required.
pub(crate) fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, NetError> {
    let bytes = read_pem_file(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| pem_error(path, source))?;
    if certs.is_empty() {
        return Err(NetError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, SEC1 or PKCS#1) in a PEM file.
pub(crate) fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, NetError> {
    let bytes = read_pem_file(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => NetError::NoPrivateKey {
            path: path.to_owned(),
        },
        other => pem_error(path, other),
    })
}

fn pem_error(path: &Path, source: pem::Error) -> NetError {
    NetError::Pem {
        path: path.to_owned(),
        source,
    }
}

/// Reads a whole PEM file (at most [`MAX_PEM_LEN`]) into a buffer wiped on drop, since it may hold
/// a private key.
pub(crate) fn read_pem_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, NetError> {
    // Stat before opening so a FIFO or device at the path is refused instead of blocking open.
    let meta = fs::metadata(path).map_err(|e| NetError::io(path, "read", e))?;
    if !meta.is_file() {
        return Err(NetError::NotAFile {
            path: path.to_owned(),
        });
    }
    let file = File::open(path).map_err(|e| NetError::io(path, "open", e))?;
    let mut bytes = Zeroizing::new(Vec::with_capacity(
        usize::try_from(meta.len().min(MAX_PEM_LEN)).unwrap_or(0),
    ));
    file.take(MAX_PEM_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| NetError::io(path, "read", e))?;
    if bytes.len() as u64 > MAX_PEM_LEN {
        return Err(NetError::TooLarge {
            path: path.to_owned(),
            limit: MAX_PEM_LEN,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::BTreeSet;

    use rustls::CipherSuite;

    use super::*;

    #[test]
    fn fingerprint_is_lowercase_hex_sha256() {
        // FIPS 180-2 test vector.
        assert_eq!(
            sha256_fingerprint(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn provider_offers_only_aead_ecdhe_suites() {
        let suites: BTreeSet<u16> = crypto_provider()
            .cipher_suites
            .iter()
            .map(|s| u16::from(s.suite()))
            .collect();
        let wanted: BTreeSet<u16> = [
            CipherSuite::TLS13_AES_128_GCM_SHA256,
            CipherSuite::TLS13_AES_256_GCM_SHA384,
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
            CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ]
        .map(u16::from)
        .into();
        assert_eq!(suites, wanted);
    }

    #[test]
    fn missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.pem");
        let err = load_certs(&path).unwrap_err();
        assert!(matches!(err, NetError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains(&path.display().to_string()));
    }

    #[test]
    fn directory_and_oversized_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            load_certs(dir.path()),
            Err(NetError::NotAFile { .. })
        ));
        let big = dir.path().join("big.pem");
        let limit = usize::try_from(MAX_PEM_LEN).unwrap();
        fs::write(&big, vec![b'a'; limit + 1]).unwrap();
        let err = load_private_key(&big).unwrap_err();
        assert!(matches!(err, NetError::TooLarge { .. }), "{err:?}");
        assert!(err.to_string().contains("big.pem"));
    }
}
