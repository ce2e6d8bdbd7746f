-- Undo the job event log and webhooks. The events are a log of changes, not the jobs
-- themselves, so they go without a guard.

DROP TRIGGER IF EXISTS video_jobs_job_events_trigger ON public.video_jobs;
DROP TRIGGER IF EXISTS image_jobs_job_events_trigger ON public.image_jobs;
DROP TRIGGER IF EXISTS text_jobs_job_events_trigger ON public.text_jobs;
DROP FUNCTION IF EXISTS genstudio.record_job_event();
DROP FUNCTION IF EXISTS genstudio.append_job_event(text, uuid, uuid, text, jsonb);
DROP FUNCTION IF EXISTS genstudio.notify_job_event(bigint);

DROP TABLE IF EXISTS genstudio.webhook_cursor;
DROP TABLE IF EXISTS genstudio.webhook_attempts;
DROP TABLE IF EXISTS genstudio.webhook_deliveries;
DROP TABLE IF EXISTS genstudio.webhooks;
DROP TABLE IF EXISTS genstudio.job_events_horizon;
DROP TABLE IF EXISTS public.job_events;
