"""Jobs through the API: create (with outbox), list filters, pagination, cancel, re-run, SSE, artifacts, logs."""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from sqlalchemy import select, update

from service.db.models import Job, JobEvent, OutboxMessage
from service.db.repositories import jobs as jobs_repo
from service.db.session import make_engine, make_sessionmaker, session_scope
from service.jobs import state
from service.storage import job_artifact_key, make_store
from tests.service.conftest import Api
from tests.service.samples import job_body, make_ready_dataset, make_ready_model


def _db(api: Api):  # type: ignore[no-untyped-def]
    engine = make_engine(api.settings)
    return engine, make_sessionmaker(engine)


def test_create_writes_job_and_outbox_together(api: Api, client: httpx.Client, ready_inputs) -> None:  # type: ignore[no-untyped-def]
    model, dataset = ready_inputs
    resp = client.post("/v1/jobs", json=job_body(model, dataset, compute="gpu", priority=7))
    assert resp.status_code == 201, resp.text
    job = resp.json()
    assert job["status"] == "queued" and job["spec"]["params"]["steps"] == ["bn_fold", "cle"]
    read = client.get(f"/v1/jobs/{job['id']}").json()
    # The status read shows what create returned, the version number and sha256 it quantizes included.
    assert read == job and job["model_version"] == 1 and len(job["model_sha256"]) == 64
    engine, sessions = _db(api)
    with sessions() as session:
        msgs = session.scalars(select(OutboxMessage)).all()
        expected = {
            "job_id": job["id"],
            "queue": "gpu",
            "priority": 7,
            "request_id": resp.headers["X-Request-ID"],
        }
        assert expected in [m.payload for m in msgs]  # the request id travels to the worker's logs
        row = session.get(Job, job["id"])
        assert row is not None and row.spec == job["spec"] and row.priority == 7 and row.compute == "gpu"
        assert row.created_at.isoformat().replace("+00:00", "Z") == job["created_at"]
        events = session.scalars(select(JobEvent).where(JobEvent.job_id == job["id"])).all()
        assert [(e.from_status, e.to_status, e.progress) for e in events] == [(None, "queued", 0.0)]
    engine.dispose()


def test_concurrent_creates_and_reads_beside_a_competing_writer(api: Api, ready_inputs) -> None:  # type: ignore[no-untyped-def]
    """Given another connection that keeps taking the database's write lock (on SQLite the event loop's
    writes cannot go ahead then and must take the thread path), when 64 creates and 64 status reads
    run 16 at a time, then all succeed (no "database is locked" 500) and each job is stored once."""
    model, dataset = ready_inputs
    engine, sessions = _db(api)
    with api.client() as c:
        polled = c.post("/v1/jobs", json=job_body(model, dataset)).json()
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            with engine.begin() as conn:  # an UPDATE takes SQLite's write lock even when it matches nothing
                conn.execute(update(Job).where(Job.id == "none").values(priority=0))
                stop.wait(0.005)
            stop.wait(0.001)

    def one(i: int) -> tuple[int, str]:
        with api.client() as c:
            if i % 2:
                resp = c.get(f"/v1/jobs/{polled['id']}")
                return resp.status_code, resp.json()["id"]
            resp = c.post("/v1/jobs", json=job_body(model, dataset, priority=i % 10))
            return resp.status_code, resp.json().get("id", resp.text)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(one, range(128)))
    finally:
        stop.set()
        thread.join()
    assert [s for s, _ in results] == [200 if i % 2 else 201 for i in range(128)], results
    created = {job_id for i, (_, job_id) in enumerate(results) if i % 2 == 0}
    with sessions() as session:
        stored = session.scalars(select(Job.id).where(Job.id.in_(created))).all()
        outbox = [m.payload["job_id"] for m in session.scalars(select(OutboxMessage))]
    assert len(created) == 64 and sorted(stored) == sorted(created)
    assert sorted(j for j in outbox if j in created) == sorted(created)
    engine.dispose()


