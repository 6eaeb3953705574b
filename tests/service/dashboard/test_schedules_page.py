"""Schedules page: next run, last runs with their trend chart, regressions, enable/disable, job links."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from html import unescape as html_unescape
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from service.dashboard.schedule_view import trend_points
from service.db.models import Blob, ModelVersion
from service.db.repositories import jobs as jobs_repo
from service.db.repositories import resources
from service.db.repositories import schedules as schedules_repo
from service.db.schedule_tables import Schedule, ScheduleRun
from service.db.session import session_scope
from tests.service.dashboard.conftest import Dash, Tenant, csrf_of, make_job, parse, sign_in

TEMPLATE = {"spec_version": 1, "technique": "ptq", "compute": "cpu", "priority": 5, "params": {}}


def make_schedule(
    dash: Dash, tenant: Tenant, name: str, metrics: list[tuple[float, bool | None]]
) -> tuple[str, list[str]]:
    """A schedule of ``tenant`` (daily 12:30 Paris time) with one finished run per metric, oldest first;
    returns its id and its runs' job ids."""
    with session_scope(dash.sessions) as session:
        model_name = session.get(ModelVersion, tenant.model_version_id).model.name  # type: ignore[union-attr]
        schedule = schedules_repo.create_schedule(
            session,
            tenant.project_id,
            {"name": name, "model_name": model_name, "template": TEMPLATE, "cron": "30 12 * * *",
             "timezone": "Europe/Paris", "enabled": True, "regression_threshold": 0.01},
        )  # fmt: skip
        job_ids = []
        start = datetime(2026, 1, 1, 11, 30, tzinfo=UTC)
        for i, (metric, regressed) in enumerate(metrics):
            job = jobs_repo.create_job(
                session, project_id=tenant.project_id, model_version_id=tenant.model_version_id,
                calib_dataset_id=tenant.dataset_id, eval_dataset_id=None,
                spec={**TEMPLATE, "model_id": tenant.model_id}, schedule_id=schedule.id,
            )  # fmt: skip
            session.add(
                ScheduleRun(schedule_id=schedule.id, scheduled_for=start + timedelta(days=i), job_id=job.id,
                            status="compared", message="", metric=metric, regressed=regressed, webhook_attempts=0)
            )  # fmt: skip
            job_ids.append(job.id)
        return schedule.id, job_ids


def next_paris_1230(now: datetime) -> str:
    """The next 12:30 Europe/Paris after ``now``, formatted like the page (computed without croniter)."""
    local = now.astimezone(ZoneInfo("Europe/Paris"))
    fire = local.replace(hour=12, minute=30, second=0, microsecond=0)
    if fire <= local:
        fire = (local + timedelta(days=1)).replace(hour=12, minute=30, second=0, microsecond=0)
    return fire.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def test_trend_points_map_highest_to_top_and_spread_runs_evenly() -> None:
    points = trend_points([(0.90, False), (0.98, False), (0.80, True)], width=100, height=40)
    assert [round(p.x, 3) for p in points] == [4.0, 50.0, 96.0]
    assert points[1].y == 4.0 and points[2].y == 36.0  # best at the top, worst at the bottom
    assert 4.0 < points[0].y < 36.0 and [p.regressed for p in points] == [False, False, True]
    flat = trend_points([(0.5, False), (0.5, False)], width=100, height=40)
    assert [p.y for p in flat] == [20.0, 20.0]
    assert trend_points([]) == []
    assert trend_points([(0.7, False)], width=100, height=40)[0].x == 50.0


