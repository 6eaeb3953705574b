"""Schedules page: each schedule's cron, next run, recent runs with their metric trend, and the
enable/disable forms."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from service.api.context import db_session
from service.dashboard import schedule_view
from service.dashboard.auth import Viewer, checked_viewer, current_viewer
from service.dashboard.router import PREFIX, DashboardRoute, renderer
from service.db.base import utcnow
from service.db.repositories import schedules as repo

router = APIRouter(route_class=DashboardRoute)

PAGE_SIZE = 25
RUNS_SHOWN = 10


@router.get("/schedules")
def schedules_list(
    request: Request,
    cursor: str | None = None,
    notice: str = "",
    viewer: Viewer = Depends(current_viewer),
    session: Session = Depends(db_session),
) -> Response:
    """The project's schedules with next run, last runs, trend chart and regression highlight."""
    schedules, nxt = repo.list_schedules(session, viewer.project_id, PAGE_SIZE, cursor or None)
    return renderer().page(
        request,
        "schedules.html",
        cards=schedule_view.cards(session, schedules, RUNS_SHOWN, utcnow()),
        trend_size=(schedule_view.TREND_WIDTH, schedule_view.TREND_HEIGHT),
        next_url=f"{PREFIX}/schedules?{urlencode({'cursor': nxt})}" if nxt else None,
        first_url=f"{PREFIX}/schedules" if cursor else None,
        notice={"enabled": "Schedule enabled.", "disabled": "Schedule disabled."}.get(notice, ""),
        nav="schedules",
    )


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
