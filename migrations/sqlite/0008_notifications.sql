-- Notifications, alerts and the SIEM stream (issue 15).

-- Contact details. `email` NULL: the account gets no e-mail. `time_zone` an IANA name (NULL: the
-- plant's). The opt-ins: session start and end (supervisors who ask for it), and alerts (admins
-- receive alerts whatever this says; anyone else who asks for them does too).
ALTER TABLE users ADD COLUMN email TEXT;
ALTER TABLE users ADD COLUMN time_zone TEXT;
ALTER TABLE users ADD COLUMN notify_sessions INTEGER NOT NULL DEFAULT 0 CHECK (notify_sessions IN (0, 1));
ALTER TABLE users ADD COLUMN notify_alerts INTEGER NOT NULL DEFAULT 0 CHECK (notify_alerts IN (0, 1));

-- The outbox: one row per message and recipient, written in the transaction of the event that
-- causes it (`event_seq`), so a message exists exactly when its event does. The delivery worker
-- claims due rows, and marks each delivered, or pending again with a later `next_attempt_at`
-- (exponential backoff), or failed once its attempts are spent. A failure never touches the event.
-- `dedupe_key` makes a timed notice (a window about to end) exist once however often it is
-- written, by however many processes.
CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY,
    event_seq        INTEGER,
    topic            TEXT NOT NULL,
    channel          TEXT NOT NULL CHECK (channel IN ('email', 'webhook')),
    recipient        TEXT NOT NULL,
    recipient_user   TEXT,
    subject          TEXT NOT NULL,
    body             TEXT NOT NULL,
    dedupe_key       TEXT UNIQUE,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT NOT NULL,
    last_error       TEXT,
    created_at       TEXT NOT NULL,
    delivered_at     TEXT
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE state = 'pending';
CREATE INDEX outbox_created ON outbox (created_at);

-- How far a follower of the audit log has got (the SIEM stream, the alert watcher): the last
-- `seq` it finished with. A follower that was away resumes after it: nothing missed, nothing twice.
CREATE TABLE delivery_cursors (
    name        TEXT PRIMARY KEY,
    seq         INTEGER NOT NULL CHECK (seq >= 0),
    updated_at  TEXT NOT NULL
);
