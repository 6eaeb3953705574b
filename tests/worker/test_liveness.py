"""worker/liveness.py: the health check of workers and beat that does not go through the broker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from worker.liveness import is_alive, start_heartbeat


def test_heartbeat_file_is_fresh_then_stale(tmp_path: Path) -> None:
    path = tmp_path / "alive"
    assert not is_alive(path)  # no file: not alive
    start_heartbeat(path, every_s=0.05)
    deadline = time.monotonic() + 10
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert is_alive(path, stale_s=60)
    first = path.stat().st_mtime
    time.sleep(0.2)
    assert path.stat().st_mtime > first  # touched again: a live process keeps it fresh


def test_probe_command_exit_codes(tmp_path: Path) -> None:
    path = tmp_path / "alive"
    env = {**os.environ, "LOWBIT_LIVENESS_FILE": str(path)}
    probe = [sys.executable, "-m", "worker.liveness"]
    assert subprocess.run(probe, env=env, timeout=60).returncode == 1
    path.touch()
    assert subprocess.run(probe, env=env, timeout=60).returncode == 0
    old = time.time() - 120
    os.utime(path, (old, old))
    assert subprocess.run(probe, env=env, timeout=60).returncode == 1
