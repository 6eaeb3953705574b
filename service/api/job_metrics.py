"""Prometheus series about jobs, queues and workers, read from the database at scrape time.

The API runs as several processes and workers on other machines, so per-process counters would each see a
slice; the database sees everything. One scrape runs a handful of aggregate queries:

- ``lowbit_jobs{status,technique}``: jobs by state and technique (gauge);
- ``lowbit_job_duration_seconds{technique,status}``: started → finished of finished jobs (histogram);
- ``lowbit_stage_duration_seconds{stage}``: each AutoQuant stage's run time in finished jobs, from the
  ``seconds`` the worker stores in the job's metrics (histogram; cached stages are left out);
- ``lowbit_queue_depth{queue}``: queued jobs per queue (``cpu``/``gpu``), and the oldest one's age;
- ``lowbit_workers_busy``, ``lowbit_job_heartbeat_age_seconds``: workers holding a running job and the
  oldest heartbeat among running jobs (a stale one means a lost worker the reconciler will requeue);
- ``lowbit_job_failures{error}``: failed jobs by error type;
- ``lowbit_outbox_pending``, ``lowbit_outbox_lag_seconds``: messages not yet published to the broker;
- ``lowbit_stored_bytes``: bytes of uploaded content (deduplicated blobs).

>>> registry.register(JobsCollector(engine))      # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, case, func, select
from sqlalchemy.sql.elements import ColumnElement

from service.db.models import Blob, Job, OutboxMessage
from service.jobs import state

DURATION_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 24 * 3600.0)


def _seconds_between(engine: Engine, start: Any, end: Any) -> ColumnElement[Any]:
    if engine.dialect.name == "postgresql":
        return func.extract("epoch", end - start)
    return (func.julianday(end) - func.julianday(start)) * 86400.0


def _age(now: datetime, then: datetime | None) -> float:
    if then is None:
        return 0.0
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return max(0.0, (now - then).total_seconds())


class JobsCollector(Collector):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        now = datetime.now(UTC)
        with self.engine.connect() as conn:
            by_state = conn.execute(
                select(Job.status, Job.technique, func.count()).group_by(Job.status, Job.technique)
            )
            jobs = GaugeMetricFamily(
                "lowbit_jobs", "Jobs by status and technique", labels=["status", "technique"]
            )
            for status, technique, n in by_state:
                jobs.add_metric([status, technique], n)
            yield jobs

            yield self._durations(conn)
            yield self._stage_durations(conn)

            depth = GaugeMetricFamily("lowbit_queue_depth", "Queued jobs per queue", labels=["queue"])
            oldest = GaugeMetricFamily(
                "lowbit_queue_oldest_seconds", "Age of the oldest queued job per queue", labels=["queue"]
            )
            queued = select(Job.compute, func.count(), func.min(Job.created_at)).where(
                Job.status == state.QUEUED
            )
            for queue, n, first in conn.execute(queued.group_by(Job.compute)):
                depth.add_metric([queue], n)
                oldest.add_metric([queue], _age(now, first))
            yield depth
            yield oldest

            running = select(func.count(func.distinct(Job.claimed_by)), func.min(Job.heartbeat_at)).where(
                Job.status.in_([state.RUNNING, state.CANCELLING])
            )
            busy, stalest = conn.execute(running).one()
            yield GaugeMetricFamily("lowbit_workers_busy", "Workers running a job now", value=busy)
            yield GaugeMetricFamily(
                "lowbit_job_heartbeat_age_seconds",
                "Oldest heartbeat among running jobs (0 when none runs)",
                value=_age(now, stalest),
            )

            failures = CounterMetricFamily(
                "lowbit_job_failures", "Failed jobs by error type", labels=["error"]
            )
            failed = select(Job.error).where(Job.status == state.FAILED)
            counts: dict[str, int] = {}
            for (error,) in conn.execute(failed):
                kind = str(error.get("type", "unknown")) if isinstance(error, dict) else "unknown"
                counts[kind] = counts.get(kind, 0) + 1
            for kind, n in sorted(counts.items()):
                failures.add_metric([kind], n)
            yield failures

            pending = select(func.count(), func.min(OutboxMessage.created_at)).where(
                OutboxMessage.published_at.is_(None)
            )
            n_pending, first_pending = conn.execute(pending).one()
            yield GaugeMetricFamily(
                "lowbit_outbox_pending", "Outbox messages not yet published", value=n_pending
            )
            yield GaugeMetricFamily(
                "lowbit_outbox_lag_seconds",
                "Age of the oldest unpublished outbox message",
                value=_age(now, first_pending),
            )
            stored = conn.execute(select(func.count(), func.coalesce(func.sum(Blob.size), 0))).one()
            yield CounterMetricFamily(
                "lowbit_upload_bytes", "Bytes of stored uploads (each content once)", value=stored[1]
            )

    def _durations(self, conn: object) -> Metric:
        seconds = _seconds_between(self.engine, Job.started_at, Job.finished_at)
        columns = [func.sum(case((seconds <= b, 1), else_=0)) for b in DURATION_BUCKETS]
        stmt = (
            select(Job.technique, Job.status, func.count(), func.coalesce(func.sum(seconds), 0.0), *columns)
            .where(
                Job.status.in_(sorted(state.TERMINAL)),
                Job.started_at.is_not(None),
                Job.finished_at.is_not(None),
            )
            .group_by(Job.technique, Job.status)
        )
        family = HistogramMetricFamily(
            "lowbit_job_duration_seconds",
            "Run time of finished jobs (started to finished)",
            labels=["technique", "status"],
        )
        for technique, status, count, total, *cumulative in conn.execute(stmt):  # type: ignore[attr-defined]
            buckets = [(str(b), int(c or 0)) for b, c in zip(DURATION_BUCKETS, cumulative, strict=True)]
            buckets.append(("+Inf", int(count)))
            family.add_metric([technique, status], buckets, float(total))
        return family

    def _stage_durations(self, conn: object) -> Metric:
        # The stages live in the job's metrics JSON (worker/techniques/autoquant.py), so they are summed
        # here rather than in SQL, whose JSON functions differ between SQLite and PostgreSQL.
        stmt = select(Job.metrics).where(
            Job.technique == "autoquant", Job.status.in_(sorted(state.TERMINAL)), Job.metrics.is_not(None)
        )
        by_stage: dict[str, list[float]] = {}
        for (metrics,) in conn.execute(stmt):  # type: ignore[attr-defined]
            stages = (metrics or {}).get("autoquant", {}).get("stages") if isinstance(metrics, dict) else None
            for stage in stages if isinstance(stages, list) else []:
                seconds = stage.get("seconds") if isinstance(stage, dict) else None
                if isinstance(seconds, int | float) and not stage.get("cached"):
                    by_stage.setdefault(str(stage.get("name")), []).append(float(seconds))
        family = HistogramMetricFamily(
            "lowbit_stage_duration_seconds", "Run time of AutoQuant stages in finished jobs", labels=["stage"]
        )
        for name, values in sorted(by_stage.items()):
            buckets = [(str(b), sum(v <= b for v in values)) for b in DURATION_BUCKETS]
            buckets.append(("+Inf", len(values)))
            family.add_metric([name], buckets, sum(values))
        return family
