"""The job-status read and the job create as statements awaited or run on the event loop.

The API's two hottest requests skip the threadpool: on PostgreSQL through the asyncio psycopg pool
(:mod:`service.db.async_pg`), on SQLite through the loop's own connection (:mod:`service.db.loop_sqlite`).
The statements are those of :mod:`.jobs`, :mod:`.resources` and :mod:`.idempotency` (same Core
definitions, same column types), compiled once with :class:`~service.db.prepared.Prepared`.

A create returns an :class:`Outcome`. With an Idempotency-Key (:class:`Keyed`) the stored response is
written with the job (same transaction on SQLite, same statement on PostgreSQL), and a key used before
comes back as ``Outcome.stored`` for the caller to check and replay.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, String, Table, and_, bindparam, cast, exists, insert, select, true
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.sql.expression import Select

from service.db.async_pg import AsyncPgPool
from service.db.loop_sqlite import LoopSqlite
from service.db.models import IdempotencyKey, ModelVersion
from service.db.prepared import Prepared, sqlite_named
from service.db.repositories import jobs, resources
from service.db.repositories.resources import JobInputs
from service.errors import NotFoundError

READY = "ready"


@dataclass(frozen=True)
class Keyed:
    """A create's Idempotency-Key; ``response`` turns the new job's values into the body stored with it."""

    key: str
    scope: str
    request_hash: str
    status_code: int
    response: Callable[[dict[str, Any]], dict[str, Any]]


class Stored(NamedTuple):
    """The response stored for a key used before (``status_code`` None: that first use is in flight)."""

    request_hash: str
    status_code: int | None
    response: Any


@dataclass(frozen=True)
class Outcome:
    """``inputs`` None: the project has no such model version or, on PostgreSQL with a key, the inputs or
    the key changed between the two statements; the caller's thread path then says why or replays.
    ``job`` None with ``inputs`` set: an input is not usable (``inputs`` says which).
    ``stored``: the key was used before (nothing written)."""

    inputs: JobInputs | None = None
    job: dict[str, Any] | None = None
    stored: Stored | None = None


def read_job_sqlite(db: LoopSqlite, project_id: str, job_id: str) -> dict[str, Any]:
    """:func:`.jobs.get_job_row` on the loop's SQLite connection (raises Busy when it would wait)."""
    row = db.fetch_one(_job_row_sqlite(), {"job_id": job_id, "project_id": project_id})
    if row is None:
        raise NotFoundError(f"job {job_id} not found")
    return row


def create_job_sqlite(
    db: LoopSqlite,
    *,
    project_id: str,
    model_id: str,
    number: int | None,
    calib_dataset_id: str,
    eval_dataset_id: str | None,
    spec: dict[str, Any],
    keyed: Keyed | None = None,
) -> Outcome:
    """Look the key up, check the inputs, insert job, event, outbox row (and the key's response) in one
    ``BEGIN IMMEDIATE`` transaction on the loop's connection. Raises Busy, having written nothing, when
    another writer holds the lock. Writers are serialized, so a key cannot be taken concurrently."""
    with db.transaction() as conn:
        if keyed is not None:
            lookup = _lookup_sqlite()
            raw = conn.execute(lookup.sql, lookup.params(_key_values(project_id, keyed))).fetchall()
            if raw:
                return Outcome(stored=Stored(**lookup.row(raw[0])))
        query = _inputs_sqlite(number is None)
        values = {"project_id": project_id, "model_id": model_id, "number": number,
                  "calib_id": calib_dataset_id, "eval_id": eval_dataset_id}  # fmt: skip
        raw = conn.execute(query.sql, query.params(values)).fetchall()
        if not raw:
            return Outcome()
        found = JobInputs(*raw[0])
        if not usable(found, eval_dataset_id):
            return Outcome(inputs=found)
        job, event, message = jobs.new_job_rows(
            project_id=project_id,
            model_version_id=found.id,
            calib_dataset_id=calib_dataset_id,
            eval_dataset_id=eval_dataset_id,
            spec=spec,
        )
        rows = [job, event, message]
        if keyed is not None:
            rows.append(_key_row(project_id, keyed, _shown(job, found)))
        for statement, row in zip(_inserts_sqlite(), rows, strict=False):
            conn.execute(statement.sql, statement.params(row))
    return Outcome(inputs=found, job=_shown(job, found))


