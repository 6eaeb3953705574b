"""Hostile jobs against the embedded configuration (``lowbit serve``: SQLite, local object directory,
filesystem broker), over HTTP: what passes the API's upload checks, or reaches the store by another
path, fails its job in the worker with an error code and a message in the user's terms (no traceback,
no temp path), runs nothing (marker file), and grows the worker's pool process by at most 1 GiB per job
and the API by at most 256 MiB per request; the pool process survives and a sound job still succeeds.

The distributed configuration's run of the memory blow-up is tests/worker/test_hostile_jobs.py.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
from onnx import TensorProto, helper, numpy_helper

from examples.demo_server import BackgroundServer, free_port, start_server
from service.storage.base import blob_key
from tests.fixtures.rss import MiB, Peak, high_water_mark
from tests.fixtures.worker_stack import wait_job
from tests.service.uploads import hostile_files as hf

pytestmark = [pytest.mark.slow]
DONE = {"succeeded", "failed", "cancelled"}
API_BUDGET = 256 * MiB
WORKER_BUDGET = 1024 * MiB


@dataclass
class Served:
    server: BackgroundServer
    client: httpx.Client
    api_pid: int
    worker_pid: int

    def pool_child(self) -> int:
        (child,) = psutil.Process(self.worker_pid).children()
        return child.pid

    def objects(self) -> Path:
        return self.server.data_dir / "objects"


def _wait_pool(worker_pid: int) -> None:
    """Wait for the worker's pool process (forked after the engine preload, possibly after /readyz);
    the bound only catches a hang, the worker's exit fails at once."""
    deadline = time.monotonic() + 600
    worker = psutil.Process(worker_pid)
    while not worker.children():
        assert worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE, "the worker exited"
        assert time.monotonic() < deadline, "no pool process after 600 s"
        time.sleep(0.2)


def _child(serve_pid: int, marker: str) -> int:
    for proc in psutil.Process(serve_pid).children():
        if marker in proc.cmdline():
            return proc.pid
    raise AssertionError(f"no {marker!r} child of lowbit serve")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One ``lowbit serve`` for the module. The API's declared-input budget is lifted so that models
    declaring 10^12-element inputs reach the worker (its own handling is what is tested); each pool
    process gets a 3 GiB address-space limit."""
    data = tmp_path_factory.mktemp("hostile-embedded") / "data"
    env = {"LOWBIT_UPLOAD_MAX_INPUT_ELEMENTS": str(10**13), "LOWBIT_JOB_MEMORY_LIMIT_BYTES": str(3 << 30)}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        server = start_server(data, free_port(), timeout_s=600)
    try:
        headers = {"Authorization": f"Bearer {server.api_key}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=120) as client:
            pid = server.proc.pid
            worker = _child(pid, "worker")
            _wait_pool(worker)
            yield Served(server, client, _child(pid, "serve-api"), worker)
    finally:
        server.stop(timeout_s=60)


def _onnx(nodes: list[Any], shape: list[int], initializers: list[Any] = ()) -> bytes:  # type: ignore[assignment]
    graph = helper.make_graph(
        nodes,
        "hostile",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", "columns"])],
        list(initializers),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _upload_model(client: httpx.Client, fmt: str, content: bytes) -> str:
    model = client.post("/v1/models", json={"name": f"m-{os.urandom(4).hex()}"}).json()
    version = client.post(f"/v1/models/{model['id']}/versions", json={"format": fmt}).json()
    resp = client.put(f"/v1/models/{model['id']}/versions/{version['version']}/content", content=content)
    assert resp.status_code == 200, resp.text
    return str(model["id"])


def _upload_data(client: httpx.Client, content: bytes) -> str:
    body = {"name": f"d-{os.urandom(4).hex()}", "format": "npz", "kind": "calibration"}
    dataset = client.post("/v1/datasets", json=body).json()
    resp = client.put(f"/v1/datasets/{dataset['id']}/content", content=content)
    assert resp.status_code == 200, resp.text
    return str(dataset["id"])


def _run(served: Served, model_id: str, calib_id: str) -> tuple[dict[str, Any], int]:
    """Submit a quantsim job and wait for it; returns the job and the pool process's peak growth."""
    child = served.pool_child()
    before = high_water_mark(child)
    with Peak(served.api_pid) as api:
        resp = served.client.post(
            "/v1/jobs", json={"model_id": model_id, "calib_dataset_id": calib_id, "technique": "quantsim"}
        )
    assert resp.status_code == 201, resp.text
    job = wait_job(served.client, resp.json()["id"], DONE, timeout=600)
    assert served.pool_child() == child, "the pool process died with the job"
    assert api.growth <= API_BUDGET, f"API RSS grew {api.growth / MiB:.0f} MiB"
    return job, high_water_mark(child) - before


