-- Relay sessions (issue 4): one row per accepted vendor connection. The audit log is the record;
-- this table is the relay's working state: which sessions are still open (so a restarted relay
-- can close the ones a crash left open) and which token ids were already used (each relay token
-- opens one session only).
CREATE TABLE relay_sessions (
    id          TEXT PRIMARY KEY,
    relay       TEXT NOT NULL,
    grant_id    BIGINT NOT NULL REFERENCES access_requests (id),
    username    TEXT NOT NULL,
    jti         TEXT NOT NULL UNIQUE,
    source      TEXT,
    started_at  TEXT NOT NULL,
    ended_at    TEXT,
    end_reason  TEXT
);
CREATE INDEX relay_sessions_open ON relay_sessions (relay, ended_at);
