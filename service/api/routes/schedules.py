"""/v1/schedules: nightly requantization schedules (create, list, get, update, delete) and their runs.

The beat tick (worker/schedules/tick.py) enqueues due runs; missed runs after downtime run once.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from service import schedule_changes
from service.api.context import (
    AppContext,
    PageLimit,
    Principal,
    app_context,
    db_session,
    page_limit,
    principal,
)
from service.db.models import Job, ModelVersion
from service.db.repositories import schedules as repo
from service.db.schedule_tables import Schedule
from service.schemas.common import Page
from service.schemas.schedules import ScheduleCreate, ScheduleRead, ScheduleRunRead, ScheduleUpdate

router = APIRouter(prefix="/v1/schedules", tags=["schedules"])


def _read(schedule: Schedule) -> ScheduleRead:
    out = ScheduleRead.model_validate(schedule)
    out.has_webhook_secret = bool(schedule.webhook_secret)
    return out


@router.post("", status_code=201, response_model=ScheduleRead)
def create_schedule(
    body: ScheduleCreate,
    who: Principal = Depends(principal),
    ctx: AppContext = Depends(app_context),
    session: Session = Depends(db_session),
) -> ScheduleRead:
    """Create a schedule for one of the project's models (404 when the model name or a dataset of the
    template is not the project's)."""
    schedule = schedule_changes.create(session, who.project_id, body, ctx.settings)
    session.commit()
    return _read(schedule)


@router.get("", response_model=Page[ScheduleRead])
def list_schedules(
    cursor: str | None = None,
    limit: PageLimit = None,
    who: Principal = Depends(principal),
    ctx: AppContext = Depends(app_context),
    session: Session = Depends(db_session),
) -> Page[ScheduleRead]:
    rows, nxt = repo.list_schedules(session, who.project_id, page_limit(ctx, limit), cursor)
    return Page(items=[_read(s) for s in rows], next_cursor=nxt)


@router.get("/{schedule_id}", response_model=ScheduleRead)
def get_schedule(
    schedule_id: str, who: Principal = Depends(principal), session: Session = Depends(db_session)
) -> ScheduleRead:
    return _read(repo.get_schedule(session, who.project_id, schedule_id))


@router.patch("/{schedule_id}", response_model=ScheduleRead)
def update_schedule(
    schedule_id: str,
    body: ScheduleUpdate,
    who: Principal = Depends(principal),
    ctx: AppContext = Depends(app_context),
    session: Session = Depends(db_session),
) -> ScheduleRead:
    """Change the given fields (omitted ones stay)."""
    schedule = repo.get_schedule(session, who.project_id, schedule_id)
    schedule_changes.update(session, who.project_id, schedule, body, ctx.settings)
    session.commit()
    return _read(schedule)


@router.delete("/{schedule_id}", status_code=204)
def delete_schedule(
    schedule_id: str, who: Principal = Depends(principal), session: Session = Depends(db_session)
) -> Response:
    repo.delete_schedule(session, repo.get_schedule(session, who.project_id, schedule_id))
    session.commit()
    return Response(status_code=204)


@router.get("/{schedule_id}/runs", response_model=Page[ScheduleRunRead])
def list_runs(
    schedule_id: str,
    cursor: str | None = None,
    limit: PageLimit = None,
    who: Principal = Depends(principal),
    ctx: AppContext = Depends(app_context),
    session: Session = Depends(db_session),
) -> Page[ScheduleRunRead]:
    """The schedule's runs, newest first, with their regression verdict and webhook state."""
    schedule = repo.get_schedule(session, who.project_id, schedule_id)
    rows, nxt = repo.list_runs(session, schedule, page_limit(ctx, limit), cursor)
    items = [ScheduleRunRead.model_validate(r) for r in rows]
    # Which model version each run quantized: runs compare versions, so the version and its hash say
    # what was compared (one query for the page).
    job_ids = [i.job_id for i in items if i.job_id]
    if job_ids:
        found = session.execute(
            select(Job.id, ModelVersion.version, ModelVersion.blob_sha256)
            .join(ModelVersion, ModelVersion.id == Job.model_version_id)
            .where(Job.id.in_(job_ids), Job.project_id == who.project_id)
        ).all()
        versions = {job_id: (number, sha) for job_id, number, sha in found}
        for item in items:
            if item.job_id in versions:
                item.model_version, item.model_sha256 = versions[item.job_id]
    return Page(items=items, next_cursor=nxt)
