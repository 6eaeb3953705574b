"""The loop-side job statements write and read exactly what the SQLAlchemy ones do (both databases)."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, select

from service.db.async_pg import AsyncPgPool
from service.db.loop_sqlite import LoopSqlite
from service.db.models import (
    Dataset,
    IdempotencyKey,
    Job,
    JobEvent,
    Model,
    ModelVersion,
    OutboxMessage,
    Project,
)
from service.db.repositories import jobs, jobs_loop
from service.db.repositories.resources import JobInputs
from service.db.session import make_sessionmaker, session_scope
from service.errors import NotFoundError
from service.settings import Settings

SPEC = {"technique": "ptq", "compute": "gpu", "priority": 7, "spec_version": 1, "params": {"steps": ["cle"]}}


@pytest.fixture
def inputs(db_engine: Engine) -> Iterator[dict[str, str]]:
    """A project with a model (v1 ready, v2 pending) and a ready and a pending dataset."""
    with session_scope(make_sessionmaker(db_engine)) as session:
        project = Project(name=f"loop-{os.urandom(6).hex()}")
        session.add(project)
        session.flush()
        model = Model(project_id=project.id, name="m")
        session.add(model)
        session.flush()
        v1 = ModelVersion(model_id=model.id, project_id=project.id, version=1, format="onnx", status="ready")
        v2 = ModelVersion(model_id=model.id, project_id=project.id, version=2, format="onnx")
        ready = Dataset(project_id=project.id, name="r", kind="calibration", format="npz", status="ready")
        pending = Dataset(project_id=project.id, name="p", kind="calibration", format="npz")
        session.add_all([v1, v2, ready, pending])
        session.flush()
        ids = {
            "project": project.id,
            "model": model.id,
            "v1": v1.id,
            "ready": ready.id,
            "pending": pending.id,
        }
    yield ids


def _create(settings: Settings, engine: Engine, **kwargs: Any) -> jobs_loop.Outcome:
    if settings.is_sqlite:
        db = LoopSqlite(str(engine.url.database), threading.Lock())
        try:
            return jobs_loop.create_job_sqlite(db, **kwargs)
        finally:
            db.close()
    pool = AsyncPgPool.for_engine(engine, size=1)
    try:
        return asyncio.run(jobs_loop.create_job_pg(pool, **kwargs))
    finally:
        pool.close()


def _read(settings: Settings, engine: Engine, project_id: str, job_id: str) -> dict[str, Any]:
    if settings.is_sqlite:
        db = LoopSqlite(str(engine.url.database), threading.Lock())
        try:
            return jobs_loop.read_job_sqlite(db, project_id, job_id)
        finally:
            db.close()
    pool = AsyncPgPool.for_engine(engine, size=1)
    try:
        return asyncio.run(jobs.get_job_row_async(pool, project_id, job_id))
    finally:
        pool.close()


def test_create_and_read_match_the_sqlalchemy_statements(
    mode_settings: Settings, db_engine: Engine, inputs: dict[str, str]
) -> None:
    """Given ready inputs, the loop create writes job, creation event and outbox row; the job's row read
    through SQLAlchemy equals the values it returned and the loop read returns that row too."""
    args = {"project_id": inputs["project"], "model_id": inputs["model"], "calib_dataset_id": inputs["ready"],
            "eval_dataset_id": inputs["ready"], "spec": SPEC}  # fmt: skip
    outcome = _create(mode_settings, db_engine, number=None, **args)
    found, job = outcome.inputs, outcome.job
    with make_sessionmaker(db_engine)() as session:
        stored = session.get(ModelVersion, inputs["v1"])
        assert stored is not None
        sha = stored.blob_sha256
    assert found == JobInputs(inputs["v1"], 1, "ready", "ready", "ready", sha)
    assert job is not None and job["model_version_id"] == inputs["v1"]
    assert (job["model_version"], job["model_sha256"]) == (1, sha)  # as the status read shows them
    with db_engine.connect() as conn:
        row = dict(jobs.get_job_row(conn, inputs["project"], job["id"]))
    assert row == {k: v for k, v in job.items() if k in row} and row.keys() <= job.keys()
    assert _read(mode_settings, db_engine, inputs["project"], job["id"]) == row
    with make_sessionmaker(db_engine)() as session:
        events = session.scalars(select(JobEvent).where(JobEvent.job_id == job["id"])).all()
        assert [(e.from_status, e.to_status, e.progress, e.message) for e in events] == [
            (None, "queued", 0.0, "")
        ]
        payloads = [m.payload for m in session.scalars(select(OutboxMessage))]
        assert {"job_id": job["id"], "queue": "gpu", "priority": 7} in payloads
    with pytest.raises(NotFoundError):
        _read(mode_settings, db_engine, "0" * 26, job["id"])  # another project's job


@pytest.mark.parametrize(
    ("number", "calib", "eval_", "expected"),
    [
        (2, "ready", None, ("pending", "ready", None)),  # the version is not ready
        (1, "pending", None, ("ready", "pending", None)),
        (1, "ready", "pending", ("ready", "ready", "pending")),
        (1, "ready", "missing", ("ready", "ready", None)),  # a missing eval dataset is not ignored
        (1, "missing", None, ("ready", None, None)),
    ],
)
def test_unusable_inputs_write_nothing(
    mode_settings: Settings,
    db_engine: Engine,
    inputs: dict[str, str],
    number: int,
    calib: str,
    eval_: str | None,
    expected: tuple[str, str | None, str | None],
) -> None:
    ids = {**inputs, "missing": "0" * 26}
    with db_engine.connect() as conn:
        before = conn.execute(select(JobEvent.id)).all(), conn.execute(select(OutboxMessage.id)).all()
    outcome = _create(
        mode_settings, db_engine, project_id=inputs["project"], model_id=inputs["model"], number=number,
        calib_dataset_id=ids[calib], eval_dataset_id=None if eval_ is None else ids[eval_], spec=SPEC,
        keyed=_keyed() if number == 1 else None,
    )  # fmt: skip
    found = outcome.inputs
    assert outcome.job is None and found is not None
    assert (found.status, found.calib_status, found.eval_status) == expected
    with db_engine.connect() as conn:
        after = conn.execute(select(JobEvent.id)).all(), conn.execute(select(OutboxMessage.id)).all()
        keys = conn.execute(
            select(IdempotencyKey.id).where(IdempotencyKey.project_id == inputs["project"])
        ).all()
    assert after == before and keys == []  # errors are not stored for the key


def test_no_such_version_is_none(mode_settings: Settings, db_engine: Engine, inputs: dict[str, str]) -> None:
    outcome = _create(
        mode_settings, db_engine, project_id=inputs["project"], model_id=inputs["model"], number=3,
        calib_dataset_id=inputs["ready"], eval_dataset_id=None, spec=SPEC,
    )  # fmt: skip
    assert outcome == jobs_loop.Outcome()


def _keyed(key: str = "k1", request_hash: str = "h1") -> jobs_loop.Keyed:
    return jobs_loop.Keyed(key, "POST /v1/jobs", request_hash, 201, lambda job: {"id": job["id"], "n": 1.5})


@pytest.mark.parametrize("number", [None, 1])
def test_keyed_create_stores_the_response_with_the_job_and_finds_it_again(
    mode_settings: Settings, db_engine: Engine, inputs: dict[str, str], number: int | None
) -> None:
    """Given a first use of a key, the job and the key's stored response are written together; a second
    use of the key writes nothing and returns the stored response (whatever its body)."""
    args = {"project_id": inputs["project"], "model_id": inputs["model"], "number": number,
            "calib_dataset_id": inputs["ready"], "eval_dataset_id": None, "spec": SPEC}  # fmt: skip
    first = _create(mode_settings, db_engine, **args, keyed=_keyed())
    assert first.job is not None and first.stored is None and first.job["model_version_id"] == inputs["v1"]
    again = _create(mode_settings, db_engine, **args, keyed=_keyed(request_hash="other"))
    assert again == jobs_loop.Outcome(stored=jobs_loop.Stored("h1", 201, {"id": first.job["id"], "n": 1.5}))
    with make_sessionmaker(db_engine)() as session:
        jobs_made = session.scalars(select(Job.id).where(Job.project_id == inputs["project"])).all()
        stored = session.scalars(
            select(IdempotencyKey).where(IdempotencyKey.project_id == inputs["project"])
        ).all()
    assert jobs_made == [first.job["id"]]
    assert [(k.key, k.scope, k.request_hash, k.status_code, k.response) for k in stored] == [
        ("k1", "POST /v1/jobs", "h1", 201, {"id": first.job["id"], "n": 1.5})
    ]
    assert stored[0].created_at == first.job["created_at"]


def test_keyed_create_taken_concurrently_writes_nothing(
    mode_settings: Settings, db_engine: Engine, inputs: dict[str, str]
) -> None:
    """PostgreSQL: given a key whose row a concurrent first use inserts between the lookup and the insert
    (simulated: the row is added between the two statements), no job is written and the caller is sent
    to the thread path (which replays the winner's response)."""
    if mode_settings.is_sqlite:
        pytest.skip("SQLite serializes the lookup and the insert in one BEGIN IMMEDIATE transaction")
    pool = AsyncPgPool.for_engine(db_engine, size=1)
    fetch = pool.fetch_one
    calls = []

    async def fetch_then_race(query: str, params: Any) -> Any:
        calls.append(query)
        if len(calls) == 2:  # between the lookup and the insert, another request takes the key
            with session_scope(make_sessionmaker(db_engine)) as session:
                session.add(IdempotencyKey(project_id=inputs["project"], key="k1", scope="POST /v1/jobs",
                                           request_hash="h1", status_code=201, response={}))  # fmt: skip
        return await fetch(query, params)

    pool.fetch_one = fetch_then_race  # type: ignore[method-assign]
    outcome = asyncio.run(
        jobs_loop.create_job_pg(
            pool, project_id=inputs["project"], model_id=inputs["model"], number=None,
            calib_dataset_id=inputs["ready"], eval_dataset_id=None, spec=SPEC, keyed=_keyed(),
        )
    )  # fmt: skip
    pool.close()
    assert outcome == jobs_loop.Outcome() and len(calls) == 2
    with db_engine.connect() as conn:
        assert conn.execute(select(Job.id).where(Job.project_id == inputs["project"])).all() == []
