-- genstudio legacy migration: one section per legacy table, installed only where the table
-- exists. `@source_table@` (and `@data_table@`) stand for the table as it is named now
-- (`public.multitalk_jobs`, or `public._archived_multitalk_jobs` once archived).
--
-- Per source:
--   <source>_mapped         every legacy row, mapped: the one definition of the mapping rules
--                           (docs/legacy-migration.md explains each); target_table is NULL for a
--                           row that cannot be migrated, with skip_reason saying why;
--   <source>_to_<target>    the rows for one target table, under the target's column names;
--   <source>_anomalies      what `plan` reports for this source.
-- No legacy value is lost: each one lands in a target column that reproduces it exactly, or
-- under parameters.legacy. That key holds the legacy primary key and created_at, every value a
-- rule transforms lossily (a status renamed, an empty URL dropped from an array, ...), and, via
-- @other_columns(alias)@, every column the view does not read (project_id, columns the mapping
-- does not know). Install expands that marker from the catalog (expand_other_columns), so
-- unknown columns are kept without building the whole row as JSON, which dominated the cost of
-- every copy and every verify.
--
-- Per-row cost matters here (a copy, and verify, evaluate these views for every legacy row):
-- helpers are single-expression SQL functions that the planner inlines, and the workflow and
-- user maps are consulted only when they have rules for the source (an InitPlan, evaluated
-- once per query). The maps are looked up by PARALLEL SAFE functions, not joined or read by
-- correlated subqueries: a view that reads only its legacy table, with nothing parallel
-- restricted in it, lets verify's comparison run whole in parallel workers, where the planner
-- would otherwise put the mapping, and the comparison with it, after the Gather.

-- source: multitalk_jobs
CREATE VIEW genstudio_legacy.multitalk_jobs_mapped AS
SELECT m.job_id AS source_key,
       'multitalk_jobs'::text AS legacy_table,
       m.job_id::text AS legacy_id,
       CASE WHEN s.status IS NULL THEN NULL WHEN s.kind = 'image' THEN 'image_jobs' ELSE 'video_jobs' END AS target_table,
       CASE WHEN s.status IS NULL THEN format('unknown status %s', coalesce(quote_literal(m.status), 'NULL')) END AS skip_reason,
       m.status::text AS legacy_status,
       s.kind,
       CASE WHEN EXISTS (SELECT 1 FROM genstudio_legacy.user_map_key WHERE legacy_table = 'multitalk_jobs')
            THEN genstudio_legacy.mapped_user('multitalk_jobs', m.job_id, NULL) END AS user_id,
       CASE WHEN NOT EXISTS (SELECT 1 FROM genstudio_legacy.workflow_map w WHERE w.legacy_table = 'multitalk_jobs')
            THEN s.default_workflow
            ELSE genstudio_legacy.workflow_name('multitalk_jobs', to_jsonb(m), s.default_workflow) END AS workflow_name,
       s.status,
       m.timestamp_submitted AS created_at,
       NULL::timestamptz AS started_at,
       CASE WHEN s.status IN ('completed', 'failed') THEN m.timestamp_completed END AS completed_at,
       -- NULL, not negative, for a row completed before it was submitted (clock skew between
       -- machines): both timestamps are kept as they are, and plan reports the row.
       CASE WHEN s.status IN ('completed', 'failed') AND m.timestamp_completed >= m.timestamp_submitted
            THEN round(extract(epoch FROM m.timestamp_completed - m.timestamp_submitted))::integer END AS processing_time_seconds,
       genstudio_legacy.url_array(m.image_filename) AS input_image_urls,
       genstudio_legacy.url_array(m.audio_filename) AS input_audio_urls,
       -- The result under the name of the table the row goes to (a view per target picks its own).
       genstudio_legacy.url_array(m.video_url) AS output_video_urls,
       genstudio_legacy.url_array(m.video_url) AS output_image_urls,
       m.width,
       m.height,
       -- Under "legacy": the key, created_at and updated_at (the target's updated_at is its own
       -- bookkeeping), and what no column reproduces: a renamed status, a completion time of an
       -- unfinished job, '' file names and URLs (the arrays drop them), trim_to_audio of an
       -- image job, and the columns the view does not read (project_id, unknown ones).
       CASE s.kind WHEN 'video' THEN jsonb_build_object('trim_to_audio', m.trim_to_audio, 'legacy', s.legacy)
                   ELSE jsonb_build_object('legacy', s.legacy || jsonb_build_object('trim_to_audio', m.trim_to_audio)) END AS parameters,
       m.job_id::text AS comfy_job_id,
       m.comfy_url::text AS comfy_url,
       m.filename::text AS comfyui_output_filename,
       m.subfolder::text AS comfyui_output_subfolder,
       genstudio_legacy.comfy_output_type(m.filename, m.video_url) AS comfyui_output_type,
       m.error_message,
       coalesce(m.updated_at, m.timestamp_submitted) AS updated_at
  FROM @source_table@ m
 CROSS JOIN LATERAL (SELECT genstudio_legacy.mapped_status(m.status) AS status,
                            genstudio_legacy.output_kind(m.filename, m.video_url) AS kind) k
 CROSS JOIN LATERAL (SELECT k.status, k.kind, CASE k.kind WHEN 'image' THEN 'img2img' ELSE 'lipsync-one' END AS default_workflow,
                            jsonb_build_object('job_id', m.job_id, 'created_at', m.created_at, 'updated_at', m.updated_at)
                            || genstudio_legacy.kept('status', m.status, m.status = k.status)
                            || genstudio_legacy.kept('timestamp_completed', m.timestamp_completed,
                                                     m.timestamp_completed IS NULL OR k.status IN ('completed', 'failed'))
                            || genstudio_legacy.kept_url('image_filename', m.image_filename)
                            || genstudio_legacy.kept_url('audio_filename', m.audio_filename)
                            || genstudio_legacy.kept_url('video_url', m.video_url)
                            || @other_columns(m)@ AS legacy) s;

