"""The job-status cache (PostgreSQL LISTEN/NOTIFY) and the hot lane in front of the routes.

Real PostgreSQL and a real API on loopback. The oracle everywhere: what a status read returns equals
the row in the database, once its change has committed; the cache only shows in the metrics.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from service.api.app import create_app
from service.db.migrate import upgrade
from service.db.models import Job
from service.db.session import make_engine, make_sessionmaker, session_scope
from service.db.status_cache import JobStatusCache
from service.jobs import state
from service.settings import Settings
from tests.fixtures.live_api import live_api
from tests.fixtures.postgres import fresh_database
from tests.fixtures.tcp_proxy import TcpProxy
from tests.service.conftest import Api
from tests.service.samples import job_body, make_ready_dataset, make_ready_model, new_project_key


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
        keys = [new_project_key(settings) for _ in range(2)]
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


def test_a_replaced_listener_leaves_its_successor_serving(pg_api: Api) -> None:
    """Given a listener on loop A, when the cache is used from loop B (a second app loop, as with a
    TestClient) while A is busy, then A's late cancellation does not switch B's serving off."""
    engine = make_engine(pg_api.settings)
    _, kwargs = engine.dialect.create_connect_args(engine.url)
    engine.dispose()
    cache = JobStatusCache(kwargs, max_entries=10)
    loop_a = asyncio.new_event_loop()
    thread = threading.Thread(target=loop_a.run_forever, daemon=True)
    thread.start()

    def until(predicate) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + 10
        while not predicate():
            assert time.monotonic() < deadline, "condition not reached"
            time.sleep(0.01)

    async def start_on_a() -> None:
        cache.ensure_listening()

    try:
        asyncio.run_coroutine_threadsafe(start_on_a(), loop_a).result(5)
        until(lambda: cache.live)
        loop_a.call_soon_threadsafe(time.sleep, 0.5)  # loop A busy: its listener's cancel waits

        async def on_b() -> None:
            cache.ensure_listening()
            while not cache.live:
                await asyncio.sleep(0.01)
            await asyncio.sleep(1.0)  # A has run its cancellation by now
            assert cache.live, "the replaced listener switched its successor's serving off"
            cache.put("j", "p", b"body", cache.generation())
            assert cache.get("j", "p") == b"body"
            cache.close()
            await asyncio.sleep(0)

        asyncio.run(on_b())
    finally:
        loop_a.call_soon_threadsafe(loop_a.stop)
        thread.join(5)
        loop_a.close()


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


def test_repeated_headers_are_read_as_the_routes_read_them(pg_api: Api) -> None:
    """Given a cached job, a request that repeats Authorization (or Idempotency-Key) is answered by the
    first value, as the routes read headers (Starlette's ``headers.get``), not by the last."""
    job = _new_job(pg_api)
    with pg_api.client() as c:
        _cached(pg_api, c, str(job["id"]))
    with httpx.Client(base_url=pg_api.url, timeout=60) as raw:
        twice = [("Authorization", "Bearer not-a-key"), ("Authorization", f"Bearer {pg_api.key}")]
        resp = raw.get(f"/v1/jobs/{job['id']}", headers=twice)
        assert resp.status_code == 401, resp.text
        first, second = os.urandom(8).hex(), os.urandom(8).hex()
        spec = dict(job["spec"]) if isinstance(job["spec"], dict) else {}
        keyed = [("Authorization", f"Bearer {pg_api.key}"), ("Idempotency-Key", first)]
        keyed += [("Idempotency-Key", second)]
        created = raw.post("/v1/jobs", json=spec, headers=keyed)
        assert created.status_code == 201, created.text
    with pg_api.client() as c:
        again = c.post("/v1/jobs", json=spec, headers={"Idempotency-Key": first})
        assert again.headers.get("idempotent-replayed") == "true", "the first key was not the one used"
        assert again.json()["id"] == created.json()["id"]


def test_hot_lane_charges_no_token_where_the_routes_charge_none(pg_api: Api) -> None:
    """Requests the routes answer without authenticating (no such route, wrong method, the trailing-slash
    redirect, a create body that is not JSON) spend no rate-limit token on the hot lane either."""
    settings = pg_api.settings.model_copy(update={"rate_limit_per_minute": 1, "rate_limit_burst": 3})
    key = new_project_key(settings, "t")
    missing = "0" * 26
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {key}"}) as tc:
        codes = [tc.get(f"/v1/jobs/{missing}").status_code]  # the route verifies the key: one token
        codes += [
            tc.get(f"/v1/jobs/{missing}/no-such-thing").status_code,
            tc.get(f"/v1/jobs/{missing}/cancel").status_code,
            tc.get("/v1/jobs/", follow_redirects=False).status_code,
            tc.post("/v1/jobs", content=b"{x", headers={"Content-Type": "application/json"}).status_code,
        ]
        codes += [tc.get(f"/v1/jobs/{missing}").status_code for _ in range(3)]
    assert codes == [404, 404, 405, 307, 422, 404, 404, 429]


def _pg_kwargs_via(settings: Settings, proxy: TcpProxy) -> dict[str, object]:
    engine = make_engine(settings)
    _, kwargs = engine.dialect.create_connect_args(engine.url)
    engine.dispose()
    return {**kwargs, "host": "127.0.0.1", "port": proxy.port}


def test_listener_that_stops_answering_stops_serving(pg_api: Api) -> None:
    """Given a live cache with an entry, when the listening connection stops answering (sockets open, no
    byte crosses: a hung peer), the ping is unanswered and the entry is no longer served, so a change
    whose notification cannot arrive is never hidden for longer than about two ping intervals."""
    job = _new_job(pg_api)
    proxy = TcpProxy(("127.0.0.1", 5432))
    proxy.up()

    async def scenario() -> None:
        cache = JobStatusCache(_pg_kwargs_via(pg_api.settings, proxy), max_entries=10, ping_s=0.2)
        cache.ensure_listening()
        try:
            deadline = time.monotonic() + 10
            while not cache.live:
                assert time.monotonic() < deadline, "listener never became live"
                await asyncio.sleep(0.01)
            cache.put(str(job["id"]), "p", b"queued", cache.generation())
            proxy.pause()
            await asyncio.to_thread(_transition, pg_api, str(job["id"]), state.RUNNING, claimed_by="w")
            await asyncio.sleep(1.0)  # five ping intervals
            assert cache.get(str(job["id"]), "p") is None, "stale entry served, nothing heard"
            assert not cache.live
        finally:
            proxy.resume()
            cache.close()
            await asyncio.sleep(0)

    try:
        asyncio.run(scenario())
    finally:
        proxy.down()


def test_cancel_drops_the_entry_before_any_notification(pg_api: Api) -> None:
    """Given a cached job and a listener whose notifications are held back (paused proxy), the read right
    after a cancel through the API shows the cancel: the route drops the entry itself."""
    job = _new_job(pg_api)
    proxy = TcpProxy(("127.0.0.1", 5432))
    proxy.up()
    app = create_app(pg_api.settings)
    cache = JobStatusCache(_pg_kwargs_via(pg_api.settings, proxy), max_entries=10, ping_s=30)
    app.state.ctx.status_cache = cache
    try:
        with TestClient(app, headers={"Authorization": f"Bearer {pg_api.key}"}) as tc:
            tc.get(f"/v1/jobs/{job['id']}").raise_for_status()  # starts this cache's listener
            _wait(lambda: cache.live)
            tc.get(f"/v1/jobs/{job['id']}").raise_for_status()  # fills the entry
            hits = cache.hits
            assert tc.get(f"/v1/jobs/{job['id']}").json()["status"] == "queued"
            assert cache.hits == hits + 1
            proxy.pause()
            assert tc.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
            assert tc.get(f"/v1/jobs/{job['id']}").json()["status"] == "cancelled"
            proxy.resume()
    finally:
        proxy.resume()
        proxy.down()


def test_oversized_chunked_create_is_413_on_both_paths(pg_api: Api) -> None:
    """A create body sent without Content-Length that outgrows the spec limit is refused with 413
    whether the routes read it (first request of a key) or the hot lane does (the key verified)."""

    def chunks() -> Iterator[bytes]:
        for _ in range(pg_api.settings.max_spec_bytes // 65536 + 2):
            yield b" " * 65536

    key = new_project_key(pg_api.settings, "t")
    with pg_api.client(key) as c:
        json_type = {"Content-Type": "application/json"}
        routed = c.post("/v1/jobs", content=chunks(), headers=json_type)
        c.get(f"/v1/jobs/{'0' * 26}")  # verifies the key: the next create takes the hot lane
        laned = c.post("/v1/jobs", content=chunks(), headers=json_type)
    for resp in (routed, laned):
        assert resp.status_code == 413, resp.text
        assert resp.json()["error"]["code"] == "payload_too_large"
