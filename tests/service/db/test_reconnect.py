"""A PostgreSQL restart under a serving API: once the server accepts connections again, no request
answers 503 (one retry allowed), through the sync pool (SQLAlchemy), the async hot-lane pool and the
job-status cache. Real PostgreSQL server (its own cluster, stopped and started), real HTTP."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from service.db.liveness import connection_gone, socket_says_goodbye
from service.db.migrate import upgrade
from service.settings import Settings
from tests.fixtures.live_api import live_api
from tests.fixtures.pg_cluster import pg_cluster
from tests.service.samples import job_body, make_ready_dataset, make_ready_model, new_project_key

pytestmark = [pytest.mark.slow]


def _requests(http: httpx.Client, job_id: str, body: dict[str, object]) -> list[tuple[str, str, object]]:
    """One of each kind: hot-lane status read and create (async pool), listings (sync pool)."""
    return [
        ("GET", f"/v1/jobs/{job_id}", None),
        ("GET", "/v1/jobs", None),
        ("GET", "/v1/models", None),
        ("POST", "/v1/jobs", body),
        ("GET", f"/v1/jobs/{job_id}/logs", None),
    ]


def _send(http: httpx.Client, method: str, path: str, body: object) -> int:
    return http.request(method, path, json=body).status_code


def test_no_503_after_postgres_restart(tmp_path: Path) -> None:
    """Given an API whose pools hold many connections (concurrent requests), When PostgreSQL stops
    and starts again, Then every request kind answers without 503 once it is back (a 503 may be
    retried once; the retry must succeed), each kind 10 times in a row."""
    with pg_cluster() as cluster:
        settings = Settings(
            database_url=cluster.url,
            storage="local",
            local_storage_dir=str(tmp_path / "objects"),
            secret_key="test-secret",
            rate_limit_per_minute=0,
        )
        upgrade(settings)
        key = new_project_key(settings)
        with (
            live_api(settings) as (url, _),
            httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http,
        ):
            body = job_body(make_ready_model(http, "m"), make_ready_dataset(http, "d"))
            job_id = http.post("/v1/jobs", json=body).json()["id"]
            kinds = _requests(http, job_id, body)
            with ThreadPoolExecutor(12) as pool:  # fill both pools with several connections each
                warm = list(pool.map(lambda k: _send(http, *k), kinds * 12))
            assert set(warm) <= {200, 201}, warm
            cluster.stop("fast")
            cluster.start()
            failures = []
            for round_ in range(10):
                for method, path, payload in kinds:
                    status = _send(http, method, path, payload)
                    if status == 503:
                        status = _send(http, method, path, payload)  # the one retry allowed
                    if status not in (200, 201):
                        failures.append((round_, method, path, status))
            assert failures == []


def test_liveness_sees_a_closed_socket() -> None:
    """The checkout check's oracle: a socket whose peer closed reads as ready, an idle open one not."""
    import socket

    a, b = socket.socketpair()
    try:
        assert not socket_says_goodbye(a.fileno())
        b.close()
        assert socket_says_goodbye(a.fileno())
    finally:
        a.close()
    assert socket_says_goodbye(-1)

    class Closed:
        closed, broken = True, False

    assert connection_gone(Closed())