def _failed_cleanly(job: dict[str, Any], code: str, *parts: str) -> None:
    assert job["status"] == "failed" and job["attempts"] == 1, job
    error = job["error"]
    assert error["code"] == code, error
    for part in parts:
        assert part in error["message"], error
    assert "Traceback" not in str(error) and "lowbit-job-" not in str(error) and "/tmp/" not in str(error)


def _npz(**arrays: np.ndarray) -> bytes:
    return hf.npz(**arrays)


def test_memory_blow_up_fails_only_that_job(served: Served) -> None:
    """x (1, 32768) + ConstantOfShape([32768, 32768]): 4 GiB built while converting, under a 3 GiB
    limit: out_of_memory, the same pool process goes on (the next tests' jobs run in it)."""
    job, growth = _run(
        served,
        _upload_model(served.client, "onnx", hf.allocating_onnx()),
        _upload_data(served.client, _npz(x=np.ones((2, 1 << 15), np.float32))),
    )
    _failed_cleanly(job, "out_of_memory", "memory limit")
    assert growth <= WORKER_BUDGET, f"worker grew {growth / MiB:.0f} MiB"


def test_declared_input_sizes_never_size_an_allocation(served: Served) -> None:
    """A MatMul declaring x: [62.5e9, 16] (4 TB) with 8 real samples quantizes; a Relu declaring
    [10^6, 10^6] with data of shape (8, 16) fails as invalid_data naming the dataset and the dimension."""
    client = served.client
    weight = numpy_helper.from_array(
        np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32), "w"
    )
    big = _upload_model(
        client, "onnx", _onnx([helper.make_node("MatMul", ["x", "w"], ["y"])], [62_500_000_000, 16], [weight])
    )
    calib = _upload_data(client, _npz(x=np.random.default_rng(1).standard_normal((8, 16)).astype(np.float32)))
    job, growth = _run(served, big, calib)
    assert job["status"] == "succeeded", job["error"]
    assert growth <= WORKER_BUDGET, f"worker grew {growth / MiB:.0f} MiB"

    relu = _upload_model(
        client, "onnx", _onnx([helper.make_node("Relu", ["x"], ["y"])], [1_000_000, 1_000_000])
    )
    job, growth = _run(served, relu, calib)
    _failed_cleanly(
        job,
        "invalid_data",
        f"calibration dataset {calib}",
        "array 'x' has shape (8, 16); dimension 1 must be 1000000",
    )
    assert growth <= WORKER_BUDGET, f"worker grew {growth / MiB:.0f} MiB"


def _swap(served: Served, sent: bytes, stored: bytes) -> None:
    """Replace the stored blob of ``sent`` by ``stored``: content that reached the store by another path
    than the upload check (an older release, an operator's copy)."""
    path = served.objects() / blob_key(hashlib.sha256(sent).hexdigest())
    assert path.is_file(), path
    path.write_bytes(stored)


def test_store_content_is_checked_again_by_the_worker(
    served: Served, digits_artifacts: Any, tmp_path: Path
) -> None:
    """A stored .pt2 whose weight is a pickle is refused before loading and runs nothing; a stored
    deflate bomb (1 GiB from ~1 MB) is refused from its headers in bounded memory."""
    client = served.client
    marker = tmp_path / "executed"
    real = digits_artifacts.model_pt2.read_bytes()
    model = _upload_model(client, "pt2", real)
    calib = digits_artifacts.calib_data.read_bytes()
    calib_id = _upload_data(client, calib)
    _swap(served, real, hf.pt2_with_pickled_weight(digits_artifacts.model_pt2, marker))
    job, growth = _run(served, model, calib_id)
    _failed_cleanly(job, "upload_rejected", "is stored as a pickle")
    assert not marker.exists()
    assert growth <= WORKER_BUDGET, f"worker grew {growth / MiB:.0f} MiB"

    benign = _npz(x=np.random.default_rng(2).standard_normal((4, 16)).astype(np.float32))
    bomb_id = _upload_data(client, benign)
    _swap(served, benign, hf.deflate_bomb_npz(1))
    weight = numpy_helper.from_array(np.ones((16, 4), np.float32), "w")
    matmul = _upload_model(
        client, "onnx", _onnx([helper.make_node("MatMul", ["x", "w"], ["y"])], ["N", 16], [weight])
    )
    job, growth = _run(served, matmul, bomb_id)
    _failed_cleanly(job, "upload_rejected", "inflates")
    assert growth <= WORKER_BUDGET, f"worker grew {growth / MiB:.0f} MiB"
