-- The guide's Step 1 (`001_create_output_type_tables.sql`), rebuilt from
-- shared/schemas/guide-target-tables.md: what a studio that followed the guide has.
-- (The `CREATE EXTENSION "uuid-ossp"` line is left out: see supabase_like_auth.sql.)

CREATE TABLE IF NOT EXISTS video_jobs (
    id UUID PRIMARY KEY DEFAULT uuid_generate_v4(),
    user_id UUID REFERENCES auth.users(id) ON DELETE CASCADE,
    workflow_name TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'processing', 'completed', 'failed')),
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    started_at TIMESTAMPTZ,
    completed_at TIMESTAMPTZ,
    processing_time_seconds INTEGER,
    input_image_urls TEXT[],
    input_audio_urls TEXT[],
    input_video_urls TEXT[],
    output_video_urls TEXT[],
    width INTEGER,
    height INTEGER,
    fps INTEGER,
    duration_seconds FLOAT,
    parameters JSONB DEFAULT '{}',
    comfy_job_id TEXT UNIQUE,
    comfy_url TEXT NOT NULL,
    comfyui_output_filename TEXT,
    comfyui_output_subfolder TEXT,
    comfyui_output_type TEXT DEFAULT 'output',
    error_message TEXT,
    updated_at TIMESTAMPTZ DEFAULT NOW()
);

CREATE TABLE IF NOT EXISTS image_jobs (
    id UUID PRIMARY KEY DEFAULT uuid_generate_v4(),
    user_id UUID REFERENCES auth.users(id) ON DELETE CASCADE,
    workflow_name TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'processing', 'completed', 'failed')),
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    started_at TIMESTAMPTZ,
    completed_at TIMESTAMPTZ,
    processing_time_seconds INTEGER,
    input_image_urls TEXT[],
    prompt TEXT,
    output_image_urls TEXT[],
    width INTEGER,
    height INTEGER,
    parameters JSONB DEFAULT '{}',
    comfy_job_id TEXT UNIQUE,
    comfy_url TEXT NOT NULL,
    comfyui_output_filename TEXT,
    comfyui_output_subfolder TEXT,
    comfyui_output_type TEXT DEFAULT 'output',
    error_message TEXT,
    model_used TEXT,
    user_ip TEXT,
    updated_at TIMESTAMPTZ DEFAULT NOW()
);

CREATE TABLE IF NOT EXISTS text_jobs (
    id UUID PRIMARY KEY DEFAULT uuid_generate_v4(),
    user_id UUID REFERENCES auth.users(id) ON DELETE CASCADE,
    workflow_name TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'processing', 'completed', 'failed')),
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    started_at TIMESTAMPTZ,
    completed_at TIMESTAMPTZ,
    processing_time_seconds INTEGER,
    input_image_urls TEXT[],
    input_text TEXT,
    output_text TEXT,
    output_data JSONB,
    parameters JSONB DEFAULT '{}',
    comfy_job_id TEXT UNIQUE,
    comfy_url TEXT,
    error_message TEXT,
    model_used TEXT,
    updated_at TIMESTAMPTZ DEFAULT NOW()
);

CREATE INDEX IF NOT EXISTS idx_video_jobs_user_id ON video_jobs(user_id);
CREATE INDEX IF NOT EXISTS idx_video_jobs_workflow_name ON video_jobs(workflow_name);
CREATE INDEX IF NOT EXISTS idx_video_jobs_status ON video_jobs(status);
CREATE INDEX IF NOT EXISTS idx_video_jobs_created_at ON video_jobs(created_at DESC);
CREATE INDEX IF NOT EXISTS idx_video_jobs_comfy_job_id ON video_jobs(comfy_job_id);
CREATE INDEX IF NOT EXISTS idx_image_jobs_user_id ON image_jobs(user_id);
CREATE INDEX IF NOT EXISTS idx_image_jobs_workflow_name ON image_jobs(workflow_name);
CREATE INDEX IF NOT EXISTS idx_image_jobs_status ON image_jobs(status);
CREATE INDEX IF NOT EXISTS idx_image_jobs_created_at ON image_jobs(created_at DESC);
CREATE INDEX IF NOT EXISTS idx_image_jobs_comfy_job_id ON image_jobs(comfy_job_id);
CREATE INDEX IF NOT EXISTS idx_text_jobs_user_id ON text_jobs(user_id);
CREATE INDEX IF NOT EXISTS idx_text_jobs_workflow_name ON text_jobs(workflow_name);
CREATE INDEX IF NOT EXISTS idx_text_jobs_status ON text_jobs(status);
CREATE INDEX IF NOT EXISTS idx_text_jobs_created_at ON text_jobs(created_at DESC);

