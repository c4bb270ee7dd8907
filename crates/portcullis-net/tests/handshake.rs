//! Real TLS handshakes against the development PKI: the HTTPS server configuration with a client
//! that trusts only `ca.pem`, over loopback TCP and in-memory pipes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::Arc;

use portcullis_net::{
    NetError, TlsFiles, client_config_trusting, crypto_provider, ensure_dev_pki,
    https_server_config, load_certified_key,
};
use rustls::pki_types::ServerName;
use rustls::{CipherSuite, ClientConfig, ProtocolVersion, RootCertStore, ServerConfig};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

#[derive(Debug)]
struct Negotiated {
    version: ProtocolVersion,
    suite: CipherSuite,
    alpn: Option<Vec<u8>>,
}

fn dev_pki(dir: &Path) -> (TlsFiles, Arc<ServerConfig>) {
    let files = ensure_dev_pki(&dir.join("tls"), &["broker.plant.example".to_owned()]).unwrap();
    let (certs, key) = load_certified_key(&files.cert, &files.key).unwrap();
    (files, https_server_config(certs, key).unwrap())
}

/// Handshakes over an in-memory pipe, then echoes one message to prove the session carries data.
async fn handshake(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    name: ServerName<'static>,
) -> Result<Negotiated, std::io::Error> {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let accept = tokio::spawn(async move {
        let mut tls = TlsAcceptor::from(server).accept(server_io).await?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await?;
        tls.write_all(&buf).await?;
        tls.shutdown().await?;
        Ok::<_, std::io::Error>(())
    });
    let mut tls = TlsConnector::from(client).connect(name, client_io).await?;
    tls.write_all(b"ping").await?;
    let mut buf = [0u8; 4];
    tls.read_exact(&mut buf).await?;
    assert_eq!(&buf, b"ping");
    accept.await.unwrap()?;
    let (_, conn) = tls.get_ref();
    Ok(Negotiated {
        version: conn.protocol_version().unwrap(),
        suite: conn.negotiated_cipher_suite().unwrap().suite(),
        alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
    })
}

fn roots(ca_pem: &Path) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    roots
}

#[tokio::test]
async fn tls13_over_loopback_tcp_for_every_default_name() {
    let dir = tempfile::tempdir().unwrap();
    let (files, server) = dev_pki(dir.path());
    let client = client_config_trusting(&files.ca_cert, &["h2", "http/1.1"]).unwrap();

    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let names = [
        ServerName::try_from("localhost").unwrap(),
        ServerName::try_from("broker.plant.example").unwrap(),
        ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into()),
        ServerName::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST).into()),
    ];
    let count = names.len();
    let acceptor = TlsAcceptor::from(server);
    let serve = tokio::spawn(async move {
        for _ in 0..count {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(tcp).await.unwrap();
            let mut buf = [0u8; 5];
            tls.read_exact(&mut buf).await.unwrap();
            tls.write_all(&buf).await.unwrap();
            tls.shutdown().await.unwrap();
        }
    });

    for name in names {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut tls = TlsConnector::from(Arc::clone(&client))
            .connect(name.clone(), tcp)
            .await
            .unwrap_or_else(|e| panic!("{name:?}: {e}"));
        tls.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
        let (_, conn) = tls.get_ref();
        assert_eq!(conn.protocol_version(), Some(ProtocolVersion::TLSv1_3));
        assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]));
    }
    serve.await.unwrap();
}

#[tokio::test]
async fn http1_only_client_gets_http1() {
    let dir = tempfile::tempdir().unwrap();
    let (files, server) = dev_pki(dir.path());
    let client = client_config_trusting(&files.ca_cert, &["http/1.1"]).unwrap();
    let got = handshake(server, client, ServerName::try_from("localhost").unwrap())
        .await
        .unwrap();
    assert_eq!(got.version, ProtocolVersion::TLSv1_3);
    assert_eq!(got.alpn.as_deref(), Some(&b"http/1.1"[..]));
}

