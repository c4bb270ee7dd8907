-- Promises already made must hold (issue 12).

-- A grant's end is a fact, not a computation: the first part of the broker that sees a grant's
-- window over (or otherwise ended) writes state 'expired' and when it saw it. Later reads never
-- compute the state from the wall clock again, so a clock stepped back cannot re-open it.
ALTER TABLE access_requests ADD COLUMN ended_at TEXT;

-- Relay tokens issued before `tokens_not_before` are refused: set by logout, "log out
-- everywhere", password reset and enrollment reset. Live relay sessions started before
-- `sessions_not_before` are ended: set by "log out everywhere" and the resets, not by a plain
-- logout. The relay reads both with the grant snapshot.
ALTER TABLE users ADD COLUMN tokens_not_before TEXT;
ALTER TABLE users ADD COLUMN sessions_not_before TEXT;

-- A change feed for processes sharing one SQLite file: every grant change committed by any
-- process (the CLI, the web service) is written here in the same transaction, and a running
-- broker polls for rows newer than the last it saw. `origin` names the writing process, so a
-- process skips what it already published in-process. Working state, pruned after an hour.
CREATE TABLE grant_changes (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    change      TEXT NOT NULL,
    origin      TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

-- One row the broker rewrites every few seconds to learn whether the database takes a write
-- (issue 12: readiness says 503 while the audit log cannot be written, e.g. on a full disk, and
-- 200 again as soon as it can). Reading the chain head is not enough: reads work on a full disk.
CREATE TABLE health_probe (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    n       BIGINT NOT NULL,
    pad     TEXT NOT NULL,
    at      TEXT NOT NULL
);
INSERT INTO health_probe (id, n, pad, at) VALUES (1, 0, '', '');
