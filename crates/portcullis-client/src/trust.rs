//! Which certificate authorities the client trusts, for HTTPS to the broker and QUIC to the relay.
//!
//! With `--ca` at login, exactly the CA certificates in that PEM file (a development broker's
//! `<data-dir>/tls/ca.pem`, or a plant's own CA) and nothing else; without it, the public web PKI
//! (Mozilla's roots as shipped in `webpki-roots`). Both use `portcullis_net`'s narrowed rustls
//! provider, so the client offers the same suites the broker accepts.

use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{what} is not valid PEM: {detail}")]
    Pem { what: String, detail: String },
    #[error(
        "{what} holds no certificate (expected PEM blocks starting with -----BEGIN CERTIFICATE-----)"
    )]
    NoCertificate { what: String },
    #[error("certificate {index} in {what} cannot be used as a trust anchor: {detail}")]
    Anchor {
        what: String,
        index: usize,
        detail: String,
    },
    #[error("cannot build the TLS configuration: {0}")]
    Config(String),
}

/// The CA certificates in `pem`, checked to be usable trust anchors. `what` names the source in
/// errors (a file name, or "the stored CA").
pub fn roots_from_pem(pem: &str, what: &str) -> Result<RootCertStore, TrustError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TrustError::Pem {
            what: what.to_owned(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TrustError::NoCertificate {
            what: what.to_owned(),
        });
    }
    let mut roots = RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        roots.add(cert).map_err(|e| TrustError::Anchor {
            what: what.to_owned(),
            index: i + 1,
            detail: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// The trust anchors for a stored CA PEM, or the public web PKI when there is none.
pub fn roots(ca_pem: Option<&str>) -> Result<RootCertStore, TrustError> {
    match ca_pem {
        Some(pem) => roots_from_pem(pem, "the stored CA certificate"),
        None => Ok(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        }),
    }
}

/// The HTTPS client configuration for the broker's web API: TLS 1.3 and 1.2 on
/// `portcullis_net`'s provider, trusting `roots`, ALPN `h2` then `http/1.1`.
pub fn https_config(roots: RootCertStore) -> Result<rustls::ClientConfig, TrustError> {
    let mut config = rustls::ClientConfig::builder_with_provider(portcullis_net::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TrustError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = portcullis_net::HTTPS_ALPN
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .collect();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dev_ca_is_a_usable_root_and_junk_is_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let files =
            portcullis_net::ensure_dev_pki(&dir.path().join("tls"), &["127.0.0.1".into()]).unwrap();
        let pem = std::fs::read_to_string(&files.ca_cert).unwrap();
        assert_eq!(roots_from_pem(&pem, "ca.pem").unwrap().len(), 1);
        assert!(https_config(roots(Some(&pem)).unwrap()).is_ok());

        let e = roots_from_pem("hello", "notes.txt")
            .unwrap_err()
            .to_string();
        assert!(e.contains("notes.txt holds no certificate"), "{e}");
        assert!(!roots(None).unwrap().is_empty());
    }
}