async def create_job_pg(
    pool: AsyncPgPool,
    *,
    project_id: str,
    model_id: str,
    number: int | None,
    calib_dataset_id: str,
    eval_dataset_id: str | None,
    spec: dict[str, Any],
    keyed: Keyed | None = None,
) -> Outcome:
    """Without a key: ONE statement in autocommit (one round trip, atomic on its own) that reads the
    inputs in a CTE and inserts job, event and outbox row with data-modifying CTEs only when the inputs
    are usable; it returns the inputs' row.

    With a key: two statements. The first looks the key up and reads the inputs. The second inserts the
    key's row (ON CONFLICT DO NOTHING) only while that model version and the datasets are still usable,
    and job, event and outbox row only if the key's row was inserted: a concurrent first use of the key,
    or inputs changed in between, write nothing (Outcome without inputs: the caller's thread path
    replays or says why)."""
    args: dict[str, Any] = {"project_id": project_id, "model_id": model_id, "number": number,
                            "calib_id": calib_dataset_id, "eval_id": eval_dataset_id,
                            "eval_expected": None if eval_dataset_id is None else READY}  # fmt: skip
    if keyed is None:
        statement, found = _create_pg(number is None), None
    else:
        lookup = _lookup_and_inputs_pg(number is None)
        row = await pool.fetch_one(lookup.sql, lookup.params({**args, **_key_values(project_id, keyed)}))
        if row is None or row["id"] is None:
            return Outcome()  # no such version (or a replay of a key whose inputs are gone): thread path
        if row["request_hash"] is not None:
            return Outcome(stored=Stored(row["request_hash"], row["status_code"], row["response"]))
        found = _inputs_of(row)
        if not usable(found, eval_dataset_id):
            return Outcome(inputs=found)
        statement = _create_keyed_pg()
    job, event, message = jobs.new_job_rows(
        project_id=project_id,
        model_version_id="" if found is None else found.id,  # without a key, chosen by the statement
        calib_dataset_id=calib_dataset_id,
        eval_dataset_id=eval_dataset_id,
        spec=spec,
    )
    values = dict(args)
    rows = {"job_": job, "event_": event, "outbox_": message}
    if found is not None:  # keyed: the version the first statement found
        values["number"] = found.version
        rows["key_"] = _key_row(project_id, keyed, _shown(job, found))  # type: ignore[arg-type]
    for prefix, written in rows.items():
        values.update({prefix + k: v for k, v in written.items()})
    row = await pool.fetch_one(statement.sql, statement.params(values))
    if found is not None:
        if row is None or not row["created"]:
            return Outcome()  # the key was taken concurrently, or the inputs changed: thread path
    elif row is None:
        return Outcome()
    else:
        found = _inputs_of(row)
        if not row["created"]:
            return Outcome(inputs=found)
    job["model_version_id"] = found.id
    return Outcome(inputs=found, job=_shown(job, found))


def _shown(job: dict[str, Any], found: JobInputs) -> dict[str, Any]:
    """The new job's values with the version number and sha256 a job view shows (as the status read)."""
    return {**job, "model_version": found.version, "model_sha256": found.blob_sha256}


def usable(found: JobInputs, eval_dataset_id: str | None) -> bool:
    """Whether a job may be created from these inputs (the route's errors say why not)."""
    expected_eval = None if eval_dataset_id is None else READY
    return found.status == READY and found.calib_status == READY and found.eval_status == expected_eval


def _inputs_of(row: dict[str, Any]) -> JobInputs:
    return JobInputs(
        row["id"], row["version"], row["status"], row["calib_status"], row["eval_status"], row["blob_sha256"]
    )


def _key_values(project_id: str, keyed: Keyed) -> dict[str, Any]:
    return {"key_project_id": project_id, "key_key": keyed.key, "key_scope": keyed.scope}


def _key_row(project_id: str, keyed: Keyed, job: dict[str, Any]) -> dict[str, Any]:
    return {
        "project_id": project_id,
        "key": keyed.key,
        "scope": keyed.scope,
        "request_hash": keyed.request_hash,
        "status_code": keyed.status_code,
        "response": keyed.response(job),
        "created_at": job["created_at"],
    }


_KEYS: Table = IdempotencyKey.__table__  # type: ignore[assignment]
# .idempotency.lookup's query, without the ORM.
_LOOKUP = select(_KEYS.c.request_hash, _KEYS.c.status_code, _KEYS.c.response).where(
    _KEYS.c.project_id == bindparam("key_project_id"),
    _KEYS.c.key == bindparam("key_key"),
    _KEYS.c.scope == bindparam("key_scope"),
)


@cache
def _job_row_sqlite() -> Prepared:
    return Prepared.compile(jobs._JOB_ROW, sqlite_named())


