//! Issue 12, through a real `portcullis serve` over HTTPS: ten parallel wrong passwords lock the
//! account once (one `login.locked` in the audit log, not six), and the locked account answers
//! exactly like an unknown one (the same status and body, no Retry-After), so the answer does not
//! reveal that the account exists.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Broker, PASSWORD, admin};
use serde_json::{Value, json};

/// One login attempt: status, the Retry-After header if any, and the body.
async fn attempt(b: &Broker, user: &str, password: &str) -> (u16, Option<String>, Value) {
    let r = b
        .http
        .post(format!("{}/api/v1/auth/login", b.base))
        .json(&json!({ "username": user, "password": password }))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_wrong_passwords_lock_once_and_a_locked_account_looks_unknown() {
    let data = tempfile::tempdir().unwrap();
    admin(data.path(), &["admin", "org", "add", "acme"]);
    let b = Broker::start(data.path(), None, &[]);
    b.enroll("vera", "vendor", Some("acme")).await;

    // Ten at once, as the black-box run sent them (the default lockout is 5 failures).
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let http = b.http.clone();
            let url = format!("{}/api/v1/auth/login", b.base);
            tokio::spawn(async move {
                let r = http
                    .post(url)
                    .json(&json!({ "username": "vera", "password": format!("wrong guess number {i}") }))
                    .send()
                    .await
                    .unwrap();
                r.status().as_u16()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 401);
    }

    let locked = b.audit("login.locked");
    assert_eq!(locked.len(), 1, "one lock, one event: {locked:#?}");
    assert_eq!(locked[0]["target"], "user:vera");
    assert_eq!(b.audit("login.fail").len(), 10, "every attempt is recorded");

    // Now locked: the right password is refused, exactly as a name that does not exist is.
    let on_locked = attempt(&b, "vera", PASSWORD).await;
    let on_unknown = attempt(&b, "nobody-here", PASSWORD).await;
    assert_eq!(on_locked.0, 401, "{on_locked:?}");
    assert_eq!(on_locked, on_unknown);
    assert_eq!(
        on_locked.1, None,
        "no Retry-After that only a real account gets"
    );
    // Still enforced and audited, and still one lock.
    let fails = b.audit("login.fail");
    assert!(
        fails
            .iter()
            .any(|e| e["target"] == "user:vera" && e["details"]["reason"] == "locked"),
        "{fails:#?}"
    );
    assert_eq!(b.audit("login.locked").len(), 1);
}
