"""The legacy feature tables, built exactly as `shared/schemas/legacy-tables.md` describes them.

Column names, types, NOT NULLs, defaults, the multitalk `updated_at` trigger and the
datasets → data cascade are the real ones, so the migration meets what studios actually have.
`insert_awkward_rows` adds one row per trap a faithful migration must survive; `insert_bulk`
fills the tables with a realistic mix by `generate_series` (used by the kill test and the
benchmark).
"""

from __future__ import annotations

import base64
import json
import time

import psycopg

MULTITALK_DDL = """
CREATE TABLE public.multitalk_jobs (
    job_id              varchar PRIMARY KEY,
    status              varchar NOT NULL,
    timestamp_submitted timestamptz NOT NULL DEFAULT now(),
    timestamp_completed timestamptz,
    filename            varchar,
    subfolder           varchar,
    image_filename      varchar,
    audio_filename      varchar,
    width               integer NOT NULL,
    height              integer NOT NULL,
    trim_to_audio       boolean NOT NULL DEFAULT false,
    comfy_url           varchar NOT NULL,
    error_message       text,
    video_url           varchar,
    {project_id}
    created_at          timestamptz DEFAULT now(),
    updated_at          timestamptz DEFAULT now()
);
CREATE FUNCTION public.update_multitalk_jobs_updated_at() RETURNS trigger
    LANGUAGE plpgsql AS $$ BEGIN NEW.updated_at = now(); RETURN NEW; END $$;
CREATE TRIGGER multitalk_jobs_updated_at BEFORE UPDATE ON public.multitalk_jobs
    FOR EACH ROW EXECUTE FUNCTION public.update_multitalk_jobs_updated_at();
"""

STYLE_TRANSFERS_DDL = """
CREATE TABLE public.style_transfers (
    id                      uuid PRIMARY KEY,
    created_at              timestamptz,
    source_image_url        text NOT NULL,
    style_image_url         text NOT NULL,
    prompt                  text NOT NULL,
    result_image_url        text,
    workflow_name           text DEFAULT 'StyleTransfer',
    model_used              text,
    processing_time_seconds integer,
    user_ip                 text,
    status                  text,
    comfyui_prompt_id       text,
    error_message           text,
    updated_at              timestamptz
);
"""

EDITED_IMAGES_DDL = """
CREATE TABLE public.edited_images (
    id                      uuid PRIMARY KEY,
    created_at              timestamptz,
    source_image_url        text NOT NULL,
    prompt                  text NOT NULL,
    result_image_url        text,
    workflow_name           text DEFAULT 'image-edit',
    model_used              text,
    processing_time_seconds integer,
    user_ip                 text,
    status                  text
);
"""

DATASETS_DDL = """
CREATE TABLE public.datasets (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name              text NOT NULL,
    character_trigger text NOT NULL,
    settings          jsonb NOT NULL,
    created_at        timestamptz DEFAULT now(),
    updated_at        timestamptz DEFAULT now()
);
CREATE TABLE public.data (
    id         uuid PRIMARY KEY,
    dataset_id uuid NOT NULL REFERENCES public.datasets (id) ON DELETE CASCADE,
    image_url  text NOT NULL,
    image_name text NOT NULL,
    caption    text,
    created_at timestamptz
);
"""

ALL_SOURCES = ("multitalk_jobs", "style_transfers", "edited_images", "datasets")

# The caption settings a dataset carries: the named ones and ~28 boolean flags.
CAPTION_SETTINGS = {
    "caption_type": "Descriptive",
    "caption_length": "long",
    "max_new_tokens": 300,
    "temperature": 0.6,
    "top_p": 0.9,
    "top_k": 0,
    "user_prompt": "",
    **{f"flag_{i:02d}": i % 3 == 0 for i in range(28)},
}


def create_legacy_tables(conn: psycopg.Connection, sources=ALL_SOURCES, *, project_id: bool = True) -> None:
    ddl = {
        "multitalk_jobs": MULTITALK_DDL.format(project_id="project_id varchar," if project_id else ""),
        "style_transfers": STYLE_TRANSFERS_DDL,
        "edited_images": EDITED_IMAGES_DDL,
        "datasets": DATASETS_DDL,
    }
    for source in sources:
        conn.execute(ddl[source])


