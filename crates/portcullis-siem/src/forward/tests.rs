//! The follower against real collectors on loopback (portcullis-testkit's `syslog::Receiver`)
//! and a real store on both databases. Waits are for messages on a channel, bounded by a
//! deadline only so a broken build fails instead of hanging.

use std::sync::Arc;
use std::time::Duration;

use portcullis_core::audit::{ActorRole, AuditDraft, MacKey};
use portcullis_store::{Store, StoreConfig};
use portcullis_testkit::TestDb;
use portcullis_testkit::syslog::{Kind, Receiver};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::config::SyslogFile;

const DEADLINE: Duration = Duration::from_secs(20);

async fn store(db: &TestDb) -> Store {
    Store::open(db.url(), StoreConfig::new(MacKey::new([7; 32])))
        .await
        .unwrap()
}

async fn append(store: &Store, n: usize) -> Vec<i64> {
    let mut seqs = Vec::new();
    for i in 0..n {
        let ev = store
            .append(
                AuditDraft::new("tester", ActorRole::System, "test.append")
                    .target(format!("thing:{i}"))
                    .details(serde_json::json!({ "i": i })),
            )
            .await
            .unwrap();
        seqs.push(ev.seq);
    }
    seqs
}

fn config(url: &str, ca: Option<&std::path::Path>) -> SyslogConfig {
    SyslogConfig::from_file(&SyslogFile {
        server: url.into(),
        ca_file: ca.map(Into::into),
        hostname: Some("test-host".into()),
        ..Default::default()
    })
    .unwrap()
}

/// Starts a forwarder with short pauses; returns its metrics and stop token.
fn forward(store: &Store, config: &SyslogConfig) -> (Arc<SiemMetrics>, CancellationToken) {
    let f = Forwarder::new(store.clone(), config).unwrap().with_timing(
        Backoff::new(Duration::from_millis(20), Duration::from_millis(200)),
        Duration::from_millis(20),
    );
    let metrics = f.metrics();
    let stop = CancellationToken::new();
    tokio::spawn(f.run(stop.clone()));
    (metrics, stop)
}

/// The `seq` of a message, from its structured data.
fn seq_of(msg: &str) -> i64 {
    let rest = msg.split("seq=\"").nth(1).expect("a seq parameter");
    rest[..rest.find('"').unwrap()].parse().unwrap()
}

async fn expect_seqs(rx: &mut Receiver, want: &[i64]) {
    for w in want {
        let (_, msg) = rx
            .next_within(DEADLINE)
            .await
            .unwrap_or_else(|| panic!("seq {w} never arrived"));
        assert_eq!(seq_of(&msg), *w, "{msg}");
    }
}

/// The counter moves just after the collector has the page (once the cursor is updated).
async fn wait_forwarded(metrics: &SiemMetrics, n: u64) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while metrics.forwarded() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            metrics.render()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(metrics.forwarded(), n);
}

async fn sends_everything_in_order_and_once_across_a_collector_restart(db: TestDb) {
    let store = store(&db).await;
    let mut rx = Receiver::start(Kind::Tcp).await;
    let first = append(&store, 5).await;
    let (metrics, stop) = forward(&store, &config(&rx.url(), None));
    expect_seqs(&mut rx, &first).await;

    // The collector goes away; events keep being committed; it comes back on the same port.
    rx.stop();
    let missed = append(&store, 7).await;
    rx.restart().await;
    expect_seqs(&mut rx, &missed).await;
    // Nothing twice: the next message after the missed ones is a new event, not a repeat.
    let later = append(&store, 1).await;
    expect_seqs(&mut rx, &later).await;

    wait_forwarded(&metrics, 13).await;
    assert_eq!(store.cursor(CURSOR).await.unwrap(), later[0]);
    let text = metrics.render();
    assert!(
        text.contains("portcullis_siem_forwarded_total 13\n"),
        "{text}"
    );
    assert!(text.contains("portcullis_siem_connected 1\n"), "{text}");
    stop.cancel();
}

