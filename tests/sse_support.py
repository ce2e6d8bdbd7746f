"""A small Server-Sent Events client over httpx, for tests: it reads a stream in the
background and lets a test wait until what arrived satisfies a condition."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Message:
    event: str
    data: str
    id: str | None
    received_at: float = field(default_factory=time.time)

    @property
    def json(self) -> Any:
        return json.loads(self.data)


class SseStream:
    def __init__(self, client: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None):
        self.client, self.url, self.headers = client, url, headers or {}
        self.messages: list[Message] = []
        self.comments: list[str] = []
        self.status_code: int | None = None
        self.ended = asyncio.Event()
        self._changed = asyncio.Condition()
        self._task: asyncio.Task | None = None
        self._opened = asyncio.Event()

    async def __aenter__(self) -> "SseStream":
        self._task = asyncio.create_task(self._read())
        await asyncio.wait_for(self._opened.wait(), 10)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    @property
    def events(self) -> list[Message]:
        """Messages with an id: the job events (not `reset` notices)."""
        return [m for m in self.messages if m.id is not None]

    @property
    def ids(self) -> list[int]:
        return [int(m.id) for m in self.events]

    async def _read(self) -> None:
        try:
            async with self.client.stream("GET", self.url, headers=self.headers, timeout=None) as response:
                self.status_code = response.status_code
                self.content_type = response.headers.get("content-type", "")
                self._opened.set()
                if response.status_code != 200:
                    self.error_body = await response.aread()
                    return
                fields: dict[str, list[str]] = {}
                async for line in response.aiter_lines():
                    if line == "":
                        if "data" in fields:
                            message = Message(fields.get("event", ["message"])[-1], "\n".join(fields["data"]),
                                              fields["id"][-1] if "id" in fields else None)
                            async with self._changed:
                                self.messages.append(message)
                                self._changed.notify_all()
                        fields = {}
                    elif line.startswith(":"):
                        async with self._changed:
                            self.comments.append(line)
                            self._changed.notify_all()
                    else:
                        name, _, value = line.partition(":")
                        fields.setdefault(name, []).append(value[1:] if value.startswith(" ") else value)
        finally:
            self._opened.set()
            self.ended.set()
            async with self._changed:
                self._changed.notify_all()

    async def wait_for(self, condition: Callable[["SseStream"], bool], timeout: float = 10.0) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: condition(self) or self.ended.is_set()), timeout)
        assert condition(self), f"stream ended before the condition held; got {[(m.event, m.id) for m in self.messages]}"

    async def wait_for_ids(self, ids: list[int], timeout: float = 10.0) -> None:
        wanted = set(ids)
        await self.wait_for(lambda s: wanted <= set(s.ids), timeout)
