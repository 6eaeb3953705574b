"""/v1/jobs: create, list, get, cancel, re-run, artifacts, logs, and the SSE status stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.api.context import (
    AppContext,
    PageLimit,
    Principal,
    app_context,
    db_session,
    page_limit,
    principal,
)
from service.api.idempotency import IdempotencyContext, Idempotent, idempotent, replay
from service.db.loop_sqlite import Busy
from service.db.models import ModelVersion
from service.db.repositories import idempotency as idempotency_repo
from service.db.repositories import jobs as jobs_repo
from service.db.repositories import jobs_loop, references, resources
from service.errors import ConflictError, InvalidInputError, NotFoundError
from service.jobs import state
from service.schemas.common import MAX_INT32, DateTime, Page
from service.schemas.jobs import (
    ArtifactRead,
    JobCreate,
    JobLogRead,
    JobRead,
    JobSpecDraft,
    JobStatus,
    Technique,
)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def _resolve_inputs(session: Session, project_id: str, body: JobCreate) -> resources.JobInputs:
    """The model version, with the version and the datasets checked ready and in the caller's
    project; one query on the common path."""
    found = resources.find_job_inputs(
        session.connection(), project_id, body.model_id, body.model_version,
        body.calib_dataset_id, body.eval_dataset_id,
    )  # fmt: skip
    if found is None:
        resources.get_model(session, project_id, body.model_id)  # 404 for a missing or foreign model
        resources.get_version(session, project_id, body.model_id, body.model_version)  # says why
        raise ConflictError("the model's versions changed during the request; retry", code="version_race")
    _check_inputs(found, body)
    if body.train_dataset_id is not None:
        train = resources.get_dataset(session, project_id, body.train_dataset_id)
        if train.status != "ready":
            raise InvalidInputError(
                f"training dataset {train.id} is {train.status}; upload (and seal) it first",
                code="dataset_not_ready",
            )
    return found


def _check_inputs(found: resources.JobInputs, body: JobCreate) -> None:
    """Raise the error that says which input is not usable (none: the inputs are usable)."""
    if found.status != "ready":
        raise InvalidInputError(f"model version {found.version} is {found.status}", code="model_not_ready")
    datasets = (
        ("calibration", body.calib_dataset_id, found.calib_status),
        ("evaluation", body.eval_dataset_id, found.eval_status),
    )
    for role, dataset_id, status in datasets:
        if dataset_id is None:
            continue
        if status is None:
            raise NotFoundError(f"dataset {dataset_id} not found")
        if status != "ready":
            raise InvalidInputError(
                f"{role} dataset {dataset_id} is {status}; upload it first", code="dataset_not_ready"
            )


@router.post("/validate", status_code=200)
def validate_job(
    body: JobSpecDraft, who: Principal = Depends(principal), session: Session = Depends(db_session)
) -> dict[str, Any]:
    """Dry run: check a spec (model and calibration ids may be left out) without creating anything, so a
    client learns that a spec is refused before it uploads any file. 422 says what is wrong; an id that is
    not the caller's project's is 404, as on create (the tenancy check of every route)."""
    references.check_references(session, who.project_id, body.model_dump())
    return {"valid": True, "spec": body.model_dump(mode="json", exclude_none=True)}


@router.post("", status_code=201, response_model=JobRead)
async def create_job(body: JobCreate, request: Request, idem: Idempotent = Depends(idempotent)) -> object:
    """Queue a job. The job row and its outbox message commit together, so a broker outage loses nothing."""
    ctx: AppContext = request.app.state.ctx  # not a dependency: see idempotent()
    done = await create_on_loop(ctx, idem.who, idem.ctx, body)
    if done is not None:
        return done

    def create() -> JobRead:
        project_id = idem.who.project_id
        found = _resolve_inputs(idem.session, project_id, body)
        job = jobs_repo.insert_job(
            idem.session.connection(),
            project_id=project_id,
            model_version_id=found.id,
            calib_dataset_id=body.calib_dataset_id,
            eval_dataset_id=body.eval_dataset_id,
            spec=body.model_dump(mode="json"),
        )
        return JobRead.model_validate(
            {**job, "model_version": found.version, "model_sha256": found.blob_sha256}
        )

    return await idem.run(create, one_write=jobs_repo.inserts_in_one_statement(ctx.engine.dialect.name))


async def create_on_loop(
    ctx: AppContext, who: Principal, key: IdempotencyContext, body: JobCreate
) -> Response | None:
    """The create without a thread hop (see service.db.repositories.jobs_loop), with or without an
    Idempotency-Key. None: nothing was written; take the thread path (no such version, so its slow path
    says why; SQLite's write lock is taken right now; or, PostgreSQL with a key, the key or inputs
    changed meanwhile). Also called by service.api.hot_lane, before FastAPI's routing."""
    if body.train_dataset_id is not None:
        return None  # the on-loop statement checks two datasets; the thread path checks the third
    read: list[JobRead] = []

    def stored_body(job: dict[str, Any]) -> dict[str, Any]:
        read.append(JobRead.model_validate(job))
        return read[0].model_dump(mode="json")

    keyed = None
    if key.key is not None:
        keyed = jobs_loop.Keyed(key.key, key.scope, key.fingerprint, 201, stored_body)
    args: dict[str, Any] = {"project_id": who.project_id, "model_id": body.model_id,
            "number": body.model_version, "calib_dataset_id": body.calib_dataset_id,
            "eval_dataset_id": body.eval_dataset_id, "spec": body.model_dump(mode="json"), "keyed": keyed}  # fmt: skip
    if ctx.pg_loop is not None:
        outcome = await jobs_loop.create_job_pg(ctx.pg_loop, **args)
    elif ctx.sqlite_loop is not None:
        try:
            outcome = jobs_loop.create_job_sqlite(ctx.sqlite_loop, **args)
        except Busy:
            return None
        if ctx.sqlite_loop.checkpoint_due():
            await run_in_threadpool(_checkpoint, ctx)
    else:
        return None
    if outcome.stored is not None:
        idempotency_repo.check_stored(
            outcome.stored.request_hash, outcome.stored.status_code, key.fingerprint
        )
        return replay(outcome.stored.response, outcome.stored.status_code)
    if outcome.inputs is None:
        return None
    if outcome.job is None:
        _check_inputs(outcome.inputs, body)
        raise AssertionError("inputs refused by the statement but accepted by _check_inputs")
    job = read[0] if read else JobRead.model_validate(outcome.job)
    return Response(job.model_dump_json(), status_code=201, media_type="application/json")


