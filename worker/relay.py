"""Outbox relay and reconciler.

:func:`publish_pending` sends committed outbox rows of topic ``jobs.run`` to the broker (task id =
job id, queue = the job's compute) and marks them published; a broker outage leaves them pending,
so nothing the API accepted is lost. A crash between publish and mark publishes twice; the claim in
the database makes the duplicate harmless.

:func:`reconcile` repairs what a lost message or a dead worker leaves behind:
jobs running with a stale heartbeat are requeued (cancelling ones become cancelled); cancelling jobs
still running after the grace period get ``revoke(terminate=True)`` and are marked cancelled; jobs
queued for longer than ``queued_stale_s`` with nothing left to publish are announced again (e.g. a
Redis restart dropped the queue).

``lowbit relay`` runs both in a loop (:func:`run_loop`); beat also sends the ``lowbit.reconcile`` task.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

from celery import Celery
from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from service.db.base import utcnow
from service.db.models import Job, OutboxMessage
from service.db.repositories.jobs import JOB_TOPIC
from service.jobs import state
from worker.app import RUN_JOB
from worker.claim import fail_if_timed_out, job_message, requeue_job, running_jobs_stale
from worker.db import WorkerDb

log = logging.getLogger("lowbit.relay")


def publish_pending(db: WorkerDb, app: Celery, limit: int = 100) -> int:
    """Publish up to ``limit`` unpublished job messages, oldest first; returns how many were sent."""

    def publish(session: Session) -> int:
        rows = session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.published_at.is_(None), OutboxMessage.topic == JOB_TOPIC)
            .order_by(OutboxMessage.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        sent = 0
        for row in rows:
            payload = row.payload
            try:
                app.send_task(
                    RUN_JOB,
                    args=[payload["job_id"]],
                    task_id=payload["job_id"],
                    queue=payload.get("queue", "cpu"),
                    priority=payload.get("priority"),
                    retry=True,
                    retry_policy={"max_retries": 1, "interval_start": 0.2},
                    headers={"lowbit_request_id": payload["request_id"]}
                    if payload.get("request_id")
                    else None,
                )
            except Exception as exc:  # broker down: keep the row, count the attempt, try later
                row.attempts += 1
                log.warning("outbox %s not published: %s", row.id, exc)
                break
            row.published_at = utcnow()
            sent += 1
        return sent

    return db.write(publish, "publish outbox")


def reconcile(db: WorkerDb, app: Celery) -> dict[str, int]:
    """One reconciler pass; returns counts of requeued, cancelled, terminated and re-announced jobs."""
    ws = db.wsettings
    counts = {"requeued": 0, "timed_out": 0, "cancelled": 0, "terminated": 0, "reannounced": 0, "webhooks": 0}

    def stale(session: Session) -> None:
        for job in running_jobs_stale(session, ws.stale_after_s):
            try:
                if job.status == state.CANCELLING:
                    state.transition(session, job, state.CANCELLED, message="worker lost while cancelling")
                    counts["cancelled"] += 1
                elif fail_if_timed_out(session, job, ws.hard_time_limit_s, ws.heartbeat_s):
                    counts["timed_out"] += 1
                else:
                    requeue_job(session, job, f"heartbeat stale; worker {job.claimed_by} presumed lost")
                    counts["requeued"] += 1
            except Exception as exc:  # lost a race with the job's own worker: it is alive after all
                log.info("reconcile skipped job %s: %s", job.id, exc)

    db.write(stale, "requeue stale jobs")

    grace_cutoff = utcnow() - timedelta(seconds=ws.cancel_grace_s)
    overdue = db.write(
        lambda s: list(
            s.scalars(select(Job.id).where(Job.status == state.CANCELLING, Job.updated_at < grace_cutoff))
        ),
        "find overdue cancels",
    )
    for job_id in overdue:
        app.control.revoke(job_id, terminate=True, signal="SIGKILL")

        def mark(session: Session, job_id: str = job_id) -> None:
            job = session.get(Job, job_id)
            if job is not None and job.status == state.CANCELLING:
                state.transition(
                    session, job, state.CANCELLED, message="terminated after the cancel grace period"
                )
                counts["terminated"] += 1

        db.write(mark, "mark terminated job")

    queued_cutoff = utcnow() - timedelta(seconds=ws.queued_stale_s)

    def reannounce(session: Session) -> None:
        pending = exists().where(
            OutboxMessage.published_at.is_(None),
            OutboxMessage.topic == JOB_TOPIC,
            OutboxMessage.payload.isnot(None),
        )
        jobs = session.scalars(
            select(Job).where(Job.status == state.QUEUED, Job.updated_at < queued_cutoff).limit(500)
        ).all()
        if not jobs or session.scalar(select(pending)):
            return  # the relay still has messages to send: the queue is not known to be lost
        for job in jobs:
            session.add(OutboxMessage(topic=JOB_TOPIC, payload=job_message(job)))
            session.execute(update(Job).where(Job.id == job.id).values(updated_at=utcnow()))
            counts["reannounced"] += 1

    db.write(reannounce, "re-announce queued jobs")
    counts["webhooks"] = retry_pending_webhooks(db)
    if any(counts.values()):
        log.info("reconcile: %s", counts)
    return counts


def retry_pending_webhooks(db: WorkerDb) -> int:
    """Deliver regression webhooks left pending (their job's worker died before sending)."""
    from service.db.schedule_tables import ScheduleRun
    from worker.schedules.webhook import deliver

    pending = db.write(
        lambda s: list(
            s.scalars(select(ScheduleRun.id).where(ScheduleRun.webhook_status == "pending").limit(20))
        ),
        "find pending webhooks",
    )
    return sum(deliver(db, run_id) == "sent" for run_id in pending)


def run_loop(db: WorkerDb, app: Celery, stop: threading.Event | None = None) -> None:
    """Publish every ``relay_interval_s`` and reconcile every ``reconcile_interval_s`` until ``stop``."""
    stop = stop or threading.Event()
    ws = db.wsettings
    next_reconcile = 0.0
    while not stop.is_set():
        try:
            sent = publish_pending(db, app)
            if time.monotonic() >= next_reconcile:
                reconcile(db, app)
                next_reconcile = time.monotonic() + ws.reconcile_interval_s
        except Exception as exc:  # keep relaying: the next pass retries
            log.warning("relay pass failed: %s", exc)
            sent = 0
        if not sent:
            stop.wait(ws.relay_interval_s)
