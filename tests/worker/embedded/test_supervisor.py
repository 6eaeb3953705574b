"""Supervisor with real child processes: restart after death, stop by process group, crash-loop budget."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from worker.embedded.supervisor import ChildCrashLoopError, ChildSpec, Supervisor

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]
# Forks a grandchild (same process group) and ignores SIGTERM itself, like a stuck worker with a pool.
STUBBORN = [
    sys.executable,
    "-c",
    "import os, signal, subprocess, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "subprocess.Popen([sys.executable, '-c', 'import signal, time; "
    "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)'])\n"
    "print('ready', flush=True)\n"
    "time.sleep(120)\n",
]


def _wait(predicate: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_dead_child_is_restarted_with_a_new_pid(tmp_path: Path) -> None:
    """Given two supervised sleepers, When one is SIGKILLed, Then poll() restarts it and leaves the other."""
    sup = Supervisor([ChildSpec("a", SLEEPER, log=tmp_path / "a.log"), ChildSpec("b", SLEEPER)])
    sup.start()
    try:
        before = sup.pids()
        os.kill(before["a"], signal.SIGKILL)
        _wait(lambda: (sup.poll(), sup.pids().get("a") not in (None, before["a"]))[1])
        after = sup.pids()
        assert after["b"] == before["b"] and after["a"] != before["a"] and sup.restarts == 1
    finally:
        sup.stop()
    assert not any(_alive(p) for p in [*before.values(), *after.values()])


def test_stop_kills_a_child_that_ignores_sigterm_and_its_grandchildren(tmp_path: Path) -> None:
    log = tmp_path / "stubborn.log"
    sup = Supervisor([ChildSpec("stubborn", STUBBORN, log=log)], stop_timeout_s=1.0)
    sup.start()
    _wait(lambda: "ready" in log.read_text())
    pid = sup.pids()["stubborn"]
    family = [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    assert len(family) == 2
    sup.stop()
    _wait(lambda: not any(_alive(p) for p in family), timeout=10)
    assert sup.pids() == {}
    sup.stop()  # idempotent


def test_crash_loop_stops_with_an_error_naming_the_child_and_its_log(tmp_path: Path) -> None:
    log = tmp_path / "crasher.log"
    crasher = [sys.executable, "-c", "import sys; print('boom: bad config'); sys.exit(3)"]
    sup = Supervisor([ChildSpec("crasher", crasher, log=log)], max_restarts=2, window_s=60)
    sup.start()
    try:
        with pytest.raises(ChildCrashLoopError, match=r"crasher exited 3 times.*exit code 3") as info:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                sup.poll()
                time.sleep(0.05)
        assert "boom: bad config" in str(info.value)
    finally:
        sup.stop()


def test_duplicate_child_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        Supervisor([ChildSpec("x", SLEEPER), ChildSpec("x", SLEEPER)])
