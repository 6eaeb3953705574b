"""Bounded retries with exponential backoff for the worker's infrastructure calls.

Database writes survive a PostgreSQL restart and object-storage calls survive a short S3 outage;
after ``total_s`` seconds the last error is raised as :class:`InfrastructureError` naming what failed,
how often it was tried and for how long.

>>> calls = []
>>> retry_call(lambda: calls.append(1) or len(calls), what="noop", retry_on=(OSError,), total_s=1)
1
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("lowbit.worker")


class InfrastructureError(RuntimeError):
    """A database or object-storage call kept failing for longer than its retry budget."""


def retry_call(
    fn: Callable[[], T],
    *,
    what: str,
    retry_on: tuple[type[BaseException], ...],
    total_s: float,
    base_s: float = 0.25,
    max_sleep_s: float = 5.0,
) -> T:
    """``fn()``; on an exception in ``retry_on``, sleep (exponential, jittered) and retry for ``total_s``."""
    start = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except retry_on as exc:
            elapsed = time.monotonic() - start
            if elapsed >= total_s:
                raise InfrastructureError(
                    f"{what} failed {attempt} times over {elapsed:.1f} s (retry budget {total_s:g} s): {exc}"
                ) from exc
            sleep = min(max_sleep_s, base_s * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
            log.warning("%s failed (attempt %d): %s; retrying in %.2f s", what, attempt, exc, sleep)
            time.sleep(min(sleep, max(0.0, total_s - elapsed) + 0.01))
