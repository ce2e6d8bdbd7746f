-- The guide's Step 2 data migration, verbatim (MIGRATION_GUIDE.md): the benchmark's baseline.
-- ============================================================================
-- Data Migration: Copy from old tables to new tables
-- ============================================================================

-- Migrate from multitalk_jobs → video_jobs
-- (Assuming all multitalk_jobs are video workflows)
INSERT INTO video_jobs (
  user_id,
  workflow_name,
  status,
  created_at,
  started_at,
  completed_at,
  processing_time_seconds,
  input_image_urls,
  input_audio_urls,
  output_video_urls,
  width,
  height,
  parameters,
  comfy_job_id,
  comfy_url,
  comfyui_output_filename,
  comfyui_output_subfolder,
  comfyui_output_type,
  error_message,
  updated_at
)
SELECT
  NULL as user_id,  -- Old table didn't have user_id
  'lipsync-one' as workflow_name,  -- Default, update manually if needed
  CASE
    WHEN status = 'submitted' THEN 'pending'
    WHEN status = 'processing' THEN 'processing'
    WHEN status = 'completed' THEN 'completed'
    WHEN status = 'error' THEN 'failed'
    ELSE 'pending'
  END as status,
  timestamp_submitted as created_at,
  NULL as started_at,  -- Not tracked in old table
  timestamp_completed as completed_at,
  EXTRACT(EPOCH FROM (timestamp_completed - timestamp_submitted))::INTEGER as processing_time_seconds,
  ARRAY[image_filename]::TEXT[] as input_image_urls,  -- Convert to array
  ARRAY[audio_filename]::TEXT[] as input_audio_urls,  -- Convert to array
  ARRAY[video_url]::TEXT[] as output_video_urls,  -- Convert to array
  width,
  height,
  jsonb_build_object('trim_to_audio', trim_to_audio) as parameters,
  job_id as comfy_job_id,
  comfy_url,
  filename as comfyui_output_filename,
  subfolder as comfyui_output_subfolder,
  'output' as comfyui_output_type,
  error_message,
  updated_at
FROM multitalk_jobs
WHERE job_id IS NOT NULL;

-- Migrate from style_transfers → image_jobs
INSERT INTO image_jobs (
  user_id,
  workflow_name,
  status,
  created_at,
  completed_at,
  processing_time_seconds,
  input_image_urls,
  prompt,
  output_image_urls,
  parameters,
  comfy_job_id,
  comfy_url,
  error_message,
  model_used,
  user_ip,
  updated_at
)
SELECT
  NULL as user_id,  -- Map from user_ip if you have user mapping
  'style-transfer' as workflow_name,
  CASE
    WHEN status = 'pending' THEN 'pending'
    WHEN status = 'processing' THEN 'processing'
    WHEN status = 'completed' THEN 'completed'
    WHEN status = 'failed' THEN 'failed'
    ELSE 'pending'
  END as status,
  created_at,
  updated_at as completed_at,
  processing_time_seconds,
  ARRAY[source_image_url, style_image_url]::TEXT[] as input_image_urls,
  prompt,
  ARRAY[result_image_url]::TEXT[] as output_image_urls,
  '{}'::JSONB as parameters,
  comfyui_prompt_id as comfy_job_id,
  'https://comfy.vapai.studio' as comfy_url,  -- Update with actual URL
  error_message,
  model_used,
  user_ip,
  updated_at
FROM style_transfers;

-- Migrate from edited_images → image_jobs
INSERT INTO image_jobs (
  user_id,
  workflow_name,
  status,
  created_at,
  processing_time_seconds,
  input_image_urls,
  prompt,
  output_image_urls,
  comfy_url,
  model_used,
  user_ip
)
SELECT
  NULL as user_id,
  'image-edit' as workflow_name,
  CASE
    WHEN status = 'pending' THEN 'pending'
    WHEN status = 'processing' THEN 'processing'
    WHEN status = 'completed' THEN 'completed'
    WHEN status = 'failed' THEN 'failed'
    ELSE 'pending'
  END as status,
  created_at,
  processing_time_seconds,
  ARRAY[source_image_url]::TEXT[] as input_image_urls,
  prompt,
  ARRAY[result_image_url]::TEXT[] as output_image_urls,
  'https://comfy.vapai.studio' as comfy_url,  -- Update with actual URL
  model_used,
  user_ip
FROM edited_images;

-- Verify migration counts
SELECT
  (SELECT COUNT(*) FROM video_jobs) as video_jobs_count,
  (SELECT COUNT(*) FROM image_jobs) as image_jobs_count,
  (SELECT COUNT(*) FROM multitalk_jobs) as old_multitalk_count,
  (SELECT COUNT(*) FROM style_transfers) as old_style_transfers_count,
  (SELECT COUNT(*) FROM edited_images) as old_edited_images_count;
