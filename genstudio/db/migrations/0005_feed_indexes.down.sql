-- Undo the feed indexes migration; no data is lost.

DROP INDEX IF EXISTS public.idx_video_jobs_user_workflow_feed;
DROP INDEX IF EXISTS public.idx_image_jobs_user_workflow_feed;
DROP INDEX IF EXISTS public.idx_text_jobs_user_workflow_feed;
DROP INDEX IF EXISTS public.idx_video_jobs_public_workflow_feed;
DROP INDEX IF EXISTS public.idx_image_jobs_public_workflow_feed;
DROP INDEX IF EXISTS public.idx_text_jobs_public_workflow_feed;
