"""Failed authentications are throttled per client (API keys and dashboard sign-in: 429 with Retry-After),
and /metrics answers only scrapers the settings admit (a network or a token)."""

from __future__ import annotations

import re

import httpx
from fastapi.testclient import TestClient

from service.api.app import create_app
from tests.service.conftest import Api
from tests.service.samples import new_project_key


def test_wrong_api_keys_then_429_for_that_client(api: Api) -> None:
    """Given 3 failures allowed per client, the 4th wrong key is 429 with Retry-After (the check stops
    before looking the key up), and a right key from the same client is refused too until it decays;
    the cached verification of a key used before keeps working (no database lookup is spent)."""
    settings = api.settings.model_copy(update={"auth_failures_per_minute": 6, "auth_failure_burst": 3})
    key = new_project_key(settings, "th")
    with TestClient(create_app(settings)) as tc:
        assert tc.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        codes = [
            tc.get("/v1/models", headers={"Authorization": f"Bearer lb_wrong{i}"}).status_code
            for i in range(5)
        ]
        assert codes == [401, 401, 401, 429, 429]
        limited = tc.get("/v1/models", headers={"Authorization": "Bearer lb_wrong"})
        assert limited.json()["error"]["code"] == "rate_limited" and int(limited.headers["Retry-After"]) >= 1
        assert tc.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200  # cached
        other = new_project_key(settings, "th2")
        assert tc.get("/v1/models", headers={"Authorization": f"Bearer {other}"}).status_code == 429


def test_dashboard_sign_in_is_throttled(api: Api) -> None:
    settings = api.settings.model_copy(update={"auth_failures_per_minute": 6, "auth_failure_burst": 3})
    with TestClient(create_app(settings)) as tc:
        codes = []
        for i in range(5):
            form = tc.get("/dashboard/login")
            token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
            assert token is not None
            resp = tc.post("/dashboard/login", data={"api_key": f"lb_wrong{i}", "csrf_token": token.group(1)})
            codes.append(resp.status_code)
        assert codes == [401, 401, 401, 429, 429], codes


def test_metrics_only_for_admitted_scrapers(api: Api) -> None:
    # The live API's clients are on 127.0.0.1 (loopback is admitted by default).
    assert httpx.get(f"{api.url}/metrics").status_code == 200
    public_only = api.settings.model_copy(update={"metrics_allowed_networks": "", "metrics_token": ""})
    with TestClient(create_app(public_only)) as tc:  # TestClient's client address is not an IP
        assert tc.get("/metrics").status_code == 404
    tokened = api.settings.model_copy(
        update={"metrics_allowed_networks": "", "metrics_token": "scrape-secret"}
    )
    with TestClient(create_app(tokened)) as tc:
        assert tc.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 404
        ok = tc.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
        assert ok.status_code == 200 and "lowbit_http_requests_total" in ok.text
