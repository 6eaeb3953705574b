"""/metrics job, queue and worker series and request ids, against the real stack (PostgreSQL, Redis,
SeaweedFS, API) with a real ``lowbit worker`` and relay logging JSON.

Other tests share the stack's database, so series are compared before and after this test's jobs.
"""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.db.models import Job
from service.db.session import make_engine, make_sessionmaker, session_scope
from service.jobs import state
from tests.fixtures.worker_procs import Proc, processes, start_relay
from tests.fixtures.worker_stack import Stack, wait_job
from worker.liveness import is_alive

pytestmark = pytest.mark.e2e

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(api: httpx.Client) -> Series:
    resp = api.get("/metrics")
    assert resp.status_code == 200
    out: Series = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(series: Series, name: str, **labels: str) -> float:
    return series.get((name, tuple(sorted(labels.items()))), 0.0)


def _bad_calibration(api: httpx.Client) -> str:
    """A calibration set whose array names match no model input: the job fails in the worker."""
    buf = io.BytesIO()
    np.savez(buf, not_an_input=np.zeros((4, 3), dtype=np.float32))
    ds = api.post("/v1/datasets", json={"name": f"bad-{uuid.uuid4().hex[:6]}", "format": "npz"}).json()
    assert api.put(f"/v1/datasets/{ds['id']}/content", content=buf.getvalue()).status_code == 200
    return str(ds["id"])


def _finish_as_autoquant(stack: Stack, job_id: str, stages: list[dict[str, object]]) -> None:
    """The row a finished AutoQuant job leaves (worker/techniques/autoquant.py's stage summary), written
    directly: an AutoQuant run on this stack would add minutes for the same stored shape."""
    engine = make_engine(stack.settings)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            job = session.get(Job, job_id)
            assert job is not None
            job.technique, job.status = "autoquant", state.SUCCEEDED
            job.started_at = job.finished_at = job.created_at
            job.metrics = {"autoquant": {"stages": stages}}
    finally:
        engine.dispose()


def test_metrics_series_and_request_id_reach_the_worker_log(stack: Stack, tmp_path: Path) -> None:
    """Given a worker logging JSON, When jobs succeed, fail and wait on a queue nobody serves, Then
    /metrics counts them by state, technique, duration, queue and error, and the X-Request-ID the API
    echoed for a create is on the worker's log lines of that job."""
    env = {**stack.env(log_format="json"), "LOWBIT_LIVENESS_FILE": str(tmp_path / "alive")}
    with processes() as procs, stack.client() as api:
        before = scrape(api)
        rid = f"e2e-{uuid.uuid4().hex[:12]}"
        body = {
            "model_id": stack.inputs["model"],
            "calib_dataset_id": stack.inputs["calib"],
            "technique": "quantsim",
        }
        created = api.post("/v1/jobs", json=body, headers={"X-Request-ID": rid})
        assert created.status_code == 201 and created.headers["X-Request-ID"] == rid
        job = created.json()
        assert len(api.get("/healthz").headers["X-Request-ID"]) == 32  # one is made when none is given
        failing = stack.submit(api, calib_dataset_id=_bad_calibration(api))
        parked = stack.submit(api, compute="gpu")  # no gpu worker here: it stays queued
        staged = stack.submit(api, compute="gpu")
        cached = f"cached-{uuid.uuid4().hex[:6]}"
        _finish_as_autoquant(stack, staged["id"], [
            {"name": "adaround", "status": "met", "score": 0.97, "cached": False, "seconds": 42.25},
            {"name": cached, "status": "below", "score": 0.9, "cached": True, "seconds": 7.0},
        ])  # fmt: skip

        procs.append(start_relay(env, tmp_path / "relay.log"))
        worker = Proc(["worker", "--queues", "cpu", "--concurrency", "1", "--name", "metrics@test",
                       "--loglevel", "info"], env, tmp_path / "worker.log")  # fmt: skip
        procs.append(worker)
        wait_job(api, job["id"], {"succeeded"}, timeout=240)
        wait_job(api, failing["id"], {"failed"}, timeout=120)
        after = scrape(api)
        api.post(f"/v1/jobs/{parked['id']}/cancel")
        assert is_alive(tmp_path / "alive")  # the worker's own liveness file, no broker involved

    ok = {"status": "succeeded", "technique": "quantsim"}
    assert value(after, "lowbit_jobs", **ok) >= value(before, "lowbit_jobs", **ok) + 1
    count = value(after, "lowbit_job_duration_seconds_count", **ok)
    assert count >= value(before, "lowbit_job_duration_seconds_count", **ok) + 1
    assert value(after, "lowbit_job_duration_seconds_bucket", le="+Inf", **ok) == count
    assert value(after, "lowbit_job_duration_seconds_sum", **ok) > 0
    assert value(after, "lowbit_queue_depth", queue="gpu") >= 1
    stage = {"stage": "adaround"}
    staged_count = value(after, "lowbit_stage_duration_seconds_count", **stage)
    assert staged_count >= value(before, "lowbit_stage_duration_seconds_count", **stage) + 1
    assert value(after, "lowbit_stage_duration_seconds_bucket", le="+Inf", **stage) == staged_count
    in_minute = value(after, "lowbit_stage_duration_seconds_bucket", le="60.0", **stage)
    assert in_minute >= value(before, "lowbit_stage_duration_seconds_bucket", le="60.0", **stage) + 1
    assert value(after, "lowbit_stage_duration_seconds_sum", **stage) >= 42.25
    assert value(after, "lowbit_stage_duration_seconds_count", stage=cached) == 0  # cached: not run
    assert value(after, "lowbit_queue_oldest_seconds", queue="gpu") > 0
    failures_after = sum(v for (n, _), v in after.items() if n == "lowbit_job_failures_total")
    failures_before = sum(v for (n, _), v in before.items() if n == "lowbit_job_failures_total")
    assert failures_after >= failures_before + 1
    for name in ("lowbit_workers_busy", "lowbit_job_heartbeat_age_seconds", "lowbit_outbox_pending",
                 "lowbit_outbox_lag_seconds", "lowbit_upload_bytes_total"):  # fmt: skip
        assert (name, ()) in after, name
    assert value(after, "lowbit_upload_bytes_total") > 1000

    lines = [json.loads(line) for line in worker.log.read_text().splitlines() if line.startswith("{")]
    mine = [r for r in lines if r.get("request_id") == rid]
    assert mine, lines[-20:]
    assert all(r.get("job_id") == job["id"] for r in mine)
    assert any(job["id"] in r["message"] for r in mine)
