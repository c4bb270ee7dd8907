-- Sites and their connectors (issue 5, docs/decisions/0007-site-connectors.md). A device whose
-- `site` names a row here is reached through that site's connector, never dialed directly; rows
-- are never deleted (revoking sets `revoked_at`), so such a device can never fall back to a
-- direct dial.
CREATE TABLE sites (
    id                 INTEGER PRIMARY KEY,
    name               TEXT NOT NULL UNIQUE,
    created_at         TEXT NOT NULL,
    -- The audit actor who registered it, e.g. `cli:root` or an admin's username.
    created_by         TEXT NOT NULL,
    -- SHA-256 (hex) of the one-time enrollment token; the token itself is shown once and never
    -- stored. NULL once used (or never issued).
    enroll_token_hash  TEXT UNIQUE,
    enroll_expires_at  TEXT,
    enrolled_at        TEXT,
    -- base64url SHA-256 of the DER of the certificate the connector enrolled with: the relay
    -- accepts exactly this certificate for the site.
    cert_fingerprint   TEXT UNIQUE,
    cert_not_after     TEXT,
    revoked_at         TEXT,
    revoked_by         TEXT,
    -- The connector's live connection, as the relay holding it last recorded it. Working state,
    -- not history (the audit log has that): all set together or all NULL.
    connection_id      TEXT,
    relay              TEXT,
    source             TEXT,
    connected_at       TEXT,
    last_seen_at       TEXT,
    CHECK ((enroll_token_hash IS NULL) = (enroll_expires_at IS NULL)),
    CHECK ((revoked_at IS NULL) = (revoked_by IS NULL)),
    CHECK ((connection_id IS NULL) = (relay IS NULL)
       AND (connection_id IS NULL) = (source IS NULL)
       AND (connection_id IS NULL) = (connected_at IS NULL)
       AND (connection_id IS NULL) = (last_seen_at IS NULL))
);
CREATE INDEX sites_relay ON sites (relay);
