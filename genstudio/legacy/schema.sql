-- genstudio legacy migration: the machinery every source shares.
--
-- Lives in its own schema, `genstudio_legacy`, installed and removed by `genstudio legacy`
-- (never by the schema migrations): the operator's maps, the mapping helpers, and the three
-- generic operations over the per-source mapping views of `sources.sql`:
--   copy_range  – `run`:    insert the mapped rows of a key range, skipping rows already copied;
--   sync_key    – `follow`: make the target match the mapping for one legacy key (upsert/move/delete);
--   problems    – `verify`: every difference between the mapping and the target, both directions.
-- One definition of each mapping rule (the views), used by all of them.
-- Safe to run again: everything is CREATE ... IF NOT EXISTS or CREATE OR REPLACE.

CREATE SCHEMA IF NOT EXISTS genstudio_legacy;
COMMENT ON SCHEMA genstudio_legacy IS 'genstudio: legacy-table migration (genstudio legacy …); removed by `genstudio legacy rollback`';

-- Settings the mapping reads, set by `run` (e.g. style_transfers_comfy_url).
CREATE TABLE IF NOT EXISTS genstudio_legacy.options (
    name  text PRIMARY KEY,
    value text NOT NULL
);

-- Ownership, from `--user-map`: by legacy key first, else by the row's user_ip.
CREATE TABLE IF NOT EXISTS genstudio_legacy.user_map_key (
    legacy_table text NOT NULL,
    legacy_id    text NOT NULL,
    user_id      uuid NOT NULL,
    PRIMARY KEY (legacy_table, legacy_id)
);
CREATE TABLE IF NOT EXISTS genstudio_legacy.user_map_ip (
    user_ip text PRIMARY KEY,
    user_id uuid NOT NULL
);

-- Workflow names, from `--workflow-map`: the first rule (by position) whose regular
-- expression matches the named legacy column wins; no match keeps the default.
CREATE TABLE IF NOT EXISTS genstudio_legacy.workflow_map (
    position      integer PRIMARY KEY,
    legacy_table  text NOT NULL,
    column_name   text NOT NULL,
    pattern       text NOT NULL,
    workflow_name text NOT NULL
);

-- Statuses rule 4 does not know, mapped by the operator (`run --status-map queued=pending,NULL=failed`)
-- so that such rows can be migrated without editing the legacy tables; legacy_status NULL stands
-- for a missing status. Consulted only for rows whose status rule 4 does not know.
CREATE TABLE IF NOT EXISTS genstudio_legacy.status_map (
    legacy_status text,
    status        text NOT NULL CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'cancelled'))
);

-- Which mapping view feeds which target table; filled by the install of each present source.
CREATE TABLE IF NOT EXISTS genstudio_legacy.routes (
    source       text NOT NULL,
    target       text NOT NULL,
    view_name    text NOT NULL,
    key_column   text NOT NULL,
    key_type     text NOT NULL,
    PRIMARY KEY (source, target)
);

-- Follow-trigger failures: the old code's write still commits (the trigger must never break
-- the old studio), the key is kept here and `run` syncs it again.
CREATE TABLE IF NOT EXISTS genstudio_legacy.follow_errors (
    source    text NOT NULL,
    legacy_id text NOT NULL,
    error     text NOT NULL,
    at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, legacy_id)
);

-- What the install put in place (a checksum of these files and the tables they read), so
-- commands that find it current do not replace views a live follow trigger is using.
CREATE TABLE IF NOT EXISTS genstudio_legacy.installed (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    checksum text NOT NULL
);

