"""Schedules: project-scoped CRUD and run listings (the beat tick lives in worker/schedules/)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.base import utcnow
from service.db.pagination import paginate
from service.db.schedule_tables import Schedule, ScheduleRun
from service.errors import NotFoundError


def create_schedule(session: Session, project_id: str, values: dict[str, Any]) -> Schedule:
    """Insert a schedule from validated ScheduleCreate values (caller commits)."""
    schedule = Schedule(project_id=project_id, **values)
    session.add(schedule)
    session.flush()
    return schedule


def get_schedule(session: Session, project_id: str, schedule_id: str) -> Schedule:
    """The project's schedule or NotFoundError (also for other projects' schedules)."""
    found = session.scalar(
        select(Schedule).where(Schedule.id == schedule_id, Schedule.project_id == project_id)
    )
    if found is None:
        raise NotFoundError(f"schedule {schedule_id} not found")
    return found


def list_schedules(
    session: Session, project_id: str, limit: int, cursor: str | None
) -> tuple[Sequence[Schedule], str | None]:
    return paginate(
        session, select(Schedule).where(Schedule.project_id == project_id), Schedule.id, limit, cursor
    )


def update_schedule(session: Session, schedule: Schedule, values: dict[str, Any]) -> Schedule:
    """Apply the given fields; a changed cron or time zone keeps the last run time (no catch-up burst)."""
    for key, value in values.items():
        setattr(schedule, key, value)
    schedule.updated_at = utcnow()
    session.flush()
    return schedule


def delete_schedule(session: Session, schedule: Schedule) -> None:
    session.delete(schedule)


def list_runs(
    session: Session, schedule: Schedule, limit: int, cursor: str | None
) -> tuple[Sequence[ScheduleRun], str | None]:
    stmt = select(ScheduleRun).where(ScheduleRun.schedule_id == schedule.id)
    return paginate(session, stmt, ScheduleRun.id, limit, cursor)
