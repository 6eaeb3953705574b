"""A running job's link to its row: heartbeat, throttled progress (stage, fraction, ETA), log lines and
the cancel flag.

A background thread writes the heartbeat every ``heartbeat_s`` and reads ``cancel_requested`` at the
same time, so the engine's cancel check (:meth:`JobMonitor.cancelled`) is a memory read, never a query
per batch. Progress writes are throttled to one per ``progress_every_s``; stage changes always write.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from service.db.base import utcnow
from service.db.models import Job
from service.db.repositories.jobs import append_log
from worker.db import WorkerDb
from worker.fence import Fence

log = logging.getLogger("lowbit.worker")


class JobMonitor:
    """Heartbeat + progress + logs + cancel flag of the attempt holding ``fence``; every write carries
    the fence and is dropped (and the job marked lost) once the attempt no longer owns the job.

    ``stages`` maps stage name → share of the whole job (shares sum to 1); :meth:`progress` takes the
    fraction done of the current stage and stores the overall fraction and an ETA.
    """

    def __init__(self, db: WorkerDb, fence: Fence, stages: dict[str, float]) -> None:
        self.db = db
        self.fence = fence
        self.job_id = fence.job_id
        self.worker = fence.worker
        self.stages = stages
        self._offsets: dict[str, float] = {}
        done = 0.0
        for name, share in stages.items():
            self._offsets[name] = done
            done += share
        self.stage = next(iter(stages))
        self.fraction = 0.0
        self._started = time.monotonic()
        self._last_write = 0.0
        self._cancel = threading.Event()
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{self.job_id}", daemon=True)

    # -- lifecycle ---------------------------------------------------------------------------------
    def __enter__(self) -> JobMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _beat(self) -> None:
        interval = self.db.wsettings.heartbeat_s
        while not self._stop.wait(interval):
            try:
                self._write_row({}, heartbeat_only=True)
            except Exception as exc:  # the next beat retries; the job's own writes retry harder
                log.warning("heartbeat of job %s failed: %s", self.job_id, exc)

    def _write_row(self, values: dict[str, Any], heartbeat_only: bool = False) -> None:
        def write(session: Session) -> None:
            result = session.execute(
                update(Job)
                .where(self.fence.owns())
                .values(heartbeat_at=utcnow(), **values)
                .returning(Job.cancel_requested)
            )
            row = result.first()
            if row is None:
                self._mark_lost()  # requeued or finished by someone else: stop working on it
            elif row[0]:
                self._cancel.set()

        if heartbeat_only:
            self.db.write(write, "heartbeat")
        else:
            self.db.write(write, f"progress of job {self.job_id}")

    def _mark_lost(self) -> None:
        self._lost.set()
        self._cancel.set()

    # -- what the pipeline calls ------------------------------------------------------------------
    def still_owns(self) -> bool:
        """Ask the database whether this attempt still owns the job (before a write elsewhere, e.g.
        to object storage); False also marks the job lost."""
        if self.lost:
            return False
        if not self.db.write(self.fence.holds, f"fence check of {self.fence}"):
            self._mark_lost()
        return not self.lost

    def cancelled(self) -> bool:
        """The engine's cancel check: True once a cancel was requested (or the job was taken away)."""
        return self._cancel.is_set()

    @property
    def lost(self) -> bool:
        """True when the job row no longer belongs to this worker (requeued or finished elsewhere)."""
        return self._lost.is_set()

    def enter(self, stage: str) -> None:
        """Start ``stage`` (one of ``stages``); always written, with a log line that says how long the
        previous stage took (the job's log is where users read stage durations)."""
        now = time.monotonic()
        previous, started = getattr(self, "_stage_entered", (None, now))
        self._stage_entered = (stage, now)
        took = f"; {previous} took {now - started:.1f} s" if previous else ""
        self.log(f"stage {stage}{took}")
        self.stage = stage
        self.fraction = self._offsets.get(stage, self.fraction)
        self._write_row({"stage": stage, "progress": self.fraction, "eta_s": self._eta()})
        self._last_write = time.monotonic()

    def progress(self, stage_fraction: float) -> None:
        """Fraction done of the current stage; written at most once per ``progress_every_s``."""
        share = self.stages.get(self.stage, 0.0)
        self.fraction = self._offsets.get(self.stage, 0.0) + share * min(1.0, max(0.0, stage_fraction))
        now = time.monotonic()
        if now - self._last_write >= self.db.wsettings.progress_every_s:
            self._last_write = now
            self._write_row({"progress": self.fraction, "eta_s": self._eta()})

    def log(self, message: str, level: str = "info") -> None:
        """Store one log line for the job (exposed by GET /v1/jobs/{id}/logs)."""
        log.info("job %s: %s", self.job_id, message)

        def write(session: Session) -> None:
            if self.fence.lock(session) is None:
                self._mark_lost()  # a late attempt's lines never reach a job that is not its own
                return
            append_log(session, self.job_id, message, level)

        self.db.write(write, "job log")

    def _eta(self) -> float | None:
        elapsed = time.monotonic() - self._started
        if self.fraction <= 0.02 or elapsed < 0.5:
            return None
        return round(elapsed * (1 - self.fraction) / self.fraction, 1)
