//! The connector's state directory: what enrollment wrote and `run` reads.
//!
//! | file             | mode | what |
//! |------------------|------|------|
//! | `connector.key`  | 0600 | the connector's P-256 private key (PKCS#8 PEM); made here, never sent anywhere |
//! | `connector.pem`  | 0644 | its client certificate, signed by the broker's site CA (CN = the site) |
//! | `relay-ca.pem`   | 0644 | the CA certificates that sign the relay's certificate; absent: the public web PKI |
//! | `connector.toml` | 0644 | the site, the relay's address and the TLS name to verify; written last, so its presence means "enrolled" |
//! | `allowlist.toml` | —    | the plant's allowlist (written by the plant, never by the connector; see [`crate::allowlist`]) |
//!
//! The directory is created with mode 0700. Every file is written whole or not at all (temporary
//! file in the same directory, fsync, rename, fsync of the directory).

use std::fmt;
use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

pub const KEY_FILE: &str = "connector.key";
pub const CERT_FILE: &str = "connector.pem";
pub const RELAY_CA_FILE: &str = "relay-ca.pem";
pub const CONFIG_FILE: &str = "connector.toml";
pub const ALLOWLIST_FILE: &str = "allowlist.toml";

/// Largest `connector.toml` read (it is a few lines).
const MAX_CONFIG_LEN: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "{dir} holds no enrollment (no {CONFIG_FILE}): run `portcullis connector enroll --url <web> --token <token> --dir {dir}` first, or give --url and --token to `portcullis connector run`"
    )]
    NotEnrolled { dir: PathBuf },
    /// The IO error is in the message (not a `source`), so `{:#}` does not repeat it.
    #[error("cannot {action} {path}: {cause}")]
    Io {
        action: &'static str,
        path: PathBuf,
        cause: io::Error,
    },
    #[error("{path} is damaged ({detail}); re-enroll with `portcullis connector enroll --force`")]
    Damaged { path: PathBuf, detail: String },
    #[error(
        "{path} holds the connector's private key but is accessible by group or others (mode {mode:04o}); run chmod 600 {path}"
    )]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error(transparent)]
    Net(#[from] portcullis_net::NetError),
    #[error("{what} cannot be trusted: {detail}")]
    Trust { what: String, detail: String },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |cause| StateError::Io {
        action,
        path: path.to_owned(),
        cause,
    }
}

/// `connector.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrollment {
    /// The site this connector serves (the certificate's CN).
    pub site: String,
    /// The relay's QUIC address, `host:port` (`[v6]:port`).
    pub relay: String,
    /// The name the relay's certificate must carry (the host part of `relay` at enrollment).
    pub server_name: String,
    /// The web origin the connector enrolled with (for messages only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web: Option<String>,
    /// The certificate's end, as the broker reported it (RFC 3339; for people only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
}

/// Everything `run` needs from the state directory.
pub struct Identity {
    pub enrollment: Enrollment,
    pub cert: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
    /// Trust anchors for the relay's certificate.
    pub roots: RootCertStore,
    /// Whether `roots` came from `relay-ca.pem` (else the public web PKI).
    pub relay_ca_file: bool,
    /// SHA-256 of the certificate (hex), the value the relay pins.
    pub fingerprint: String,
    /// The certificate's `notAfter`, seconds since the Unix epoch.
    pub not_after_unix: Option<i64>,
}

impl fmt::Debug for Identity {
    /// Never shows the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("enrollment", &self.enrollment)
            .field("fingerprint", &self.fingerprint)
            .field("relay_ca_file", &self.relay_ca_file)
            .field("not_after_unix", &self.not_after_unix)
            .finish_non_exhaustive()
    }
}

