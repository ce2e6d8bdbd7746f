"""The root of every failure genstudio reports to a caller in words.

Each area defines one subclass per failure a caller can act on; the API maps them to HTTP
statuses in one place (genstudio.api.errors).
"""

from __future__ import annotations


class CallerError(Exception):
    """A failure whose message is meant for the caller as it stands."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message
