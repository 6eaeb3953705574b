"""The job and schedule pages in Chromium (Playwright, Debian's /usr/bin/chromium): what a finished
AutoQuant job, an analyzer's plots and a failed job show, on a desktop and on a 390 px phone; a schedule
created and edited through the schedules page's form.

The API is real (SQLite + local object store, served over HTTP); the worker's part is played through
the database with the shapes the worker writes (worker/techniques/autoquant.py's stage summary, the
validator's per-node report), so the pages are walked without running the engine.
Screenshots go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from service.db.migrate import upgrade
from service.db.models import Job
from service.db.repositories import jobs as jobs_repo
from service.db.session import make_engine, make_sessionmaker, session_scope
from service.jobs import state
from service.settings import Settings
from service.storage import job_artifact_key, make_store
from tests.e2e.test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS
from tests.fixtures.live_api import live_api
from tests.service.samples import job_body, make_ready_dataset, make_ready_model, new_project_key

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="Debian's chromium is not installed (/usr/bin/chromium)"
    ),
]

STAGES = [  # what worker/techniques/autoquant.py stores per stage
    {"name": "quantsim", "status": "below", "score": 0.9312, "cached": False, "seconds": 1.5},
    {"name": "bn_fold", "status": "below", "score": 0.9455, "cached": False, "seconds": 0.75},
    {"name": "adaround", "status": "met", "score": 0.9771, "cached": True, "seconds": 42.25},
]
METRICS = {
    "evaluation": {"metric": "accuracy", "fp32": 0.9812, "sim": 0.9771, "onnxruntime": 0.9765},
    "autoquant": {"target": 0.9712, "best_stage": "adaround", "target_met": True,
                  "message": "target met at adaround", "metric": "accuracy", "stages": STAGES},
}  # fmt: skip
REPORT = {  # the validator's per-node report (core/graph/validator.py ValidationReport.to_dict)
    "ok": False,
    "capture": "torch.export",
    "issues": [{"node": "encoder.attn.softmax_7", "op": "aten.softmax", "problem": "fused attention",
                "fix": "export with attn_implementation='eager'"}],
}  # fmt: skip
PTQ_METRICS = {  # worker/techniques/ptq.py: the steps asked for and one note per step that ran
    "ptq_steps": ["cle", "seq_mse", "adaround", "bias_correction"],
    "ptq": {"cle": "bn folded and equalized", "seq_mse": {"layers": 7, "seconds": 3.25},
            "adaround": {"layers": 7, "seconds": 41.5},
            "bias_correction": {"empirical": ["conv1", "conv2"], "analytical": []}},
}  # fmt: skip
PTQ_SHOWN = [("cle", "bn folded and equalized"), ("seq_mse", "7 layers in 3.2 s"),
             ("adaround", "7 layers in 41.5 s"), ("bias_correction", "empirical on 2 layers, analytical on 0 layers")]  # fmt: skip
ANALYSIS_METRICS = {  # worker/techniques/analyze.py: the QuantAnalyzer's ranking, most sensitive first
    "analysis": {"metric": "cosine",
                 "global": {"fp32": 1.0, "weights_only": 0.9981, "activations_only": 0.9712, "quantized": 0.9655},
                 "top": [{"rank": i + 1, "layer": f"blocks.{i}.conv", "score": 0.05 / (i + 1), "action": "higher_bitwidth"}
                         for i in range(8)]},
}  # fmt: skip
REPORT_HTML = (
    b"<!doctype html><html><head><meta charset='utf-8'>"
    b"<meta name='viewport' content='width=device-width, initial-scale=1'><title>lowbit analysis</title></head>"
    b"<body><h1>lowbit analysis report</h1></body></html>"
)


def png(width: int, height: int) -> bytes:
    """A valid RGB PNG of ``width`` x ``height`` (a plot stand-in, wider than any phone)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    rows = b"".join(b"\x00" + bytes([40, 90, 160]) * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@dataclass
class Site:
    url: str
    key: str
    settings: Settings
    done: str  # succeeded AutoQuant job with a report and plots
    failed: str  # failed with the validator's per-node report
    queued: str  # still queued: can be cancelled
    ptq: str  # succeeded PTQ job with its steps' notes
    analyzed: str  # succeeded analyze job with the analyzer's ranking


def _play(settings: Settings, job_id: str, status: str, files: dict[str, bytes], **fields: Any) -> None:
    store = make_store(settings)
    engine = make_engine(settings)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            job = session.get(Job, job_id)
            assert job is not None
            state.transition(session, job, state.RUNNING, stage="prepare", claimed_by="test-worker")
            jobs_repo.append_log(session, job.id, "stage prepare")
            for name, data in files.items():
                key = job_artifact_key(job.id, name)
                store.put_bytes(key, data)
                jobs_repo.add_artifact(
                    session,
                    job,
                    name,
                    key,
                    len(data),
                    hashlib.sha256(data).hexdigest(),
                    "application/octet-stream",
                )
            state.transition(session, job, status, **fields)
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("dashboard-pages")
    settings = Settings(
        database_url=f"sqlite:///{root / 'lowbit.db'}", storage="local",
        local_storage_dir=str(root / "objects"), secret_key="test-secret", rate_limit_per_minute=0,
    )  # fmt: skip
    upgrade(settings)
    key = new_project_key(settings, "pages")
    with live_api(settings) as (url, live):
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
            model, data = make_ready_model(http, "digits"), make_ready_dataset(http, "calib")
            spec = {"technique": "autoquant", "allowed_accuracy_drop": 0.01, "param_bw": 4, "scheme": "sqnr"}
            ids = [http.post("/v1/jobs", json=job_body(model, data, **spec)).json()["id"] for _ in range(4)]
            for technique in ("ptq", "analyze"):  # ids[3] stays queued: the badge check needs one
                body = job_body(model, data, technique=technique, param_bw=4, scheme="sqnr")
                ids.append(http.post("/v1/jobs", json=body).json()["id"])
        plots = {
            f"plots/per_layer_sensitivity_of_a_rather_long_layer_name_{i}.png": png(1200, 300)
            for i in range(4)
        }
        _play(live, ids[0], state.SUCCEEDED, {"reports/report.html": REPORT_HTML, **plots, "model.onnx": b"x" * 5000},
              metrics=METRICS, stage="done", message="done")  # fmt: skip
        error = {"type": "ModelNotQuantizableError", "message": "the model cannot be quantized as uploaded",
                 "report": REPORT}  # fmt: skip
        _play(live, ids[1], state.FAILED, {}, error=error, message="model not quantizable")
        for job_id, technique_metrics in ((ids[4], PTQ_METRICS), (ids[5], ANALYSIS_METRICS)):
            _play(live, job_id, state.SUCCEEDED, {}, metrics=technique_metrics, stage="done", message="done")
        yield Site(url, key, live, ids[0], ids[1], ids[2], ids[4], ids[5])


@pytest.fixture(scope="module")
def page(site: Site) -> Iterator[Any]:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        tab = context.new_page()
        tab.goto(f"{site.url}/dashboard/login")
        tab.get_by_label("API key").fill(site.key)
        tab.keyboard.press("Enter")
        expect(tab).to_have_url(f"{site.url}/dashboard/jobs")
        try:
            yield tab
        finally:
            browser.close()


def _shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_autoquant_job_page_stage_table_report_plots_and_zip(site: Site, page: Any) -> None:
    from playwright.sync_api import expect

    page.goto(f"{site.url}/dashboard/jobs/{site.done}")
    rows = page.locator("#stages-table tbody tr")
    expect(rows).to_have_count(3)
    for row, stage in zip(rows.all(), STAGES, strict=True):
        cells = [c.strip() for c in row.locator("th, td").all_inner_texts()]
        assert cells[0] == stage["name"] and cells[2] == stage["status"]
        assert float(cells[1]) == pytest.approx(stage["score"], abs=5e-4)
        assert cells[3] == f"{stage['seconds']:.1f} s" and cells[4] == ("yes" if stage["cached"] else "no")
    expect(page.locator("#job-live")).to_contain_text("W4A8 · sqnr")
    expect(page.locator("#job-live")).to_have_attribute("aria-live", "polite")
    _shot(page, "job-autoquant-desktop")

    # The report opens in a new tab as a page (inline), not as a download.
    with page.expect_popup() as popup_info:
        page.get_by_role("link", name="Open reports/report.html (report)").click()
    report = popup_info.value
    report.wait_for_load_state()
    expect(report.locator("h1")).to_have_text("lowbit analysis report")
    report.close()

    # A plot enlarges: its link opens the image at full size.
    plot = page.get_by_alt_text(re.compile(r"^Analyzer plot ")).first
    page.wait_for_function("img => img.complete && img.naturalWidth === 1200", arg=plot.element_handle())
    with page.expect_popup() as popup_info:
        plot.click()
    full = popup_info.value
    full.wait_for_load_state()
    assert full.evaluate("document.images[0].naturalWidth") == 1200
    full.close()

    # Every artifact in one zip.
    zipped = page.request.get(f"{site.url}/dashboard/jobs/{site.done}/artifacts.zip")
    assert zipped.ok and zipped.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(zipped.body())).namelist()
    assert "reports/report.html" in names and "model.onnx" in names and len(names) == 6

    # A 390 px phone: nothing wider than the viewport.
    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    _shot(page, "job-autoquant-phone")
    page.set_viewport_size({"width": 1280, "height": 900})


