"""A job's reads say which model version (and content hash) it quantizes."""

from __future__ import annotations

import hashlib
import os

import httpx

from tests.service.conftest import Api
from tests.service.samples import job_body, make_ready_dataset, make_ready_model, onnx_bytes


def test_job_reads_show_the_model_version_and_its_sha256(api: Api, client: httpx.Client) -> None:
    name = f"ver-{os.urandom(3).hex()}"
    model, dataset = make_ready_model(client, name, seed=43), make_ready_dataset(client, f"{name}-d")
    job = client.post("/v1/jobs", json=job_body(model, dataset)).json()
    sha = hashlib.sha256(onnx_bytes(43)).hexdigest()
    assert (job["model_version"], job["model_sha256"]) == (1, sha)  # the create's response too

    read = client.get(f"/v1/jobs/{job['id']}").json()  # the polling path (one joined statement)
    assert (read["model_version"], read["model_sha256"]) == (1, sha)
    (listed,) = client.get("/v1/jobs", params={"model_id": model["id"]}).json()["items"]
    assert (listed["id"], listed["model_version"], listed["model_sha256"]) == (job["id"], 1, sha)
    cancelled = client.post(f"/v1/jobs/{job['id']}/cancel").json()
    assert (cancelled["model_version"], cancelled["model_sha256"]) == (1, sha)
