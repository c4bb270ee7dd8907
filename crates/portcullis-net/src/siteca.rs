//! The site CA: it signs the certificate a site connector asks for when it enrolls
//! (docs/decisions/0007-site-connectors.md). A CA of its own, not the HTTPS development CA:
//! which connectors may carry a plant's traffic is a different trust decision from which server
//! is the broker, and deployments that bring their own HTTPS certificates still need it.
//!
//! It lives in `<data dir>/keys/site-ca/` (`ca.pem` 0644, `ca.key` 0600, directory 0700), made
//! on first use with the development CA's atomic writes and directory lock. The relay pins each
//! site's exact certificate fingerprint, so the CA's signature is a second line, not the only one.
//!
//! Only the connector's public key is taken from its request (after checking the request's
//! signature, which proves the connector holds the private key): the subject, usages and
//! lifetime are ours, so a request cannot ask for a CA certificate, a server certificate or
//! another site's name.

use std::path::Path;

use rcgen::{PKCS_ECDSA_P256_SHA256, PKCS_ED25519, PublicKeyData, SignatureAlgorithm};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};
use time::{Duration, OffsetDateTime};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_SIG_ED25519};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::NetError;
use crate::devca::{
    BACKDATE, DevCa, MAX_CLIENT_DAYS, RENEW_BEFORE, TlsFiles, check_common_name, client_params,
    exists, lock_dir, prepare_dir,
};

/// Subject common name of the site CA.
pub const SITE_CA_COMMON_NAME: &str = "Portcullis site CA";

/// A site certificate just issued.
#[derive(Debug, Clone)]
pub struct SignedSite {
    pub cert_pem: String,
    pub cert_der: CertificateDer<'static>,
    pub not_after: OffsetDateTime,
}

/// [`ensure_ca_at`] with the current time.
pub fn ensure_ca(dir: &Path) -> Result<DevCa, NetError> {
    ensure_ca_at(dir, OffsetDateTime::now_utc())
}

/// Loads the site CA from `dir`, or makes it there once (a CA only: no server certificate).
/// Refuses a CA whose key is missing or exposed, or that expires within 7 days: replacing it
/// means every connector must enroll again, which is the operator's decision, not ours.
///
/// Blocking (file IO, key generation, a file lock another process may hold): call it before
/// starting the runtime or from `spawn_blocking`.
pub fn ensure_ca_at(dir: &Path, now: OffsetDateTime) -> Result<DevCa, NetError> {
    prepare_dir(dir)?;
    let _lock = lock_dir(dir)?;
    let files = TlsFiles::in_dir(dir);
    let ca = match (exists(&files.ca_cert)?, exists(&files.ca_key())?) {
        (true, true) => DevCa::load(dir)?,
        (true, false) => {
            return Err(NetError::SiteCa {
                dir: dir.to_owned(),
                reason: format!(
                    "{} exists but its private key {} does not; restore the key, or move the \
                     directory aside to make a new site CA (every connector must then enroll again)",
                    files.ca_cert.display(),
                    files.ca_key().display()
                ),
            });
        }
        // A key without a certificate is a crash between the two writes: nothing was ever
        // signed by it, so starting over is safe.
        (false, _) => DevCa::create_named(dir, now, SITE_CA_COMMON_NAME)?,
    };
    if ca.not_after() < now + RENEW_BEFORE {
        return Err(NetError::SiteCa {
            dir: dir.to_owned(),
            reason: format!(
                "it expires {} (less than 7 days from now, or already); move the directory aside \
                 to make a new one (every connector must then enroll again)",
                ca.not_after()
            ),
        });
    }
    Ok(ca)
}

/// [`sign_site_csr_at`] with the current time.
pub fn sign_site_csr(
    ca: &DevCa,
    csr_pem: &str,
    site: &str,
    days: u32,
) -> Result<SignedSite, NetError> {
    sign_site_csr_at(ca, csr_pem, site, days, OffsetDateTime::now_utc())
}

/// Issues `site`'s connector certificate for the public key in `csr_pem` (a PKCS#10 request
/// whose signature must verify): subject O=Portcullis, CN=`site`, EKU clientAuth, key usage
/// digitalSignature, not a CA, valid `days` days (never past the CA). Only P-256 ECDSA and
/// Ed25519 keys are accepted.
pub fn sign_site_csr_at(
    ca: &DevCa,
    csr_pem: &str,
    site: &str,
    days: u32,
    now: OffsetDateTime,
) -> Result<SignedSite, NetError> {
    check_common_name(site)?;
    if days == 0 || days > MAX_CLIENT_DAYS {
        return Err(invalid(format!(
            "a site certificate must be valid for 1 to {MAX_CLIENT_DAYS} days, not {days}"
        )));
    }
    let key = requested_key(csr_pem)?;
    let mut params = client_params(site);
    params.not_before = now - BACKDATE;
    params.not_after = (now + Duration::days(i64::from(days))).min(ca.not_after());
    if params.not_after <= now {
        return Err(invalid(
            "the site CA has expired and cannot sign; move its directory aside to make a new one"
                .into(),
        ));
    }
    params.use_authority_key_identifier_extension = true;
    let cert = params
        .signed_by(&key, &ca.issuer)
        .map_err(|source| NetError::Generate {
            what: "the site certificate",
            source,
        })?;
    Ok(SignedSite {
        cert_pem: cert.pem(),
        cert_der: cert.der().clone(),
        not_after: params.not_after,
    })
}

