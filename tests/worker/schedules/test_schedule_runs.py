"""Schedules with real processes: a due schedule runs exactly once with two `lowbit beat` processes;
a regression against the previous successful run fires exactly one signed webhook."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, func, select

from service.db.models import Job
from service.db.schedule_tables import ScheduleRun
from tests.fixtures.live_api import free_port
from tests.fixtures.worker_procs import processes, start_beat, start_relay, start_worker, start_workers
from tests.fixtures.worker_stack import Stack, wait_job
from worker.db import WorkerDb
from worker.schedules.tick import tick
from worker.settings import WorkerSettings

pytestmark = [pytest.mark.slow]
DONE = {"succeeded", "failed", "cancelled"}
SECRET = "webhook-secret-0123456789"


def _template(stack: Stack, **extra: Any) -> dict[str, Any]:
    return {"calib_dataset_id": stack.inputs["calib"], "eval_dataset_id": stack.inputs["eval"],
            "technique": "quantsim", **extra}  # fmt: skip


def _runs(stack: Stack, schedule_id: str) -> list[ScheduleRun]:
    engine = create_engine(stack.settings.database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(ScheduleRun)
                .where(ScheduleRun.schedule_id == schedule_id)
                .order_by(ScheduleRun.scheduled_for)
            ).all()
            return list(rows)  # type: ignore[arg-type]
    finally:
        engine.dispose()


def _job_count(stack: Stack, schedule_id: str) -> int:
    engine = create_engine(stack.settings.database_url)
    try:
        with engine.connect() as conn:
            return int(
                conn.scalar(select(func.count()).select_from(Job).where(Job.schedule_id == schedule_id)) or 0
            )
    finally:
        engine.dispose()


def test_due_schedule_runs_exactly_once_with_two_beats(stack: Stack, tmp_path: Path) -> None:
    """Given a schedule whose daily fire time is the current minute, and two beat processes ticking
    every second with two workers, Then exactly one run and one job exist, and the job succeeds."""
    now = datetime.now(UTC)
    env = stack.env(schedule_tick_s=1)
    with processes() as procs, stack.client() as client:
        body = {"name": "nightly", "model_name": "digits", "template": _template(stack),
                "cron": f"{now.minute} {now.hour} * * *", "timezone": "UTC"}  # fmt: skip
        resp = client.post("/v1/schedules", json=body)
        assert resp.status_code == 201, resp.text
        schedule = resp.json()
        procs.append(start_relay(env, tmp_path / "relay.log"))
        procs.extend(start_workers(env, tmp_path, ["sched0", "sched1"]))
        procs.extend(start_beat(env, tmp_path / f"beat{i}.log", tmp_path / f"beat{i}") for i in range(2))
        deadline = time.monotonic() + 90
        while not _runs(stack, schedule["id"]) and time.monotonic() < deadline:
            time.sleep(0.5)
        runs = _runs(stack, schedule["id"])
        assert len(runs) == 1, runs
        job = wait_job(client, str(runs[0].job_id), DONE, timeout=120)
        assert job["status"] == "succeeded" and job["schedule_id"] == schedule["id"]
        for beat in procs[-2:]:
            assert "schedule tick: " in beat.log.read_text()
        time.sleep(3)  # more ticks from both beats
        assert len(_runs(stack, schedule["id"])) == 1
        assert _job_count(stack, schedule["id"]) == 1
        listed = client.get(f"/v1/schedules/{schedule['id']}/runs").json()["items"]
        assert [r["job_id"] for r in listed] == [job["id"]]
        assert client.delete(f"/v1/schedules/{schedule['id']}").status_code == 204


class _Receiver:
    """A local webhook receiver: the first request answers 500 (to exercise the retry), then 200."""

    def __init__(self) -> None:
        self.requests: list[tuple[int, dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                code = 500 if not receiver.requests else 200
                receiver.requests.append((code, dict(self.headers), body))
                self.send_response(code)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


def test_regression_fires_one_signed_webhook(stack: Stack, tmp_path: Path) -> None:
    """Given a nightly schedule with a webhook, When night 1 runs W8A8 and night 2 runs W2A8 (much
    worse), Then night 1 is the baseline (not regressed), night 2 is regressed, and the receiver
    accepts exactly one webhook whose HMAC-SHA256 signature verifies (after one 500 answer)."""
    receiver = _Receiver()
    env = stack.env()
    db = WorkerDb(stack.settings, WorkerSettings(**{"retry_base_s": 0.2}))
    try:
        with processes() as procs, stack.client() as client:
            body = {"name": "regress", "model_name": "digits", "template": _template(stack), "cron": "0 2 * * *",
                    "timezone": "Europe/Paris", "webhook_url": receiver.url, "webhook_secret": SECRET,
                    "regression_threshold": 0.05}  # fmt: skip
            schedule = client.post("/v1/schedules", json=body).json()
            created = datetime.fromisoformat(schedule["created_at"])
            procs.append(start_relay(env, tmp_path / "relay.log"))
            procs.append(start_worker(env, tmp_path / "w.log", "regress"))
            jobs = []
            for night, template in ((1, _template(stack)), (2, _template(stack, param_bw=2))):
                resp = client.patch(f"/v1/schedules/{schedule['id']}", json={"template": template})
                assert resp.status_code == 200, resp.text
                assert tick(db, now=created + timedelta(days=night)) >= 1
                assert tick(db, now=created + timedelta(days=night)) == 0  # the same slot never twice
                assert len(_runs(stack, schedule["id"])) == night
                run = _runs(stack, schedule["id"])[-1]
                jobs.append(wait_job(client, str(run.job_id), DONE, timeout=120))
                assert jobs[-1]["status"] == "succeeded", jobs[-1]["error"]
            deadline = time.monotonic() + 30
            while not any(code == 200 for code, _, _ in receiver.requests) and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(2)  # a duplicate delivery would arrive now
            first, second = _runs(stack, schedule["id"])
            assert first.regressed is False and second.regressed is True
            assert second.webhook_status == "sent" and second.webhook_attempts == 2
            accepted = [(h, b) for code, h, b in receiver.requests if code == 200]
            assert len(receiver.requests) == 2 and len(accepted) == 1
            headers, raw = accepted[0]
            stamp, mac = (part.split("=", 1)[1] for part in headers["X-Lowbit-Signature"].split(","))
            expected = hmac.new(SECRET.encode(), f"{stamp}.".encode() + raw, hashlib.sha256).hexdigest()
            assert hmac.compare_digest(mac, expected)
            payload = json.loads(raw)
            assert payload["run_id"] == second.id == headers["X-Lowbit-Delivery"]
            assert payload["job_id"] == jobs[1]["id"] and payload["baseline_job_id"] == jobs[0]["id"]
            assert payload["baseline_metric"] - payload["metric"] > 0.05
            assert jobs[1]["metrics"]["evaluation"]["onnxruntime"] == pytest.approx(payload["metric"])
            job2 = client.get(f"/v1/jobs/{jobs[1]['id']}").json()
            assert job2["metrics"]["regression"]["regressed"] is True
            assert client.delete(f"/v1/schedules/{schedule['id']}").status_code == 204
    finally:
        receiver.server.shutdown()
        db.engine.dispose()


def test_schedule_api_validates_input(stack: Stack) -> None:
    with stack.client() as client:
        bad = {"name": "x", "model_name": "digits", "template": _template(stack), "cron": "61 * * * *"}
        resp = client.post("/v1/schedules", json=bad)
        assert resp.status_code == 422 and "cron" in resp.text
        resp = client.post("/v1/schedules", json={**bad, "cron": "0 2 * * *", "timezone": "Mars/Olympus"})
        assert resp.status_code == 422 and "time zone" in resp.text
        resp = client.post("/v1/schedules", json={**bad, "cron": "0 2 * * *", "model_name": "nope"})
        assert resp.status_code == 404
        ok = client.post("/v1/schedules", json={**bad, "cron": "0 2 * * *", "webhook_secret": SECRET}).json()
        assert ok["has_webhook_secret"] is True and "webhook_secret" not in ok
        assert client.patch(f"/v1/schedules/{ok['id']}", json={"enabled": False}).json()["enabled"] is False
        assert client.delete(f"/v1/schedules/{ok['id']}").status_code == 204
        assert client.get(f"/v1/schedules/{ok['id']}").status_code == 404
        other = httpx.get(f"{stack.api_url}/v1/schedules", headers={"Authorization": "Bearer wrong"})
        assert other.status_code == 401
