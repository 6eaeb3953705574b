"""Hostile models at the worker, with real processes: a model whose conversion would allocate 4 GiB
fails its job at once (code out_of_memory, no traceback, no temp paths) under the per-job memory limit,
the pool process survives with bounded growth, and the next job succeeds."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from tests.fixtures.rss import high_water_mark
from tests.fixtures.worker_procs import processes, start_relay, start_worker
from tests.fixtures.worker_stack import Stack, wait_job
from tests.service.uploads import hostile_files as hf

pytestmark = [pytest.mark.slow]
DONE = {"succeeded", "failed", "cancelled"}
MiB = 1 << 20


def _upload_model(client: httpx.Client, name: str, content: bytes) -> str:
    model = client.post("/v1/models", json={"name": name}).json()
    version = client.post(f"/v1/models/{model['id']}/versions", json={"format": "onnx"}).json()
    resp = client.put(f"/v1/models/{model['id']}/versions/{version['version']}/content", content=content)
    assert resp.status_code == 200, resp.text
    return str(model["id"])


def test_memory_blow_up_fails_only_that_job(stack: Stack, tmp_path: Path) -> None:
    env = stack.env(job_memory_limit_bytes=3 << 30)
    with processes() as procs, stack.client() as client:
        procs.append(start_relay(env, tmp_path / "relay.log"))
        worker = start_worker(env, tmp_path / "w.log", "hostile")
        procs.append(worker)
        (child,) = worker.children()
        before = high_water_mark(child)
        # Its calibration data fits the declared input (1, 32768): the data is checked before converting.
        calib = client.post("/v1/datasets", json={"name": "bomb-calib", "format": "npz"}).json()["id"]
        sent = client.put(
            f"/v1/datasets/{calib}/content", content=hf.npz(x=np.ones((2, 1 << 15), np.float32))
        )
        assert sent.status_code == 200, sent.text
        model = _upload_model(client, "bomb", hf.allocating_onnx())
        bomb = stack.submit(client, model_id=model, calib_dataset_id=calib)
        failed = wait_job(client, bomb["id"], DONE, timeout=120)
        assert failed["status"] == "failed" and failed["attempts"] == 1, failed
        error = failed["error"]
        assert error["code"] == "out_of_memory" and "memory limit" in error["message"], error
        assert "traceback" not in error and "Traceback" not in str(error) and "/tmp/" not in str(error)
        listed = client.get("/v1/jobs", params={"limit": 100}).json()["items"]
        assert "Traceback" not in str(listed) and "lowbit-job-" not in str(listed)
        assert worker.children() == [child] and psutil.Process(child).is_running()  # the same pool process
        assert high_water_mark(child) - before <= 1024 * MiB
        good = stack.submit(client)
        assert wait_job(client, good["id"], DONE, timeout=120)["status"] == "succeeded"
