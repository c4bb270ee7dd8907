//! Connecting: the backend from the URL, SQLite pragmas, migrations, the append-only guard probe.

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, Connection, Executor};

use crate::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The product's name, for messages and reports.
    pub fn label(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }

    pub fn from_url(url: &str) -> Result<Backend, StoreError> {
        let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or("");
        match scheme {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            _ => Err(StoreError::Connect(format!(
                "'{}' is not a database URL; use sqlite://<path> or postgres://user@host/db",
                redact(url)
            ))),
        }
    }
}

/// The URL without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// SQLite settings for every connection.
///
/// `synchronous = FULL` in WAL mode syncs the WAL at every commit, so an event acknowledged as
/// written survives a power cut, not only a process crash (NORMAL may lose the last commits on
/// power loss). Group commit pays for it. See docs/decisions/0001-sqlite-durability.md.
const SQLITE_PRAGMAS: &str = "PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL; \
                              PRAGMA busy_timeout = 10000; PRAGMA trusted_schema = OFF;";

/// How long a request waits for a pooled connection before it fails (503). Short: while the
/// database is away every request would otherwise hold its client this long, and a relay
/// handshake twice over (issue 12). The connect probe at start keeps its own, longer limit.
const ACQUIRE_TIMEOUT: Duration = Duration::from_millis(1500);

pub(crate) async fn connect(
    url: &str,
    backend: Backend,
    create: bool,
    max_connections: u32,
) -> Result<AnyPool, StoreError> {
    sqlx::any::install_default_drivers();
    let url = match backend {
        Backend::Sqlite => sqlite_url(url, create),
        Backend::Postgres => url.to_owned(),
    };
    let opts = AnyConnectOptions::from_str(&url)
        .map_err(|e| StoreError::Connect(format!("{}: {e}", redact(&url))))?;
    // One direct attempt first: a pool that cannot connect only reports "timed out", while the
    // operator needs the cause (connection refused, authentication failed, no such database).
    let probe = tokio::time::timeout(Duration::from_secs(10), AnyConnection::connect_with(&opts))
        .await
        .map_err(|_| StoreError::Connect(format!("{}: no answer within 10 s", redact(&url))))?
        .map_err(|e| StoreError::Connect(describe_connect_error(&url, backend, &e)))?;
    probe.close().await.ok();
    let pool = AnyPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .after_release(move |conn, _| {
            Box::pin(async move {
                if backend == Backend::Sqlite {
                    // A dropped transaction's ROLLBACK is queued to the connection's worker, not
                    // yet run: one round trip through the worker lets it finish (or fail) first.
                    conn.ping().await?;
                }
                if conn.is_in_transaction() {
                    // sqlx still counts a transaction open although its ROLLBACK has run: SQLite
                    // had already rolled it back itself (SQLITE_FULL, IOERR; see
                    // docs/decisions/0009-full-disk.md), the ROLLBACK failed with "no transaction
                    // is active", and sqlx kept its depth at 1. Every later BEGIN on this
                    // connection would fail. Discard it; the pool opens a fresh one.
                    tracing::warn!(
                        "discarding a database connection left inside a failed transaction"
                    );
                    return Ok(false);
                }
                Ok(true)
            })
        })
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if backend == Backend::Sqlite {
                    conn.execute(sqlx::raw_sql(SQLITE_PRAGMAS)).await?;
                }
                Ok(())
            })
        })
        .connect_with(opts)
        .await
        .map_err(|e| StoreError::Connect(describe_connect_error(&url, backend, &e)))?;
    if backend == Backend::Sqlite {
        // WAL is a property of the file: set once, readers then never block the writer.
        pool.execute("PRAGMA journal_mode = WAL").await?;
    }
    Ok(pool)
}

