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
from worker.fence import Fence
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
    first = Fence(job_id, 1, "first")
    assert db.write(lambda s: finish_job(s, first, state.SUCCEEDED), "finish") == "running"
    db.write(age, "age heartbeat")
    assert _claim(db, job_id, "third") == "attempts exhausted"
    job = db.write(lambda s: s.get(Job, job_id), "read")
    assert job.status == "failed" and job.attempts == 2 and job.error["type"] == "AttemptsExhausted"


@pytest.mark.parametrize(("beat_for_s", "expected"), [(95.0, "hard time limit exceeded"), (20.0, "claimed")])
def test_lost_attempt_that_beat_until_the_hard_limit_fails_for_time(
    stack: Stack, db: WorkerDb, beat_for_s: float, expected: str
) -> None:
    """A stale job whose attempt kept beating until the hard time limit (100 s here) was killed for
    time: the next claim fails it with that reason instead of running it again. One that died
    earlier (killed for memory, a lost machine) is taken over as before."""
    with stack.client() as client:
        job_id = stack.submit(client)["id"]
    assert _claim(db, job_id, "first") == "claimed"

    def beat_then_die(session: object) -> None:
        # The attempt started 200 s ago, beat for beat_for_s, then went silent (stale).
        from service.db.models import JobEvent

        began = utcnow() - timedelta(seconds=200)
        session.execute(  # type: ignore[attr-defined]
            update(JobEvent)
            .where(JobEvent.job_id == job_id, JobEvent.to_status == state.RUNNING)
            .values(created_at=began)
        )
        session.execute(  # type: ignore[attr-defined]
            update(Job).where(Job.id == job_id).values(heartbeat_at=began + timedelta(seconds=beat_for_s))
        )

    db.write(beat_then_die, "age attempt")
    reason = db.write(
        lambda s: (
            claim_job(
                s, job_id, "second", max_attempts=2, stale_after_s=5, hard_time_limit_s=100, heartbeat_s=2
            ).reason
        ),
        "claim",
    )
    assert reason == expected
    job = db.write(lambda s: s.get(Job, job_id), "read")
    if expected == "claimed":
        assert job.status == "running" and job.claimed_by == "second" and job.attempts == 2
    else:
        assert job.status == "failed" and job.attempts == 1
        assert job.error["type"] == "TimeLimitExceeded" and "100 s" in job.error["message"]


def test_hard_time_limit_must_come_after_the_soft_one() -> None:
    """Celery arms the hard limit only after the soft one fired: a soft limit at or above it is refused."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="LOWBIT_HARD_TIME_LIMIT_S \\(4\\) must be greater"):
        WorkerSettings(soft_time_limit_s=600, hard_time_limit_s=4)
    assert WorkerSettings(soft_time_limit_s=60, hard_time_limit_s=100).visibility_timeout_s == 160
