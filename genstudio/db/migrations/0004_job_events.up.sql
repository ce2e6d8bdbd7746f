-- genstudio migration: the job event log, and webhooks that deliver it.
--
-- `public.job_events` holds one row per change of a job, written by triggers on the three job
-- tables in the transaction that changes the job: whoever writes (the API, the runner,
-- `legacy follow`, a Supabase user writing the tables directly), the event commits or rolls
-- back with the change. Every committing transaction that wrote events sends one NOTIFY on
-- channel `genstudio_job_events` (payload: its first event id; listeners read the rows).
--
-- Event ids are in commit order. The triggers are deferred to commit time and take one
-- transaction-level advisory lock before they allocate ids, so a transaction that commits
-- later always has higher ids than one that committed earlier. That is what lets a client
-- resume with "every event after id N" and miss nothing: with ids handed out at INSERT time,
-- a slow transaction could commit id 10 after id 11 had been read and passed. The lock is held
-- only from the start of COMMIT to its end (no statement runs after it), so it cannot take
-- part in a deadlock; NOTIFY already serialises committing transactions the same way.
--
-- Re-runnable: IF NOT EXISTS, and functions, triggers and policies replaced by name.

CREATE SCHEMA IF NOT EXISTS genstudio;

CREATE TABLE IF NOT EXISTS public.job_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    output_type text NOT NULL CHECK (output_type IN ('video', 'image', 'text')),
    job_id      uuid NOT NULL,
    -- The job's owner when the event happened (NULL: an ownerless legacy job). No foreign
    -- key: deleting a user deletes their jobs, and those deletions are events too.
    user_id     uuid,
    kind        text NOT NULL CHECK (kind IN ('created', 'status', 'progress', 'completed', 'failed',
                                              'cancelled', 'visibility', 'deleted')),
    changes     jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- Stamped at commit, under the numbering lock: it grows with the id, which is how the
    -- pruner finds old events by walking the primary key (no index of its own to keep up).
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- Every read is "after id N" (the primary key) or one job's events; each index costs every
-- job write, so there is no other.
CREATE INDEX IF NOT EXISTS idx_job_events_job ON public.job_events (job_id, id);

COMMENT ON TABLE public.job_events IS
    'Every change of every job, in commit order; written by triggers, pruned after the retention period.';
COMMENT ON COLUMN public.job_events.changes IS
    'created/deleted: status, workflow_name, visibility; otherwise the columns that changed, with their new values.';

-- Where pruning has reached: a client resuming from an id below `pruned_through` has missed
-- events that no longer exist, and is told so instead of being replayed a log with a hole.
CREATE TABLE IF NOT EXISTS genstudio.job_events_horizon (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    pruned_through bigint NOT NULL DEFAULT 0
);
INSERT INTO genstudio.job_events_horizon (singleton) VALUES (true) ON CONFLICT DO NOTHING;

-- One transaction's first event wakes every listener; one notification per transaction is
-- enough, and its payload is an id, never the row (NOTIFY payloads stop at 8000 bytes).
CREATE OR REPLACE FUNCTION genstudio.notify_job_event(p_event_id bigint) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog
    AS $fn$
BEGIN
    IF current_setting('genstudio.job_events_notified', true) IS DISTINCT FROM 'on' THEN
        PERFORM set_config('genstudio.job_events_notified', 'on', true);
        PERFORM pg_notify('genstudio_job_events', p_event_id::text);
    END IF;
END
$fn$;

-- Appends one event of an update. A progress event replaces the job's previous progress event
-- when that is still the job's newest event (the replaced changes are merged in), so a
-- workflow that reports progress every 100 ms leaves one row per run of progress, not
-- thousands. Live subscribers still receive each update: the replacement is a new row with a
-- new id.
CREATE OR REPLACE FUNCTION genstudio.append_job_event(
    p_output_type text, p_job_id uuid, p_user_id uuid, p_kind text, p_changes jsonb
) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, public
    AS $fn$
DECLARE
    newest record;
    changes jsonb := p_changes;
    new_id bigint;
BEGIN
    IF p_kind = 'progress' THEN
        SELECT e.id, e.kind, e.changes INTO newest
          FROM public.job_events e WHERE e.job_id = p_job_id ORDER BY e.id DESC LIMIT 1;
        IF FOUND AND newest.kind = 'progress' THEN
            DELETE FROM public.job_events WHERE id = newest.id;
            changes := newest.changes || changes;
        END IF;
    END IF;
    INSERT INTO public.job_events (output_type, job_id, user_id, kind, changes)
    VALUES (p_output_type, p_job_id, p_user_id, p_kind, changes)
    RETURNING id INTO new_id;
    PERFORM genstudio.notify_job_event(new_id);
