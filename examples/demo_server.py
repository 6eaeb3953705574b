"""Starting and stopping a background ``lowbit serve`` for the demo (its own session, stopped by pid)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class BackgroundServer:
    """A ``lowbit serve`` process: its URL, bootstrap key, data directory and log file."""

    proc: subprocess.Popen[bytes]
    url: str
    api_key: str
    data_dir: Path
    log: Path

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM ``lowbit serve`` (which stops its children) and wait; SIGKILL its group past ``timeout_s``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return int(self.proc.returncode)


def _log_tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def start_server(data_dir: Path, port: int, timeout_s: float = 180.0) -> BackgroundServer:
    """Start ``lowbit serve --port PORT --data-dir DATA_DIR`` and wait until its API is ready.

    Raises RuntimeError with the server's log tail when it exits or is not ready within ``timeout_s``.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / "serve.log"
    url_file = data_dir / "url"
    url_file.unlink(missing_ok=True)  # a stale file from an earlier run must not be taken for this one
    argv = [sys.executable, "-m", "core.cli", "serve", "--port", str(port), "--data-dir", str(data_dir)]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"lowbit serve exited with code {proc.returncode}:\n{_log_tail(log)}")
        if url_file.exists():  # written once /readyz answered 200
            url = url_file.read_text().strip()
            key = (data_dir / "api_key").read_text().strip()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    return BackgroundServer(proc, url, key, data_dir, log)
        time.sleep(0.3)
    server = BackgroundServer(proc, "", "", data_dir, log)
    server.stop()
    raise RuntimeError(f"lowbit serve was not ready after {timeout_s:.0f} s:\n{_log_tail(log)}")
