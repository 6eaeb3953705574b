"""Auth, project scoping (another project's resources are 404), limits and the error body shape."""

from __future__ import annotations

import os
import re

import httpx
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.db.repositories import projects
from service.db.session import make_engine, make_sessionmaker, session_scope
from tests.service.conftest import Api
from tests.service.samples import job_body, new_project_key


def test_missing_and_bad_keys_are_401(api: Api) -> None:
    for headers in (
        {},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer lb_nope"},
        {"Authorization": "Bearer x"},
    ):
        resp = httpx.get(f"{api.url}/v1/jobs", headers=headers)
        assert resp.status_code == 401, headers
        assert resp.json()["error"]["code"] == "unauthorized"


def test_other_projects_resources_are_404(api: Api, client: httpx.Client, ready_inputs) -> None:  # type: ignore[no-untyped-def]
    """Given resources of project A, every read, write and reference from project B answers 404."""
    model, dataset = ready_inputs
    job = client.post("/v1/jobs", json=job_body(model, dataset)).json()
    pending = client.post(
        "/v1/datasets", json={"name": "p", "format": "npz", "size": 10, "sha256": "a" * 64}
    ).json()
    with api.client(api.other_key) as other:
        probes = [
            ("GET", f"/v1/models/{model['id']}", None),
            ("GET", f"/v1/models/{model['id']}/versions", None),
            ("GET", f"/v1/models/{model['id']}/versions/1", None),
            ("POST", f"/v1/models/{model['id']}/versions", {"format": "onnx"}),
            ("PUT", f"/v1/models/{model['id']}/versions/1/content", b"x"),
            ("GET", f"/v1/datasets/{dataset['id']}", None),
            ("PUT", f"/v1/datasets/{dataset['id']}/content", b"x"),
            ("POST", f"/v1/uploads/{pending['upload']['upload_id']}/complete", {}),
            ("GET", f"/v1/jobs/{job['id']}", None),
            ("POST", f"/v1/jobs/{job['id']}/cancel", None),
            ("POST", f"/v1/jobs/{job['id']}/rerun", None),
            ("GET", f"/v1/jobs/{job['id']}/artifacts", None),
            ("GET", f"/v1/jobs/{job['id']}/logs", None),
            ("GET", f"/v1/jobs/{job['id']}/events", None),
            ("GET", "/v1/jobs", {"model_id": model["id"]}),
            ("POST", "/v1/jobs", job_body(model, dataset)),
        ]
        for method, path, body in probes:
            if isinstance(body, bytes):
                resp = other.request(method, path, content=body)
            elif method == "GET":
                resp = other.request(method, path, params=body)
            else:
                resp = other.request(method, path, json=body)
            assert resp.status_code == 404, (method, path, resp.status_code, resp.text)
            assert resp.json()["error"]["code"] == "not_found"
        assert job["id"] not in [j["id"] for j in other.get("/v1/jobs").json()["items"]]
        assert model["id"] not in [m["id"] for m in other.get("/v1/models").json()["items"]]
        assert dataset["id"] not in [d["id"] for d in other.get("/v1/datasets").json()["items"]]
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 200  # still there for its owner


def test_spec_size_limit_is_413(api: Api, client: httpx.Client) -> None:
    big = {"name": "x", "description": "y" * (api.settings.max_spec_bytes + 1)}
    resp = client.post("/v1/models", json=big)
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "payload_too_large"


def test_rate_limit_429_with_retry_after(api: Api) -> None:
    settings = api.settings.model_copy(update={"rate_limit_per_minute": 60, "rate_limit_burst": 3})
    key = new_project_key(settings, "rl")
    with TestClient(create_app(settings)) as tc:
        headers = {"Authorization": f"Bearer {key}"}
        codes = [tc.get("/v1/models", headers=headers).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        limited = tc.get("/v1/models", headers=headers)
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        assert limited.json()["error"]["code"] == "rate_limited"


def test_requests_handed_on_by_the_hot_lane_cost_one_token(api: Api) -> None:
    """Status reads the cache cannot answer and creates that fail validation pass through the hot lane
    (which spends the token) to the routes (which must not spend a second one)."""
    settings = api.settings.model_copy(update={"rate_limit_per_minute": 60, "rate_limit_burst": 4})
    key = new_project_key(settings, "hl")
    with TestClient(create_app(settings)) as tc:
        headers = {"Authorization": f"Bearer {key}"}
        codes = [tc.get(f"/v1/jobs/{'0' * 26}", headers=headers).status_code for _ in range(2)]
        codes += [
            tc.post("/v1/jobs", headers=headers, json={"technique": "ptq"}).status_code for _ in range(3)
        ]
        assert codes == [404, 404, 422, 422, 429]


def test_revoked_key_is_refused(api: Api) -> None:
    engine = make_engine(api.settings)
    with session_scope(make_sessionmaker(engine)) as session:
        project = projects.create_project(session, f"rv-{os.urandom(4).hex()}")
        row, key = projects.create_api_key(session, project)
        projects.revoke_api_key(session, row)
    engine.dispose()
    assert httpx.get(f"{api.url}/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 401


def test_health_ready_metrics(api: Api, client: httpx.Client) -> None:
    assert httpx.get(f"{api.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{api.url}/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok", "storage": "ok"}
    client.get("/v1/models")
    text = httpx.get(f"{api.url}/metrics").text
    assert 'lowbit_http_requests_total{method="GET",route="/v1/models",status="200"}' in text
    assert httpx.get(f"{api.url}/openapi.json").json()["info"]["title"] == "lowbit"


def test_readyz_reports_a_dead_broker(api: Api) -> None:
    settings = api.settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(settings)) as tc:
        resp = tc.get("/readyz")
    assert resp.status_code == 503 and resp.json()["checks"]["broker"].startswith("error")


def test_docs_page_loads_its_assets_from_the_api(client: httpx.Client) -> None:
    """/docs works offline: every script and stylesheet it references is served by the API itself."""
    page = client.get("/docs")
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    refs = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert refs and all(r.startswith("/docs/assets/") for r in refs), refs
    for ref in refs:
        asset = client.get(ref)
        assert asset.status_code == 200 and len(asset.content) > 500, ref
    assert client.get("/docs/assets/..%2Fsecrets").status_code == 404