END
$fn$;

-- The trigger on each job table; TG_ARGV[0] is the output type. SECURITY DEFINER: the writer
-- (e.g. role authenticated) may not insert into the log itself. Inserts and deletes (the bulk
-- paths: `legacy run`, `legacy rollback`) write their event inline, for speed.
CREATE OR REPLACE FUNCTION genstudio.record_job_event() RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, public
    AS $fn$
DECLARE
    output_type text := TG_ARGV[0];
    row_ record;
    old_row jsonb;
    new_row jsonb;
    changed jsonb;
    kind text;
    new_id bigint;
BEGIN
    -- Ids in commit order (see the top of this migration). Any constant: same in every process.
    PERFORM pg_advisory_xact_lock(7450857718071812101);
    IF TG_OP IN ('INSERT', 'DELETE') THEN
        IF TG_OP = 'INSERT' THEN row_ := NEW; ELSE row_ := OLD; END IF;
        INSERT INTO public.job_events (output_type, job_id, user_id, kind, changes)
        VALUES (output_type, row_.id, row_.user_id, CASE TG_OP WHEN 'INSERT' THEN 'created' ELSE 'deleted' END,
                jsonb_build_object('status', row_.status, 'workflow_name', row_.workflow_name,
                                   'visibility', row_.visibility))
        RETURNING id INTO new_id;
        PERFORM genstudio.notify_job_event(new_id);
        RETURN NULL;
    END IF;

    old_row := to_jsonb(OLD);
    new_row := to_jsonb(NEW);
    -- updated_at is bookkeeping; user_ip is never shown to anyone.
    SELECT coalesce(jsonb_object_agg(n.key, n.value), '{}'::jsonb) INTO changed
      FROM jsonb_each(new_row) n
     WHERE n.key NOT IN ('updated_at', 'user_ip') AND n.value IS DISTINCT FROM old_row -> n.key;

    IF changed ? 'visibility' THEN
        PERFORM genstudio.append_job_event(output_type, NEW.id, NEW.user_id, 'visibility',
            jsonb_build_object('visibility', NEW.visibility));
        changed := changed - 'visibility';
    END IF;
    IF changed = '{}'::jsonb THEN
        RETURN NULL;
    END IF;
    IF changed ? 'status' THEN
        kind := CASE WHEN NEW.status IN ('completed', 'failed', 'cancelled') THEN NEW.status ELSE 'status' END;
    ELSE
        kind := 'progress';  -- progress, outputs or messages arriving without a status change
    END IF;
    PERFORM genstudio.append_job_event(output_type, NEW.id, NEW.user_id, kind, changed);
    RETURN NULL;
END
$fn$;

DO $triggers$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT * FROM (VALUES ('video_jobs', 'video'), ('image_jobs', 'image'), ('text_jobs', 'text')) v(tab, output_type) LOOP
        -- Constraint triggers cannot be CREATE OR REPLACEd.
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON public.%I', t.tab || '_job_events_trigger', t.tab);
        EXECUTE format($sql$
            CREATE CONSTRAINT TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON public.%I
                DEFERRABLE INITIALLY DEFERRED
                FOR EACH ROW EXECUTE FUNCTION genstudio.record_job_event(%L)
        $sql$, t.tab || '_job_events_trigger', t.tab, t.output_type);
    END LOOP;
END
$triggers$;

-- Row-level security: the events of a job are readable by whoever may read the job now (its
-- owner; everyone signed in, if it is shared or ownerless), so switching a shared job back to
-- private hides its whole history from the others at once. The owner recorded in an event
-- always reads it, which keeps the history of their own deleted jobs. A `deleted` event is
-- also readable by everyone signed in when the job was shared or ownerless as it was deleted
-- (so their feeds can drop it); it reveals no more than its type, id and last status.
-- genstudio's live delivery applies the same rule in Python (genstudio/events/visibility.py),
-- and a test holds the two equal.
ALTER TABLE public.job_events ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS job_events_select ON public.job_events;
CREATE POLICY job_events_select ON public.job_events FOR SELECT TO authenticated
    USING (
        user_id = (SELECT auth.uid())
        OR (kind = 'deleted' AND (user_id IS NULL OR changes ->> 'visibility' = 'shared'))
        OR CASE output_type
               WHEN 'video' THEN EXISTS (SELECT 1 FROM public.video_jobs j WHERE j.id = job_id)
               WHEN 'image' THEN EXISTS (SELECT 1 FROM public.image_jobs j WHERE j.id = job_id)
               WHEN 'text'  THEN EXISTS (SELECT 1 FROM public.text_jobs j WHERE j.id = job_id)
           END
    );
