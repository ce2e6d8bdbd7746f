-- genstudio migration: an index for each visibility stream with a workflow filter, so that a
-- page of the feed or a list reads a few pages' worth of index entries whatever the
-- statistics say and however sparse the caller's share of a table is (see
-- db/queries/jobs.sql, "Visibility streams"). The streams without a filter use indexes of
-- 0002: idx_<table>_user_feed and idx_<table>_public_feed. Re-runnable.

CREATE INDEX IF NOT EXISTS idx_video_jobs_user_workflow_feed
    ON public.video_jobs (user_id, workflow_name, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS idx_image_jobs_user_workflow_feed
    ON public.image_jobs (user_id, workflow_name, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS idx_text_jobs_user_workflow_feed
    ON public.text_jobs (user_id, workflow_name, created_at DESC, id DESC);

-- Shared and ownerless jobs of one workflow: partial, like idx_<table>_public_feed.
CREATE INDEX IF NOT EXISTS idx_video_jobs_public_workflow_feed
    ON public.video_jobs (workflow_name, created_at DESC, id DESC) WHERE visibility = 'shared' OR user_id IS NULL;
CREATE INDEX IF NOT EXISTS idx_image_jobs_public_workflow_feed
    ON public.image_jobs (workflow_name, created_at DESC, id DESC) WHERE visibility = 'shared' OR user_id IS NULL;
CREATE INDEX IF NOT EXISTS idx_text_jobs_public_workflow_feed
    ON public.text_jobs (workflow_name, created_at DESC, id DESC) WHERE visibility = 'shared' OR user_id IS NULL;
