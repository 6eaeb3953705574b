"""The tick's due-time rule and missed-run policy (pure: no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from service.db.schedule_tables import Schedule
from worker.schedules.tick import due_time


def _schedule(cron: str, tz: str, created: datetime, last: datetime | None = None) -> Schedule:
    return Schedule(cron=cron, timezone=tz, created_at=created, last_scheduled_for=last)


def test_nightly_schedule_in_its_time_zone() -> None:
    """02:00 Europe/Paris is 01:00 UTC in winter: due from then on, not before."""
    created = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
    s = _schedule("0 2 * * *", "Europe/Paris", created)
    assert due_time(s, datetime(2026, 1, 11, 0, 59, tzinfo=UTC)) is None
    assert due_time(s, datetime(2026, 1, 11, 1, 0, 30, tzinfo=UTC)) == datetime(2026, 1, 11, 1, 0, tzinfo=UTC)


def test_missed_runs_after_downtime_run_once() -> None:
    """Last run on the 11th, down until the 15th at noon: one run, for the newest slot (the 15th)."""
    last = datetime(2026, 1, 11, 1, 0, tzinfo=UTC)
    s = _schedule("0 2 * * *", "Europe/Paris", datetime(2026, 1, 1, tzinfo=UTC), last)
    due = due_time(s, datetime(2026, 1, 15, 12, 0, tzinfo=UTC))
    assert due == datetime(2026, 1, 15, 1, 0, tzinfo=UTC)
    s.last_scheduled_for = due
    assert due_time(s, datetime(2026, 1, 15, 23, 0, tzinfo=UTC)) is None


def test_new_schedule_does_not_run_for_slots_before_its_creation() -> None:
    created = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
    nightly = _schedule("0 2 * * *", "UTC", created)
    assert due_time(nightly, created + timedelta(minutes=5)) is None
    every_minute = _schedule("* * * * *", "UTC", created + timedelta(seconds=30))
    assert due_time(every_minute, created + timedelta(seconds=40)) == created
