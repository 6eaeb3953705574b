"""Jobs: creation with its outbox message, scoped reads, filtered lists, events and logs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, bindparam, select
from sqlalchemy.orm import Session

from service.db.base import new_id, utcnow
from service.db.models import Artifact, Job, JobEvent, JobLog, OutboxMessage
from service.db.pagination import paginate
from service.errors import NotFoundError
from service.jobs import state

JOB_TOPIC = "jobs.run"


def create_job(
    session: Session,
    *,
    project_id: str,
    model_version_id: str,
    calib_dataset_id: str,
    eval_dataset_id: str | None,
    spec: dict[str, Any],
    schedule_id: str | None = None,
    rerun_of: str | None = None,
) -> Job:
    """Insert a queued job, its creation event and its outbox message (same transaction; caller commits)."""
    now = utcnow()
    job = Job(
        id=new_id(),
        project_id=project_id,
        model_version_id=model_version_id,
        calib_dataset_id=calib_dataset_id,
        eval_dataset_id=eval_dataset_id,
        schedule_id=schedule_id,
        rerun_of=rerun_of,
        technique=spec["technique"],
        compute=spec["compute"],
        priority=spec["priority"],
        spec_version=spec["spec_version"],
        spec=spec,
        status=state.QUEUED,
        progress=0.0,
        attempts=0,
        cancel_requested=False,
        created_at=now,
        updated_at=now,
    )
    session.add(job)  # the id is set above, so nothing needs flushing before commit
    state.record_created(session, job)
    session.add(
        OutboxMessage(
            topic=JOB_TOPIC, payload={"job_id": job.id, "queue": job.compute, "priority": job.priority}
        )
    )
    return job


# Built once: the status read is the API's hottest query (clients poll it).
_JOB_ROW = select(Job.__table__).where(
    Job.id == bindparam("job_id"), Job.project_id == bindparam("project_id")
)


def get_job_row(conn: Connection, project_id: str, job_id: str) -> RowMapping:
    """The job's columns as a mapping, without the ORM (the polling path); NotFoundError when absent."""
    row = conn.execute(_JOB_ROW, {"job_id": job_id, "project_id": project_id}).mappings().first()
    if row is None:
        raise NotFoundError(f"job {job_id} not found")
    return row


def get_job(session: Session, project_id: str, job_id: str) -> Job:
    """The project's job or NotFoundError (also for other projects' jobs)."""
    job = session.scalar(select(Job).where(Job.id == job_id, Job.project_id == project_id))
    if job is None:
        raise NotFoundError(f"job {job_id} not found")
    return job


def list_jobs(
    session: Session,
    project_id: str,
    *,
    limit: int,
    cursor: str | None,
    status: str | None = None,
    technique: str | None = None,
    model_version_ids: Sequence[str] | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> tuple[Sequence[Job], str | None]:
    """A page of the project's jobs, newest first, with optional filters."""
    stmt = select(Job).where(Job.project_id == project_id)
    if status:
        stmt = stmt.where(Job.status == status)
    if technique:
        stmt = stmt.where(Job.technique == technique)
    if model_version_ids is not None:
        stmt = stmt.where(Job.model_version_id.in_(model_version_ids))
    if created_after:
        stmt = stmt.where(Job.created_at >= created_after)
    if created_before:
        stmt = stmt.where(Job.created_at < created_before)
    return paginate(session, stmt, Job.id, limit, cursor)


def events_after(session: Session, job_id: str, after_id: int) -> Sequence[JobEvent]:
    return session.scalars(
        select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.id > after_id).order_by(JobEvent.id)
    ).all()


def logs_after(session: Session, job_id: str, after_id: int, limit: int) -> Sequence[JobLog]:
    return session.scalars(
        select(JobLog).where(JobLog.job_id == job_id, JobLog.id > after_id).order_by(JobLog.id).limit(limit)
    ).all()


def append_log(session: Session, job_id: str, message: str, level: str = "info") -> None:
    """Add one log line to a job (workers call this)."""
    session.add(JobLog(job_id=job_id, message=message, level=level))


def list_artifacts(session: Session, job: Job) -> Sequence[Artifact]:
    return session.scalars(select(Artifact).where(Artifact.job_id == job.id).order_by(Artifact.name)).all()


def add_artifact(
    session: Session, job: Job, name: str, storage_key: str, size: int, sha256: str | None, content_type: str
) -> Artifact:
    """Record an uploaded job output (workers call this after the object is stored)."""
    artifact = Artifact(
        job_id=job.id,
        project_id=job.project_id,
        name=name,
        storage_key=storage_key,
        size=size,
        sha256=sha256,
        content_type=content_type,
    )
    session.add(artifact)
    session.flush()
    return artifact
