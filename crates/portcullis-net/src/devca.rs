//! The development CA: what `portcullis serve` uses on a fresh data directory so HTTPS and QUIC
//! work out of the box, with one file (`ca.pem`) for clients and scripts to trust.
//!
//! Layout of the TLS directory (mode 0700):
//!
//! | file         | mode | what |
//! |--------------|------|------|
//! | `ca.pem`     | 0644 | the CA certificate: ECDSA P-256, 10 years, CA:true pathlen 0 |
//! | `ca.key`     | 0600 | its private key (PKCS#8 PEM) |
//! | `server.pem` | 0644 | the server certificate: 1 year, serverAuth, the host names as SANs |
//! | `server.key` | 0600 | its private key |
//! | `.lock`      | 0600 | held while [`ensure_dev_pki`] runs, so two starting processes agree |
//!
//! Every file is written atomically (temporary file, fsync, rename, fsync of the directory), keys
//! before their certificates: a crash leaves either the old pair, or a new key beside an old
//! certificate, which the next start detects as a mismatch and repairs by re-issuing.
//!
//! The CA is never replaced automatically, because clients trust it; the server certificate is
//! derived material and is re-issued (new key) whenever it no longer chains to the CA, no longer
//! covers the requested host names, is not yet valid, or expires within [`RENEW_BEFORE`].

use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use crate::NetError;
pub use crate::siteca::{SignedSite, ensure_ca, sign_site_csr};
use crate::tls::{
    check_key_matches, crypto_provider, load_certified_key, load_certs, read_pem_file,
    sha256_fingerprint,
};

/// Subject common name of the development CA.
pub const CA_COMMON_NAME: &str = "Portcullis development CA";
/// Organisation in the subjects we issue, so they are recognisable in a trust store.
const ORGANIZATION: &str = "Portcullis";
/// Names every server certificate covers besides the configured host names.
pub const DEFAULT_SERVER_NAMES: &[&str] = &["localhost", "127.0.0.1", "::1"];

const CA_LIFETIME: Duration = Duration::days(3650);
const SERVER_LIFETIME: Duration = Duration::days(365);
/// A server certificate that expires sooner than this is re-issued at startup.
pub const RENEW_BEFORE: Duration = Duration::days(7);
/// Startup warns when the CA expires sooner than this.
const CA_WARN_BEFORE: Duration = Duration::days(90);
/// Certificates start this long before they are made, so a client whose clock is a little behind
/// does not reject a certificate issued a moment ago.
pub(crate) const BACKDATE: Duration = Duration::hours(1);
/// The vendor client's ephemeral certificate lives in memory for one `portcullis connect` run.
/// The relay binds the token to its thumbprint rather than trusting its dates; the bound only
/// keeps a leaked one from looking valid for ever.
const EPHEMERAL_LIFETIME: Duration = Duration::days(30);
/// Longest client certificate [`issue_client_cert`] makes.
pub(crate) const MAX_CLIENT_DAYS: u32 = 3650;

/// Where the development PKI lives; the paths operators pass to `--tls-cert`-style options and
/// clients to `--ca`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA certificate clients and scripts trust.
    pub ca_cert: PathBuf,
    /// The server certificate (PEM).
    pub cert: PathBuf,
    /// The server private key (PEM, mode 0600).
    pub key: PathBuf,
}

impl TlsFiles {
    /// The file names inside `tls_dir`; touches nothing on disk.
    pub fn in_dir(tls_dir: &Path) -> Self {
        Self {
            ca_cert: tls_dir.join("ca.pem"),
            cert: tls_dir.join("server.pem"),
            key: tls_dir.join("server.key"),
        }
    }

    pub(crate) fn ca_key(&self) -> PathBuf {
        self.ca_cert.with_file_name("ca.key")
    }
}