def _checkpoint(ctx: AppContext) -> None:
    # The loop's SQLite connection never checkpoints (fsyncs would stall the loop): a thread does.
    with ctx.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")


@router.get("", response_model=Page[JobRead])
def list_jobs(
    status: JobStatus | None = None,
    technique: Technique | None = None,
    model_id: str | None = None,
    created_after: DateTime | None = None,
    created_before: DateTime | None = None,
    cursor: str | None = None,
    limit: PageLimit = None,
    who: Principal = Depends(principal),
    ctx: AppContext = Depends(app_context),
    session: Session = Depends(db_session),
) -> Page[JobRead]:
    """The project's jobs, newest first; filters combine with AND."""
    version_ids = None
    if model_id is not None:
        resources.get_model(session, who.project_id, model_id)
        version_ids = list(session.scalars(select(ModelVersion.id).where(ModelVersion.model_id == model_id)))
    rows, nxt = jobs_repo.list_jobs(
        session,
        who.project_id,
        limit=page_limit(ctx, limit),
        cursor=cursor,
        status=status,
        technique=technique,
        model_version_ids=version_ids,
        created_after=_aware(created_after),
        created_before=_aware(created_before),
    )
    return Page(items=_with_versions(session, [JobRead.model_validate(j) for j in rows]), next_cursor=nxt)


