-- Workflow runs (genstudio.workflow_runs) and uploads. Statements marked "as the caller" run in
-- the request's transaction as role `authenticated` (row-level security: own rows only);
-- the others are the dispatcher's, as `service_role`. `{table}` and `{job_json}` are filled in
-- per output type from genstudio.jobs.output_types; every value is a bound parameter.

-- name: insert_run
-- As the caller. With an idempotency key already used by this user, nothing is inserted and
-- no row comes back; the caller then answers with that earlier run's job.
INSERT INTO genstudio.workflow_runs
    (job_id, output_type, user_id, workflow_name, prompt, required_node_types, output_nodes,
     input_files, deadline, idempotency_key)
VALUES (%(job_id)s, %(output_type)s, (SELECT auth.uid()), %(workflow_name)s, %(prompt)s,
        %(required_node_types)s, %(output_nodes)s, %(input_files)s,
        now() + make_interval(secs => %(deadline_seconds)s), %(idempotency_key)s)
ON CONFLICT ON CONSTRAINT workflow_runs_idempotency_key DO NOTHING
RETURNING job_id

-- name: run_by_idempotency_key
-- As the caller.
SELECT job_id, output_type, workflow_name FROM genstudio.workflow_runs
WHERE user_id = (SELECT auth.uid()) AND idempotency_key = %(idempotency_key)s

-- name: insert_job
-- As the caller: the run's job, pending, owned by the caller, under its pre-assigned prompt id.
-- comfy_url stays '' until the dispatcher submits it to a server.
INSERT INTO {table} AS j (id, user_id, workflow_name, status, comfy_job_id, comfy_url, parameters, {url_columns})
VALUES (%(id)s, (SELECT auth.uid()), %(workflow_name)s, 'pending', %(comfy_job_id)s, '', %(parameters)s, {url_values})
RETURNING {job_json}::text AS job

-- name: healthy_servers
-- Which configured servers are up, and the node types each has (for the runs API's check).
SELECT url, node_types FROM genstudio.comfy_servers WHERE healthy AND url = ANY(%(urls)s)

-- name: insert_upload
-- As the caller.
INSERT INTO genstudio.uploads (id, user_id, storage_key, filename, content_type, size_bytes, width, height, duration_seconds)
VALUES (%(id)s, (SELECT auth.uid()), %(storage_key)s, %(filename)s, %(content_type)s, %(size_bytes)s,
        %(width)s, %(height)s, %(duration_seconds)s)
RETURNING id, storage_key, filename, content_type, size_bytes, width, height, duration_seconds, created_at

-- name: get_upload
-- As the caller: only their own uploads exist for them.
SELECT id, storage_key, filename, content_type, size_bytes, width, height, duration_seconds, created_at
FROM genstudio.uploads WHERE id = %(id)s

-- name: upload_by_key
-- As the caller.
SELECT id FROM genstudio.uploads WHERE storage_key = %(storage_key)s

-- name: job_visible
-- As the caller: whether row-level security lets them see the job a stored file belongs to.
SELECT EXISTS (SELECT 1 FROM {table} j WHERE j.id = %(id)s) AS visible
