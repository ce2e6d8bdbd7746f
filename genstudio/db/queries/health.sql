-- name: schema_version
-- The newest applied migration; 0 when the bookkeeping table exists but is empty.
SELECT coalesce(max(version), 0) AS version FROM genstudio.schema_migrations;

-- name: create_write_probe
-- A real write, checked at commit: a temporary table costs one new relation file (extending a
-- file is where a full disk fails) plus catalog rows whose WAL is flushed at commit, and it is
-- refused in a read-only database (a standby, or Supabase's read-only mode on a full disk).
-- It leaves nothing behind.
CREATE TEMPORARY TABLE genstudio_health_probe (written_at timestamptz) ON COMMIT DROP;

-- name: write_probe
INSERT INTO genstudio_health_probe VALUES (now());
