-- Notifications, alerts and the SIEM stream (issue 15).

-- Contact details. `email` NULL: the account gets no e-mail. `time_zone` an IANA name (NULL: the
-- plant's). The opt-ins: session start and end (supervisors who ask for it), and alerts (admins
-- receive alerts whatever this says; anyone else who asks for them does too).
ALTER TABLE users ADD COLUMN email TEXT;
ALTER TABLE users ADD COLUMN time_zone TEXT;
ALTER TABLE users ADD COLUMN notify_sessions INTEGER NOT NULL DEFAULT 0 CHECK (notify_sessions IN (0, 1));
ALTER TABLE users ADD COLUMN notify_alerts INTEGER NOT NULL DEFAULT 0 CHECK (notify_alerts IN (0, 1));

-- The outbox: one row per notice, written in the transaction of the audit event that causes it
-- (`event_seq`), so a notice exists exactly when its event does. Window-ending notices come from
-- the clock instead: `facts` names the grant and the minutes left, and `dedupe_key` makes each
-- exist once however often, and by however many processes, it is written. The delivery worker
-- routes a row (decides its recipients from the accounts and subscriptions of that moment) into
-- `deliveries` and sets `routed_at`, in one transaction.
CREATE TABLE outbox (
    id           INTEGER PRIMARY KEY,
    event_seq    INTEGER,
    action       TEXT NOT NULL,
    notice       TEXT NOT NULL,
    grant_id     INTEGER,
    facts        TEXT NOT NULL DEFAULT '{}',
    dedupe_key   TEXT UNIQUE,
    created_at   TEXT NOT NULL,
    routed_at    TEXT
);
CREATE INDEX outbox_unrouted ON outbox (id) WHERE routed_at IS NULL;

-- One message to one recipient (an e-mail address or a webhook URL). The worker claims a due row
-- by moving `next_attempt_at` past the time a try can take (a lease), and then marks it
-- delivered, or pending again later (exponential backoff), or failed once its tries are spent.
-- A failure never touches the event that caused it; admins see failures on a page and a metric.
CREATE TABLE deliveries (
    id               INTEGER PRIMARY KEY,
    outbox_id        INTEGER NOT NULL REFERENCES outbox (id),
    channel          TEXT NOT NULL CHECK (channel IN ('email', 'webhook')),
    recipient        TEXT NOT NULL,
    recipient_user   TEXT,
    subject          TEXT NOT NULL,
    body             TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT NOT NULL,
    last_error       TEXT,
    created_at       TEXT NOT NULL,
    delivered_at     TEXT
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_created ON deliveries (created_at);

-- How far a follower of the audit log has got (the SIEM stream, the alert watcher): the last
-- `seq` it finished with. A follower that was away resumes after it: nothing missed, nothing twice.
CREATE TABLE delivery_cursors (
    name        TEXT PRIMARY KEY,
    seq         INTEGER NOT NULL CHECK (seq >= 0),
    updated_at  TEXT NOT NULL
);