/// A loaded development CA: its certificate and signing key.
pub struct DevCa {
    dir: PathBuf,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    not_after: OffsetDateTime,
    pub(crate) issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for DevCa {
    /// Never shows the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevCa")
            .field("dir", &self.dir)
            .field("fingerprint", &self.fingerprint())
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl DevCa {
    /// Loads `ca.pem` and `ca.key` from `tls_dir`. The key must be owner-only, as we wrote it.
    pub fn load(tls_dir: &Path) -> Result<Self, NetError> {
        let files = TlsFiles::in_dir(tls_dir);
        let cert_path = &files.ca_cert;
        let key_path = files.ca_key();

        let cert_der = load_certs(cert_path)?.swap_remove(0);
        let cert_pem = pem_encode_cert(&cert_der);
        let bad_ca = |reason: String| NetError::BadCa {
            path: cert_path.clone(),
            reason,
        };
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| bad_ca(format!("cannot parse the certificate: {e}")))?;
        if !parsed.is_ca() {
            return Err(bad_ca(
                "the certificate is not a CA (basicConstraints CA:false)".to_owned(),
            ));
        }
        // webpki never checks a trust anchor's dates, so we do: browsers and OpenSSL-based tools
        // refuse an expired root.
        let not_after = parsed.validity().not_after.to_datetime();

        check_owner_only(&key_path)?;
        let key_bytes = read_pem_file(&key_path)?;
        let key_pem = std::str::from_utf8(&key_bytes).map_err(|_| NetError::BadCa {
            path: key_path.clone(),
            reason: "the key file is not text".to_owned(),
        })?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| NetError::BadCa {
            path: key_path.clone(),
            reason: format!("cannot read the private key: {e}"),
        })?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        check_key_matches(
            std::slice::from_ref(&cert_der),
            key_der,
            cert_path,
            &key_path,
        )?;
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|e| bad_ca(format!("cannot read the CA certificate: {e}")))?;
        Ok(Self {
            dir: tls_dir.to_owned(),
            cert_pem,
            cert_der,
            not_after,
            issuer,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// When the CA certificate expires.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// SHA-256 fingerprint of the CA certificate, for people to compare out of band.
    pub fn fingerprint(&self) -> String {
        sha256_fingerprint(&self.cert_der)
    }

    /// Makes a new CA and writes it to `tls_dir` (key first). Callers hold the directory lock.
    fn create(tls_dir: &Path, now: OffsetDateTime) -> Result<Self, NetError> {
        Self::create_named(tls_dir, now, CA_COMMON_NAME)
    }

    /// [`DevCa::create`] with another subject common name (the site CA's).
    pub(crate) fn create_named(
        tls_dir: &Path,
        now: OffsetDateTime,
        common_name: &str,
    ) -> Result<Self, NetError> {
        let key = new_key("a CA key")?;
        let mut params = CertificateParams::default();
        // A distinct subject per CA (as mkcert does): two development CAs in one trust store stay
        // tellable apart for people and for path building.
        let key_id = hex::encode(&Sha256::digest(key.public_key_raw())[..6]);
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, ORGANIZATION);
        params.distinguished_name.push(
            DnType::OrganizationalUnitName,
            format!("key {key_id}, created {}", now.date()),
        );
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.not_before = now - BACKDATE;
        params.not_after = now + CA_LIFETIME;
        // pathlen 0: it signs leaf certificates only, never another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params
            .self_signed(&key)
            .map_err(|source| NetError::Generate {
                what: "a CA certificate",
                source,
            })?;

        let files = TlsFiles::in_dir(tls_dir);
        let key_pem = Zeroizing::new(key.serialize_pem());
        write_atomic(&files.ca_key(), key_pem.as_bytes(), 0o600)?;
        write_atomic(&files.ca_cert, cert.pem().as_bytes(), 0o644)?;
        tracing::info!(
            ca = %files.ca_cert.display(),
            name = common_name,
            fingerprint = %sha256_fingerprint(cert.der()),
            "created a CA; clients must trust this file"
        );
        Ok(Self {
            dir: tls_dir.to_owned(),
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            not_after: params.not_after,
            issuer: Issuer::new(params, key),
        })
    }

    /// Issues a server certificate for `names` (already normalised) with a fresh key.
    fn issue_server(
        &self,
        names: &[String],
        now: OffsetDateTime,
    ) -> Result<(CertificateDer<'static>, String, Zeroizing<String>), NetError> {
        let key = new_key("a server key")?;
        let mut params =
            CertificateParams::new(names.to_vec()).map_err(|source| NetError::Generate {
                what: "the server certificate",
                source,
            })?;
        let common_name = names.first().map_or("localhost", String::as_str);
        params.distinguished_name = subject(common_name);
        params.not_before = now - BACKDATE;
        // Never outlive the CA: the chain would break first, silently.
        params.not_after = (now + SERVER_LIFETIME).min(self.not_after);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|source| NetError::Generate {
                what: "the server certificate",
                source,
            })?;
        Ok((
            cert.der().clone(),
            cert.pem(),
            Zeroizing::new(key.serialize_pem()),
        ))
    }

