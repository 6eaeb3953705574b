"""Tenancy: every id the API takes (path, query or body, including a schedule's job template), when it is
another project's, answers 404; the routes are enumerated from the OpenAPI document, so a new route that
takes an id is probed without editing this test (or fails it until a request body for it is written here).
"""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from service.db.models import Job
from service.db.schedule_tables import Schedule
from service.db.session import make_engine, make_sessionmaker, session_scope
from tests.service.conftest import Api
from tests.service.samples import make_ready_dataset, make_ready_model
from worker.schedules.tick import enqueue_due

# Fields of a schedule's ``template`` (a job spec, typed ``object`` in the schema) that hold ids.
TEMPLATE_IDS = ("calib_dataset_id", "eval_dataset_id")
# Path/query/body names that are ids besides the ``*_id`` ones.
ID_NAMES = {"rerun_of"}


def _resources(client: httpx.Client) -> dict[str, str]:
    """One of each id-bearing resource in the client's project: name -> id."""
    suffix = os.urandom(4).hex()
    model = make_ready_model(client, f"m-{suffix}")
    calib = make_ready_dataset(client, f"c-{suffix}")
    evald = make_ready_dataset(client, f"e-{suffix}", seed=1)
    job = client.post(
        "/v1/jobs", json={"model_id": model["id"], "calib_dataset_id": calib["id"], "technique": "ptq"}
    ).json()
    pending = client.post(
        "/v1/datasets", json={"name": f"p-{suffix}", "format": "npz", "size": 10, "sha256": "a" * 64}
    ).json()
    out = {"model_id": str(model["id"]), "model_name": f"m-{suffix}", "calib_dataset_id": str(calib["id"]),
           "eval_dataset_id": str(evald["id"]), "dataset_id": str(calib["id"]), "job_id": job["id"],
           "upload_id": pending["upload"]["upload_id"]}  # fmt: skip
    out["train_dataset_id"] = out["calib_dataset_id"]  # a qat job may train on any ready dataset
    out["schedule_id"] = _new_schedule(client, out)
    return out


def _template(own: dict[str, str]) -> dict[str, Any]:
    return {"calib_dataset_id": own["calib_dataset_id"], "eval_dataset_id": own["eval_dataset_id"],
            "technique": "quantsim"}  # fmt: skip


def _new_schedule(client: httpx.Client, own: dict[str, str]) -> str:
    body = {"name": f"s-{os.urandom(3).hex()}", "model_name": own["model_name"], "cron": "0 2 * * *",
            "template": _template(own)}  # fmt: skip
    resp = client.post("/v1/schedules", json=body)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def _body(method: str, path: str, own: dict[str, str]) -> Any:
    """A request body that the caller's own resources make valid (None: the route takes none)."""
    bodies: dict[tuple[str, str], Any] = {
        ("post", "/v1/jobs"): {"model_id": own["model_id"], "calib_dataset_id": own["calib_dataset_id"],
                               "eval_dataset_id": own["eval_dataset_id"], "technique": "qat",
                               "train_dataset_id": own["train_dataset_id"]},
        ("post", "/v1/jobs/validate"): {"model_id": own["model_id"], "calib_dataset_id": own["calib_dataset_id"],
                                        "eval_dataset_id": own["eval_dataset_id"], "technique": "qat",
                                        "train_dataset_id": own["train_dataset_id"]},
        ("post", "/v1/schedules"): {"name": f"s-{os.urandom(3).hex()}", "model_name": own["model_name"],
                                    "cron": "0 2 * * *", "template": _template(own)},
        ("patch", "/v1/schedules/{schedule_id}"): {"template": _template(own)},
        ("post", "/v1/models/{model_id}/versions"): {"format": "onnx"},
        ("post", "/v1/uploads/{upload_id}/complete"): {},
        ("put", "/v1/models/{model_id}/versions/{number}/content"): b"x",
        ("put", "/v1/datasets/{dataset_id}/content"): b"x",
        ("post", "/v1/datasets/{dataset_id}/shards"): {"index": 0, "format": "npz"},
        ("put", "/v1/datasets/{dataset_id}/shards/{index}/content"): b"x",
    }  # fmt: skip
    return bodies.get((method, path))


def _is_id(name: str) -> bool:
    return name.endswith("_id") or name in ID_NAMES


def _id_probes(schema: dict[str, Any]) -> list[tuple[str, str, str, str, bool]]:
    """(method, path, where, field, takes a body) for every id an operation takes; ``where``: path,
    query, body or template (inside a schedule's job template)."""
    probes = []
    components = schema.get("components", {}).get("schemas", {})
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            for param in op.get("parameters", []):
                if _is_id(param["name"]):
                    probes.append((method, path, param["in"], param["name"], "requestBody" in op))
            content = op.get("requestBody", {}).get("content", {}).get("application/json")
            if content is None:
                continue
            ref = content["schema"].get("$ref", "")
            props = components.get(ref.rsplit("/", 1)[-1], {}).get("properties", {})
            probes += [(method, path, "body", name, True) for name in props if _is_id(name)]
            if "template" in props:
                probes += [(method, path, "template", name, True) for name in TEMPLATE_IDS]
    return probes


