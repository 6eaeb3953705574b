"""Reliability with real processes: worker SIGKILL mid-job, Redis restart, poisoned jobs.

Every test runs real `lowbit worker` (Celery prefork) and `lowbit relay` processes against the
stack's private Redis, PostgreSQL and SeaweedFS; failure detection is tuned fast for tests
(tests/fixtures/worker_stack.py: heartbeat 0.5 s, stale after 5 s, max 3 attempts). Each fault is
injected at least three times (REPEATS rounds on the same started processes; the two SIGKILL variants
together), since a fault handled only once is a bug too.
"""

from __future__ import annotations

import io
import os
import signal
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import create_engine, select

from service.db.models import Artifact, JobEvent
from tests.fixtures.worker_procs import Proc, processes, start_relay, start_worker, start_workers
from tests.fixtures.worker_stack import Stack, wait_job

pytestmark = [pytest.mark.slow]
DONE = {"succeeded", "failed", "cancelled"}
REPEATS = 3


def _events(stack: Stack, job_id: str) -> list[tuple[str | None, str]]:
    engine = create_engine(stack.settings.database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(JobEvent.from_status, JobEvent.to_status)
                .where(JobEvent.job_id == job_id)
                .order_by(JobEvent.id)
            ).all()
            return [(a, b) for a, b in rows]
    finally:
        engine.dispose()


def _artifact_names(stack: Stack, job_id: str) -> list[str]:
    engine = create_engine(stack.settings.database_url)
    try:
        with engine.connect() as conn:
            return sorted(conn.scalars(select(Artifact.name).where(Artifact.job_id == job_id)).all())
    finally:
        engine.dispose()


def _wait_running(client: httpx.Client, job_id: str, attempt: int = 1, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] == "running" and job["attempts"] >= attempt:
            return dict(job)
        assert job["status"] not in DONE, job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not start attempt {attempt}")


# Three SIGKILLs in all: two of a pool child (same workers), one of a whole worker.
@pytest.mark.parametrize(("target", "rounds"), [("pool-child", 2), ("whole-worker", 1)])
def test_sigkill_mid_job_finishes_once_on_another_worker(
    stack: Stack, tmp_path: Path, target: str, rounds: int
) -> None:
    """Given two workers, When the one running a job is SIGKILLed (its pool child only, or the whole
    worker, then replaced), once per job for ``rounds`` jobs in a row, Then each job succeeds on the
    other worker: one succeeded event, one set of artifacts. (Attempts are 2, or more when a starved machine let a
    heartbeat go stale: the claim still keeps the runs apart.)"""
    env = stack.env()
    with processes() as procs, stack.client() as client:
        procs.append(start_relay(env, tmp_path / "relay.log"))
        workers = start_workers(env, tmp_path, ["kill0", "kill1"])
        procs.extend(workers)
        for round_ in range(rounds):
            job = stack.submit(client, eval_dataset_id=stack.inputs["eval"])
            running = _wait_running(client, job["id"])
            victim = _job_worker(stack, running["id"], workers)
            if target == "pool-child":
                for pid in victim.children():
                    os.kill(pid, signal.SIGKILL)
            else:
                victim.kill(signal.SIGKILL)
            done = wait_job(client, job["id"], DONE, timeout=150)
            assert done["status"] == "succeeded", (round_, done["error"], [w.tail() for w in workers])
            assert done["attempts"] >= 2
            events = _events(stack, job["id"])
            assert [e for e in events if e[1] == "succeeded"] == [("running", "succeeded")]
            assert events.count(("queued", "running")) == done["attempts"]
            names = _artifact_names(stack, job["id"])
            assert names == sorted(set(names))
            assert {"model.onnx", "model_qdq.onnx", "model.encodings"} <= set(names)
            if target == "whole-worker" and round_ < rounds - 1:
                workers.remove(victim)
                workers.extend(start_workers(env, tmp_path, [f"kill{round_ + 2}"]))
                procs.append(workers[-1])


