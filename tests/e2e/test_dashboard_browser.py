"""The dashboard in a real browser: Debian's Chromium driven by Playwright against a live API process,
PostgreSQL and SeaweedFS S3.

The worker package cannot run jobs yet, so this test plays the worker: it moves jobs through the
service's state machine (service.jobs.state.transition), writes progress, logs, metrics and artifacts
exactly where a worker would, and checks that the browser sees each change without a reload.
Screenshots go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from service.db.migrate import upgrade
from service.db.models import Job
from service.db.repositories import jobs as jobs_repo
from service.db.repositories import projects
from service.db.session import make_engine, make_sessionmaker, session_scope
from service.jobs import state
from service.settings import Settings
from service.storage import job_artifact_key, make_store
from tests.fixtures.api_process import api_process
from tests.fixtures.postgres import fresh_database
from tests.fixtures.seaweedfs import start_seaweedfs, stop_seaweedfs
from tests.service.samples import job_body, make_ready_dataset, make_ready_model

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update"]  # fmt: skip
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
LIVE_TIMEOUT_MS = 20_000  # auto-refresh runs every 2-3 s; a slow shared CI machine gets generous slack

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="Debian's chromium is not installed (/usr/bin/chromium)"
    ),
]


@dataclass
class Stack:
    url: str
    key: str
    settings: Settings
    sessions: sessionmaker[Session]

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=60)


@pytest.fixture(scope="module")
def dashboard_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("dashboard_e2e")
    server, weed = start_seaweedfs(root / "weed")
    try:
        with fresh_database() as db_url:
            env = {
                "LOWBIT_DATABASE_URL": db_url,
                "LOWBIT_STORAGE": "s3",
                "LOWBIT_S3_ENDPOINT": server.endpoint,
                "LOWBIT_S3_BUCKET": server.bucket,
                "LOWBIT_S3_ACCESS_KEY": server.access_key,
                "LOWBIT_S3_SECRET_KEY": server.secret_key,
                "LOWBIT_SECRET_KEY": secrets.token_hex(16),
                "LOWBIT_RATE_LIMIT_PER_MINUTE": "0",
            }
            settings = Settings(**{k.removeprefix("LOWBIT_").lower(): v for k, v in env.items()})  # type: ignore[arg-type]
            upgrade(settings)
            engine = make_engine(settings)
            factory = make_sessionmaker(engine)
            with session_scope(factory) as session:
                project = projects.create_project(session, f"browser-{os.urandom(3).hex()}")
                key = projects.create_api_key(session, project, "browser")[1]
            with api_process(env, root / "api.log") as (url, _pid):
                yield Stack(url, key, settings, factory)
            engine.dispose()
    finally:
        stop_seaweedfs(weed)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def _plot_png() -> bytes:
    """An analyzer-style bar chart (what the worker uploads as a plot artifact)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 2.5))
    ax.bar(["fp32", "weights", "acts", "W+A"], [0.981, 0.979, 0.978, 0.977], color="#4c72b0")
    ax.set_ylim(0.97, 0.985)
    ax.set_title("Global sensitivity")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


