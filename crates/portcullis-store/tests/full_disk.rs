//! A write that fails because the database is full (SQLITE_FULL) leaves nothing broken: the
//! next write on the same pooled connection works as soon as there is room, and the store's
//! write mark (what `/readyz` reads) follows. `PRAGMA max_page_count` makes the database "full"
//! without a filesystem to fill; the end-to-end test fills a real tmpfs.
//!
//! Before the fix the second append failed with "attempted to call begin_with at non-zero
//! transaction depth": SQLite had rolled the failed transaction back itself, sqlx's ROLLBACK
//! then failed, and sqlx kept counting a transaction open on the pooled connection.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use portcullis_core::audit::{ActorRole, AuditDraft, MacKey};
use portcullis_store::{Store, StoreConfig};
use portcullis_testkit::TestDb;
use sqlx::Row;

fn big() -> AuditDraft {
    AuditDraft::new("a", ActorRole::System, "test.big")
        .details(serde_json::json!({ "blob": "x".repeat(200_000) }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_failed_on_a_full_database_leaves_the_pool_usable() {
    let db = TestDb::sqlite();
    let mut cfg = StoreConfig::new(MacKey::new([1; 32]));
    // One connection: the write after the failure runs on the very connection that failed.
    cfg.max_connections = 1;
    let store = Store::open(db.url(), cfg).await.unwrap();
    store
        .append(AuditDraft::new("a", ActorRole::System, "test.small"))
        .await
        .unwrap();
    assert!(store.audit_writable().is_ok());

    for round in 0..3 {
        let pages: i64 = sqlx::query("PRAGMA page_count")
            .fetch_one(store.pool())
            .await
            .unwrap()
            .get(0);
        // `max_page_count` belongs to the connection; with one connection in the pool it is
        // the one every write below uses (a replacement connection starts unlimited).
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "PRAGMA max_page_count = {pages}"
        )))
        .execute(store.pool())
        .await
        .unwrap();
        let e = store.append(big()).await.unwrap_err();
        assert!(e.is_unavailable(), "round {round}: {e}");
        assert!(e.to_string().contains("full"), "round {round}: {e}");
        let why = store.audit_writable().unwrap_err();
        assert!(why.contains("full"), "{why}");

        sqlx::raw_sql("PRAGMA max_page_count = 1073741823")
            .execute(store.pool())
            .await
            .unwrap();
        store
            .append(big())
            .await
            .unwrap_or_else(|e| panic!("round {round}: the write after the space returned: {e}"));
        assert!(
            store.audit_writable().is_ok(),
            "a committed write clears the mark"
        );
    }
    let v = store.verify_chain(None, vec![]).await.unwrap().unwrap();
    assert_eq!(v.events, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_probe_really_writes_and_clears_the_mark() {
    let db = TestDb::sqlite();
    let mut cfg = StoreConfig::new(MacKey::new([1; 32]));
    cfg.max_connections = 1;
    let store = Store::open(db.url(), cfg).await.unwrap();
    let pages: i64 = sqlx::query("PRAGMA page_count")
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get(0);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "PRAGMA max_page_count = {pages}"
    )))
    .execute(store.pool())
    .await
    .unwrap();
    store.append(big()).await.unwrap_err();
    assert!(store.audit_writable().is_err());
    sqlx::raw_sql("PRAGMA max_page_count = 1073741823")
        .execute(store.pool())
        .await
        .unwrap();
    store.probe_writes().await.unwrap();
    assert!(store.audit_writable().is_ok());
    let n: i64 = sqlx::query("SELECT n FROM health_probe WHERE id = 1")
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "the probe row was rewritten");
}
