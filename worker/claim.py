"""Claiming a job before it runs, and writing its outcome: every status write goes through
service.jobs.state.transition (compare-and-set on the old status), so two deliveries of one job
cannot both run it and a stale worker cannot overwrite a newer outcome.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.base import utcnow
from service.db.models import Job, JobEvent, OutboxMessage
from service.db.repositories.jobs import JOB_TOPIC
from service.errors import ConflictError
from service.jobs import state
from worker.fence import Fence


@dataclass(frozen=True)
class Claim:
    """The outcome of :func:`claim_job`: ``job`` is set when this worker may run it."""

    job: Job | None
    reason: str


def _is_stale(job: Job, stale_after_s: float) -> bool:
    if claimant_dead(job.claimed_by):
        return True
    return job.heartbeat_at is None or job.heartbeat_at < utcnow() - timedelta(seconds=stale_after_s)


def claimant_dead(claimed_by: str | None) -> bool:
    """True when the claim was made on this host (same hostname, so the same pid namespace) by a
    process that no longer exists: its job can be taken over at once instead of after the stale
    threshold. A pool process killed for memory is seen as soon as Celery redelivers its message.
    Another host's claim, or a live pid (possibly reused), is left to the heartbeat (False). A wrong
    guess (hosts sharing a hostname but not a pid namespace) costs work, never correctness: the
    live attempt's writes are fenced off (worker/fence.py)."""
    host, _, rest = (claimed_by or "").partition("/")
    pid_text = rest.partition("/")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists but not ours to signal
        return False
    return False


def _attempt_seconds(session: Session, job: Job) -> float | None:
    """How long the current attempt heartbeated: from its claim (last move to running) to the last beat."""
    started = session.scalar(
        select(JobEvent.created_at)
        .where(JobEvent.job_id == job.id, JobEvent.to_status == state.RUNNING)
        .order_by(JobEvent.id.desc())
        .limit(1)
    )
    if started is None or job.heartbeat_at is None:
        return None
    return (job.heartbeat_at - started).total_seconds()


def fail_if_timed_out(
    session: Session, job: Job, hard_time_limit_s: float | None, heartbeat_s: float
) -> bool:
    """Fail a lost job whose attempt kept beating until the hard time limit (Celery killed it for
    time); True when it did. The caller commits.

    A hard limit kills the pool process without any signal or failure callback reaching our code, so
    the job looks like any lost worker; requeueing it would only hit the limit again, attempt after
    attempt, and end as "attempts exhausted" with the wrong reason.
    """
    if hard_time_limit_s is None or job.status != state.RUNNING:
        return False
    ran = _attempt_seconds(session, job)
    # A beat every heartbeat_s: the last one came at most that long (plus slack) before the kill.
    if ran is None or ran < hard_time_limit_s - (2 * heartbeat_s + 1.0):
        return False
    state.transition(
        session,
        job,
        state.FAILED,
        error={
            "code": "time_limit",
            "type": "TimeLimitExceeded",
            "message": f"the job ran into the worker's hard time limit of {hard_time_limit_s:g} s and was "
            "stopped (LOWBIT_HARD_TIME_LIMIT_S); it is not retried, since it would stop there again: "
            "raise the limit or give the job less work (fewer calibration samples, iterations or epochs)",
        },
        message="hard time limit exceeded",
    )
    return True


def claim_job(
    session: Session,
    job_id: str,
    worker: str,
    *,
    max_attempts: int,
    stale_after_s: float,
    hard_time_limit_s: float | None = None,
    heartbeat_s: float = 2.0,
) -> Claim:
    """Move job ``job_id`` to running for ``worker`` (attempts + 1), or say why not.

    A queued job is claimed; a running job whose heartbeat is stale (its worker died) is first put
    back to queued, then claimed — unless its attempt beat until ``hard_time_limit_s``: then it
    failed for time and is failed with that reason. A job at ``max_attempts`` is failed instead.
    Anything else (running elsewhere, terminal, unknown) is not claimed. The caller commits.
    """
    job = session.get(Job, job_id)
    if job is None:
        return Claim(None, "unknown job")
    try:
        if job.status in (state.RUNNING, state.CANCELLING) and _is_stale(job, stale_after_s):
            if job.status == state.CANCELLING:
                state.transition(session, job, state.CANCELLED, message="worker lost while cancelling")
                return Claim(None, "cancelled")
            if fail_if_timed_out(session, job, hard_time_limit_s, heartbeat_s):
                return Claim(None, "hard time limit exceeded")
            lost = "exited" if claimant_dead(job.claimed_by) else "lost (heartbeat stale)"
            state.transition(session, job, state.QUEUED, message=f"worker {job.claimed_by} {lost}")
        if job.status != state.QUEUED:
            return Claim(None, f"job is {job.status}")
        if job.attempts >= max_attempts:
            state.transition(
                session,
                job,
                state.FAILED,
                error={
                    "code": "attempts_exhausted",
                    "type": "AttemptsExhausted",
                    "message": f"gave up after {job.attempts} attempts (limit {max_attempts}); "
                    "no attempt recorded an outcome: its worker stopped or was lost (killed, e.g. for "
                    "memory, frozen, or cut off from the database) each time",
                },
                message="attempts exhausted",
            )
            return Claim(None, "attempts exhausted")
        state.transition(
            session,
            job,
            state.RUNNING,
            claimed_by=worker,
            attempts=job.attempts + 1,
            stage="fetch",
            progress=0.0,
            message=f"claimed by {worker} (attempt {job.attempts + 1})",
        )
        job.heartbeat_at = utcnow()
    except ConflictError as exc:  # another delivery won the compare-and-set
        return Claim(None, f"lost the claim race: {exc}")
    return Claim(job, "claimed")


def finish_job(session: Session, fence: Fence, new_status: str, **fields: Any) -> str:
    """Write the final status of the attempt holding ``fence``; a cancel request turns success into
    the recorded outcome too (cancelling -> succeeded is allowed). Returns the status now stored.

    A job this attempt no longer owns (claimed again after it was presumed lost, or finished) is left
    alone: its current status is returned.
    """
    job = fence.lock(session)
    if job is None:
        current = session.get(Job, fence.job_id, populate_existing=True)
        return current.status if current is not None else "unknown"
    if job.status == state.CANCELLING and new_status == state.FAILED and fields.get("cancelled"):
        new_status = state.CANCELLED
    fields.pop("cancelled", None)
    state.transition(session, job, new_status, **fields)
    return new_status


def requeue_job(session: Session, job: Job, reason: str) -> None:
    """Put a running job back to queued and announce it in the outbox (the relay publishes it)."""
    state.transition(session, job, state.QUEUED, message=reason)
    session.add(OutboxMessage(topic=JOB_TOPIC, payload=job_message(job)))


def job_message(job: Job) -> dict[str, Any]:
    """The outbox payload that (re)announces ``job``: its queue and its priority, so a requeued job
    keeps its place among the others instead of overtaking higher-priority ones."""
    return {"job_id": job.id, "queue": job.compute, "priority": job.priority}


def running_jobs_stale(session: Session, stale_after_s: float) -> list[Job]:
    """Running or cancelling jobs whose heartbeat is older than ``stale_after_s``."""
    cutoff = utcnow() - timedelta(seconds=stale_after_s)
    return list(
        session.scalars(
            select(Job).where(
                Job.status.in_([state.RUNNING, state.CANCELLING]),
                (Job.heartbeat_at.is_(None)) | (Job.heartbeat_at < cutoff),
            )
        )
    )
