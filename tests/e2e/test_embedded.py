"""Embedded mode end to end: ``lowbit serve`` (API + worker + relay + beat on SQLite, local objects and
the filesystem broker) in a subprocess, the digits example through the API, and a clean stop; then the
README's first command (``python -m examples.demo``) as a new user runs it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest

from examples.demo_server import free_port, start_server
from service.client import LowbitClient

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = {"model.onnx", "model.encodings", "model_qdq.onnx", "metrics.json"}


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _family(pid: int) -> list[int]:
    return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]


def test_serve_runs_a_job_end_to_end_and_sigterm_stops_every_child(
    tmp_path: Path, digits_artifacts: Any
) -> None:
    """Given `lowbit serve` with an empty data dir and nothing configured, When the digits model is
    submitted as a W8A8 quantsim job through the client, Then it succeeds with progress, its artifacts
    download through the local store's signed URLs, the QDQ model reproduces the reported ONNX Runtime
    accuracy, simulated accuracy is within 2 points of FP32; and SIGTERM leaves no process behind."""
    from core.export import run_onnx

    data = tmp_path / "data"
    server = start_server(data, free_port())
    try:
        assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
        ready = httpx.get(f"{server.url}/readyz").json()
        assert ready["status"] == "ok" and set(ready["checks"]) == {"database", "broker", "storage"}
        # No configuration: the CLI finds the server's url and key in the data directory.
        env = {k: v for k, v in os.environ.items() if k not in ("LOWBIT_URL", "LOWBIT_API_KEY")}
        listed = subprocess.run(
            [sys.executable, "-m", "service.cli", "jobs"],
            env={**env, "LOWBIT_DATA_DIR": str(data)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert listed.returncode == 0 and listed.stdout.startswith("ID"), listed.stderr

        with LowbitClient(server.url, server.api_key) as client:
            version = client.upload_model(digits_artifacts.model_pt2, name="digits")
            calib = client.upload_dataset(digits_artifacts.calib_data, kind="calibration")
            evald = client.upload_dataset(digits_artifacts.eval_data, kind="evaluation")
            job = client.submit(
                {
                    "model_id": version["model_id"],
                    "calib_dataset_id": calib["id"],
                    "eval_dataset_id": evald["id"],
                    "technique": "quantsim",
                    "param_bw": 8,
                    "output_bw": 8,
                }
            )
            events: list[dict[str, Any]] = []
            job = client.wait(job["id"], on_update=events.append, timeout_s=300)
            assert job["status"] == "succeeded", (
                job["error"],
                (data / "logs" / "worker.log").read_text()[-3000:],
            )
            assert len({e.get("stage") for e in events if e.get("stage")}) >= 2, events
            files = {p.name: p for p in client.download(job["id"], tmp_path / "out")}
        assert set(files) >= ARTIFACTS
        assert json.loads(files["model.encodings"].read_text())["activation_encodings"]
        ev = job["metrics"]["evaluation"]
        assert ev["metric"] == "accuracy" and ev["fp32"] > 0.9
        assert abs(ev["fp32"] - ev["sim"]) <= 0.02
        evaluation = np.load(digits_artifacts.eval_data)
        logits = run_onnx(files["model_qdq.onnx"], [evaluation["input"].astype(np.float32)])[0]
        assert float((logits.argmax(1) == evaluation["labels"]).mean()) == pytest.approx(ev["onnxruntime"])
        assert json.loads(files["metrics.json"].read_text())["evaluation"]["sim"] == ev["sim"]
        assert httpx.get(f"{server.url}/dashboard/login").status_code == 200

        family = _family(server.proc.pid)
        assert len(family) >= 5, family  # serve, api, worker (+ its pool child), relay, beat
    finally:
        code = server.stop(timeout_s=60)
    assert code == 0, (data / "serve.log").read_text()[-2000:]
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in family) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [p for p in family if _alive(p)] == []
    assert not (data / "url").exists()


def test_readme_first_command_runs_the_service_demo(tmp_path: Path, digits_artifacts: Any) -> None:
    """`python -m examples.demo` from the repository root: server up, autoquant job through the API,
    results table and dashboard URL printed, artifacts downloaded, server stopped."""
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOWBIT_")}
    run = subprocess.run(
        [sys.executable, "-m", "examples.demo", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        start_new_session=True,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    text = run.stdout
    for row in ("FP32 (PyTorch)", "simulated (QuantSim)", "ONNX Runtime (model_qdq.onnx)"):
        assert re.search(re.escape(row) + r"\s+0\.\d{4}", text), text
    # The demo's preset (onnxruntime_cpu) simulates what ONNX Runtime computes: within 0.3 point.
    sim = float(re.search(r"simulated \(QuantSim\)\s+(0\.\d{4})", text).group(1))  # type: ignore[union-attr]
    ort = float(re.search(r"ONNX Runtime \(model_qdq\.onnx\)\s+(0\.\d{4})", text).group(1))  # type: ignore[union-attr]
    assert abs(sim - ort) <= 0.003, text
    assert re.search(r"dashboard: http://127\.0\.0\.1:\d+/dashboard/jobs/\w+", text), text
    assert re.search(r"running\s+technique\s+\[#*\s*\]\s+\d+\.\d%", text), text  # live progress
    assert {p.name for p in out.iterdir()} >= ARTIFACTS
    pid = int(re.search(r"\(pid (\d+),", text).group(1))  # type: ignore[union-attr]
    assert not _alive(pid)
    data_dir = Path(re.search(r"data directory (\S+)\)", text).group(1))  # type: ignore[union-attr]
    assert not data_dir.exists()  # the temporary data directory is removed with the server
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # signal 0 probes: no process of its group is left
