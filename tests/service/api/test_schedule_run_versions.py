"""A schedule's runs say which model version (and content hash) each run quantized."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime

import httpx

from service.db.schedule_tables import ScheduleRun
from service.db.session import make_engine, make_sessionmaker, session_scope
from tests.service.conftest import Api
from tests.service.samples import job_body, make_ready_dataset, make_ready_model, onnx_bytes


def test_runs_show_the_model_version_and_its_sha256(api: Api, client: httpx.Client) -> None:
    name = f"sched-{os.urandom(3).hex()}"
    model, dataset = make_ready_model(client, name, seed=41), make_ready_dataset(client, f"{name}-d")
    job = client.post("/v1/jobs", json=job_body(model, dataset)).json()
    body = {"name": name, "model_name": name, "cron": "0 2 * * *",
            "template": {"calib_dataset_id": dataset["id"], "technique": "ptq"}}  # fmt: skip
    schedule = client.post("/v1/schedules", json=body)
    assert schedule.status_code == 201, schedule.text
    engine = make_engine(api.settings)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            session.add(ScheduleRun(schedule_id=schedule.json()["id"], scheduled_for=datetime(2026, 1, 1, tzinfo=UTC),
                                    job_id=job["id"], status="enqueued", message="", webhook_attempts=0))  # fmt: skip
    finally:
        engine.dispose()
    (run,) = client.get(f"/v1/schedules/{schedule.json()['id']}/runs").json()["items"]
    assert run["job_id"] == job["id"] and run["model_version"] == 1
    assert run["model_sha256"] == hashlib.sha256(onnx_bytes(41)).hexdigest()