#[tokio::test]
async fn a_tls12_only_client_still_gets_ecdhe_gcm() {
    let dir = tempfile::tempdir().unwrap();
    let (files, server) = dev_pki(dir.path());
    for suite in [
        rustls::crypto::ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        rustls::crypto::ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ] {
        let provider = rustls::crypto::CryptoProvider {
            cipher_suites: vec![suite],
            ..(*crypto_provider()).clone()
        };
        let client = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots(&files.ca_cert))
            .with_no_client_auth();
        let got = handshake(
            Arc::clone(&server),
            Arc::new(client),
            ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into()),
        )
        .await
        .unwrap();
        assert_eq!(got.version, ProtocolVersion::TLSv1_2);
        assert_eq!(got.suite, suite.suite());
    }
}

#[tokio::test]
async fn no_common_suite_or_alpn_protocol_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (files, server) = dev_pki(dir.path());
    // The server has an ECDSA certificate: an RSA-only TLS 1.2 client finds no common suite.
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            rustls::crypto::ring::cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ],
        ..(*crypto_provider()).clone()
    };
    let client = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots(&files.ca_cert))
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").unwrap();
    let err = handshake(Arc::clone(&server), Arc::new(client), name.clone())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("HandshakeFailure"), "{err}");

    // ALPN offered but nothing in common: refused (no silent fallback).
    let client = client_config_trusting(&files.ca_cert, &["spdy/3"]).unwrap();
    let err = handshake(server, client, name).await.unwrap_err();
    assert!(err.to_string().contains("NoApplicationProtocol"), "{err}");
}

#[tokio::test]
async fn the_certificate_is_refused_for_other_names_and_by_other_cas() {
    let dir = tempfile::tempdir().unwrap();
    let (files, server) = dev_pki(dir.path());
    let client = client_config_trusting(&files.ca_cert, &["h2"]).unwrap();
    let err = handshake(
        Arc::clone(&server),
        client,
        ServerName::try_from("elsewhere.example").unwrap(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("not valid for name"), "{err}");

    let other = tempfile::tempdir().unwrap();
    let other_files = ensure_dev_pki(&other.path().join("tls"), &[]).unwrap();
    let stranger = client_config_trusting(&other_files.ca_cert, &["h2"]).unwrap();
    let err = handshake(server, stranger, ServerName::try_from("localhost").unwrap())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
}

#[test]
fn load_errors_name_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let files = ensure_dev_pki(&dir.path().join("tls"), &[]).unwrap();

    // A key where the certificate should be.
    let err = load_certified_key(&files.key, &files.key).unwrap_err();
    assert!(matches!(err, NetError::NoCertificate { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("no certificate found in {}", files.key.display())),
        "{err}"
    );

    // A certificate where the key should be.
    let err = load_certified_key(&files.cert, &files.cert).unwrap_err();
    assert!(matches!(err, NetError::NoPrivateKey { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("no private key found in {}", files.cert.display())),
        "{err}"
    );

    // The CA's key with the server's certificate.
    let ca_key = dir.path().join("tls").join("ca.key");
    let err = load_certified_key(&files.cert, &ca_key).unwrap_err();
    assert!(matches!(err, NetError::KeyMismatch { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.starts_with("key does not match certificate"), "{text}");
    assert!(text.contains(&ca_key.display().to_string()), "{text}");
    assert!(text.contains(&files.cert.display().to_string()), "{text}");

    // Broken PEM and a missing file are named too.
    let broken = dir.path().join("broken.pem");
    fs::write(&broken, "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
    let err = load_certified_key(&broken, &files.key).unwrap_err();
    assert!(matches!(err, NetError::Pem { .. }), "{err:?}");
    assert!(err.to_string().contains(&broken.display().to_string()));
    let missing = dir.path().join("missing.pem");
    let err = client_config_trusting(&missing, &[]).unwrap_err();
    assert!(err.to_string().contains(&missing.display().to_string()));

    // A combined file (chain and key together) works for both arguments.
    let combined = dir.path().join("combined.pem");
    let mut text = fs::read_to_string(&files.cert).unwrap();
    text.push_str(&fs::read_to_string(&files.key).unwrap());
    fs::write(&combined, text).unwrap();
    let (certs, _) = load_certified_key(&combined, &combined).unwrap();
    assert_eq!(certs.len(), 1);
}

#[test]
fn server_config_refuses_early_data_and_offers_h2_first() {
    let dir = tempfile::tempdir().unwrap();
    let (_, server) = dev_pki(dir.path());
    assert_eq!(server.max_early_data_size, 0);
    assert_eq!(
        server.alpn_protocols,
        [b"h2".to_vec(), b"http/1.1".to_vec()]
    );
}
