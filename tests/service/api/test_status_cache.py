"""The job-status cache (PostgreSQL LISTEN/NOTIFY) and the hot lane in front of the routes.

Real PostgreSQL and a real API on loopback. The oracle everywhere: what a status read returns equals
the row in the database, once its change has committed; the cache only shows in the metrics.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from service.db.migrate import upgrade
from service.db.models import Job
from service.db.repositories import projects
from service.db.session import make_engine, make_sessionmaker, session_scope
from service.db.status_cache import JobStatusCache
from service.jobs import state
from service.settings import Settings
from tests.fixtures.live_api import live_api
from tests.fixtures.postgres import fresh_database
from tests.service.conftest import Api
from tests.service.samples import job_body, make_ready_dataset, make_ready_model


@pytest.fixture(scope="module")
def pg_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    root: Path = tmp_path_factory.mktemp("status_cache")
    with fresh_database() as url:
        settings = Settings(
            database_url=url,
            storage="local",
            local_storage_dir=str(root / "objects"),
            secret_key="test-secret",
            rate_limit_per_minute=0,
        )
        upgrade(settings)
        engine = make_engine(settings)
        with session_scope(make_sessionmaker(engine)) as session:
            keys = [
                projects.create_api_key(
                    session, projects.create_project(session, f"p-{os.urandom(4).hex()}"), "t"
                )[1]
                for _ in range(2)
            ]
        engine.dispose()
        with live_api(settings) as (api_url, live_settings):
            yield Api(api_url, live_settings, keys[0], keys[1])


def _metric(api: Api, name: str) -> float:
    found = re.search(rf"^{name}(?:_total)? (\S+)$", httpx.get(f"{api.url}/metrics").text, re.M)
    assert found, f"{name} not exported"
    return float(found.group(1))


def _wait(predicate, timeout: float = 10.0) -> float:  # type: ignore[no-untyped-def]
    """Seconds until ``predicate()`` held; fails the test after ``timeout``."""
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, "condition not reached"
        time.sleep(0.01)
    return time.monotonic() - start


def _new_job(api: Api) -> dict[str, object]:
    with api.client() as c:
        suffix = os.urandom(4).hex()
        model, dataset = make_ready_model(c, f"m-{suffix}"), make_ready_dataset(c, f"d-{suffix}")
        resp = c.post("/v1/jobs", json=job_body(model, dataset))
        assert resp.status_code == 201, resp.text
        return dict(resp.json())


def _transition(api: Api, job_id: str, to: str, **values: object) -> None:
    """What a worker does: change the job's row in its own transaction."""
    engine = make_engine(api.settings)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            row = session.get(Job, job_id)
            assert row is not None
            state.transition(session, row, to, **values)
    finally:
        engine.dispose()


def _cached(api: Api, c: httpx.Client, job_id: str) -> bytes:
    """Read the job until a read is answered from the cache; the body of that read."""
    _wait(lambda: _metric(api, "lowbit_job_status_cache_live") == 1.0)
    hits = _metric(api, "lowbit_job_status_cache_hits")
    c.get(f"/v1/jobs/{job_id}").raise_for_status()  # a miss: fills the entry
    body = c.get(f"/v1/jobs/{job_id}")
    assert body.status_code == 200
    assert _metric(api, "lowbit_job_status_cache_hits") == hits + 1, "the second read was not a cache hit"
    return body.content


def test_cached_read_is_the_routed_response(pg_api: Api) -> None:
    """Given a job read once through the route, the cached answer is byte-identical with the same headers."""
    job = _new_job(pg_api)
    with pg_api.client() as c:
        _wait(lambda: _metric(pg_api, "lowbit_job_status_cache_live") == 1.0)
        routed = c.get(f"/v1/jobs/{job['id']}")
        cached = c.get(f"/v1/jobs/{job['id']}")
    assert routed.status_code == cached.status_code == 200
    assert cached.content == routed.content
    assert cached.headers["content-type"] == routed.headers["content-type"] == "application/json"
    assert cached.headers["content-length"] == routed.headers["content-length"]
    assert cached.json()["id"] == job["id"] and cached.json()["status"] == "queued"


def test_worker_change_reaches_readers_within_a_second(pg_api: Api) -> None:
    """Given a cached job, when a worker moves it to running, readers see running and the progress
    soon after the commit (the trigger's notification drops the entry)."""
    job = _new_job(pg_api)
    with pg_api.client() as c:
        _cached(pg_api, c, str(job["id"]))
        _transition(pg_api, str(job["id"]), state.RUNNING, stage="calibrate", progress=0.25)
        seconds = _wait(lambda: c.get(f"/v1/jobs/{job['id']}").json()["status"] == "running", timeout=5)
        assert seconds < 1.0
        assert c.get(f"/v1/jobs/{job['id']}").json()["progress"] == 0.25


def test_other_project_never_gets_the_cached_job(pg_api: Api) -> None:
    job = _new_job(pg_api)
    with pg_api.client() as c, pg_api.client(pg_api.other_key) as other:
        _cached(pg_api, c, str(job["id"]))
        for _ in range(2):  # the second request's key is verified and takes the hot lane
            resp = other.get(f"/v1/jobs/{job['id']}")
            assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"


