"""Login throttling per client address and per account, in memory (one server process)."""

from __future__ import annotations

import math
import time

from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from genstudio.auth.errors import LoginRateLimited


class LoginRateLimiter:
    def __init__(self, per_address: str, per_account: str):
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._per_address = parse(per_address)
        self._per_account = parse(per_account)

    def hit(self, address: str, email: str) -> None:
        """Count one attempt; refuse it if either the address or the account is over its limit."""
        for limit, kind, key in ((self._per_address, "address", address),
                                 (self._per_account, "account", email.strip().lower())):
            if not self._limiter.hit(limit, "login", kind, key):
                reset = self._limiter.get_window_stats(limit, "login", kind, key).reset_time
                wait = max(1, math.ceil(reset - time.time()))
                raise LoginRateLimited(f"too many sign-in attempts for this {kind}; try again in {wait} s", wait)
