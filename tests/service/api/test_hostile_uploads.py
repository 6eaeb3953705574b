"""Hostile uploads over HTTP, against the API in its own process in the embedded (SQLite + local) and the
distributed (PostgreSQL + S3) configuration: each refused at upload/complete with 422 upload_rejected,
a message naming the upload and what is accepted, the target left ``rejected``, nothing executed (marker
file), and the API's peak RSS growing by at most 256 MiB per request."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service.settings import Settings
from tests.fixtures.api_process import api_process
from tests.fixtures.rss import MiB, Peak
from tests.fixtures.worker_procs import settings_env
from tests.service.samples import new_project_key
from tests.service.uploads import hostile_files as hf

RSS_BUDGET = 256 * MiB


@pytest.fixture(scope="module")
def served(
    mode_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, int, str]]:
    tmp = tmp_path_factory.mktemp("hostile-api")
    settings = mode_settings.model_copy(update={"rate_limit_per_minute": 0})
    env = {**settings_env(settings), "TMPDIR": str(tmp)}
    key = new_project_key(settings, "hostile")
    with api_process(env, tmp / "api.log") as (url, pid):
        yield url, pid, key


def _stream(client: httpx.Client, path: str, body: dict[str, Any], data: bytes) -> tuple[httpx.Response, str]:
    created = client.post(path, json=body).json()
    if "version" in created:
        url = f"/v1/models/{created['model_id']}/versions/{created['version']}"
    else:
        url = f"/v1/datasets/{created['id']}"
    return client.put(f"{url}/content", content=data), url


def _presigned(
    client: httpx.Client, path: str, body: dict[str, Any], data: bytes
) -> tuple[httpx.Response, str]:
    sha = hashlib.sha256(data).hexdigest()
    created = client.post(path, json={**body, "size": len(data), "sha256": sha}).json()
    assert httpx.put(created["upload"]["url"], content=data).status_code == 200
    return client.post(created["upload"]["complete_url"], json={}), f"/v1/datasets/{created['id']}"


CASES: list[tuple[str, str, Callable[[], bytes], str]] = [
    ("bzip2-bomb", "npz", lambda: hf.bzip2_npz(16), r"compressed with bzip2; accepted: stored or deflate"),
    ("deflate-bomb", "npz", lambda: hf.deflate_bomb_npz(1), r"inflates \d+x .*accepted: at most"),
    ("lying-header", "npz", hf.lying_header_npz, r"header says 4000000000000 bytes"),
    (
        "nan",
        "npz",
        lambda: hf.npz(x=np.array([[np.nan, 1.0]], np.float32)),
        r"NaN or infinite values; accepted",
    ),
    ("strings", "npz", lambda: hf.npz(x=np.array([["a"]])), r"unicode strings\); accepted: bool"),
    ("no-samples", "npz", lambda: hf.npz(x=np.zeros((0, 3), np.float32)), r"zero samples"),
    ("safetensors-header", "safetensors", hf.safetensors_bad_header, r"header length \d+ exceeds the file"),
    ("onnx-huge-input", "onnx", hf.onnx_huge_input, r"model input 'x' declares shape .* accepted: at most"),
]


@pytest.mark.parametrize(("name", "fmt", "make", "match"), CASES, ids=[c[0] for c in CASES])
def test_hostile_upload_refused_in_bounded_memory(
    served: tuple[str, int, str], name: str, fmt: str, make: Callable[[], bytes], match: str
) -> None:
    import re

    url, pid, key = served
    data = make()
    suffix = os.urandom(3).hex()
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as client:
        if fmt in ("onnx", "pt2"):
            model = client.post("/v1/models", json={"name": f"{name}-{suffix}"}).json()
            path, body, names = f"/v1/models/{model['id']}/versions", {"format": fmt}, "model version 1"
        else:
            path, body, names = (
                "/v1/datasets",
                {"name": f"{name}-{suffix}", "format": fmt},
                f"dataset '{name}-{suffix}'",
            )
        send = _presigned if name == "bzip2-bomb" else _stream  # one case through presigned PUT + complete
        with Peak(pid) as peak:
            resp, resource = send(client, path, body, data)
        assert resp.status_code == 422, resp.text
        error = resp.json()["error"]
        assert error["code"] == "upload_rejected" and re.search(match, error["message"]), error
        assert names in error["message"], error
        assert client.get(resource).json()["status"] == "rejected"
    assert peak.growth <= RSS_BUDGET, f"{name}: API RSS grew {peak.growth / MiB:.0f} MiB"


def test_pickled_pt2_weight_refused_and_never_run(
    served: tuple[str, int, str], digits_artifacts: Any, tmp_path: Path
) -> None:
    url, pid, key = served
    marker = tmp_path / "executed"
    data = hf.pt2_with_pickled_weight(digits_artifacts.model_pt2, marker)
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as client:
        model = client.post("/v1/models", json={"name": f"pickled-{os.urandom(3).hex()}"}).json()
        with Peak(pid) as peak:
            resp, _ = _stream(client, f"/v1/models/{model['id']}/versions", {"format": "pt2"}, data)
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "upload_rejected", resp.text
    assert "is stored as a pickle; accepted: raw tensors" in resp.json()["error"]["message"]
    assert not marker.exists()
    assert peak.growth <= RSS_BUDGET