def _request(client: httpx.Client, method: str, path: str, own: dict[str, str], where: str, field: str,
             foreign: str | None) -> httpx.Response:  # fmt: skip
    """``method path`` with the caller's own ids, except ``field`` (at ``where``) = ``foreign`` when given."""
    ids = dict(own)
    if foreign is not None and where in ("path", "query"):
        ids[field] = foreign
    url = path.replace("{number}", "1").replace("{index}", "0")
    for name, value in ids.items():
        url = url.replace("{" + name + "}", value)
    body = _body(method, path, own)
    if foreign is not None and where == "body":
        body[field] = foreign
    if foreign is not None and where == "template":
        body["template"][field] = foreign
    params = {field: ids[field]} if where == "query" else None
    kwargs: dict[str, Any] = {"params": params}
    if isinstance(body, bytes):
        kwargs["content"] = body
    elif body is not None:
        kwargs["json"] = body
    # Streams: a job's event stream stays open while the job is queued; its status line is enough.
    with client.stream(method.upper(), url, **kwargs) as resp:
        if "text/event-stream" not in resp.headers.get("content-type", ""):
            resp.read()
        return resp


def test_every_id_of_another_project_is_404_on_every_route(api: Api) -> None:
    """Given projects A and B with one of each resource, when B names any of A's ids in any route that
    takes one (enumerated from the OpenAPI document), then the answer is 404 not_found; B's own ids on
    the same request are not 404 (so the 404 is the tenancy check); and no job or schedule of B refers to
    A's data afterwards."""
    with api.client() as a_client, api.client(api.other_key) as b_client:
        a, b = _resources(a_client), _resources(b_client)
        probes = _id_probes(b_client.get("/openapi.json").json())
        assert len(probes) >= 20, probes  # the enumeration found the API's id-taking routes
        probes.sort(key=lambda p: p[0] == "delete")  # deleting B's own schedule last
        for method, path, where, field, takes_body in probes:
            if takes_body:
                assert _body(method, path, b) is not None, f"write a body for {method} {path} in _body()"
            foreign = a[field]
            resp = _request(b_client, method, path, b, where, field, foreign)
            assert resp.status_code == 404, (method, path, where, field, resp.status_code, resp.text)
            assert resp.json()["error"]["code"] == "not_found"
            assert foreign in resp.json()["error"]["message"] or where in ("path", "query")
            control = _request(b_client, method, path, b, where, field, None)
            assert control.status_code != 404 and control.status_code < 500, (method, path, control.text)
        b_jobs = b_client.get("/v1/jobs", params={"limit": 100}).json()["items"]
        b_schedules = b_client.get("/v1/schedules", params={"limit": 100}).json()["items"]
    a_ids = set(a.values())
    for job in b_jobs:
        assert not {job["model_version_id"], job["calib_dataset_id"], job["eval_dataset_id"]} & a_ids, job
    for schedule in b_schedules:
        assert not {schedule["template"].get(name) for name in TEMPLATE_IDS} & a_ids, schedule


@pytest.fixture(scope="module")
def a_and_b(api: Api) -> tuple[dict[str, str], dict[str, str]]:
    """A's and B's resources shared by the tests below (the route test above makes its own: it deletes
    B's schedule); neither test below changes what the other reads."""
    with api.client() as a_client, api.client(api.other_key) as b_client:
        return _resources(a_client), _resources(b_client)


def test_a_stored_template_naming_another_projects_dataset_is_skipped_at_the_tick(
    api: Api, a_and_b: tuple[dict[str, str], dict[str, str]]
) -> None:
    """Given a schedule of B whose stored template names A's dataset (written before templates were
    checked), when the beat tick finds it due, then the run is skipped with a not-found message and no
    job is created."""
    a, b = a_and_b
    engine = make_engine(api.settings)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            own = session.get(Schedule, b["schedule_id"])
            assert own is not None
            own.template = {**own.template, "calib_dataset_id": a["calib_dataset_id"]}
            own.cron, own.last_scheduled_for = "* * * * *", None
            run = enqueue_due(session, own, datetime.now(UTC))
            assert run is not None and run.status == "skipped", run
            assert a["calib_dataset_id"] in run.message and "not found" in run.message
            assert session.scalar(select(Job.id).where(Job.schedule_id == own.id)) is None
    finally:
        engine.dispose()


def test_helper_names_the_first_foreign_id(api: Api, a_and_b: tuple[dict[str, str], dict[str, str]]) -> None:
    """The helper itself: own ids pass, a foreign one (also an unknown one) is a NotFoundError naming it."""
    from service.db.repositories.references import check_references
    from service.errors import NotFoundError

    a, b = a_and_b
    project_b = _project_of(api, b["job_id"])
    engine = make_engine(api.settings)
    try:
        with make_sessionmaker(engine)() as session:
            check_references(session, project_b, {k: v for k, v in b.items() if k != "model_name"})
            for field in ("model_id", "calib_dataset_id", "job_id", "schedule_id", "upload_id"):
                try:
                    check_references(session, project_b, {**b, field: a[field]})
                except NotFoundError as exc:
                    assert a[field] in exc.message
                else:
                    raise AssertionError(f"{field} of another project accepted")
            unknown = hashlib.sha256(b"x").hexdigest()[:26]
            try:
                check_references(session, project_b, {"eval_dataset_id": unknown})
            except NotFoundError as exc:
                assert unknown in exc.message
            else:
                raise AssertionError("unknown id accepted")
    finally:
        engine.dispose()


def _project_of(api: Api, job_id: str) -> str:
    engine = make_engine(api.settings)
    try:
        with make_sessionmaker(engine)() as session:
            project = session.scalar(select(Job.project_id).where(Job.id == job_id))
            assert project is not None
            return project
    finally:
        engine.dispose()