CREATE VIEW genstudio_legacy.multitalk_jobs_to_video_jobs AS
SELECT source_key, legacy_table, legacy_id, user_id, workflow_name, status, created_at, started_at, completed_at,
       processing_time_seconds, input_image_urls, input_audio_urls, output_video_urls, width, height,
       parameters, comfy_job_id, comfy_url, comfyui_output_filename, comfyui_output_subfolder, comfyui_output_type,
       error_message, updated_at
  FROM genstudio_legacy.multitalk_jobs_mapped
 WHERE target_table = 'video_jobs';

CREATE VIEW genstudio_legacy.multitalk_jobs_to_image_jobs AS
SELECT source_key, legacy_table, legacy_id, user_id, workflow_name, status, created_at, started_at, completed_at,
       processing_time_seconds, input_image_urls, output_image_urls, width, height,
       parameters, comfy_job_id, comfy_url, comfyui_output_filename, comfyui_output_subfolder, comfyui_output_type,
       error_message, updated_at
  FROM genstudio_legacy.multitalk_jobs_mapped
 WHERE target_table = 'image_jobs';

INSERT INTO genstudio_legacy.routes (source, target, view_name, key_column, key_type) VALUES
    ('multitalk_jobs', 'video_jobs', 'multitalk_jobs_to_video_jobs', 'job_id', 'character varying'),
    ('multitalk_jobs', 'image_jobs', 'multitalk_jobs_to_image_jobs', 'job_id', 'character varying');

CREATE VIEW genstudio_legacy.multitalk_jobs_anomalies AS
SELECT 'multitalk_jobs'::text AS source, legacy_id, 'unknown_status'::text AS kind,
       skip_reason || '; not migrated until it is corrected' AS reason
  FROM genstudio_legacy.multitalk_jobs_mapped WHERE target_table IS NULL
UNION ALL
SELECT 'multitalk_jobs', legacy_id, 'completed_without_output', 'status completed but no video_url'
  FROM genstudio_legacy.multitalk_jobs_mapped WHERE status = 'completed' AND output_video_urls IS NULL
UNION ALL
SELECT 'multitalk_jobs', m.job_id::text, 'completed_before_submitted',
       format('timestamp_completed %s is %s before timestamp_submitted %s (clock skew?); both are kept, '
              'processing_time_seconds is NULL', m.timestamp_completed, m.timestamp_submitted - m.timestamp_completed,
              m.timestamp_submitted)
  FROM @source_table@ m
 WHERE m.timestamp_completed < m.timestamp_submitted
   AND genstudio_legacy.mapped_status(m.status) IN ('completed', 'failed')
