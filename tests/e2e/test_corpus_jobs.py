"""Every corpus file as a real service job: uploaded, run to ``succeeded``, its float ops named.

Given `lowbit serve` (embedded: API, worker, broker, store), when each file of the corpus — every model,
as ``.pt2`` (torch 2.13, dynamic dimensions, guard code in the file) and as ONNX from both torch
exporters — is submitted with its calibration data as a W8A8 quantsim job, then the job succeeds and its
metrics name what stayed in float (``float_ops``, a list): exactly the ops tests/corpus/test_pipeline.py
allows for that file (tests.corpus.pipeline.FLOAT_OPS), none for the others.

Files the exporters cannot write (CorpusEntry.formats leaves them out, models.py says why): GPT-2 has no
TorchScript ONNX (aten::diff in transformers' causal mask); T5's encoder and Swin have no dynamo ONNX
(run_decompositions fails on a view after a transpose with a dynamic dimension). Each still runs as
``.pt2`` and as its other ONNX file.

One server serves every job: its start-up costs more than a job (a few seconds each).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from examples.demo_server import free_port, start_server
from service.client import LowbitClient
from tests.corpus.build import CorpusEntry, corpus_entries
from tests.corpus.pipeline import FLOAT_OPS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CASES = [
    pytest.param(entry, fmt, id=f"{entry.name}-{fmt}") for entry in corpus_entries() for fmt in entry.formats
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    data = tmp_path_factory.mktemp("corpus-serve") / "data"
    running = start_server(data, free_port())
    try:
        yield running
    finally:
        running.stop(timeout_s=60)


@pytest.mark.parametrize(("entry", "fmt"), CASES)
def test_corpus_file_runs_as_a_service_job_to_succeeded(server: Any, entry: CorpusEntry, fmt: str) -> None:
    with LowbitClient(server.url, server.api_key) as client:
        version = client.upload_model(entry.path(fmt), name=f"{entry.name}-{fmt}")
        calib = client.upload_dataset(entry.calibration(), kind="calibration")
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
    float_ops = job["metrics"]["float_ops"]
    assert isinstance(float_ops, list)
    assert set(float_ops) == FLOAT_OPS.get((entry.name, fmt), set())
    assert job["metrics"]["evaluation"]