def test_schedules_page_shows_next_run_trend_regressions_and_links_to_jobs(dash: Dash) -> None:
    sid, job_ids = make_schedule(dash, dash.a, "nightly-a", [(0.97, False), (0.975, False), (0.90, True)])
    other_job = make_job(dash, dash.a)  # not scheduled: must not appear under the schedule filter
    with dash.client() as client:
        sign_in(client, dash.a.key)
        before = next_paris_1230(datetime.now(UTC))
        page = client.get("/dashboard/schedules")
        after = next_paris_1230(datetime.now(UTC))
        assert page.status_code == 200
        text = page.text
        row = re.search(rf'<tr id="schedule-{sid}"[^>]*>(.*?)</tr>', text, re.S)
        assert row is not None and 'class="regressed"' in row.group(0)
        assert (
            "nightly-a" in row.group(1) and "30 12 * * *" in row.group(1) and "Europe/Paris" in row.group(1)
        )
        next_cell = re.search(r"<td data-next-run>([^<]*)</td>", row.group(1))
        assert next_cell is not None and next_cell.group(1) in (before, after)
        svg = re.search(r'<svg class="trend"[^>]*data-points="(\d+)"[^>]*>(.*?)</svg>', row.group(1), re.S)
        assert svg is not None and svg.group(1) == "3"
        circles = re.findall(r'<circle cx="([\d.]+)" cy="([\d.]+)"[^>]*?(data-regressed="1")?>', svg.group(2))
        assert len(circles) == 3 and [bool(c[2]) for c in circles] == [False, False, True]
        ys = [float(c[1]) for c in circles]
        assert ys[1] < ys[0] < ys[2]  # 0.975 highest (top), 0.90 lowest (bottom)
        # The regressed run is highlighted and every run links to its job.
        doc = parse(text)
        for jid in job_ids:
            assert f"/dashboard/jobs/{jid}" in doc.links
        runs = re.search(rf'<section aria-labelledby="runs-{sid}">(.*?)</section>', text, re.S)
        assert runs is not None
        regressed_run = re.search(r'<tr data-run="[^"]+" class="regressed">(.*?)</tr>', runs.group(1), re.S)
        assert regressed_run is not None and job_ids[2] in regressed_run.group(1)
        # The schedule filter link lists exactly the schedule's jobs.
        link = f"/dashboard/jobs?schedule={sid}"
        assert link in doc.links
        jobs_html = client.get(link).text
        assert f'<option value="{sid}" selected>nightly-a</option>' in jobs_html  # the filter names it
        jobs_page = parse(jobs_html)
        assert sorted(jobs_page.job_rows) == sorted(job_ids) and other_job.id not in jobs_page.job_rows


def test_enable_disable_needs_csrf_and_changes_the_schedule(dash: Dash) -> None:
    sid, _ = make_schedule(dash, dash.a, "toggle-a", [])
    with dash.client() as client:
        sign_in(client, dash.a.key)
        page = client.get("/dashboard/schedules").text
        assert f'action="/dashboard/schedules/{sid}/disable"' in page
        forged = client.post(
            f"/dashboard/schedules/{sid}/disable", data={"csrf_token": "x"}, follow_redirects=False
        )
        assert forged.status_code == 403
        with dash.sessions() as session:
            assert session.get(Schedule, sid).enabled is True  # type: ignore[union-attr]
        resp = client.post(
            f"/dashboard/schedules/{sid}/disable", data={"csrf_token": csrf_of(page)}, follow_redirects=False
        )
        assert resp.status_code == 303 and resp.headers["location"].startswith(
            "/dashboard/schedules?notice=disabled"
        )
        with dash.sessions() as session:
            assert session.get(Schedule, sid).enabled is False  # type: ignore[union-attr]
        page = client.get("/dashboard/schedules").text
        row = re.search(rf'<tr id="schedule-{sid}"[^>]*>(.*?)</tr>', page, re.S)
        assert (
            row is not None and "<td>No</td>" in row.group(1) and "<td data-next-run>—</td>" in row.group(1)
        )
        resp = client.post(f"/dashboard/schedules/{sid}/enable", data={"csrf_token": csrf_of(page)})
        assert resp.status_code == 200 and "Schedule enabled." in resp.text
        with dash.sessions() as session:
            assert session.get(Schedule, sid).enabled is True  # type: ignore[union-attr]


def test_schedules_are_project_scoped(dash: Dash) -> None:
    sid_a, jobs_a = make_schedule(dash, dash.a, "secret-a", [(0.9, False)])
    with dash.client() as client:
        sign_in(client, dash.b.key)
        page = client.get("/dashboard/schedules").text
        assert sid_a not in page and "secret-a" not in page and jobs_a[0] not in page
        resp = client.post(f"/dashboard/schedules/{sid_a}/disable", data={"csrf_token": csrf_of(page)})
        assert resp.status_code == 404
        assert jobs_a[0] not in parse(client.get(f"/dashboard/jobs?schedule={sid_a}").text).job_rows
    with dash.sessions() as session:
        assert session.get(Schedule, sid_a).enabled is True  # type: ignore[union-attr]


