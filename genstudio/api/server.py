"""How `genstudio serve` runs uvicorn: request headers are capped while they arrive, and
forwarded-address headers are believed only from configured proxies.
"""

from __future__ import annotations

import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from genstudio.config import Settings

# Importable by name: `serve --workers N` hands the configuration to fresh processes.
HTTP_PROTOCOL = "genstudio.api.server:HeaderLimitedHttpToolsProtocol"


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn settings that carry genstudio's request limits and proxy trust."""
    return {
        "http": HTTP_PROTOCOL,
        # uvicorn's own name for the header limit (it bounds headers under its h11 protocol);
        # HeaderLimitedHttpToolsProtocol reads the same setting.
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        # uvicorn believes X-Forwarded-For from 127.0.0.1 unless told otherwise, which let any
        # local caller pick the address its login attempts were counted against.
        "proxy_headers": bool(settings.trusted_proxies),
        "forwarded_allow_ips": settings.trusted_proxies or "",
    }


class HeaderLimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, answering 431 as soon as more header bytes than the limit
    have arrived without the headers ending.

    httptools (llhttp) has no header size limit and builds each header value by appending every
    read to it, so an 8 MB `Authorization` header was received, copied and parsed in full before
    the application could look at it. Here at most the limit plus one socket read is taken in.
    A header section that arrives whole in one read is refused by the application's exact
    check instead (genstudio.api.limits)."""

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any], _loop: Any = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.max_header_bytes: int = config.h11_max_incomplete_event_size
        self.awaiting_headers = True
        self.header_bytes = 0
        self.refused = False

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        if self.awaiting_headers:
            self.header_bytes += len(data)
        super().data_received(data)
        if self.awaiting_headers and self.header_bytes > self.max_header_bytes and not self.transport.is_closing():
            self.send_431_response()

    def on_headers_complete(self) -> Any:
        self.awaiting_headers = False
        return super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # The next request on this connection starts counting from zero.
        self.awaiting_headers = True
        self.header_bytes = 0

    def send_431_response(self) -> None:
        self.refused = True
        body = json.dumps({"success": False,
                           "error": f"the request's headers are larger than {self.max_header_bytes} bytes"}).encode()
        content = [STATUS_LINE[431]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend([b"content-type: application/json\r\n",
                        b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                        b"connection: close\r\n", b"\r\n", body])
        self.transport.write(b"".join(content))
        self.transport.close()
        self.logger.warning("Refused a request whose headers exceed %d bytes (431).", self.max_header_bytes)
