"""Models and datasets pages: versions, sizes, and the jobs that used them."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from service.api.context import db_session
from service.dashboard import queries
from service.dashboard.auth import Viewer, current_viewer
from service.dashboard.router import PREFIX, DashboardRoute, renderer
from service.db.repositories import resources

router = APIRouter(route_class=DashboardRoute)

RECENT_JOBS = 20
PAGE_SIZE = 50


@router.get("/models")
def models_list(
    request: Request, viewer: Viewer = Depends(current_viewer), session: Session = Depends(db_session)
) -> Response:
    """Every model of the project with its versions (format, status, size) and job counts."""
    models = queries.project_models(session, viewer.project_id)
    counts = queries.job_counts_by_version(session, [v.id for m in models for v in m.versions])
    return renderer().page(
        request,
        "models.html",
        models=models,
        model_jobs={m.id: sum(counts.get(v.id, 0) for v in m.versions) for m in models},
        model_sizes={m.id: sum(v.size or 0 for v in m.versions) for m in models},
        nav="models",
    )


@router.get("/models/{model_id}")
def model_detail(
    request: Request,
    model_id: str,
    viewer: Viewer = Depends(current_viewer),
    session: Session = Depends(db_session),
) -> Response:
    """One model: its versions and the newest jobs that ran on any of them."""
    model = resources.get_model(session, viewer.project_id, model_id)
    versions = resources.list_versions(session, viewer.project_id, model.id)
    jobs = queries.jobs_for_versions(session, viewer.project_id, [v.id for v in versions], RECENT_JOBS)
    return renderer().page(
        request,
        "model.html",
        model=model,
        versions=versions,
        version_numbers={v.id: v.version for v in versions},
        job_counts=queries.job_counts_by_version(session, [v.id for v in versions]),
        jobs=jobs,
        all_jobs_url=f"{PREFIX}/jobs?{urlencode({'model': model.id})}",
        nav="models",
    )


@router.get("/datasets")
def datasets_list(
    request: Request,
    cursor: str | None = None,
    viewer: Viewer = Depends(current_viewer),
    session: Session = Depends(db_session),
) -> Response:
    """The project's datasets (kind, format, status, size) with how many jobs used each."""
    datasets, nxt = queries.list_datasets(session, viewer.project_id, PAGE_SIZE, cursor or None)
    return renderer().page(
        request,
        "datasets.html",
        datasets=datasets,
        job_counts=queries.job_counts_by_dataset(session, viewer.project_id),
        next_url=f"{PREFIX}/datasets?{urlencode({'cursor': nxt})}" if nxt else None,
        first_url=f"{PREFIX}/datasets" if cursor else None,
        nav="datasets",
    )


@router.get("/datasets/{dataset_id}")
def dataset_detail(
    request: Request,
    dataset_id: str,
    viewer: Viewer = Depends(current_viewer),
    session: Session = Depends(db_session),
) -> Response:
    """One dataset and the newest jobs that used it for calibration or evaluation."""
    dataset = resources.get_dataset(session, viewer.project_id, dataset_id)
    return renderer().page(
        request,
        "dataset.html",
        dataset=dataset,
        jobs=queries.jobs_for_dataset(session, viewer.project_id, dataset.id, RECENT_JOBS),
        nav="datasets",
    )
