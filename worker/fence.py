"""The fencing token of one attempt: (job id, attempt number, worker). Every write an attempt makes
carries it and is refused once the job was claimed again (the attempt number moved on) or finished.

Why: a worker that was frozen (SIGSTOP, a long GC pause, a suspended VM) past the stale threshold
wakes up believing it still runs the job, while the reconciler requeued it and another worker may
have finished it. Without a token its late writes (progress, logs, checkpoints, results) would land
on a job that is no longer its own.

Writes to the job row carry :meth:`Fence.owns` in their WHERE clause; other writes (log lines,
artifact rows, object-storage writes) first :meth:`Fence.lock` the row in the same transaction, so
the check and the write commit together.

>>> fence = Fence("01J...", 2, "host/123/ab12cd34")
>>> str(fence)
'job 01J... attempt 2'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, select
from sqlalchemy.orm import Session

from service.db.models import Job
from service.jobs import state

LIVE = (state.RUNNING, state.CANCELLING)


class FenceLost(Exception):
    """The attempt no longer owns its job (claimed again or finished): stop, write nothing more."""


@dataclass(frozen=True)
class Fence:
    job_id: str
    attempt: int
    worker: str

    def __str__(self) -> str:
        return f"job {self.job_id} attempt {self.attempt}"

    def owns(self) -> ColumnElement[bool]:
        """SQL condition: the job row still belongs to this attempt and is not finished."""
        return and_(
            Job.id == self.job_id,
            Job.attempts == self.attempt,
            Job.claimed_by == self.worker,
            Job.status.in_(LIVE),
        )

    def lock(self, session: Session) -> Job | None:
        """The job row locked for this transaction when this attempt still owns it, else None.

        The row lock (``FOR UPDATE``; SQLite serializes writers anyway) keeps a claim or a status
        change by another process from slipping in between this check and the caller's write."""
        job: Job | None = session.scalar(
            select(Job).where(self.owns()).with_for_update().execution_options(populate_existing=True)
        )
        return job

    def require(self, session: Session, what: str) -> Job:
        """:meth:`lock`, or FenceLost naming the refused write."""
        job = self.lock(session)
        if job is None:
            raise FenceLost(f"{what} refused: {self} no longer owns the job")
        return job

    def holds(self, session: Session) -> bool:
        """Whether this attempt still owns the job (no lock; for checks before object writes)."""
        found: Any = session.scalar(select(Job.id).where(self.owns()))
        return found is not None