    /// Checks that `cert` chains to this CA and is valid for every name both at `now` and
    /// [`RENEW_BEFORE`] later, with the same webpki verification clients perform.
    fn verify_server_cert(
        &self,
        cert: &CertificateDer<'_>,
        names: &[String],
        now: OffsetDateTime,
    ) -> Result<(), (&'static str, rustls::Error)> {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.cert_der.clone())
            .map_err(|e| ("the CA certificate is not a usable trust anchor", e))?;
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), crypto_provider())
                .build()
                .map_err(|e| {
                    (
                        "the CA certificate is not a usable trust anchor",
                        rustls::Error::General(e.to_string()),
                    )
                })?;
        for (when, at) in [
            ("it is not valid now", now),
            ("it expires within 7 days", now + RENEW_BEFORE),
        ] {
            for name in names {
                let server_name = ServerName::try_from(name.as_str()).map_err(|e| {
                    (
                        "a host name is invalid",
                        rustls::Error::General(e.to_string()),
                    )
                })?;
                verifier
                    .verify_server_cert(cert, &[], &server_name, &[], unix_time(at))
                    .map_err(|e| (when, e))?;
            }
        }
        Ok(())
    }
}

/// [`ensure_dev_pki_at`] with the current time.
pub fn ensure_dev_pki(tls_dir: &Path, hostnames: &[String]) -> Result<TlsFiles, NetError> {
    ensure_dev_pki_at(tls_dir, hostnames, OffsetDateTime::now_utc())
}

/// Makes sure `tls_dir` holds a development CA and a server certificate from it that covers
/// `hostnames` plus [`DEFAULT_SERVER_NAMES`] and is valid from `now` for at least
/// [`RENEW_BEFORE`]. Creates the directory (mode 0700) and the CA if missing; reuses the CA
/// otherwise and re-issues only the server certificate when needed.
///
/// Blocking (file IO, key generation, a file lock another process may hold): call it before
/// starting the runtime or from `spawn_blocking`.
pub fn ensure_dev_pki_at(
    tls_dir: &Path,
    hostnames: &[String],
    now: OffsetDateTime,
) -> Result<TlsFiles, NetError> {
    let names = server_names(hostnames)?;
    prepare_dir(tls_dir)?;
    let _lock = lock_dir(tls_dir)?;

    let files = TlsFiles::in_dir(tls_dir);
    let ca_key = files.ca_key();
    let ca = match (exists(&files.ca_cert)?, exists(&ca_key)?) {
        (true, true) => DevCa::load(tls_dir)?,
        (true, false) => {
            return Err(NetError::CaKeyMissing {
                cert: files.ca_cert.clone(),
                key: ca_key,
                dir: tls_dir.to_owned(),
            });
        }
        // A key without a certificate is a crash between the two writes: nobody can trust a CA
        // whose certificate was never written, so starting over is safe.
        (false, _) => DevCa::create(tls_dir, now)?,
    };
    if ca.not_after < now + RENEW_BEFORE {
        return Err(NetError::CaExpired {
            path: files.ca_cert.clone(),
            not_after: ca.not_after,
            dir: tls_dir.to_owned(),
        });
    }
    if ca.not_after < now + CA_WARN_BEFORE {
        tracing::warn!(
            ca = %files.ca_cert.display(),
            not_after = %ca.not_after,
            "the development CA expires soon; move its directory aside and restart to make a new one, then have clients trust the new ca.pem"
        );
    }

    let problem = match (exists(&files.cert)?, exists(&files.key)?) {
        (true, true) => server_cert_problem(&ca, &files, &names, now),
        _ => Some("there is none yet".to_owned()),
    };
    let Some(problem) = problem else {
        return Ok(files);
    };

    let (cert_der, cert_pem, key_pem) = ca.issue_server(&names, now)?;
    // Verify before writing: a CA that cannot issue a valid certificate (expired, or not made for
    // this) must fail startup with advice, not loop re-issuing on every start.
    ca.verify_server_cert(&cert_der, &names, now)
        .map_err(|(_, source)| NetError::CaCannotIssue {
            dir: tls_dir.to_owned(),
            source,
        })?;
    write_atomic(&files.key, key_pem.as_bytes(), 0o600)?;
    write_atomic(&files.cert, cert_pem.as_bytes(), 0o644)?;
    tracing::info!(
        cert = %files.cert.display(),
        names = ?names,
        reason = %problem,
        "issued a development server certificate"
    );
    Ok(files)
}