def test_ptq_notes_and_analyzer_top_layers(site: Site, page: Any) -> None:
    """A PTQ job lists what each step did in the order run; an analyze job shows the analyzer's global
    figures and its five most sensitive layers, most sensitive first; both show bitwidths and scheme."""
    from playwright.sync_api import expect

    page.goto(f"{site.url}/dashboard/jobs/{site.ptq}")
    rows = [
        [c.strip() for c in r.locator("th, td").all_inner_texts()]
        for r in page.locator("#ptq-notes tbody tr").all()
    ]
    assert rows == [list(r) for r in PTQ_SHOWN]
    expect(page.locator("#job-live")).to_contain_text("W4A8 · sqnr")

    page.goto(f"{site.url}/dashboard/jobs/{site.analyzed}")
    expect(page.locator("#analysis-global")).to_contain_text("Fully quantized (cosine)")
    expect(page.locator("#analysis-global")).to_contain_text("0.9655")
    rows = [
        [c.strip() for c in r.locator("th, td").all_inner_texts()]
        for r in page.locator("#top-layers tbody tr").all()
    ]
    top = ANALYSIS_METRICS["analysis"]["top"][:5]  # type: ignore[index]
    assert [r[:2] for r in rows] == [[str(t["rank"]), t["layer"]] for t in top]
    assert [float(r[2]) for r in rows] == pytest.approx([t["score"] for t in top], rel=1e-3)
    assert {r[3] for r in rows} == {"higher bitwidth"}
    expect(page.locator("#job-live")).to_contain_text("W4A8 · sqnr")
    _shot(page, "job-analyze-top-layers")