REVOKE ALL ON public.job_events FROM anon, authenticated;
GRANT SELECT ON public.job_events TO authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON public.job_events TO service_role;

-- Webhooks: a user's URL, the event kinds it wants, and its signing secret (Standard
-- Webhooks, `whsec_<base64>`). In schema genstudio, which Supabase's REST API does not expose;
-- the API reaches these tables as the caller, under row-level security.
CREATE TABLE IF NOT EXISTS genstudio.webhooks (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id    uuid NOT NULL DEFAULT auth.uid() REFERENCES auth.users (id) ON DELETE CASCADE,
    url        text NOT NULL,
    events     text[] NOT NULL,
    secret     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS idx_webhooks_user ON genstudio.webhooks (user_id);

-- One message per (webhook, event), retried until it succeeds or its schedule runs out. A
-- sender leases due rows (FOR UPDATE SKIP LOCKED, lease_until); a crashed sender's lease
-- expires and another sends the message again (at-least-once; receivers deduplicate on the
-- `webhook-id` header, which is this row's message_id).
CREATE TABLE IF NOT EXISTS genstudio.webhook_deliveries (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    webhook_id      uuid NOT NULL REFERENCES genstudio.webhooks (id) ON DELETE CASCADE,
    user_id         uuid NOT NULL,
    event_id        bigint NOT NULL,
    kind            text NOT NULL,
    message_id      text NOT NULL,
    payload         text NOT NULL,  -- the exact body sent (and signed) on every attempt
    state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'succeeded', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    lease_owner     text,
    lease_until     timestamptz,
    last_status_code integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    completed_at    timestamptz,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX IF NOT EXISTS idx_webhook_deliveries_due ON genstudio.webhook_deliveries (next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS idx_webhook_deliveries_webhook ON genstudio.webhook_deliveries (webhook_id, created_at DESC);

CREATE TABLE IF NOT EXISTS genstudio.webhook_attempts (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id  uuid NOT NULL REFERENCES genstudio.webhook_deliveries (id) ON DELETE CASCADE,
    user_id      uuid NOT NULL,
    attempted_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    status_code  integer,   -- NULL: no HTTP answer (refused address, timeout, connection error)
    latency_ms   integer NOT NULL,
    error        text
);
CREATE INDEX IF NOT EXISTS idx_webhook_attempts_delivery ON genstudio.webhook_attempts (delivery_id, id);

-- How far the event log has been turned into deliveries. One enqueuer at a time holds this
-- row's lock; it and the deliveries it writes commit together, so nothing is lost or doubled.
CREATE TABLE IF NOT EXISTS genstudio.webhook_cursor (
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_event_id bigint NOT NULL
);
INSERT INTO genstudio.webhook_cursor (last_event_id)
SELECT coalesce(max(id), 0) FROM public.job_events ON CONFLICT DO NOTHING;

GRANT USAGE ON SCHEMA genstudio TO authenticated, service_role;
ALTER TABLE genstudio.webhooks ENABLE ROW LEVEL SECURITY;
ALTER TABLE genstudio.webhook_deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE genstudio.webhook_attempts ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS webhooks_own ON genstudio.webhooks;
CREATE POLICY webhooks_own ON genstudio.webhooks FOR ALL TO authenticated
    USING (user_id = (SELECT auth.uid())) WITH CHECK (user_id = (SELECT auth.uid()));
DROP POLICY IF EXISTS webhook_deliveries_own ON genstudio.webhook_deliveries;
CREATE POLICY webhook_deliveries_own ON genstudio.webhook_deliveries FOR SELECT TO authenticated
    USING (user_id = (SELECT auth.uid()));
DROP POLICY IF EXISTS webhook_attempts_own ON genstudio.webhook_attempts;
CREATE POLICY webhook_attempts_own ON genstudio.webhook_attempts FOR SELECT TO authenticated
    USING (user_id = (SELECT auth.uid()));
GRANT SELECT, INSERT, DELETE ON genstudio.webhooks TO authenticated;
GRANT SELECT ON genstudio.webhook_deliveries, genstudio.webhook_attempts TO authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON genstudio.webhooks, genstudio.webhook_deliveries,
    genstudio.webhook_attempts, genstudio.webhook_cursor, genstudio.job_events_horizon TO service_role;
