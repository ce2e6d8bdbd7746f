-- Queries on one job table. `{table}`, `{job_json}` and the column lists are filled in per
-- output type from genstudio.jobs.output_types (psycopg.sql identifiers, never user input);
-- everything a caller sends is a bound parameter. Every statement runs inside the caller's
-- transaction as role `authenticated`, so row-level security decides which rows exist.

-- The fragments `count_*`, `stream_*`, `filter_*` and `next_cursor` are spliced into the
-- statements and carry no comments of their own (a trailing comment would swallow what
-- follows them):
--
-- total_count (`count_matching`, one `count_stream` per visibility stream, joined with
-- UNION): each stream stops after count_cap + 1 rows, so the count exceeds count_cap
-- exactly when the true count does; a NULL cap counts every row.
--
-- next_cursor: the page's `next_cursor` as a JSON value, from the `page` and `oldest` of the
-- list or the feed: null on the last page, else genstudio.jobs.cursor.Cursor's opaque text
-- (the page's oldest row: `created_at` as Python's isoformat gives it in the session's time
-- zone, `|`, the id; URL-safe base64 without padding).
--
-- Visibility streams: which rows a caller sees is row-level security's decision; the streams
-- only split that set into parts that each have an index in feed order, so that a page never
-- reads more than a few pages' worth of index entries however few of a table's rows the
-- caller may see. `stream_mine` uses idx_<table>_user_feed (or, with a workflow filter,
-- idx_<table>_user_workflow_feed); `stream_public` (shared and ownerless jobs) uses the
-- partial index idx_<table>_public_feed (or idx_<table>_public_workflow_feed). A status
-- filter reads the stream's index and drops the other statuses: a few of them at most.

-- name: insert
-- A comfy_job_id already recorded (by anyone) inserts nothing and returns no row; the
-- service then tells the caller's own earlier job from somebody else's.
INSERT INTO {table} AS j (user_id, status, {create_columns})
VALUES ((SELECT auth.uid()), 'pending', {create_values})
ON CONFLICT (comfy_job_id) DO NOTHING
RETURNING {job_json}::text AS job

-- name: get
SELECT {job_json}::text AS job FROM {table} j WHERE j.id = %(id)s

-- name: get_by_comfy_id
SELECT {job_json}::text AS job FROM {table} j WHERE j.comfy_job_id = %(comfy_job_id)s

-- name: get_own_by_comfy_id
SELECT {job_json}::text AS job
FROM {table} j
WHERE j.comfy_job_id = %(comfy_job_id)s AND j.user_id = (SELECT auth.uid())

-- name: lock_own
-- FOR UPDATE also applies the UPDATE policy, so only the caller's own job comes back; the
-- row stays locked until the request's transaction ends, which makes check-then-write safe.
SELECT {job_json}::text AS job, j.* FROM {table} j WHERE j.id = %(id)s FOR UPDATE

-- name: is_visible
SELECT EXISTS (SELECT 1 FROM {table} j WHERE j.id = %(id)s) AS visible

-- name: update_progress
UPDATE {table} j SET
    status        = %(status)s,
    started_at    = CASE WHEN %(status)s = 'processing' THEN coalesce(j.started_at, now())
                         ELSE j.started_at END,
    progress      = %(progress)s,
    error_message = %(error_message)s,
    visibility    = %(visibility)s
WHERE j.id = %(id)s
RETURNING {job_json}::text AS job

