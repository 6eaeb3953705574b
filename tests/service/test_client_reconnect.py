"""`lowbit job ID --wait` rides out an API restart: the client reconnects with backoff, says so, and
exits 0 when the job it follows succeeds (real API processes, killed and restarted on one port)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from service.db.migrate import upgrade
from service.db.models import Job
from service.db.session import make_engine, make_sessionmaker, session_scope
from service.jobs import state
from service.settings import Settings
from tests.fixtures.api_process import api_process
from tests.fixtures.live_api import free_port
from tests.service.samples import job_body, make_ready_dataset, make_ready_model, new_project_key

pytestmark = [pytest.mark.slow]


def _finish_job(settings: Settings, job_id: str) -> None:
    """What a worker would write while the API is down: running, then succeeded."""
    engine = make_engine(settings)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            job = session.get(Job, job_id)
            assert job is not None
            state.transition(session, job, state.RUNNING, claimed_by="test", attempts=1)
            state.transition(session, job, state.SUCCEEDED, metrics={"done": True}, stage="done")
    finally:
        engine.dispose()


def _wait_text(path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text(errors="replace"):
        assert proc.poll() is None, path.read_text(errors="replace")
        assert time.monotonic() < deadline, f"{text!r} not printed: {path.read_text(errors='replace')}"
        time.sleep(0.1)


def test_wait_survives_api_restart(tmp_path: Path) -> None:
    """Given `lowbit job ID --wait` following a queued job, When the API is SIGKILLed, the job finishes
    while no API runs, and the API comes back on the same port, Then the client printed that it is
    reconnecting and exits 0 with the succeeded job."""
    env = {
        "LOWBIT_DATABASE_URL": f"sqlite:///{tmp_path / 'lowbit.db'}",
        "LOWBIT_LOCAL_STORAGE_DIR": str(tmp_path / "objects"),
        "LOWBIT_BROKER_FOLDER": str(tmp_path / "broker"),
        "LOWBIT_SECRET_KEY": "test-secret",
    }
    settings = Settings(
        database_url=env["LOWBIT_DATABASE_URL"],
        storage="local",
        local_storage_dir=env["LOWBIT_LOCAL_STORAGE_DIR"],
        secret_key="test-secret",
    )
    upgrade(settings)
    key = new_project_key(settings)
    port = free_port()
    err = tmp_path / "wait.err"
    with api_process(env, tmp_path / "api1.log", port=port) as (url, pid):
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
            body = job_body(make_ready_model(http, "m"), make_ready_dataset(http, "d"))
            resp = http.post("/v1/jobs", json=body)
            assert resp.status_code == 201, resp.text
            job_id = resp.json()["id"]
        client_env = {**os.environ, **env, "LOWBIT_URL": url, "LOWBIT_API_KEY": key}
        client_env["LOWBIT_RECONNECT_MAX_SLEEP_S"] = "1"
        with err.open("wb") as err_out:
            waiting = subprocess.Popen(
                [sys.executable, "-m", "service.cli", "job", job_id, "--wait", "--json"],
                env=client_env,
                stdout=subprocess.PIPE,
                stderr=err_out,
            )
        try:
            _wait_text(err, "queued", waiting)  # the first progress event: the client follows the job
            os.kill(pid, signal.SIGKILL)
            _wait_text(err, "reconnecting", waiting)
            _finish_job(settings, job_id)
            with api_process(env, tmp_path / "api2.log", port=port):
                out, _ = waiting.communicate(timeout=60)
        finally:
            if waiting.poll() is None:
                waiting.kill()
                waiting.wait()
    assert waiting.returncode == 0, err.read_text()
    assert json.loads(out)["status"] == "succeeded"
    assert "reconnecting in" in err.read_text()
