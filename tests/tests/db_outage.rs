//! During a PostgreSQL outage the broker fails fast (issue 12, point 8): a request answers 503
//! within about 3 s (it waited the 10 s pool timeout before), through the real binary and a
//! proxy that cuts the database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{PASSWORD, Plant};
use portcullis_testkit::TestDb;
use portcullis_testkit::proxy::CutProxy;
use serde_json::json;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_database_outage_requests_answer_503_within_3_s_and_recover() {
    let db = TestDb::postgres().await;
    let (proxy, url) = CutProxy::start_for_url(db.url()).await;
    let plant = Plant::on(Some(&url), false, &[502], &[]).await;
    let pending = plant.vera.request("plc-7", "502", "+1h");

    proxy.cut().await;
    let login = json!({ "username": "sam", "password": PASSWORD });
    // Several in a row: the first meets the pooled connections the cut broke, the later ones
    // none at all; each must fail fast.
    for i in 0..3 {
        let t = Instant::now();
        let (s, body) = plant
            .broker
            .post("/api/v1/auth/login", login.clone(), None)
            .await;
        let took = t.elapsed();
        assert_eq!(s, 503, "login {i} during the outage: {body}");
        assert!(
            took < Duration::from_secs(3),
            "login {i}: 503 after {took:?}"
        );
        let t = Instant::now();
        let (s, body) = plant
            .broker
            .post(
                &format!("/api/v1/requests/{pending}/approve"),
                json!({}),
                Some(&plant.sam),
            )
            .await;
        let took = t.elapsed();
        assert_eq!(s, 503, "approve {i} during the outage: {body}");
        assert!(
            took < Duration::from_secs(3),
            "approve {i}: 503 after {took:?}"
        );
    }
    let t = Instant::now();
    let r = plant
        .broker
        .http
        .get(format!("{}/readyz", plant.broker.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());

    proxy.restore();
    let start = Instant::now();
    loop {
        let (s, _) = plant
            .broker
            .post(
                &format!("/api/v1/requests/{pending}/approve"),
                json!({}),
                Some(&plant.sam),
            )
            .await;
        if s == 200 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "approve after restore: {s}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
