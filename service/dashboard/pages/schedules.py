"""Schedules page: each schedule's cron, next run, recent runs with their metric trend, the
enable/disable forms, and the forms that create and edit schedules (checked like POST / PATCH
/v1/schedules; a rejected form comes back with the API's message beside the field)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from service import schedule_changes
from service.api.context import AppContext, app_context, db_session
from service.dashboard import queries, schedule_view
from service.dashboard.auth import Viewer, checked_viewer, current_viewer
from service.dashboard.router import PREFIX, DashboardRoute, renderer
from service.dashboard.schedule_form import (
    FormError,
    FormRejected,
    ScheduleFields,
    checked_body,
    error_of,
    fields_of,
    posted_fields,
)
from service.db.base import utcnow
from service.db.repositories import schedules as repo
from service.db.schedule_tables import Schedule
from service.errors import ServiceError, http_status_for
from service.schemas.schedules import ScheduleCreate, ScheduleUpdate

router = APIRouter(route_class=DashboardRoute)

PAGE_SIZE = 25
RUNS_SHOWN = 10


NOTICES = {"enabled": "Schedule enabled.", "disabled": "Schedule disabled.", "created": "Schedule created.",
           "updated": "Schedule updated."}  # fmt: skip


def _form_choices(session: Session, project_id: str) -> dict[str, Any]:
    """The pickers' options: the project's models and datasets by name."""
    return {
        "models": [m.name for m in queries.project_models(session, project_id)],
        "datasets": queries.project_dataset_choices(session, project_id),
    }


def _list_page(
    request: Request,
    session: Session,
    viewer: Viewer,
    cursor: str | None,
    notice: str = "",
    fields: ScheduleFields | None = None,
    error: FormError | None = None,
) -> Response:
    schedules, nxt = repo.list_schedules(session, viewer.project_id, PAGE_SIZE, cursor or None)
    return renderer().page(
        request,
        "schedules.html",
        status_code=error.status if error else 200,
        cards=schedule_view.cards(session, schedules, RUNS_SHOWN, utcnow()),
        trend_size=(schedule_view.TREND_WIDTH, schedule_view.TREND_HEIGHT),
        next_url=f"{PREFIX}/schedules?{urlencode({'cursor': nxt})}" if nxt else None,
        first_url=f"{PREFIX}/schedules" if cursor else None,
        notice=NOTICES.get(notice, ""),
        form=fields or ScheduleFields(),
        form_error=error,
        **_form_choices(session, viewer.project_id),
        nav="schedules",
    )


@router.get("/schedules")
def schedules_list(
    request: Request,
    cursor: str | None = None,
    notice: str = "",
    viewer: Viewer = Depends(current_viewer),
    session: Session = Depends(db_session),
) -> Response:
    """The project's schedules with next run, last runs, trend chart and regression highlight, and the
    form that creates one."""
    return _list_page(request, session, viewer, cursor, notice)


@router.post("/schedules")
def create_schedule(
    request: Request,
    fields: ScheduleFields = Depends(posted_fields),
    viewer: Viewer = Depends(checked_viewer),
    ctx: AppContext = Depends(app_context),
    session: Session = Depends(db_session),
) -> Response:
    """Create a schedule from the form as POST /v1/schedules would; errors come back in the form."""
    try:
        body = checked_body(fields, editing=False)
        assert isinstance(body, ScheduleCreate)
        schedule = schedule_changes.create(session, viewer.project_id, body, ctx.settings)
    except FormRejected as exc:
        return _list_page(request, session, viewer, None, fields=fields.without_secret(), error=exc.error)
    except ServiceError as exc:
        session.rollback()
        error = error_of(exc, http_status_for(exc))
        return _list_page(request, session, viewer, None, fields=fields.without_secret(), error=error)
    session.commit()
    return RedirectResponse(f"{PREFIX}/schedules?notice=created#schedule-{schedule.id}", status_code=303)


def _edit_page(
    request: Request,
    session: Session,
    viewer: Viewer,
    schedule: Schedule,
    fields: ScheduleFields,
    error: FormError | None = None,
) -> Response:
    return renderer().page(
        request,
        "schedule_edit.html",
        status_code=error.status if error else 200,
        schedule=schedule,
        form=fields,
        form_error=error,
        **_form_choices(session, viewer.project_id),
        nav="schedules",
    )


@router.get("/schedules/{schedule_id}/edit")
def edit_schedule_form(
    request: Request,
    schedule_id: str,
    viewer: Viewer = Depends(current_viewer),
    session: Session = Depends(db_session),
) -> Response:
    """The schedule's form, filled with what is stored (the webhook secret stays hidden)."""
    schedule = repo.get_schedule(session, viewer.project_id, schedule_id)
    return _edit_page(request, session, viewer, schedule, fields_of(schedule))


@router.post("/schedules/{schedule_id}/edit")
def edit_schedule(
    request: Request,
    schedule_id: str,
    fields: ScheduleFields = Depends(posted_fields),
    viewer: Viewer = Depends(checked_viewer),
    ctx: AppContext = Depends(app_context),
    session: Session = Depends(db_session),
) -> Response:
    """Apply the form as PATCH /v1/schedules/{id} would (an empty secret keeps the stored one)."""
    schedule = repo.get_schedule(session, viewer.project_id, schedule_id)
    try:
        body = checked_body(fields, editing=True)
        assert isinstance(body, ScheduleUpdate)
        schedule_changes.update(session, viewer.project_id, schedule, body, ctx.settings)
    except FormRejected as exc:
        return _edit_page(request, session, viewer, schedule, fields.without_secret(), exc.error)
    except ServiceError as exc:
        session.rollback()
        schedule = repo.get_schedule(session, viewer.project_id, schedule_id)
        error = error_of(exc, http_status_for(exc))
        return _edit_page(request, session, viewer, schedule, fields.without_secret(), error)
    session.commit()
    return RedirectResponse(f"{PREFIX}/schedules?notice=updated#schedule-{schedule.id}", status_code=303)


def _set_enabled(session: Session, viewer: Viewer, schedule_id: str, enabled: bool) -> Response:
    schedule = repo.get_schedule(session, viewer.project_id, schedule_id)
    repo.update_schedule(session, schedule, {"enabled": enabled})
    session.commit()
    notice = "enabled" if enabled else "disabled"
    return RedirectResponse(f"{PREFIX}/schedules?notice={notice}#schedule-{schedule.id}", status_code=303)


@router.post("/schedules/{schedule_id}/enable")
def enable_schedule(
    schedule_id: str, viewer: Viewer = Depends(checked_viewer), session: Session = Depends(db_session)
) -> Response:
    """Enable like PATCH /v1/schedules does; a missed fire time then runs once (the beat's policy)."""
    return _set_enabled(session, viewer, schedule_id, True)


@router.post("/schedules/{schedule_id}/disable")
def disable_schedule(
    schedule_id: str, viewer: Viewer = Depends(checked_viewer), session: Session = Depends(db_session)
) -> Response:
    """Disable: the beat enqueues nothing for it until it is enabled again."""
    return _set_enabled(session, viewer, schedule_id, False)