-- name: finish
-- Completion, failure and cancellation: the job ends now, timed from when it started (or,
-- for clients that never report `processing`, from when it was recorded). `started_at` is
-- given by the monitor when a run ended before its start was written (ComfyUI's own time).
UPDATE {table} j SET
    status                  = %(status)s,
    started_at              = coalesce(j.started_at, %(started_at)s),
    completed_at            = now(),
    processing_time_seconds = greatest(0, round(extract(epoch FROM
                                  now() - coalesce(j.started_at, %(started_at)s, j.created_at))))::integer,
    progress                = CASE WHEN %(status)s = 'completed' THEN 100 ELSE j.progress END,
    {result_assignments}
WHERE j.id = %(id)s
RETURNING {job_json}::text AS job

-- name: back_to_dispatch
-- A run its ComfyUI server forgot before it started goes back to the dispatcher: no server
-- yet, the reason shown to the user in parameters.dispatch, and parameters.resubmitted so
-- that it goes back only once.
UPDATE {table} j
SET comfy_url = '',
    parameters = coalesce(j.parameters, '{{}}'::jsonb)
                 || jsonb_build_object('dispatch', %(dispatch)s::jsonb, 'resubmitted', %(dispatch)s::jsonb)
WHERE j.id = %(id)s AND j.status = 'pending'
RETURNING {job_json}::text AS job

-- name: notify_cancelled
-- `<type>:<job id>` to the ComfyUI monitor, delivered when the cancelling transaction commits.
SELECT pg_notify('genstudio_job_cancelled', %(payload)s)

-- name: delete
DELETE FROM {table} j WHERE j.id = %(id)s RETURNING j.id

-- name: list
-- One page, newest first, plus one row more to know whether another page follows. As in
-- the feed (feed.sql), the page is cut on keys that the streams (one `list_stream` per
-- visibility stream, joined with UNION) read from indexes in index order, and only the
-- page's rows are fetched and rendered. The total count is `count_matching` (below) or NULL.
-- The statement returns the whole response body, which the API sends as it is, and the
-- count again on its own: `{items_key}` is the list's key (`image_jobs`), and a count that
-- is NULL (the planner's estimate is wanted) is rendered as null until the service puts the
-- estimate in its place.
WITH page AS (
    SELECT created_at, id FROM ({streams}) AS candidates
    ORDER BY created_at DESC, id DESC
    LIMIT %(limit)s + 1 OFFSET %(offset)s
), shown AS (
    SELECT * FROM page ORDER BY created_at DESC, id DESC LIMIT %(limit)s
), oldest AS (
    SELECT created_at, id FROM shown ORDER BY created_at, id LIMIT 1
)
SELECT '{{"success":true,"' || {items_key} || '":'
       || (SELECT coalesce(json_agg({job_json} ORDER BY s.created_at DESC, s.id DESC), '[]')
           FROM shown s JOIN {table} j ON j.id = s.id)::text
       || ',"total_count":' || coalesce(counted.total_count::text, 'null')
       || ',"next_cursor":' || {next_cursor} || '}}' AS body,
       counted.total_count
FROM (SELECT {total_count} AS total_count) AS counted

-- name: next_cursor
CASE WHEN (SELECT count(*) FROM page) > %(limit)s THEN (
    SELECT '"' || rtrim(translate(encode(convert_to(
               to_char(o.created_at, 'YYYY-MM-DD"T"HH24:MI:SS')
               || CASE WHEN extract(microseconds FROM o.created_at) %% 1000000 = 0 THEN ''
                       ELSE to_char(o.created_at, '.US') END
               || to_char(o.created_at, 'TZH:TZM') || '|' || o.id::text,
           'UTF8'), 'base64'), E'+/\n', '-_'), '=') || '"'
    FROM oldest o)
ELSE 'null' END

-- name: list_stream
(
    SELECT j.created_at, j.id
    FROM {table} j
    WHERE {stream} AND {filters}
    ORDER BY j.created_at DESC, j.id DESC
    LIMIT %(limit)s + %(offset)s + 1
)

-- name: plan_count
-- The planner's estimate of the matching rows (the `planned` count), read from EXPLAIN.
EXPLAIN (FORMAT JSON) SELECT 1 FROM {table} j WHERE {scope} AND {filters}

-- name: count_matching
(SELECT count(*) FROM ({count_streams}) AS matching)

-- name: count_stream
(SELECT j.id FROM {table} j WHERE {stream} AND {filters} ORDER BY j.created_at DESC, j.id DESC LIMIT %(count_cap)s + 1)

-- name: stream_mine
j.user_id = (SELECT auth.uid())

-- name: stream_public
(j.visibility = 'shared' OR j.user_id IS NULL)

-- name: filter_none
TRUE

-- name: filter_workflow
j.workflow_name = %(workflow_name)s

-- name: filter_status
j.status = %(status)s

-- name: filter_before_cursor
(j.created_at, j.id) < (%(cursor_created_at)s, %(cursor_id)s)

-- name: differing_create_values
-- Which of the re-posted values differ from those of the caller's job with this comfy_job_id
-- (the array holds one CASE per re-posted column, yielding its name when the value differs):
-- a re-post that changes them is a conflict, not a retry.
SELECT array_remove(ARRAY[{differences}]::text[], NULL) AS differing
FROM {table} j
WHERE j.comfy_job_id = %(comfy_job_id)s AND j.user_id = (SELECT auth.uid())