fn invalid(reason: String) -> NetError {
    NetError::InvalidRequest { reason }
}

/// The public key of a request whose signature verifies, if it is a kind we accept.
struct RequestedKey {
    raw: Vec<u8>,
    alg: &'static SignatureAlgorithm,
}

impl PublicKeyData for RequestedKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.alg
    }
}

fn requested_key(csr_pem: &str) -> Result<RequestedKey, NetError> {
    let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes()).map_err(|_| {
        invalid(
            "the request is not a PEM certificate signing request (a block starting with \
             -----BEGIN CERTIFICATE REQUEST-----)"
                .into(),
        )
    })?;
    let (rest, csr) = X509CertificationRequest::from_der(der.as_ref()).map_err(|e| {
        invalid(format!(
            "the certificate signing request cannot be read: {e}"
        ))
    })?;
    if !rest.is_empty() {
        return Err(invalid(
            "the certificate signing request has bytes after its end".into(),
        ));
    }
    // Proves the requester holds the private key of the public key it asks us to certify.
    csr.verify_signature().map_err(|_| {
        invalid(
            "the certificate signing request's signature does not verify with its own public key \
             (it was altered, or made with another key)"
                .into(),
        )
    })?;
    let spki = &csr.certification_request_info.subject_pki;
    let alg = key_algorithm(spki)?;
    let raw = spki.subject_public_key.data.to_vec();
    let well_formed = if alg == &PKCS_ED25519 {
        raw.len() == 32
    } else {
        // An uncompressed P-256 point: 0x04, then 32 bytes of x and 32 of y.
        raw.len() == 65 && raw.first() == Some(&4)
    };
    if !well_formed {
        return Err(invalid(
            "the public key in the certificate signing request is malformed".into(),
        ));
    }
    Ok(RequestedKey { raw, alg })
}

