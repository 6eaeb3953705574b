"""Jobs list and job detail pages: filters, search, pagination, live data, metrics, downloads, actions."""

from __future__ import annotations

import hashlib
import html
import os
import zlib

import httpx
from sqlalchemy import update

from service.db.models import Job
from service.db.repositories import jobs as jobs_repo
from service.db.session import session_scope
from service.jobs import state
from service.storage import job_artifact_key
from tests.service.dashboard.conftest import Dash, csrf_of, make_job, parse, sign_in

METRICS = {
    "metric": "accuracy",
    "fp32": 0.9812,
    "simulated": 0.9771,
    "onnxruntime": 0.9765,
    "autoquant": {"target": 0.9712, "message": "target met at adaround", "stages": [
        {"name": "bn_fold", "status": "below", "score": 0.95, "cached": False, "seconds": 2.5},
        {"name": "adaround", "status": "met", "score": 0.9771, "cached": True, "seconds": 12.25}]},
}  # fmt: skip


def tiny_png() -> bytes:
    """A valid 1x1 PNG (signature, IHDR, IDAT, IEND) built by hand."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    ihdr = (1).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
        + chunk(b"IEND", b"")
    )


def finish_job(dash: Dash, job_id: str, files: dict[str, bytes]) -> None:
    """Run ``job_id`` through the state machine to succeeded with metrics, logs and stored artifacts."""
    store = dash.app.state.ctx.store
    with session_scope(dash.sessions) as session:
        job = session.get(Job, job_id)
        assert job is not None
        state.transition(session, job, state.RUNNING, stage="calibrate", claimed_by="test-worker")
        jobs_repo.append_log(session, job.id, "calibrating on 8 batches")
        jobs_repo.append_log(session, job.id, "<b>not markup</b>", level="warning")
        for name, data in files.items():
            key = job_artifact_key(job.id, name)
            store.put_bytes(key, data)
            ctype = "image/png" if name.endswith(".png") else "application/octet-stream"
            jobs_repo.add_artifact(
                session, job, name, key, len(data), hashlib.sha256(data).hexdigest(), ctype
            )
        state.transition(session, job, state.SUCCEEDED, stage="export", metrics=METRICS, message="done")


def fetch(dash: Dash, client, url: str) -> bytes:  # type: ignore[no-untyped-def]
    """GET a presigned URL: the local store's URLs are served by this app, S3's by the store."""
    if url.startswith(dash.settings.public_url):
        resp = client.get(url[len(dash.settings.public_url) :])
    else:
        resp = httpx.get(url, timeout=30)
    assert resp.status_code == 200, resp.text
    return bytes(resp.content)


def test_job_detail_shows_metrics_timeline_logs_plots_and_working_downloads(dash: Dash) -> None:
    job = make_job(dash, dash.a)
    onnx_bytes = os.urandom(3000)
    finish_job(dash, job.id, {"model.onnx": onnx_bytes, "sensitivity.png": tiny_png()})
    with dash.client() as client:
        sign_in(client, dash.a.key)
        page = client.get(f"/dashboard/jobs/{job.id}")
        assert page.status_code == 200
        text = page.text
        for expected in ("0.9812", "0.9771", "0.9765", "bn_fold", "adaround", "calibrating on 8 batches"):
            assert expected in text
        stages = text[
            text.index('id="stages-table"') : text.index("</table>", text.index('id="stages-table"'))
        ]
        for expected in ("0.95", "below", "2.5 s", "0.9771", "met", "12.2 s", "target met at adaround"):
            assert expected in stages or expected in text, expected
        assert "&lt;b&gt;not markup&lt;/b&gt;" in text and "<b>not markup</b>" not in text
        assert 'data-live="off"' in text  # a finished job stops refreshing
        assert "Cancel job" not in text and "Re-run" in text
        # Timeline: creation, running, succeeded, in order.
        timeline = text[text.index('id="h-timeline"') :]
        assert timeline.index("Queued") < timeline.index("Running") < timeline.index("Succeeded")
        doc = parse(text)
        downloads = [h for h in doc.links if "model.onnx" in h]
        assert downloads, doc.links
        assert fetch(dash, client, html.unescape(downloads[0])) == onnx_bytes
        (img,) = doc.images
        assert fetch(dash, client, html.unescape(img["src"])) == tiny_png() and img["alt"]


def test_list_filters_search_and_pagination(dash: Dash) -> None:
    mine = [make_job(dash, dash.a, technique="quantsim").id for _ in range(27)]
    qat = make_job(dash, dash.a, technique="qat")
    with session_scope(dash.sessions) as session:
        found = session.get(Job, qat.id)
        assert found is not None
        state.transition(session, found, state.RUNNING, stage="train")
        session.execute(update(Job).where(Job.id == qat.id).values(progress=0.4, schedule_id="S" * 26))
    with dash.client() as client:
        sign_in(client, dash.a.key)
        running = parse(client.get("/dashboard/jobs", params={"status": "running"}).text).job_rows
        assert qat.id in running and not set(running) & set(mine)
        assert parse(client.get("/dashboard/jobs", params={"technique": "qat"}).text).job_rows[0] == qat.id
        assert parse(client.get("/dashboard/jobs", params={"schedule": "S" * 26}).text).job_rows == [qat.id]
        assert parse(client.get("/dashboard/jobs", params={"q": qat.id[:20]}).text).job_rows == [qat.id]
        by_name = parse(
            client.get("/dashboard/jobs", params={"q": "NET-A", "technique": "qat"}).text
        ).job_rows
        assert qat.id in by_name
        assert parse(client.get("/dashboard/jobs", params={"q": "no-such-model"}).text).job_rows == []
        listed = client.get("/dashboard/jobs", params={"status": "running"}).text
        assert 'value="40"' in listed and "40%" in listed  # progress rendered server-side
        # Walk every page of the quantsim jobs: newest first, no repeats, nothing skipped.
        seen: list[str] = []
        url: str | None = "/dashboard/jobs?technique=quantsim"
        while url:
            doc = parse(client.get(url).text)
            seen += doc.job_rows
            url = next((html.unescape(h) for h in doc.links if "cursor=" in h), None)
        assert [j for j in seen if j in mine] == sorted(mine, reverse=True)
        bad = client.get("/dashboard/jobs", params={"status": "exploded"})
        assert bad.status_code == 422 and "queued" in bad.text


def test_cancel_and_rerun_need_csrf_and_go_through_the_state_machine(dash: Dash) -> None:
    queued, running = make_job(dash, dash.a), make_job(dash, dash.a)
    with session_scope(dash.sessions) as session:
        found = session.get(Job, running.id)
        assert found is not None
        state.transition(session, found, state.RUNNING)
    with dash.client() as client:
        sign_in(client, dash.a.key)
        page = client.get(f"/dashboard/jobs/{queued.id}")
        assert "Cancel job" in page.text and 'data-live="on"' in page.text
        token = csrf_of(page.text)
        assert client.post(f"/dashboard/jobs/{queued.id}/cancel", data={}).status_code == 403
        assert (
            client.post(f"/dashboard/jobs/{queued.id}/cancel", data={"csrf_token": "x" * 64}).status_code
            == 403
        )
        for job, expected in ((queued, "cancelled"), (running, "cancelling")):
            resp = client.post(
                f"/dashboard/jobs/{job.id}/cancel", data={"csrf_token": token}, follow_redirects=False
            )
            assert resp.status_code == 303
            with dash.sessions() as session:
                assert session.get(Job, job.id).status == expected  # type: ignore[union-attr]
        resp = client.post(
            f"/dashboard/jobs/{queued.id}/rerun", data={"csrf_token": token}, follow_redirects=False
        )
        assert resp.status_code == 303
        new_id = resp.headers["location"].split("/")[-1].split("?")[0]
        with dash.sessions() as session:
            new = session.get(Job, new_id)
            assert new is not None and new.rerun_of == queued.id and new.status == "queued"
            assert new.spec == queued.spec
        assert "Re-run queued." in client.get(resp.headers["location"]).text


def test_other_projects_jobs_are_invisible_and_untouchable(dash: Dash) -> None:
    theirs = make_job(dash, dash.b)
    with dash.client() as client:
        sign_in(client, dash.a.key)
        token = csrf_of(client.get("/dashboard/jobs").text)
        assert theirs.id not in parse(client.get("/dashboard/jobs").text).job_rows
        assert parse(client.get("/dashboard/jobs", params={"q": theirs.id}).text).job_rows == []
        assert client.get(f"/dashboard/jobs/{theirs.id}").status_code == 404
        for action in ("cancel", "rerun"):
            resp = client.post(f"/dashboard/jobs/{theirs.id}/{action}", data={"csrf_token": token})
            assert resp.status_code == 404
        for path in (f"/dashboard/models/{dash.b.model_id}", f"/dashboard/datasets/{dash.b.dataset_id}"):
            assert client.get(path).status_code == 404
        assert "net-b" not in client.get("/dashboard/models").text
        assert "calib-b" not in client.get("/dashboard/datasets").text
    with dash.sessions() as session:
        job = session.get(Job, theirs.id)
        assert job is not None and job.status == "queued"
        assert session.query(Job).filter(Job.rerun_of == theirs.id).count() == 0
