"""A small process supervisor: starts child processes, restarts the ones that die, stops them all.

Each child runs in its own session (process group id = its pid), so stopping it reaches the processes
it forked itself (Celery's pool children) by that one id, never by name. Stop: SIGTERM to each child,
a grace period, then SIGKILL to whatever is left of its group. A child that keeps dying (more than
``max_restarts`` times within ``window_s``) stops the whole tree with :class:`ChildCrashLoopError`,
rather than restarting forever and hiding the fault.

>>> sup = Supervisor([ChildSpec("sleeper", ["sleep", "60"])])
>>> sup.start(); sorted(sup.pids()) == ["sleeper"]
True
>>> sup.stop()
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("lowbit.embedded")


class ChildCrashLoopError(RuntimeError):
    """A child died more often than the restart budget allows; the message names it and its log."""


@dataclass(frozen=True)
class ChildSpec:
    """One supervised command: ``argv`` with ``env`` (None: inherit), output appended to ``log``."""

    name: str
    argv: list[str]
    env: dict[str, str] | None = None
    log: Path | None = None
    cwd: Path | None = None


@dataclass
class _Child:
    spec: ChildSpec
    proc: subprocess.Popen[bytes] | None = None
    deaths: deque[float] = field(default_factory=deque)
    restart_at: float | None = None


def _kill_group(pgid: int, sig: int) -> None:
    # The group id is a pid we started; it cannot be reused while any process of the group lives.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def tail(path: Path | None, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file ('' when there is none)."""
    if path is None or not path.exists():
        return ""
    with path.open("rb") as fh:
        fh.seek(max(0, path.stat().st_size - 16384))
        return b"\n".join(fh.read().splitlines()[-lines:]).decode(errors="replace")


class Supervisor:
    """Start, watch, restart and stop the children of ``specs``.

    ``poll()`` (or ``run(stop)``) restarts a dead child after a backoff (1 s, doubling, at most 10 s);
    ``stop()`` is idempotent and returns once every child's process group is gone.
    """

    def __init__(
        self,
        specs: list[ChildSpec],
        max_restarts: int = 5,
        window_s: float = 60.0,
        stop_timeout_s: float = 10.0,
    ) -> None:
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"child names must be unique, got {names}")
        self.children = {s.name: _Child(s) for s in specs}
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.stop_timeout_s = stop_timeout_s
        self.restarts = 0
        self._stopping = False

    def _spawn(self, child: _Child) -> None:
        spec = child.spec
        out = spec.log.open("ab") if spec.log is not None else subprocess.DEVNULL
        try:
            child.proc = subprocess.Popen(
                spec.argv,
                env=spec.env,
                cwd=spec.cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group; Ctrl-C reaches the supervisor only
            )
        finally:
            if spec.log is not None:
                out.close()  # type: ignore[union-attr]
        child.restart_at = None
        log.info("started %s (pid %d)", spec.name, child.proc.pid)

    def start(self) -> None:
        """Start every child."""
        for child in self.children.values():
            self._spawn(child)

    def pids(self) -> dict[str, int]:
        """Pid of each running child (its process group id as well)."""
        return {
            name: c.proc.pid
            for name, c in self.children.items()
            if c.proc is not None and c.proc.poll() is None
        }

    def poll(self) -> None:
        """Restart children that died (after their backoff); ChildCrashLoopError past the budget."""
        now = time.monotonic()
        for name, child in self.children.items():
            proc = child.proc
            if proc is not None and proc.poll() is not None and child.restart_at is None:
                _kill_group(proc.pid, signal.SIGKILL)  # what the dead leader left behind (pool children)
                child.deaths.append(now)
                while child.deaths and child.deaths[0] < now - self.window_s:
                    child.deaths.popleft()
                if len(child.deaths) > self.max_restarts:
                    raise ChildCrashLoopError(
                        f"{name} exited {len(child.deaths)} times within {self.window_s:.0f} s "
                        f"(last exit code {proc.returncode}); see {child.spec.log}:\n{tail(child.spec.log)}"
                    )
                delay = min(10.0, 2.0 ** (len(child.deaths) - 1))
                log.warning("%s exited with code %s; restarting in %.0f s", name, proc.returncode, delay)
                child.restart_at = now + delay
            if child.restart_at is not None and now >= child.restart_at and not self._stopping:
                self.restarts += 1
                self._spawn(child)

    def run(self, stop: threading.Event, interval_s: float = 0.5) -> None:
        """Poll until ``stop`` is set (or a crash loop raises)."""
        while not stop.wait(interval_s):
            self.poll()

    def stop(self) -> None:
        """SIGTERM every child, wait up to ``stop_timeout_s``, SIGKILL what is left; reap all."""
        self._stopping = True
        procs = [c.proc for c in self.children.values() if c.proc is not None]
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_s
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("pid %d did not stop in %.0f s; killing it", proc.pid, self.stop_timeout_s)
        for proc in procs:
            _kill_group(proc.pid, signal.SIGKILL)  # the leader if still alive, and any orphaned members
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        for child in self.children.values():
            child.restart_at = None