@cache
def _lookup_sqlite() -> Prepared:
    return Prepared.compile(_LOOKUP, sqlite_named())


@cache
def _inputs_sqlite(latest: bool) -> Prepared:
    return Prepared.compile(_inputs(latest), sqlite_named())


def _inputs(latest: bool) -> Select[str, int, str, str, str, str | None]:
    return resources._INPUTS_LATEST if latest else resources._INPUTS_NUMBERED


def _values(table: Table, prefix: str = "") -> dict[str, Any]:
    # Every column but an autoincrement key, as a bind parameter of the column's type.
    return {
        c.name: bindparam(prefix + c.name, type_=c.type)
        for c in table.c
        if not (c.primary_key and c.autoincrement is True)
    }


def _typed(table: Table, prefix: str) -> dict[str, ColumnElement[Any]]:
    # Cast: in INSERT ... SELECT, PostgreSQL cannot infer a parameter's type from the target column
    # (a NULL float would arrive as text).
    return {name: cast(param, param.type) for name, param in _values(table, prefix).items()}


@cache
def _inserts_sqlite() -> tuple[Prepared, ...]:
    """INSERT job, event, outbox message, idempotency key (the last only for keyed creates)."""
    return tuple(
        Prepared.compile(insert(t).values(_values(t)), sqlite_named())
        for t in (jobs._JOBS, jobs._EVENTS, jobs._OUTBOX, _KEYS)
    )


def _usable_sql(inputs: Any) -> ColumnElement[bool]:
    # usable(), in SQL.
    return and_(
        inputs.c.status == READY,
        inputs.c.calib_status == READY,
        inputs.c.eval_status.is_not_distinct_from(bindparam("eval_expected", type_=String)),
    )


def _dependents(new_job: Any) -> list[Any]:
    # The creation event and the outbox message: one row each if the job was inserted, else none.
    ctes = []
    for table, prefix in ((jobs._EVENTS, "event_"), (jobs._OUTBOX, "outbox_")):
        row = _typed(table, prefix)
        rows = select(*row.values()).select_from(new_job)
        ctes.append(insert(table).from_select(list(row), rows).cte(f"new_{table.name}"))
    return ctes


def _found(inputs: Any, created: Any) -> Select[Any]:
    return select(
        inputs.c.id,
        inputs.c.version,
        inputs.c.status,
        inputs.c.calib_status,
        inputs.c.eval_status,
        inputs.c.blob_sha256,
        exists(select(created.c.id)).label("created"),
    )


@cache
def _create_pg(latest: bool) -> Prepared:
    inputs = _inputs(latest).cte("inputs")
    job_values = _typed(jobs._JOBS, "job_")
    job_values["model_version_id"] = inputs.c.id
    new_job = (
        insert(jobs._JOBS)
        .from_select(list(job_values), select(*job_values.values()).where(_usable_sql(inputs)))
        .returning(jobs._JOBS.c.id)
        .cte("new_job")
    )
    return Prepared.compile(
        _found(inputs, new_job).add_cte(*_dependents(new_job)), postgresql.psycopg.dialect()
    )


@cache
def _lookup_and_inputs_pg(latest: bool) -> Prepared:
    # inputs LEFT JOIN the key's row: no row when the version does not exist (the thread path says why).
    inputs = _inputs(latest).cte("inputs")
    stored = _LOOKUP.cte("stored")
    query = select(*inputs.c, *stored.c).select_from(inputs.outerjoin(stored, true()))
    return Prepared.compile(query, postgresql.psycopg.dialect())


@cache
def _create_keyed_pg() -> Prepared:
    # The version found by the first statement, still in the project, still ready (with the datasets).
    same_version = resources._INPUTS_NUMBERED.where(ModelVersion.id == bindparam("job_model_version_id"))
    inputs = same_version.cte("inputs")
    key_values = _typed(_KEYS, "key_")
    new_key = (
        pg_insert(_KEYS)
        .from_select(list(key_values), select(*key_values.values()).where(_usable_sql(inputs)))
        .on_conflict_do_nothing(index_elements=["project_id", "key", "scope"])
        .returning(_KEYS.c.id)
        .cte("new_key")
    )
    job_values = _typed(jobs._JOBS, "job_")
    new_job = (
        insert(jobs._JOBS)
        .from_select(list(job_values), select(*job_values.values()).select_from(new_key))
        .returning(jobs._JOBS.c.id)
        .cte("new_job")
    )
    query = _found(inputs, new_job).add_cte(new_key, *_dependents(new_job))
    return Prepared.compile(query, postgresql.psycopg.dialect())
