//! `portcullis connector enroll`: a key made here, a certificate from the broker's site CA.
//!
//! 1. A P-256 key is generated in memory and a PKCS#10 CSR made with it.
//! 2. `POST <web>/api/v1/connector/enroll` with `{"token": "...", "csr": "<PEM>"}` over HTTPS
//!    (trusting exactly `--ca` when given, else the public web PKI; no redirects).
//! 3. The answer `{"site", "certificate", "ca", "relay", "relay_ca", "not_after"}` is checked: the
//!    certificate must be for our key, the site name well formed, the relay `host:port`.
//! 4. The state directory (mode 0700) gets `connector.key` (0600), `connector.pem`,
//!    `relay-ca.pem` and, last, `connector.toml`, each written atomically.
//!
//! The private key is written only once the broker has issued its certificate, so a refused
//! token leaves an existing enrollment untouched. The token is one-time; it is never logged.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::Deserialize;
use zeroize::{Zeroize as _, Zeroizing};

use crate::state::{
    self, CERT_FILE, CONFIG_FILE, Enrollment, KEY_FILE, RELAY_CA_FILE, StateDir, StateError,
};
use crate::{printable, split_host_port};

/// The enrollment call in total (the broker signs one certificate: fast).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read: a certificate and two CA chains are a few KiB.
const MAX_ANSWER_LEN: usize = 1 << 20;
/// The API path, after the web origin.
pub const ENROLL_PATH: &str = "/api/v1/connector/enroll";
/// Subject of the CSR. The site CA sets the certificate's subject itself (CN = the site).
const CSR_COMMON_NAME: &str = "portcullis site connector";

/// What `enroll` needs.
pub struct EnrollOptions {
    /// The broker's web origin, `https://host[:port]` (a missing scheme means https).
    pub url: String,
    /// The one-time enrollment token from `portcullis admin site add` / `site token`.
    pub token: String,
    /// A PEM file of the CA to trust for the web's HTTPS (and the relay's certificate when the
    /// broker names no relay CA); default the public web PKI.
    pub ca: Option<PathBuf>,
    /// Replace an existing enrollment.
    pub force: bool,
}

impl fmt::Debug for EnrollOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollOptions")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .field("ca", &self.ca)
            .field("force", &self.force)
            .finish()
    }
}

impl Drop for EnrollOptions {
    fn drop(&mut self) {
        self.token.zeroize();
    }
}

/// What an enrollment produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolled {
    pub site: String,
    pub relay: String,
    pub not_after: String,
    /// SHA-256 of the certificate (hex): what the broker recorded for the site.
    pub fingerprint: String,
}

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error(
        "{dir} already holds an enrollment (site {site}); pass --force to replace it (the old certificate stops working once the new one is issued)"
    )]
    AlreadyEnrolled { dir: PathBuf, site: String },
    /// The URL, token or CA given is unusable; nothing was sent.
    #[error("{0}")]
    Setup(String),
    #[error("cannot reach the broker at {url}: {detail}{hint}")]
    Unreachable {
        url: String,
        detail: String,
        hint: &'static str,
    },
    /// The broker said no, with its own sentence.
    #[error("the broker refused the enrollment: {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    #[error("the broker's answer cannot be used: {0}")]
    BadAnswer(String),
    #[error(transparent)]
    State(#[from] StateError),
}

/// The broker's answer. Unknown fields are ignored: a newer broker may add some. The site CA
/// (`ca`) is not kept: the relay pins this exact certificate rather than checking its chain.
#[derive(Deserialize)]
struct Answer {
    site: String,
    certificate: String,
    relay: String,
    #[serde(default)]
    relay_ca: Option<String>,
    not_after: String,
}

