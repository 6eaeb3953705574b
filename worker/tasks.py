"""Celery tasks: thin shells. ``run_job(job_id)`` claims the job in the database, runs the pipeline
and writes the outcome; the maintenance tasks call the relay's reconciler and the schedule tick.

Outcomes: success → the attempt's uploads published with succeeded in one fenced transaction; the
engine's own errors (bad input, unquantizable model) → failed at once (a retry cannot help); cancel →
cancelled; database/object store down past their retry budget, a failed final write, or any other
exception → requeued until ``max_attempts``, then failed with that reason. An attempt that lost its
job (worker/fence.py) writes nothing more and discards its uploads. A worker that dies mid-job leaves a stale heartbeat; the redelivered
message or the reconciler requeues it and the attempt counter bounds poisoned jobs.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import uuid
from pathlib import Path
from typing import Any

from celery import Celery
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.orm import Session

from core.errors import CancelledError, LowbitError
from service import request_context
from service.db.models import Job
from service.errors import UploadRejectedError
from service.jobs import state
from service.settings import Settings
from service.storage import ArtifactStore, make_store
from service.uploads.budgets import UploadBudgets
from worker.app import RECONCILE, RUN_JOB, SCHEDULE_TICK
from worker.claim import claim_job, finish_job, requeue_job
from worker.db import WorkerDb
from worker.device import device_label, job_device
from worker.fence import Fence, FenceLost
from worker.job_errors import job_error
from worker.memory_limit import is_out_of_memory
from worker.monitor import JobMonitor
from worker.pipeline.artifacts import discard, publish_results
from worker.pipeline.context import JobContext
from worker.pipeline.fetch import InputMissingError
from worker.pipeline.prepare import ModelNotQuantizableError
from worker.pipeline.run import STAGES, run_pipeline
from worker.retry import InfrastructureError
from worker.settings import WorkerSettings

log = logging.getLogger("lowbit.worker")
_RESOURCES: dict[int, tuple[WorkerDb, ArtifactStore]] = {}
LOST = "skipped: job taken away from this worker"


def resources(settings: Settings, wsettings: WorkerSettings) -> tuple[WorkerDb, ArtifactStore]:
    """This process's database handle and object store (built once per process and settings)."""
    key = id(settings)
    if key not in _RESOURCES:
        _RESOURCES[key] = (WorkerDb(settings, wsettings), make_store(settings))
    return _RESOURCES[key]


def execute_job(settings: Settings, wsettings: WorkerSettings, job_id: str) -> str:
    """Claim and run job ``job_id``; returns the status it ended in (or why it was not run)."""
    _load_engine()
    db, store = resources(settings, wsettings)
    worker = f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
    device = job_device(_compute_of(db, job_id))

    def claim(session: Session) -> Fence | str:
        found = claim_job(
            session,
            job_id,
            worker,
            max_attempts=wsettings.max_attempts,
            stale_after_s=wsettings.stale_after_s,
            hard_time_limit_s=wsettings.hard_time_limit_s,
            heartbeat_s=wsettings.heartbeat_s,
        )
        if found.job is None:
            return found.reason
        found.job.device = device_label(device)
        return Fence(job_id, found.job.attempts, worker)

    fence = db.write(claim, f"claim job {job_id}")
    if not isinstance(fence, Fence):
        log.info("job %s not run here: %s", job_id, fence)
        return f"skipped: {fence}"
    spec = db.write(lambda s: dict(s.get(Job, job_id).spec), "read job spec")  # type: ignore[union-attr]
    with (
        tempfile.TemporaryDirectory(prefix=f"lowbit-job-{job_id}-") as tmp,
        JobMonitor(db, fence, STAGES) as monitor,
    ):
        ctx = JobContext(
            job_id, spec, Path(tmp), store, monitor, wsettings, device=device,
            budgets=UploadBudgets.from_settings(settings),
        )  # fmt: skip
        outcome = _run_and_finish(ctx, db, fence)
        if outcome == LOST:
            discard(store, ctx.uploaded)  # nothing points at them: the attempt's prefix stays empty
            log.info("job %s: %s; its late writes were refused", job_id, LOST)
        return outcome


def _load_engine() -> None:
    """Import the engine before claiming: a pool process's first job imports torch, which on a loaded
    machine took 53 s (measured) and starved the heartbeat thread past the stale threshold, so a
    healthy attempt lost its job. Unclaimed, the job just waits queued meanwhile."""
    import core.graph
    import core.io
    import core.quantsim  # noqa: F401


def _compute_of(db: WorkerDb, job_id: str) -> str:
    return db.write(lambda s: j.compute if (j := s.get(Job, job_id)) else "cpu", "read job compute")


