"""How a waiting client rides out an API restart, a 503 or a 429: bounded exponential backoff that
honours ``Retry-After``, and gives up after ``budget_s`` seconds of failures in a row.

A job outlives the API process that accepted it (workers carry it to the end), so a client that
follows a job should not die when the API restarts; it should say it is reconnecting and carry on.

>>> policy = ReconnectPolicy(budget_s=10, base_s=1, max_sleep_s=4, jitter=False)
>>> r = Reconnector(policy)
>>> [r.next_delay(None, "down") for _ in range(4)]
[1.0, 2.0, 4.0, 4.0]
>>> round(r.next_delay(30.0, "busy"))  # Retry-After asks for 30 s; never more than the budget left
10
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass

# Statuses that mean "the API is there but cannot answer right now": retried, never shown as failure.
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})


class GaveUpReconnecting(Exception):
    """Failures in a row lasted longer than the policy's budget."""


@dataclass(frozen=True)
class ReconnectPolicy:
    """``budget_s``: how long failures in a row are tolerated (LOWBIT_RECONNECT_S, default 300);
    sleeps start at ``base_s`` and double up to ``max_sleep_s`` (LOWBIT_RECONNECT_MAX_SLEEP_S)."""

    budget_s: float = 300.0
    base_s: float = 0.5
    max_sleep_s: float = 10.0
    jitter: bool = True

    @classmethod
    def from_env(cls) -> ReconnectPolicy:
        """The policy from LOWBIT_RECONNECT_S / LOWBIT_RECONNECT_MAX_SLEEP_S (defaults otherwise)."""

        def number(name: str, default: float) -> float:
            raw = os.environ.get(name)
            if raw is None or raw.strip() == "":
                return default
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"{name} must be a number of seconds, got {raw!r}") from None
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {raw!r}")
            return value

        return cls(
            budget_s=number("LOWBIT_RECONNECT_S", cls.budget_s),
            max_sleep_s=max(0.01, number("LOWBIT_RECONNECT_MAX_SLEEP_S", cls.max_sleep_s)),
        )


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds form); None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        return None  # the HTTP-date form: fall back to our own backoff


class Reconnector:
    """Backoff state of one wait: :meth:`next_delay` after a failure, :meth:`reset` after a success."""

    def __init__(self, policy: ReconnectPolicy) -> None:
        self.policy = policy
        self.failures = 0
        self._since: float | None = None

    def reset(self) -> None:
        self.failures, self._since = 0, None

    def next_delay(self, retry_after: float | None, reason: str) -> float:
        """Seconds to sleep before the next try; GaveUpReconnecting once the budget is spent."""
        now = time.monotonic()
        if self._since is None:
            self._since = now
        elapsed = now - self._since
        left = self.policy.budget_s - elapsed
        if left <= 0:
            raise GaveUpReconnecting(
                f"gave up reconnecting after {elapsed:.0f} s (LOWBIT_RECONNECT_S={self.policy.budget_s:g}): {reason}"
            )
        self.failures += 1
        if retry_after is not None:
            delay = retry_after
        else:
            delay = min(self.policy.max_sleep_s, self.policy.base_s * 2 ** (self.failures - 1))
            if self.policy.jitter:
                delay *= 0.5 + random.random() / 2
        return float(min(delay, left))