class FakeWorker:
    """Does to the database and the store what a worker does, through the service's own code paths."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.store = make_store(stack.settings)

    def _job(self, session: Session, job_id: str) -> Job:
        job = session.get(Job, job_id)
        assert job is not None
        return job

    def start(self, job_id: str, stage: str) -> None:
        with session_scope(self.stack.sessions) as session:
            job = self._job(session, job_id)
            state.transition(
                session, job, state.RUNNING, stage=stage, claimed_by="browser-test", message="claimed"
            )
            jobs_repo.append_log(session, job_id, f"stage {stage} started")

    def progress(self, job_id: str, stage: str, fraction: float) -> None:
        with session_scope(self.stack.sessions) as session:
            session.execute(
                update(Job).where(Job.id == job_id).values(stage=stage, progress=fraction, eta_s=12.0)
            )
            jobs_repo.append_log(session, job_id, f"{stage}: {fraction:.0%}")

    def succeed(self, job_id: str, files: dict[str, bytes], metrics: dict[str, Any]) -> None:
        with session_scope(self.stack.sessions) as session:
            job = self._job(session, job_id)
            for name, data in files.items():
                key = job_artifact_key(job_id, name)
                self.store.put_bytes(key, data)
                ctype = {"png": "image/png", "html": "text/html", "json": "application/json"}.get(
                    name.rsplit(".", 1)[-1], "application/octet-stream"
                )
                jobs_repo.add_artifact(
                    session, job, name, key, len(data), hashlib.sha256(data).hexdigest(), ctype
                )
            state.transition(session, job, state.SUCCEEDED, stage="export", metrics=metrics, message="done")

    def acknowledge_cancel(self, job_id: str) -> None:
        with session_scope(self.stack.sessions) as session:
            state.transition(session, self._job(session, job_id), state.CANCELLED, message="stopped at batch")

    def status(self, job_id: str) -> str:
        with self.stack.sessions() as session:
            return self._job(session, job_id).status


def _shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_watch_a_job_to_done_download_it_and_cancel_another(
    dashboard_stack: Stack, browser: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    stack = dashboard_stack
    worker = FakeWorker(stack)
    with stack.api() as api:
        model = make_ready_model(api, "digits-cnn")
        dataset = make_ready_dataset(api, "digits-calib")
        done_id = api.post("/v1/jobs", json=job_body(model, dataset, technique="autoquant",
                                                      allowed_accuracy_drop=0.01)).json()["id"]  # fmt: skip
        cancel_id = api.post("/v1/jobs", json=job_body(model, dataset, technique="qat")).json()["id"]
        for _ in range(3):  # a populated list: a few more queued jobs
            api.post("/v1/jobs", json=job_body(model, dataset, technique="quantsim"))

    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    try:
        # Sign in with the keyboard only.
        page.goto(f"{stack.url}/dashboard/jobs")
        expect(page).to_have_url(f"{stack.url}/dashboard/login?next=%2Fdashboard%2Fjobs")
        page.get_by_label("API key").fill(stack.key)
        page.keyboard.press("Enter")
        expect(page).to_have_url(f"{stack.url}/dashboard/jobs")
        page.keyboard.press("Tab")  # the first stop is the skip link, and it leads to the content
        expect(page.locator(":focus")).to_have_text("Skip to content")
        page.keyboard.press("Enter")
        expect(page.locator("main")).to_be_focused()
        row = page.locator(f'tr[data-job="{done_id}"]')
        expect(row.locator(".badge")).to_have_text("Queued")

        # The worker claims the job: the list updates itself (no reload).
        worker.start(done_id, "calibrate")
        worker.progress(done_id, "calibrate", 0.35)
        expect(row.locator(".badge")).to_have_text("Running", timeout=LIVE_TIMEOUT_MS)
        expect(row.locator("progress")).to_have_attribute("value", "35", timeout=LIVE_TIMEOUT_MS)
        _shot(page, "jobs-list-running")

        # Follow it to the detail page and watch it finish.
        row.get_by_role("link").click()
        expect(page.locator("h1")).to_contain_text(done_id)
        worker.progress(done_id, "autoquant", 0.8)
        expect(page.locator("#job-live progress")).to_have_attribute("value", "80", timeout=LIVE_TIMEOUT_MS)
        onnx_bytes = os.urandom(4096)
        metrics = {
            "metric": "accuracy", "fp32": 0.9812, "simulated": 0.9771, "onnxruntime": 0.9765,
            "autoquant": {"stages": [{"name": "bn_fold", "simulated": 0.951, "accepted": False},
                                     {"name": "cle", "simulated": 0.968, "accepted": False},
                                     {"name": "adaround", "simulated": 0.9771, "accepted": True}]},
        }  # fmt: skip
        worker.succeed(
            done_id,
            {"model.onnx": onnx_bytes, "model.encodings": b'{"version": "1.0.0"}',
             "metrics.json": b"{}", "sensitivity.png": _plot_png(), "report.html": b"<h1>report</h1>"},
            metrics,
        )  # fmt: skip
        expect(page.locator("#job-status")).to_have_text("Succeeded", timeout=LIVE_TIMEOUT_MS)
        expect(page.locator("#metrics-table")).to_contain_text("0.9765")
        expect(page.locator("#stages-table")).to_contain_text("adaround")
        plot = page.get_by_alt_text("Analyzer plot sensitivity.png")
        expect(plot).to_be_visible()
        page.wait_for_function("img => img.complete && img.naturalWidth > 100", arg=plot.element_handle())
        _shot(page, "job-detail-succeeded")

        # Download through the presigned S3 URL and compare the bytes.
        with page.expect_download() as info:
            page.get_by_role("link", name="Download model.onnx").click()
        saved = tmp_path / "model.onnx"
        info.value.save_as(saved)
        assert saved.read_bytes() == onnx_bytes

        # Cancel a running job from the UI; the worker acknowledges; the page shows the end state.
        worker.start(cancel_id, "train")
        page.goto(f"{stack.url}/dashboard/jobs/{cancel_id}")
        page.get_by_role("button", name="Cancel job").click()
        expect(page.locator("#job-status")).to_have_text("Cancelling")
        expect(page.get_by_role("status")).to_have_text("Cancellation requested.")
        assert worker.status(cancel_id) == "cancelling"
        worker.acknowledge_cancel(cancel_id)
        expect(page.locator("#job-status")).to_have_text("Cancelled", timeout=LIVE_TIMEOUT_MS)
        expect(page.get_by_role("button", name="Cancel job")).to_have_count(0)
        page.reload()  # a finished job's page offers no auto-refresh (nothing left to change)
        expect(page.get_by_label("Auto-refresh")).to_have_count(0)
        _shot(page, "job-detail-cancelled")

        page.goto(f"{stack.url}/dashboard/jobs")
        expect(page.locator("tr[data-job]")).to_have_count(5)
        expect(page.locator(f'tr[data-job="{done_id}"] .badge')).to_have_text("Succeeded")
        _shot(page, "jobs-list-populated")
        page.set_viewport_size({"width": 390, "height": 844})  # phone-sized: CSS-only responsive layout
        _shot(page, "jobs-list-phone")
    finally:
        context.close()
