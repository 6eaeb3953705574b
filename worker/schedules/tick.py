"""The beat tick: enqueue each enabled schedule's due run, exactly once.

Due time: the most recent cron fire time (in the schedule's time zone) at or before now. It runs
when it is later than the schedule's last enqueued time; a new schedule's first run is the first
fire time not earlier than one minute before its creation.

Missed-run policy: after downtime, only the most recent missed fire time runs (once), never one run
per missed slot.

Exactly once: the run row is unique per (schedule, scheduled_for); a second beat (or a retried tick)
inserting the same row gets an IntegrityError and enqueues nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.db.base import utcnow
from service.db.models import Model, ModelVersion
from service.db.repositories.jobs import create_job
from service.db.repositories.references import check_references
from service.db.schedule_tables import Schedule, ScheduleRun
from service.errors import NotFoundError
from worker.db import WorkerDb

log = logging.getLogger("lowbit.schedules")


def due_time(schedule: Schedule, now: datetime) -> datetime | None:
    """The fire time to run at ``now`` (UTC), or None when nothing is due."""
    tz = ZoneInfo(schedule.timezone)
    latest = croniter(schedule.cron, now.astimezone(tz)).get_prev(datetime).astimezone(UTC)
    floor = schedule.last_scheduled_for or (schedule.created_at - timedelta(minutes=1))
    return latest if latest > floor else None


def _latest_ready_version(session: Session, schedule: Schedule) -> ModelVersion | None:
    return session.scalar(
        select(ModelVersion)
        .join(Model, Model.id == ModelVersion.model_id)
        .where(
            Model.project_id == schedule.project_id,
            Model.name == schedule.model_name,
            ModelVersion.status == "ready",
        )
        .order_by(ModelVersion.version.desc())
        .limit(1)
    )


def enqueue_due(session: Session, schedule: Schedule, now: datetime) -> ScheduleRun | None:
    """Insert the due run of ``schedule`` and its job (same transaction; caller commits).

    Returns None when nothing is due or another tick already inserted the run (IntegrityError,
    raised by the flush inside a savepoint so the caller's transaction stays usable).
    """
    due = due_time(schedule, now)
    if due is None:
        return None
    run = ScheduleRun(
        schedule_id=schedule.id, scheduled_for=due, status="enqueued", message="", webhook_attempts=0
    )
    try:
        with session.begin_nested():
            session.add(run)
            session.flush()
    except IntegrityError:
        return None
    schedule.last_scheduled_for = due
    version = _latest_ready_version(session, schedule)
    if version is None:
        run.status, run.message = "skipped", f"model {schedule.model_name!r} has no ready version"
        return run
    spec = {**schedule.template, "model_id": version.model_id, "model_version": version.version}
    try:  # a template stored before its ids were checked must not run on another project's data
        check_references(session, schedule.project_id, spec)
    except NotFoundError as exc:
        run.status, run.message = "skipped", exc.message
        return run
    job = create_job(
        session,
        project_id=schedule.project_id,
        model_version_id=version.id,
        calib_dataset_id=spec["calib_dataset_id"],
        eval_dataset_id=spec.get("eval_dataset_id"),
        spec=spec,
        schedule_id=schedule.id,
    )
    run.job_id = job.id
    return run


def tick(db: WorkerDb, now: datetime | None = None) -> int:
    """Enqueue the due runs of all enabled schedules; returns how many runs this call inserted."""
    now = now or utcnow()
    ids = db.write(
        lambda s: list(s.scalars(select(Schedule.id).where(Schedule.enabled.is_(True)))), "list schedules"
    )
    inserted = 0
    for schedule_id in ids:

        def one(session: Session, schedule_id: str = schedule_id) -> bool:
            schedule = session.get(Schedule, schedule_id)
            if schedule is None or not schedule.enabled:
                return False
            return enqueue_due(session, schedule, now) is not None

        try:
            inserted += int(db.write(one, f"tick schedule {schedule_id}"))
        except IntegrityError:
            pass  # the other beat committed the same run first
        except Exception as exc:  # one broken schedule must not stop the others
            log.warning("schedule %s not ticked: %s", schedule_id, exc)
    return inserted


def run_ticks(db: WorkerDb, every_s: float, stop: threading.Event) -> None:
    """Tick now, then every ``every_s`` seconds just after each multiple of it on the wall clock (so an
    every-minute tick lands a second after each cron minute), until ``stop``.

    Beat runs this in its own process (worker/app.py), never through a job queue: a backlog of jobs
    delayed queued ticks for minutes and expired ones were dropped (issue 13), losing fire times.
    """
    while not stop.is_set():
        try:
            inserted = tick(db)
            log.info("schedule tick: %d due run(s) enqueued", inserted)
        except Exception as exc:  # the database is down: the next tick catches up (missed-run policy)
            log.warning("schedule tick failed: %s", exc)
        stop.wait(every_s - (time.time() % every_s) + min(1.0, every_s / 10))
