-- Live sessions a supervisor can see and end (issue 14, point 5).

-- What the relay last reported of a live session, rewritten every few seconds in one batched
-- transaction per relay (not per byte), and a last time when the session ends: open streams,
-- bytes each way (up: vendor to device), streams the relay refused, and the decoded Modbus
-- activity as JSON (NULL when the session made no Modbus request). `last_reported_at` says how
-- fresh the numbers are: a session whose relay died keeps its last report until a relay of the
-- same name restarts and closes it as `relay_restart`.
ALTER TABLE relay_sessions ADD COLUMN open_streams BIGINT NOT NULL DEFAULT 0;
ALTER TABLE relay_sessions ADD COLUMN bytes_up BIGINT NOT NULL DEFAULT 0;
ALTER TABLE relay_sessions ADD COLUMN bytes_down BIGINT NOT NULL DEFAULT 0;
ALTER TABLE relay_sessions ADD COLUMN refused_streams BIGINT NOT NULL DEFAULT 0;
ALTER TABLE relay_sessions ADD COLUMN modbus TEXT;
ALTER TABLE relay_sessions ADD COLUMN last_reported_at TEXT;

-- A supervisor's request to end one session, on the session's own row rather than in a table
-- of its own: a session is ended once (a second request is refused while the first stands), the
-- relay reads the request with the open sessions it already reads, and the history of who asked
-- is the audit log (`session.end`), not this row. The relay is told at once (a grant change
-- `session:<id>`); the columns are what its periodic reconciliation reads if that notice was
-- lost.
ALTER TABLE relay_sessions ADD COLUMN end_requested_at TEXT;
ALTER TABLE relay_sessions ADD COLUMN end_requested_by TEXT;
ALTER TABLE relay_sessions ADD COLUMN end_requested_reason TEXT;

-- The live list, and a grant's sessions (its request page).
CREATE INDEX relay_sessions_live ON relay_sessions (started_at) WHERE ended_at IS NULL;
CREATE INDEX relay_sessions_grant ON relay_sessions (grant_id, started_at);
CREATE INDEX relay_sessions_started ON relay_sessions (started_at);
