-- The dispatcher's statements, all as `service_role`. Coordination between any number of
-- genstudio processes happens here: a run is held by one dispatcher at a time through its lease
-- (`lease_owner`, `lease_until`), taken with FOR UPDATE SKIP LOCKED so that dispatchers never
-- wait for one another. A queued run with `lease_owner` NULL and `lease_until` in the future is
-- waiting for a usable server and is not looked at again before then (or before a server
-- becomes usable, which clears that wait).

-- name: claim_runs
UPDATE genstudio.workflow_runs r
SET lease_owner = %(owner)s,
    lease_until = now() + make_interval(secs => %(lease_seconds)s),
    attempts    = r.attempts + 1
WHERE r.job_id IN (
    SELECT job_id FROM genstudio.workflow_runs
    WHERE state = 'queued' AND (lease_until IS NULL OR lease_until < now())
    ORDER BY created_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING r.job_id, r.output_type, r.workflow_name, r.prompt, r.required_node_types, r.input_files,
          r.server_url, r.attempts, r.deadline, r.deadline < now() AS past_deadline,
          extract(epoch FROM r.deadline - now()) AS seconds_left

-- name: job_state
-- `{table}`: the run's job table.
SELECT status, comfy_job_id, legacy_table FROM {table} WHERE id = %(id)s

-- name: pick_server
-- The healthy configured server with the fewest queued prompts that has every node type the
-- run needs; its count goes up at once so that the next pick spreads over the others.
UPDATE genstudio.comfy_servers s
SET queue_remaining = coalesce(s.queue_remaining, 0) + 1
WHERE s.url = (
    SELECT url FROM genstudio.comfy_servers
    WHERE healthy AND url = ANY(%(urls)s) AND node_types @> %(required)s::text[]
      AND (%(only)s::text IS NULL OR url = %(only)s)
    ORDER BY coalesce(queue_remaining, 0), random()
    LIMIT 1
)
RETURNING s.url

-- name: mark_submitted
-- Only while this dispatcher still holds the lease, or when the monitor already saw the
-- prompt end (fast prompts report before this commits) and finished the run.
UPDATE genstudio.workflow_runs
SET state = CASE WHEN state = 'queued' THEN 'submitted' ELSE state END,
    server_url = %(url)s, submitted_at = coalesce(submitted_at, now()), lease_owner = NULL,
    lease_until = NULL, dispatch_reason = NULL
WHERE job_id = %(job_id)s
  AND ((state = 'queued' AND lease_owner = %(owner)s) OR (state = 'finished' AND server_url IS NULL))
RETURNING job_id

-- name: job_submitted
-- `{table}`: the run's job table. The monitor follows the job from here on; it may already have
-- seen the prompt end (its messages can arrive before this commits), so the status is left
-- as it is and only comfy_url is filled in.
UPDATE {table}
SET comfy_url = %(url)s,
    parameters = CASE WHEN status = 'pending'
                      THEN jsonb_set(coalesce(parameters, '{{}}'::jsonb), ARRAY['dispatch'],
                                     jsonb_build_object('state', 'submitted', 'submitted_at', now()))
                      ELSE parameters END
WHERE id = %(id)s AND comfy_url = ''
RETURNING status

-- name: wait
-- The run waits for a usable server (or retries a server that failed) for `retry_seconds`.
UPDATE genstudio.workflow_runs
SET lease_owner = NULL, lease_until = now() + make_interval(secs => %(retry_seconds)s),
    dispatch_reason = %(reason)s, server_url = %(sticky_url)s
WHERE job_id = %(job_id)s AND state = 'queued' AND lease_owner = %(owner)s

-- name: job_waiting
-- `{table}`: shows the user why the job still waits; written only when the reason changes.
UPDATE {table}
SET parameters = jsonb_set(coalesce(parameters, '{{}}'::jsonb), ARRAY['dispatch'], %(dispatch)s)
WHERE id = %(id)s AND status = 'pending' AND parameters -> 'dispatch' IS DISTINCT FROM %(dispatch)s

-- name: finish_run
UPDATE genstudio.workflow_runs
SET state = 'finished', lease_owner = NULL, lease_until = NULL, dispatch_reason = %(reason)s
WHERE job_id = %(job_id)s AND state = 'queued'

-- name: usable_server_locked
-- Before a run no server could take starts to wait: is there one now? The configured servers'
-- rows are locked (FOR SHARE) until the wait commits, and a health check locks its server's row
-- before it runs `end_waits`, so either this sees the server usable (it just became so), or
-- that check's `end_waits` runs after this wait committed and ends it. Without the lock, a
-- server that came up while the run was leased (`end_waits` skips leased runs) would leave
-- it asleep for the whole retry time.
SELECT coalesce(bool_or(healthy AND node_types @> %(required)s::text[]), false) AS usable
FROM (SELECT healthy, node_types FROM genstudio.comfy_servers WHERE url = ANY(%(urls)s) FOR SHARE) s

-- name: end_waits
-- A server became usable: every waiting run may be looked at again now.
UPDATE genstudio.workflow_runs SET lease_until = NULL
WHERE state = 'queued' AND lease_owner IS NULL AND lease_until > now()

-- name: claim_health_check
-- One process checks each server per interval: whoever moves checked_at first.
INSERT INTO genstudio.comfy_servers AS s (url, checked_at) VALUES (%(url)s, now())
ON CONFLICT (url) DO UPDATE SET checked_at = now()
    WHERE s.checked_at IS NULL OR s.checked_at < now() - make_interval(secs => %(interval)s)
RETURNING s.healthy AS was_healthy

-- name: record_health
UPDATE genstudio.comfy_servers
SET healthy = %(healthy)s, queue_remaining = %(queue_remaining)s,
    node_types = coalesce(%(node_types)s, node_types), error = %(error)s, checked_at = now()
WHERE url = %(url)s

-- name: notify_dispatchers
SELECT pg_notify('genstudio_workflow_runs', %(payload)s)