-- The columns each legacy table is known to have; `optional` ones may be absent (project_id
-- was added late). The mapping views read exactly the non-optional ones; every other column
-- (optional or unknown) is kept under parameters.legacy (expand_other_columns), and unknown
-- ones are reported by `plan`.
CREATE TABLE IF NOT EXISTS genstudio_legacy.known_columns (
    legacy_table text NOT NULL,
    column_name  text NOT NULL,
    optional     boolean NOT NULL DEFAULT false,
    PRIMARY KEY (legacy_table, column_name)
);
INSERT INTO genstudio_legacy.known_columns (legacy_table, column_name, optional)
SELECT t, c, c = 'project_id'
FROM (VALUES
    ('multitalk_jobs', ARRAY['job_id','status','timestamp_submitted','timestamp_completed','filename','subfolder',
                             'image_filename','audio_filename','width','height','trim_to_audio','comfy_url',
                             'error_message','video_url','project_id','created_at','updated_at']),
    ('style_transfers', ARRAY['id','created_at','source_image_url','style_image_url','prompt','result_image_url',
                              'workflow_name','model_used','processing_time_seconds','user_ip','status',
                              'comfyui_prompt_id','error_message','updated_at']),
    ('edited_images', ARRAY['id','created_at','source_image_url','prompt','result_image_url','workflow_name',
                            'model_used','processing_time_seconds','user_ip','status']),
    ('datasets', ARRAY['id','name','character_trigger','settings','created_at','updated_at']),
    ('data', ARRAY['id','dataset_id','image_url','image_name','caption','created_at'])
) AS k(t, cols), unnest(cols) AS c
ON CONFLICT DO NOTHING;

-- ---- mapping rules shared by the sources ------------------------------------------------

-- Legacy status -> target status. submitted is the multitalk name for pending, error for
-- failed. Anything else is NULL: the row is not migrated and `plan`/`verify` name it,
-- instead of the guide's `ELSE 'pending'`, which would resurrect unknown states as work to do.
CREATE OR REPLACE FUNCTION genstudio_legacy.job_status(legacy text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT CASE legacy
        WHEN 'submitted'  THEN 'pending'
        WHEN 'pending'    THEN 'pending'
        WHEN 'processing' THEN 'processing'
        WHEN 'completed'  THEN 'completed'
        WHEN 'error'      THEN 'failed'
        WHEN 'failed'     THEN 'failed'
        WHEN 'cancelled'  THEN 'cancelled'
    END $$;

-- The status a legacy row is migrated with: rule 4, then the operator's status map for what
-- rule 4 does not know. The map's subquery runs only for those rows (coalesce stops at the
-- first non-NULL), so the common case costs what job_status costs.
CREATE OR REPLACE FUNCTION genstudio_legacy.mapped_status(legacy text) RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT coalesce(genstudio_legacy.job_status(legacy),
                          (SELECT m.status FROM genstudio_legacy.status_map m
                            WHERE m.legacy_status IS NOT DISTINCT FROM legacy)) $$;

