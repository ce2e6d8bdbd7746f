-- Webhooks (migration 0004_job_events). Registration and the delivery log are read and
-- written as the caller (row-level security: own webhooks only); the enqueuer and the sender
-- run as service_role.

-- name: webhook_json
json_build_object('id', w.id, 'url', w.url, 'events', w.events, 'created_at', w.created_at)

-- name: insert
INSERT INTO genstudio.webhooks AS w (user_id, url, events, secret)
VALUES ((SELECT auth.uid()), %(url)s, %(events)s, %(secret)s)
RETURNING {webhook_json}::text AS webhook

-- name: count_own
SELECT count(*) AS n FROM genstudio.webhooks WHERE user_id = (SELECT auth.uid())

-- name: list
SELECT coalesce(json_agg({webhook_json} ORDER BY w.created_at, w.id), '[]')::text AS webhooks
FROM genstudio.webhooks w

-- name: get
SELECT {webhook_json}::text AS webhook FROM genstudio.webhooks w WHERE w.id = %(id)s

-- name: delete
DELETE FROM genstudio.webhooks w WHERE w.id = %(id)s RETURNING w.id

-- name: deliveries
-- Newest first, each with its attempts, oldest attempt first.
SELECT coalesce(json_agg(json_build_object(
           'id', d.message_id, 'event_id', d.event_id, 'kind', d.kind, 'state', d.state,
           'attempts', d.attempts, 'last_status_code', d.last_status_code, 'last_error', d.last_error,
           'next_attempt_at', CASE WHEN d.state = 'pending' THEN d.next_attempt_at END,
           'created_at', d.created_at, 'completed_at', d.completed_at,
           'attempt_log', (SELECT coalesce(json_agg(json_build_object(
                                'attempted_at', a.attempted_at, 'status_code', a.status_code,
                                'latency_ms', a.latency_ms, 'error', a.error) ORDER BY a.id), '[]')
                           FROM genstudio.webhook_attempts a WHERE a.delivery_id = d.id))
       ORDER BY d.created_at DESC, d.event_id DESC), '[]')::text AS deliveries
FROM (SELECT * FROM genstudio.webhook_deliveries
      WHERE webhook_id = %(id)s ORDER BY created_at DESC, event_id DESC LIMIT %(limit)s) d

-- name: lock_cursor
-- One enqueuer at a time; the others skip rather than wait.
SELECT last_event_id FROM genstudio.webhook_cursor FOR UPDATE SKIP LOCKED

-- name: enqueue
-- Turns the events after the cursor into one delivery per matching webhook: the job's owner's
-- webhooks that want the event's kind and existed when it happened. The payload is rendered
-- here, once, and sent unchanged on every attempt.
WITH batch AS (
    SELECT e.* FROM public.job_events e WHERE e.id > %(after)s ORDER BY e.id LIMIT %(limit)s
), inserted AS (
    INSERT INTO genstudio.webhook_deliveries (webhook_id, user_id, event_id, kind, message_id, payload)
    SELECT w.id, w.user_id, e.id, e.kind, 'msg_' || replace(gen_random_uuid()::text, '-', ''),
           json_build_object(
               'type', 'job.' || e.kind,
               'timestamp', e.created_at,
               'data', json_build_object('event_id', e.id, 'kind', e.kind, 'type', e.output_type,
                                         'job_id', e.job_id, 'changes', e.changes,
                                         'created_at', e.created_at, 'job', j.job::json))::text
    FROM batch e
    JOIN genstudio.webhooks w ON w.user_id = e.user_id AND e.kind = ANY (w.events) AND w.created_at <= e.created_at
    LEFT JOIN LATERAL ({job_branches}) j ON true
    ON CONFLICT (webhook_id, event_id) DO NOTHING
    RETURNING 1
)
SELECT (SELECT max(id) FROM batch) AS last_id, (SELECT count(*) FROM batch) AS events,
       (SELECT count(*) FROM inserted) AS deliveries

-- name: move_cursor
UPDATE genstudio.webhook_cursor SET last_event_id = %(last_id)s

-- name: lease_due
-- Due deliveries nobody holds (or whose holder's lease ran out: it crashed), leased to us.
UPDATE genstudio.webhook_deliveries d
SET lease_owner = %(owner)s, lease_until = clock_timestamp() + %(lease_seconds)s * interval '1 second'
FROM genstudio.webhooks w
WHERE w.id = d.webhook_id
  AND d.id IN (SELECT id FROM genstudio.webhook_deliveries
               WHERE state = 'pending' AND next_attempt_at <= clock_timestamp()
                 AND (lease_until IS NULL OR lease_until < clock_timestamp())
               ORDER BY next_attempt_at
               LIMIT %(limit)s
               FOR UPDATE SKIP LOCKED)
RETURNING d.id, d.message_id, d.payload, d.attempts, d.user_id, w.url, w.secret

-- name: record_attempt
-- Unless the webhook (and so the delivery) was deleted meanwhile.
INSERT INTO genstudio.webhook_attempts (delivery_id, user_id, status_code, latency_ms, error)
SELECT %(id)s, %(user_id)s, %(status_code)s, %(latency_ms)s, %(error)s
WHERE EXISTS (SELECT 1 FROM genstudio.webhook_deliveries WHERE id = %(id)s)

-- name: finish_attempt
-- Only while we still hold the lease: a delivery another sender took over is theirs to record.
UPDATE genstudio.webhook_deliveries
SET attempts         = attempts + 1,
    state            = %(state)s,
    next_attempt_at  = clock_timestamp() + %(retry_in_seconds)s * interval '1 second',
    completed_at     = CASE WHEN %(state)s = 'pending' THEN NULL ELSE clock_timestamp() END,
    last_status_code = %(status_code)s,
    last_error       = %(error)s,
    lease_owner      = NULL,
    lease_until      = NULL
WHERE id = %(id)s AND lease_owner = %(owner)s

-- name: next_due
SELECT min(next_attempt_at) - clock_timestamp() AS wait FROM genstudio.webhook_deliveries WHERE state = 'pending'
