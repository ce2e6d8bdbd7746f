-- name: schema_version
-- The newest applied migration; 0 when the bookkeeping table exists but is empty.
SELECT coalesce(max(version), 0) AS version FROM genstudio.schema_migrations;
