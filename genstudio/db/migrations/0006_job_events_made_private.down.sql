-- Undo 0006: the policy of 0004_job_events, under which only the owner reads the event that
-- made their shared job private. No data changes.

DROP POLICY IF EXISTS job_events_select ON public.job_events;
CREATE POLICY job_events_select ON public.job_events FOR SELECT TO authenticated
    USING (
        user_id = (SELECT auth.uid())
        OR (kind = 'deleted' AND (user_id IS NULL OR changes ->> 'visibility' = 'shared'))
        OR CASE output_type
               WHEN 'video' THEN EXISTS (SELECT 1 FROM public.video_jobs j WHERE j.id = job_id)
               WHEN 'image' THEN EXISTS (SELECT 1 FROM public.image_jobs j WHERE j.id = job_id)
               WHEN 'text'  THEN EXISTS (SELECT 1 FROM public.text_jobs j WHERE j.id = job_id)
           END
    );