def test_job_inputs_are_checked_and_scoped(api: Api, client: httpx.Client, ready_inputs) -> None:  # type: ignore[no-untyped-def]
    """Given a model with a ready v1 and a pending v2, a pending dataset, and another project's model and
    dataset, when jobs reference them, then only ready inputs of the caller's project are accepted."""
    model, dataset = ready_inputs
    v1 = client.get(f"/v1/models/{model['id']}/versions/1").json()
    assert client.post(f"/v1/models/{model['id']}/versions", json={"format": "onnx"}).status_code == 201
    pending = client.post("/v1/datasets", json={"name": "pending", "format": "npz"}).json()
    bare_model = client.post("/v1/models", json={"name": f"no-versions-{os.urandom(4).hex()}"}).json()
    with api.client(api.other_key) as other:
        theirs = make_ready_model(other, f"theirs-{os.urandom(4).hex()}"), make_ready_dataset(other, "theirs")

    created = client.post("/v1/jobs", json=job_body(model, dataset, eval_dataset_id=dataset["id"]))
    assert created.status_code == 201, created.text
    assert created.json()["model_version_id"] == v1["id"]  # latest *ready* version, not the pending v2
    cases = [
        (job_body(model, dataset, model_version=2), 422, "model_not_ready"),
        (job_body(model, dataset, model_version=3), 404, "not_found"),
        (job_body(bare_model, dataset), 422, "model_not_ready"),
        (job_body(theirs[0], dataset), 404, "not_found"),
        ({**job_body(model, dataset), "model_id": "0" * 26}, 404, "not_found"),
        (job_body(model, pending), 422, "dataset_not_ready"),
        (job_body(model, dataset, eval_dataset_id=pending["id"]), 422, "dataset_not_ready"),
        (job_body(model, theirs[1]), 404, "not_found"),
        (job_body(model, dataset, eval_dataset_id=theirs[1]["id"]), 404, "not_found"),
        (job_body(model, dataset, eval_dataset_id="0" * 26), 404, "not_found"),
    ]
    for body, status, code in cases:
        resp = client.post("/v1/jobs", json=body)
        assert (resp.status_code, resp.json()["error"]["code"]) == (status, code), (body, resp.text)
    assert "evaluation dataset" in client.post("/v1/jobs", json=cases[6][0]).json()["error"]["message"]


def test_invalid_specs_are_4xx_with_codes(client: httpx.Client, ready_inputs) -> None:  # type: ignore[no-untyped-def]
    model, dataset = ready_inputs
    bad = [
        job_body(model, dataset, technique="magic"),
        job_body(model, dataset, scheme="tf_enhancd"),
        job_body(model, dataset, params={"steps": ["nope"]}),
        job_body(model, dataset, technique="autoquant"),  # needs allowed_accuracy_drop
        job_body(model, dataset, unknown_field=1),
        job_body(model, dataset, spec_version=2),
        {**job_body(model, dataset), "model_id": "0" * 26},
    ]
    for body in bad:
        resp = client.post("/v1/jobs", json=body)
        assert 400 <= resp.status_code < 500, (body, resp.text)
        assert set(resp.json()["error"]) == {"code", "message"}
    assert (
        client.post(
            "/v1/jobs", content=b"{not json", headers={"content-type": "application/json"}
        ).status_code
        == 422
    )


def test_pagination_is_stable_under_inserts(client: httpx.Client) -> None:
    """Given 7 jobs and pages of 3, inserting new jobs between page requests neither repeats nor skips."""
    model = make_ready_model(client, f"page-{os.urandom(3).hex()}")
    dataset = make_ready_dataset(client, "page-d")
    created = [client.post("/v1/jobs", json=job_body(model, dataset)).json()["id"] for _ in range(7)]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {
            "limit": 3,
            "model_id": model["id"],
            **({"cursor": cursor} if cursor else {}),
        }
        page = client.get("/v1/jobs", params=params).json()
        seen += [j["id"] for j in page["items"]]
        client.post("/v1/jobs", json=job_body(model, dataset))  # newer than everything already listed
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(created, reverse=True)
    assert client.get("/v1/jobs", params={"cursor": "garbage!"}).status_code == 422
    assert client.get("/v1/jobs", params={"limit": 10_000}).status_code == 422


def test_filters(client: httpx.Client, ready_inputs) -> None:  # type: ignore[no-untyped-def]
    model, dataset = ready_inputs
    a = client.post("/v1/jobs", json=job_body(model, dataset, technique="analyze")).json()
    client.post(f"/v1/jobs/{a['id']}/cancel")
    cancelled = client.get("/v1/jobs", params={"status": "cancelled", "model_id": model["id"]}).json()[
        "items"
    ]
    assert [j["id"] for j in cancelled] == [a["id"]]
    analyze = client.get("/v1/jobs", params={"technique": "analyze", "model_id": model["id"]}).json()["items"]
    assert [j["id"] for j in analyze] == [a["id"]]
    future = client.get("/v1/jobs", params={"created_after": "2999-01-01T00:00:00Z"}).json()["items"]
    assert future == []
    assert client.get("/v1/jobs", params={"status": "done"}).status_code == 422