UNION ALL
SELECT 'multitalk_jobs', legacy_id, 'image_in_multitalk',
       format('the result is an image (%s), so it goes to image_jobs as %s, not to video_jobs',
              coalesce(nullif('.' || genstudio_legacy.file_extension(comfyui_output_filename), '.'),
                       nullif('.' || genstudio_legacy.file_extension(output_image_urls[1]), '.'), 'content type in the URL'),
              workflow_name)
  FROM genstudio_legacy.multitalk_jobs_mapped WHERE target_table = 'image_jobs'
UNION ALL
SELECT 'multitalk_jobs', m.job_id::text, CASE WHEN p.problem LIKE '%empty' THEN 'empty_url' ELSE 'signed_url' END, p.problem
  FROM @source_table@ m
 CROSS JOIN LATERAL (SELECT genstudio_legacy.url_problem('video_url', m.video_url) AS problem) p
 WHERE p.problem IS NOT NULL;

-- source: style_transfers
CREATE VIEW genstudio_legacy.style_transfers_mapped AS
SELECT t.id AS source_key,
       'style_transfers'::text AS legacy_table,
       t.id::text AS legacy_id,
       CASE WHEN s.status IS NOT NULL THEN 'image_jobs' END AS target_table,
       CASE WHEN s.status IS NULL THEN format('unknown status %s', coalesce(quote_literal(t.status), 'NULL')) END AS skip_reason,
       t.status AS legacy_status,
       CASE WHEN EXISTS (SELECT 1 FROM genstudio_legacy.user_map_key WHERE legacy_table = 'style_transfers')
              OR EXISTS (SELECT 1 FROM genstudio_legacy.user_map_ip)
            THEN genstudio_legacy.mapped_user('style_transfers', t.id::text, t.user_ip) END AS user_id,
       CASE WHEN NOT EXISTS (SELECT 1 FROM genstudio_legacy.workflow_map w WHERE w.legacy_table = 'style_transfers')
            THEN 'style-transfer'
            ELSE genstudio_legacy.workflow_name('style_transfers', to_jsonb(t), 'style-transfer') END AS workflow_name,
       s.status,
       coalesce(t.created_at, t.updated_at, timestamptz 'epoch') AS created_at,
       NULL::timestamptz AS started_at,
       CASE WHEN s.status IN ('completed', 'failed') THEN t.updated_at END AS completed_at,
       t.processing_time_seconds,
       genstudio_legacy.url_array(t.source_image_url, t.style_image_url) AS input_image_urls,
       t.prompt,
       genstudio_legacy.url_array(t.result_image_url) AS output_image_urls,
       -- Under "legacy": the key, created_at, updated_at, the legacy workflow name, the prompt
       -- id (comfy_job_id is NULL when another row holds it), and what no column reproduces: a
       -- renamed status, the input URLs when one is '' or NULL (the array loses which one), an
       -- '' result URL, and the columns the view does not read.
       jsonb_build_object('legacy',
           jsonb_build_object('id', t.id, 'created_at', t.created_at, 'updated_at', t.updated_at,
                              'workflow_name', t.workflow_name, 'comfyui_prompt_id', t.comfyui_prompt_id)
           || genstudio_legacy.kept('status', t.status, t.status = s.status)
           || CASE WHEN t.source_image_url <> '' AND t.style_image_url <> '' THEN '{}'::jsonb
                   ELSE jsonb_build_object('source_image_url', t.source_image_url, 'style_image_url', t.style_image_url) END
           || genstudio_legacy.kept_url('result_image_url', t.result_image_url)
           || @other_columns(t)@) AS parameters,
       t.comfyui_prompt_id AS comfy_job_id,
       -- The legacy table never recorded its server: what `run --style-transfer-comfy-url`
       -- says, for rows that ran on ComfyUI (they have a prompt id); '' (unknown) otherwise.
       CASE WHEN t.comfyui_prompt_id IS NOT NULL
            THEN coalesce((SELECT o.value FROM genstudio_legacy.options o WHERE o.name = 'style_transfers_comfy_url'), '')
            ELSE '' END AS comfy_url,
       NULL::text AS comfyui_output_type,
       t.error_message,
       t.model_used,
       t.user_ip,
       coalesce(t.updated_at, t.created_at, timestamptz 'epoch') AS updated_at
  FROM @source_table@ t
 CROSS JOIN LATERAL (SELECT genstudio_legacy.mapped_status(t.status) AS status) s;

