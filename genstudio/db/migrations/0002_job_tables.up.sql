-- genstudio migration 0002: the job tables, one per output type.
--
-- A superset of the guide's Step 1 (`001_create_output_type_tables.sql`): the same columns,
-- types, defaults, indexes, trigger and function names, so a frontend written against the
-- guide keeps working and a database where Step 1 was already run is adopted in place, rows
-- kept. Everything is written to be re-runnable: `CREATE ... IF NOT EXISTS`, `ADD COLUMN IF
-- NOT EXISTS`, and constraints, triggers and policies dropped and made again by name.

DO $ext$
BEGIN
    -- Ids default to the built-in gen_random_uuid(); uuid-ossp only for guide compatibility,
    -- and only where the server ships it (the embedded PostgreSQL does not).
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'uuid-ossp') THEN
        CREATE EXTENSION IF NOT EXISTS "uuid-ossp";
    END IF;
END
$ext$;

CREATE TABLE IF NOT EXISTS public.video_jobs (
    id                       uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id                  uuid REFERENCES auth.users (id) ON DELETE CASCADE,
    workflow_name            text NOT NULL,
    status                   text NOT NULL DEFAULT 'pending',
    created_at               timestamptz NOT NULL DEFAULT now(),
    started_at               timestamptz,
    completed_at             timestamptz,
    processing_time_seconds  integer,
    input_image_urls         text[],
    input_audio_urls         text[],
    input_video_urls         text[],
    output_video_urls        text[],
    width                    integer,
    height                   integer,
    fps                      integer,
    duration_seconds         double precision,
    parameters               jsonb DEFAULT '{}'::jsonb,
    comfy_job_id             text UNIQUE,
    comfy_url                text NOT NULL,
    comfyui_output_filename  text,
    comfyui_output_subfolder text,
    comfyui_output_type      text DEFAULT 'output',
    error_message            text,
    updated_at               timestamptz DEFAULT now()
);

CREATE TABLE IF NOT EXISTS public.image_jobs (
    id                       uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id                  uuid REFERENCES auth.users (id) ON DELETE CASCADE,
    workflow_name            text NOT NULL,
    status                   text NOT NULL DEFAULT 'pending',
    created_at               timestamptz NOT NULL DEFAULT now(),
    started_at               timestamptz,
    completed_at             timestamptz,
    processing_time_seconds  integer,
    input_image_urls         text[],
    prompt                   text,
    output_image_urls        text[],
    width                    integer,
    height                   integer,
    parameters               jsonb DEFAULT '{}'::jsonb,
    comfy_job_id             text UNIQUE,
    comfy_url                text NOT NULL,
    comfyui_output_filename  text,
    comfyui_output_subfolder text,
    comfyui_output_type      text DEFAULT 'output',
    error_message            text,
    model_used               text,
    user_ip                  text,
    updated_at               timestamptz DEFAULT now()
);

CREATE TABLE IF NOT EXISTS public.text_jobs (
    id                       uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id                  uuid REFERENCES auth.users (id) ON DELETE CASCADE,
    workflow_name            text NOT NULL,
    status                   text NOT NULL DEFAULT 'pending',
    created_at               timestamptz NOT NULL DEFAULT now(),
    started_at               timestamptz,
    completed_at             timestamptz,
    processing_time_seconds  integer,
    input_image_urls         text[],
    input_text               text,
    output_text              text,
    output_data              jsonb,
    parameters               jsonb DEFAULT '{}'::jsonb,
    comfy_job_id             text UNIQUE,
    comfy_url                text,
    error_message            text,
    model_used               text,
    updated_at               timestamptz DEFAULT now()
);

COMMENT ON TABLE public.video_jobs IS
    'Jobs whose output is a video: lipsync-one, lipsync-multi, video-lipsync, wan-i2v.';
COMMENT ON TABLE public.image_jobs IS
    'Jobs whose output is an image: img2img, style-transfer, image-edit.';