def _run_and_finish(ctx: JobContext, db: WorkerDb, fence: Fence) -> str:
    job_id, monitor = ctx.job_id, ctx.monitor

    def _error(exc: BaseException, **extra: Any) -> dict[str, Any]:
        return job_error(exc, ctx.workdir, ctx.spec, **extra)

    def finish(new_status: str, **fields: Any) -> str:
        return db.write(lambda s: finish_job(s, fence, new_status, **fields), f"finish job {job_id}")

    def retry_or_fail(error: dict[str, Any]) -> str:
        return db.write(lambda s: _retry_or_fail(s, fence, ctx.wsettings, error), "requeue job")

    try:
        metrics = run_pipeline(ctx, db)
    except FenceLost:
        return LOST
    except CancelledError as exc:
        if monitor.lost:
            return LOST
        monitor.log(f"cancelled: {exc}")
        return finish(state.CANCELLED, message=str(exc))
    except ModelNotQuantizableError as exc:
        return finish(state.FAILED, error=_error(exc, report=exc.report), message="model not quantizable")
    except (LowbitError, InputMissingError, UploadRejectedError) as exc:
        error = _error(exc)
        monitor.log(f"failed: {error['message']}", level="error")
        return finish(state.FAILED, error=error, message=error["message"][:500])
    except InfrastructureError as exc:
        # The database or the object store stayed down past the retry budget: not the job's fault, so
        # the attempt is counted and the job retried (failed only once its attempts are used up).
        monitor.log(f"attempt {fence.attempt} stopped: {exc}", level="warning")
        return retry_or_fail(_error(exc))
    except SoftTimeLimitExceeded as exc:
        limit = ctx.wsettings.soft_time_limit_s
        return finish(state.FAILED, error=_error(exc, message=f"job exceeded its time limit of {limit} s"))
    except Exception as exc:
        log.exception("job %s raised", job_id)  # the traceback goes to the worker's log only
        if is_out_of_memory(exc):  # the same input hits the same limit again: no retry
            error = _error(exc)
            monitor.log(f"failed: {error['message']}", level="error")
            return finish(state.FAILED, error=error, message=error["message"][:500])
        error = _error(exc)
        return retry_or_fail(error)
    if monitor.lost:
        return LOST
    try:
        published = db.write(lambda s: publish_results(s, fence, ctx.uploaded, metrics), "publish results")
    except InfrastructureError:
        raise  # the database is gone: nothing can be written; the reconciler requeues the attempt
    except Exception as exc:
        # Recording the outcome failed (e.g. a value the database refused): a failure of this attempt
        # with its true reason, never a silent loop that ends in a wrong "worker died" verdict.
        log.exception("job %s: recording its results failed", job_id)
        return retry_or_fail(_error(exc, message=f"recording the job's results failed: {exc}"[:4000]))
    if not published:
        return LOST
    after_schedule_run(db, job_id)
    return state.SUCCEEDED


def after_schedule_run(db: WorkerDb, job_id: str) -> None:
    """For a scheduled job: compare with the previous successful run; send the webhook if regressed."""
    from worker.schedules.regression import compare_run
    from worker.schedules.webhook import deliver

    def compare(session: Session) -> str | None:
        job = session.get(Job, job_id)
        if job is None or job.schedule_id is None:
            return None
        run = compare_run(session, job)
        return run.id if run is not None else None

    try:
        pending = db.write(compare, "compare scheduled run")
        if pending is not None:
            deliver(db, pending)
    except Exception:  # the job's outcome is written; the reconciler retries pending webhooks
        log.exception("regression check of job %s failed", job_id)


def _retry_or_fail(session: Session, fence: Fence, wsettings: WorkerSettings, error: dict[str, Any]) -> str:
    job = fence.lock(session)
    if job is None:
        current = session.get(Job, fence.job_id, populate_existing=True)
        return current.status if current is not None else "unknown"
    if job.status == state.RUNNING and job.attempts < wsettings.max_attempts:
        requeue_job(session, job, f"attempt {job.attempts} raised {error['type']}: {error['message'][:300]}")
        return state.QUEUED
    new = state.CANCELLED if job.status == state.CANCELLING else state.FAILED
    state.transition(session, job, new, error=error, message=f"failed after {job.attempts} attempts")
    return new


def register(app: Celery) -> None:
    """Register lowbit's tasks on ``app`` (called by worker.app.create_celery)."""
    settings: Settings = app.conf.lowbit_settings
    wsettings: WorkerSettings = app.conf.lowbit_worker_settings

    @app.task(name=RUN_JOB, acks_late=True, reject_on_worker_lost=True, bind=True)
    def run_job(self: Any, job_id: str) -> str:
        """Run job ``job_id`` (the message carries only the id; the spec is in the database). Log lines
        written meanwhile carry the job id and the id of the API request that created it."""
        req = self.request
        rid = getattr(req, "lowbit_request_id", None) or (getattr(req, "headers", None) or {}).get(
            "lowbit_request_id"
        )
        tokens = (request_context.request_id.set(rid), request_context.job_id.set(job_id))
        try:
            log.info("job %s: received", job_id)
            return execute_job(settings, wsettings, job_id)
        finally:
            request_context.job_id.reset(tokens[1])
            request_context.request_id.reset(tokens[0])

    @app.task(name=RECONCILE, acks_late=False)
    def reconcile_task() -> dict[str, int]:
        from worker.relay import reconcile

        db, _ = resources(settings, wsettings)
        return reconcile(db, app)

    @app.task(name=SCHEDULE_TICK, acks_late=False)
    def schedule_tick() -> int:
        from worker.schedules.tick import tick

        db, _ = resources(settings, wsettings)
        return tick(db)
