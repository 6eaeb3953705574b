"""Schedules (nightly requantization) and their runs. Alembic revision 0002 creates these tables.

A run row is unique per (schedule, scheduled time): two beat processes ticking at once both try to
insert it and only one succeeds, so a due run is enqueued exactly once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from service.db.base import Base, UTCDateTime, new_id, utcnow

ID = String(26)


class Schedule(Base):
    """Run ``template`` (a job spec without model_id) on the latest ready version of ``model_name``
    at each fire time of ``cron`` in ``timezone``."""

    __tablename__ = "schedules"
    __table_args__ = (Index("ix_schedules_project_id_id", "project_id", "id"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    model_name: Mapped[str] = mapped_column(String(200))
    template: Mapped[dict[str, Any]] = mapped_column(JSON)
    cron: Mapped[str] = mapped_column(String(100))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, index=True)
    webhook_url: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    webhook_secret: Mapped[str | None] = mapped_column(String(200), nullable=True)
    regression_threshold: Mapped[float] = mapped_column(Float, default=0.01)
    last_scheduled_for: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ScheduleRun(Base):
    """One enqueued run of a schedule and, once its job finished, the comparison with the previous
    successful run (``regressed``) and the webhook delivery state."""

    __tablename__ = "schedule_runs"
    __table_args__ = (
        UniqueConstraint("schedule_id", "scheduled_for"),
        Index("ix_schedule_runs_schedule_id_id", "schedule_id", "id"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    schedule_id: Mapped[str] = mapped_column(ForeignKey("schedules.id", ondelete="CASCADE"))
    scheduled_for: Mapped[datetime] = mapped_column(UTCDateTime())
    job_id: Mapped[str | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True, index=True
    )
    status: Mapped[str] = mapped_column(String(16), default="enqueued")  # enqueued | skipped | compared
    message: Mapped[str] = mapped_column(Text, default="")
    regressed: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    metric: Mapped[float | None] = mapped_column(Float, nullable=True)
    baseline_metric: Mapped[float | None] = mapped_column(Float, nullable=True)
    baseline_job_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    webhook_status: Mapped[str | None] = mapped_column(String(16), nullable=True)  # pending | sent | failed
    webhook_attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
