//! `enroll` against a scripted web service: real HTTPS (a test CA), the real request, and a CSR
//! signed by a test site CA, so the files written can be loaded by `run` afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use portcullis_connector::{EnrollError, EnrollOptions, StateDir, enroll};
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, Issuer, KeyPair,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

const TOKEN: &str = "enr_0123456789abcdef";

/// What the fake web service saw.
#[derive(Debug, Clone)]
struct Seen {
    request_line: String,
    body: serde_json::Value,
}

/// How the fake web service answers one enrollment: status and JSON body, given the request.
type Script = Box<dyn Fn(&serde_json::Value) -> (u16, String) + Send + Sync>;

struct FakeWeb {
    url: String,
    ca_file: PathBuf,
    ca_pem: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    _tmp: tempfile::TempDir,
}

impl FakeWeb {
    async fn start(script: Script) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let files =
            portcullis_net::ensure_dev_pki(&tmp.path().join("tls"), &["127.0.0.1".into()]).unwrap();
        let (certs, key) = portcullis_net::load_certified_key(&files.cert, &files.key).unwrap();
        let mut tls = (*portcullis_net::https_server_config(certs, key).unwrap()).clone();
        // This little server speaks HTTP/1.1 only.
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "https://127.0.0.1:{}",
            listener.local_addr().unwrap().port()
        );
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        let script = Arc::new(script);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let log = log.clone();
                let script = script.clone();
                tokio::spawn(async move {
                    // A client that does not trust us fails here; that is its business.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let (request_line, body) = read_request(&mut tls).await;
                    let (status, answer) = script(&body);
                    log.lock().unwrap().push(Seen { request_line, body });
                    let response = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                        answer.len()
                    );
                    tls.write_all(response.as_bytes()).await.unwrap();
                    tls.shutdown().await.ok();
                });
            }
        });
        FakeWeb {
            url,
            ca_pem: std::fs::read_to_string(&files.ca_cert).unwrap(),
            ca_file: files.ca_cert,
            seen,
            _tmp: tmp,
        }
    }

    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn read_request<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> (String, serde_json::Value) {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the request ended early");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .expect("a content-length");
    while buf.len() < head_end + len {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the body ended early");
        buf.extend_from_slice(&chunk[..n]);
    }
    let request_line = head.lines().next().unwrap().to_owned();
    let body = serde_json::from_slice(&buf[head_end..head_end + len]).unwrap();
    (request_line, body)
}

/// A site CA that signs CSRs as the broker's would (CN = the site, clientAuth).
struct SiteCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl SiteCa {
    fn new() -> Self {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params
            .distinguished_name
            .push(DnType::CommonName, "test site CA");
        let cert = params.self_signed(&key).unwrap();
        SiteCa {
            issuer: Issuer::new(params, key),
            pem: cert.pem(),
        }
    }

    fn sign(&self, csr_pem: &str, site: &str) -> String {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, site);
        csr.params.distinguished_name = dn;
        csr.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        csr.signed_by(&self.issuer).unwrap().pem()
    }
}

/// A web service that enrolls `site` (answering relay `0.0.0.0:4433` and the given relay CA)
/// when the token is [`TOKEN`], and refuses other tokens as the broker does.
fn enrolling(site: &'static str, relay_ca: Option<String>) -> Script {
    let ca = SiteCa::new();
    Box::new(move |req| {
        if req["token"] != TOKEN {
            return (
                403,
                r#"{"error":"the enrollment token is not valid (used, expired or unknown)","code":"bad_token"}"#.into(),
            );
        }
        let cert = ca.sign(req["csr"].as_str().unwrap(), site);
        let answer = serde_json::json!({
            "site": site,
            "certificate": cert,
            "ca": ca.pem,
            "relay": "0.0.0.0:4433",
            "relay_ca": relay_ca,
            "not_after": "2027-01-01T00:00:00Z",
            "something_new": true,
        });
        (200, answer.to_string())
    })
}

fn opts(web: &FakeWeb, token: &str, ca: Option<&Path>, force: bool) -> EnrollOptions {
    EnrollOptions {
        url: web.url.clone(),
        token: token.into(),
        ca: ca.map(Path::to_owned),
        force,
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn enrollment_writes_a_usable_identity_and_sends_only_a_csr() {
    let relay_ca = SiteCa::new().pem; // any CA certificate will do for the relay's
    let web = FakeWeb::start(enrolling("plant-2", Some(relay_ca.clone()))).await;
    let tmp = tempfile::tempdir().unwrap();
    let state = StateDir::new(tmp.path().join("state"));

    let done = enroll(&state, &opts(&web, TOKEN, Some(&web.ca_file), false))
        .await
        .unwrap();
    assert_eq!(done.site, "plant-2");
    assert_eq!(
        done.relay, "127.0.0.1:4433",
        "a relay on all addresses is reached at the web's host"
    );

    let seen = web.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].request_line,
        "POST /api/v1/connector/enroll HTTP/1.1"
    );
    assert_eq!(seen[0].body["token"], TOKEN);
    let csr = seen[0].body["csr"].as_str().unwrap();
    assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
    assert!(!csr.contains("PRIVATE KEY") && !seen[0].body.to_string().contains("PRIVATE"));
    assert_eq!(
        seen[0].body.as_object().unwrap().len(),
        2,
        "token and csr only"
    );

    assert_eq!(mode(state.path()), 0o700);
    assert_eq!(mode(&state.key_file()), 0o600);
    let identity = state.load_identity().unwrap();
    assert_eq!(identity.enrollment.site, "plant-2");
    assert_eq!(identity.enrollment.relay, "127.0.0.1:4433");
    assert_eq!(identity.enrollment.server_name, "127.0.0.1");
    assert_eq!(identity.enrollment.web.as_deref(), Some(web.url.as_str()));
    assert_eq!(identity.fingerprint, done.fingerprint);
    assert!(identity.relay_ca_file);
    let ca_file = std::fs::read_to_string(state.relay_ca_file()).unwrap();
    assert!(
        ca_file.contains(relay_ca.trim()),
        "the relay CA the broker named"
    );
    assert!(
        ca_file.contains(web.ca_pem.trim()),
        "and the CA given with --ca"
    );
    assert_eq!(identity.roots.len(), 2);
}