def test_failed_job_shows_per_node_report_and_log(site: Site, page: Any) -> None:
    from playwright.sync_api import expect

    page.goto(f"{site.url}/dashboard/jobs/{site.failed}")
    issue = REPORT["issues"][0]
    table = page.locator("#node-report")
    expect(table).to_contain_text(issue["node"])
    expect(table).to_contain_text(issue["fix"])
    expect(page.locator("pre.log")).to_contain_text("stage prepare")
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    _shot(page, "job-failed-phone")
    page.set_viewport_size({"width": 1280, "height": 900})


def test_cancel_asks_first_and_badges_are_readable(site: Site, page: Any) -> None:
    from playwright.sync_api import expect

    page.goto(f"{site.url}/dashboard/jobs/{site.queued}")
    asked: list[str] = []

    def answer(dialog: Any, accept: bool) -> None:
        asked.append(dialog.message)
        dialog.accept() if accept else dialog.dismiss()

    page.once("dialog", lambda d: answer(d, False))
    page.get_by_role("button", name="Cancel job").click()
    expect(page.locator("#job-status")).to_have_text("Queued")
    assert asked and site.queued in asked[0]
    page.once("dialog", lambda d: answer(d, True))
    page.get_by_role("button", name="Cancel job").click()
    expect(page.locator("#job-status")).to_have_text("Cancelled")

    # Every status badge: text against its background at >= 4.5:1 (WCAG AA).
    page.goto(f"{site.url}/dashboard/jobs")
    ratios = page.evaluate(
        """() => {
        const lum = c => { const [r, g, b] = c.match(/\\d+/g).slice(0, 3).map(v => {
            v = v / 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
            return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
        return [...document.querySelectorAll('.badge')].map(b => { const s = getComputedStyle(b);
            const [hi, lo] = [lum(s.color), lum(s.backgroundColor)].sort((x, y) => y - x);
            return [b.textContent, (hi + 0.05) / (lo + 0.05)]; });
        }"""
    )
    assert {label for label, _ in ratios} >= {"Queued", "Succeeded", "Failed", "Cancelled"}
    assert all(ratio >= 4.5 for _, ratio in ratios), ratios


