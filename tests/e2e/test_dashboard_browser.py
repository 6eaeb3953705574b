"""The dashboard in a real browser: Debian's Chromium driven by Playwright against the live stack
(API, PostgreSQL, Redis, SeaweedFS S3; tests/fixtures/worker_stack.py) with a real ``lowbit worker``
and outbox relay running the jobs.

Jobs are created through the API; the browser watches them progress to done without reloading, downloads
an artifact through its presigned URL, and cancels a long running QAT job from the job page.
Screenshots go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.worker_procs import Proc, processes, start_relay
from tests.fixtures.worker_stack import Stack, wait_job

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update"]  # fmt: skip
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
LIVE_TIMEOUT_MS = 20_000  # auto-refresh runs every 2-3 s; a slow shared CI machine gets generous slack
# A worker's first job pays for its start (torch import) and the engine's warm-up on a loaded machine.
JOB_TIMEOUT_MS = 120_000

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="Debian's chromium is not installed (/usr/bin/chromium)"
    ),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def _shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_watch_real_jobs_to_done_download_and_cancel_one(stack: Stack, browser: Any, tmp_path: Path) -> None:
    """Given a worker and relay started alongside jobs created through the API, When the dashboard is
    open, Then it shows them queued and then succeeded without a reload, the metrics table holds the
    worker's ONNX Runtime accuracy, the analyzer's plot renders, the downloaded model.onnx equals the
    stored artifact, and a running QAT job cancelled from the UI ends cancelled."""
    from playwright.sync_api import expect

    env = stack.env()
    with processes() as procs, stack.client() as api:
        evaluated = {"eval_dataset_id": stack.inputs["eval"]}
        done = stack.submit(api, technique="quantsim", **evaluated)
        analyzed = stack.submit(api, technique="analyze", **evaluated)
        procs.append(start_relay(env, tmp_path / "relay.log"))
        # Started without waiting for it: the browser sees the jobs queued until the worker is up.
        worker = Proc(["worker", "--queues", "cpu", "--concurrency", "2", "--name", "browser@test",
                       "--loglevel", "info"], env, tmp_path / "worker.log")  # fmt: skip
        procs.append(worker)

        context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        page = context.new_page()
        try:
            # Sign in with the keyboard only.
            page.goto(f"{stack.api_url}/dashboard/jobs")
            expect(page).to_have_url(f"{stack.api_url}/dashboard/login?next=%2Fdashboard%2Fjobs")
            page.get_by_label("API key").fill(stack.key)
            page.keyboard.press("Enter")
            expect(page).to_have_url(f"{stack.api_url}/dashboard/jobs")
            page.keyboard.press("Tab")  # the first stop is the skip link, and it leads to the content
            expect(page.locator(":focus")).to_have_text("Skip to content")
            page.keyboard.press("Enter")
            expect(page.locator("main")).to_be_focused()

            # The list updates itself as the real worker runs the job (no reload).
            row = page.locator(f'tr[data-job="{done["id"]}"]')
            expect(row).to_have_count(1)
            expect(row.locator(".badge")).to_have_text("Succeeded", timeout=JOB_TIMEOUT_MS)
            expect(row.locator("progress")).to_have_attribute("value", "100")
            _shot(page, "jobs-list-first-done")

            # Its detail page: the worker's metrics and a working presigned download.
            row.get_by_role("link").click()
            expect(page.locator("h1")).to_contain_text(done["id"])
            finished = wait_job(api, done["id"], {"succeeded"}, timeout=5)
            ort = finished["metrics"]["evaluation"]["onnxruntime"]
            expect(page.locator("#metrics-table")).to_contain_text(f"{ort:.4g}")
            expect(page.locator("#metrics-table")).to_contain_text("accuracy")
            arts = {a["name"]: a for a in api.get(f"/v1/jobs/{done['id']}/artifacts").json()}
            stored = httpx.get(arts["model.onnx"]["url"], timeout=30).content
            with page.expect_download() as info:
                page.get_by_role("link", name="Download model.onnx").click()
            saved = tmp_path / "model.onnx"
            info.value.save_as(saved)
            assert len(stored) > 1000 and saved.read_bytes() == stored

            # The analyzer job: watched on its own page until done, its plots render.
            page.goto(f"{stack.api_url}/dashboard/jobs/{analyzed['id']}")
            expect(page.locator("#job-status")).to_have_text("Succeeded", timeout=JOB_TIMEOUT_MS)
            plot = page.get_by_alt_text(re.compile(r"^Analyzer plot ")).first
            expect(plot).to_be_visible()
            page.wait_for_function("img => img.complete && img.naturalWidth > 100", arg=plot.element_handle())
            # The worker's ranking shows as the most sensitive layers table, most sensitive first.
            top = wait_job(api, analyzed["id"], {"succeeded"}, timeout=5)["metrics"]["analysis"]["top"][:5]
            layers = page.locator("#top-layers tbody tr th")
            expect(layers).to_have_count(len(top))
            assert [t.strip() for t in layers.all_inner_texts()] == [t["layer"] for t in top]
            _shot(page, "job-detail-succeeded")

            # A long QAT job: cancelled from the UI while the worker runs it.
            long_job = stack.submit(api, technique="qat", params={"epochs": 200})
            wait_job(api, long_job["id"], {"running"}, timeout=60)
            page.goto(f"{stack.api_url}/dashboard/jobs/{long_job['id']}")
            expect(page.locator("#job-status")).to_have_text("Running")
            page.once("dialog", lambda dialog: dialog.accept())  # the page asks before cancelling
            page.get_by_role("button", name="Cancel job").click()
            expect(page.get_by_role("status")).to_have_text("Cancellation requested.")
            expect(page.locator("#job-status")).to_have_text(re.compile("Cancelling|Cancelled"))
            expect(page.locator("#job-status")).to_have_text("Cancelled", timeout=LIVE_TIMEOUT_MS * 2)
            expect(page.get_by_role("button", name="Cancel job")).to_have_count(0)
            assert api.get(f"/v1/jobs/{long_job['id']}").json()["status"] == "cancelled"
            page.reload()  # a finished job's page offers no auto-refresh (nothing left to change)
            expect(page.get_by_label("Auto-refresh")).to_have_count(0)
            _shot(page, "job-detail-cancelled")

            # The schedules page: a schedule made through the API, disabled from the UI (CSRF form).
            template = {"technique": "quantsim", "calib_dataset_id": stack.inputs["calib"]}
            resp = api.post("/v1/schedules", json={"name": "nightly-digits", "model_name": "digits",
                                                   "template": template, "cron": "0 2 * * *",
                                                   "timezone": "Europe/Paris"})  # fmt: skip
            assert resp.status_code == 201, resp.text
            schedule_id = resp.json()["id"]
            page.get_by_role("link", name="Schedules").click()
            schedule_row = page.locator(f"#schedule-{schedule_id}")
            expect(schedule_row).to_contain_text("0 2 * * *")
            schedule_row.get_by_role("button", name="Disable nightly-digits").click()
            expect(page.get_by_role("status")).to_have_text("Schedule disabled.")
            expect(schedule_row.get_by_role("button", name="Enable nightly-digits")).to_be_visible()
            assert api.get(f"/v1/schedules/{schedule_id}").json()["enabled"] is False
            _shot(page, "schedules")

            page.goto(f"{stack.api_url}/dashboard/jobs")
            for job_id, label in ((done["id"], "Succeeded"), (analyzed["id"], "Succeeded"),
                                  (long_job["id"], "Cancelled")):  # fmt: skip
                expect(page.locator(f'tr[data-job="{job_id}"] .badge')).to_have_text(label)
            _shot(page, "jobs-list-populated")
            page.set_viewport_size({"width": 390, "height": 844})  # phone-sized: CSS-only responsive layout
            _shot(page, "jobs-list-phone")
        finally:
            context.close()