def signed_url(path: str, expires_in_seconds: int) -> str:
    """A Supabase-style signed storage URL whose JWT expires `expires_in_seconds` from now."""
    def b64(obj) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    token = ".".join([b64({"alg": "HS256", "typ": "JWT"}),
                      b64({"url": path, "iat": int(time.time()) - 60, "exp": int(time.time()) + expires_in_seconds}),
                      "c2lnbmF0dXJl"])
    return f"https://abc.supabase.co/storage/v1/object/sign/{path}?token={token}"


# Keys of the awkward rows, so tests can name them.
MT_DONE = "p-0001-video-done"
MT_SUBMITTED = "p-0002-submitted"
MT_ERROR = "p-0003-error"
MT_IMG2IMG = "p-0004-img2img"
MT_IMG2IMG_URL_ONLY = "p-0005-img2img-by-url"
MT_UNKNOWN = "p-0006-unknown-status"
MT_DONE_NO_OUTPUT = "p-0007-completed-no-output"
MT_EXPIRED = "p-0008-expired-url"
MT_COLLIDES = "p-0009-collides-native"
MT_TEMP = "p-0010-temp-output"

ST_DONE = "10000000-0000-0000-0000-000000000001"
ST_PENDING = "10000000-0000-0000-0000-000000000002"
ST_FAILED = "10000000-0000-0000-0000-000000000003"
ST_DUP_A = "10000000-0000-0000-0000-000000000004"
ST_DUP_B = "10000000-0000-0000-0000-000000000005"
ST_NULL_STATUS = "10000000-0000-0000-0000-000000000006"
ST_EMPTY_RESULT = "10000000-0000-0000-0000-000000000007"

EI_DONE = "20000000-0000-0000-0000-000000000001"
EI_ERROR = "20000000-0000-0000-0000-000000000002"
EI_PENDING = "20000000-0000-0000-0000-000000000003"

DS_FULL = "30000000-0000-0000-0000-000000000001"
DS_EMPTY = "30000000-0000-0000-0000-000000000002"
DATA_1 = "31000000-0000-0000-0000-000000000001"
DATA_2 = "31000000-0000-0000-0000-000000000002"
DATA_UNFINISHED = "31000000-0000-0000-0000-000000000003"

NATIVE_COMFY_ID = "p-0009-collides-native"
COMFY = "http://comfy-a:8188"