def test_cancel_and_rerun(api: Api, client: httpx.Client, ready_inputs) -> None:  # type: ignore[no-untyped-def]
    model, dataset = ready_inputs
    job = client.post("/v1/jobs", json=job_body(model, dataset)).json()
    engine, sessions = _db(api)
    with session_scope(sessions) as session:
        row = session.get(Job, job["id"])
        assert row is not None
        state.transition(session, row, state.RUNNING, claimed_by="test")
    cancel = client.post(f"/v1/jobs/{job['id']}/cancel").json()
    assert cancel["status"] == "cancelling" and cancel["cancel_requested"] is True
    with session_scope(sessions) as session:
        row = session.get(Job, job["id"])
        assert row is not None
        state.transition(session, row, state.CANCELLED)
    engine.dispose()
    assert client.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
    rerun = client.post(f"/v1/jobs/{job['id']}/rerun")
    assert rerun.status_code == 201
    new = rerun.json()
    assert new["rerun_of"] == job["id"] and new["status"] == "queued" and new["spec"] == job["spec"]
    assert (new["model_version"], new["model_sha256"]) == (job["model_version"], job["model_sha256"])
    assert new == client.get(f"/v1/jobs/{new['id']}").json()
    assert new["model_version_id"] == job["model_version_id"]


def test_cancel_finished_job_is_409(api: Api, client: httpx.Client, ready_inputs) -> None:  # type: ignore[no-untyped-def]
    model, dataset = ready_inputs
    job = client.post("/v1/jobs", json=job_body(model, dataset)).json()
    engine, sessions = _db(api)
    with session_scope(sessions) as session:
        row = session.get(Job, job["id"])
        assert row is not None
        state.transition(session, row, state.RUNNING)
        state.transition(session, row, state.SUCCEEDED, metrics={"top1": 0.97})
    engine.dispose()
    resp = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "invalid_transition"


def test_sse_stream_follows_status_changes(api: Api, client: httpx.Client, ready_inputs) -> None:  # type: ignore[no-untyped-def]
    """Given a queued job, when a worker moves it to running and then succeeded, the stream shows both and ends."""
    model, dataset = ready_inputs
    job = client.post("/v1/jobs", json=job_body(model, dataset)).json()
    engine, sessions = _db(api)
    statuses: list[str] = []
    got_first = threading.Event()

    def drive() -> None:
        got_first.wait(20)
        with session_scope(sessions) as session:
            row = session.get(Job, job["id"])
            assert row is not None
            state.transition(session, row, state.RUNNING, stage="calibrate", progress=0.5)
        with session_scope(sessions) as session:
            row = session.get(Job, job["id"])
            assert row is not None
            state.transition(session, row, state.SUCCEEDED)

    worker = threading.Thread(target=drive)
    worker.start()
    with client.stream("GET", f"/v1/jobs/{job['id']}/events", timeout=30) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in resp.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "status":
                statuses.append(json.loads(line[6:])["status"])
                got_first.set()
    worker.join()
    engine.dispose()
    assert statuses == ["queued", "running", "succeeded"]
    # A reconnect with Last-Event-ID replays the trail after that id (0: all of it), then ends.
    with client.stream("GET", f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": "0"}) as resp:
        assert sum(1 for line in resp.iter_lines() if line == "event: status") == 3


def test_artifacts_have_working_presigned_urls_and_logs(api: Api, client: httpx.Client, ready_inputs) -> None:  # type: ignore[no-untyped-def]
    model, dataset = ready_inputs
    job = client.post("/v1/jobs", json=job_body(model, dataset)).json()
    store = make_store(api.settings)
    payload = os.urandom(2048)
    key = job_artifact_key(job["id"], "model.onnx")
    store.put_bytes(key, payload)
    engine, sessions = _db(api)
    with session_scope(sessions) as session:
        row = session.get(Job, job["id"])
        assert row is not None
        jobs_repo.add_artifact(
            session, row, "model.onnx", key, len(payload), None, "application/octet-stream"
        )
        jobs_repo.append_log(session, row.id, "calibrating")
        jobs_repo.append_log(session, row.id, "done")
    engine.dispose()
    arts = client.get(f"/v1/jobs/{job['id']}/artifacts").json()
    assert [a["name"] for a in arts] == ["model.onnx"] and arts[0]["expires_at"]
    assert httpx.get(arts[0]["url"]).content == payload
    logs = client.get(f"/v1/jobs/{job['id']}/logs").json()
    assert [entry["message"] for entry in logs] == ["calibrating", "done"]
    later = client.get(f"/v1/jobs/{job['id']}/logs", params={"after": logs[0]["id"]}).json()
    assert [entry["message"] for entry in later] == ["done"]
