"""A live API per mode (PostgreSQL+S3 and SQLite+local), two projects with keys, and upload helpers."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from service.db.repositories import projects
from service.db.session import make_engine, make_sessionmaker, session_scope
from service.settings import Settings
from tests.fixtures.live_api import live_api


@dataclass
class Api:
    url: str
    settings: Settings
    key: str  # project A
    other_key: str  # project B

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key or self.key}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


@pytest.fixture(scope="session")
def api(mode_settings: Settings) -> Iterator[Api]:
    # Small parts so an 11 MiB test file takes the multipart path.
    settings = mode_settings.model_copy(
        update={"rate_limit_per_minute": 0, "multipart_part_bytes": 5 * 1024 * 1024}
    )
    engine = make_engine(settings)
    with session_scope(make_sessionmaker(engine)) as session:
        keys = []
        for _ in range(2):
            project = projects.create_project(
                session, f"proj-{hashlib.sha256(str(id(keys)).encode()).hexdigest()[:6]}-{len(keys)}"
            )
            keys.append(projects.create_api_key(session, project, "test")[1])
    engine.dispose()
    with live_api(settings) as (url, live_settings):
        yield Api(url, live_settings, keys[0], keys[1])


@pytest.fixture
def client(api: Api) -> Iterator[httpx.Client]:
    with api.client() as c:
        yield c


def onnx_bytes(seed: int = 0) -> bytes:
    """A tiny valid ONNX model (MatMul + Relu); ``seed`` changes the weights (and so the content hash)."""
    weight = np.random.default_rng(seed).standard_normal((4, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [onnx.numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def npz_bytes(seed: int = 0) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, x=np.random.default_rng(seed).standard_normal((8, 1, 4)).astype(np.float32))
    return buf.getvalue()


def make_ready_model(client: httpx.Client, name: str, seed: int = 0) -> dict[str, object]:
    """Create a model and stream one ONNX version; returns the model JSON."""
    model = client.post("/v1/models", json={"name": name}).json()
    version = client.post(f"/v1/models/{model['id']}/versions", json={"format": "onnx"}).json()
    resp = client.put(
        f"/v1/models/{model['id']}/versions/{version['version']}/content", content=onnx_bytes(seed)
    )
    assert resp.status_code == 200, resp.text
    return dict(model)


def make_ready_dataset(client: httpx.Client, name: str, seed: int = 0) -> dict[str, object]:
    dataset = client.post("/v1/datasets", json={"name": name, "format": "npz"}).json()
    resp = client.put(f"/v1/datasets/{dataset['id']}/content", content=npz_bytes(seed))
    assert resp.status_code == 200, resp.text
    return dict(dataset)


@pytest.fixture
def ready_inputs(client: httpx.Client) -> tuple[dict[str, object], dict[str, object]]:
    suffix = hashlib.sha256(str(id(client)).encode()).hexdigest()[:8]
    return make_ready_model(client, f"m-{suffix}"), make_ready_dataset(client, f"d-{suffix}")


def job_body(model: dict[str, object], dataset: dict[str, object], **extra: object) -> dict[str, object]:
    return {"model_id": model["id"], "calib_dataset_id": dataset["id"], "technique": "ptq", **extra}
