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


def test_job_create_with_a_key_replays_refuses_another_body_and_stores_no_error(
    client: httpx.Client,
    ready_inputs,  # type: ignore[no-untyped-def]
) -> None:
    """Given a job create refused for a pending dataset, the key is not spent: the corrected body with the
    same key creates the job; a retry replays it (same job, header set); another body is 422."""
    model, dataset = ready_inputs
    pending = client.post("/v1/datasets", json={"name": "pending", "format": "npz"}).json()
    key = {"Idempotency-Key": os.urandom(8).hex()}
    refused = client.post("/v1/jobs", json=job_body(model, pending), headers=key)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "dataset_not_ready"
    first = client.post("/v1/jobs", json=job_body(model, dataset), headers=key)
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    again = client.post("/v1/jobs", json=job_body(model, dataset), headers=key)
    assert again.status_code == 201 and again.headers.get("Idempotent-Replayed") == "true"
    assert again.json() == first.json() == client.get(f"/v1/jobs/{first.json()['id']}").json()
    other = client.post("/v1/jobs", json=job_body(model, dataset, priority=1), headers=key)
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
    jobs = client.get("/v1/jobs", params={"model_id": model["id"]}).json()["items"]
    assert [j["id"] for j in jobs] == [first.json()["id"]]
