"""Storage in a local directory (the default): `<GENSTUDIO_STORAGE_DIR>/<key>`."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path

from genstudio.storage.base import StoredFile, check_key, content_type_of, url_path

CHUNK_BYTES = 256 * 1024


class LocalStorage:
    def __init__(self, root: Path | str):
        self.root = Path(root)

    def local_path(self, key: str) -> Path:
        return self.root / check_key(key)

    def url_for(self, key: str) -> str:
        return url_path(key)

    async def put(self, key: str, data: bytes | AsyncIterable[bytes], content_type: str | None = None) -> StoredFile:
        path = self.local_path(key)
        if (existing := await self.stat(key)) is not None:
            return StoredFile(key, existing.size, existing.content_type, created=False)
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        # Written under a unique temporary name, then linked into place: a reader never sees a
        # half-written file, and of two writers of one key exactly one wins (link refuses an
        # existing name) while the other's copy is dropped.
        temp = path.parent / f".{path.name}.{uuid.uuid4().hex}.part"
        try:
            size = await self._write(temp, data)
            try:
                await asyncio.to_thread(os.link, temp, path)
                created = True
            except FileExistsError:
                created, size = False, (await asyncio.to_thread(path.stat)).st_size
        finally:
            await asyncio.to_thread(temp.unlink, missing_ok=True)
        return StoredFile(key, size, content_type or content_type_of(key), created)

    async def _write(self, temp: Path, data: bytes | AsyncIterable[bytes]) -> int:
        if isinstance(data, (bytes, bytearray, memoryview)):
            await asyncio.to_thread(temp.write_bytes, bytes(data))
            return len(data)
        size = 0
        handle = await asyncio.to_thread(open, temp, "wb")
        try:
            async for chunk in data:
                size += len(chunk)
                await asyncio.to_thread(handle.write, chunk)
        finally:
            await asyncio.to_thread(handle.close)
        return size

    async def open(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        path = self.local_path(key)
        handle = await asyncio.to_thread(open, path, "rb")
        try:
            await asyncio.to_thread(handle.seek, start)
            remaining = None if end is None else end - start + 1
            while remaining is None or remaining > 0:
                size = CHUNK_BYTES if remaining is None else min(CHUNK_BYTES, remaining)
                chunk = await asyncio.to_thread(handle.read, size)
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
        finally:
            await asyncio.to_thread(handle.close)

    async def stat(self, key: str) -> StoredFile | None:
        path = self.local_path(key)
        try:
            st = await asyncio.to_thread(path.stat)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return StoredFile(key, st.st_size, content_type_of(key), created=False)

    async def exists(self, key: str) -> bool:
        return await self.stat(key) is not None

    async def copy(self, source_key: str, key: str) -> StoredFile:
        source = self.local_path(source_key)
        return await self.put(key, self.open(source_key), content_type_of(str(source)))

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.local_path(key).unlink, missing_ok=True)
