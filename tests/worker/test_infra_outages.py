"""Outages of the worker's infrastructure with real servers: a PostgreSQL restart during a job
(the worker retries its writes and finishes) and an object store that becomes unreachable
(retried with backoff; a short outage is absorbed, a long one fails the job with a clear error).
Each outage is repeated REPEATS times on the same started servers and processes."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.fixtures.pg_cluster import pg_cluster
from tests.fixtures.tcp_proxy import TcpProxy
from tests.fixtures.worker_procs import processes, start_relay, start_worker
from tests.fixtures.worker_stack import Stack, make_stack, wait_job

pytestmark = [pytest.mark.slow]
DONE = {"succeeded", "failed", "cancelled"}
REPEATS = 3


def _wait_stage(stack: Stack, client: object, job_id: str, stages: set[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        resp = client.get(f"/v1/jobs/{job_id}")  # type: ignore[attr-defined]
        if resp.status_code != 200:
            # Right after a database restart the API's pooled connections are dead: it answers 503
            # (never 500) and reconnects on the next request.
            assert resp.status_code == 503, resp.text
            time.sleep(0.05)
            continue
        job = resp.json()
        if job["status"] == "running" and job["stage"] in stages:
            return
        assert job["status"] not in DONE, job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {stages}")


def test_postgres_restart_during_job(stack: Stack, digits_artifacts: object, tmp_path: Path) -> None:
    """Given a job running against its own PostgreSQL server, When the server stops for 3 s and comes
    back (three jobs, one restart each), Then the worker's retried writes carry each job to succeeded
    in one attempt."""
    with (
        pg_cluster() as cluster,
        make_stack(tmp_path, digits_artifacts, stack.redis, stack.seaweed, cluster.url) as own,
    ):
        # A restart on a loaded machine can keep heartbeats from landing for more than the usual 5 s;
        # this test is about retried writes, not about detecting a lost worker.
        env = own.env(stale_after_s=30)
        with processes() as procs, own.client() as client:
            procs.append(start_relay(env, tmp_path / "relay.log"))
            procs.append(start_worker(env, tmp_path / "w.log", "pg"))
            for round_ in range(REPEATS):
                job = own.submit(client, eval_dataset_id=own.inputs["eval"])
                _wait_stage(own, client, job["id"], {"prepare", "technique"})
                cluster.stop("immediate")
                time.sleep(3)
                cluster.start()
                done = wait_job(client, job["id"], DONE, timeout=120)
                assert done["status"] == "succeeded", (round_, done["error"], procs[1].tail())
                assert done["attempts"] == 1
                assert done["metrics"]["evaluation"]["onnxruntime"] > 0.9


def test_object_store_outage_retried_then_clear_failure(stack: Stack, tmp_path: Path) -> None:
    """Given a worker that reaches S3 through a proxy, When S3 is unreachable for 1.5 s at the start of
    a job, Then the downloads are retried and the job succeeds; When it stays unreachable past the
    retry budget (4 s), Then each attempt ends on the infrastructure error and is retried (counted),
    and the job fails once its attempts (2 here) are used up, with an error naming the object store
    and the budget (three rounds of both cases)."""
    endpoint = urlparse(stack.seaweed.endpoint)
    proxy = TcpProxy((endpoint.hostname or "127.0.0.1", endpoint.port or 80))
    proxy.up()
    env = stack.env(s3_endpoint=proxy.url, max_attempts=2)
    with processes() as procs, stack.client() as client:
        procs.append(start_relay(env, tmp_path / "relay.log"))
        procs.append(start_worker(env, tmp_path / "w.log", "s3"))
        for round_ in range(REPEATS):
            proxy.down()
            short = stack.submit(client)
            _wait_stage(stack, client, short["id"], {"fetch"})
            time.sleep(1.5)
            proxy.up()
            done = wait_job(client, short["id"], DONE, timeout=90)
            assert done["status"] == "succeeded", (round_, done["error"])
            proxy.down()
            long = stack.submit(client)
            failed = wait_job(client, long["id"], DONE, timeout=90)
            assert failed["status"] == "failed", round_
            assert failed["attempts"] == 2, failed
            assert failed["error"]["type"] == "InfrastructureError"
            message = failed["error"]["message"]
            assert "object storage download" in message and "retry budget 4 s" in message
            proxy.up()
