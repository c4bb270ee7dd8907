-- The PostgreSQL application role for Portcullis (IEC 62443 SR 3.9, second layer).
--
-- Run as the database owner after the first `portcullis migrate` / start with the owner's URL.
-- The broker's web and relay processes then connect as portcullis_app: on the audit log it may
-- only read and append, so even with the owner's triggers dropped it cannot rewrite history.
-- Migrations stay with the owner (a separate URL used only for upgrades).
CREATE ROLE portcullis_app LOGIN;
GRANT USAGE ON SCHEMA public TO portcullis_app;
GRANT SELECT, INSERT ON audit_events TO portcullis_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON orgs, users, devices, device_orgs TO portcullis_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO portcullis_app;
-- sqlx records applied migrations here; the app role only reads it to confirm the schema.
GRANT SELECT ON _sqlx_migrations TO portcullis_app;