CREATE OR REPLACE FUNCTION update_video_jobs_updated_at() RETURNS TRIGGER AS $$
BEGIN NEW.updated_at = NOW(); RETURN NEW; END; $$ LANGUAGE plpgsql;
CREATE OR REPLACE FUNCTION update_image_jobs_updated_at() RETURNS TRIGGER AS $$
BEGIN NEW.updated_at = NOW(); RETURN NEW; END; $$ LANGUAGE plpgsql;
CREATE OR REPLACE FUNCTION update_text_jobs_updated_at() RETURNS TRIGGER AS $$
BEGIN NEW.updated_at = NOW(); RETURN NEW; END; $$ LANGUAGE plpgsql;

CREATE TRIGGER video_jobs_updated_at_trigger BEFORE UPDATE ON video_jobs
    FOR EACH ROW EXECUTE FUNCTION update_video_jobs_updated_at();
CREATE TRIGGER image_jobs_updated_at_trigger BEFORE UPDATE ON image_jobs
    FOR EACH ROW EXECUTE FUNCTION update_image_jobs_updated_at();
CREATE TRIGGER text_jobs_updated_at_trigger BEFORE UPDATE ON text_jobs
    FOR EACH ROW EXECUTE FUNCTION update_text_jobs_updated_at();

ALTER TABLE video_jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE image_jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE text_jobs ENABLE ROW LEVEL SECURITY;

CREATE POLICY "Users can view their own video jobs" ON video_jobs FOR SELECT
    USING (auth.uid() = user_id OR user_id IS NULL);
CREATE POLICY "Users can insert their own video jobs" ON video_jobs FOR INSERT
    WITH CHECK (auth.uid() = user_id OR user_id IS NULL);
CREATE POLICY "Users can update their own video jobs" ON video_jobs FOR UPDATE
    USING (auth.uid() = user_id OR user_id IS NULL);
CREATE POLICY "Users can delete their own video jobs" ON video_jobs FOR DELETE
    USING (auth.uid() = user_id);
CREATE POLICY "Users can view their own image jobs" ON image_jobs FOR SELECT
    USING (auth.uid() = user_id OR user_id IS NULL);
CREATE POLICY "Users can insert their own image jobs" ON image_jobs FOR INSERT
    WITH CHECK (auth.uid() = user_id OR user_id IS NULL);
CREATE POLICY "Users can update their own image jobs" ON image_jobs FOR UPDATE
    USING (auth.uid() = user_id OR user_id IS NULL);
CREATE POLICY "Users can delete their own image jobs" ON image_jobs FOR DELETE
    USING (auth.uid() = user_id);
CREATE POLICY "Users can view their own text jobs" ON text_jobs FOR SELECT
    USING (auth.uid() = user_id OR user_id IS NULL);
CREATE POLICY "Users can insert their own text jobs" ON text_jobs FOR INSERT
    WITH CHECK (auth.uid() = user_id OR user_id IS NULL);
CREATE POLICY "Users can update their own text jobs" ON text_jobs FOR UPDATE
    USING (auth.uid() = user_id OR user_id IS NULL);
CREATE POLICY "Users can delete their own text jobs" ON text_jobs FOR DELETE
    USING (auth.uid() = user_id);

COMMENT ON TABLE video_jobs IS 'Video generation jobs (lipsync-one, lipsync-multi, video-lipsync, wan-i2v)';
COMMENT ON TABLE image_jobs IS 'Image generation jobs (img2img, style-transfer, image-edit)';
COMMENT ON TABLE text_jobs IS 'Text generation jobs (character-caption)';
COMMENT ON COLUMN video_jobs.workflow_name IS 'Workflow identifier';
COMMENT ON COLUMN video_jobs.parameters IS 'Workflow-specific parameters';
