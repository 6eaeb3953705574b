"""Jobs: creation with its outbox message, scoped reads, filtered lists, events and logs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, Insert, RowMapping, Table, bindparam, insert, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session, make_transient_to_detached

from service import request_context
from service.db.base import new_id, utcnow
from service.db.models import Artifact, Job, JobEvent, JobLog, ModelVersion, OutboxMessage
from service.db.pagination import paginate
from service.errors import NotFoundError
from service.jobs import state

if TYPE_CHECKING:
    from service.db.async_pg import AsyncPgPool

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
    """Insert a queued job, its creation event and its outbox message (same transaction; caller commits).

    The rows are written by :func:`insert_job`; the returned Job is attached to ``session`` as a
    persistent object (no INSERT of its own, no SELECT), for callers that keep working with it."""
    values = insert_job(
        session.connection(),
        project_id=project_id,
        model_version_id=model_version_id,
        calib_dataset_id=calib_dataset_id,
        eval_dataset_id=eval_dataset_id,
        spec=spec,
        schedule_id=schedule_id,
        rerun_of=rerun_of,
    )
    job = Job(**values)
    make_transient_to_detached(job)
    session.add(job)
    return job


def insert_job(
    conn: Connection,
    *,
    project_id: str,
    model_version_id: str,
    calib_dataset_id: str,
    eval_dataset_id: str | None,
    spec: dict[str, Any],
    schedule_id: str | None = None,
    rerun_of: str | None = None,
) -> dict[str, Any]:
    """Insert a queued job, its creation event and its outbox message in ``conn``'s transaction (the
    caller commits, so a broker outage never loses a job); returns the job's column values.

    Core statements built once (job creation is a hot path; the ORM's unit of work cost more than
    the SQL). PostgreSQL gets the three rows in one statement (data-modifying CTEs): one round trip.
    """
    job, event, message = new_job_rows(
        project_id=project_id,
        model_version_id=model_version_id,
        calib_dataset_id=calib_dataset_id,
        eval_dataset_id=eval_dataset_id,
        spec=spec,
        schedule_id=schedule_id,
        rerun_of=rerun_of,
    )
    if inserts_in_one_statement(conn.dialect.name):
        rows = {"job_": job, "event_": event, "outbox_": message}
        conn.execute(_insert_job_pg(), {p + k: v for p, row in rows.items() for k, v in row.items()})
    else:
        conn.execute(_INSERT_JOB, job)
        conn.execute(_INSERT_EVENT, event)
        conn.execute(_INSERT_OUTBOX, message)
    return job


def new_job_rows(
    *,
    project_id: str,
    model_version_id: str,
    calib_dataset_id: str,
    eval_dataset_id: str | None,
    spec: dict[str, Any],
    schedule_id: str | None = None,
    rerun_of: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The column values of a new queued job, of its creation event and of its outbox message."""
    now = utcnow()
    job: dict[str, Any] = {
        "id": new_id(),
        "project_id": project_id,
        "model_version_id": model_version_id,
        "calib_dataset_id": calib_dataset_id,
        "eval_dataset_id": eval_dataset_id,
        "schedule_id": schedule_id,
        "rerun_of": rerun_of,
        "technique": spec["technique"],
        "compute": spec["compute"],
        "priority": spec["priority"],
        "spec_version": spec["spec_version"],
        "spec": spec,
        "status": state.QUEUED,
        "stage": None,
        "progress": 0.0,
        "eta_s": None,
        "attempts": 0,
        "metrics": None,
        "error": None,
        "cancel_requested": False,
        "device": None,
        "claimed_by": None,
        "heartbeat_at": None,
        "created_at": now,
        "updated_at": now,
        "started_at": None,
        "finished_at": None,
    }
    event = state.creation_event(job["id"], now)
    message = {
        "topic": JOB_TOPIC,
        "payload": {
            "job_id": job["id"],
            "queue": job["compute"],
            "priority": job["priority"],
            **_request_id(),
        },
        "attempts": 0,
        "created_at": now,
        "published_at": None,
    }
    return job, event, message


def _request_id() -> dict[str, str]:
    # The API request creating the job, so the worker's log lines for it carry the same id.
    rid = request_context.request_id.get()
    return {"request_id": rid} if rid else {}


def inserts_in_one_statement(dialect_name: str) -> bool:
    """Whether :func:`insert_job` writes with a single statement (atomic without a transaction)."""
    return dialect_name == "postgresql"


_JOBS, _EVENTS, _OUTBOX = (cast(Table, m.__table__) for m in (Job, JobEvent, OutboxMessage))
_INSERT_JOB, _INSERT_EVENT, _INSERT_OUTBOX = insert(_JOBS), insert(_EVENTS), insert(_OUTBOX)


@cache
def _insert_job_pg() -> Insert:
    """INSERT outbox ... with the job and its event inserted by CTEs of the same statement (PostgreSQL
    runs every data-modifying CTE to completion; the job_events foreign key is checked at the end of
    the statement, after the job row exists). Parameters: the columns prefixed ``job_``, ``event_``, ``outbox_``."""

    def values(table: Table, prefix: str) -> dict[str, Any]:
        return {
            c.name: bindparam(prefix + c.name, type_=c.type)
            for c in table.c
            if not (c.primary_key and c.autoincrement is True)
        }

    new_job = insert(_JOBS).values(values(_JOBS, "job_")).cte("new_job")
    new_event = insert(_EVENTS).values(values(_EVENTS, "event_")).cte("new_event")
    return insert(_OUTBOX).values(values(_OUTBOX, "outbox_")).add_cte(new_job, new_event)


# Built once: the status read is the API's hottest query (clients poll it). It loads the columns a
# job view shows, nothing else.
_JOB_ROW = (
    select(
        *(c for c in Job.__table__.c if c.name not in ("project_id", "claimed_by", "heartbeat_at")),
        ModelVersion.version.label("model_version"),
        ModelVersion.blob_sha256.label("model_sha256"),
    )
    .join(ModelVersion, ModelVersion.id == Job.model_version_id)
    .where(Job.id == bindparam("job_id"), Job.project_id == bindparam("project_id"))
)


def get_job_row(conn: Connection, project_id: str, job_id: str) -> RowMapping:
    """The job's columns as a mapping, without the ORM (the polling path); NotFoundError when absent."""
    row = conn.execute(_JOB_ROW, {"job_id": job_id, "project_id": project_id}).mappings().first()
    if row is None:
        raise NotFoundError(f"job {job_id} not found")
    return row


async def get_job_row_async(pool: AsyncPgPool, project_id: str, job_id: str) -> dict[str, Any]:
    """:func:`get_job_row` on PostgreSQL's async pool (the same query, compiled once for psycopg)."""
    row = await pool.fetch_one(_job_row_pg(), {"job_id": job_id, "project_id": project_id})
    if row is None:
        raise NotFoundError(f"job {job_id} not found")
    return row


@cache
def _job_row_pg() -> str:
    return str(_JOB_ROW.compile(dialect=postgresql.psycopg.dialect()))


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