/// Why the server certificate on disk cannot be reused, or `None` if it can.
fn server_cert_problem(
    ca: &DevCa,
    files: &TlsFiles,
    names: &[String],
    now: OffsetDateTime,
) -> Option<String> {
    // A key others could read may have leaked: replace it rather than keep serving with it.
    if let Err(e) = check_owner_only(&files.key) {
        return Some(e.to_string());
    }
    let (certs, _key) = match load_certified_key(&files.cert, &files.key) {
        Ok(loaded) => loaded,
        Err(e) => return Some(e.to_string()),
    };
    let leaf = certs.first()?;
    ca.verify_server_cert(leaf, names, now)
        .err()
        .map(|(why, e)| format!("{why}: {e}"))
}

/// Issues a client certificate (EKU clientAuth) signed by `ca`, valid for `days` days, with a
/// fresh P-256 key; for site connectors. Returns the certificate and key as PEM.
pub fn issue_client_cert(
    ca: &DevCa,
    common_name: &str,
    days: u32,
) -> Result<(String, String), NetError> {
    issue_client_cert_at(ca, common_name, days, OffsetDateTime::now_utc())
}

fn issue_client_cert_at(
    ca: &DevCa,
    common_name: &str,
    days: u32,
    now: OffsetDateTime,
) -> Result<(String, String), NetError> {
    check_common_name(common_name)?;
    if days == 0 || days > MAX_CLIENT_DAYS {
        return Err(NetError::InvalidRequest {
            reason: format!(
                "a client certificate must be valid for 1 to {MAX_CLIENT_DAYS} days, not {days}"
            ),
        });
    }
    let key = new_key("a client key")?;
    let mut params = client_params(common_name);
    params.not_before = now - BACKDATE;
    params.not_after = (now + Duration::days(i64::from(days))).min(ca.not_after);
    params.use_authority_key_identifier_extension = true;
    let cert = params
        .signed_by(&key, &ca.issuer)
        .map_err(|source| NetError::Generate {
            what: "the client certificate",
            source,
        })?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A self-signed P-256 client certificate and key made in memory, never written to disk: the
/// vendor client's per-run QUIC identity. The relay token is bound to its
/// [`sha256_fingerprint`], so a stolen token is useless on another connection.
pub fn ephemeral_client_identity(
    common_name: &str,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), NetError> {
    check_common_name(common_name)?;
    let key = new_key("an ephemeral client key")?;
    let now = OffsetDateTime::now_utc();
    let mut params = client_params(common_name);
    params.not_before = now - BACKDATE;
    params.not_after = now + EPHEMERAL_LIFETIME;
    let cert = params
        .self_signed(&key)
        .map_err(|source| NetError::Generate {
            what: "the ephemeral client certificate",
            source,
        })?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((cert.der().clone(), key_der))
}

pub(crate) fn client_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = subject(common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params
}

pub(crate) fn check_common_name(common_name: &str) -> Result<(), NetError> {
    if common_name.is_empty() || common_name.len() > 64 || common_name.chars().any(char::is_control)
    {
        return Err(NetError::InvalidRequest {
            reason: format!(
                "common name {common_name:?} must be 1 to 64 bytes without control characters"
            ),
        });
    }
    Ok(())
}

fn subject(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, ORGANIZATION);
    dn.push(DnType::CommonName, common_name);
    dn
}

fn new_key(what: &'static str) -> Result<KeyPair, NetError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|source| NetError::Generate { what, source })
}

/// The requested host names plus [`DEFAULT_SERVER_NAMES`], normalised (lowercase, no trailing
/// dot, canonical IP form) and without duplicates, in order.
fn server_names(hostnames: &[String]) -> Result<Vec<String>, NetError> {
    let mut names: Vec<String> = Vec::new();
    for raw in hostnames
        .iter()
        .map(String::as_str)
        .chain(DEFAULT_SERVER_NAMES.iter().copied())
    {
        let invalid = || NetError::InvalidHostname {
            hostname: raw.to_owned(),
        };
        let trimmed = raw.strip_suffix('.').unwrap_or(raw).to_ascii_lowercase();
        let name = match trimmed.parse::<IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => match ServerName::try_from(trimmed.as_str()) {
                Ok(ServerName::DnsName(_)) => trimmed,
                _ => return Err(invalid()),
            },
        };
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Ok(names)
}

/// Creates `dir` (and missing parents) owner-only, or checks an existing one is a directory that
/// group and others cannot enter: it holds the CA key.
pub(crate) fn prepare_dir(dir: &Path) -> Result<(), NetError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| NetError::io(dir, "create the directory", e))?;
    let meta = fs::metadata(dir).map_err(|e| NetError::io(dir, "inspect", e))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(NetError::Permissions {
            path: dir.to_owned(),
            mode,
            wanted: 0o700,
        });
    }
    Ok(())
}

