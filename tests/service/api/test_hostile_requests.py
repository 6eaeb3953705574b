"""Hostile request bodies: deep JSON in every free-form field and crons that never fire are 422 with a
code and a message, on the hot lane and the routed path, and never a 500."""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest

from tests.service.conftest import Api
from tests.service.samples import job_body, make_ready_dataset, make_ready_model


@pytest.fixture(scope="module")
def ready_inputs(api: Api) -> tuple[dict[str, object], dict[str, object]]:
    """One ready model and dataset for the whole module (per mode): every test here only names them in
    bodies the API refuses or in schedules with unique names, so uploading a pair per test was waste."""
    suffix = os.urandom(4).hex()
    with api.client() as c:
        return make_ready_model(c, f"m-{suffix}"), make_ready_dataset(c, f"d-{suffix}")


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


REFUSED_HOOKS = [
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://127.0.0.1:9/hook", "loopback"),
    ("http://localhost/hook", "loopback"),
    ("http://[::1]/hook", "loopback"),
    ("http://10.1.2.3/hook", "private"),
    ("http://192.168.0.1/hook", "private"),
    ("http://[::ffff:169.254.169.254]/", "link-local"),
    ("http://224.0.0.1/hook", "multicast"),
]


def test_webhook_to_internal_addresses_is_refused(client: httpx.Client, ready_inputs) -> None:  # type: ignore[no-untyped-def]
    model, dataset = ready_inputs
    template = {"calib_dataset_id": dataset["id"], "technique": "ptq"}
    body = {"model_name": model["name"], "cron": "0 2 * * *", "template": template}
    for url, reason in REFUSED_HOOKS:
        resp = client.post(
            "/v1/schedules", json={**body, "name": f"h-{os.urandom(3).hex()}", "webhook_url": url}
        )
        assert resp.status_code == 422, (url, resp.text)
        error = resp.json()["error"]
        assert error["code"] == "webhook_target_refused" and f"a {reason} address" in error["message"], error
    public = client.post(
        "/v1/schedules", json={**body, "name": "pub", "webhook_url": "https://93.184.216.34/h"}
    )
    assert public.status_code == 201, public.text
    patched = client.patch(f"/v1/schedules/{public.json()['id']}", json={"webhook_url": "http://127.0.0.1/x"})
    assert patched.status_code == 422 and patched.json()["error"]["code"] == "webhook_target_refused"


def test_webhook_target_is_checked_again_at_send_time(api: Api) -> None:
    """Given a stored schedule whose webhook points at a loopback receiver (stored before the check, or
    a name that resolved elsewhere at create time: DNS rebinding), the send refuses it and the receiver
    gets nothing; with the receiver's network allowed, it gets the signed POST with the original Host."""
    import threading
    from datetime import UTC, datetime
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from service.db.models import Model
    from service.db.repositories import schedules as schedules_repo
    from service.db.schedule_tables import ScheduleRun
    from service.db.session import make_engine, make_sessionmaker, session_scope
    from worker.db import WorkerDb
    from worker.schedules.webhook import deliver
    from worker.settings import WorkerSettings

    got: list[tuple[str, str]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            got.append((self.headers["host"], self.headers.get("x-lowbit-event", "")))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with api.client() as c:
        model = make_ready_model(c, f"w-{os.urandom(3).hex()}")
        dataset = make_ready_dataset(c, f"w-{os.urandom(3).hex()}")
    engine = make_engine(api.settings)
    wsettings = WorkerSettings(webhook_attempts=1, retry_base_s=0.01)
    try:
        run_ids = []
        with session_scope(make_sessionmaker(engine)) as session:
            project_id = session.get(Model, model["id"]).project_id  # type: ignore[union-attr]
            schedule = schedules_repo.create_schedule(session, project_id, {
                "name": "rebind", "model_name": model["name"], "cron": "0 2 * * *",
                "template": {"calib_dataset_id": dataset["id"], "technique": "ptq"},
                "webhook_url": f"http://localhost:{server.server_port}/hook"})  # fmt: skip
            for i in range(2):
                run = ScheduleRun(schedule_id=schedule.id, scheduled_for=datetime(2026, 1, 1 + i, tzinfo=UTC),
                                  status="compared", message="", webhook_status="pending", webhook_attempts=0)  # fmt: skip
                session.add(run)
                session.flush()
                run_ids.append(run.id)
        refused = deliver(WorkerDb(api.settings, wsettings), run_ids[0])
        assert refused == "failed" and got == []
        allowed = api.settings.model_copy(update={"webhook_allowed_networks": "127.0.0.0/8,::1/128"})
        assert deliver(WorkerDb(allowed, wsettings), run_ids[1]) == "sent"
        assert got == [(f"localhost:{server.server_port}", "schedule.regressed")]
    finally:
        server.shutdown()
        engine.dispose()


def test_webhook_secret_is_sealed_at_rest(api: Api, client: httpx.Client, ready_inputs) -> None:  # type: ignore[no-untyped-def]
    """The stored column holds AES-GCM ciphertext under the server secret, never the plaintext; the
    worker's unseal (same LOWBIT_SECRET_KEY) gives it back; another server secret cannot open it."""
    import pytest

    from service.db.schedule_tables import Schedule
    from service.db.session import make_engine, make_sessionmaker
    from service.sealed_secrets import SealedSecretError, unseal

    model, dataset = ready_inputs
    secret = "tenant-webhook-secret-" + os.urandom(8).hex()
    body = {"name": f"sealed-{os.urandom(3).hex()}", "model_name": model["name"], "cron": "0 2 * * *",
            "template": {"calib_dataset_id": dataset["id"], "technique": "ptq"},
            "webhook_url": "https://93.184.216.34/hook", "webhook_secret": secret}  # fmt: skip
    created = client.post("/v1/schedules", json=body)
    assert created.status_code == 201 and created.json()["has_webhook_secret"] is True, created.text
    assert secret not in created.text
    rotated = "rotated-webhook-secret-" + os.urandom(8).hex()
    assert (
        client.patch(f"/v1/schedules/{created.json()['id']}", json={"webhook_secret": rotated}).status_code
        == 200
    )
    engine = make_engine(api.settings)
    try:
        with make_sessionmaker(engine)() as session:
            stored = session.get(Schedule, created.json()["id"])
            assert stored is not None and stored.webhook_secret is not None
            assert stored.webhook_secret.startswith("v1:") and rotated not in stored.webhook_secret
            assert unseal(stored.webhook_secret, api.settings.secret_key) == rotated
            with pytest.raises(SealedSecretError):
                unseal(stored.webhook_secret, "another-server-secret")
    finally:
        engine.dispose()


def test_undecodable_body_and_loose_date_times_are_422(client: httpx.Client) -> None:
    """Bytes that are not UTF-8 JSON answered an undocumented 400; date-time filters took Unix timestamps
    and bare dates the schema's date-time format forbids (schemathesis' negative_data_rejection)."""
    resp = client.post("/v1/models", content=b"\xff\xfe{", headers={"Content-Type": "application/json"})
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "invalid_request", resp.text
    for value in ("0", "2026-01-01", "2026-01-01T00:00:00"):
        resp = client.get("/v1/jobs", params={"created_after": value})
        assert resp.status_code == 422 and "RFC 3339" in resp.json()["error"]["message"], (value, resp.text)
    assert client.get("/v1/jobs", params={"created_after": "2026-01-01T00:00:00+02:00"}).status_code == 200
