"""The database claim: concurrent deliveries of one job run it once; a stale claim is taken over;
attempts are bounded; a worker that lost its claim cannot overwrite the outcome. Real PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import update

from service.db.base import utcnow
from service.db.models import Job
from service.jobs import state
from tests.fixtures.worker_stack import Stack
from worker.claim import claim_job, finish_job
from worker.db import WorkerDb
from worker.settings import WorkerSettings


@pytest.fixture
def db(stack: Stack) -> WorkerDb:
    handle = WorkerDb(stack.settings, WorkerSettings(max_attempts=2, stale_after_s=5))
    yield handle  # type: ignore[misc]
    handle.engine.dispose()


def _claim(db: WorkerDb, job_id: str, worker: str) -> str:
    return db.write(lambda s: claim_job(s, job_id, worker, max_attempts=2, stale_after_s=5).reason, "claim")


def test_concurrent_deliveries_claim_once(stack: Stack, db: WorkerDb) -> None:
    with stack.client() as client:
        job_id = stack.submit(client)["id"]
    results: list[str] = []
    barrier = threading.Barrier(6)

    def deliver(i: int) -> None:
        barrier.wait()
        results.append(_claim(db, job_id, f"w{i}"))

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("claimed") == 1, results
    job = db.write(lambda s: s.get(Job, job_id), "read")
    assert job.status == "running" and job.attempts == 1


def test_stale_claim_taken_over_and_attempts_bounded(stack: Stack, db: WorkerDb) -> None:
    with stack.client() as client:
        job_id = stack.submit(client)["id"]
    assert _claim(db, job_id, "first") == "claimed"
    assert _claim(db, job_id, "second").startswith("job is running")  # heartbeat fresh: not taken

    def age(session: object) -> None:
        session.execute(  # type: ignore[attr-defined]
            update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow() - timedelta(seconds=60))
        )

    db.write(age, "age heartbeat")
    assert _claim(db, job_id, "second") == "claimed"
    # The first worker comes back and tries to write its outcome: ignored, the job is not its own.
    assert db.write(lambda s: finish_job(s, job_id, "first", state.SUCCEEDED), "finish") == "running"
    db.write(age, "age heartbeat")
    assert _claim(db, job_id, "third") == "attempts exhausted"
    job = db.write(lambda s: s.get(Job, job_id), "read")
    assert job.status == "failed" and job.attempts == 2 and job.error["type"] == "AttemptsExhausted"