def insert_awkward_rows(conn: psycopg.Connection) -> None:
    """One row per trap; assumes all four sources exist (with project_id)."""
    expired = signed_url("videos/p8.mp4", -3600)
    conn.execute(
        """
        INSERT INTO multitalk_jobs (job_id, status, timestamp_submitted, timestamp_completed, filename,
            subfolder, image_filename, audio_filename, width, height, trim_to_audio, comfy_url,
            error_message, video_url, project_id)
        VALUES
         (%(done)s, 'completed', '2024-05-01 10:00+00', '2024-05-01 10:02:30+00', 'lipsync_00001.mp4',
          'video', 'face.png', 'voice.wav', 512, 768, true, %(c)s, NULL,
          'https://cdn.example.com/v/lipsync_00001.mp4', 'proj-7'),
         (%(sub)s, 'submitted', '2024-05-02 10:00+00', NULL, NULL, NULL, 'face2.png', 'v2.wav', 512, 512,
          false, %(c)s, NULL, NULL, NULL),
         (%(err)s, 'error', '2024-05-03 10:00+00', '2024-05-03 10:00:05+00', NULL, NULL, 'f3.png', NULL,
          512, 512, false, %(c)s, 'CUDA out of memory', NULL, NULL),
         (%(img)s, 'completed', '2024-05-04 10:00+00', '2024-05-04 10:00:20+00', 'ComfyUI_00042_.png',
          '', 'in.png', NULL, 1024, 1024, false, %(c)s, NULL, 'https://cdn.example.com/i/ComfyUI_00042_.png', NULL),
         (%(img_url)s, 'completed', '2024-05-05 10:00+00', '2024-05-05 10:00:20+00', NULL, NULL, 'in2.png',
          NULL, 1024, 1024, false, %(c)s, NULL, 'https://cdn.example.com/i/x.jpg?v=1', NULL),
         (%(unk)s, 'queued', '2024-05-06 10:00+00', NULL, NULL, NULL, 'f6.png', 'a6.wav', 512, 512, false,
          %(c)s, NULL, NULL, NULL),
         (%(noout)s, 'completed', '2024-05-07 10:00+00', '2024-05-07 10:01+00', NULL, NULL, 'f7.png',
          'a7.wav', 512, 512, false, %(c)s, NULL, NULL, NULL),
         (%(exp)s, 'completed', '2024-05-08 10:00+00', '2024-05-08 10:01+00', 'p8.mp4', 'video', 'f8.png',
          'a8.wav', 512, 512, false, %(c)s, NULL, %(expired)s, NULL),
         (%(coll)s, 'processing', '2024-05-09 10:00+00', NULL, NULL, NULL, 'f9.png', 'a9.wav', 512, 512,
          false, %(c)s, NULL, NULL, NULL),
         (%(temp)s, 'completed', '2024-05-10 10:00+00', '2024-05-10 10:00:09+00', 'ComfyUI_temp_abcd_00001_.mp4',
          '', 'f10.png', 'a10.wav', 512, 512, false, %(c)s, NULL, NULL, NULL)
        """,
        dict(done=MT_DONE, sub=MT_SUBMITTED, err=MT_ERROR, img=MT_IMG2IMG, img_url=MT_IMG2IMG_URL_ONLY,
             unk=MT_UNKNOWN, noout=MT_DONE_NO_OUTPUT, exp=MT_EXPIRED, coll=MT_COLLIDES, temp=MT_TEMP,
             c=COMFY, expired=expired),
    )
    expiring = signed_url("styles/r1.png", 3600)
    conn.execute(
        """
        INSERT INTO style_transfers (id, created_at, source_image_url, style_image_url, prompt,
            result_image_url, workflow_name, model_used, processing_time_seconds, user_ip, status,
            comfyui_prompt_id, error_message, updated_at)
        VALUES
         (%(done)s, '2024-06-01 09:00+00', 'https://s/src1.png', 'https://s/sty1.png', 'oil painting',
          %(expiring)s, 'StyleTransfer', 'sdxl', 42, '10.0.0.1', 'completed', 'st-prompt-1', NULL,
          '2024-06-01 09:00:42+00'),
         (%(pend)s, '2024-06-02 09:00+00', 'https://s/src2.png', 'https://s/sty2.png', 'ink', NULL,
          'StyleTransfer', NULL, NULL, '10.0.0.2', 'pending', NULL, NULL, '2024-06-02 09:00:01+00'),
         (%(fail)s, '2024-06-03 09:00+00', 'https://s/src3.png', 'https://s/sty3.png', 'neon', NULL,
          'StyleTransferV2', 'sdxl', 3, '10.0.0.1', 'failed', 'st-prompt-3', 'bad style image',
          '2024-06-03 09:00:03+00'),
         (%(dup_a)s, '2024-06-04 09:00+00', 'https://s/src4.png', 'https://s/sty4.png', 'dup a',
          'https://s/r4.png', 'StyleTransfer', 'sdxl', 10, NULL, 'completed', 'st-dup', NULL,
          '2024-06-04 09:00:10+00'),
         (%(dup_b)s, '2024-06-05 09:00+00', 'https://s/src5.png', 'https://s/sty5.png', 'dup b',
          'https://s/r5.png', 'StyleTransfer', 'sdxl', 11, NULL, 'completed', 'st-dup', NULL,
          '2024-06-05 09:00:11+00'),
         (%(nul)s, NULL, 'https://s/src6.png', 'https://s/sty6.png', 'no status', NULL, 'StyleTransfer',
          NULL, NULL, NULL, NULL, NULL, NULL, NULL),
         (%(empty)s, '2024-06-07 09:00+00', 'https://s/src7.png', 'https://s/sty7.png', 'empty result', '',
          'StyleTransfer', 'sdxl', 5, '10.0.0.3', 'completed', 'st-prompt-7', NULL, '2024-06-07 09:00:05+00')
        """,
        dict(done=ST_DONE, pend=ST_PENDING, fail=ST_FAILED, dup_a=ST_DUP_A, dup_b=ST_DUP_B,
             nul=ST_NULL_STATUS, empty=ST_EMPTY_RESULT, expiring=expiring),
    )
    conn.execute(
        """
        INSERT INTO edited_images (id, created_at, source_image_url, prompt, result_image_url,
            workflow_name, model_used, processing_time_seconds, user_ip, status)
        VALUES
         (%(done)s, '2024-07-01 08:00+00', 'https://e/s1.png', 'make it blue', 'https://e/r1.png',
          'image-edit', 'gpt-image-1', 12, '10.0.0.1', 'completed'),
         (%(err)s, '2024-07-02 08:00+00', 'https://e/s2.png', 'remove cat', NULL, 'image-edit',
          'Error: content policy violation', 2, '10.0.0.9', 'failed'),
         (%(pend)s, '2024-07-03 08:00+00', '', 'empty source', NULL, 'image-edit', NULL, NULL, NULL, 'pending')
        """,
        dict(done=EI_DONE, err=EI_ERROR, pend=EI_PENDING),
    )
    conn.execute(
        "INSERT INTO datasets (id, name, character_trigger, settings, created_at, updated_at) VALUES "
        "(%s, 'Alice', 'ALICE_TRG', %s, '2024-08-01 07:00+00', '2024-08-01 07:30+00'),"
        "(%s, 'Empty set', 'EMPTY_TRG', %s, '2024-08-02 07:00+00', '2024-08-02 07:00+00')",
        (DS_FULL, json.dumps(CAPTION_SETTINGS), DS_EMPTY, json.dumps(CAPTION_SETTINGS)),
    )
    conn.execute(
        "INSERT INTO data (id, dataset_id, image_url, image_name, caption, created_at) VALUES "
        "(%s, %s, 'https://d/a1.png', 'a1.png', 'ALICE_TRG smiling', '2024-08-01 07:01+00'),"
        "(%s, %s, 'https://d/a2.png', 'a2.png', NULL, '2024-08-01 07:02+00'),"
        "(%s, %s, '', 'a3.png', NULL, '2024-08-01 07:03+00')",
        (DATA_1, DS_FULL, DATA_2, DS_FULL, DATA_UNFINISHED, DS_FULL),
    )


