"""Compare a finished scheduled run with the schedule's previous successful run.

The compared number is the quantized model's evaluation metric (ONNX Runtime when measured, else the
simulated model); higher is better for both metrics the pipeline reports (accuracy, cosine). A run is
``regressed`` when it is lower than the baseline by more than the schedule's threshold.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import Job
from service.db.schedule_tables import Schedule, ScheduleRun
from service.jobs import state


def run_metric(metrics: dict[str, Any] | None) -> tuple[str, float] | None:
    """(name, value) of the compared metric from a job's stored metrics, or None."""
    evaluation = (metrics or {}).get("evaluation") or {}
    for key in ("onnxruntime", "sim"):
        if isinstance(evaluation.get(key), int | float):
            return f"{evaluation.get('metric', 'metric')}:{key}", float(evaluation[key])
    return None


def compare_run(session: Session, job: Job) -> ScheduleRun | None:
    """Record the comparison of ``job`` (a finished scheduled job) on its run row (caller commits).

    Returns the run when a webhook is now pending (regressed and the schedule has a URL), else None.
    """
    run = session.scalar(select(ScheduleRun).where(ScheduleRun.job_id == job.id))
    schedule = session.get(Schedule, job.schedule_id) if job.schedule_id else None
    if run is None or schedule is None or run.status == "compared":
        return None
    run.status = "compared"
    found = run_metric(job.metrics) if job.status == state.SUCCEEDED else None
    if found is None:
        run.message = f"job {job.status}; nothing to compare"
        return None
    name, value = found
    run.metric = value
    baseline = session.execute(
        select(ScheduleRun, Job)
        .join(Job, Job.id == ScheduleRun.job_id)
        .where(
            ScheduleRun.schedule_id == schedule.id,
            ScheduleRun.scheduled_for < run.scheduled_for,
            ScheduleRun.metric.isnot(None),
            Job.status == state.SUCCEEDED,
        )
        .order_by(ScheduleRun.scheduled_for.desc())
        .limit(1)
    ).first()
    if baseline is None:
        run.regressed, run.message = False, f"first successful run ({name} = {value:.4f}); it is the baseline"
        return None
    base_run, base_job = baseline
    base_value = float(base_run.metric or 0.0)  # the query only selects runs with a metric
    run.baseline_metric, run.baseline_job_id = base_value, base_job.id
    drop = base_value - value
    run.regressed = drop > schedule.regression_threshold
    run.message = f"{name} {value:.4f} vs {base_value:.4f} (drop {drop:+.4f}, threshold {schedule.regression_threshold})"
    job.metrics = {
        **(job.metrics or {}),
        "regression": {"regressed": run.regressed, "drop": drop, "baseline_job_id": base_job.id},
    }
    if run.regressed and schedule.webhook_url:
        run.webhook_status = "pending"
        return run
    return None
