"""Corpus models as real service jobs: one ``.pt2`` and one ONNX file, uploaded and run to ``succeeded``.

Given `lowbit serve` (embedded: API, worker, broker, store), when BERT's ``.pt2`` (torch 2.13, dynamic
batch and sequence, guard code in the file, fused attention) and the MobileNetV2-style ONNX (TorchScript
exporter, ReLU6 as Clip) are submitted as W8A8 quantsim jobs, then both succeed, and their metrics name
what stayed in float (``float_ops``, a list) — the same verdict `lowbit validate` gives on the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from examples.demo_server import free_port, start_server
from service.client import LowbitClient
from tests.corpus.build import corpus_entries

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One embedded server for both jobs (its start-up is most of a job's time)."""
    data = tmp_path_factory.mktemp("corpus-serve") / "data"
    running = start_server(data, free_port())
    try:
        yield running
    finally:
        running.stop(timeout_s=60)


@pytest.mark.parametrize(("name", "fmt"), [("bert", "pt2"), ("mobilenet_style", "onnx-legacy")])
def test_corpus_file_runs_as_a_service_job_to_succeeded(server: Any, name: str, fmt: str) -> None:
    (entry,) = corpus_entries([name])
    model_path, calib_path = entry.path(fmt), entry.calibration()
    with LowbitClient(server.url, server.api_key) as client:
        version = client.upload_model(model_path, name=name)
        calib = client.upload_dataset(calib_path, kind="calibration")
        submitted = client.submit(
            {
                "model_id": version["model_id"],
                "calib_dataset_id": calib["id"],
                "technique": "quantsim",
                "param_bw": 8,
                "output_bw": 8,
            }
        )
        job: dict[str, Any] = client.wait(submitted["id"], timeout_s=600)
    assert job["status"] == "succeeded", job["error"]
    assert isinstance(job["metrics"]["float_ops"], list)
    assert job["metrics"]["evaluation"]