/// Enrolls into `state`. Refuses to replace an existing enrollment unless `opts.force`.
pub async fn enroll(state: &StateDir, opts: &EnrollOptions) -> Result<Enrolled, EnrollError> {
    if state.is_enrolled()? && !opts.force {
        let site = state
            .read_enrollment()
            .map(|e| e.site)
            .unwrap_or_else(|_| "unreadable".into());
        return Err(EnrollError::AlreadyEnrolled {
            dir: state.path().to_owned(),
            site,
        });
    }
    let base = normalize_web_url(&opts.url)?;
    let token = opts.token.trim();
    if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(EnrollError::Setup(
            "the enrollment token is empty or contains spaces; copy it exactly as `portcullis admin site add` printed it".into(),
        ));
    }
    let ca_pem = match &opts.ca {
        Some(path) => {
            let pem = state::read_bounded(path, 1 << 20)?;
            state::roots_from_pem(&pem, &path.display().to_string())?;
            Some(pem)
        }
        None => None,
    };
    let http = http_client(ca_pem.as_deref())?;

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|e| EnrollError::Setup(format!("cannot make a key: {e}")))?;
    let csr = csr_pem(&key)?;
    let origin = base.as_str().trim_end_matches('/').to_owned();
    let url = format!("{origin}{ENROLL_PATH}");
    let resp = http
        .post(&url)
        .json(&serde_json::json!({ "token": token, "csr": csr }))
        .send()
        .await
        .map_err(|e| unreachable(&origin, &e))?;
    let status = resp.status();
    let bytes = read_limited(resp)
        .await
        .map_err(|e| unreachable(&origin, &e))?;
    if !status.is_success() {
        return Err(refused(status.as_u16(), &bytes));
    }
    let answer: Answer = serde_json::from_slice(&bytes)
        .map_err(|e| EnrollError::BadAnswer(format!("not the expected JSON ({e})")))?;
    let checked = check_answer(&answer, &key, &base)?;

    // The relay's trust anchors: the relay CA the broker names, plus the CA given for the web
    // (a plant's own CA that signs both), as the vendor client does.
    let mut relay_ca = String::new();
    for pem in [answer.relay_ca.as_deref(), ca_pem.as_deref()]
        .into_iter()
        .flatten()
    {
        relay_ca.push_str(pem.trim_end());
        relay_ca.push('\n');
    }
    if !relay_ca.is_empty() {
        state::roots_from_pem(&relay_ca, "the relay CA the broker sent")
            .map_err(|e| EnrollError::BadAnswer(e.to_string()))?;
    }

    state.create()?;
    let key_pem = Zeroizing::new(key.serialize_pem());
    state.write(KEY_FILE, key_pem.as_bytes(), 0o600)?;
    state.write(CERT_FILE, answer.certificate.as_bytes(), 0o644)?;
    if relay_ca.is_empty() {
        state.remove(RELAY_CA_FILE)?;
    } else {
        state.write(RELAY_CA_FILE, relay_ca.as_bytes(), 0o644)?;
    }
    let enrollment = Enrollment {
        site: answer.site.clone(),
        relay: checked.relay.clone(),
        server_name: checked.server_name,
        web: Some(origin),
        not_after: Some(printable(&answer.not_after, 64)),
    };
    let toml = toml::to_string(&enrollment)
        .map_err(|e| EnrollError::Setup(format!("cannot write {CONFIG_FILE}: {e}")))?;
    let text =
        format!("# Written by `portcullis connector enroll`; re-enroll rather than edit.\n{toml}");
    state.write(CONFIG_FILE, text.as_bytes(), 0o644)?;
    Ok(Enrolled {
        site: answer.site,
        relay: checked.relay,
        not_after: printable(&answer.not_after, 64),
        fingerprint: checked.fingerprint,
    })
}

struct Checked {
    relay: String,
    server_name: String,
    fingerprint: String,
}

fn check_answer(a: &Answer, key: &KeyPair, web: &reqwest::Url) -> Result<Checked, EnrollError> {
    let bad = |s: String| EnrollError::BadAnswer(s);
    if !valid_site(&a.site) {
        return Err(bad(format!(
            "site {:?} is not a site name",
            printable(&a.site, 80)
        )));
    }
    let certs = CertificateDer::pem_slice_iter(a.certificate.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("the certificate is not valid PEM: {e}")))?;
    let leaf = certs
        .first()
        .ok_or_else(|| bad("it holds no certificate".into()))?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing = portcullis_net::crypto_provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| EnrollError::Setup(format!("the new key is unusable: {e}")))?;
    CertifiedKey::new(vec![leaf.clone()], signing)
        .keys_match()
        .map_err(|_| bad("the certificate is not for the key this connector sent".into()))?;

    let (host, port) = split_host_port(&a.relay).ok_or_else(|| {
        bad(format!(
            "relay {:?} is not host:port",
            printable(&a.relay, 200)
        ))
    })?;
    // A relay announced on "all addresses" is reached at the web's host.
    let host = match host.parse::<std::net::IpAddr>() {
        Ok(ip) if ip.is_unspecified() => web
            .host_str()
            .map(|h| h.trim_matches(['[', ']']).to_owned())
            .ok_or_else(|| bad("the relay address names no host".into()))?,
        _ => host.to_owned(),
    };
    if host.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad("the relay host is not a host name".into()));
    }
    let relay = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Ok(Checked {
        relay,
        server_name: host,
        fingerprint: portcullis_net::sha256_fingerprint(leaf),
    })
}

/// Site names follow the device-name rules: lowercase letters, digits, `-`, `_`, `.`; 1-64 bytes.
fn valid_site(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

fn csr_pem(key: &KeyPair) -> Result<String, EnrollError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CSR_COMMON_NAME);
    params.distinguished_name = dn;
    params
        .serialize_request(key)
        .and_then(|csr| csr.pem())
        .map_err(|e| EnrollError::Setup(format!("cannot make the certificate request: {e}")))
}