def _with_versions(session: Session, items: list[JobRead]) -> list[JobRead]:
    """``items`` with the version number and sha256 of the model version each quantizes (one query)."""
    ids = {i.model_version_id for i in items}
    if ids:
        found = session.execute(
            select(ModelVersion.id, ModelVersion.version, ModelVersion.blob_sha256).where(
                ModelVersion.id.in_(ids)
            )
        ).all()
        versions = {vid: (number, sha) for vid, number, sha in found}
        for item in items:
            item.model_version, item.model_sha256 = versions.get(item.model_version_id, (None, None))
    return items


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


@router.get("/{job_id}", response_model=JobRead)
async def get_job(job_id: str, request: Request) -> Response:
    """Status, stage, progress, metrics, error, attempts and timestamps of one job."""
    # The hot path of clients that poll: one query, serialized once (no response_model re-validation),
    # awaited or run on the event loop (no thread hop) unless SQLite would have to wait for a lock.
    # No dependencies: FastAPI's resolution of two trivial ones cost about a tenth of the request;
    # the caller is authenticated by the same function the dependency runs.
    who = await principal(request)
    ctx: AppContext = request.app.state.ctx
    row: Mapping[str, Any] | None = None
    generation = None
    if ctx.status_cache is not None:
        # A hit was answered by service.api.hot_lane before routing; this read refills the entry.
        ctx.status_cache.ensure_listening()
        generation = ctx.status_cache.generation()
    if ctx.pg_loop is not None:
        row = await jobs_repo.get_job_row_async(ctx.pg_loop, who.project_id, job_id)
    elif ctx.sqlite_loop is not None:
        with suppress(Busy):  # left as None: read in a thread, with the engine's busy timeout
            row = jobs_loop.read_job_sqlite(ctx.sqlite_loop, who.project_id, job_id)
    if row is None:
        row = await run_in_threadpool(_read_job_row, ctx, who.project_id, job_id)
    body = JobRead.model_validate(row).model_dump_json().encode()
    if ctx.status_cache is not None:
        ctx.status_cache.put(job_id, who.project_id, body, generation)
    return Response(body, media_type="application/json")


def _read_job_row(ctx: AppContext, project_id: str, job_id: str) -> Mapping[str, Any]:
    # Autocommit: a single SELECT needs no transaction, so returning the connection to the pool
    # ends nothing (no ROLLBACK).
    with ctx.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        return dict(jobs_repo.get_job_row(conn, project_id, job_id))


@router.post("/{job_id}/cancel", response_model=JobRead)
def cancel_job(
    job_id: str,
    who: Principal = Depends(principal),
    session: Session = Depends(db_session),
    ctx: AppContext = Depends(app_context),
) -> JobRead:
    """Cancel: a queued job stops at once; a running one becomes ``cancelling`` until the worker stops.
    409 for jobs that already succeeded or failed."""
    job = jobs_repo.get_job(session, who.project_id, job_id)
    state.request_cancel(session, job)
    session.commit()
    if ctx.status_cache is not None:  # read-your-writes: do not wait for the trigger's notification
        ctx.status_cache.drop(job_id)
    return _with_versions(session, [JobRead.model_validate(job)])[0]


@router.post("/{job_id}/rerun", status_code=201, response_model=JobRead)
async def rerun_job(job_id: str, idem: Idempotent = Depends(idempotent)) -> object:
    """A new job with the same spec and the same input versions as ``job_id``."""

    def create() -> JobRead:
        old = jobs_repo.get_job(idem.session, idem.who.project_id, job_id)
        inputs = {"model_version_id": old.model_version_id, "calib_dataset_id": old.calib_dataset_id,
                  "eval_dataset_id": old.eval_dataset_id, "train_dataset_id": old.spec.get("train_dataset_id")}  # fmt: skip
        references.check_references(idem.session, old.project_id, inputs)
        job = jobs_repo.insert_job(
            idem.session.connection(),
            project_id=old.project_id,
            model_version_id=old.model_version_id,
            calib_dataset_id=old.calib_dataset_id,
            eval_dataset_id=old.eval_dataset_id,
            spec=old.spec,
            rerun_of=old.id,
        )
        return _with_versions(idem.session, [JobRead.model_validate(job)])[0]

    return await idem.run(create)