def test_a_stored_cron_that_never_fires_does_not_break_the_page(dash: Dash) -> None:
    """Given a schedule stored with ``0 0 31 2 *`` (February 31, accepted before crons were checked),
    the schedules page still renders (it answered 500 with CroniterBadDateError) and shows the others."""
    sid, _ = make_schedule(dash, dash.a, "never-a", [(0.9, False)])
    ok, _ = make_schedule(dash, dash.a, "fine-a", [])
    with session_scope(dash.sessions) as session:
        stored = session.get(Schedule, sid)
        assert stored is not None
        stored.cron = "0 0 31 2 *"
    with dash.client() as client:
        sign_in(client, dash.a.key)
        page = client.get("/dashboard/schedules")
        assert page.status_code == 200, page.text[:500]
        assert f'id="schedule-{sid}"' in page.text and f'id="schedule-{ok}"' in page.text


def _form(dash: Dash, tenant: Tenant, **over: str) -> dict[str, str]:
    with dash.sessions() as session:
        model_name = session.get(ModelVersion, tenant.model_version_id).model.name  # type: ignore[union-attr]
    return {"name": "form-made", "model_name": model_name, "calib_dataset_id": tenant.dataset_id,
            "eval_dataset_id": "", "spec": '{"technique": "ptq", "param_bw": 4}', "cron": "15 3 * * *",
            "timezone": "Europe/Paris", "webhook_url": "", "webhook_secret": "", "regression_threshold": "0.02",
            **over}  # fmt: skip


def _error_beside(html: str, control: str) -> str:
    """The error text shown beside ``control``, which must point at it (aria-describedby)."""
    found = re.search(rf'<p id="sf-{control}-error" class="field-error" role="alert">([^<]*)</p>', html)
    assert found is not None, f"no error beside {control}"
    assert f'aria-describedby="sf-{control}-error"' in html
    return found.group(1)


def test_schedule_form_creates_with_the_apis_checks_and_shows_its_errors_inline(dash: Dash) -> None:
    """Given the New schedule form, a bad cron, a spec that is not JSON, a template the API refuses, a
    webhook to a loopback host and another project's model each come back (4xx) with the API's message
    beside their field and the typed values kept, storing nothing; a good form stores the schedule the
    API would (template with the picked dataset) and lists it."""
    with dash.client() as client:
        sign_in(client, dash.a.key)
        page = client.get("/dashboard/schedules").text
        token = csrf_of(page)
        assert 'action="/dashboard/schedules"' in page and 'id="sf-spec"' in page
        doc = parse(page)
        assert {"sf-name", "sf-model_name", "sf-cron", "sf-spec", "sf-webhook_url"} <= doc.label_for

        def post(**over: str) -> Any:
            return client.post("/dashboard/schedules", data={**_form(dash, dash.a, **over), "csrf_token": token},
                               follow_redirects=False)  # fmt: skip

        bad = post(name="bad-cron", cron="61 * * * *")
        assert bad.status_code == 422 and "invalid cron expression" in _error_beside(bad.text, "cron")
        assert 'value="61 * * * *"' in bad.text and 'value="bad-cron"' in bad.text
        bad = post(name="bad-json", spec='{"technique": ')
        assert bad.status_code == 422 and "spec is not valid JSON" in _error_beside(bad.text, "spec")
        bad = post(name="bad-spec", spec='{"technique": "autoquant"}')
        assert bad.status_code == 422
        assert "allowed_accuracy_drop" in html_unescape(_error_beside(bad.text, "spec"))
        bad = post(name="bad-hook", webhook_url="http://127.0.0.1:9/hook")
        assert bad.status_code == 422 and "loopback" in _error_beside(bad.text, "webhook_url")
        with dash.sessions() as session:
            other_model = session.get(ModelVersion, dash.b.model_version_id).model.name  # type: ignore[union-attr]
        bad = post(name="bad-model", model_name=other_model)
        assert bad.status_code == 404 and "not found" in _error_beside(bad.text, "model_name")
        with dash.sessions() as session:
            names = set(
                session.scalars(select(Schedule.name).where(Schedule.project_id == dash.a.project_id))
            )
        assert not names & {"bad-cron", "bad-json", "bad-spec", "bad-hook", "bad-model"}

        forged = client.post("/dashboard/schedules", data={**_form(dash, dash.a), "csrf_token": "x"})
        assert forged.status_code == 403
        made = post()
        assert made.status_code == 303 and made.headers["location"].startswith(
            "/dashboard/schedules?notice=created"
        )
        sid = made.headers["location"].rsplit("#schedule-", 1)[1]
        with dash.sessions() as session:
            stored = session.get(Schedule, sid)
            assert stored is not None and stored.project_id == dash.a.project_id
            assert (stored.cron, stored.timezone, stored.regression_threshold) == (
                "15 3 * * *",
                "Europe/Paris",
                0.02,
            )
            assert stored.template["calib_dataset_id"] == dash.a.dataset_id
            assert stored.template["technique"] == "ptq" and stored.template["param_bw"] == 4
        listed = client.get(made.headers["location"]).text
        assert "Schedule created." in listed and f'id="schedule-{sid}"' in listed