-- A URL array from single values: no NULL and no '' elements, and NULL rather than an empty
-- or `{NULL}` array (the guide's `ARRAY[video_url]` makes `{NULL}` for every unfinished job).
CREATE OR REPLACE FUNCTION genstudio_legacy.url_array(VARIADIC urls text[]) RETURNS text[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT nullif(array_remove(array_remove(urls, NULL), ''), '{}') $$;

-- The lower-case extension of a file name or of a URL's path ('' when there is none): the
-- end of what precedes the first `?` or `#`. (For plan's messages; output_kind tests the same
-- thing without a regular expression.)
CREATE OR REPLACE FUNCTION genstudio_legacy.file_extension(name text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT lower(coalesce(substring(split_part(split_part(name, '?', 1), '#', 1) FROM '\.([A-Za-z0-9]{1,5})$'), '')) $$;

-- What follows the last `.` of what precedes the first `?` or `#`, lower-cased; with no `.`,
-- something starting with `/`, which is no extension. It equals file_extension() whenever
-- either is one of output_kind's extensions, and costs a tenth of it: output_kind runs for
-- every multitalk row, several times (once per use of the row's kind in the views).
CREATE OR REPLACE FUNCTION genstudio_legacy.last_suffix(name text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT lower(split_part('/' || split_part(split_part(name, '?', 1), '#', 1), '.', -1)) $$;

-- Whether a multitalk_jobs row produced an image (img2img) or a video, from evidence: the
-- output file's extension, else the result URL's extension, else a content type carried in
-- the URL (`data:image/…`, `response-content-type=image/…`). No evidence (the job has not
-- produced anything yet): video, the table's purpose. (A simple CASE evaluates each
-- extension once.)
CREATE OR REPLACE FUNCTION genstudio_legacy.output_kind(filename text, url text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT CASE genstudio_legacy.last_suffix(filename)
        WHEN 'png' THEN 'image' WHEN 'jpg' THEN 'image' WHEN 'jpeg' THEN 'image' WHEN 'webp' THEN 'image'
        WHEN 'bmp' THEN 'image' WHEN 'tif' THEN 'image' WHEN 'tiff' THEN 'image'
        WHEN 'mp4' THEN 'video' WHEN 'webm' THEN 'video' WHEN 'mov' THEN 'video' WHEN 'mkv' THEN 'video'
        WHEN 'avi' THEN 'video' WHEN 'm4v' THEN 'video' WHEN 'gif' THEN 'video'
        ELSE CASE genstudio_legacy.last_suffix(url)
            WHEN 'png' THEN 'image' WHEN 'jpg' THEN 'image' WHEN 'jpeg' THEN 'image' WHEN 'webp' THEN 'image'
            WHEN 'bmp' THEN 'image' WHEN 'tif' THEN 'image' WHEN 'tiff' THEN 'image'
            WHEN 'mp4' THEN 'video' WHEN 'webm' THEN 'video' WHEN 'mov' THEN 'video' WHEN 'mkv' THEN 'video'
            WHEN 'avi' THEN 'video' WHEN 'm4v' THEN 'video' WHEN 'gif' THEN 'video'
            ELSE CASE WHEN url ~* '^data:image/|[?&](response-)?content-type=image(/|%2F)' THEN 'image' ELSE 'video' END
        END
    END $$;

-- ComfyUI's output type of the result file: `temp` when the URL says `type=temp` or the file
-- has ComfyUI's temp name, else `output`; NULL when there is no output file at all. (The
-- cheap strpos tests spare most rows the regular expressions.)
CREATE OR REPLACE FUNCTION genstudio_legacy.comfy_output_type(filename text, url text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT CASE
        WHEN filename IS NULL OR filename = '' THEN NULL
        WHEN strpos(url, 'type=temp') > 0 AND url ~ '[?&]type=temp(&|$)' THEN 'temp'
        WHEN strpos(filename, 'ComfyUI_temp_') > 0 AND filename ~ '(^|/)ComfyUI_temp_' THEN 'temp'
        ELSE 'output'
    END $$;

-- The workflow-map rule that names this row's workflow, or the default. Not inlinable (it runs
-- a query), so the views call it only when the map has rules for the source.
CREATE OR REPLACE FUNCTION genstudio_legacy.workflow_name(source text, legacy_row jsonb, fallback text) RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT coalesce(
        (SELECT w.workflow_name FROM genstudio_legacy.workflow_map w
          WHERE w.legacy_table = source AND (legacy_row ->> w.column_name) ~ w.pattern
          ORDER BY w.position LIMIT 1),
        fallback) $$;

-- The `--user-map` owner of a legacy row: by its key first, else by its user_ip (NULL for
-- sources without one). Not inlinable (it runs queries), so the views call it only when the
-- map has rules that can apply. A function rather than subqueries in the views: a correlated
-- subquery keeps the whole view out of the parallel workers, even when it never runs, and
-- verify compares every row in them.
CREATE OR REPLACE FUNCTION genstudio_legacy.mapped_user(source text, legacy_id text, user_ip text) RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT coalesce(
        (SELECT uk.user_id FROM genstudio_legacy.user_map_key uk WHERE uk.legacy_table = source AND uk.legacy_id = mapped_user.legacy_id),
        (SELECT ui.user_id FROM genstudio_legacy.user_map_ip ui WHERE ui.user_ip = mapped_user.user_ip)) $$;

-- A legacy value for parameters.legacy: {name: value}, or {} when a target column reproduces
-- it exactly (`reproduced`; NULL counts as not reproduced). Inlined by the planner.
CREATE OR REPLACE FUNCTION genstudio_legacy.kept(name text, value anyelement, reproduced boolean) RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT CASE WHEN reproduced THEN '{}'::jsonb ELSE jsonb_build_object(name, value) END $$;

-- A URL that becomes an element of a URL array (url_array): only '' is lost there (NULL stays
-- NULL: no element), so only '' is kept.
CREATE OR REPLACE FUNCTION genstudio_legacy.kept_url(name text, url text) RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE  -- as jsonb_build_object is: an IMMUTABLE one would not be inlined
    AS $$ SELECT CASE WHEN url = '' THEN jsonb_build_object(name, '') ELSE '{}'::jsonb END $$;

-- Expands `@other_columns(<alias>)@` in a mapping view's text into a jsonb_build_object of the
-- columns of `tbl` the view does not read (the non-optional known columns are the ones it
-- reads), so that they are kept under parameters.legacy: `project_id` where it exists, and any
-- column the mapping does not know. Done once at install, from the catalog, instead of
-- to_jsonb(row) per row.
CREATE OR REPLACE FUNCTION genstudio_legacy.expand_other_columns(statement text, legacy_table text, tbl regclass)
    RETURNS text
    LANGUAGE plpgsql STABLE
    AS $fn$
DECLARE
    alias text;
    expression text;
BEGIN
    FOR alias IN SELECT DISTINCT (regexp_matches(statement, '@other_columns\((\w+)\)@', 'g'))[1] LOOP
        -- jsonb_build_object takes at most 100 arguments: 50 columns a call.
        SELECT coalesce(string_agg(part, ' || ' ORDER BY chunk), '''{}''::jsonb') INTO expression
          FROM (SELECT (n - 1) / 50 AS chunk,
                       'jsonb_build_object(' || string_agg(format('%L, %I.%I', attname, alias, attname), ', ' ORDER BY n) || ')' AS part
                  FROM (SELECT a.attname, row_number() OVER (ORDER BY a.attnum) AS n
                          FROM pg_attribute a
                         WHERE a.attrelid = tbl AND a.attnum > 0 AND NOT a.attisdropped
                           AND NOT EXISTS (SELECT 1 FROM genstudio_legacy.known_columns k
                                            WHERE k.legacy_table = expand_other_columns.legacy_table
                                              AND k.column_name = a.attname AND NOT k.optional)) c
                 GROUP BY 1) parts;
        statement := replace(statement, format('@other_columns(%s)@', alias), '(' || expression || ')');
    END LOOP;
    RETURN statement;
END
$fn$;

-- When a signed storage URL stops working: a Supabase `…/object/sign/…?token=<JWT>` by the
-- JWT's `exp` (read, not verified), an S3 presigned URL by X-Amz-Date + X-Amz-Expires, a
-- CloudFront/GCS one by `Expires=<epoch>`. NULL for URLs that do not expire (or cannot be read).
CREATE OR REPLACE FUNCTION genstudio_legacy.url_expires_at(url text) RETURNS timestamptz
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    AS $$
DECLARE
    part text;
BEGIN
    IF url IS NULL OR url !~* '[?&](token|x-amz-expires|expires)=' THEN
        RETURN NULL;
    END IF;
    part := substring(url FROM '[?&]token=[^.&#]*\.([^.&#]*)\.');
    IF part IS NOT NULL THEN
        part := translate(part, '-_', '+/');
        part := part || repeat('=', (4 - length(part) % 4) % 4);
        RETURN to_timestamp((convert_from(decode(part, 'base64'), 'UTF8')::jsonb ->> 'exp')::double precision);
    END IF;
    IF url ~* '[?&]x-amz-expires=' THEN
        RETURN to_timestamp(substring(url FROM '(?i)[?&]x-amz-date=([0-9]{8}T[0-9]{6}Z)'), 'YYYYMMDD"T"HH24MISS"Z"')
               AT TIME ZONE 'UTC' AT TIME ZONE current_setting('TimeZone')
             + make_interval(secs => substring(url FROM '(?i)[?&]x-amz-expires=([0-9]+)')::double precision);
    END IF;
    RETURN to_timestamp(substring(url FROM '[?&]Expires=([0-9]+)')::double precision);
EXCEPTION WHEN OTHERS THEN
    RETURN NULL;  -- not a token we can read: not reported rather than guessed
END
$$;

-- ---- the operations ---------------------------------------------------------------------

-- The target columns a route view provides (all but its source_key), as a quoted list.
CREATE OR REPLACE FUNCTION genstudio_legacy.route_columns(view_name text, exclude text[] DEFAULT '{}') RETURNS text[]
    LANGUAGE sql STABLE
    AS $$ SELECT array_agg(a.attname::text ORDER BY a.attnum)
          FROM pg_attribute a
         WHERE a.attrelid = ('genstudio_legacy.' || quote_ident(view_name))::regclass
           AND a.attnum > 0 AND NOT a.attisdropped
           AND a.attname <> ALL (ARRAY['source_key'] || exclude) $$;

-- comfy_job_id is UNIQUE in the target. A legacy prompt id keeps it unless another row holds
-- it already (a native job, or an earlier legacy row: style_transfers has duplicates); then
-- the row is still copied, with comfy_job_id NULL; the id stays in parameters.legacy.
-- The same expression serves copy and sync, so both resolve a collision the same way.
CREATE OR REPLACE FUNCTION genstudio_legacy.comfy_job_id_expression(target text) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT format($f$CASE
        WHEN v.comfy_job_id IS NULL THEN NULL
        WHEN row_number() OVER (PARTITION BY v.comfy_job_id ORDER BY v.source_key) > 1 THEN NULL
        WHEN EXISTS (SELECT 1 FROM public.%1$I o WHERE o.comfy_job_id = v.comfy_job_id
                        AND (o.legacy_table, o.legacy_id) IS DISTINCT FROM (v.legacy_table, v.legacy_id)) THEN NULL
        ELSE v.comfy_job_id END$f$, target) $$;

-- `run`: copy the legacy rows of `source` with after < key <= upto (NULL bounds: open ended)
-- into their target tables; rows already copied are skipped. Returns rows inserted.
-- TimeZone is fixed so the legacy row's timestamps render identically in parameters.legacy
-- whichever session copies, follows or verifies. Sequential scans are discouraged because the
-- job tables' statistics lag while they fill: a planner that believes a table empty would
-- check each row's prompt id by scanning it, which turns a copy quadratic.
CREATE OR REPLACE FUNCTION genstudio_legacy.copy_range(p_source text, p_after text, p_upto text) RETURNS bigint
    LANGUAGE plpgsql
    SET timezone = 'UTC'
    SET enable_seqscan = off
    AS $fn$
DECLARE
    r record;
    cols text;
    n bigint := 0;
    c bigint;
BEGIN
    FOR r IN SELECT * FROM genstudio_legacy.routes WHERE source = p_source ORDER BY target LOOP
        SELECT string_agg(quote_ident(x), ', ') INTO cols
          FROM unnest(genstudio_legacy.route_columns(r.view_name, ARRAY['comfy_job_id'])) AS x;
        EXECUTE format($q$
            INSERT INTO public.%1$I (%2$s, comfy_job_id)
            SELECT %2$s, %3$s
              FROM genstudio_legacy.%4$I v
             WHERE %5$s %6$s
             ORDER BY v.source_key
            ON CONFLICT (legacy_table, legacy_id) DO NOTHING $q$,
            r.target, cols, genstudio_legacy.comfy_job_id_expression(r.target), r.view_name,
            CASE WHEN p_after IS NULL THEN '' ELSE format('v.source_key > $1::%s AND', r.key_type) END,
            CASE WHEN p_upto IS NULL THEN 'true' ELSE format('v.source_key <= $2::%s', r.key_type) END)
        USING p_after, p_upto;
        GET DIAGNOSTICS c = ROW_COUNT;
        n := n + c;
    END LOOP;
    RETURN n;
END
$fn$;

-- `follow`: make the targets agree with the mapping for one legacy key: delete the copy from
-- any table the row no longer maps to (deleted, or reclassified from video to image once its
-- output appeared), then insert or update it where it maps now.
CREATE OR REPLACE FUNCTION genstudio_legacy.sync_key(p_source text, p_key text) RETURNS void
    LANGUAGE plpgsql
    SET timezone = 'UTC'
    SET enable_seqscan = off  -- one key: always an index lookup, whatever the statistics say
    AS $fn$
DECLARE
    r record;
    cols text[];
BEGIN
    FOR r IN SELECT * FROM genstudio_legacy.routes WHERE source = p_source ORDER BY target LOOP
        EXECUTE format($q$
            DELETE FROM public.%1$I t
             WHERE t.legacy_table = $1 AND t.legacy_id = $2
               AND NOT EXISTS (SELECT 1 FROM genstudio_legacy.%2$I v WHERE v.source_key = $2::%3$s) $q$,
            r.target, r.view_name, r.key_type)
        USING p_source, p_key;
    END LOOP;
    FOR r IN SELECT * FROM genstudio_legacy.routes WHERE source = p_source ORDER BY target LOOP
        cols := genstudio_legacy.route_columns(r.view_name, ARRAY['comfy_job_id']) || ARRAY['comfy_job_id'];
        EXECUTE format($q$
            INSERT INTO public.%1$I AS t (%2$s)
            SELECT %3$s, %4$s FROM genstudio_legacy.%5$I v WHERE v.source_key = $1::%6$s
            ON CONFLICT (legacy_table, legacy_id) DO UPDATE SET (%2$s) = ROW(%7$s)
             WHERE (%8$s) IS DISTINCT FROM (%7$s) $q$,
            r.target,
            (SELECT string_agg(quote_ident(x), ', ') FROM unnest(cols) x),
            (SELECT string_agg(quote_ident(x), ', ') FROM unnest(cols[1:array_length(cols, 1) - 1]) x),
            genstudio_legacy.comfy_job_id_expression(r.target),
            r.view_name, r.key_type,
            (SELECT string_agg('EXCLUDED.' || quote_ident(x), ', ') FROM unnest(cols) x),
            (SELECT string_agg('t.' || quote_ident(x), ', ') FROM unnest(cols) x))
        USING p_key;
    END LOOP;
END
$fn$;

-- The follow trigger on each legacy table: TG_ARGV = (source, column holding the source key).
-- `data` rows follow with their dataset's key. Runs in the old code's transaction; a failure
-- is recorded rather than raised, because the old studio must keep working.
CREATE OR REPLACE FUNCTION genstudio_legacy.follow() RETURNS trigger
    LANGUAGE plpgsql
    AS $fn$
DECLARE
    new_key text;
    old_key text;
BEGIN
    IF TG_OP <> 'DELETE' THEN new_key := to_jsonb(NEW) ->> TG_ARGV[1]; END IF;
    IF TG_OP <> 'INSERT' THEN old_key := to_jsonb(OLD) ->> TG_ARGV[1]; END IF;
    FOR new_key IN SELECT DISTINCT k FROM unnest(ARRAY[new_key, old_key]) k WHERE k IS NOT NULL LOOP
        BEGIN
            PERFORM genstudio_legacy.sync_key(TG_ARGV[0], new_key);
            DELETE FROM genstudio_legacy.follow_errors WHERE source = TG_ARGV[0] AND legacy_id = new_key;
        EXCEPTION WHEN OTHERS THEN
            INSERT INTO genstudio_legacy.follow_errors (source, legacy_id, error)
            VALUES (TG_ARGV[0], new_key, SQLERRM)
            ON CONFLICT (source, legacy_id) DO UPDATE SET error = EXCLUDED.error, at = now();
        END;
    END LOOP;
    RETURN NULL;
END
$fn$;

DROP FUNCTION IF EXISTS genstudio_legacy.comfy_job_id_matches(text);
DROP FUNCTION IF EXISTS genstudio_legacy.comfy_job_id_matches(text, text);

-- `verify`: every difference between what the mapping says and what the targets hold.
--   not_migrated  a legacy row the mapping cannot place (reason from the source view);
--   missing       a mapped row with no target row;
--   mismatch      a target row whose values differ (detail: the differing columns);
--   extra         a target row claiming a legacy key the mapping does not put in that table
--                 (a deleted legacy row, or a second copy in another table).
-- updated_at is the target row's own bookkeeping (its trigger sets it on every update) and
-- is not compared; the legacy updated_at is compared inside parameters.legacy.
CREATE OR REPLACE FUNCTION genstudio_legacy.problems()
    RETURNS TABLE (kind text, source text, legacy_id text, target text, detail text)
    LANGUAGE plpgsql
    SET timezone = 'UTC'
    SET work_mem = '256MB'  -- the comparison is one hash join per route; keep it in memory
    -- Nearly no row leaves the comparison, but the planner cannot tell (it estimates most do),
    -- so it would keep the comparison out of the parallel workers to save passing rows back.
    SET parallel_tuple_cost = 0.0001
    AS $fn$
DECLARE
    src text;
    r record;
    cols text[];
    plain text[];
BEGIN
    FOR src IN SELECT DISTINCT routes.source FROM genstudio_legacy.routes ORDER BY 1 LOOP
        RETURN QUERY EXECUTE format($q$
            SELECT 'not_migrated'::text, %1$L::text, v.legacy_id, NULL::text, v.skip_reason
              FROM genstudio_legacy.%2$I v WHERE v.target_table IS NULL ORDER BY v.source_key $q$,
            src, src || '_mapped');
        -- One query per route: the rows the mapping puts in the target table, full-joined by
        -- key to the target rows that claim the source (a row on one side only is missing or
        -- extra; both directions in one hash join), and compared as one row of every column.
        -- The join and comparison run whole in the parallel workers: everything in it is
        -- parallel safe, which the comfy_job_id check is not (it looks up another row), so the
        -- few rows whose prompt id differs are checked above the fence, where the differing
        -- columns are named too. (The rule: the mapped prompt id, or NULL because another row
        -- of the table holds it; see comfy_job_id_expression.)
        FOR r IN SELECT * FROM genstudio_legacy.routes WHERE routes.source = src ORDER BY routes.target LOOP
            plain := genstudio_legacy.route_columns(r.view_name, ARRAY['comfy_job_id', 'updated_at']);
            cols := plain || ARRAY['comfy_job_id'];
            RETURN QUERY EXECUTE format($q$
                SELECT CASE WHEN c.t_id IS NULL THEN 'missing' WHEN c.v_legacy_id IS NULL THEN 'extra' ELSE 'mismatch' END,
                       %1$L::text, coalesce(c.v_legacy_id, c.t_legacy_id), %2$L::text,
                       CASE WHEN c.v_legacy_id IS NULL THEN 'no legacy row maps here'
                            WHEN c.t_id IS NOT NULL
                            THEN array_to_string(array_remove(ARRAY[%3$s, CASE WHEN NOT c.comfy_ok THEN 'comfy_job_id' END], NULL), ', ') END
                  FROM (SELECT c.*,
                               c.t_comfy_job_id IS NOT DISTINCT FROM c.v_comfy_job_id
                               OR (c.t_comfy_job_id IS NULL AND EXISTS (SELECT 1 FROM public.%2$I o
                                      WHERE o.comfy_job_id = c.v_comfy_job_id AND o.id <> c.t_id)) AS comfy_ok
                          FROM (SELECT t.id AS t_id, %4$s
                                  FROM genstudio_legacy.%5$I v
                                  FULL JOIN (SELECT * FROM public.%2$I WHERE legacy_table = %1$L) t ON t.legacy_id = v.legacy_id
                                 WHERE t.id IS NULL OR v.legacy_id IS NULL OR (%6$s) IS DISTINCT FROM (%7$s)
                                OFFSET 0) c) c
                 WHERE c.t_id IS NULL OR c.v_legacy_id IS NULL OR (%8$s) IS DISTINCT FROM (%9$s) OR NOT c.comfy_ok
                 ORDER BY 3 $q$,
                src, r.target,
                (SELECT string_agg(format('CASE WHEN c.%1$I IS DISTINCT FROM c.%2$I THEN %3$L END', 't_' || x, 'v_' || x, x), ', ') FROM unnest(plain) x),
                (SELECT string_agg(format('t.%1$I AS %2$I, v.%1$I AS %3$I', x, 't_' || x, 'v_' || x), ', ') FROM unnest(cols) x),
                r.view_name,
                (SELECT string_agg(format('t.%I', x), ', ') FROM unnest(cols) x),
                (SELECT string_agg(format('v.%I', x), ', ') FROM unnest(cols) x),
                (SELECT string_agg(format('c.%I', 't_' || x), ', ') FROM unnest(plain) x),
                (SELECT string_agg(format('c.%I', 'v_' || x), ', ') FROM unnest(plain) x));
        END LOOP;
    END LOOP;
    -- A source table that is gone (or not installed) leaves copies behind: extra too.
    FOR r IN SELECT DISTINCT t.target, s.source FROM (VALUES ('video_jobs'), ('image_jobs'), ('text_jobs')) t(target)
               CROSS JOIN (VALUES ('multitalk_jobs'), ('style_transfers'), ('edited_images'), ('datasets')) s(source)
              WHERE NOT EXISTS (SELECT 1 FROM genstudio_legacy.routes x WHERE x.source = s.source AND x.target = t.target) LOOP
        RETURN QUERY EXECUTE format($q$
            SELECT 'extra'::text, %1$L::text, t.legacy_id, %2$L::text, 'no legacy row maps here'::text
              FROM public.%2$I t WHERE t.legacy_table = %1$L ORDER BY t.legacy_id $q$, r.source, r.target);
    END LOOP;
END
$fn$;


-- ---- plan helpers -------------------------------------------------------------------------

-- Why a URL column is a problem: an empty URL, or a signed URL that expired or expires within
-- `genstudio_legacy.expiry_window` (set by `plan`; default 7 days). NULL when it is fine.
CREATE OR REPLACE FUNCTION genstudio_legacy.url_problem(column_name text, url text) RETURNS text
    LANGUAGE plpgsql STABLE
    AS $$
DECLARE
    expires timestamptz;
BEGIN
    IF url = '' THEN
        RETURN format('%s is empty', column_name);
    END IF;
    expires := genstudio_legacy.url_expires_at(url);
    IF expires IS NULL THEN
        RETURN NULL;
    ELSIF expires <= now() THEN
        RETURN format('%s is a signed URL that expired at %s', column_name, to_char(expires AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI "UTC"'));
    ELSIF expires <= now() + coalesce(nullif(current_setting('genstudio_legacy.expiry_window', true), ''), '7 days')::interval THEN
        RETURN format('%s is a signed URL that expires at %s', column_name, to_char(expires AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI "UTC"'));
    END IF;
    RETURN NULL;
END
$$;

-- Prompt ids that more than one row would claim in the same target table: rows already in the
-- target (native jobs, earlier copies) and the legacy rows in the order `run` copies them.
-- Every claimant but the holder is listed; it is copied with comfy_job_id NULL.
CREATE OR REPLACE FUNCTION genstudio_legacy.comfy_collisions()
    RETURNS TABLE (source text, legacy_id text, target text, detail text)
    LANGUAGE plpgsql STABLE
    AS $fn$
DECLARE
    parts text[] := '{}';
    r record;
    pos integer := 0;
BEGIN
    FOR r IN SELECT routes.*, array_position(ARRAY['multitalk_jobs','style_transfers','edited_images','datasets'], routes.source) AS p
               FROM genstudio_legacy.routes ORDER BY p, target LOOP
        pos := pos + 1;
        parts := parts || format(
            $q$SELECT %1$L::text AS source, v.legacy_id, %2$L::text AS target, v.comfy_job_id, %3$s AS pos,
                      row_number() OVER (ORDER BY v.source_key) AS n
                 FROM genstudio_legacy.%4$I v WHERE v.comfy_job_id IS NOT NULL$q$,
            r.source, r.target, r.p, r.view_name);
    END LOOP;
    IF pos = 0 THEN
        RETURN;
    END IF;
    RETURN QUERY EXECUTE format($q$
        WITH mapped AS (%s),
        existing AS (
            SELECT 'video_jobs'::text AS target, comfy_job_id, legacy_table, legacy_id FROM public.video_jobs WHERE comfy_job_id IS NOT NULL
            UNION ALL SELECT 'image_jobs', comfy_job_id, legacy_table, legacy_id FROM public.image_jobs WHERE comfy_job_id IS NOT NULL
            UNION ALL SELECT 'text_jobs', comfy_job_id, legacy_table, legacy_id FROM public.text_jobs WHERE comfy_job_id IS NOT NULL),
        ranked AS (
            SELECT m.*, row_number() OVER (PARTITION BY m.target, m.comfy_job_id ORDER BY m.pos, m.n) AS claim,
                   first_value(m.source || ' ' || m.legacy_id) OVER (PARTITION BY m.target, m.comfy_job_id ORDER BY m.pos, m.n) AS first_claimant
              FROM mapped m)
        SELECT r.source, r.legacy_id, r.target,
               CASE WHEN e.comfy_job_id IS NOT NULL
                    THEN format('ComfyUI prompt id %%L is already held in %%s by %%s; copied with comfy_job_id NULL (the id stays in parameters.legacy)',
                                r.comfy_job_id, r.target, coalesce(e.legacy_table || ' ' || e.legacy_id, 'a native job'))
                    ELSE format('ComfyUI prompt id %%L is also claimed by %%s, copied first; this row gets comfy_job_id NULL (the id stays in parameters.legacy)',
                                r.comfy_job_id, r.first_claimant) END
          FROM ranked r
          LEFT JOIN existing e ON e.target = r.target AND e.comfy_job_id = r.comfy_job_id
               AND (e.legacy_table, e.legacy_id) IS DISTINCT FROM (r.source, r.legacy_id)
         WHERE e.comfy_job_id IS NOT NULL OR r.claim > 1
         ORDER BY r.pos, r.n $q$, array_to_string(parts, ' UNION ALL '));
END
$fn$;