@router.get("/{job_id}/artifacts", response_model=list[ArtifactRead])
def list_artifacts(
    job_id: str,
    who: Principal = Depends(principal),
    ctx: AppContext = Depends(app_context),
    session: Session = Depends(db_session),
) -> list[ArtifactRead]:
    """The job's outputs with presigned download URLs and their expiry."""
    job = jobs_repo.get_job(session, who.project_id, job_id)
    expiry = ctx.settings.presign_expiry_s
    expires_at = datetime.now(UTC) + timedelta(seconds=expiry)
    return [
        ArtifactRead(
            name=a.name,
            size=a.size,
            sha256=a.sha256,
            content_type=a.content_type,
            url=ctx.store.presign_get(a.storage_key, expiry, filename=a.name),
            expires_at=expires_at,
        )
        for a in jobs_repo.list_artifacts(session, job)
    ]


@router.get("/{job_id}/logs", response_model=list[JobLogRead])
def job_logs(
    job_id: str,
    after: int = Query(default=0, ge=0, le=MAX_INT32),
    limit: PageLimit = None,
    who: Principal = Depends(principal),
    ctx: AppContext = Depends(app_context),
    session: Session = Depends(db_session),
) -> list[JobLogRead]:
    """Log lines with id > ``after``, oldest first."""
    job = jobs_repo.get_job(session, who.project_id, job_id)
    rows = jobs_repo.logs_after(session, job.id, after, page_limit(ctx, limit))
    return [JobLogRead.model_validate(r) for r in rows]


@router.get("/{job_id}/events", response_class=StreamingResponse)
async def job_events(
    job_id: str,
    request: Request,
    last_event_id: str | None = Header(default=None),
    who: Principal = Depends(principal),
    ctx: AppContext = Depends(app_context),
) -> StreamingResponse:
    """Server-sent events: ``status`` (one per state-machine transition, replayable with Last-Event-ID)
    and ``progress`` (stage/progress changes). The stream ends after the terminal status."""
    after = int(last_event_id) if last_event_id and last_event_id.isdigit() and len(last_event_id) < 10 else 0
    await run_in_threadpool(_snapshot, ctx, who.project_id, job_id, after)  # 404 before streaming starts
    return StreamingResponse(
        _sse(request, ctx, who.project_id, job_id, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _snapshot(
    ctx: AppContext, project_id: str, job_id: str, after: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    with ctx.sessions() as session:
        job = jobs_repo.get_job(session, project_id, job_id)
        events = [
            {"id": e.id, "from": e.from_status, "status": e.to_status, "stage": e.stage, "message": e.message,
             "at": e.created_at.isoformat()}
            for e in jobs_repo.events_after(session, job.id, after)
        ]  # fmt: skip
        now = {"status": job.status, "stage": job.stage, "progress": job.progress, "eta_s": job.eta_s}
        return now, events


async def _sse(
    request: Request, ctx: AppContext, project_id: str, job_id: str, after: int
) -> AsyncIterator[str]:
    last_progress: tuple[Any, ...] | None = None
    while True:
        now, events = await run_in_threadpool(_snapshot, ctx, project_id, job_id, after)
        for event in events:
            after = event["id"]
            yield f"id: {event['id']}\nevent: status\ndata: {json.dumps(event)}\n\n"
        progress = (now["stage"], now["progress"], now["eta_s"])
        if progress != last_progress:
            last_progress = progress
            yield f"event: progress\ndata: {json.dumps(now)}\n\n"
        if now["status"] in state.TERMINAL and not events:
            return
        if await request.is_disconnected():
            return
        await asyncio.sleep(ctx.settings.sse_poll_s)