def test_schedule_created_and_edited_through_the_form(site: Site, page: Any) -> None:
    """Given the schedules page, When a schedule is submitted with a cron that never fires, Then the API's
    message shows beside the cron field; When fixed it is created and listed, and its edit form changes
    the cron, which the API then returns."""
    from playwright.sync_api import expect

    page.goto(f"{site.url}/dashboard/schedules")
    page.get_by_label("Name").fill("nightly-digits")
    page.get_by_label("Model", exact=True).select_option("digits")
    page.get_by_label("Calibration data").select_option(index=1)
    page.get_by_label("Cron").fill("0 0 31 2 *")
    page.get_by_role("button", name="Create schedule").click()
    error = page.locator("#sf-cron-error")
    expect(error).to_contain_text("does not fire within a year")
    expect(page.get_by_label("Cron")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Name")).to_have_value("nightly-digits")  # what was typed is kept
    _shot(page, "schedule-form-error")

    page.get_by_label("Cron").fill("0 2 * * *")
    page.get_by_role("button", name="Create schedule").click()
    expect(page.get_by_role("status")).to_have_text("Schedule created.")
    row = page.locator("tr[data-schedule]", has_text="nightly-digits")
    expect(row).to_contain_text("0 2 * * *")

    row.get_by_role("link", name="Edit nightly-digits").click()
    expect(page.get_by_label("Cron")).to_have_value("0 2 * * *")
    page.get_by_label("Cron").fill("30 4 * * 1-5")
    page.get_by_role("button", name="Save schedule").click()
    expect(page.get_by_role("status")).to_have_text("Schedule updated.")
    expect(page.locator("tr[data-schedule]", has_text="nightly-digits")).to_contain_text("30 4 * * 1-5")
    _shot(page, "schedules-after-edit")
    page.set_viewport_size({"width": 390, "height": 844})  # the page and its form fit a phone
    page.reload()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    _shot(page, "schedules-phone")
    page.set_viewport_size({"width": 1280, "height": 900})

    with httpx.Client(base_url=site.url, headers={"Authorization": f"Bearer {site.key}"}, timeout=30) as http:
        items = http.get("/v1/schedules").json()["items"]
    made = [s for s in items if s["name"] == "nightly-digits"]
    assert len(made) == 1 and made[0]["cron"] == "30 4 * * 1-5" and made[0]["model_name"] == "digits"
    assert made[0]["template"]["technique"] == "ptq" and made[0]["template"]["calib_dataset_id"]
