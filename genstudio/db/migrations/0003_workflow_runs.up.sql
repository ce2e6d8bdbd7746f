-- genstudio migration 0003: what running workflow templates on ComfyUI servers needs.
--
-- Three tables in schema `genstudio` (which Supabase's REST API does not expose, so nobody
-- reaches them except through genstudio):
--   workflow_runs  one row per job that genstudio itself submits: the ready-to-post prompt,
--                  the input files to upload first, and the dispatcher's lease on it.
--   comfy_servers  the health of each configured ComfyUI server, kept by the dispatcher.
--   uploads        input files a user uploaded ahead of a run.
-- The job row itself stays in the table of the template's output type (video_jobs, ...);
-- workflow_runs.job_id is its id. Re-runnable: IF NOT EXISTS everywhere, policies, triggers
-- and constraints dropped and made again by name.

CREATE SCHEMA IF NOT EXISTS genstudio;

CREATE TABLE IF NOT EXISTS genstudio.workflow_runs (
    job_id              uuid PRIMARY KEY,
    output_type         text NOT NULL,
    user_id             uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    workflow_name       text NOT NULL,
    prompt              jsonb NOT NULL,
    required_node_types text[] NOT NULL DEFAULT '{}',
    output_nodes        text[] NOT NULL DEFAULT '{}',
    input_files         jsonb NOT NULL DEFAULT '[]'::jsonb,
    state               text NOT NULL DEFAULT 'queued',
    server_url          text,
    attempts            integer NOT NULL DEFAULT 0,
    lease_owner         text,
    lease_until         timestamptz,
    dispatch_reason     text,
    deadline            timestamptz,
    idempotency_key     text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    submitted_at        timestamptz
);

ALTER TABLE genstudio.workflow_runs DROP CONSTRAINT IF EXISTS workflow_runs_output_type_check;
ALTER TABLE genstudio.workflow_runs ADD CONSTRAINT workflow_runs_output_type_check
    CHECK (output_type IN ('video', 'image', 'text'));
ALTER TABLE genstudio.workflow_runs DROP CONSTRAINT IF EXISTS workflow_runs_state_check;
ALTER TABLE genstudio.workflow_runs ADD CONSTRAINT workflow_runs_state_check
    CHECK (state IN ('queued', 'submitted', 'finished'));
ALTER TABLE genstudio.workflow_runs DROP CONSTRAINT IF EXISTS workflow_runs_idempotency_key;
ALTER TABLE genstudio.workflow_runs ADD CONSTRAINT workflow_runs_idempotency_key
    UNIQUE (user_id, idempotency_key);

-- The dispatcher's queue: queued runs, oldest first. Small, because runs leave it quickly.
CREATE INDEX IF NOT EXISTS idx_workflow_runs_queued
    ON genstudio.workflow_runs (created_at) WHERE state = 'queued';

COMMENT ON TABLE genstudio.workflow_runs IS
    'Jobs genstudio submits to ComfyUI itself: the prompt to post and the dispatcher''s lease. '
    'job_id is the id of the job row in the table of output_type.';
COMMENT ON COLUMN genstudio.workflow_runs.prompt IS
    'API-format workflow with the parameters substituted, ready to POST to /prompt.';
COMMENT ON COLUMN genstudio.workflow_runs.input_files IS
    '[{node_id, input, storage_key, filename, content_type}]: uploaded to the chosen server and '
    'set as that node input before submit.';
COMMENT ON COLUMN genstudio.workflow_runs.state IS
    'queued: waiting for a server; submitted: posted to server_url; finished: nothing left to dispatch.';

-- Wake the dispatchers when a run is queued (delivered at commit, so never before the row is
-- visible); they do not poll.
CREATE OR REPLACE FUNCTION genstudio.notify_workflow_run_queued() RETURNS trigger
    LANGUAGE plpgsql
    AS $fn$
BEGIN
    PERFORM pg_notify('genstudio_workflow_runs', NEW.job_id::text);
    RETURN NULL;
END
$fn$;
CREATE OR REPLACE TRIGGER workflow_runs_queued_notify
    AFTER INSERT OR UPDATE OF state ON genstudio.workflow_runs
    FOR EACH ROW WHEN (NEW.state = 'queued')
    EXECUTE FUNCTION genstudio.notify_workflow_run_queued();

CREATE TABLE IF NOT EXISTS genstudio.comfy_servers (
    url             text PRIMARY KEY,
    healthy         boolean NOT NULL DEFAULT false,
    checked_at      timestamptz,
    queue_remaining integer,
    node_types      text[] NOT NULL DEFAULT '{}',
    error           text
);
COMMENT ON TABLE genstudio.comfy_servers IS
    'The configured ComfyUI servers as the dispatcher last found them (health, queue length, node types).';

CREATE TABLE IF NOT EXISTS genstudio.uploads (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id          uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    storage_key      text NOT NULL UNIQUE,
    filename         text NOT NULL,
    content_type     text NOT NULL,
    size_bytes       bigint NOT NULL,
    width            integer,
    height           integer,
    duration_seconds double precision,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_uploads_user_id ON genstudio.uploads (user_id, created_at DESC);
COMMENT ON TABLE genstudio.uploads IS
    'Input files uploaded ahead of a run (POST /api/uploads), checked by content; only their owner may use them.';

-- Privileges. The API runs a request as `authenticated` with row-level security: it creates
-- a run together with the caller's job in one transaction, finds a retried run by its
-- idempotency key, and records and reads the caller's uploads. Everything else (dispatch,
-- health checks) runs as `service_role`, which bypasses row-level security. `anon` gets
-- nothing. comfy_servers is not granted to `authenticated` at all: server URLs may carry
-- credentials.
GRANT USAGE ON SCHEMA genstudio TO authenticated, service_role;
REVOKE ALL ON genstudio.workflow_runs, genstudio.comfy_servers, genstudio.uploads FROM anon, authenticated;
GRANT SELECT, INSERT ON genstudio.workflow_runs TO authenticated;
GRANT SELECT, INSERT, DELETE ON genstudio.uploads TO authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON genstudio.workflow_runs, genstudio.comfy_servers, genstudio.uploads
    TO service_role;

ALTER TABLE genstudio.workflow_runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE genstudio.uploads ENABLE ROW LEVEL SECURITY;
ALTER TABLE genstudio.comfy_servers ENABLE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS workflow_runs_select ON genstudio.workflow_runs;
CREATE POLICY workflow_runs_select ON genstudio.workflow_runs FOR SELECT TO authenticated
    USING (user_id = (SELECT auth.uid()));
DROP POLICY IF EXISTS workflow_runs_insert ON genstudio.workflow_runs;
CREATE POLICY workflow_runs_insert ON genstudio.workflow_runs FOR INSERT TO authenticated
    WITH CHECK (user_id = (SELECT auth.uid()) AND state = 'queued' AND server_url IS NULL);

DROP POLICY IF EXISTS uploads_select ON genstudio.uploads;
CREATE POLICY uploads_select ON genstudio.uploads FOR SELECT TO authenticated
    USING (user_id = (SELECT auth.uid()));
DROP POLICY IF EXISTS uploads_insert ON genstudio.uploads;
CREATE POLICY uploads_insert ON genstudio.uploads FOR INSERT TO authenticated
    WITH CHECK (user_id = (SELECT auth.uid()));
DROP POLICY IF EXISTS uploads_delete ON genstudio.uploads;
CREATE POLICY uploads_delete ON genstudio.uploads FOR DELETE TO authenticated
    USING (user_id = (SELECT auth.uid()));