#[tokio::test]
async fn an_existing_enrollment_is_kept_unless_forced() {
    let web = FakeWeb::start(enrolling("plant-2", None)).await;
    let tmp = tempfile::tempdir().unwrap();
    let state = StateDir::new(tmp.path());
    let first = enroll(&state, &opts(&web, TOKEN, Some(&web.ca_file), false))
        .await
        .unwrap();

    let e = enroll(&state, &opts(&web, TOKEN, Some(&web.ca_file), false))
        .await
        .unwrap_err();
    assert!(matches!(e, EnrollError::AlreadyEnrolled { .. }), "{e}");
    assert!(e.to_string().contains("--force"), "{e}");
    assert_eq!(web.requests().len(), 1, "nothing was sent");

    let key_before = std::fs::read(state.key_file()).unwrap();
    let second = enroll(&state, &opts(&web, TOKEN, Some(&web.ca_file), true))
        .await
        .unwrap();
    assert_ne!(first.fingerprint, second.fingerprint);
    assert_ne!(
        std::fs::read(state.key_file()).unwrap(),
        key_before,
        "a new key"
    );
    assert_eq!(
        state.load_identity().unwrap().fingerprint,
        second.fingerprint
    );
    // No relay CA named and the --ca file given: the --ca file is what the relay is checked
    // against.
    let ca_file = std::fs::read_to_string(state.relay_ca_file()).unwrap();
    assert_eq!(ca_file.trim(), web.ca_pem.trim());
}

#[tokio::test]
async fn a_refused_token_shows_the_brokers_sentence_and_writes_nothing() {
    let web = FakeWeb::start(enrolling("plant-2", None)).await;
    let tmp = tempfile::tempdir().unwrap();
    let state = StateDir::new(tmp.path().join("state"));
    let e = enroll(&state, &opts(&web, "enr_wrong", Some(&web.ca_file), false))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "the broker refused the enrollment: the enrollment token is not valid (used, expired or unknown)"
    );
    assert!(!state.path().exists(), "no key, no files");
}

#[tokio::test]
async fn a_forced_enrollment_that_is_refused_keeps_the_old_one() {
    let web = FakeWeb::start(enrolling("plant-2", None)).await;
    let tmp = tempfile::tempdir().unwrap();
    let state = StateDir::new(tmp.path());
    let first = enroll(&state, &opts(&web, TOKEN, Some(&web.ca_file), false))
        .await
        .unwrap();
    enroll(&state, &opts(&web, "enr_used", Some(&web.ca_file), true))
        .await
        .unwrap_err();
    assert_eq!(
        state.load_identity().unwrap().fingerprint,
        first.fingerprint
    );
}

#[tokio::test]
async fn an_untrusted_web_certificate_is_refused_with_a_hint() {
    let web = FakeWeb::start(enrolling("plant-2", None)).await;
    let tmp = tempfile::tempdir().unwrap();
    let state = StateDir::new(tmp.path());
    let e = enroll(&state, &opts(&web, TOKEN, None, false))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("--ca"), "{e}");
    assert!(web.requests().is_empty(), "the token never left");
}

#[tokio::test]
async fn a_certificate_for_another_key_is_refused() {
    let ca = SiteCa::new();
    let web = FakeWeb::start(Box::new(move |_req| {
        // A CSR of some other key, signed properly: not ours.
        let other = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = CertificateParams::default()
            .serialize_request(&other)
            .unwrap()
            .pem()
            .unwrap();
        let answer = serde_json::json!({
            "site": "plant-2", "certificate": ca.sign(&csr, "plant-2"), "ca": ca.pem,
            "relay": "relay.example:4433", "relay_ca": null, "not_after": "2027-01-01T00:00:00Z",
        });
        (200, answer.to_string())
    }))
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let state = StateDir::new(tmp.path().join("s"));
    let e = enroll(&state, &opts(&web, TOKEN, Some(&web.ca_file), false))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("not for the key this connector sent"), "{e}");
    assert!(!state.is_enrolled().unwrap());
}

#[tokio::test]
async fn plain_http_is_refused_before_anything_is_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let state = StateDir::new(tmp.path());
    let e = enroll(
        &state,
        &EnrollOptions {
            url: "http://broker.example".into(),
            token: TOKEN.into(),
            ca: None,
            force: false,
        },
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("https://"), "{e}");
}
