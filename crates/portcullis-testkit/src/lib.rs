//! Test-only helpers: a manual clock, throwaway SQLite files and PostgreSQL databases, and the
//! path of the real `portcullis` binary. Never a dependency of production code.
#![forbid(unsafe_code)]
#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers: failing loudly is the point

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use portcullis_core::{Clock, Timestamp};
use rand::Rng;
use sqlx::Connection;
use sqlx::postgres::PgConnection;

pub mod devices;
pub mod proxy;
pub mod shaper;
pub mod stats;
pub mod syslog;

/// Runs each named `async fn(TestDb)` once on SQLite and once on PostgreSQL, as tests
/// `sqlite::<name>` and `postgres::<name>`: one suite, both databases, identical assertions.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::TestDb::sqlite()).await }) *
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::TestDb::postgres().await).await }) *
        }
    };
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock(Mutex<Timestamp>);

impl ManualClock {
    pub fn at(rfc3339: &str) -> Self {
        Self(Mutex::new(
            Timestamp::parse_rfc3339(rfc3339).expect("valid RFC 3339"),
        ))
    }
    pub fn advance(&self, d: Duration) {
        let mut t = self.0.lock().unwrap();
        *t = t.saturating_add(d);
    }
    pub fn set(&self, t: Timestamp) {
        *self.0.lock().unwrap() = t;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap()
    }
}

/// Where the test PostgreSQL server is: `PORTCULLIS_TEST_POSTGRES_URL`, by default the local
/// server that `.ci/run` starts (trust auth, database `test`).
pub fn postgres_admin_url() -> String {
    std::env::var("PORTCULLIS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A database that exists for one test and is removed afterwards.
#[derive(Debug)]
pub enum TestDb {
    Sqlite { dir: tempfile::TempDir, url: String },
    Postgres { name: String, url: String },
}

impl TestDb {
    pub fn sqlite() -> TestDb {
        Self::sqlite_at(tempfile::tempdir().expect("temp dir"))
    }

    /// A SQLite database in a fresh directory under `parent`: benchmarks put it under the target
    /// directory so fsync is real (`/tmp` may be a tmpfs).
    pub fn sqlite_in(parent: &std::path::Path) -> TestDb {
        Self::sqlite_at(tempfile::tempdir_in(parent).expect("temp dir"))
    }

    fn sqlite_at(dir: tempfile::TempDir) -> TestDb {
        let url = format!("sqlite://{}/portcullis.db", dir.path().display());
        TestDb::Sqlite { dir, url }
    }

    /// Creates a fresh database on the test server. Panics with a clear message when the server
    /// cannot be reached: PostgreSQL tests must run, not silently pass.
    pub async fn postgres() -> TestDb {
        let admin = postgres_admin_url();
        let mut conn = PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at {admin}: {e}. Start it (.ci/run shows how) or set \
                 PORTCULLIS_TEST_POSTGRES_URL"
            )
        });
        let name = format!("pc_test_{:016x}", rand::thread_rng().r#gen::<u64>());
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let url = replace_db(&admin, &name);
        TestDb::Postgres { name, url }
    }

    pub fn url(&self) -> &str {
        match self {
            TestDb::Sqlite { url, .. } | TestDb::Postgres { url, .. } => url,
        }
    }

    /// The directory of a SQLite test database (a data dir for the binary).
    pub fn dir(&self) -> Option<&std::path::Path> {
        match self {
            TestDb::Sqlite { dir, .. } => Some(dir.path()),
            TestDb::Postgres { .. } => None,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestDb::Postgres { name, .. } = self {
            let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            // Drop runs outside any runtime guarantee: use a short-lived one on its own thread.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                rt.block_on(async {
                    let mut c = PgConnection::connect(&postgres_admin_url()).await.ok()?;
                    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                        .execute(&mut c)
                        .await
                        .ok()
                })
            })
            .join();
        }
    }
}

/// `postgres://u@h:p/old?x` with the database name replaced.
pub fn replace_db(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let cut = base
        .rfind('/')
        .filter(|&i| i > "postgres://".len())
        .unwrap_or(base.len());
    format!("{}/{db}{query}", &base[..cut])
}

/// The real `portcullis` binary, built once per test run (`cargo build --bin portcullis`) so the
/// end-to-end tests always drive the current code. `PORTCULLIS_BIN` names a binary to use
/// instead, unbuilt: a benchmark script builds the release binary before it starts (a nested
/// `cargo build` would wait for the build lock whenever another build runs), or wraps it.
pub fn portcullis_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("PORTCULLIS_BIN") {
            return PathBuf::from(bin);
        }
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test> -> target/<profile>
        let profile_dir = exe
            .parent()
            .and_then(|d| d.parent())
            .expect("target dir")
            .to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        // Not the variables cargo sets for this test process: build scripts that watch one
        // (ring's watches CARGO_MANIFEST_DIR) would see it change against the outer build, and
        // the nested build would rebuild ring, rustls, sqlx and everything above them.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("CARGO_PKG_")
                || key.starts_with("CARGO_BIN_EXE_")
                || matches!(
                    &*key,
                    "CARGO_MANIFEST_DIR"
                        | "CARGO_MANIFEST_PATH"
                        | "CARGO_CRATE_NAME"
                        | "CARGO_PRIMARY_PACKAGE"
                        | "CARGO_TARGET_TMPDIR"
                        | "CARGO_RUSTC_CURRENT_DIR"
                        | "OUT_DIR"
                )
            {
                cmd.env_remove(&*key);
            }
        }
        cmd.args(["build", "--quiet", "--bin", "portcullis"]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.args(["--release", "-p", "portcullis"]);
        } else {
            // The features `cargo test --workspace` resolved (dev-dependencies included), so
            // every library is already built and only the binary itself is compiled and linked:
            // `-p portcullis` alone resolves other features and rebuilds half the dependency
            // tree, minutes on a 2-core CI machine.
            cmd.args(["--workspace", "--tests"]);
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "building the portcullis binary failed");
        let bin = profile_dir.join("portcullis");
        assert!(bin.exists(), "{} was not built", bin.display());
        bin
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database_name() {
        assert_eq!(
            replace_db("postgres://p@127.0.0.1:5432/test", "x"),
            "postgres://p@127.0.0.1:5432/x"
        );
        assert_eq!(
            replace_db("postgres://p@h/test?sslmode=disable", "x"),
            "postgres://p@h/x?sslmode=disable"
        );
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::at("2026-11-25T08:00:00Z");
        let t0 = c.now();
        assert_eq!(c.now(), t0);
        c.advance(Duration::from_secs(90));
        assert_eq!(c.now().duration_since(t0), Duration::from_secs(90));
    }
}
