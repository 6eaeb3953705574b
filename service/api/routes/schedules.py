"""/v1/schedules: nightly requantization schedules (create, list, get, update, delete) and their runs.

The beat tick (worker/schedules/tick.py) enqueues due runs; missed runs after downtime run once.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.api.context import AppContext, Principal, app_context, db_session, page_limit, principal
from service.db.models import Job, ModelVersion
from service.db.repositories import references, resources
from service.db.repositories import schedules as repo
from service.db.schedule_tables import Schedule
from service.schemas.common import Page
from service.schemas.schedules import ScheduleCreate, ScheduleRead, ScheduleRunRead, ScheduleUpdate
from service.sealed_secrets import seal
from service.webhook_target import allowed_networks, check_webhook_target

router = APIRouter(prefix="/v1/schedules", tags=["schedules"])


def _read(schedule: Schedule) -> ScheduleRead:
    out = ScheduleRead.model_validate(schedule)
    out.has_webhook_secret = bool(schedule.webhook_secret)
    return out


def _sealed(values: dict[str, Any], ctx: AppContext) -> dict[str, Any]:
    """``values`` with the webhook secret encrypted at rest (service/sealed_secrets.py)."""
    if values.get("webhook_secret"):
        values = {**values, "webhook_secret": seal(values["webhook_secret"], ctx.settings.secret_key)}
    return values


@router.post("", status_code=201, response_model=ScheduleRead)
def create_schedule(
    body: ScheduleCreate,
    who: Principal = Depends(principal),
    ctx: AppContext = Depends(app_context),
    session: Session = Depends(db_session),
) -> ScheduleRead:
    """Create a schedule for one of the project's models (404 when the model name or a dataset of the
    template is not the project's)."""
    resources.get_model_by_name(session, who.project_id, body.model_name)
    references.check_references(session, who.project_id, body.template)
    if body.webhook_url is not None:
        check_webhook_target(body.webhook_url, allowed_networks(ctx.settings.webhook_allowed_networks))
    schedule = repo.create_schedule(session, who.project_id, _sealed(body.model_dump(), ctx))
    session.commit()
    return _read(schedule)


@router.get("", response_model=Page[ScheduleRead])
def list_schedules(
    cursor: str | None = None,
    limit: int | None = None,
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
    values = body.model_dump(exclude_unset=True)
    if values.get("model_name"):
        resources.get_model_by_name(session, who.project_id, values["model_name"])
    if values.get("template") is not None:
        references.check_references(session, who.project_id, values["template"])
    if values.get("webhook_url") is not None:
        check_webhook_target(values["webhook_url"], allowed_networks(ctx.settings.webhook_allowed_networks))
    repo.update_schedule(session, schedule, _sealed(values, ctx))
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
    limit: int | None = None,
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