COMMENT ON TABLE public.text_jobs IS
    'Jobs whose output is text or structured data: character-caption.';

-- What the three tables share, made once per table.
DO $shared$
DECLARE
    t text;
    p record;
BEGIN
    FOREACH t IN ARRAY ARRAY['video_jobs', 'image_jobs', 'text_jobs'] LOOP
        -- Adopting a Step 1 database: its ids default to uuid_generate_v4(), its status has
        -- no default; both are changed in place, never renamed.
        EXECUTE format('ALTER TABLE public.%I ALTER COLUMN id SET DEFAULT gen_random_uuid()', t);
        EXECUTE format('ALTER TABLE public.%I ALTER COLUMN status SET DEFAULT ''pending''', t);

        -- What genstudio adds to the guide's columns.
        EXECUTE format($sql$
            ALTER TABLE public.%I
                ADD COLUMN IF NOT EXISTS thumbnail_url text,
                ADD COLUMN IF NOT EXISTS progress      real,
                ADD COLUMN IF NOT EXISTS visibility    text NOT NULL DEFAULT 'private',
                ADD COLUMN IF NOT EXISTS legacy_table  text,
                ADD COLUMN IF NOT EXISTS legacy_id     text
        $sql$, t);

        -- The guide's status CHECK (PostgreSQL names it <table>_status_check) gains 'cancelled'.
        EXECUTE format('ALTER TABLE public.%I DROP CONSTRAINT IF EXISTS %I', t, t || '_status_check');
        EXECUTE format($sql$
            ALTER TABLE public.%I ADD CONSTRAINT %I
                CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'cancelled'))
        $sql$, t, t || '_status_check');

        EXECUTE format('ALTER TABLE public.%I DROP CONSTRAINT IF EXISTS %I', t, t || '_progress_check');
        EXECUTE format($sql$
            ALTER TABLE public.%I ADD CONSTRAINT %I CHECK (progress >= 0 AND progress <= 100)
        $sql$, t, t || '_progress_check');

        EXECUTE format('ALTER TABLE public.%I DROP CONSTRAINT IF EXISTS %I', t, t || '_visibility_check');
        EXECUTE format($sql$
            ALTER TABLE public.%I ADD CONSTRAINT %I CHECK (visibility IN ('private', 'shared'))
        $sql$, t, t || '_visibility_check');

        -- A migrated row names its source row; both or neither.
        EXECUTE format('ALTER TABLE public.%I DROP CONSTRAINT IF EXISTS %I', t, t || '_legacy_check');
        EXECUTE format($sql$
            ALTER TABLE public.%I ADD CONSTRAINT %I CHECK ((legacy_table IS NULL) = (legacy_id IS NULL))
        $sql$, t, t || '_legacy_check');

        EXECUTE format('ALTER TABLE public.%I DROP CONSTRAINT IF EXISTS %I', t, t || '_legacy_key');
        EXECUTE format('ALTER TABLE public.%I ADD CONSTRAINT %I UNIQUE (legacy_table, legacy_id)',
                       t, t || '_legacy_key');

        -- The guide's indexes, under the guide's names.
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON public.%I (user_id)', 'idx_' || t || '_user_id', t);
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON public.%I (workflow_name)', 'idx_' || t || '_workflow_name', t);
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON public.%I (status)', 'idx_' || t || '_status', t);
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON public.%I (created_at DESC)', 'idx_' || t || '_created_at', t);
        IF t <> 'text_jobs' THEN
            EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON public.%I (comfy_job_id)', 'idx_' || t || '_comfy_job_id', t);
        END IF;

        -- Newest-first feeds are keyset-paginated on (created_at, id): per user, per workflow,
        -- and over the rows every signed-in user may see (shared and ownerless).
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON public.%I (user_id, created_at DESC, id DESC)',
                       'idx_' || t || '_user_feed', t);
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON public.%I (workflow_name, created_at DESC, id DESC)',
                       'idx_' || t || '_workflow_feed', t);
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON public.%I (created_at DESC, id DESC)',
                       'idx_' || t || '_feed', t);
        EXECUTE format($sql$
            CREATE INDEX IF NOT EXISTS %I ON public.%I (created_at DESC, id DESC)
                WHERE visibility = 'shared' OR user_id IS NULL
        $sql$, 'idx_' || t || '_public_feed', t);
        -- The runner and the monitor look for unfinished work; it is a small slice of the table.
        EXECUTE format($sql$
            CREATE INDEX IF NOT EXISTS %I ON public.%I (created_at)
                WHERE status IN ('pending', 'processing')
        $sql$, 'idx_' || t || '_active', t);

        -- updated_at, kept by the function and trigger names the guide's Step 7 drops.
        EXECUTE format($sql$
            CREATE OR REPLACE FUNCTION public.%I() RETURNS trigger
                LANGUAGE plpgsql
                AS $fn$ BEGIN NEW.updated_at = now(); RETURN NEW; END $fn$
        $sql$, 'update_' || t || '_updated_at');
        EXECUTE format($sql$
            CREATE OR REPLACE TRIGGER %I BEFORE UPDATE ON public.%I
                FOR EACH ROW EXECUTE FUNCTION public.%I()
        $sql$, t || '_updated_at_trigger', t, 'update_' || t || '_updated_at');

        EXECUTE format($sql$COMMENT ON COLUMN public.%I.workflow_name IS
            'Which workflow produced the job (e.g. lipsync-one, img2img, character-caption).'$sql$, t);
        EXECUTE format($sql$COMMENT ON COLUMN public.%I.parameters IS
            'Workflow-specific settings; values kept from a legacy table live under the "legacy" key.'$sql$, t);
        EXECUTE format($sql$COMMENT ON COLUMN public.%I.visibility IS
            'private: only the owner sees the job; shared: every signed-in user does.'$sql$, t);
        EXECUTE format($sql$COMMENT ON COLUMN public.%I.legacy_id IS
            'Primary key of the legacy row this job was migrated from (with legacy_table).'$sql$, t);

        -- Row-level security. A Step 1 database has the guide's four policies, under names
        -- we cannot know; they are replaced because they let anyone update ownerless rows.
        EXECUTE format('ALTER TABLE public.%I ENABLE ROW LEVEL SECURITY', t);
        FOR p IN SELECT policyname FROM pg_policies WHERE schemaname = 'public' AND tablename = t LOOP
            EXECUTE format('DROP POLICY %I ON public.%I', p.policyname, t);
        END LOOP;
        -- Own rows, shared rows and ownerless (legacy) rows are readable; only own rows are
        -- writable. Ownerless rows are changed by service_role alone, which bypasses RLS.
        -- `(select auth.uid())` is evaluated once per statement, not once per row.
        EXECUTE format($sql$
            CREATE POLICY %I ON public.%I FOR SELECT TO authenticated
                USING (user_id = (SELECT auth.uid()) OR visibility = 'shared' OR user_id IS NULL)
        $sql$, t || '_select', t);
        EXECUTE format($sql$
            CREATE POLICY %I ON public.%I FOR INSERT TO authenticated
                WITH CHECK (user_id = (SELECT auth.uid()))
        $sql$, t || '_insert', t);
        EXECUTE format($sql$
            CREATE POLICY %I ON public.%I FOR UPDATE TO authenticated
                USING (user_id = (SELECT auth.uid()))
                WITH CHECK (user_id = (SELECT auth.uid()))
        $sql$, t || '_update', t);
        EXECUTE format($sql$
            CREATE POLICY %I ON public.%I FOR DELETE TO authenticated
                USING (user_id = (SELECT auth.uid()))
        $sql$, t || '_delete', t);

        -- Supabase-like grants: RLS, not the grant, decides which rows a role reaches.
        EXECUTE format('GRANT SELECT ON public.%I TO anon', t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON public.%I TO authenticated, service_role', t);
    END LOOP;
END
$shared$;