async fn a_forwarder_resumes_after_the_cursor(db: TestDb) {
    let store = store(&db).await;
    let seqs = append(&store, 6).await;
    // An earlier run got as far as the third event.
    assert!(store.advance_cursor(CURSOR, 0, seqs[2]).await.unwrap());
    let mut rx = Receiver::start(Kind::Tcp).await;
    let (_, stop) = forward(&store, &config(&rx.url(), None));
    expect_seqs(&mut rx, &seqs[3..]).await;
    stop.cancel();
}

async fn a_page_boundary_is_crossed_in_order(db: TestDb) {
    let store = store(&db).await;
    let seqs = append(&store, PAGE as usize + 20).await;
    let mut rx = Receiver::start(Kind::Tcp).await;
    let (metrics, stop) = forward(&store, &config(&rx.url(), None));
    expect_seqs(&mut rx, &seqs).await;
    wait_forwarded(&metrics, seqs.len() as u64).await;
    assert_eq!(store.cursor(CURSOR).await.unwrap(), *seqs.last().unwrap());
    stop.cancel();
}

portcullis_testkit::both_backends!(
    sends_everything_in_order_and_once_across_a_collector_restart,
    a_forwarder_resumes_after_the_cursor,
    a_page_boundary_is_crossed_in_order
);

/// A TLS collector whose certificate comes from a test CA (rcgen, through portcullis-net's
/// development PKI) that only `ca_file` makes trusted.
fn tls_collector(
    dir: &std::path::Path,
) -> (Arc<tokio_rustls::rustls::ServerConfig>, std::path::PathBuf) {
    let files = portcullis_net::ensure_dev_pki(dir, &["127.0.0.1".into()]).unwrap();
    let (certs, key) = portcullis_net::load_certified_key(&files.cert, &files.key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(portcullis_net::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    (Arc::new(config), files.ca_cert)
}

#[tokio::test]
async fn tls_with_a_private_ca_delivers_and_survives_a_restart() {
    let db = TestDb::sqlite();
    let store = store(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let (server, ca) = tls_collector(&dir.path().join("tls"));
    let mut rx = Receiver::start(Kind::Tls(server)).await;
    let first = append(&store, 3).await;
    let (_, stop) = forward(&store, &config(&rx.url(), Some(&ca)));
    expect_seqs(&mut rx, &first).await;
    rx.stop();
    let missed = append(&store, 3).await;
    rx.restart().await;
    expect_seqs(&mut rx, &missed).await;
    let later = append(&store, 1).await;
    expect_seqs(&mut rx, &later).await;
    stop.cancel();
}

#[tokio::test]
async fn tls_refuses_a_collector_the_ca_file_does_not_vouch_for() {
    let db = TestDb::sqlite();
    let store = store(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = tls_collector(&dir.path().join("tls"));
    let (_, other_ca) = tls_collector(&dir.path().join("other"));
    let mut rx = Receiver::start(Kind::Tls(server)).await;
    append(&store, 2).await;
    let (metrics, stop) = forward(&store, &config(&rx.url(), Some(&other_ca)));
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !metrics
        .render()
        .contains("portcullis_siem_errors_total{kind=\"connect\"} 2")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            metrics.render()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(rx.next_within(Duration::from_millis(1)).await.is_none());
    assert_eq!(store.cursor(CURSOR).await.unwrap(), 0);
    assert_eq!(metrics.forwarded(), 0);
    stop.cancel();
}

#[tokio::test]
async fn udp_sends_one_datagram_per_event() {
    let db = TestDb::sqlite();
    let store = store(&db).await;
    let mut rx = Receiver::start(Kind::Udp).await;
    let seqs = append(&store, 4).await;
    let (_, stop) = forward(&store, &config(&rx.url(), None));
    expect_seqs(&mut rx, &seqs).await;
    stop.cancel();
}

#[test]
fn backoff_doubles_up_to_its_cap_and_resets() {
    let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
    let got: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
    assert_eq!(got, [100, 200, 400, 500, 500]);
    b.reset();
    assert_eq!(b.next_delay(), Duration::from_millis(100));
}
