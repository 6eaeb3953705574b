"""Schedule ticks behind a job backlog: with 200 jobs queued and no worker free to take anything,
every due schedule still fires once per due time, within 70 s of it (beat ticks in its own process).
Real PostgreSQL (a database of its own), Redis, the API, `lowbit relay` and `lowbit beat`."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, func, select

from service.db.models import Job, OutboxMessage
from service.db.schedule_tables import ScheduleRun
from tests.fixtures.postgres import fresh_database
from tests.fixtures.worker_procs import processes, start_beat, start_relay
from tests.fixtures.worker_stack import Stack, make_stack

pytestmark = [pytest.mark.slow]
BACKLOG = 200
FIRES_WITHIN_S = 70.0


def _runs(url: str) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(select(ScheduleRun).order_by(ScheduleRun.schedule_id)).all())
    finally:
        engine.dispose()


def _unpublished(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.scalar(select(func.count()).where(OutboxMessage.published_at.is_(None))) or 0)
    finally:
        engine.dispose()


def _queued(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(Job).where(Job.status == "queued")) or 0)
    finally:
        engine.dispose()


def test_every_schedule_fires_on_time_behind_a_200_job_backlog(
    stack: Stack, digits_artifacts: object, tmp_path: Path
) -> None:
    """Given 200 jobs queued and published to the broker (no worker consumes it) and three
    every-minute schedules, When beat runs, Then each schedule has exactly one run for the current
    minute, created within 70 s of its fire time, and further ticks add none for that minute."""
    broker = stack.redis.url.rsplit("/", 1)[0] + "/3"  # a broker database of its own: nobody consumes
    with (
        fresh_database("lowbit_tick") as url,
        make_stack(tmp_path, digits_artifacts, stack.redis, stack.seaweed, url) as own,
        own.client() as client,
        processes() as procs,
    ):
        env = own.env(broker_url=broker, schedule_tick_s=5)
        with ThreadPoolExecutor(8) as pool:
            created = list(pool.map(lambda _: own.submit(client)["id"], range(BACKLOG)))
        assert len(set(created)) == BACKLOG
        procs.append(start_relay(env, tmp_path / "relay.log"))
        deadline = time.monotonic() + 300  # generous: a starved machine starts processes slowly
        while _unpublished(url):
            assert time.monotonic() < deadline, "backlog not published"
            time.sleep(0.2)
        schedules = []
        for i in range(3):
            body = {"name": f"every-minute-{i}", "model_name": "digits", "cron": "* * * * *", "timezone": "UTC",
                    "template": {"calib_dataset_id": own.inputs["calib"], "technique": "quantsim"}}  # fmt: skip
            resp = client.post("/v1/schedules", json=body)
            assert resp.status_code == 201, resp.text
            schedules.append(resp.json()["id"])
        beat = start_beat(env, tmp_path / "beat.log", tmp_path / "beat-schedule")
        procs.append(beat)
        deadline = time.monotonic() + 300
        while len(_runs(url)) < len(schedules):
            assert time.monotonic() < deadline, beat.tail()
            time.sleep(0.2)
        beat.wait_log("schedule tick: 0 due run(s)", timeout=120)  # a later tick found nothing new
        runs = _runs(url)
        minutes = {r.scheduled_for.replace(second=0, microsecond=0) for r in runs}
        for run in runs:
            assert run.created_at - run.scheduled_for <= timedelta(seconds=FIRES_WITHIN_S), run
        # Once per due time: one run per (schedule, minute); a minute boundary crossed meanwhile may add
        # the next minute's run, never a second one for the same minute.
        per_due = [(r.schedule_id, r.scheduled_for) for r in runs]
        assert len(per_due) == len(set(per_due)), per_due
        assert {r.schedule_id for r in runs} == set(schedules)
        assert len(runs) == len(schedules) * len(minutes)
        assert _queued(url) >= BACKLOG  # the backlog was there all along, untaken
        with httpx.Client(base_url=own.api_url, headers={"Authorization": f"Bearer {own.key}"}) as http:
            for schedule_id in schedules:
                assert http.delete(f"/v1/schedules/{schedule_id}").status_code == 204