def _job_worker(stack: Stack, job_id: str, workers: list[Proc]) -> Proc:
    from service.db.models import Job

    engine = create_engine(stack.settings.database_url)
    try:
        with engine.connect() as conn:
            claimed_by = conn.scalar(select(Job.claimed_by).where(Job.id == job_id))
    finally:
        engine.dispose()
    pid = int(str(claimed_by).split("/")[1])
    for w in workers:
        if pid in w.children():
            return w
    raise AssertionError(f"no worker owns pool pid {pid}")


def test_redis_restart_loses_no_job(stack: Stack, tmp_path: Path) -> None:
    """Given one worker and three jobs (one running, two queued), When Redis restarts empty (three
    times, same worker and relay), Then every job still succeeds exactly once (the reconciler
    re-announces lost queued jobs)."""
    env = stack.env()
    with processes() as procs, stack.client() as client:
        procs.append(start_relay(env, tmp_path / "relay.log"))
        procs.append(start_worker(env, tmp_path / "w.log", "redis"))
        for round_ in range(REPEATS):
            jobs = [stack.submit(client) for _ in range(3)]
            _wait_running(client, jobs[0]["id"])
            stack.redis.restart(down_s=1.0)
            finished = [wait_job(client, j["id"], DONE, timeout=150) for j in jobs]
            assert [j["status"] for j in finished] == ["succeeded"] * 3, (
                round_,
                [j["error"] for j in finished],
            )
            for j in jobs:
                succeeded = [e for e in _events(stack, j["id"]) if e[1] == "succeeded"]
                assert succeeded == [("running", "succeeded")]


def _bad_npz() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, input=np.zeros((16, 3, 5, 5), np.float32))  # the digits model takes (N, 1, 8, 8)
    return buf.getvalue()


def test_poisoned_jobs_fail_without_blocking_the_queue(stack: Stack, tmp_path: Path) -> None:
    """Given one worker, When three jobs' data makes the engine raise and another job's process is
    killed (as by the OOM killer) every time it starts (three kills), Then the first three fail at
    once with the engine's error, the killed one fails after max_attempts (3) attempts, and a good job
    queued behind them succeeds."""
    env = stack.env()
    with processes() as procs, stack.client() as client:
        procs.append(start_relay(env, tmp_path / "relay.log"))
        worker = start_worker(env, tmp_path / "w.log", "poison")
        procs.append(worker)
        ds = client.post("/v1/datasets", json={"name": "bad-shape", "format": "npz"}).json()
        assert client.put(f"/v1/datasets/{ds['id']}/content", content=_bad_npz()).status_code == 200
        raising = [stack.submit(client, calib_dataset_id=ds["id"]) for _ in range(REPEATS)]
        killed = stack.submit(client)
        good = stack.submit(client)
        for job in raising:
            failed = wait_job(client, job["id"], DONE, timeout=90)
            assert failed["status"] == "failed" and failed["attempts"] == 1
            assert failed["error"]["type"] == "DataLoadError" and "dimension" in failed["error"]["message"]
        for attempt in (1, 2, 3):
            _wait_running(client, killed["id"], attempt, timeout=90)
            for pid in worker.children():
                os.kill(pid, signal.SIGKILL)
        dead = wait_job(client, killed["id"], DONE, timeout=90)
        assert dead["status"] == "failed" and dead["attempts"] == 3
        assert dead["error"]["type"] == "AttemptsExhausted"
        assert wait_job(client, good["id"], DONE, timeout=90)["status"] == "succeeded"


def test_cancel_running_job(stack: Stack, tmp_path: Path) -> None:
    """When a running job is cancelled through the API, Then it ends cancelled (the engine's cancel
    check or the revoke after the grace period), and the worker takes the next job."""
    env = stack.env()
    with processes() as procs, stack.client() as client:
        procs.append(start_relay(env, tmp_path / "relay.log"))
        procs.append(start_worker(env, tmp_path / "w.log", "cancel"))
        job = stack.submit(client, technique="qat", params={"epochs": 50})
        _wait_running(client, job["id"])
        assert client.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] == "cancelling"
        assert wait_job(client, job["id"], DONE, timeout=60)["status"] == "cancelled"
        nxt = stack.submit(client)
        assert wait_job(client, nxt["id"], DONE, timeout=90)["status"] == "succeeded"