def test_schedule_edit_form_patches_the_schedule_and_is_project_scoped(dash: Dash) -> None:
    sid, _ = make_schedule(dash, dash.a, "edit-a", [])
    with dash.client() as client:
        sign_in(client, dash.b.key)
        assert client.get(f"/dashboard/schedules/{sid}/edit").status_code == 404
        sign_in(client, dash.a.key)
        page = client.get(f"/dashboard/schedules/{sid}/edit").text
        assert 'value="30 12 * * *"' in page and 'value="edit-a"' in page
        assert f'href="/dashboard/schedules/{sid}/edit"' in client.get("/dashboard/schedules").text
        form = {"name": "edit-a", "model_name": re.search(r'<option value="([^"]+)" selected>', page).group(1),  # type: ignore[union-attr]
                "calib_dataset_id": dash.a.dataset_id, "eval_dataset_id": "", "spec": '{"technique": "ptq"}',
                "cron": "0 0 31 2 *", "timezone": "UTC", "webhook_url": "", "webhook_secret": "",
                "regression_threshold": "0.01", "csrf_token": csrf_of(page)}  # fmt: skip
        bad = client.post(f"/dashboard/schedules/{sid}/edit", data=form)
        assert bad.status_code == 422 and "does not fire within a year" in _error_beside(bad.text, "cron")
        ok = client.post(
            f"/dashboard/schedules/{sid}/edit", data={**form, "cron": "45 1 * * 1"}, follow_redirects=False
        )
        assert ok.status_code == 303 and "notice=updated" in ok.headers["location"]
    with dash.sessions() as session:
        stored = session.get(Schedule, sid)
        assert stored is not None and (stored.cron, stored.timezone) == ("45 1 * * 1", "UTC")
        assert stored.template["calib_dataset_id"] == dash.a.dataset_id


def test_each_run_shows_the_model_version_and_sha256_its_job_quantized(dash: Dash) -> None:
    """Runs compare model versions, so each run row names the version its job quantized and its hash."""
    sid, (old_job,) = make_schedule(dash, dash.a, "versions-a", [(0.95, False)])
    sha = hashlib.sha256(b"model v-next").hexdigest()
    with session_scope(dash.sessions) as session:
        old_number = session.get(ModelVersion, dash.a.model_version_id).version  # type: ignore[union-attr]
        session.add(Blob(sha256=sha, size=12, storage_key=f"blobs/{sha}"))
        # A model of its own (the tenant's is shared by other tests), at its third version.
        model = resources.create_model(session, dash.a.project_id, f"versions-{sha[:8]}")
        for _ in range(3):
            version = resources.create_version(session, model, "onnx")
        version.status, version.size, version.blob_sha256 = "ready", 12, sha
        number = version.version
        job = jobs_repo.create_job(
            session, project_id=dash.a.project_id, model_version_id=version.id, calib_dataset_id=dash.a.dataset_id,
            eval_dataset_id=None, spec={**TEMPLATE, "model_id": model.id}, schedule_id=sid,
        )  # fmt: skip
        session.add(ScheduleRun(schedule_id=sid, scheduled_for=datetime(2026, 2, 1, tzinfo=UTC), job_id=job.id,
                                status="compared", message="", metric=0.9, regressed=True, webhook_attempts=0))  # fmt: skip
    with dash.client() as client:
        sign_in(client, dash.a.key)
        page = client.get("/dashboard/schedules").text
    cells = {
        jid: re.search(rf"{jid}</code></a>.*?<td data-model-version>(.*?)</td>", page, re.S)
        for jid in (job.id, old_job)
    }
    new_cell, old_cell = cells[job.id], cells[old_job]
    assert new_cell is not None and old_cell is not None
    assert new_cell.group(1).startswith(f"v{number} ") and f"<code>{sha[:12]}</code>" in new_cell.group(1)
    assert f'title="sha256 {sha}"' in new_cell.group(1)
    assert number == 3 and old_cell.group(1) == f"v{old_number}"  # the tenant's version has no hash