fn sqlite_url(url: &str, create: bool) -> String {
    if url.contains("mode=") {
        return url.to_owned();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    let mode = if create { "rwc" } else { "rw" };
    format!("{url}{sep}mode={mode}")
}

fn describe_connect_error(url: &str, backend: Backend, e: &sqlx::Error) -> String {
    let shown = redact(url.split('?').next().unwrap_or(url));
    match (backend, e) {
        (Backend::Sqlite, sqlx::Error::Database(_)) => {
            format!("{shown}: the file does not exist or its directory is not writable")
        }
        _ => format!("{shown}: {e}"),
    }
}

pub(crate) async fn migrate(
    pool: &AnyPool,
    backend: Backend,
    apply: bool,
) -> Result<(), StoreError> {
    let migrator = match backend {
        Backend::Sqlite => sqlx::migrate!("../../migrations/sqlite"),
        Backend::Postgres => sqlx::migrate!("../../migrations/postgres"),
    };
    let current = check_schema_current(pool, &migrator).await;
    // A current schema needs nothing, not even the migrator's own `CREATE TABLE IF NOT EXISTS`
    // (which an application role may not run): `portcullis migrate` then succeeds for anyone.
    if !apply || current.is_ok() {
        return current;
    }
    migrator.run(pool).await.map_err(|e| {
        let text = e.to_string();
        if text.contains("permission denied") {
            StoreError::Connect(format!(
                "migrating the schema failed: {text}. Run `portcullis migrate` with the database \
                 owner's URL; the application role the services run as may not change the schema"
            ))
        } else {
            StoreError::Connect(format!("migrating the schema failed: {text}"))
        }
    })
}

/// A service's start on PostgreSQL: the schema must be exactly what this binary expects, since
/// it may not change it. Reads `_sqlx_migrations` only (no DDL, no advisory lock).
async fn check_schema_current(
    pool: &AnyPool,
    migrator: &sqlx::migrate::Migrator,
) -> Result<(), StoreError> {
    use sqlx::Row;
    const RUN_MIGRATE: &str = "run `portcullis migrate` with the database owner's URL first";
    let rows =
        match sqlx::query("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(pool)
            .await
        {
            Ok(rows) => rows,
            // 42P01: undefined_table. A database nobody has migrated yet.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => {
                return Err(StoreError::Connect(format!(
                    "the database has no Portcullis schema yet: {RUN_MIGRATE}"
                )));
            }
            Err(e) => {
                return Err(StoreError::Connect(format!(
                    "cannot read the schema version: {e}"
                )));
            }
        };
    let applied: Vec<i64> = rows
        .iter()
        .map(|r| r.try_get("version"))
        .collect::<Result<_, _>>()?;
    let known: Vec<i64> = migrator.iter().map(|m| m.version).collect();
    let missing: Vec<String> = known
        .iter()
        .filter(|v| !applied.contains(v))
        .map(i64::to_string)
        .collect();
    let unknown: Vec<String> = applied
        .iter()
        .filter(|v| !known.contains(v))
        .map(i64::to_string)
        .collect();
    if !unknown.is_empty() {
        return Err(StoreError::Connect(format!(
            "the schema is newer than this version of Portcullis (migrations {} are unknown to \
             it): run the Portcullis version that migrated it",
            unknown.join(", ")
        )));
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Connect(format!(
            "the schema is behind this version of Portcullis (missing migrations {}): {RUN_MIGRATE}",
            missing.join(", ")
        )))
    }
}

/// Checks, by trying, that the database refuses UPDATE, DELETE (and on PostgreSQL TRUNCATE) on
/// `audit_events`. Each probe runs in a transaction that is rolled back, so nothing changes
/// whatever the outcome. A trigger that exists but does nothing fails the probe too.
pub(crate) async fn probe_guards(pool: &AnyPool, backend: Backend) -> Result<(), StoreError> {
    const PROBE: &str = "INSERT INTO audit_events \
        (seq, ts, actor, role, action, target, details, prev_hash, hash, mac) \
        VALUES (9223372036854775807, '', '', '', 'guard.probe', '', '{}', '', '', '')";
    let mut probes = vec![
        (
            "UPDATE",
            "UPDATE audit_events SET actor = 'x' WHERE seq = 9223372036854775807",
        ),
        (
            "DELETE",
            "DELETE FROM audit_events WHERE seq = 9223372036854775807",
        ),
    ];
    if backend == Backend::Postgres {
        probes.push(("TRUNCATE", "TRUNCATE audit_events"));
    }
    let mut missing = Vec::new();
    for (what, stmt) in probes {
        let mut tx = pool.begin().await?;
        // The probe row may not be insertable (an INSERT-only role still can): a failure here is a
        // real database problem, reported as such.
        tx.execute(PROBE).await?;
        let refused = match tx.execute(stmt).await {
            Err(sqlx::Error::Database(_)) => true,
            Err(e) => return Err(e.into()),
            Ok(_) => false,
        };
        tx.rollback().await?;
        if !refused {
            missing.push(what);
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(StoreError::GuardMissing(format!(
            "audit_events accepts {}",
            missing.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_and_redaction() {
        assert_eq!(Backend::from_url("sqlite://x.db").unwrap(), Backend::Sqlite);
        assert_eq!(
            Backend::from_url("postgres://a@b/c").unwrap(),
            Backend::Postgres
        );
        let e = Backend::from_url("mysql://u:secret@h/db")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not a database URL") && !e.contains("secret"),
            "{e}"
        );
        assert_eq!(
            redact("postgres://u:pw@h:5432/d"),
            "postgres://u:***@h:5432/d"
        );
        assert_eq!(redact("postgres://u@h/d"), "postgres://u@h/d");
    }

    #[test]
    fn sqlite_mode_follows_create() {
        assert_eq!(
            sqlite_url("sqlite:///a.db", true),
            "sqlite:///a.db?mode=rwc"
        );
        assert_eq!(
            sqlite_url("sqlite:///a.db", false),
            "sqlite:///a.db?mode=rw"
        );
        assert_eq!(
            sqlite_url("sqlite:///a.db?mode=ro", false),
            "sqlite:///a.db?mode=ro"
        );
    }
}