CREATE VIEW genstudio_legacy.style_transfers_to_image_jobs AS
SELECT source_key, legacy_table, legacy_id, user_id, workflow_name, status, created_at, started_at, completed_at,
       processing_time_seconds, input_image_urls, prompt, output_image_urls, parameters, comfy_job_id, comfy_url,
       comfyui_output_type, error_message, model_used, user_ip, updated_at
  FROM genstudio_legacy.style_transfers_mapped
 WHERE target_table = 'image_jobs';

INSERT INTO genstudio_legacy.routes (source, target, view_name, key_column, key_type) VALUES
    ('style_transfers', 'image_jobs', 'style_transfers_to_image_jobs', 'id', 'uuid');

CREATE VIEW genstudio_legacy.style_transfers_anomalies AS
SELECT 'style_transfers'::text AS source, legacy_id, 'unknown_status'::text AS kind,
       skip_reason || '; not migrated until it is corrected' AS reason
  FROM genstudio_legacy.style_transfers_mapped WHERE target_table IS NULL
UNION ALL
SELECT 'style_transfers', legacy_id, 'completed_without_output', 'status completed but no result_image_url'
  FROM genstudio_legacy.style_transfers_mapped WHERE status = 'completed' AND output_image_urls IS NULL
UNION ALL
SELECT 'style_transfers', t.id::text, 'missing_created_at',
       format('created_at is NULL; the job is dated %s', coalesce('by its updated_at ' || t.updated_at, 'at the epoch'))
  FROM @source_table@ t WHERE t.created_at IS NULL
UNION ALL
SELECT 'style_transfers', t.id::text, CASE WHEN p.problem LIKE '%empty' THEN 'empty_url' ELSE 'signed_url' END, p.problem
  FROM @source_table@ t
 CROSS JOIN LATERAL (VALUES (genstudio_legacy.url_problem('source_image_url', t.source_image_url)),
                            (genstudio_legacy.url_problem('style_image_url', t.style_image_url)),
                            (genstudio_legacy.url_problem('result_image_url', t.result_image_url))) p(problem)
 WHERE p.problem IS NOT NULL;

