"""Hostile request bodies: deep JSON in every free-form field and crons that never fire are 422 with a
code and a message, on the hot lane and the routed path, and never a 500."""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest

from tests.service.conftest import Api
from tests.service.samples import job_body


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize("field", ["quantsim_config", "params"])
@pytest.mark.parametrize("lane", ["hot", "routed"])
def test_deep_json_in_a_job_field_is_422(client: httpx.Client, ready_inputs, field: str, lane: str) -> None:  # type: ignore[no-untyped-def]
    """~900 levels (it answered 500: pydantic's serialization depth) and 33 levels: 422 naming the field;
    32 levels pass validation. An Idempotency-Key sends the create down the routed path."""
    model, dataset = ready_inputs
    headers = {"Idempotency-Key": os.urandom(8).hex()} if lane == "routed" else {}
    for depth in (900, 33):
        resp = client.post(
            "/v1/jobs", json=job_body(model, dataset, **{field: _nested(depth)}), headers=headers
        )
        assert resp.status_code == 422, (depth, resp.status_code, resp.text[:300])
        error = resp.json()["error"]
        assert (
            error["code"] == "invalid_request"
            and field in error["message"]
            and "nests deeper" in error["message"]
        )
    ok = client.post("/v1/jobs", json=job_body(model, dataset, quantsim_config=_nested(31)), headers=headers)
    assert ok.status_code == 201, ok.text[:300]


def test_deep_json_in_a_schedule_template_is_422(client: httpx.Client, ready_inputs) -> None:  # type: ignore[no-untyped-def]
    model, dataset = ready_inputs
    template = {"calib_dataset_id": dataset["id"], "technique": "ptq", "quantsim_config": _nested(900)}
    body = {"name": "deep", "model_name": model["name"], "cron": "0 2 * * *", "template": template}
    resp = client.post("/v1/schedules", json=body)
    assert resp.status_code == 422 and "nests deeper" in resp.json()["error"]["message"], resp.text[:300]


def test_cron_that_never_fires_is_422_on_create_and_patch(
    api: Api, client: httpx.Client, ready_inputs
) -> None:  # type: ignore[no-untyped-def]
    model, dataset = ready_inputs
    template = {"calib_dataset_id": dataset["id"], "technique": "ptq"}
    body = {"name": f"s-{os.urandom(3).hex()}", "model_name": model["name"], "template": template}
    for cron in ("0 0 31 2 *", "0 0 30 2 *"):
        resp = client.post("/v1/schedules", json={**body, "cron": cron})
        assert resp.status_code == 422, resp.text
        assert "does not fire within a year" in resp.json()["error"]["message"]
    created = client.post("/v1/schedules", json={**body, "cron": "0 2 1 * *"})
    assert created.status_code == 201, created.text
    patched = client.patch(f"/v1/schedules/{created.json()['id']}", json={"cron": "0 0 31 2 *"})
    assert patched.status_code == 422 and "within a year" in patched.text
    assert client.get(f"/v1/schedules/{created.json()['id']}").json()["cron"] == "0 2 1 * *"
