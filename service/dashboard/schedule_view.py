"""What the schedules page shows per schedule: next fire time, recent runs and their metric trend.

The trend is drawn server-side as inline SVG point coordinates, so the chart needs no script and no
image request (and so works under the pages' strict Content-Security-Policy).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import Job, ModelVersion
from service.db.schedule_tables import Schedule, ScheduleRun

TREND_WIDTH = 120
TREND_HEIGHT = 32
TREND_PAD = 4


@dataclass(frozen=True)
class TrendPoint:
    x: float
    y: float
    value: float
    regressed: bool


@dataclass(frozen=True)
class RunRow:
    run: ScheduleRun
    job_status: str | None
    model_version: int | None = None  # the version the run's job quantized and its content hash:
    model_sha256: str | None = None  # a regression is between two versions, so say which ones


@dataclass(frozen=True)
class ScheduleCard:
    schedule: Schedule
    next_run: datetime | None
    runs: list[RunRow]
    trend: list[TrendPoint]

    @property
    def regressed(self) -> bool:
        """True when the newest compared run regressed (the schedule needs attention now)."""
        for row in self.runs:
            if row.run.regressed is not None:
                return bool(row.run.regressed)
        return False

    @property
    def polyline(self) -> str:
        return " ".join(f"{p.x:.1f},{p.y:.1f}" for p in self.trend)


def next_run(schedule: Schedule, now: datetime) -> datetime | None:
    """The next cron fire time after ``now`` in the schedule's time zone, as UTC; None when disabled or
    when the stored cron never fires (stored before crons were checked: the page must still render)."""
    if not schedule.enabled:
        return None
    try:
        local = now.astimezone(ZoneInfo(schedule.timezone))
        return croniter(schedule.cron, local, max_years_between_matches=1).get_next(datetime).astimezone(UTC)
    except (ValueError, KeyError, OverflowError, ZoneInfoNotFoundError):  # CroniterError is a ValueError
        return None


def trend_points(
    values: Sequence[tuple[float, bool]], width: int = TREND_WIDTH, height: int = TREND_HEIGHT
) -> list[TrendPoint]:
    """Chart coordinates for (metric, regressed) pairs, oldest first: x spreads the runs evenly across
    ``width``; y maps the highest value to the top and the lowest to the bottom (SVG's y grows down).
    Equal values draw a flat line through the middle."""
    if not values:
        return []
    low = min(v for v, _ in values)
    high = max(v for v, _ in values)
    inner_w, inner_h = width - 2 * TREND_PAD, height - 2 * TREND_PAD
    step = inner_w / (len(values) - 1) if len(values) > 1 else 0.0
    points = []
    for i, (value, regressed) in enumerate(values):
        frac = (value - low) / (high - low) if high > low else 0.5
        x = TREND_PAD + (i * step if len(values) > 1 else inner_w / 2)
        points.append(TrendPoint(x, TREND_PAD + (1 - frac) * inner_h, value, regressed))
    return points


def recent_runs(session: Session, schedule_ids: Sequence[str], per_schedule: int) -> dict[str, list[RunRow]]:
    """The newest ``per_schedule`` runs of each schedule (newest first) with their job's status and the
    model version (number, sha256) the job quantized."""
    out: dict[str, list[RunRow]] = {sid: [] for sid in schedule_ids}
    for sid in schedule_ids:
        rows = session.execute(
            select(ScheduleRun, Job.status, ModelVersion.version, ModelVersion.blob_sha256)
            .outerjoin(Job, Job.id == ScheduleRun.job_id)
            .outerjoin(ModelVersion, ModelVersion.id == Job.model_version_id)
            .where(ScheduleRun.schedule_id == sid)
            .order_by(ScheduleRun.scheduled_for.desc())
            .limit(per_schedule)
        ).all()
        out[sid] = [RunRow(run, status, number, sha) for run, status, number, sha in rows]
    return out


def cards(
    session: Session, schedules: Sequence[Schedule], per_schedule: int, now: datetime
) -> list[ScheduleCard]:
    """One card per schedule: next run, recent runs (newest first) and the trend (oldest first)."""
    runs = recent_runs(session, [s.id for s in schedules], per_schedule)
    out = []
    for schedule in schedules:
        rows = runs[schedule.id]
        measured = [(r.run.metric, bool(r.run.regressed)) for r in reversed(rows) if r.run.metric is not None]
        out.append(ScheduleCard(schedule, next_run(schedule, now), rows, trend_points(measured)))  # type: ignore[arg-type]
    return out