/// Holds an exclusive lock on `<dir>/.lock` until dropped, so two processes starting on one data
/// directory never make two CAs.
pub(crate) fn lock_dir(dir: &Path) -> Result<File, NetError> {
    let path = dir.join(".lock");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| NetError::io(&path, "open the lock file", e))?;
    file.lock().map_err(|e| NetError::io(&path, "lock", e))?;
    Ok(file)
}

pub(crate) fn exists(path: &Path) -> Result<bool, NetError> {
    path.try_exists()
        .map_err(|e| NetError::io(path, "inspect", e))
}

/// Refuses a key file that group or others can access.
fn check_owner_only(path: &Path) -> Result<(), NetError> {
    let meta = fs::metadata(path).map_err(|e| NetError::io(path, "inspect", e))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(NetError::Permissions {
            path: path.to_owned(),
            mode,
            wanted: 0o600,
        });
    }
    Ok(())
}

/// Writes `contents` to `path` with exactly `mode`, atomically: a reader sees the old file or the
/// new one, never a part.
fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), NetError> {
    portcullis_files::replace(path, contents, mode)
        .map_err(|e| NetError::io(path, e.action, e.source))
}

/// PEM text of one certificate (RFC 7468: base64 in lines of 64).
fn pem_encode_cert(der: &CertificateDer<'_>) -> String {
    let b64 = STANDARD.encode(der.as_ref());
    let mut pem = String::with_capacity(b64.len() + b64.len() / 64 + 64);
    pem.push_str("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// `t` as webpki's time; instants before 1970 (never a real clock) clamp to the epoch.
pub(crate) fn unix_time(t: OffsetDateTime) -> UnixTime {
    let secs = u64::try_from(t.unix_timestamp()).unwrap_or(0);
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::BTreeSet;
    use std::fs::Permissions;

    use rustls::server::WebPkiClientVerifier;
    use rustls_pki_types::pem::PemObject;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn read(path: &Path) -> Vec<u8> {
        fs::read(path).unwrap()
    }

    fn leaf(files: &TlsFiles) -> CertificateDer<'static> {
        load_certs(&files.cert).unwrap().swap_remove(0)
    }

    /// The server certificate on disk verifies against ca.pem for `names` at `now`.
    fn assert_covers(files: &TlsFiles, tls_dir: &Path, list: &[&str], now: OffsetDateTime) {
        let ca = DevCa::load(tls_dir).unwrap();
        let wanted = server_names(&names(list)).unwrap();
        ca.verify_server_cert(&leaf(files), &wanted, now).unwrap();
    }

    #[test]
    fn fresh_directory_gets_a_ca_and_server_cert_with_the_right_modes() {
        let root = tempfile::tempdir().unwrap();
        let tls_dir = root.path().join("portcullis-data").join("tls");
        let files = ensure_dev_pki(&tls_dir, &names(&["broker.plant.example"])).unwrap();

        assert_eq!(files, TlsFiles::in_dir(&tls_dir));
        assert_eq!(mode(&tls_dir), 0o700);
        assert_eq!(mode(&files.ca_cert), 0o644);
        assert_eq!(mode(&files.ca_key()), 0o600);
        assert_eq!(mode(&files.cert), 0o644);
        assert_eq!(mode(&files.key), 0o600);
        // Only our files: no temporaries left behind.
        let entries: BTreeSet<String> = fs::read_dir(&tls_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(
            entries,
            [".lock", "ca.key", "ca.pem", "server.key", "server.pem"]
                .map(String::from)
                .into()
        );

        let now = OffsetDateTime::now_utc();
        assert_covers(
            &files,
            &tls_dir,
            &["broker.plant.example", "localhost", "127.0.0.1", "::1"],
            now,
        );
        // The server key belongs to the certificate.
        load_certified_key(&files.cert, &files.key).unwrap();
    }

    #[test]
    fn second_call_reuses_everything() {
        let dir = tempfile::tempdir().unwrap();
        let tls_dir = dir.path().join("tls");
        let hosts = names(&["broker.example"]);
        let files = ensure_dev_pki(&tls_dir, &hosts).unwrap();
        let before = [&files.ca_cert, &files.ca_key(), &files.cert, &files.key].map(|p| read(p));

        let again = ensure_dev_pki(&tls_dir, &hosts).unwrap();
        assert_eq!(again, files);
        let after = [&files.ca_cert, &files.ca_key(), &files.cert, &files.key].map(|p| read(p));
        assert_eq!(before, after);

        // Host names are normalised, so spelling differences do not re-issue either.
        ensure_dev_pki(&tls_dir, &names(&["BROKER.example.", "0:0:0:0:0:0:0:1"])).unwrap();
        assert_eq!(read(&files.cert), before[2]);
    }

    #[test]
    fn a_new_host_name_reissues_the_server_cert_from_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        let tls_dir = dir.path().join("tls");
        let files = ensure_dev_pki(&tls_dir, &names(&["a.example"])).unwrap();
        let ca_pem = read(&files.ca_cert);
        let server_pem = read(&files.cert);
        let server_key = read(&files.key);

        ensure_dev_pki(&tls_dir, &names(&["b.example", "10.0.0.7"])).unwrap();
        assert_eq!(read(&files.ca_cert), ca_pem);
        assert_ne!(read(&files.cert), server_pem);
        assert_ne!(read(&files.key), server_key, "a re-issue uses a fresh key");
        assert_eq!(mode(&files.key), 0o600);
        assert_covers(
            &files,
            &tls_dir,
            &["b.example", "10.0.0.7", "localhost"],
            OffsetDateTime::now_utc(),
        );
    }

    #[test]
    fn a_server_cert_expiring_within_seven_days_is_reissued() {
        let dir = tempfile::tempdir().unwrap();
        let tls_dir = dir.path().join("tls");
        let hosts = names(&["broker.example"]);
        let now = OffsetDateTime::now_utc();
        let issued_at = now - Duration::days(360); // the 1-year certificate ends in 5 days
        let files = ensure_dev_pki_at(&tls_dir, &hosts, issued_at).unwrap();
        let ca_pem = read(&files.ca_cert);
        let old = read(&files.cert);

        // 10 days before expiry: kept.
        ensure_dev_pki_at(&tls_dir, &hosts, now - Duration::days(5)).unwrap();
        assert_eq!(read(&files.cert), old);

        // 5 days before expiry: re-issued, valid for the next 7 days, same CA.
        ensure_dev_pki_at(&tls_dir, &hosts, now).unwrap();
        assert_ne!(read(&files.cert), old);
        assert_eq!(read(&files.ca_cert), ca_pem);
        assert_covers(&files, &tls_dir, &["broker.example"], now + RENEW_BEFORE);
    }

    #[test]
    fn a_server_cert_not_yet_valid_is_reissued() {
        let dir = tempfile::tempdir().unwrap();
        let tls_dir = dir.path().join("tls");
        let now = OffsetDateTime::now_utc();
        let files = ensure_dev_pki_at(&tls_dir, &[], now).unwrap();
        let old = read(&files.cert);
        // The clock went back a day (more than the one-hour backdating).
        ensure_dev_pki_at(&tls_dir, &[], now - Duration::days(1)).unwrap();
        assert_ne!(read(&files.cert), old);
    }

    #[test]
    fn a_mismatched_or_exposed_server_key_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let tls_dir = dir.path().join("tls");
        let files = ensure_dev_pki(&tls_dir, &[]).unwrap();

        // A crash between writing a new key and its certificate leaves this state.
        let other = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        write_atomic(&files.key, other.serialize_pem().as_bytes(), 0o600).unwrap();
        assert!(matches!(
            load_certified_key(&files.cert, &files.key),
            Err(NetError::KeyMismatch { .. })
        ));
        ensure_dev_pki(&tls_dir, &[]).unwrap();
        load_certified_key(&files.cert, &files.key).unwrap();

        let cert = read(&files.cert);
        fs::set_permissions(&files.key, Permissions::from_mode(0o644)).unwrap();
        ensure_dev_pki(&tls_dir, &[]).unwrap();
        assert_eq!(mode(&files.key), 0o600);
        assert_ne!(read(&files.cert), cert);

        // Deleted server files are simply issued again.
        fs::remove_file(&files.cert).unwrap();
        ensure_dev_pki(&tls_dir, &[]).unwrap();
        load_certified_key(&files.cert, &files.key).unwrap();
    }

    #[test]
    fn a_server_cert_from_another_ca_is_reissued() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let files_a = ensure_dev_pki(&a, &[]).unwrap();
        let files_b = ensure_dev_pki(&b, &[]).unwrap();
        fs::copy(&files_b.cert, &files_a.cert).unwrap();
        fs::copy(&files_b.key, &files_a.key).unwrap();

        ensure_dev_pki(&a, &[]).unwrap();
        assert_ne!(read(&files_a.cert), read(&files_b.cert));
        assert_covers(&files_a, &a, &["localhost"], OffsetDateTime::now_utc());
    }

    #[test]
    fn a_ca_certificate_without_its_key_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let tls_dir = dir.path().join("tls");
        let files = ensure_dev_pki(&tls_dir, &[]).unwrap();
        let ca_pem = read(&files.ca_cert);
        fs::remove_file(files.ca_key()).unwrap();

        let err = ensure_dev_pki(&tls_dir, &[]).unwrap_err();
        assert!(matches!(err, NetError::CaKeyMissing { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains(&files.ca_cert.display().to_string()),
            "{text}"
        );
        assert!(
            text.contains(&files.ca_key().display().to_string()),
            "{text}"
        );
        assert_eq!(read(&files.ca_cert), ca_pem);
    }

    #[test]
    fn a_ca_key_without_its_certificate_is_a_crash_and_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let tls_dir = dir.path().join("tls");
        let files = ensure_dev_pki(&tls_dir, &[]).unwrap();
        let old_key = read(&files.ca_key());
        fs::remove_file(&files.ca_cert).unwrap();

        ensure_dev_pki(&tls_dir, &[]).unwrap();
        assert_ne!(read(&files.ca_key()), old_key);
        assert_covers(&files, &tls_dir, &["localhost"], OffsetDateTime::now_utc());
    }

    #[test]
    fn an_exposed_ca_key_or_directory_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let tls_dir = dir.path().join("tls");
        let files = ensure_dev_pki(&tls_dir, &[]).unwrap();

        fs::set_permissions(files.ca_key(), Permissions::from_mode(0o640)).unwrap();
        let err = ensure_dev_pki(&tls_dir, &[]).unwrap_err();
        let shown = files.ca_key().display().to_string();
        assert_eq!(
            err.to_string(),
            format!("{shown} is accessible by group or others (mode 0640); run chmod 600 {shown}")
        );
        assert!(matches!(
            DevCa::load(&tls_dir),
            Err(NetError::Permissions { .. })
        ));
        fs::set_permissions(files.ca_key(), Permissions::from_mode(0o600)).unwrap();

        fs::set_permissions(&tls_dir, Permissions::from_mode(0o755)).unwrap();
        let err = ensure_dev_pki(&tls_dir, &[]).unwrap_err();
        assert!(
            err.to_string()
                .ends_with(&format!("run chmod 700 {}", tls_dir.display())),
            "{err}"
        );
    }

    #[test]
    fn an_expiring_ca_fails_with_advice_and_caps_the_server_cert() {
        let dir = tempfile::tempdir().unwrap();
        let tls_dir = dir.path().join("tls");
        let now = OffsetDateTime::now_utc();
        let created = now - CA_LIFETIME + Duration::days(100);
        let files = ensure_dev_pki_at(&tls_dir, &[], created).unwrap();
        let ca = DevCa::load(&tls_dir).unwrap();
        assert_eq!(
            ca.not_after().unix_timestamp(),
            (created + CA_LIFETIME).unix_timestamp()
        );

        // 100 days before the CA expires the 1-year server certificate is cut to the CA's end.
        ensure_dev_pki_at(&tls_dir, &names(&["new.example"]), now).unwrap();
        let server = read(&files.cert);
        let leaf_der = leaf(&files);
        let parsed = x509_parser::parse_x509_certificate(&leaf_der).unwrap().1;
        assert_eq!(parsed.validity().not_after.to_datetime(), ca.not_after());

        // 5 days before: refused with advice, and nothing is rewritten.
        let err = ensure_dev_pki_at(&tls_dir, &[], now + Duration::days(95)).unwrap_err();
        assert!(matches!(err, NetError::CaExpired { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains(&files.ca_cert.display().to_string()),
            "{text}"
        );
        assert!(text.contains("move"), "{text}");
        assert_eq!(read(&files.cert), server);
    }

    #[test]
    fn a_non_ca_certificate_is_not_a_ca() {
        let dir = tempfile::tempdir().unwrap();
        let tls_dir = dir.path().join("tls");
        let files = ensure_dev_pki(&tls_dir, &[]).unwrap();
        fs::copy(&files.cert, &files.ca_cert).unwrap();
        fs::copy(&files.key, files.ca_key()).unwrap();
        let err = DevCa::load(&tls_dir).unwrap_err();
        assert!(err.to_string().contains("not a CA"), "{err}");
    }

    #[test]
    fn invalid_host_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for bad in [
            "",
            ".",
            "bad host",
            "*.example.com",
            "[::1]",
            "ex\u{e4}mple.com",
        ] {
            let err = ensure_dev_pki(&dir.path().join("tls"), &names(&[bad])).unwrap_err();
            assert!(
                matches!(&err, NetError::InvalidHostname { hostname } if hostname == bad),
                "{bad:?}: {err:?}"
            );
        }
        assert_eq!(
            server_names(&names(&[
                "Broker.Example.",
                "127.0.0.1",
                "0:0::1",
                "broker.example"
            ]))
            .unwrap(),
            names(&["broker.example", "127.0.0.1", "::1", "localhost"])
        );
    }

    #[test]
    fn concurrent_first_starts_agree_on_one_ca() {
        let dir = tempfile::tempdir().unwrap();
        let tls_dir = Arc::new(dir.path().join("tls"));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let tls_dir = Arc::clone(&tls_dir);
                std::thread::spawn(move || {
                    let files = ensure_dev_pki(&tls_dir, &[]).unwrap();
                    // Each caller sees a consistent CA and server pair at the moment it returns.
                    DevCa::load(&tls_dir).unwrap().fingerprint();
                    read(&files.ca_cert)
                })
            })
            .collect();
        let cas: Vec<Vec<u8>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(cas.iter().all(|c| *c == cas[0]), "two CAs were made");
    }

    #[test]
    fn client_certs_chain_to_the_ca_for_client_auth() {
        let dir = tempfile::tempdir().unwrap();
        let tls_dir = dir.path().join("tls");
        ensure_dev_pki(&tls_dir, &[]).unwrap();
        let ca = DevCa::load(&tls_dir).unwrap();
        let (cert_pem, key_pem) = issue_client_cert(&ca, "connector plant-1", 30).unwrap();

        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        check_key_matches(
            std::slice::from_ref(&cert),
            key,
            Path::new("c"),
            Path::new("k"),
        )
        .unwrap();

        let mut roots = RootCertStore::empty();
        roots.add(ca.cert_der().clone()).unwrap();
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crypto_provider())
                .build()
                .unwrap();
        let now = OffsetDateTime::now_utc();
        verifier
            .verify_client_cert(&cert, &[], unix_time(now + Duration::days(29)))
            .unwrap();
        assert!(
            verifier
                .verify_client_cert(&cert, &[], unix_time(now + Duration::days(31)))
                .is_err()
        );
        // Not usable as a server certificate (EKU clientAuth only).
        assert!(
            ca.verify_server_cert(&cert, &names(&["localhost"]), now)
                .is_err()
        );

        for (cn, days) in [("", 30), ("x", 0), ("x", MAX_CLIENT_DAYS + 1), ("a\nb", 1)] {
            assert!(
                matches!(
                    issue_client_cert(&ca, cn, days),
                    Err(NetError::InvalidRequest { .. })
                ),
                "{cn:?} {days}"
            );
        }
    }

    #[test]
    fn dev_ca_debug_and_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let tls_dir = dir.path().join("tls");
        let files = ensure_dev_pki(&tls_dir, &[]).unwrap();
        let ca = DevCa::load(&tls_dir).unwrap();
        let on_disk = CertificateDer::from_pem_file(&files.ca_cert).unwrap();
        assert_eq!(ca.cert_der(), &on_disk);
        assert_eq!(ca.cert_pem().as_bytes(), read(&files.ca_cert));
        assert_eq!(ca.fingerprint(), sha256_fingerprint(&on_disk));
        let debug = format!("{ca:?}");
        assert!(debug.contains(&ca.fingerprint()));
        assert!(!debug.to_lowercase().contains("key"), "{debug}");
    }

    #[test]
    fn ephemeral_identities_are_fresh_usable_and_fingerprinted() {
        let (cert_a, key_a) = ephemeral_client_identity("vendor alice").unwrap();
        let (cert_b, _key_b) = ephemeral_client_identity("vendor alice").unwrap();

        let fp = sha256_fingerprint(&cert_a);
        assert_eq!(fp, sha256_fingerprint(&cert_a.clone()));
        assert_eq!(fp.len(), 64);
        assert!(fp.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        assert_ne!(
            fp,
            sha256_fingerprint(&cert_b),
            "every run gets a new identity"
        );

        // rustls accepts the pair as a client identity.
        check_key_matches(
            std::slice::from_ref(&cert_a),
            key_a.clone_key(),
            Path::new("c"),
            Path::new("k"),
        )
        .unwrap();
        rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(RootCertStore::empty())
            .with_client_auth_cert(vec![cert_a], key_a)
            .unwrap();
    }
}