def insert_native_job(conn: psycopg.Connection, table: str = "video_jobs", comfy_job_id: str = NATIVE_COMFY_ID) -> str:
    """A job written by genstudio itself (not migrated); returns its id."""
    return str(conn.execute(
        f"INSERT INTO public.{table} (workflow_name, status, comfy_url, comfy_job_id) "
        "VALUES ('lipsync-one', 'processing', 'http://native:8188', %s) RETURNING id",
        (comfy_job_id,),
    ).fetchone()[0])


# The mix of the benchmark and the kill test, by share of rows (`data` rows count too).
BULK_MIX_SQL = """
INSERT INTO multitalk_jobs (job_id, status, timestamp_submitted, timestamp_completed, filename, subfolder,
    image_filename, audio_filename, width, height, trim_to_audio, comfy_url, error_message, video_url, project_id)
SELECT 'bulk-mt-' || lpad(g::text, 9, '0'),
       (ARRAY['completed','completed','completed','completed','completed','completed','error','submitted','processing','completed'])[1 + g % 10],
       timestamptz '2024-01-01' + g * interval '7 seconds',
       CASE WHEN g % 10 IN (7, 8) THEN NULL ELSE timestamptz '2024-01-01' + g * interval '7 seconds' + interval '95 seconds' END,
       CASE WHEN g % 10 IN (6, 7, 8) THEN NULL WHEN g % 8 = 0 THEN 'ComfyUI_' || g || '_.png' ELSE 'lipsync_' || g || '.mp4' END,
       CASE WHEN g % 10 IN (6, 7, 8) THEN NULL ELSE 'video' END,
       'face_' || g || '.png',
       CASE WHEN g % 8 = 0 THEN NULL ELSE 'voice_' || g || '.wav' END,
       512, 768, g % 2 = 0, 'http://comfy-' || (g % 3) || ':8188',
       CASE WHEN g % 10 = 6 THEN 'node error ' || g END,
       CASE WHEN g % 10 IN (6, 7, 8) THEN NULL WHEN g % 8 = 0 THEN 'https://cdn.example.com/i/' || g || '.png'
            ELSE 'https://cdn.example.com/v/' || g || '.mp4' END,
       CASE WHEN g % 5 = 0 THEN 'proj-' || (g % 97) END
FROM generate_series(1, {multitalk}) AS g;

INSERT INTO style_transfers (id, created_at, source_image_url, style_image_url, prompt, result_image_url,
    workflow_name, model_used, processing_time_seconds, user_ip, status, comfyui_prompt_id, error_message, updated_at)
SELECT ('10000000-0000-0000-0000-' || lpad(to_hex(g), 12, '0'))::uuid,
       timestamptz '2024-02-01' + g * interval '11 seconds',
       'https://s/src' || g || '.png', 'https://s/sty' || g || '.png', 'prompt ' || g,
       CASE WHEN g % 10 < 8 THEN 'https://s/r' || g || '.png' END,
       'StyleTransfer', 'sdxl', 5 + g % 40, '10.0.' || (g % 200) || '.' || (g % 250),
       (ARRAY['completed','completed','completed','completed','completed','completed','completed','completed','failed','pending'])[1 + g % 10],
       'st-' || g, CASE WHEN g % 10 = 8 THEN 'failed ' || g END,
       timestamptz '2024-02-01' + g * interval '11 seconds' + interval '30 seconds'
FROM generate_series(1, {style_transfers}) AS g;

INSERT INTO edited_images (id, created_at, source_image_url, prompt, result_image_url, workflow_name,
    model_used, processing_time_seconds, user_ip, status)
SELECT ('20000000-0000-0000-0000-' || lpad(to_hex(g), 12, '0'))::uuid,
       timestamptz '2024-03-01' + g * interval '13 seconds',
       'https://e/s' || g || '.png', 'edit ' || g,
       CASE WHEN g % 10 < 8 THEN 'https://e/r' || g || '.png' END,
       'image-edit',
       CASE WHEN g % 10 = 8 THEN 'Error: refused ' || g ELSE 'gpt-image-1' END,
       1 + g % 20, '10.1.' || (g % 200) || '.' || (g % 250),
       (ARRAY['completed','completed','completed','completed','completed','completed','completed','completed','failed','pending'])[1 + g % 10]
FROM generate_series(1, {edited_images}) AS g;

INSERT INTO datasets (id, name, character_trigger, settings, created_at, updated_at)
SELECT ('30000000-0000-0000-0000-' || lpad(to_hex(g), 12, '0'))::uuid, 'set ' || g, 'TRG' || g,
       {settings}::jsonb, timestamptz '2024-04-01' + g * interval '1 hour',
       timestamptz '2024-04-01' + g * interval '1 hour' + interval '20 minutes'
FROM generate_series(1, {datasets}) AS g;

INSERT INTO data (id, dataset_id, image_url, image_name, caption, created_at)
SELECT ('31000000-0000-0000-0000-' || lpad(to_hex(g), 12, '0'))::uuid,
       ('30000000-0000-0000-0000-' || lpad(to_hex(1 + g % {datasets}), 12, '0'))::uuid,
       CASE WHEN g % 50 = 0 THEN '' ELSE 'https://d/' || g || '.png' END, g || '.png',
       CASE WHEN g % 7 <> 0 THEN 'TRG caption ' || g END,
       timestamptz '2024-04-01' + g * interval '1 minute'
FROM generate_series(1, {data}) AS g;
"""


def bulk_counts(total: int) -> dict[str, int]:
    """A realistic split of `total` legacy rows: mostly video, then edits and style transfers,
    a few caption datasets with 20 images each."""
    datasets = max(1, total // 200)
    data = datasets * 20 // 2
    multitalk = total * 55 // 100
    style = total * 20 // 100
    edited = total - multitalk - style - datasets - data
    return {"multitalk": multitalk, "style_transfers": style, "edited_images": max(edited, 0),
            "datasets": datasets, "data": data}


def insert_bulk(conn: psycopg.Connection, total: int) -> dict[str, int]:
    counts = bulk_counts(total)
    settings = json.dumps(CAPTION_SETTINGS).replace("'", "''")
    conn.execute(BULK_MIX_SQL.format(**counts, settings=f"'{settings}'"))
    return counts
