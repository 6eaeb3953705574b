"""The job state machine: allowed moves, refused moves, races, and the event trail."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.db.base import new_id
from service.db.models import Dataset, Job, JobEvent, Model, ModelVersion, Project
from service.errors import InvalidTransitionError, StaleJobError
from service.jobs import state


def _job(session: Session) -> Job:
    project = Project(name=f"p-{new_id()}")
    session.add(project)
    session.flush()
    model = Model(project_id=project.id, name="m")
    session.add(model)
    session.flush()
    version = ModelVersion(model_id=model.id, project_id=project.id, version=1, format="onnx")
    data = Dataset(project_id=project.id, name="d", kind="calibration", format="npz")
    session.add_all([version, data])
    session.flush()
    job = Job(
        project_id=project.id,
        model_version_id=version.id,
        calib_dataset_id=data.id,
        technique="ptq",
        compute="cpu",
        spec_version=1,
        spec={},
        status=state.QUEUED,
    )
    session.add(job)
    session.flush()
    state.record_created(session, job)
    return job


def test_happy_path_writes_events_and_timestamps(db_session: Session) -> None:
    job = _job(db_session)
    state.transition(db_session, job, state.RUNNING, claimed_by="w1", stage="fetch")
    state.transition(db_session, job, state.SUCCEEDED, metrics={"acc": 0.9})
    db_session.refresh(job)
    assert job.status == "succeeded" and job.progress == 1.0 and job.metrics == {"acc": 0.9}
    assert job.started_at is not None and job.finished_at is not None and job.started_at <= job.finished_at
    events = db_session.scalars(select(JobEvent).where(JobEvent.job_id == job.id).order_by(JobEvent.id)).all()
    assert [(e.from_status, e.to_status) for e in events] == [
        (None, "queued"),
        ("queued", "running"),
        ("running", "succeeded"),
    ]


@pytest.mark.parametrize("terminal", sorted(state.TERMINAL))
def test_terminal_states_accept_nothing(terminal: str) -> None:
    for target in state.STATUSES:
        assert not state.can_transition(terminal, target)


def test_refused_transition_names_allowed_moves(db_session: Session) -> None:
    job = _job(db_session)
    with pytest.raises(InvalidTransitionError, match="allowed from queued"):
        state.transition(db_session, job, state.SUCCEEDED)
    with pytest.raises(InvalidTransitionError, match="unknown job status"):
        state.transition(db_session, job, "done")


def test_stale_status_loses_the_race(db_session: Session) -> None:
    """Given two in-memory views of one job, the second writer's compare-and-set fails."""
    job = _job(db_session)
    # Another process claims the job behind this session's back; our loaded copy still says queued.
    db_session.execute(
        update(Job)
        .where(Job.id == job.id)
        .values(status=state.RUNNING)
        .execution_options(synchronize_session=False)
    )
    assert job.status == state.QUEUED
    with pytest.raises(StaleJobError):
        state.transition(db_session, job, state.RUNNING)
    assert job.status == state.RUNNING  # refreshed from the database


def test_cancel_queued_running_and_finished(db_session: Session) -> None:
    queued = _job(db_session)
    assert state.request_cancel(db_session, queued).status == state.CANCELLED
    running = _job(db_session)
    state.transition(db_session, running, state.RUNNING)
    state.request_cancel(db_session, running)
    assert running.status == state.CANCELLING and running.cancel_requested
    assert state.request_cancel(db_session, running).status == state.CANCELLING  # idempotent
    state.transition(db_session, running, state.CANCELLED)
    done = _job(db_session)
    state.transition(db_session, done, state.RUNNING)
    state.transition(db_session, done, state.FAILED, error={"code": "x"})
    with pytest.raises(InvalidTransitionError):
        state.request_cancel(db_session, done)


def test_progress_reports_only_while_running(db_session: Session) -> None:
    job = _job(db_session)
    assert not state.report_progress(db_session, job, stage="fetch", progress=0.1)  # still queued
    state.transition(db_session, job, state.RUNNING)
    assert state.report_progress(db_session, job, stage="calibrate", progress=1.7, eta_s=12.0)
    db_session.refresh(job)
    assert (job.stage, job.progress, job.eta_s) == ("calibrate", 1.0, 12.0) and job.heartbeat_at is not None
    state.request_cancel(db_session, job)
    state.transition(db_session, job, state.CANCELLED)
    assert not state.report_progress(db_session, job, progress=0.5)  # the worker learns it should stop
