"""THE job state machine: status names, allowed transitions, and the one function that writes them.

Every status write (API cancel, worker claim/finish, reconciler requeue) goes through
:func:`transition`, which checks the transitions table, updates the row with a compare-and-set on the
old status (so two processes racing on one job cannot both win) and records a ``job_events`` row.

    queued ──► running ──► succeeded
      │  ▲        │  └───► failed
      │  └────────┤ (requeued after a worker loss)
      │           └──► cancelling ──► cancelled | failed | succeeded
      └──► cancelled | failed
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from service.db.base import utcnow
from service.db.models import Job, JobEvent
from service.errors import InvalidTransitionError, StaleJobError
from service.jobs.finite_json import finite_json, with_notes

QUEUED = "queued"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLING = "cancelling"
CANCELLED = "cancelled"

TRANSITIONS: dict[str, frozenset[str]] = {
    QUEUED: frozenset({RUNNING, CANCELLED, FAILED}),
    RUNNING: frozenset({SUCCEEDED, FAILED, CANCELLING, QUEUED}),
    # A job may finish (either way) before it notices the cancel request; the outcome is kept.
    CANCELLING: frozenset({CANCELLED, FAILED, SUCCEEDED}),
    SUCCEEDED: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
}
STATUSES: tuple[str, ...] = tuple(TRANSITIONS)
TERMINAL: frozenset[str] = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)

# Columns a transition may set along with the status.
_FIELDS = frozenset(
    {"stage", "progress", "eta_s", "metrics", "error", "device", "claimed_by", "attempts", "cancel_requested"}
)


def can_transition(old: str, new: str) -> bool:
    """Whether the state machine allows ``old -> new``."""
    return new in TRANSITIONS.get(old, frozenset())


def transition(session: Session, job: Job, new_status: str, *, message: str = "", **fields: Any) -> Job:
    """Move ``job`` to ``new_status``, setting ``fields`` and writing a job_events row, in ``session``.

    The caller commits. Raises InvalidTransitionError when the table forbids the move and
    StaleJobError when another process changed the job's status since ``job`` was loaded.

    >>> transition(session, job, "running", claimed_by="worker-1", stage="fetch")  # doctest: +SKIP
    """
    old = job.status
    if new_status not in TRANSITIONS:
        raise InvalidTransitionError(f"unknown job status {new_status!r}; statuses are {', '.join(STATUSES)}")
    if not can_transition(old, new_status):
        allowed = ", ".join(sorted(TRANSITIONS[old])) or "none (terminal)"
        raise InvalidTransitionError(
            f"job {job.id} is {old}; it cannot become {new_status} (allowed from {old}: {allowed})"
        )
    unknown = set(fields) - _FIELDS
    if unknown:
        raise TypeError(f"transition() got unknown fields {sorted(unknown)}; accepted: {sorted(_FIELDS)}")
    if isinstance(fields.get("metrics"), dict):  # NaN/Infinity are not JSON: null plus a note
        fields["metrics"] = with_notes(fields["metrics"])
    if fields.get("error") is not None:
        fields["error"] = finite_json(fields["error"])[0]
    now = utcnow()
    values: dict[str, Any] = {"status": new_status, "updated_at": now, **fields}
    if new_status == RUNNING and job.started_at is None:
        values["started_at"] = now
    if new_status in TERMINAL:
        values["finished_at"] = now
        values.setdefault("eta_s", None)
    if new_status == SUCCEEDED:
        values.setdefault("progress", 1.0)
    result = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status == old)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.refresh(job)
        raise StaleJobError(
            f"job {job.id} changed to {job.status} concurrently; {old} -> {new_status} not applied"
        )
    for key, value in values.items():
        setattr(job, key, value)
    session.add(
        JobEvent(
            job_id=job.id,
            from_status=old,
            to_status=new_status,
            stage=job.stage,
            progress=job.progress,
            message=message,
            created_at=now,
        )
    )
    session.flush()
    return job


def record_created(session: Session, job: Job) -> None:
    """Write the creation event of a new (queued) job; its status was set at construction."""
    session.add(JobEvent(**creation_event(job.id, utcnow())))


def creation_event(job_id: str, at: datetime) -> dict[str, Any]:
    """The job_events row (column values) that records the creation of a queued job."""
    return {
        "job_id": job_id,
        "from_status": None,
        "to_status": QUEUED,
        "stage": None,
        "progress": 0.0,
        "message": "",
        "created_at": at,
    }


def request_cancel(session: Session, job: Job) -> Job:
    """Ask ``job`` to stop: a queued job is cancelled at once, a running one becomes ``cancelling``.

    Idempotent for jobs already cancelling or cancelled; raises InvalidTransitionError for jobs that
    already succeeded or failed.
    """
    if job.status in (CANCELLING, CANCELLED):
        return job
    if job.status == QUEUED:
        return transition(session, job, CANCELLED, cancel_requested=True, message="cancelled before start")
    if job.status == RUNNING:
        return transition(session, job, CANCELLING, cancel_requested=True, message="cancel requested")
    raise InvalidTransitionError(
        f"job {job.id} already {job.status}; only queued or running jobs can be cancelled"
    )


def report_progress(
    session: Session,
    job: Job,
    *,
    stage: str | None = None,
    progress: float | None = None,
    eta_s: float | None = None,
) -> bool:
    """Record stage/progress/ETA and a heartbeat of a running job (no status change, no event row).

    Returns False, writing nothing, when the job is no longer running or cancelling (e.g. cancelled
    meanwhile): the worker should then stop. The caller commits. The SSE stream shows the change.
    """
    now = utcnow()
    values: dict[str, Any] = {"heartbeat_at": now, "updated_at": now}
    if stage is not None:
        values["stage"] = stage
    if progress is not None:
        values["progress"] = min(1.0, max(0.0, progress))
    if eta_s is not None:
        values["eta_s"] = eta_s
    result = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status.in_((RUNNING, CANCELLING)))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    for key, value in values.items():
        setattr(job, key, value)
    return True
