"""The regression webhook: a JSON POST signed with HMAC-SHA256, retried with exponential backoff.

Headers: ``X-Lowbit-Event: schedule.regressed``, ``X-Lowbit-Delivery: <run id>`` (receivers dedupe on
it), ``X-Lowbit-Signature: t=<unix seconds>,v1=<hex>`` where ``hex = HMAC_SHA256(secret,
"<t>." + body)``. A delivery is claimed in the database (pending → sending) so two processes never
send it at once, and marked sent after a 2xx answer, or failed after the last attempt.

>>> sign(b"{}", "s" * 16, 0)
't=0,v1=b946be543896ad32ad1a3dd137c077f264805f3832593de25ec61b1464c2c106'
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import update
from sqlalchemy.orm import Session

from service.db.schedule_tables import Schedule, ScheduleRun
from service.sealed_secrets import unseal
from service.webhook_target import WebhookTargetError, allowed_networks, check_webhook_target
from worker.db import WorkerDb

log = logging.getLogger("lowbit.schedules")


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The X-Lowbit-Signature header value of ``body``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def _host_header(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc.rsplit("@", 1)[-1]


def _payload(run: ScheduleRun, schedule: Schedule) -> dict[str, Any]:
    return {
        "event": "schedule.regressed",
        "schedule_id": schedule.id,
        "schedule_name": schedule.name,
        "run_id": run.id,
        "job_id": run.job_id,
        "baseline_job_id": run.baseline_job_id,
        "scheduled_for": run.scheduled_for.isoformat(),
        "metric": run.metric,
        "baseline_metric": run.baseline_metric,
        "threshold": schedule.regression_threshold,
        "message": run.message,
    }


def deliver(db: WorkerDb, run_id: str) -> str:
    """Send the pending webhook of run ``run_id``; returns the final webhook status (or why not sent)."""

    def claim(session: Session) -> tuple[str, str | None, bytes] | None:
        claimed = session.execute(
            update(ScheduleRun)
            .where(ScheduleRun.id == run_id, ScheduleRun.webhook_status == "pending")
            .values(webhook_status="sending")
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            return None
        run = session.get(ScheduleRun, run_id)
        schedule = session.get(Schedule, run.schedule_id) if run else None
        if run is None or schedule is None or not schedule.webhook_url:
            return None
        body = json.dumps(_payload(run, schedule), sort_keys=True).encode()
        secret = schedule.webhook_secret
        return schedule.webhook_url, unseal(secret, db.settings.secret_key) if secret else None, body

    claimed = db.write(claim, "claim webhook")
    if claimed is None:
        return "not pending"
    url, secret, body = claimed
    ws = db.wsettings
    status, attempts = "failed", 0
    for attempt in range(ws.webhook_attempts):
        attempts = attempt + 1
        headers = {
            "Content-Type": "application/json",
            "X-Lowbit-Event": "schedule.regressed",
            "X-Lowbit-Delivery": run_id,
        }
        if secret:
            headers["X-Lowbit-Signature"] = sign(body, secret, int(time.time()))
        try:
            # Resolved and checked at each send, then sent to the checked address (DNS rebinding).
            target = check_webhook_target(url, allowed_networks(db.settings.webhook_allowed_networks))
            with httpx.Client(timeout=ws.webhook_timeout_s) as client:
                resp = client.post(
                    target.pinned_url(),
                    content=body,
                    headers={**headers, "Host": _host_header(url)},
                    extensions={"sni_hostname": target.host},
                )
            if 200 <= resp.status_code < 300:
                status = "sent"
                break
            log.warning("webhook %s answered %s (attempt %d)", run_id, resp.status_code, attempts)
        except WebhookTargetError as exc:
            log.warning("webhook %s refused: %s", run_id, exc.message)
            break  # the target is not allowed: retrying cannot help
        except httpx.HTTPError as exc:
            log.warning("webhook %s failed (attempt %d): %s", run_id, attempts, exc)
        time.sleep(min(30.0, ws.retry_base_s * 2**attempt))

    def record(session: Session) -> None:
        session.execute(
            update(ScheduleRun)
            .where(ScheduleRun.id == run_id)
            .values(webhook_status=status, webhook_attempts=ScheduleRun.webhook_attempts + attempts)
        )

    db.write(record, "record webhook")
    return status
