"""The processes of embedded mode: the API, Celery worker(s), the outbox relay and beat.

Each is the same command the distributed mode runs (``lowbit serve-api``, ``lowbit worker``,
``lowbit relay``, ``lowbit beat``); the ``LOWBIT_*`` environment points them at the data directory.
GPUs are counted without initializing CUDA in this process (``nvidia-smi -L``): with none, the one
worker consumes the ``gpu`` queue as well; with some, one extra worker per GPU serves ``gpu``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from worker.embedded.datadir import DataDir
from worker.embedded.supervisor import ChildSpec


def gpu_count() -> int:
    """Visible NVIDIA GPUs (CUDA_VISIBLE_DEVICES respected), counted without touching CUDA here."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(line.startswith("GPU ") for line in out.splitlines())


def _lowbit(*args: str) -> list[str]:
    # core.cli loads the worker commands through the lowbit.commands entry points.
    return [sys.executable, "-m", "core.cli", *args]


def child_specs(
    data: DataDir,
    env: dict[str, str],
    host: str,
    port: int,
    public_url: str,
    gpus: int,
    concurrency: int = 1,
    loglevel: str = "info",
) -> list[ChildSpec]:
    """The embedded mode's children, logging into ``data.logs``."""
    logs = data.logs
    api = [sys.executable, "-m", "service.cli", "serve-api", "--host", host, "--port", str(port),
           "--public-url", public_url, "--log-level", "warning" if loglevel == "info" else loglevel]  # fmt: skip
    cpu_queues = "cpu,ops" if gpus else "cpu,gpu,ops"
    specs = [
        ChildSpec("api", api, env, logs / "api.log"),
        ChildSpec(
            "worker",
            _lowbit(
                "worker", "--queues", cpu_queues, "--concurrency", str(concurrency), "--loglevel", loglevel
            ),
            {**env, "CUDA_VISIBLE_DEVICES": ""} if gpus else env,
            logs / "worker.log",
        ),
        ChildSpec("relay", _lowbit("relay", "--loglevel", loglevel), env, logs / "relay.log"),
        ChildSpec(
            "beat",
            _lowbit("beat", "--schedule-file", str(data.root / "beat-schedule"), "--loglevel", loglevel),
            env,
            logs / "beat.log",
        ),
    ]
    for index in range(gpus):
        specs.append(
            ChildSpec(
                f"worker-gpu{index}",
                _lowbit("worker", "--queues", "gpu", "--concurrency", "1", "--loglevel", loglevel),
                {**env, "CUDA_VISIBLE_DEVICES": _gpu_id(index)},
                logs / f"worker-gpu{index}.log",
            )
        )
    return specs


def _gpu_id(index: int) -> str:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return [d.strip() for d in visible.split(",") if d.strip()][index]
    return str(index)
