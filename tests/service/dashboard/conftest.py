"""Dashboard test fixtures: the app in-process on both modes, two projects, signed-in clients, seed data."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from service.api.app import create_app
from service.db.models import Job, ModelVersion
from service.db.repositories import jobs as jobs_repo
from service.db.repositories import projects, resources
from service.db.session import make_engine, make_sessionmaker, session_scope
from service.settings import Settings


@dataclass
class Tenant:
    project_id: str
    key: str
    model_version_id: str
    model_id: str
    dataset_id: str


@dataclass
class Dash:
    settings: Settings
    app: Any
    sessions: sessionmaker[Session]
    a: Tenant
    b: Tenant

    def client(self) -> TestClient:
        return TestClient(self.app, base_url="http://testserver")


def _tenant(session: Session, tag: str) -> Tenant:
    project = projects.create_project(session, f"dash-{tag}-{os.urandom(3).hex()}")
    key = projects.create_api_key(session, project, "dash")[1]
    model = resources.create_model(session, project.id, f"net-{tag}")
    version = resources.create_version(session, model, "onnx")
    version.status, version.size = "ready", 2048
    dataset = resources.create_dataset(session, project.id, f"calib-{tag}", "calibration", "npz")
    dataset.status, dataset.size = "ready", 4096
    session.flush()
    return Tenant(project.id, key, version.id, model.id, dataset.id)


@pytest.fixture(scope="session")
def dash(mode_settings: Settings) -> Iterator[Dash]:
    settings = mode_settings.model_copy(update={"rate_limit_per_minute": 0})
    engine = make_engine(settings)
    factory = make_sessionmaker(engine)
    with session_scope(factory) as session:
        a, b = _tenant(session, "a"), _tenant(session, "b")
    yield Dash(settings, create_app(settings), factory, a, b)
    engine.dispose()


def make_job(dash: Dash, tenant: Tenant, technique: str = "ptq", **spec: Any) -> Job:
    """A queued job of ``tenant`` created through the jobs repository (as the API does)."""
    body = {"spec_version": 1, "model_id": tenant.model_id, "calib_dataset_id": tenant.dataset_id,
            "technique": technique, "compute": "cpu", "priority": 5, "params": {}, **spec}  # fmt: skip
    with session_scope(dash.sessions) as session:
        version = session.get(ModelVersion, tenant.model_version_id)
        assert version is not None
        return jobs_repo.create_job(
            session,
            project_id=tenant.project_id,
            model_version_id=version.id,
            calib_dataset_id=tenant.dataset_id,
            eval_dataset_id=None,
            spec=body,
        )


def sign_in(client: TestClient, key: str) -> None:
    """Sign ``client`` in through the real form (login CSRF cookie + token)."""
    form = client.get("/dashboard/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token is not None
    resp = client.post(
        "/dashboard/login", data={"api_key": key, "csrf_token": token.group(1)}, follow_redirects=False
    )
    assert resp.status_code == 303, resp.text


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found is not None, "page has no CSRF field"
    return found.group(1)


class PageParser(HTMLParser):
    """Collects what the tests look at: job rows, links, form controls, labels, ids, images."""

    def __init__(self) -> None:
        super().__init__()
        self.job_rows: list[str] = []
        self.links: list[str] = []
        self.controls: list[dict[str, str]] = []
        self.label_for: set[str] = set()
        self.images: list[dict[str, str]] = []
        self.ids: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "tr" and "data-job" in a:
            self.job_rows.append(a["data-job"])
        elif tag == "a" and "href" in a:
            self.links.append(a["href"])
        elif tag in ("input", "select", "textarea") and a.get("type") != "hidden":
            self.controls.append(a)
        elif tag == "label" and "for" in a:
            self.label_for.add(a["for"])
        elif tag == "img":
            self.images.append(a)


def parse(html: str) -> PageParser:
    parser = PageParser()
    parser.feed(html)
    return parser
