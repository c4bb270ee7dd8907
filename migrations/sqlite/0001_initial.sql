-- Portcullis schema, SQLite (the embedded default).
-- Times are fixed-width RFC 3339 UTC text (2026-11-25T18:44:13.123456Z): text order is time order.

CREATE TABLE orgs (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL
);

CREATE TABLE users (
    id                     INTEGER PRIMARY KEY,
    username               TEXT NOT NULL UNIQUE,
    role                   TEXT NOT NULL CHECK (role IN ('vendor', 'supervisor', 'auditor', 'admin')),
    org_id                 INTEGER REFERENCES orgs (id),
    password_hash          TEXT,
    -- Encrypted with a key kept outside the database (next issue: TOTP enrollment).
    totp_secret            TEXT,
    totp_last_step         INTEGER,
    -- SHA-256 of the one-time enrollment code; the code itself is shown once and never stored.
    enrollment_code_hash   TEXT,
    enrollment_expires_at  TEXT,
    failed_logins          INTEGER NOT NULL DEFAULT 0,
    locked_until           TEXT,
    disabled_at            TEXT,
    created_at             TEXT NOT NULL,
    -- Vendors belong to exactly one organisation; nobody else belongs to any.
    CHECK ((role = 'vendor') = (org_id IS NOT NULL))
);

CREATE TABLE devices (
    id                  INTEGER PRIMARY KEY,
    name                TEXT NOT NULL UNIQUE,
    address             TEXT NOT NULL,
    criticality         TEXT NOT NULL CHECK (criticality IN ('low', 'medium', 'high')),
    device_type         TEXT NOT NULL DEFAULT '',
    site                TEXT NOT NULL DEFAULT '',
    owner               TEXT NOT NULL DEFAULT '',
    vendor              TEXT NOT NULL DEFAULT '',
    purpose             TEXT NOT NULL DEFAULT '',
    data_handled        TEXT NOT NULL DEFAULT '',
    access_method       TEXT NOT NULL DEFAULT '',
    firmware            TEXT NOT NULL DEFAULT '',
    support_contact     TEXT NOT NULL DEFAULT '',
    -- Policy: comma-separated ports, longest window, approvers needed.
    allowed_ports       TEXT NOT NULL,
    max_window_secs     INTEGER NOT NULL CHECK (max_window_secs > 0),
    approvals_required  INTEGER NOT NULL CHECK (approvals_required IN (1, 2)),
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL
);

-- Vendor organisations allowed to request a device. No row: nobody may (deny by default).
CREATE TABLE device_orgs (
    device_id  INTEGER NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    org_id     INTEGER NOT NULL REFERENCES orgs (id),
    PRIMARY KEY (device_id, org_id)
);

-- The audit log. `seq` is the primary key, so two appenders can never fork the chain: the second
-- to commit a given seq fails and retries on the new head.
CREATE TABLE audit_events (
    seq         INTEGER PRIMARY KEY CHECK (seq > 0),
    ts          TEXT NOT NULL,
    actor       TEXT NOT NULL,
    role        TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    grant_id    INTEGER,
    session_id  TEXT,
    source      TEXT,
    details     TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL,
    mac         TEXT NOT NULL
);
CREATE INDEX audit_events_ts ON audit_events (ts);
CREATE INDEX audit_events_actor ON audit_events (actor, seq);

-- Append-only, enforced by the database itself (IEC 62443 SR 3.9). A DELETE without WHERE is no
-- escape: SQLite turns off its truncate optimisation when a DELETE trigger exists.
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only: UPDATE refused');
END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only: DELETE refused');
END;