fn key_algorithm(spki: &SubjectPublicKeyInfo<'_>) -> Result<&'static SignatureAlgorithm, NetError> {
    let oid = &spki.algorithm.algorithm;
    if *oid == OID_SIG_ED25519 {
        return Ok(&PKCS_ED25519);
    }
    if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        if curve.as_ref() == Some(&OID_EC_P256) {
            return Ok(&PKCS_ECDSA_P256_SHA256);
        }
        return Err(invalid(
            "only P-256 ECDSA and Ed25519 keys are accepted; this request has another elliptic \
             curve"
                .into(),
        ));
    }
    Err(invalid(format!(
        "only P-256 ECDSA and Ed25519 keys are accepted, not a key of type {oid}"
    )))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;

    use rcgen::{CertificateParams, DnType, KeyPair, PKCS_ECDSA_P384_SHA384};
    use rustls::RootCertStore;
    use rustls::server::WebPkiClientVerifier;
    use x509_parser::extensions::ParsedExtension;

    use super::*;
    use crate::devca::unix_time;
    use crate::tls::crypto_provider;

    /// A request as a connector makes it, asking for more than it may have.
    fn csr(key: &KeyPair) -> String {
        let mut params = CertificateParams::new(vec!["evil.example".into()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "plant-9");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.serialize_request(key).unwrap().pem().unwrap()
    }

    fn verify(ca: &DevCa, cert: &CertificateDer<'_>, at: OffsetDateTime) -> Result<(), String> {
        let mut roots = RootCertStore::empty();
        roots.add(ca.cert_der().clone()).unwrap();
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crypto_provider())
                .build()
                .unwrap();
        verifier
            .verify_client_cert(cert, &[], unix_time(at))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_ca_is_made_once_owner_only_and_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("keys/site-ca");
        let ca = ensure_ca(&ca_dir).unwrap();
        let again = ensure_ca(&ca_dir).unwrap();
        assert_eq!(ca.cert_der(), again.cert_der());
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&ca_dir), 0o700);
        assert_eq!(mode(&ca_dir.join("ca.key")), 0o600);
        assert_eq!(mode(&ca_dir.join("ca.pem")), 0o644);
        assert!(!ca_dir.join("server.pem").exists(), "a CA only");
        let (_, parsed) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
        assert!(parsed.is_ca());
        assert!(parsed.subject().to_string().contains(SITE_CA_COMMON_NAME));

        fs::remove_file(ca_dir.join("ca.key")).unwrap();
        let err = ensure_ca(&ca_dir).unwrap_err();
        assert!(matches!(err, NetError::SiteCa { .. }), "{err:?}");
        assert!(err.to_string().contains("enroll again"), "{err}");
    }

    #[test]
    fn a_good_request_gets_our_subject_and_usages_and_chains_to_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ensure_ca(&dir.path().join("site-ca")).unwrap();
        let now = OffsetDateTime::now_utc();
        for alg in [&PKCS_ECDSA_P256_SHA256, &PKCS_ED25519] {
            let key = KeyPair::generate_for(alg).unwrap();
            let signed = sign_site_csr_at(&ca, &csr(&key), "plant-2", 365, now).unwrap();
            assert_eq!(
                CertificateDer::from_pem_slice(signed.cert_pem.as_bytes()).unwrap(),
                signed.cert_der
            );
            assert!((signed.not_after - (now + Duration::days(365))).abs() < Duration::seconds(1));
            verify(&ca, &signed.cert_der, now).unwrap();
            verify(&ca, &signed.cert_der, now + Duration::days(364)).unwrap();
            assert!(verify(&ca, &signed.cert_der, now + Duration::days(366)).is_err());

            let (_, cert) = x509_parser::parse_x509_certificate(&signed.cert_der).unwrap();
            assert_eq!(cert.subject().to_string(), "O=Portcullis, CN=plant-2");
            assert_eq!(
                cert.public_key().raw,
                key.subject_public_key_info().as_slice()
            );
            assert!(!cert.is_ca(), "the request asked for CA:true");
            let mut eku_client_only = false;
            let mut has_san = false;
            for ext in cert.extensions() {
                match ext.parsed_extension() {
                    ParsedExtension::ExtendedKeyUsage(eku) => {
                        eku_client_only = eku.client_auth && !eku.server_auth && !eku.any;
                    }
                    ParsedExtension::KeyUsage(ku) => {
                        assert!(ku.digital_signature() && !ku.key_cert_sign());
                    }
                    ParsedExtension::SubjectAlternativeName(_) => has_san = true,
                    _ => {}
                }
            }
            assert!(eku_client_only && !has_san);
        }
    }

    #[test]
    fn garbage_other_keys_and_tampered_signatures_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ensure_ca(&dir.path().join("site-ca")).unwrap();
        let refused = |pem: &str| match sign_site_csr(&ca, pem, "plant-2", 365) {
            Err(NetError::InvalidRequest { reason }) => reason,
            other => panic!("{other:?}"),
        };
        assert!(refused("").contains("BEGIN CERTIFICATE REQUEST"));
        assert!(refused("hello").contains("BEGIN CERTIFICATE REQUEST"));
        let junk =
            "-----BEGIN CERTIFICATE REQUEST-----\naGVsbG8=\n-----END CERTIFICATE REQUEST-----\n";
        assert!(refused(junk).contains("cannot be read"));

        let p384 = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
        assert!(refused(&csr(&p384)).contains("P-256"));

        // Flip one bit of the signature (the request's last bytes).
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let good = csr(&key);
        let mut der = CertificateSigningRequestDer::from_pem_slice(good.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec();
        let last = der.len() - 1;
        der[last] ^= 1;
        let tampered = pem_request(&der);
        assert!(refused(&tampered).contains("signature"), "{tampered}");

        // Another key's signature over the same request body.
        let other = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let good_other = csr(&other);
        let theirs = CertificateSigningRequestDer::from_pem_slice(good_other.as_bytes()).unwrap();
        let (_, a) = X509CertificationRequest::from_der(&der).unwrap();
        let (_, b) = X509CertificationRequest::from_der(theirs.as_ref()).unwrap();
        let body = a.certification_request_info.raw;
        let info = b.certification_request_info.raw;
        // Where their request body ends: the signature algorithm and value follow.
        let end = info.as_ptr() as usize - theirs.as_ref().as_ptr() as usize + info.len();
        let sig_tail = &theirs.as_ref()[end..];
        let mut spliced = Vec::new();
        let inner_len = body.len() + sig_tail.len();
        spliced.push(0x30);
        spliced.extend(der_len(inner_len));
        spliced.extend_from_slice(body);
        spliced.extend_from_slice(sig_tail);
        assert!(refused(&pem_request(&spliced)).contains("signature"));

        for (site, days) in [("", 365), ("plant-2", 0), ("plant-2", MAX_CLIENT_DAYS + 1)] {
            assert!(matches!(
                sign_site_csr(&ca, &good, site, days),
                Err(NetError::InvalidRequest { .. })
            ));
        }
        sign_site_csr(&ca, &good, "plant-2", 1).unwrap();
    }

    fn der_len(n: usize) -> Vec<u8> {
        if n < 128 {
            vec![n as u8]
        } else if n < 256 {
            vec![0x81, n as u8]
        } else {
            vec![0x82, (n >> 8) as u8, n as u8]
        }
    }

    fn pem_request(der: &[u8]) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            lines.join("\n")
        )
    }
}
