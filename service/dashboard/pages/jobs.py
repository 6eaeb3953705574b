"""Jobs pages: the filtered, paginated list and a job's detail, plus its cancel and re-run forms."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from service.api.context import AppContext, app_context, db_session
from service.dashboard import queries
from service.dashboard.auth import Viewer, checked_viewer, current_viewer
from service.dashboard.metrics_table import COLUMNS, comparison
from service.dashboard.router import PREFIX, DashboardRoute, renderer
from service.dashboard.technique_notes import analysis, ptq_notes
from service.dashboard.training_curves import training_curves
from service.db.models import Artifact, Job
from service.db.repositories import jobs as jobs_repo
from service.db.repositories import resources
from service.errors import InvalidInputError, NotFoundError
from service.jobs import state
from service.schemas.jobs import TECHNIQUE_PARAMS

router = APIRouter(route_class=DashboardRoute)

PAGE_SIZE = 25
LOG_TAIL_LINES = 50
TECHNIQUES = tuple(TECHNIQUE_PARAMS)
_INLINE_TYPES = {"html": "text/html; charset=utf-8", "htm": "text/html; charset=utf-8", "png": "image/png",
                 "svg": "image/svg+xml", "jpg": "image/jpeg", "jpeg": "image/jpeg"}  # fmt: skip


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value and value not in allowed:
        raise InvalidInputError(f"unknown {name} {value!r}; choose one of {', '.join(allowed)}")
    return value


@router.get("/jobs")
def jobs_list(
    request: Request,
    status: str = "",
    model: str = "",
    technique: str = "",
    schedule: str = "",
    q: str = "",
    cursor: str | None = None,
    viewer: Viewer = Depends(current_viewer),
    session: Session = Depends(db_session),
) -> Response:
    """The project's jobs, newest first, filtered by status, model, technique, schedule and search."""
    filters = queries.JobFilters(
        status=_choice("status", status, state.STATUSES),
        model_id=model[:26],
        technique=_choice("technique", technique, TECHNIQUES),
        schedule_id=schedule[:26],
        q=q[:200],
    )
    rows, nxt = queries.list_jobs(session, viewer.project_id, filters, PAGE_SIZE, cursor or None)
    query = {"status": status, "model": model, "technique": technique, "schedule": schedule, "q": q}
    query = {k: v for k, v in query.items() if v}
    live = any(r.job.status not in state.TERMINAL for r in rows)
    return renderer().page(
        request,
        "jobs.html",
        rows=rows,
        filters=filters,
        models=queries.project_models(session, viewer.project_id),
        schedules=queries.project_schedule_choices(session, viewer.project_id),
        statuses=state.STATUSES,
        techniques=TECHNIQUES,
        next_url=f"{PREFIX}/jobs?{urlencode({**query, 'cursor': nxt})}" if nxt else None,
        first_url=f"{PREFIX}/jobs?{urlencode(query)}" if cursor else None,
        live=live,
        nav="jobs",
    )


def _artifact_links(ctx: AppContext, artifacts: list[Artifact]) -> list[dict[str, Any]]:
    expiry = ctx.settings.presign_expiry_s
    links = []
    for a in artifacts:
        lower = a.name.lower()
        suffix = lower.rsplit(".", 1)[-1]
        kind = "plot" if lower.endswith((".png", ".svg", ".jpg", ".jpeg")) else "file"
        if lower.endswith((".html", ".htm")):
            kind = "report"
        links.append(
            {
                "artifact": a,
                "kind": kind,
                "url": ctx.store.presign_get(a.storage_key, expiry, filename=a.name),
                # Inline views (plots, reports) must not be served as attachments.
                "view_url": (
                    ctx.store.presign_get(a.storage_key, expiry, inline_type=_INLINE_TYPES[suffix])
                    if suffix in _INLINE_TYPES
                    else None
                ),
            }
        )
    return links


@router.get("/jobs/{job_id}")
def job_detail(
    request: Request,
    job_id: str,
    notice: str = "",
    viewer: Viewer = Depends(current_viewer),
    ctx: AppContext = Depends(app_context),
    session: Session = Depends(db_session),
) -> Response:
    """One job: spec, timeline, progress, log tail, metrics, plots, downloads, cancel and re-run."""
    job = jobs_repo.get_job(session, viewer.project_id, job_id)
    version = resources.get_version_by_id(session, viewer.project_id, job.model_version_id)
    datasets = {}
    for role, did in (("Calibration", job.calib_dataset_id), ("Evaluation", job.eval_dataset_id)):
        if did:
            try:
                datasets[role] = resources.get_dataset(session, viewer.project_id, did)
            except NotFoundError:
                continue
    artifacts = _artifact_links(ctx, list(jobs_repo.list_artifacts(session, job)))
    return renderer().page(
        request,
        "job.html",
        job=job,
        version=version,
        model=version.model,
        datasets=datasets,
        events=queries.job_events(session, job.id),
        logs=queries.log_tail(session, job.id, LOG_TAIL_LINES),
        metrics=comparison(job.metrics),
        curves=training_curves(job.metrics),
        ptq_notes=ptq_notes(job.metrics),
        analysis=analysis(job.metrics),
        columns=COLUMNS,
        artifacts=artifacts,
        plots=[a for a in artifacts if a["kind"] == "plot"],
        reports=[a for a in artifacts if a["kind"] == "report"],
        cancellable=job.status in (state.QUEUED, state.RUNNING),
        terminal=job.status in state.TERMINAL,
        notice={"cancel": "Cancellation requested.", "rerun": "Re-run queued."}.get(notice, ""),
        nav="jobs",
    )


@router.post("/jobs/{job_id}/cancel")
def cancel_job(
    job_id: str,
    viewer: Viewer = Depends(checked_viewer),
    session: Session = Depends(db_session),
    ctx: AppContext = Depends(app_context),
) -> Response:
    """Cancel like the API does: queued jobs stop at once, running ones become ``cancelling``."""
    job: Job = jobs_repo.get_job(session, viewer.project_id, job_id)
    state.request_cancel(session, job)
    session.commit()
    if ctx.status_cache is not None:  # API clients polling this job see the cancel at once
        ctx.status_cache.drop(job_id)
    return RedirectResponse(f"{PREFIX}/jobs/{job.id}?notice=cancel", status_code=303)


@router.post("/jobs/{job_id}/rerun")
def rerun_job(
    job_id: str, viewer: Viewer = Depends(checked_viewer), session: Session = Depends(db_session)
) -> Response:
    """A new queued job with the same spec and input versions; the browser lands on it."""
    old = jobs_repo.get_job(session, viewer.project_id, job_id)
    job = jobs_repo.create_job(
        session,
        project_id=old.project_id,
        model_version_id=old.model_version_id,
        calib_dataset_id=old.calib_dataset_id,
        eval_dataset_id=old.eval_dataset_id,
        spec=old.spec,
        schedule_id=None,
        rerun_of=old.id,
    )
    session.commit()
    return RedirectResponse(f"{PREFIX}/jobs/{job.id}?notice=rerun", status_code=303)