def test_cancel_is_visible_to_the_next_read(pg_api: Api) -> None:
    """Given a cached running job, the read right after the cancel's answer shows the cancel."""
    job = _new_job(pg_api)
    _transition(pg_api, str(job["id"]), state.RUNNING, claimed_by="w")
    with pg_api.client() as c:
        _cached(pg_api, c, str(job["id"]))
        assert c.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] == "cancelling"
        assert c.get(f"/v1/jobs/{job['id']}").json()["status"] == "cancelling"


def test_lost_listener_stops_serving_and_recovers(pg_api: Api) -> None:
    """Given a cached job, when PostgreSQL kills the listening connection, then changes made while no
    notification can arrive are still read at once, and caching resumes after reconnecting."""
    job = _new_job(pg_api)
    engine = make_engine(pg_api.settings)
    try:
        with pg_api.client() as c:
            _cached(pg_api, c, str(job["id"]))
            losses = _metric(pg_api, "lowbit_job_status_cache_listener_losses")
            with engine.connect() as conn:
                killed = conn.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                        " WHERE application_name = 'lowbit-job-status-cache' AND datname = current_database()"
                    )
                ).scalar_one()
            assert killed == 1
            _wait(lambda: _metric(pg_api, "lowbit_job_status_cache_listener_losses") == losses + 1)
            # No listener now: this change sends a notification nobody hears.
            _transition(pg_api, str(job["id"]), state.RUNNING, claimed_by="w")
            assert c.get(f"/v1/jobs/{job['id']}").json()["status"] == "running"
            _cached(pg_api, c, str(job["id"]))  # waits for the listener to be back, then hits
    finally:
        engine.dispose()


def test_a_read_older_than_a_notification_is_not_stored(pg_api: Api) -> None:
    """The race the generation check closes: a row read, then a change notified, then the (stale) read
    stored. Driven on a JobStatusCache of its own, with a real change of a real job row."""
    job = _new_job(pg_api)
    engine = make_engine(pg_api.settings)
    _, kwargs = engine.dialect.create_connect_args(engine.url)
    engine.dispose()

    async def scenario() -> None:
        cache = JobStatusCache(kwargs, max_entries=10)
        cache.ensure_listening()
        try:
            deadline = time.monotonic() + 10
            while cache.generation() is None:
                assert time.monotonic() < deadline, "listener never became live"
                await asyncio.sleep(0.01)
            stale = cache.generation()
            await asyncio.to_thread(_transition, pg_api, str(job["id"]), state.RUNNING, claimed_by="w")
            while cache.generation() == stale:  # the notification arrives on this loop
                assert time.monotonic() < deadline, "no notification for the change"
                await asyncio.sleep(0.01)
            cache.put(str(job["id"]), "p", b"old", stale)
            assert cache.get(str(job["id"]), "p") is None
            cache.put(str(job["id"]), "p", b"new", cache.generation())
            assert cache.get(str(job["id"]), "p") == b"new"
            assert cache.get(str(job["id"]), "another project") is None
        finally:
            cache.close()
            await asyncio.sleep(0)  # let the listener task see its cancellation

    asyncio.run(scenario())


def test_create_errors_are_the_routes_on_the_hot_lane(pg_api: Api) -> None:
    """Creates from a verified key take the hot lane; refused ones answer as the route does."""
    job = _new_job(pg_api)  # verifies the key
    with pg_api.client() as c:
        bad_json = c.post("/v1/jobs", content=b"{not json", headers={"Content-Type": "application/json"})
        assert bad_json.status_code == 422 and bad_json.json()["error"]["code"] == "invalid_request"
        deep = c.post("/v1/jobs", content=b"[" * 60_000, headers={"Content-Type": "application/json"})
        assert 400 <= deep.status_code < 500, deep.text  # json.loads recursion: the route's 4xx, not a 500
        keyed_deep = c.post(
            "/v1/jobs",
            content=b"[" * 60_000,
            headers={"Content-Type": "application/json", "Idempotency-Key": "deep"},
        )
        assert 400 <= keyed_deep.status_code < 500, keyed_deep.text  # also when fingerprinting the body
        missing = c.post("/v1/jobs", json={"technique": "ptq"})
        assert missing.status_code == 422 and "model_id" in missing.json()["error"]["message"]
        unknown = c.post(
            "/v1/jobs", json={"model_id": "0" * 26, "calib_dataset_id": "0" * 26, "technique": "ptq"}
        )
        assert unknown.status_code == 404
        key = {"Idempotency-Key": os.urandom(8).hex()}
        spec = dict(job["spec"]) if isinstance(job["spec"], dict) else {}
        first = c.post("/v1/jobs", json=spec, headers=key)
        assert first.status_code == 201, first.text
        again = c.post("/v1/jobs", json=spec, headers=key)
        assert again.status_code == 201 and again.json()["id"] == first.json()["id"]
        assert again.headers.get("idempotent-replayed") == "true"
        other = c.post("/v1/jobs", json={**spec, "priority": 1}, headers=key)
        assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
