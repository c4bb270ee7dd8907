-- The PostgreSQL application role for Portcullis (IEC 62443 SR 3.9, second layer).
--
-- Run as the database owner after `portcullis migrate --database-url postgres://owner@host/db`.
-- The broker's web and relay processes then connect as portcullis_app: on the audit log it may
-- only read and append, so even with the owner's triggers dropped it cannot rewrite history.
-- Migrations stay with the owner: only `portcullis migrate` changes the schema; `serve`, `web`,
-- `relay` and the admin command line check that it is current and refuse to start, saying what
-- to run, if it is not. Re-run this script after each `portcullis migrate` that adds tables.
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'portcullis_app') THEN
        CREATE ROLE portcullis_app LOGIN;
    END IF;
END $$;
-- No DDL for anyone but the owner (before PostgreSQL 15 every role could CREATE in public).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO portcullis_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO portcullis_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO portcullis_app;
-- History is read and appended, never changed.
REVOKE UPDATE, DELETE, TRUNCATE ON audit_events FROM portcullis_app;
-- The schema version is the owner's business.
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON _sqlx_migrations FROM portcullis_app;
