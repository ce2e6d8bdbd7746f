"""Where a webhook may point: HTTPS to public addresses only, checked again at each delivery.

A URL is checked when it is registered and, because DNS can change after that (DNS
rebinding: a name that resolved to a public address at registration and to 127.0.0.1 or a
cloud metadata address later), again at every delivery, on the addresses it resolves to then.
The delivery then connects to the address that was checked (not to whatever a second lookup
returns), sending the name as Host header and TLS server name so the certificate is still
verified against it. `GENSTUDIO_WEBHOOK_ALLOW_PRIVATE` lifts both rules for receivers on the
studio's own network.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from genstudio.errors import CallerError


class RefusedAddress(CallerError):
    """A webhook URL that is not HTTPS to a public address (and private ones are not allowed)."""


@dataclass(frozen=True)
class Target:
    url: str  # what to connect to (the checked address when pinned)
    host_header: str | None  # the name to send as Host, when connecting to a pinned address
    tls_server_name: str | None


def check_url_form(url: str, allow_private: bool) -> tuple[str, int]:
    """Scheme, host and port of a webhook URL, or RefusedAddress; no network."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise RefusedAddress(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise RefusedAddress("the URL must be https://host/path")
    if parts.scheme == "http" and not allow_private:
        raise RefusedAddress("plain http is refused: use https (or set GENSTUDIO_WEBHOOK_ALLOW_PRIVATE "
                             "for receivers on your own network)")
    if parts.username or parts.password:
        raise RefusedAddress("the URL must not carry a user name or password")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def resolve(host: str, port: int) -> list[str]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise RefusedAddress(f"cannot resolve {host}: {exc.strerror}") from None
    return list(dict.fromkeys(info[4][0] for info in infos))


async def check_destination(url: str, allow_private: bool) -> Target:
    """The checked target of one delivery (or of a registration)."""
    host, port = check_url_form(url, allow_private)
    if allow_private:
        return Target(url, None, None)
    addresses = await resolve(host, port)
    refused = [a for a in addresses if not is_public(a)]
    if refused or not addresses:
        raise RefusedAddress(f"{host} resolves to a private, loopback or link-local address ({', '.join(refused)}); "
                             "set GENSTUDIO_WEBHOOK_ALLOW_PRIVATE to allow receivers on your own network")
    parts = urlsplit(url)
    address = addresses[0]
    netloc = (f"[{address}]" if ":" in address else address) + (f":{parts.port}" if parts.port else "")
    name = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    host_header = name + (f":{parts.port}" if parts.port else "")
    return Target(urlunsplit(parts._replace(netloc=netloc)), host_header, parts.hostname)
