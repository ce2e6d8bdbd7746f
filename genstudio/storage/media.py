"""What a file really is, told from its content (never its name), and its thumbnail.

Images are read with Pillow, videos and audio with PyAV (FFmpeg). A file neither can decode
is refused; so is one whose pixel count is above the bound (a "decompression bomb": a few
kilobytes of PNG that expand to gigabytes)."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from genstudio.errors import CallerError

THUMBNAIL_PIXELS = 400
THUMBNAIL_QUALITY = 85

# Pillow format -> media type, for the formats a ComfyUI LoadImage node reads.
_IMAGE_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif",
                "BMP": "image/bmp", "TIFF": "image/tiff"}
# FFmpeg demuxer names (as PyAV reports them, comma-separated aliases) -> media types.
_CONTAINER_TYPES = {"mp4": "video/mp4", "mov": "video/quicktime", "webm": "video/webm",
                    "matroska": "video/x-matroska", "avi": "video/x-msvideo", "gif": "image/gif",
                    "mp3": "audio/mpeg", "wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg"}


class UnsupportedMedia(CallerError):
    """The content is not a media file of an accepted kind, or is too large to decode."""


@dataclass(frozen=True)
class MediaInfo:
    content_type: str  # e.g. image/png, told from the content
    width: int | None = None
    height: int | None = None
    duration_seconds: float | None = None

    @property
    def kind(self) -> str:
        return self.content_type.split("/", 1)[0]


def inspect_media(data: bytes, *, max_pixels: int) -> MediaInfo:
    """Decode enough of `data` to be sure what it is; raise UnsupportedMedia otherwise."""
    image = _inspect_image(data, max_pixels)
    if image is not None:
        return image
    return _inspect_av(data, max_pixels)


def _inspect_image(data: bytes, max_pixels: int) -> MediaInfo | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                fmt, (width, height) = image.format, image.size
                if fmt not in _IMAGE_TYPES:
                    return None
                if width * height > max_pixels:
                    raise UnsupportedMedia(f"the image is {width}x{height} pixels; at most {max_pixels} pixels are accepted")
                image.load()  # a truncated or corrupt file fails here, not on the ComfyUI server
    except UnidentifiedImageError:
        return None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UnsupportedMedia(f"the image has more than {max_pixels} pixels") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise UnsupportedMedia(f"the {fmt or 'image'} file is damaged: {exc}") from None
    return MediaInfo(_IMAGE_TYPES[fmt], width, height)


def _inspect_av(data: bytes, max_pixels: int) -> MediaInfo:
    import av

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            names = container.format.name.split(",")
            if "mp4" in names:  # FFmpeg's one demuxer for the ISO family; the brand tells them apart
                names = ["mov" if container.metadata.get("major_brand", "").strip() == "qt" else "mp4"]
            content_type = next((_CONTAINER_TYPES[n] for n in names if n in _CONTAINER_TYPES), None)
            if content_type is None:
                raise UnsupportedMedia(f"{container.format.long_name or names[0]} files are not accepted")
            duration = container.duration / 1_000_000 if container.duration else None
            if container.streams.video:
                stream = container.streams.video[0]
                width, height = stream.codec_context.width, stream.codec_context.height
                if width * height > max_pixels:
                    raise UnsupportedMedia(f"the video is {width}x{height} pixels; at most {max_pixels} pixels are accepted")
                next(container.decode(stream))  # one frame must decode
                if content_type.startswith("audio/"):
                    content_type = "video/" + content_type.split("/", 1)[1]
                return MediaInfo(content_type, width, height, duration)
            if container.streams.audio:
                next(container.decode(container.streams.audio[0]))
                audio_type = content_type if content_type.startswith("audio/") else "audio/" + content_type.split("/")[1]
                return MediaInfo(audio_type, duration_seconds=duration)
            raise UnsupportedMedia("the file holds neither images, video nor audio")
    except UnsupportedMedia:
        raise
    except (av.error.FFmpegError, StopIteration, ValueError, IndexError, av.error.InvalidDataError):
        raise UnsupportedMedia("the content is not an image, video or audio file genstudio can read") from None


def thumbnail(data: bytes, content_type: str) -> bytes | None:
    """A JPEG at most ~400 px on its longer side: the image itself, or a video's first frame.
    None for anything else (text, audio) or content that cannot be decoded."""
    try:
        if content_type.startswith("image/"):
            from PIL import Image

            with Image.open(io.BytesIO(data)) as image:
                image.seek(0)
                return _jpeg(image)
        if content_type.startswith("video/"):
            import av

            with av.open(io.BytesIO(data), mode="r") as container:
                frame = next(container.decode(video=0))
                return _jpeg(frame.to_image())
    except Exception:  # a thumbnail is a nicety; the output itself is what matters
        return None
    return None


def _jpeg(image) -> bytes:
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode not in ("RGB", "L"):
        background = image.convert("RGBA")
        flattened = Image.new("RGB", background.size, (255, 255, 255))
        flattened.paste(background, mask=background.getchannel("A"))
        image = flattened
    image.thumbnail((THUMBNAIL_PIXELS, THUMBNAIL_PIXELS))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=THUMBNAIL_QUALITY, optimize=True)
    return out.getvalue()
