-- Web sessions, login throttling, TOTP enrollment and access requests (issue 3).

-- When the current run of failed logins began: N failures inside the window lock the account.
ALTER TABLE users ADD COLUMN first_failed_at TEXT;

-- Browser and CLI sessions. Only the SHA-256 of the opaque token is stored, so a copy of the
-- database does not yield usable sessions.
CREATE TABLE web_sessions (
    token_hash    TEXT PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users (id),
    -- 'mfa' after a correct password (can only submit a TOTP code); 'full' after the code.
    stage         TEXT NOT NULL CHECK (stage IN ('mfa', 'full')),
    csrf_token    TEXT NOT NULL,
    source        TEXT,
    created_at    TEXT NOT NULL,
    last_seen_at  TEXT NOT NULL,
    expires_at    TEXT NOT NULL,
    step_up_at    TEXT
);
CREATE INDEX web_sessions_user ON web_sessions (user_id);

CREATE TABLE access_requests (
    id              INTEGER PRIMARY KEY,
    requester_id    INTEGER NOT NULL REFERENCES users (id),
    org_id          INTEGER NOT NULL REFERENCES orgs (id),
    device_id       INTEGER NOT NULL REFERENCES devices (id),
    ports           TEXT NOT NULL,
    window_start    TEXT NOT NULL,
    window_end      TEXT NOT NULL,
    reason          TEXT NOT NULL,
    ticket          TEXT,
    state           TEXT NOT NULL CHECK (state IN ('requested', 'approved', 'denied', 'active', 'expired', 'revoked')),
    closing_reason  TEXT,
    closed_by       INTEGER REFERENCES users (id),
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    CHECK (window_start < window_end)
);
CREATE INDEX access_requests_state ON access_requests (state, window_end);
CREATE INDEX access_requests_requester ON access_requests (requester_id, id);

-- One row per supervisor who approved; the primary key makes a second approval by the same
-- person impossible even if the application check were bypassed.
CREATE TABLE approvals (
    request_id   INTEGER NOT NULL REFERENCES access_requests (id),
    approver_id  INTEGER NOT NULL REFERENCES users (id),
    approved_at  TEXT NOT NULL,
    PRIMARY KEY (request_id, approver_id)
);