-- source: edited_images
CREATE VIEW genstudio_legacy.edited_images_mapped AS
SELECT e.id AS source_key,
       'edited_images'::text AS legacy_table,
       e.id::text AS legacy_id,
       CASE WHEN s.status IS NOT NULL THEN 'image_jobs' END AS target_table,
       CASE WHEN s.status IS NULL THEN format('unknown status %s', coalesce(quote_literal(e.status), 'NULL')) END AS skip_reason,
       e.status AS legacy_status,
       CASE WHEN EXISTS (SELECT 1 FROM genstudio_legacy.user_map_key WHERE legacy_table = 'edited_images')
              OR EXISTS (SELECT 1 FROM genstudio_legacy.user_map_ip)
            THEN genstudio_legacy.mapped_user('edited_images', e.id::text, e.user_ip) END AS user_id,
       CASE WHEN NOT EXISTS (SELECT 1 FROM genstudio_legacy.workflow_map w WHERE w.legacy_table = 'edited_images')
            THEN 'image-edit'
            ELSE genstudio_legacy.workflow_name('edited_images', to_jsonb(e), 'image-edit') END AS workflow_name,
       s.status,
       coalesce(e.created_at, timestamptz 'epoch') AS created_at,
       NULL::timestamptz AS started_at,
       -- Edits ran synchronously on a hosted model: the row is written when the edit ends, its
       -- processing time is the only duration known.
       CASE WHEN s.status IN ('completed', 'failed') THEN e.created_at + make_interval(secs => e.processing_time_seconds) END AS completed_at,
       e.processing_time_seconds,
       genstudio_legacy.url_array(e.source_image_url) AS input_image_urls,
       e.prompt,
       genstudio_legacy.url_array(e.result_image_url) AS output_image_urls,
       -- Under "legacy": the key, created_at, the legacy workflow name, and what no column
       -- reproduces: a renamed status, '' URLs, an 'Error: ...' model_used (it becomes the
       -- trimmed error_message), and the columns the view does not read.
       jsonb_build_object('legacy',
           jsonb_build_object('id', e.id, 'created_at', e.created_at, 'workflow_name', e.workflow_name)
           || genstudio_legacy.kept('status', e.status, e.status = s.status)
           || genstudio_legacy.kept_url('source_image_url', e.source_image_url)
           || genstudio_legacy.kept_url('result_image_url', e.result_image_url)
           || genstudio_legacy.kept('model_used', e.model_used, e.model_used NOT LIKE 'Error:%' IS NOT FALSE)
           || @other_columns(e)@) AS parameters,
       NULL::text AS comfy_job_id,
       ''::text AS comfy_url,  -- never ran on ComfyUI; the target column is NOT NULL
       NULL::text AS comfyui_output_type,
       CASE WHEN e.model_used LIKE 'Error:%' THEN btrim(substr(e.model_used, 7)) END AS error_message,
       CASE WHEN e.model_used LIKE 'Error:%' THEN NULL ELSE e.model_used END AS model_used,
       e.user_ip,
       coalesce(e.created_at, timestamptz 'epoch') AS updated_at
  FROM @source_table@ e
 CROSS JOIN LATERAL (SELECT genstudio_legacy.mapped_status(e.status) AS status) s;

CREATE VIEW genstudio_legacy.edited_images_to_image_jobs AS
SELECT source_key, legacy_table, legacy_id, user_id, workflow_name, status, created_at, started_at, completed_at,
       processing_time_seconds, input_image_urls, prompt, output_image_urls, parameters, comfy_job_id, comfy_url,
       comfyui_output_type, error_message, model_used, user_ip, updated_at
  FROM genstudio_legacy.edited_images_mapped
 WHERE target_table = 'image_jobs';

INSERT INTO genstudio_legacy.routes (source, target, view_name, key_column, key_type) VALUES
    ('edited_images', 'image_jobs', 'edited_images_to_image_jobs', 'id', 'uuid');

CREATE VIEW genstudio_legacy.edited_images_anomalies AS
SELECT 'edited_images'::text AS source, legacy_id, 'unknown_status'::text AS kind,
       skip_reason || '; not migrated until it is corrected' AS reason
  FROM genstudio_legacy.edited_images_mapped WHERE target_table IS NULL
UNION ALL
SELECT 'edited_images', legacy_id, 'completed_without_output', 'status completed but no result_image_url'
  FROM genstudio_legacy.edited_images_mapped WHERE status = 'completed' AND output_image_urls IS NULL
UNION ALL
SELECT 'edited_images', e.id::text, 'missing_created_at', 'created_at is NULL; the job is dated at the epoch'
  FROM @source_table@ e WHERE e.created_at IS NULL
UNION ALL
SELECT 'edited_images', e.id::text, CASE WHEN p.problem LIKE '%empty' THEN 'empty_url' ELSE 'signed_url' END, p.problem
  FROM @source_table@ e
 CROSS JOIN LATERAL (VALUES (genstudio_legacy.url_problem('source_image_url', e.source_image_url)),
                            (genstudio_legacy.url_problem('result_image_url', e.result_image_url))) p(problem)
 WHERE p.problem IS NOT NULL;

