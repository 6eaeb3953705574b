"""Liveness of worker and beat processes without the broker.

A probe through the broker (``celery inspect ping``) fails for every worker at once while Redis is
down, so an orchestrator would restart the whole fleet during a broker blip. Instead, each worker and
beat process touches a file from a thread every ``LIVENESS_EVERY_S``; the health check (Docker
HEALTHCHECK, Kubernetes exec probe, Compose healthcheck) fails when the file is older than
``LIVENESS_STALE_S``: the process is gone or hung, whatever the broker does.

    python -m worker.liveness            # exit 0 when fresh, 1 when stale or missing (the probe)
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from pathlib import Path

LIVENESS_FILE = Path(os.environ.get("LOWBIT_LIVENESS_FILE", "/tmp/lowbit-alive"))
LIVENESS_EVERY_S = 10.0
LIVENESS_STALE_S = 60.0


def start_heartbeat(path: Path = LIVENESS_FILE, every_s: float = LIVENESS_EVERY_S) -> threading.Thread:
    """Touch ``path`` now and every ``every_s`` seconds from a daemon thread."""

    def beat() -> None:
        while True:
            # A read-only or full /tmp shows up as a stale file: the probe says so.
            with contextlib.suppress(OSError):
                path.touch()
            time.sleep(every_s)

    thread = threading.Thread(target=beat, name="lowbit-liveness", daemon=True)
    thread.start()
    return thread


def is_alive(path: Path = LIVENESS_FILE, stale_s: float = LIVENESS_STALE_S) -> bool:
    try:
        return time.time() - path.stat().st_mtime <= stale_s
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(0 if is_alive() else 1)
