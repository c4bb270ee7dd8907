//! The least-privilege split on PostgreSQL (issue 12, point 7): the schema owner runs
//! `portcullis migrate`; the services run as `portcullis_app` (deploy/postgres/roles.sql), which
//! may read and append the audit log but has no DDL rights. Before the split held, `serve`, `web`
//! and `relay` ran migrations at start and exited with "permission denied for schema public".
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Plant, migrate_once};
use portcullis_testkit::devices::EchoDevice;
use portcullis_testkit::{TestDb, portcullis_bin};
use sqlx::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROLES_SQL: &str = include_str!("../../deploy/postgres/roles.sql");

/// `url` with its user replaced by `portcullis_app` (the test server trusts loopback, so no
/// password is involved).
fn as_app_role(url: &str) -> String {
    let rest = url.strip_prefix("postgres://").expect("a postgres:// URL");
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    format!("postgres://portcullis_app@{host}")
}

/// Runs deploy/postgres/roles.sql as the owner, as the admin guide says to.
async fn apply_roles(owner_url: &str) {
    let mut c = sqlx::PgConnection::connect(owner_url).await.unwrap();
    // Two test runs may create the cluster-wide role at once; the script's IF NOT EXISTS then
    // loses the race in one of them, and running it again settles it.
    if sqlx::raw_sql(ROLES_SQL).execute(&mut c).await.is_err() {
        sqlx::raw_sql(ROLES_SQL).execute(&mut c).await.unwrap();
    }
    c.close().await.ok();
}

/// Runs the binary with `url`; returns (exit code, stdout, stderr).
fn run(data: &std::path::Path, url: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(portcullis_bin())
        .arg("--data-dir")
        .arg(data)
        .arg("--database-url")
        .arg(url)
        .env_remove("PORTCULLIS_DATABASE_URL")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_services_run_as_the_application_role_and_only_migrate_changes_the_schema() {
    let db = TestDb::postgres().await;
    let owner = db.url().to_owned();
    let app = as_app_role(&owner);
    // Before any migration there are no tables to grant on: the role exists and may log in
    // (the script's first statement), nothing more.
    let create_role = &ROLES_SQL[..ROLES_SQL.find("END $$;").unwrap() + "END $$;".len()];
    let mut c = sqlx::PgConnection::connect(&owner).await.unwrap();
    if sqlx::raw_sql(sqlx::AssertSqlSafe(create_role))
        .execute(&mut c)
        .await
        .is_err()
    {
        // Another test run created the cluster-wide role at the same moment.
        sqlx::raw_sql(sqlx::AssertSqlSafe(create_role))
            .execute(&mut c)
            .await
            .unwrap();
    }
    c.close().await.ok();
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("data");

    // An unmigrated database: the services refuse to start, and say what to run.
    for service in [
        vec![
            "serve",
            "--web-listen",
            "127.0.0.1:0",
            "--relay-listen",
            "127.0.0.1:0",
        ],
        vec!["web", "--web-listen", "127.0.0.1:0"],
    ] {
        let (code, _, err) = run(&data, &app, &service);
        assert_eq!(
            code, 1,
            "{service:?} started on an unmigrated database: {err}"
        );
        assert!(
            err.contains("no Portcullis schema yet") && err.contains("portcullis migrate"),
            "{service:?}: {err}"
        );
    }
    // The application role may not migrate; the message names the owner's job.
    let (code, _, err) = run(&data, &app, &["migrate"]);
    assert_eq!(code, 1, "the application role migrated: {err}");
    assert!(
        err.contains("permission denied") && err.contains("owner"),
        "{err}"
    );

    // The owner migrates; the grants are (re-)applied, as after every upgrade.
    let (code, out, err) = run(&data, &owner, &["migrate"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("schema is up to date"), "{out}");
    apply_roles(&owner).await;
    // Migrating a current schema needs no DDL, so it succeeds for the application role too.
    let (code, _, err) = run(&data, &app, &["migrate"]);
    assert_eq!(code, 0, "{err}");
    migrate_once(&data, Some(&app));

    // The whole slice as the application role: admin command line, web and relay as two
    // processes, login, request, MFA approval, a relay session through `portcullis connect`.
    let started = std::time::Instant::now();
    let echo = EchoDevice::start().await;
    let port = echo.addr().port();
    let plant = Plant::on(Some(&app), true, &[port], &[]).await;
    let grant = plant.grant(&port.to_string(), "+1h").await;
    let tunnel = plant.vera.connect(grant, &[], 1).await;
    let mut s = tokio::net::TcpStream::connect(tunnel.local(port))
        .await
        .unwrap();
    s.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut buf))
        .await
        .expect("the device answered through the tunnel")
        .unwrap();
    assert_eq!(&buf, b"ping");
    assert_eq!(plant.broker.audit("relay.session.start").len(), 1);
    eprintln!("the slice as portcullis_app took {:?}", started.elapsed());

    // The role cannot rewrite history even with the owner's triggers out of the way.
    let mut c = sqlx::PgConnection::connect(&app).await.unwrap();
    let e = sqlx::raw_sql("UPDATE audit_events SET actor = 'x' WHERE seq = 1")
        .execute(&mut c)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("permission denied"), "{e}");
    let e = sqlx::raw_sql("CREATE TABLE intruder (x int)")
        .execute(&mut c)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("permission denied"), "{e}");
    c.close().await.ok();
    drop(tunnel);

    // The chain the services wrote verifies (as the application role: reading is enough).
    let (code, out, err) = run(&plant.broker.data, &app, &["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("audit log intact"), "{out}");
}
