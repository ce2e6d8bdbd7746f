-- genstudio migration: the event that switches a shared job back to private is readable by
-- everyone signed in, like the `deleted` event of a shared job. Until now it reached only the
-- owner, so every other open feed kept showing the job (to the next reload) although the
-- viewers may no longer read it. The event carries the job's type, id and new visibility, all
-- of which those viewers knew a moment before; the job itself is left out of the message for
-- anyone who may not read it (genstudio/events/log.py). Every other event of the job stays
-- hidden from them. genstudio's live delivery applies the same rule
-- (genstudio/events/visibility.py), and a test holds the two equal. Re-runnable.

DROP POLICY IF EXISTS job_events_select ON public.job_events;
CREATE POLICY job_events_select ON public.job_events FOR SELECT TO authenticated
    USING (
        user_id = (SELECT auth.uid())
        OR (kind = 'deleted' AND (user_id IS NULL OR changes ->> 'visibility' = 'shared'))
        -- A job that becomes private was shared until this event: visibility takes two values.
        OR (kind = 'visibility' AND changes ->> 'visibility' = 'private')
        OR CASE output_type
               WHEN 'video' THEN EXISTS (SELECT 1 FROM public.video_jobs j WHERE j.id = job_id)
               WHEN 'image' THEN EXISTS (SELECT 1 FROM public.image_jobs j WHERE j.id = job_id)
               WHEN 'text'  THEN EXISTS (SELECT 1 FROM public.text_jobs j WHERE j.id = job_id)
           END
    );