/// The state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
    pub fn key_file(&self) -> PathBuf {
        self.dir.join(KEY_FILE)
    }
    pub fn cert_file(&self) -> PathBuf {
        self.dir.join(CERT_FILE)
    }
    pub fn relay_ca_file(&self) -> PathBuf {
        self.dir.join(RELAY_CA_FILE)
    }
    pub fn config_file(&self) -> PathBuf {
        self.dir.join(CONFIG_FILE)
    }
    /// Where the allowlist is unless `--allowlist` says otherwise.
    pub fn default_allowlist(&self) -> PathBuf {
        self.dir.join(ALLOWLIST_FILE)
    }

    /// Whether an enrollment finished here (`connector.toml` exists).
    pub fn is_enrolled(&self) -> Result<bool, StateError> {
        let path = self.config_file();
        match fs::symlink_metadata(&path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("read", &path)(e)),
        }
    }

    /// `connector.toml`.
    pub fn read_enrollment(&self) -> Result<Enrollment, StateError> {
        let path = self.config_file();
        let text = match read_bounded(&path, MAX_CONFIG_LEN) {
            Err(StateError::Io { cause, .. }) if cause.kind() == io::ErrorKind::NotFound => {
                return Err(StateError::NotEnrolled {
                    dir: self.dir.clone(),
                });
            }
            other => other?,
        };
        let e: Enrollment = toml::from_str(&text).map_err(|e| StateError::Damaged {
            path: path.clone(),
            detail: e.message().to_owned(),
        })?;
        if crate::split_host_port(&e.relay).is_none() {
            return Err(StateError::Damaged {
                path,
                detail: format!("relay {:?} is not host:port", e.relay),
            });
        }
        Ok(e)
    }

    /// The enrollment, certificate, key and relay trust anchors, checked: the key is owner-only
    /// and belongs to the certificate, and `relay-ca.pem` (when present) holds usable CAs.
    pub fn load_identity(&self) -> Result<Identity, StateError> {
        let enrollment = self.read_enrollment()?;
        let key_path = self.key_file();
        let meta = fs::metadata(&key_path).map_err(io_err("read", &key_path))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(StateError::KeyPermissions {
                path: key_path,
                mode,
            });
        }
        let (mut certs, key) = portcullis_net::load_certified_key(&self.cert_file(), &key_path)?;
        let cert = certs.swap_remove(0);
        let ca_path = self.relay_ca_file();
        let (roots, relay_ca_file) = match read_bounded(&ca_path, 1 << 20) {
            Ok(pem) => (roots_from_pem(&pem, &ca_path.display().to_string())?, true),
            Err(StateError::Io { cause, .. }) if cause.kind() == io::ErrorKind::NotFound => {
                (web_pki_roots(), false)
            }
            Err(e) => return Err(e),
        };
        let not_after_unix = x509_parser::parse_x509_certificate(&cert)
            .ok()
            .map(|(_, c)| c.validity().not_after.timestamp());
        Ok(Identity {
            enrollment,
            fingerprint: portcullis_net::sha256_fingerprint(&cert),
            cert,
            key,
            roots,
            relay_ca_file,
            not_after_unix,
        })
    }

    /// Creates the directory (and its parents) with mode 0700 if missing.
    pub(crate) fn create(&self) -> Result<(), StateError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io_err("create the directory", &self.dir))
    }

    /// Writes `name` in the directory atomically with `mode`.
    pub(crate) fn write(&self, name: &str, bytes: &[u8], mode: u32) -> Result<(), StateError> {
        write_atomic(&self.dir.join(name), bytes, mode)
    }

    /// Removes `name` if it exists.
    pub(crate) fn remove(&self, name: &str) -> Result<(), StateError> {
        let path = self.dir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &path)(e)),
        }
    }
}

/// The CA certificates in `pem` as trust anchors; `what` names the source in errors.
pub(crate) fn roots_from_pem(pem: &str, what: &str) -> Result<RootCertStore, StateError> {
    let trust = |detail: String| StateError::Trust {
        what: what.to_owned(),
        detail,
    };
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| trust(format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(trust(
            "no certificate (expected PEM blocks starting with -----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    let mut roots = RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        roots
            .add(cert)
            .map_err(|e| trust(format!("certificate {} is not a usable CA: {e}", i + 1)))?;
    }
    Ok(roots)
}

/// Mozilla's roots, as shipped in `webpki-roots`.
pub(crate) fn web_pki_roots() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

pub(crate) fn read_bounded(path: &Path, limit: u64) -> Result<String, StateError> {
    use std::io::Read as _;
    let file = fs::File::open(path).map_err(io_err("read", path))?;
    let mut text = String::new();
    file.take(limit + 1)
        .read_to_string(&mut text)
        .map_err(io_err("read", path))?;
    if text.len() as u64 > limit {
        return Err(StateError::Damaged {
            path: path.to_owned(),
            detail: format!("larger than {limit} bytes"),
        });
    }
    Ok(text)
}

/// Temporary file in the same directory, fsync, rename over `path`, fsync of the directory.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StateError> {
    portcullis_files::replace(path, bytes, mode).map_err(|e| io_err(e.action, path)(e.source))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn files_are_written_atomically_with_their_mode_in_an_owner_only_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::new(tmp.path().join("a/b"));
        state.create().unwrap();
        let dir_mode = fs::metadata(state.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        state.write(KEY_FILE, b"one", 0o600).unwrap();
        state.write(KEY_FILE, b"two", 0o600).unwrap();
        assert_eq!(fs::read(state.key_file()).unwrap(), b"two");
        let mode = fs::metadata(state.key_file()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = fs::read_dir(state.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [KEY_FILE], "no temporary file is left behind");
    }

    #[test]
    fn an_unenrolled_dir_says_how_to_enroll() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::new(tmp.path());
        assert!(!state.is_enrolled().unwrap());
        let e = state.load_identity().unwrap_err().to_string();
        assert!(e.contains("portcullis connector enroll"), "{e}");
    }

    #[test]
    fn a_damaged_config_and_an_open_key_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::new(tmp.path());
        state.write(CONFIG_FILE, b"site = 1\n", 0o644).unwrap();
        let e = state.read_enrollment().unwrap_err().to_string();
        assert!(e.contains("is damaged"), "{e}");

        let good =
            "site = \"plant-1\"\nrelay = \"relay.example:4433\"\nserver_name = \"relay.example\"\n";
        state.write(CONFIG_FILE, good.as_bytes(), 0o644).unwrap();
        state.write(KEY_FILE, b"k", 0o640).unwrap();
        let e = state.load_identity().unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn roots_from_junk_are_refused_with_a_reason() {
        let e = roots_from_pem("hello", "relay-ca.pem")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("relay-ca.pem cannot be trusted: no certificate"),
            "{e}"
        );
        assert!(!web_pki_roots().is_empty());
    }
}
