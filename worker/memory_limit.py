"""A per-job memory ceiling: each pool child runs under an address-space limit (``RLIMIT_AS``).

Why: a model or data file can declare sizes that make the engine allocate far more than the host has;
without a ceiling the kernel's OOM killer picks a victim (another job, the worker, the database). Under
the limit the allocation itself fails (``MemoryError`` from numpy, a ``DefaultCPUAllocator`` error
from torch), that job fails with code ``out_of_memory``, and the pool child keeps serving.

GPU workers get no address-space limit: CUDA reserves far more virtual address space than memory.

>>> job_memory_limit(0, concurrency=2, total=16 << 30) == int(16 * 0.8 / 2 * (1 << 30))
True
"""

from __future__ import annotations

import logging
import os
import resource
from typing import Any

log = logging.getLogger("lowbit.worker")
_FLOOR = 2 << 30  # torch, onnx and numpy alone map about 0.8 GiB of address space


def job_memory_limit(setting: int, *, concurrency: int, total: int | None = None) -> int:
    """The address-space limit of one pool child: ``setting`` when positive, else 80% of the host's
    memory shared by the pool's children (at least 2 GiB); -1 turns the limit off."""
    if setting != 0:
        return setting
    if total is None:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(_FLOOR, int(total * 0.8 / max(concurrency, 1)))


def apply(limit: int) -> None:
    """Set this process's ``RLIMIT_AS`` soft and hard limit to ``limit`` bytes (<= 0: leave it)."""
    if limit <= 0:
        return
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard if hard != resource.RLIM_INFINITY else limit))
    log.info("job memory limit: %d MiB of address space per pool process", limit >> 20)


def install(setting: int, *, concurrency: int, queues: str) -> None:
    """Apply the limit in every Celery pool child as it starts (CPU-only workers)."""
    if "gpu" in {q.strip() for q in queues.split(",")}:
        return
    from celery.signals import worker_process_init

    limit = job_memory_limit(setting, concurrency=concurrency)

    def on_start(**_: Any) -> None:
        apply(limit)

    worker_process_init.connect(on_start, weak=False)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` (or the error it was raised from) is a failed allocation (numpy's
    MemoryError, torch's CPU allocator)."""
    for err in (exc, exc.__cause__):
        if isinstance(err, MemoryError) or (
            isinstance(err, RuntimeError) and "can't allocate memory" in str(err)
        ):
            return True
    return False