/// `https://host[:port]` from what a person typed: a missing scheme means https, a trailing
/// slash is dropped, plain http is refused (the token must never travel in clear).
pub fn normalize_web_url(text: &str) -> Result<reqwest::Url, EnrollError> {
    let t = text.trim();
    let with_scheme = if t.contains("://") {
        t.to_owned()
    } else {
        format!("https://{t}")
    };
    let shown = printable(text, 200);
    let url = reqwest::Url::parse(&with_scheme).map_err(|e| {
        EnrollError::Setup(format!(
            "'{shown}' is not a web address ({e}); give it as https://host[:port]"
        ))
    })?;
    if url.scheme() != "https" {
        return Err(EnrollError::Setup(format!(
            "the web address must start with https:// (got {}://): the enrollment token never travels unencrypted",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty)
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.path() != "/"
    {
        return Err(EnrollError::Setup(format!(
            "give the web address as https://host[:port], without path, query or user (got '{shown}')"
        )));
    }
    Ok(url)
}

fn http_client(ca_pem: Option<&str>) -> Result<reqwest::Client, EnrollError> {
    let roots = match ca_pem {
        Some(pem) => state::roots_from_pem(pem, "the --ca file")?,
        None => state::web_pki_roots(),
    };
    let mut tls = rustls::ClientConfig::builder_with_provider(portcullis_net::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| EnrollError::Setup(format!("cannot build the TLS configuration: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = portcullis_net::HTTPS_ALPN
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .collect();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .https_only(true)
        .timeout(CALL_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        // The API never redirects; following one could send the token elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("portcullis-connector/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| EnrollError::Setup(format!("cannot set up the HTTPS client: {e}")))
}

async fn read_limited(mut resp: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if out.len() + chunk.len() > MAX_ANSWER_LEN {
            break;
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The broker's JSON error `{"error": "...", "code": "..."}`, as the vendor client reads it.
fn refused(status: u16, body: &[u8]) -> EnrollError {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let message = v["error"]
        .as_str()
        .map(|m| printable(m, 500))
        .unwrap_or_else(|| format!("the broker answered HTTP {status}"));
    let code = v["code"]
        .as_str()
        .map(|c| printable(c, 64))
        .unwrap_or_default();
    EnrollError::Refused {
        status,
        code,
        message,
    }
}

fn unreachable(url: &str, e: &reqwest::Error) -> EnrollError {
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !detail.contains(&text) {
            detail.push_str(": ");
            detail.push_str(&text);
        }
        source = s.source();
    }
    let lower = detail.to_lowercase();
    let hint = if lower.contains("certificate") || lower.contains("unknownissuer") {
        " (is the broker's CA trusted? pass --ca <the CA's PEM file>, e.g. <data-dir>/tls/ca.pem of a development broker)"
    } else {
        ""
    };
    EnrollError::Unreachable {
        url: url.to_owned(),
        detail: printable(&detail, 500),
        hint,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn web_urls_are_https_origins() {
        let n = |s| normalize_web_url(s).map(|u| u.as_str().trim_end_matches('/').to_owned());
        assert_eq!(
            n("https://broker.example:8443/").unwrap(),
            "https://broker.example:8443"
        );
        assert_eq!(n("127.0.0.1:8443").unwrap(), "https://127.0.0.1:8443");
        let e = n("http://broker.example").unwrap_err().to_string();
        assert!(e.contains("https://"), "{e}");
        for bad in [
            "https://",
            "https://u:p@broker.example",
            "https://broker.example/?x=1",
            "https://broker.example/api",
        ] {
            assert!(n(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn broker_errors_keep_their_sentence() {
        let e = refused(
            403,
            br#"{"error":"the enrollment token is not valid (used, expired or unknown)","code":"bad_token"}"#,
        );
        assert_eq!(
            e.to_string(),
            "the broker refused the enrollment: the enrollment token is not valid (used, expired or unknown)"
        );
        let e = refused(502, b"<html>bad gateway</html>");
        assert_eq!(
            e.to_string(),
            "the broker refused the enrollment: the broker answered HTTP 502"
        );
        let e = refused(400, b"{\"error\":\"line\\nbreak\"}");
        assert_eq!(
            e.to_string(),
            "the broker refused the enrollment: line break"
        );
    }

    #[test]
    fn site_names_follow_the_device_name_rules() {
        for ok in ["plant-2", "a", "line_3.north", &"x".repeat(64)] {
            assert!(valid_site(ok), "{ok}");
        }
        for bad in [
            "",
            "Plant",
            "plant 2",
            "plant/2",
            "pl\nant",
            &"x".repeat(65),
        ] {
            assert!(!valid_site(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_csr_is_a_signed_pkcs10_request_for_the_key() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let pem = csr_pem(&key).unwrap();
        assert!(
            pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"),
            "{pem}"
        );
        let parsed = rcgen::CertificateSigningRequestParams::from_pem(&pem).unwrap();
        use rcgen::PublicKeyData as _;
        assert_eq!(parsed.public_key.der_bytes(), key.der_bytes());
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let o = EnrollOptions {
            url: "https://b".into(),
            token: "very-secret-token".into(),
            ca: None,
            force: false,
        };
        assert!(!format!("{o:?}").contains("very-secret-token"));
    }
}
