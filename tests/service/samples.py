"""Small valid input files and API helpers shared by the service tests."""

from __future__ import annotations

import io
import os

import httpx
import numpy as np
import onnx
from onnx import TensorProto, helper

from service.db.repositories import projects
from service.db.session import make_engine, make_sessionmaker, session_scope
from service.settings import Settings


def new_project_key(settings: Settings, prefix: str = "p") -> str:
    """A new project (named ``prefix-<random>``) in ``settings``' database and the plaintext of its API key."""
    engine = make_engine(settings)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            project = projects.create_project(session, f"{prefix}-{os.urandom(4).hex()}")
            return projects.create_api_key(session, project)[1]
    finally:
        engine.dispose()


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


def job_body(model: dict[str, object], dataset: dict[str, object], **extra: object) -> dict[str, object]:
    return {"model_id": model["id"], "calib_dataset_id": dataset["id"], "technique": "ptq", **extra}
