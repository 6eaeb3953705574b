"""Read queries behind the dashboard pages, always scoped to the viewer's project.

The API's repositories answer one resource at a time; the pages also need names joined in (which model a
job ran on), free-text search and the "which jobs used this" lists, gathered here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from service.db.models import Dataset, Job, JobEvent, JobLog, Model, ModelVersion
from service.db.pagination import paginate
from service.db.schedule_tables import Schedule


@dataclass(frozen=True)
class JobFilters:
    """The jobs list's filters; empty strings mean "any"."""

    status: str = ""
    model_id: str = ""
    technique: str = ""
    schedule_id: str = ""
    q: str = ""

    def active(self) -> bool:
        return any((self.status, self.model_id, self.technique, self.schedule_id, self.q))


@dataclass(frozen=True)
class JobRow:
    job: Job
    model_name: str
    model_version: int


def list_jobs(
    session: Session, project_id: str, filters: JobFilters, limit: int, cursor: str | None
) -> tuple[list[JobRow], str | None]:
    """A page of the project's jobs (newest first) matching ``filters``, with model names."""
    stmt = select(Job).where(Job.project_id == project_id)
    if filters.status:
        stmt = stmt.where(Job.status == filters.status)
    if filters.technique:
        stmt = stmt.where(Job.technique == filters.technique)
    if filters.schedule_id:
        stmt = stmt.where(Job.schedule_id == filters.schedule_id)
    if filters.model_id:
        versions = select(ModelVersion.id).where(
            ModelVersion.model_id == filters.model_id, ModelVersion.project_id == project_id
        )
        stmt = stmt.where(Job.model_version_id.in_(versions))
    if filters.q:
        # Search matches a job id prefix or a model name substring (case-insensitive).
        needle = filters.q.strip().lower()
        escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        named = (
            select(ModelVersion.id)
            .join(Model, Model.id == ModelVersion.model_id)
            .where(Model.project_id == project_id, func.lower(Model.name).like(f"%{escaped}%", escape="\\"))
        )
        stmt = stmt.where(
            or_(func.lower(Job.id).like(f"{escaped}%", escape="\\"), Job.model_version_id.in_(named))
        )
    jobs, nxt = paginate(session, stmt, Job.id, limit, cursor)
    return with_model_names(session, jobs), nxt


def with_model_names(session: Session, jobs: Sequence[Job]) -> list[JobRow]:
    """``jobs`` paired with the name and version number of the model each ran on."""
    ids = {j.model_version_id for j in jobs}
    names: dict[str, tuple[str, int]] = {}
    if ids:
        for vid, name, number in session.execute(
            select(ModelVersion.id, Model.name, ModelVersion.version)
            .join(Model, Model.id == ModelVersion.model_id)
            .where(ModelVersion.id.in_(ids))
        ):
            names[vid] = (name, number)
    return [JobRow(j, *names.get(j.model_version_id, ("?", 0))) for j in jobs]


def project_models(session: Session, project_id: str) -> Sequence[Model]:
    """All models of the project by name (the jobs filter's choices and the models page)."""
    return session.scalars(select(Model).where(Model.project_id == project_id).order_by(Model.name)).all()


def project_schedule_choices(session: Session, project_id: str) -> list[tuple[str, str]]:
    """(id, label) of the project's schedules and of schedule ids its jobs carry (the jobs filter's
    choices): a schedule's name, or its bare id once the schedule is deleted."""
    names: dict[str, str] = {
        sid: name
        for sid, name in session.execute(
            select(Schedule.id, Schedule.name).where(Schedule.project_id == project_id)
        )
    }
    used = session.scalars(
        select(Job.schedule_id).where(Job.project_id == project_id, Job.schedule_id.is_not(None)).distinct()
    )
    ids = set(names) | {sid for sid in used if sid}
    return sorted(((sid, names.get(sid, sid)) for sid in ids), key=lambda c: (c[1], c[0]))


def job_events(session: Session, job_id: str) -> Sequence[JobEvent]:
    return session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)).all()


def log_tail(session: Session, job_id: str, lines: int) -> list[JobLog]:
    """The last ``lines`` log lines of a job, oldest first."""
    rows = session.scalars(
        select(JobLog).where(JobLog.job_id == job_id).order_by(JobLog.id.desc()).limit(lines)
    ).all()
    return list(reversed(rows))


def jobs_for_versions(session: Session, project_id: str, version_ids: Sequence[str], limit: int) -> list[Job]:
    """The newest jobs that ran on any of ``version_ids``."""
    if not version_ids:
        return []
    return list(
        session.scalars(
            select(Job)
            .where(Job.project_id == project_id, Job.model_version_id.in_(version_ids))
            .order_by(Job.id.desc())
            .limit(limit)
        )
    )


def jobs_for_dataset(session: Session, project_id: str, dataset_id: str, limit: int) -> list[JobRow]:
    """The newest jobs that used ``dataset_id`` for calibration or evaluation."""
    jobs = session.scalars(
        select(Job)
        .where(
            Job.project_id == project_id,
            or_(Job.calib_dataset_id == dataset_id, Job.eval_dataset_id == dataset_id),
        )
        .order_by(Job.id.desc())
        .limit(limit)
    ).all()
    return with_model_names(session, jobs)


def job_counts_by_version(session: Session, version_ids: Sequence[str]) -> dict[str, int]:
    if not version_ids:
        return {}
    rows = session.execute(
        select(Job.model_version_id, func.count())
        .where(Job.model_version_id.in_(version_ids))
        .group_by(Job.model_version_id)
    ).all()
    return {vid: int(n) for vid, n in rows}


def job_counts_by_dataset(session: Session, project_id: str) -> dict[str, int]:
    """dataset id -> number of jobs that used it (calibration or evaluation)."""
    counts: dict[str, int] = {}
    for column in (Job.calib_dataset_id, Job.eval_dataset_id):
        for did, n in session.execute(
            select(column, func.count())
            .where(Job.project_id == project_id, column.is_not(None))
            .group_by(column)
        ):
            if did is not None:
                counts[did] = counts.get(did, 0) + int(n)
    return counts


def list_datasets(
    session: Session, project_id: str, limit: int, cursor: str | None
) -> tuple[Sequence[Dataset], str | None]:
    return paginate(
        session, select(Dataset).where(Dataset.project_id == project_id), Dataset.id, limit, cursor
    )


def project_dataset_choices(session: Session, project_id: str) -> list[tuple[str, str]]:
    """(id, label) of the project's datasets by name, for the schedule form's pickers; the label
    carries the kind and a short id, since names need not be unique."""
    rows = session.execute(
        select(Dataset.id, Dataset.name, Dataset.kind)
        .where(Dataset.project_id == project_id)
        .order_by(Dataset.name, Dataset.id)
    )
    return [(did, f"{name} ({kind}, {did[-6:]})") for did, name, kind in rows]
