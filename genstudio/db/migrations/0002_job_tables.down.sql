-- Undo 0002: the guide's Step 7. Refuses while the tables hold jobs, unless the caller says
-- it accepts the loss (`genstudio db downgrade --force` sets genstudio.allow_data_loss).

DO $guard$
BEGIN
    IF coalesce(current_setting('genstudio.allow_data_loss', true), '') <> 'on'
       AND (    EXISTS (SELECT 1 FROM public.video_jobs)
             OR EXISTS (SELECT 1 FROM public.image_jobs)
             OR EXISTS (SELECT 1 FROM public.text_jobs)) THEN
        RAISE EXCEPTION 'the job tables hold jobs; downgrading below 0002 would delete them'
            USING HINT = 'export them first, or pass --force to accept the loss';
    END IF;
END
$guard$;

DROP TABLE IF EXISTS public.video_jobs CASCADE;
DROP TABLE IF EXISTS public.image_jobs CASCADE;
DROP TABLE IF EXISTS public.text_jobs CASCADE;

DROP FUNCTION IF EXISTS public.update_video_jobs_updated_at() CASCADE;
DROP FUNCTION IF EXISTS public.update_image_jobs_updated_at() CASCADE;
DROP FUNCTION IF EXISTS public.update_text_jobs_updated_at() CASCADE;
