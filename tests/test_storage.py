"""Local storage: the key layout, safe names, store-once, byte ranges; media told by content;
thumbnails for images and video poster frames."""

from __future__ import annotations

import asyncio
import io
import uuid

import av
import pytest
from PIL import Image

from genstudio.storage import InvalidKey, LocalStorage, job_file_key, job_id_of_key, safe_filename, thumbnail_key, upload_key
from genstudio.storage.media import UnsupportedMedia, inspect_media, thumbnail

JOB = uuid.UUID("6f1c1b7e-9a55-4c2e-8d0a-0d7c1c7f2a10")


def png_bytes(width=64, height=48, mode="RGB", colour=(200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new(mode, (width, height), colour).save(out, "PNG")
    return out.getvalue()


def mp4_bytes(width=128, height=96, frames=12) -> bytes:
    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream("h264", rate=12)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_image(Image.new("RGB", (width, height), (i * 20, 0, 0)))
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


@pytest.mark.parametrize("given, safe", [
    ("test_00001_.png", "test_00001_.png"),
    ("../../etc/passwd", "passwd"),
    ("..\\..\\windows\\win.ini", "win.ini"),
    ("/abs/path/out.mp4", "out.mp4"),
    ("...", "file"),
    ("", "file"),
    (".hidden", "hidden"),
    ("na me;rm -rf $(x).png", "na_me_rm_-rf_x_.png"),
    ("caf\u00e9\u0000\n.webp", "caf_.webp"),
    ("a" * 300 + ".png", "a" * 116 + ".png"),
])
def test_file_names_are_sanitised(given, safe):
    assert safe_filename(given) == safe


def test_key_layout():
    key = job_file_key("video", "wan i2v/../x", JOB, "../out 1.mp4")
    assert key == f"video/x/{JOB}/out_1.mp4"
    assert job_id_of_key(key) == ("video", JOB)
    assert thumbnail_key(key) == f"video/x/{JOB}/thumbnails/out_1.jpg"
    user, upload = uuid.uuid4(), uuid.uuid4()
    assert upload_key(user, upload, "my photo.PNG") == f"uploads/{user}/{upload}/my_photo.PNG"
    assert job_id_of_key(upload_key(user, upload, "a.png")) is None
    for bad in ("../x", "image//a", "/image/a", "image/a b", "image/./a", ""):
        with pytest.raises(InvalidKey):
            job_id_of_key(bad)
    with pytest.raises(InvalidKey):
        job_file_key("audio", "w", JOB, "a")


async def test_local_storage_stores_once_serves_ranges_and_deletes(tmp_path):
    storage = LocalStorage(tmp_path)
    key = job_file_key("image", "image-invert", JOB, "out.png")
    first = await storage.put(key, b"0123456789")
    again = await storage.put(key, b"something else entirely")
    assert (first.created, first.size, first.content_type) == (True, 10, "image/png")
    assert (again.created, again.size) == (False, 10)
    assert (tmp_path / key).read_bytes() == b"0123456789"
    assert [p.name for p in (tmp_path / key).parent.iterdir()] == ["out.png"]  # no temporary files left

    async def read(start=0, end=None) -> bytes:
        return b"".join([chunk async for chunk in storage.open(key, start, end)])

    assert await read() == b"0123456789"
    assert await read(2, 5) == b"2345"
    assert await read(8) == b"89"
    assert storage.url_for(key) == f"/files/{key}"

    async def chunks():
        for part in (b"ab", b"cd"):
            yield part

    streamed = await storage.put(job_file_key("video", "v", JOB, "o.mp4"), chunks())
    assert (streamed.size, streamed.content_type) == (4, "video/mp4")
    copied = await storage.copy(key, job_file_key("image", "w", JOB, "inputs.png"))
    assert copied.size == 10 and await storage.exists(copied.key)
    await storage.delete(key)
    assert not await storage.exists(key) and await storage.stat(key) is None
    await storage.delete(key)  # deleting twice is fine


async def test_concurrent_puts_of_one_key_store_it_exactly_once(tmp_path):
    storage = LocalStorage(tmp_path)
    key = job_file_key("image", "w", JOB, "race.png")
    results = await asyncio.gather(*(storage.put(key, bytes([i]) * 1000) for i in range(20)))
    assert sum(r.created for r in results) == 1
    content = (tmp_path / key).read_bytes()
    assert len(set(content)) == 1 and len(content) == 1000


def test_media_is_told_by_content_not_name():
    assert inspect_media(png_bytes(), max_pixels=10_000) .content_type == "image/png"
    info = inspect_media(png_bytes(64, 48), max_pixels=10_000)
    assert (info.width, info.height, info.kind) == (64, 48, "image")
    jpeg = io.BytesIO()
    Image.new("RGB", (10, 10)).save(jpeg, "JPEG")
    assert inspect_media(jpeg.getvalue(), max_pixels=10_000).content_type == "image/jpeg"
    video = inspect_media(mp4_bytes(), max_pixels=100_000)
    assert (video.content_type, video.width, video.height) == ("video/mp4", 128, 96)
    assert video.duration_seconds == pytest.approx(1.0, abs=0.2)
    for not_media in (b"just some text pretending to be a png", b"", b"\x89PNG\r\n\x1a\n" + b"\0" * 40):
        with pytest.raises(UnsupportedMedia):
            inspect_media(not_media, max_pixels=10_000)
    truncated = png_bytes(200, 200, colour=(1, 2, 3))[:-30]
    with pytest.raises(UnsupportedMedia):
        inspect_media(truncated, max_pixels=100_000)


def test_pixel_bombs_are_refused_before_decoding():
    with pytest.raises(UnsupportedMedia, match="at most 1000 pixels"):
        inspect_media(png_bytes(64, 48), max_pixels=1000)
    with pytest.raises(UnsupportedMedia, match="pixels"):
        inspect_media(mp4_bytes(128, 96, frames=2), max_pixels=1000)


def test_thumbnails_are_small_jpegs_of_images_and_video_poster_frames():
    big = png_bytes(1600, 900, mode="RGBA", colour=(0, 0, 255, 128))
    with Image.open(io.BytesIO(thumbnail(big, "image/png"))) as thumb:
        assert (thumb.format, thumb.size) == ("JPEG", (400, 225))
    with Image.open(io.BytesIO(thumbnail(mp4_bytes(), "video/mp4"))) as poster:
        assert (poster.format, poster.size) == ("JPEG", (128, 96))
    assert thumbnail(b"hello", "text/plain") is None
    assert thumbnail(b"not an image", "image/png") is None
