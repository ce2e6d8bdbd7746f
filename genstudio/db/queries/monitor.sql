-- The ComfyUI monitor's queries (genstudio/comfy/monitor.py). They run as `service_role`.
-- A job is followed while it has not ended, has a prompt id and was recorded against one of
-- the configured servers (COMFYUI_URLS; a trailing slash does not count). Runs genstudio
-- submitted itself have a row in genstudio.workflow_runs; jobs a client recorded do not.

-- name: followed_jobs
-- Every job the monitor follows on one server, with its run row when genstudio submitted it.
SELECT j.output_type, j.id, j.status, j.comfy_job_id, j.workflow_name, j.progress,
       r.job_id IS NOT NULL AS is_run, coalesce(j.parameters ? 'resubmitted', false) AS resubmitted, r.output_nodes,
       (SELECT count(*) FROM jsonb_object_keys(r.prompt)) AS node_count,
       now() - coalesce(r.submitted_at, j.created_at) > make_interval(secs => %(grace_seconds)s) AS settled,
       j.status = 'processing' AND now() - j.updated_at > make_interval(secs => %(stall_seconds)s) AS stalled
FROM (
    SELECT 'video' AS output_type, id, status, comfy_job_id, comfy_url, workflow_name, progress, parameters,
           created_at, updated_at
    FROM public.video_jobs WHERE status IN ('pending', 'processing') AND comfy_job_id IS NOT NULL
    UNION ALL
    SELECT 'image', id, status, comfy_job_id, comfy_url, workflow_name, progress, parameters, created_at, updated_at
    FROM public.image_jobs WHERE status IN ('pending', 'processing') AND comfy_job_id IS NOT NULL
    UNION ALL
    SELECT 'text', id, status, comfy_job_id, comfy_url, workflow_name, progress, parameters, created_at, updated_at
    FROM public.text_jobs WHERE status IN ('pending', 'processing') AND comfy_job_id IS NOT NULL
) j
LEFT JOIN genstudio.workflow_runs r ON r.job_id = j.id
WHERE rtrim(j.comfy_url, '/') = %(server)s
   OR (r.state = 'submitted' AND r.server_url = %(server)s)

-- name: job_by_prompt
-- The job of a prompt genstudio submitted to this server (its messages came to our socket),
-- ended or not. The run's own server decides, because the job's comfy_url may not be
-- committed yet when a fast prompt already reports.
SELECT j.output_type, j.id, j.status, j.comfy_job_id, j.workflow_name, j.progress,
       r.job_id IS NOT NULL AS is_run, coalesce(j.parameters ? 'resubmitted', false) AS resubmitted, r.output_nodes,
       (SELECT count(*) FROM jsonb_object_keys(r.prompt)) AS node_count,
       true AS settled, false AS stalled
FROM (
    SELECT 'video' AS output_type, id, status, comfy_job_id, comfy_url, workflow_name, progress, parameters
    FROM public.video_jobs WHERE comfy_job_id = %(prompt_id)s
    UNION ALL
    SELECT 'image', id, status, comfy_job_id, comfy_url, workflow_name, progress, parameters
    FROM public.image_jobs WHERE comfy_job_id = %(prompt_id)s
    UNION ALL
    SELECT 'text', id, status, comfy_job_id, comfy_url, workflow_name, progress, parameters
    FROM public.text_jobs WHERE comfy_job_id = %(prompt_id)s
) j
LEFT JOIN genstudio.workflow_runs r ON r.job_id = j.id
WHERE rtrim(j.comfy_url, '/') = %(server)s OR r.server_url = %(server)s OR (r.job_id IS NOT NULL AND j.comfy_url = '')
LIMIT 1

-- name: cancelled_prompts
-- Which of these prompt ids (in a server's queue) belong to jobs that were cancelled.
SELECT comfy_job_id FROM public.video_jobs WHERE comfy_job_id = ANY(%(prompt_ids)s) AND status = 'cancelled'
UNION ALL
SELECT comfy_job_id FROM public.image_jobs WHERE comfy_job_id = ANY(%(prompt_ids)s) AND status = 'cancelled'
UNION ALL
SELECT comfy_job_id FROM public.text_jobs WHERE comfy_job_id = ANY(%(prompt_ids)s) AND status = 'cancelled'

-- name: cancelled_job
-- A cancelled job's prompt and server, from the `genstudio_job_cancelled` notification.
SELECT comfy_job_id, rtrim(coalesce(nullif(comfy_url, ''), r.server_url, ''), '/') AS server
FROM (
    SELECT id, comfy_job_id, comfy_url FROM public.video_jobs WHERE id = %(id)s AND %(output_type)s = 'video'
    UNION ALL
    SELECT id, comfy_job_id, comfy_url FROM public.image_jobs WHERE id = %(id)s AND %(output_type)s = 'image'
    UNION ALL
    SELECT id, comfy_job_id, comfy_url FROM public.text_jobs WHERE id = %(id)s AND %(output_type)s = 'text'
) j
LEFT JOIN genstudio.workflow_runs r ON r.job_id = j.id

-- name: finish_run
UPDATE genstudio.workflow_runs SET state = 'finished', lease_owner = NULL, lease_until = NULL
WHERE job_id = %(job_id)s

-- name: requeue_run
-- A run its server forgot before it started (the server restarted): back to the dispatcher.
UPDATE genstudio.workflow_runs
SET state = 'queued', server_url = NULL, lease_owner = NULL, lease_until = NULL,
    submitted_at = NULL, dispatch_reason = %(reason)s
WHERE job_id = %(job_id)s AND state = 'submitted'
RETURNING job_id

-- name: leader_lock
-- One follower per ComfyUI server among all genstudio processes: held on a session of its own.
SELECT pg_try_advisory_lock(hashtextextended('genstudio.monitor:' || %(server)s, 0)) AS acquired
