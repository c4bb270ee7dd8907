//! Portcullis persistence: SQLite (the embedded default) and PostgreSQL behind one API.
//!
//! Every query is written once, against sqlx's `Any` driver with `$n` placeholders, which both
//! databases accept; only the migrations (`migrations/sqlite`, `migrations/postgres`) and the
//! chain lock differ. Every change commits together with the audit event that records it
//! (see `write.rs`), and the broker refuses to open a database whose audit log is not append-only.
//!
//! Queries built at run time (`AssertSqlSafe`) are assembled only from constant text and
//! numbered placeholders; every value is bound, never spliced.
#![forbid(unsafe_code)]

mod audit;
mod clockmon;
mod cursors;
mod db;
mod devices;
mod ends;
mod error;
mod feed;
mod health;
mod live;
mod liveness;
mod login;
mod orgs;
mod outbox;
mod relay;
mod requests;
mod revoke;
mod sessions;
mod sites;
mod users;
mod write;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use portcullis_core::audit::{ActorRole, AuditDraft, MacKey};
use portcullis_core::{Clock, Timestamp};
use sqlx::AnyPool;
use tokio::sync::mpsc;

pub use audit::{AuditQuery, VerifyOutcome};
pub use clockmon::{ClockMonitor, ClockMonitorConfig, ClockStatus, TimeSync, probe_time_sync};
pub use db::{Backend, redact};
pub use ends::EndObserver;
pub use error::StoreError;
pub use feed::FEED_POLL;
pub use live::{
    Attention, EndRequest, LiveCounters, MAX_SESSION_LIST, RelaySessionId, SessionFilter,
    SessionRecord,
};
pub use login::{Credentials, FailureOutcome, LockoutPolicy};
pub use outbox::{Channel, DeliveryFilter, DeliveryRecord, NewDelivery, OutboxNotice, OutboxStats};
pub use relay::{GrantChange, OrphanSession, PG_CHANNEL, RelaySessionEnd, RelaySessionStart};
pub use requests::{NewRequest, RequestFilter, RequestRecord};
pub use revoke::NotBefore;
pub use sessions::{NewSession, Session, SessionPolicy, Stage};
pub use sites::{
    BAD_SITE_TOKEN, ConnectorPresence, ONLINE_WITHIN, SITE_TOKEN_TTL, SiteRecord, SiteStatus,
    SiteToken,
};
pub use users::{ContactChange, EnrollmentCode, NewUser, UserRecord};

/// How long a freshly issued enrollment code works.
pub const ENROLLMENT_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Timestamp::from_unix_micros(micros).unwrap_or(Timestamp::EPOCH)
    }
}

/// Who does something, as the audit log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditActor {
    pub name: String,
    pub role: ActorRole,
    /// An IP address, or `cli` for the local command line.
    pub source: Option<String>,
}

impl AuditActor {
    pub fn draft(&self, action: &str) -> AuditDraft {
        let d = AuditDraft::new(self.name.clone(), self.role, action);
        match &self.source {
            Some(s) => d.source(s.clone()),
            None => d,
        }
    }
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub mac_key: MacKey,
    pub clock: Arc<dyn Clock>,
    /// Create a missing SQLite file (serve, admin); `false` for read-only tools like `audit verify`.
    pub create_if_missing: bool,
    pub max_connections: u32,
    /// Apply pending migrations at open. Off for an application role that may not change the
    /// schema (PostgreSQL production): the store then only checks the schema is current.
    pub migrate: bool,
}

impl StoreConfig {
    pub fn new(mac_key: MacKey) -> Self {
        Self {
            mac_key,
            clock: Arc::new(SystemClock),
            create_if_missing: true,
            max_connections: 8,
            migrate: true,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) pool: AnyPool,
    pub(crate) backend: Backend,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) mac_key: MacKey,
    /// Grant changes committed through this store, for a relay in the same process.
    pub(crate) changes: tokio::sync::broadcast::Sender<relay::GrantChange>,
    /// Whether the last write worked (see `health.rs`).
    pub(crate) write_health: health::WriteHealth,
    /// Names this store in the SQLite change feed (`grant_changes.origin`), so its follower
    /// skips the changes it already published in-process.
    pub(crate) origin: String,
    /// The clock monitor's verdict, read by the web service and the relay (issue 12).
    pub(crate) clock_health: clockmon::Health,
}

/// A handle on the database. Cheap to clone; the audit writer task stops when the last clone
/// is dropped.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) shared: Arc<Shared>,
    appender: mpsc::Sender<audit::AppendJob>,
}

impl std::fmt::Debug for audit::AppendJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppendJob")
    }
}

impl Store {
    /// Connects, migrates, and checks that the audit log is append-only: a broker must never run
    /// on a database that would let it (or anyone) rewrite history.
    pub async fn open(url: &str, config: StoreConfig) -> Result<Store, StoreError> {
        let store = Self::open_unguarded(url, config).await?;
        store.check_guards().await?;
        Ok(store)
    }

    /// Like [`Store::open`] without the guard check, for `audit verify`, which must still be
    /// able to inspect a database someone has tampered with.
    pub async fn open_unguarded(url: &str, config: StoreConfig) -> Result<Store, StoreError> {
        let backend = Backend::from_url(url)?;
        let pool = db::connect(
            url,
            backend,
            config.create_if_missing,
            config.max_connections,
        )
        .await?;
        db::migrate(&pool, backend, config.migrate).await?;
        let shared = Arc::new(Shared {
            pool,
            backend,
            clock: config.clock,
            mac_key: config.mac_key,
            changes: tokio::sync::broadcast::channel(1024).0,
            write_health: health::WriteHealth::default(),
            origin: feed::new_origin(),
            clock_health: clockmon::Health::default(),
        });
        // Room for one queued append per concurrent caller in a busy broker; senders wait
        // (backpressure) beyond that rather than grow memory.
        let (tx, rx) = mpsc::channel(4096);
        let store = Store {
            shared,
            appender: tx,
        };
        // The task holds a handle without a sender of its own, so dropping every `Store` the
        // caller holds closes the channel and ends it.
        let (dead_tx, _) = mpsc::channel(1);
        let task_store = Store {
            shared: store.shared.clone(),
            appender: dead_tx,
        };
        tokio::spawn(audit::run_appender(task_store, rx));
        Ok(store)
    }

    /// Errors unless UPDATE, DELETE and TRUNCATE on `audit_events` are refused by the database.
    pub async fn check_guards(&self) -> Result<(), StoreError> {
        db::probe_guards(&self.shared.pool, self.shared.backend).await
    }

    pub fn backend(&self) -> Backend {
        self.shared.backend
    }

    pub fn now(&self) -> Timestamp {
        self.shared.clock.now()
    }

    /// The pool, for tests and tools that need raw SQL (tamper tests, benchmarks).
    pub fn pool(&self) -> &AnyPool {
        &self.shared.pool
    }

    /// Closes every connection (after the queued audit appends are written).
    pub async fn close(&self) {
        self.shared.pool.close().await;
    }
}
