//! Store errors: each one a sentence an operator can act on. Database internals (SQL text,
//! driver details) stay in the log behind `Database`.

use portcullis_core::ValidationError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    /// The input breaks a domain rule.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The name is taken, or the change clashes with the current state.
    #[error("{0}")]
    Conflict(String),
    /// A relay token's id was used for a session before (a replay, or a client retrying with
    /// the same token): the session must be refused, and the audit log is fine.
    #[error("this relay token was already used for a session")]
    TokenReused,
    /// The actor may not do this (role, ownership, self-approval).
    #[error("{0}")]
    Forbidden(String),
    /// Something named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The database URL is malformed or the database cannot be reached or opened.
    #[error("cannot open the database: {0}")]
    Connect(String),
    /// The append-only protection of the audit log is gone: the broker must not run.
    #[error(
        "the audit log's append-only guard is missing ({0}); refusing to start. \
         Restore it by re-creating the triggers from the migrations, then run `portcullis audit verify`"
    )]
    GuardMissing(String),
    /// The database failed while serving a request (down, disk full, ...).
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The audit writer task has stopped (the runtime is shutting down).
    #[error("the audit writer has stopped")]
    AppenderStopped,
    /// A stored value this version cannot read (a row written by a newer one, or damaged).
    #[error("a stored value cannot be read: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    /// True when the failure is the database being unavailable rather than the request being
    /// wrong: callers answer 503 and fail closed.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Connect(_)
                | StoreError::Unavailable(_)
                | StoreError::AppenderStopped
                | StoreError::Database(_)
        )
    }
}
