"""Per-API-key token buckets (in process: each API replica enforces the limit on its own share)."""

from __future__ import annotations

import math
import threading
import time

from service.errors import RateLimitedError


class TokenBuckets:
    """``rate_per_minute`` sustained requests per key with bursts up to ``burst``; 0 disables the limit."""

    def __init__(self, rate_per_minute: int, burst: int) -> None:
        self.rate = rate_per_minute / 60.0
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> None:
        """Spend one token of ``key``; RateLimitedError with a Retry-After header when none is left."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                retry = max(1, math.ceil((1.0 - tokens) / self.rate))
                raise RateLimitedError(
                    f"rate limit of {self.rate * 60:.0f} requests/minute exceeded; retry in {retry} s",
                    headers={"Retry-After": str(retry)},
                )
            self._buckets[key] = (tokens - 1.0, now)
