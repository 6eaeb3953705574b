"""Idempotency-Key on creates: same key + same body → same resource; different body → 422."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.service.conftest import Api
from tests.service.samples import job_body


def test_same_key_same_body_returns_the_same_resource(client: httpx.Client) -> None:
    key = {"Idempotency-Key": os.urandom(8).hex()}
    first = client.post("/v1/models", json={"name": f"idem-{key['Idempotency-Key']}"}, headers=key)
    # Same body with other key order and whitespace is the same request.
    again = client.post(
        "/v1/models",
        content=f'{{ "description": "",  "name": "idem-{key["Idempotency-Key"]}" }}'.replace(
            '"description": "",  ', ""
        ),
        headers={**key, "content-type": "application/json"},
    )
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json() and again.headers.get("Idempotent-Replayed") == "true"
    # Without a key the second create is a real second attempt (and conflicts on the name).
    assert client.post("/v1/models", json={"name": f"idem-{key['Idempotency-Key']}"}).status_code == 409


def test_same_key_different_body_is_422(client: httpx.Client) -> None:
    key = {"Idempotency-Key": os.urandom(8).hex()}
    assert client.post("/v1/datasets", json={"name": "a", "format": "npz"}, headers=key).status_code == 201
    resp = client.post("/v1/datasets", json={"name": "b", "format": "npz"}, headers=key)
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "idempotency_key_reused"


def test_keys_are_scoped_to_project_and_route(api: Api, client: httpx.Client) -> None:
    key = {"Idempotency-Key": os.urandom(8).hex()}
    mine = client.post("/v1/datasets", json={"name": "a", "format": "npz"}, headers=key).json()
    with api.client(api.other_key) as other:
        theirs = other.post("/v1/datasets", json={"name": "a", "format": "npz"}, headers=key).json()
    assert mine["id"] != theirs["id"]
    model = client.post("/v1/models", json={"name": f"r-{key['Idempotency-Key']}"}, headers=key)
    assert model.status_code == 201  # same key on another route is another request


def test_concurrent_job_creates_with_one_key_make_one_job(client: httpx.Client, ready_inputs) -> None:  # type: ignore[no-untyped-def]
    model, dataset = ready_inputs
    key = {"Idempotency-Key": os.urandom(8).hex()}
    body = job_body(model, dataset)

    def create(_: int) -> httpx.Response:
        return client.post("/v1/jobs", json=body, headers=key)

    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(create, range(8)))
    ok = [r for r in responses if r.status_code == 201]
    assert ok, [r.text for r in responses]
    assert all(r.status_code in (201, 409) for r in responses)  # 409: first request still in flight
    assert len({r.json()["id"] for r in ok}) == 1
    jobs = client.get("/v1/jobs", params={"model_id": model["id"]}).json()["items"]
    assert len(jobs) == 1
