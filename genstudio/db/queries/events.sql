-- The job event log (migration 0004_job_events). `{job_branches}` is `job_branch` once per
-- output type, joined with UNION ALL: the event's job as the API renders it, with its owner
-- and visibility now. Run as a user, row-level security limits both the events and the jobs
-- to what that user may see; run as service_role (the live listener), everything comes back
-- and genstudio.events.visibility applies the same rule per subscriber.

-- name: batch
SELECT e.id, e.output_type, e.job_id, e.user_id, e.kind, e.created_at,
       e.changes ->> 'visibility' AS recorded_visibility,
       json_build_object('id', e.id, 'kind', e.kind, 'type', e.output_type, 'job_id', e.job_id,
                         'user_id', e.user_id, 'changes', e.changes, 'created_at', e.created_at)::text AS event_json,
       j.job, j.owner, j.visibility, j.job IS NOT NULL AS job_exists
FROM public.job_events e
LEFT JOIN LATERAL ({job_branches}) j ON true
WHERE e.id > %(after)s AND {filters}
ORDER BY e.id
LIMIT %(limit)s

-- name: job_branch
SELECT {job_json}::text AS job, j.user_id AS owner, j.visibility
FROM {table} j
WHERE e.output_type = {output_type} AND j.id = e.job_id

-- name: filter_everything
TRUE

-- name: filter_mine
e.user_id = (SELECT auth.uid())

-- name: filter_types
e.output_type = ANY(%(types)s)

-- name: filter_job
e.output_type = %(output_type)s AND e.job_id = %(job_id)s

-- name: newest_id
-- The highest id ever handed out that a resuming client may hold: the log's newest event,
-- or, if pruning emptied it, where pruning reached.
SELECT greatest((SELECT max(id) FROM public.job_events),
                (SELECT pruned_through FROM genstudio.job_events_horizon)) AS newest_id,
       (SELECT pruned_through FROM genstudio.job_events_horizon) AS pruned_through

-- name: max_id
SELECT coalesce(max(id), 0) AS max_id FROM public.job_events

-- name: prune_batch
-- Deletes up to %(limit)s events older than the retention period, and moves the horizon past
-- them in the same transaction. created_at grows with the id (both are assigned at commit under
-- one lock), so the expired events are the oldest ids: walk the primary key from the start.
WITH oldest AS (
    SELECT id FROM public.job_events ORDER BY id LIMIT %(limit)s
), gone AS (
    DELETE FROM public.job_events e
    USING oldest o
    WHERE e.id = o.id AND e.created_at < clock_timestamp() - %(retention_seconds)s * interval '1 second'
    RETURNING e.id
), moved AS (
    UPDATE genstudio.job_events_horizon
    SET pruned_through = greatest(pruned_through, (SELECT max(id) FROM gone))
    WHERE EXISTS (SELECT 1 FROM gone)
)
SELECT count(*) AS deleted FROM gone

-- name: prune_deliveries
-- Finished webhook deliveries are kept as long as events are, then go with their attempts.
DELETE FROM genstudio.webhook_deliveries
WHERE state <> 'pending' AND completed_at < clock_timestamp() - %(retention_seconds)s * interval '1 second'

-- name: try_prune_lock
SELECT pg_try_advisory_xact_lock(7450857718071812102) AS locked
