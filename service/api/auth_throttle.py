"""Failed authentications per client address (API keys and dashboard sign-in): after ``burst``
failures a client gets 429 with ``Retry-After`` until its failures decay at ``per_minute``.

Why: API keys are long random strings, but nothing should let a client try them at line rate (60
wrong keys in a row drew no 429). Successful requests cost nothing here; the per-key request limit
(service/api/ratelimit.py) applies to them. Behind a proxy every client shares the proxy's address.

>>> failures = AuthFailures(per_minute=1, burst=2)
>>> failures.failed("10.0.0.1"); failures.failed("10.0.0.1")
>>> failures.check("10.0.0.1")
Traceback (most recent call last):
...
service.errors.RateLimitedError: too many failed authentications from this client; retry in 60 s
"""

from __future__ import annotations

import math
import threading
import time

from service.errors import RateLimitedError

_MAX_CLIENTS = 100_000  # addresses tracked; the least recently failed make room


class AuthFailures:
    """Token buckets of failures per client; ``per_minute`` = 0 turns the throttle off."""

    def __init__(self, per_minute: int, burst: int) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def _tokens(self, client: str, now: float) -> float:
        tokens, last = self._buckets.get(client, (self.burst, now))
        return min(self.burst, tokens + (now - last) * self.rate)

    def check(self, client: str) -> None:
        """RateLimitedError when ``client`` has no failures left to spend."""
        if self.rate <= 0:
            return
        with self._lock:
            tokens = self._tokens(client, time.monotonic())
        if tokens < 1.0:
            retry = max(1, math.ceil((1.0 - tokens) / self.rate))
            raise RateLimitedError(
                f"too many failed authentications from this client; retry in {retry} s",
                headers={"Retry-After": str(retry)},
            )

    def failed(self, client: str) -> None:
        """Record one failed authentication of ``client``."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens = self._tokens(client, now)
            self._buckets.pop(client, None)
            if len(self._buckets) >= _MAX_CLIENTS:
                del self._buckets[next(iter(self._buckets))]
            self._buckets[client] = (max(0.0, tokens - 1.0), now)
