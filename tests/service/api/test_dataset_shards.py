"""Sharded training datasets: shards declared, uploaded (streamed and presigned, each checked like any
dataset file and counted from its headers), sealed into a manifest; jobs name them as training data."""

from __future__ import annotations

import io
import os

import httpx
import numpy as np

from tests.service.api.test_uploads import _presigned
from tests.service.conftest import Api


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_sharded_dataset_upload_seal_manifest_and_job_reference(
    client: httpx.Client, api: Api, ready_inputs
) -> None:
    ds = client.post(
        "/v1/datasets", json={"name": f"train-{os.urandom(3).hex()}", "kind": "training", "format": "sharded"}
    )
    assert ds.status_code == 201, ds.text
    did = ds.json()["id"]
    counts = [5, 3, 4]
    for index, n in enumerate(counts[:2]):
        shard = client.post(f"/v1/datasets/{did}/shards", json={"index": index, "format": "npz"})
        assert shard.status_code == 201, shard.text
        body = _npz(x=np.zeros((n, 2), np.float32), labels=np.arange(n))
        put = client.put(f"/v1/datasets/{did}/shards/{index}/content", content=body)
        assert put.status_code == 200, put.text
    presigned = _presigned(client, f"/v1/datasets/{did}/shards", {"index": 2, "format": "npz"},
                           _npz(x=np.ones((4, 2), np.float32), labels=np.arange(4)))  # fmt: skip
    assert presigned["complete"]["status"] == "ready"
    # A gap (shard 4 without 3) is refused at seal; so is a shard whose arrays disagree on samples.
    assert client.post(f"/v1/datasets/{did}/shards", json={"index": 4, "format": "npz"}).status_code == 201
    gap = client.post(f"/v1/datasets/{did}/seal")
    assert gap.status_code == 422 and gap.json()["error"]["code"] == "shard_missing", gap.text
    client.post(f"/v1/datasets/{did}/shards", json={"index": 3, "format": "npz"})
    bad = client.put(
        f"/v1/datasets/{did}/shards/3/content", content=_npz(x=np.zeros((3, 2)), labels=np.arange(2))
    )
    assert bad.status_code == 422 and "same non-zero leading" in bad.text, bad.text
    not_ready = client.post(f"/v1/datasets/{did}/seal")
    assert not_ready.json()["error"]["code"] == "shard_not_ready"

    # A second dataset sealed cleanly; the manifest lists the counted samples.
    ds2 = client.post(
        "/v1/datasets",
        json={"name": f"train2-{os.urandom(3).hex()}", "kind": "training", "format": "sharded"},
    ).json()
    for index, n in enumerate(counts):
        client.post(f"/v1/datasets/{ds2['id']}/shards", json={"index": index, "format": "npz"})
        client.put(
            f"/v1/datasets/{ds2['id']}/shards/{index}/content", content=_npz(x=np.zeros((n, 2), np.float32))
        )
    model, calib = ready_inputs
    job = {
        "model_id": model["id"],
        "calib_dataset_id": calib["id"],
        "technique": "qat",
        "train_dataset_id": ds2["id"],
    }
    pending = client.post("/v1/jobs", json=job)
    assert pending.status_code == 422 and pending.json()["error"]["code"] == "dataset_not_ready", pending.text
    sealed = client.post(f"/v1/datasets/{ds2['id']}/seal")
    assert sealed.status_code == 200, sealed.text
    manifest = client.get(f"/v1/datasets/{ds2['id']}/manifest").json()
    assert [s["samples"] for s in manifest["shards"]] == counts and manifest["samples"] == 12
    assert client.get(f"/v1/datasets/{ds2['id']}").json()["status"] == "ready"
    assert (
        client.post(f"/v1/datasets/{ds2['id']}/shards", json={"index": 3, "format": "npz"}).json()["error"][
            "code"
        ]
        == "dataset_sealed"
    )
    created = client.post("/v1/jobs", json=job)
    assert created.status_code == 201, created.text
    assert created.json()["spec"]["train_dataset_id"] == ds2["id"]
    assert client.post("/v1/jobs", json={**job, "technique": "ptq"}).status_code == 422
    # Not a sharded dataset / another project's dataset.
    assert (
        client.post(f"/v1/datasets/{calib['id']}/shards", json={"index": 0, "format": "npz"}).json()["error"][
            "code"
        ]
        == "not_sharded"
    )
    with api.client(api.other_key) as other:
        assert other.get(f"/v1/datasets/{ds2['id']}/manifest").status_code == 404
    assert (
        client.put(f"/v1/datasets/{ds2['id']}/content", content=b"x").json()["error"]["code"]
        == "sharded_dataset"
    )