-- source: datasets
-- A dataset and its `data` rows become one character-caption text job: the images are its
-- inputs, every item (name, URL, caption, and its legacy id and created_at) its output_data.
CREATE VIEW genstudio_legacy.datasets_mapped AS
SELECT d.id AS source_key,
       'datasets'::text AS legacy_table,
       d.id::text AS legacy_id,
       'text_jobs'::text AS target_table,
       NULL::text AS skip_reason,
       NULL::text AS legacy_status,
       CASE WHEN EXISTS (SELECT 1 FROM genstudio_legacy.user_map_key WHERE legacy_table = 'datasets')
            THEN genstudio_legacy.mapped_user('datasets', d.id::text, NULL) END AS user_id,
       CASE WHEN NOT EXISTS (SELECT 1 FROM genstudio_legacy.workflow_map w WHERE w.legacy_table = 'datasets')
            THEN 'character-caption'
            ELSE genstudio_legacy.workflow_name('datasets', to_jsonb(d), 'character-caption') END AS workflow_name,
       -- A dataset is a saved result; captions still missing show as null in output_data.
       'completed'::text AS status,
       coalesce(d.created_at, d.updated_at, timestamptz 'epoch') AS created_at,
       NULL::timestamptz AS started_at,
       d.updated_at AS completed_at,
       NULL::integer AS processing_time_seconds,
       items.input_image_urls,
       coalesce(items.output_data, '[]'::jsonb) AS output_data,
       -- The caption settings are the job's parameters; the dataset's own columns go under
       -- "legacy" (settings are not repeated there).
       CASE WHEN jsonb_typeof(d.settings) = 'object' THEN d.settings ELSE jsonb_build_object('settings', d.settings) END
           || jsonb_build_object('legacy', jsonb_build_object('id', d.id, 'name', d.name, 'character_trigger', d.character_trigger,
                                                              'created_at', d.created_at, 'updated_at', d.updated_at)
                                           || @other_columns(d)@) AS parameters,
       NULL::text AS comfy_job_id,
       NULL::text AS comfy_url,  -- captioning never recorded a ComfyUI server
       coalesce(d.updated_at, d.created_at, timestamptz 'epoch') AS updated_at,
       coalesce(items.item_count, 0) AS item_count
  FROM @source_table@ d
  -- A join to the items grouped by dataset, not a subquery per dataset: `data` has no index on
  -- dataset_id (the legacy tables are not altered), so a per-dataset lookup scans all of `data`
  -- for each dataset. For one dataset (follow), the key is pushed down into the grouping.
  LEFT JOIN (
        SELECT x.dataset_id,
               nullif(array_agg(x.image_url ORDER BY x.created_at, x.id) FILTER (WHERE x.image_url <> ''), '{}') AS input_image_urls,
               jsonb_agg(jsonb_build_object('id', x.id, 'name', x.image_name, 'url', x.image_url,
                                            'caption', x.caption, 'created_at', x.created_at)
                         ORDER BY x.created_at, x.id) AS output_data,
               count(*) AS item_count
          FROM @data_table@ x GROUP BY x.dataset_id) items ON items.dataset_id = d.id;

CREATE VIEW genstudio_legacy.datasets_to_text_jobs AS
SELECT source_key, legacy_table, legacy_id, user_id, workflow_name, status, created_at, started_at, completed_at,
       processing_time_seconds, input_image_urls, output_data, parameters, comfy_job_id, comfy_url, updated_at
  FROM genstudio_legacy.datasets_mapped
 WHERE target_table = 'text_jobs';

INSERT INTO genstudio_legacy.routes (source, target, view_name, key_column, key_type) VALUES
    ('datasets', 'text_jobs', 'datasets_to_text_jobs', 'id', 'uuid');

CREATE VIEW genstudio_legacy.datasets_anomalies AS
SELECT 'datasets'::text AS source, legacy_id, 'completed_without_output'::text AS kind,
       'the dataset has no images (data rows)' AS reason
  FROM genstudio_legacy.datasets_mapped WHERE item_count = 0
UNION ALL
SELECT 'datasets', d.id::text, 'missing_created_at', 'created_at is NULL; the job is dated by its updated_at'
  FROM @source_table@ d WHERE d.created_at IS NULL
UNION ALL
SELECT 'data', x.id::text, CASE WHEN p.problem LIKE '%empty' THEN 'empty_url' ELSE 'signed_url' END,
       p.problem || format(' (dataset %s; the item is kept in output_data, left out of input_image_urls)', x.dataset_id)
  FROM @data_table@ x
 CROSS JOIN LATERAL (SELECT genstudio_legacy.url_problem('image_url', x.image_url) AS problem) p
 WHERE p.problem IS NOT NULL;
