"""Uploads: streaming through the API, presigned PUT/multipart with plain HTTP, dedupe, and rejections."""

from __future__ import annotations

import hashlib
import io
import os
import time
import zipfile

import httpx
import numpy as np
import pytest

from tests.service.conftest import Api
from tests.service.samples import make_ready_dataset, make_ready_model, npz_bytes, onnx_bytes


def _presigned(client: httpx.Client, path: str, body: dict[str, object], data: bytes) -> dict[str, object]:
    """Declare with size+sha256, PUT the bytes (or parts) with plain HTTP, complete; returns the resource."""
    resource = client.post(path, json={**body, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    assert resource.status_code == 201, resource.text
    out = resource.json()
    target = out["upload"]
    if target is None:
        return dict(out)
    if target["method"] == "put":
        put = httpx.put(target["url"], content=data)
        assert put.status_code == 200, put.text
        parts: list[dict[str, object]] = []
    else:
        size, parts = target["part_size"], []
        for n, url in enumerate(target["part_urls"], start=1):
            put = httpx.put(url, content=data[(n - 1) * size : n * size])
            assert put.status_code == 200, put.text
            parts.append({"part_number": n, "etag": put.headers["etag"]})
    done = client.post(target["complete_url"], json={"parts": parts})
    assert done.status_code == 200, done.text
    out["complete"] = done.json()
    return dict(out)


def test_streamed_model_version_becomes_ready(client: httpx.Client) -> None:
    model = client.post("/v1/models", json={"name": f"stream-{os.urandom(3).hex()}"}).json()
    v1 = client.post(f"/v1/models/{model['id']}/versions", json={"format": "onnx"}).json()
    assert v1["version"] == 1 and v1["status"] == "pending" and v1["upload"] is None
    data = onnx_bytes(1)
    resp = client.put(
        f"/v1/models/{model['id']}/versions/1/content",
        content=data,
        headers={"X-Content-SHA256": hashlib.sha256(data).hexdigest()},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"status": "ready", "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    assert client.get(f"/v1/models/{model['id']}").json()["latest_version"] == 1
    again = client.put(f"/v1/models/{model['id']}/versions/1/content", content=data)
    assert again.status_code == 422 and again.json()["error"]["code"] == "already_uploaded"


def test_presigned_put_then_dedupe(api: Api, client: httpx.Client) -> None:
    data = onnx_bytes(int.from_bytes(os.urandom(2), "big") + 10)
    model = client.post("/v1/models", json={"name": f"pre-{os.urandom(3).hex()}"}).json()
    first = _presigned(client, f"/v1/models/{model['id']}/versions", {"format": "onnx"}, data)
    assert first["complete"]["status"] == "ready"  # type: ignore[index]
    # Same bytes again: stored once, no upload needed, the version is ready at once.
    second = client.post(
        f"/v1/models/{model['id']}/versions",
        json={"format": "onnx", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()},
    ).json()
    assert second["upload"] is None and second["status"] == "ready" and second["version"] == 2
    assert second["sha256"] == hashlib.sha256(data).hexdigest()
    # Another project that only knows the hash gets no shortcut: it must send the bytes.
    with api.client(api.other_key) as other:
        theirs = other.post("/v1/models", json={"name": "copycat"}).json()
        claim = other.post(
            f"/v1/models/{theirs['id']}/versions",
            json={"format": "onnx", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()},
        ).json()
        assert claim["status"] == "pending" and claim["upload"] is not None
        done = other.post(claim["upload"]["complete_url"], json={})
        assert done.status_code == 422 and done.json()["error"]["code"] == "upload_missing"


def test_presigned_multipart_dataset(api: Api, client: httpx.Client) -> None:
    """Given a part size of 5 MiB, a 11 MiB dataset goes up in 3 presigned parts and is verified."""
    rng = np.random.default_rng(7)
    buf = io.BytesIO()
    np.savez(buf, x=rng.standard_normal((11 * 1024 * 256,)).astype(np.float32))
    data = buf.getvalue()
    assert api.settings.multipart_part_bytes == 5 * 1024 * 1024
    out = _presigned(client, "/v1/datasets", {"name": "big", "format": "npz"}, data)
    assert out["upload"]["method"] == "multipart" and len(out["upload"]["part_urls"]) == 3  # type: ignore[index]
    assert client.get(f"/v1/datasets/{out['id']}").json()["status"] == "ready"


def test_sha_mismatch_rejected(client: httpx.Client) -> None:
    data = npz_bytes(3)
    resp = client.post(
        "/v1/datasets", json={"name": "bad", "format": "npz", "size": len(data), "sha256": "0" * 64}
    ).json()
    assert httpx.put(resp["upload"]["url"], content=data).status_code == 200
    done = client.post(resp["upload"]["complete_url"], json={})
    assert done.status_code == 422 and "sha256" in done.json()["error"]["message"]
    assert client.get(f"/v1/datasets/{resp['id']}").json()["status"] == "rejected"


def test_structural_checks_reject_bad_files(client: httpx.Client) -> None:
    obj = io.BytesIO()
    np.save(obj, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    pickled = io.BytesIO()
    with zipfile.ZipFile(pickled, "w") as zf:
        zf.writestr("x.npy", obj.getvalue())
    cases = [("npz", pickled.getvalue(), "object dtype"), ("npz", b"not a zip", "not a zip"),
             ("safetensors", b"\x05\x00\x00\x00\x00\x00\x00\x00{}", "header")]  # fmt: skip
    for fmt, data, why in cases:
        ds = client.post("/v1/datasets", json={"name": "x", "format": fmt}).json()
        resp = client.put(f"/v1/datasets/{ds['id']}/content", content=data)
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"]["code"] == "upload_rejected" and why in resp.json()["error"]["message"]
    model = client.post("/v1/models", json={"name": f"bad-{os.urandom(3).hex()}"}).json()
    client.post(f"/v1/models/{model['id']}/versions", json={"format": "onnx"})
    resp = client.put(f"/v1/models/{model['id']}/versions/1/content", content=b"\x08\x07garbage")
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "upload_rejected"


@pytest.fixture(scope="module")
def no_inputs_pt2(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    from tests.fixtures.pt2_without_inputs import save_pt2_without_example_inputs  # torch: only this test

    return save_pt2_without_example_inputs(tmp_path_factory.mktemp("pt2") / "m.pt2").read_bytes()


def test_pt2_saved_without_example_inputs_becomes_ready(client: httpx.Client, no_inputs_pt2: bytes) -> None:
    """A torch.export.save archive whose sample-inputs member is empty (no example inputs) is accepted."""
    model = client.post("/v1/models", json={"name": f"no-inputs-{os.urandom(3).hex()}"}).json()
    client.post(f"/v1/models/{model['id']}/versions", json={"format": "pt2"})
    resp = client.put(f"/v1/models/{model['id']}/versions/1/content", content=no_inputs_pt2)
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "ready"


def test_local_signed_urls_tampered_or_expired_refused(api: Api, client: httpx.Client) -> None:
    if api.settings.storage != "local":
        return  # S3 URL signatures are covered in tests/service/storage against SeaweedFS
    from service.storage import make_store

    store = make_store(api.settings)
    store.put_bytes("jobs/t/file.bin", b"payload")
    store.put_bytes("jobs/t/other.bin", b"other")
    url = store.presign_get("jobs/t/file.bin", 60)
    assert httpx.get(url).content == b"payload"
    assert httpx.get(url.replace("file.bin", "other.bin")).status_code == 401
    assert httpx.get(url.replace("op=get", "op=put")).status_code == 401
    assert httpx.put(url, content=b"overwrite").status_code == 401  # a GET URL cannot write
    short = store.presign_get("jobs/t/file.bin", 1)
    time.sleep(2.1)
    resp = httpx.get(short)
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "url_expired"


def test_versions_keep_one_format_and_datasets_are_found_by_content(client: httpx.Client) -> None:
    """A model's versions keep one format (409 says how to name the other file); datasets can be
    listed by sha256, so a client reuses stored content."""
    model = make_ready_model(client, f"fmt-{os.urandom(3).hex()}")
    clash = client.post(f"/v1/models/{model['id']}/versions", json={"format": "pt2"})
    assert clash.status_code == 409 and clash.json()["error"]["code"] == "format_mismatch"
    assert "another name" in clash.json()["error"]["message"]
    data = make_ready_dataset(client, f"sha-{os.urandom(3).hex()}", seed=77)
    sha256 = hashlib.sha256(npz_bytes(77)).hexdigest()
    found = client.get("/v1/datasets", params={"sha256": sha256, "kind": "calibration"}).json()["items"]
    assert [d["id"] for d in found] == [data["id"]]
    assert client.get("/v1/datasets", params={"sha256": "f" * 64}).json()["items"] == []
    assert client.get("/v1/datasets", params={"sha256": "not-hex"}).status_code == 422


def test_dry_run_checks_a_spec_without_inputs(client: httpx.Client) -> None:
    ok = client.post("/v1/jobs/validate", json={"technique": "ptq", "param_bw": 4})
    assert ok.status_code == 200 and ok.json()["spec"]["params"]["steps"] == ["bn_fold", "cle"]
    bad = client.post("/v1/jobs/validate", json={"technique": "autoquant"})
    assert bad.status_code == 422 and "allowed_accuracy_drop" in bad.json()["error"]["message"]
